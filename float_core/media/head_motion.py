"""A driving clip with a known motion: a portrait moved by a smooth affine motion over time.

The example clip ``examples/driving_astronaut.mp4`` is made by this module (see
``examples/README.md``), and the tests use it for videos whose face moves by a known amount.
The whole picture moves (roll, sideways sway, nod, zoom), like a head filmed by a steady
camera; the motion is a sum of slow sines, so it loops smoothly:

* roll  ``ROLL_DEGREES * sin(2 pi t / 2.4)`` about the picture's centre,
* sway  ``SWAY * side * sin(2 pi t / 3.2)`` to the right,
* nod   ``NOD * side * sin(2 pi t / 1.6 + 0.5)`` downwards,
* zoom  ``ZOOM + ZOOM_SWING * sin(2 pi t / 4)`` (at least ~1.14, so no border shows).

:func:`head_motion` gives the forward affine map of each frame (a 2x3 matrix taking a pixel of
the portrait to its place in the frame), so a test knows where the face is in every frame.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = ["NOD", "ROLL_DEGREES", "SWAY", "ZOOM", "ZOOM_SWING", "head_motion", "head_motion_frames",
           "write_head_motion_video"]

ROLL_DEGREES = 6.0
SWAY = 0.04  #: in units of the frame side
NOD = 0.025
ZOOM = 1.2
ZOOM_SWING = 0.03


def head_motion(t: float, side: int, amplitude: float = 1.0) -> np.ndarray:
    """The forward affine map (2, 3) of the frame at ``t`` seconds, for a square frame of
    ``side`` pixels: ``[x', y'] = A @ [x, y, 1]`` (pixel centres, y down). ``amplitude`` scales
    the motion (0: the portrait zoomed by ``ZOOM``, still)."""
    theta = math.radians(amplitude * ROLL_DEGREES * math.sin(2 * math.pi * t / 2.4))
    zoom = ZOOM + amplitude * ZOOM_SWING * math.sin(2 * math.pi * t / 4.0)
    dx = amplitude * SWAY * side * math.sin(2 * math.pi * t / 3.2)
    dy = amplitude * NOD * side * math.sin(2 * math.pi * t / 1.6 + 0.5)
    c = (side - 1) / 2
    rot = zoom * np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    shift = np.array([c + dx, c + dy]) - rot @ np.array([c, c])
    return np.concatenate([rot, shift[:, None]], axis=1)


def head_motion_frames(image: np.ndarray, num_frames: int, *, side: int | None = None, fps: int = 25,
                       amplitude: float = 1.0) -> Iterator[np.ndarray]:
    """``num_frames`` RGB uint8 frames (side, side, 3) of the square ``image`` moving by
    :func:`head_motion` (resized to ``side`` first; bicubic resampling)."""
    picture = Image.fromarray(np.ascontiguousarray(image))
    side = side or picture.width
    if picture.size != (side, side):
        picture = picture.resize((side, side), Image.Resampling.LANCZOS)
    for k in range(num_frames):
        forward = np.vstack([head_motion(k / fps, side, amplitude), [0.0, 0.0, 1.0]])
        inverse = np.linalg.inv(forward)[:2]  # PIL maps each output pixel back to the input
        yield np.asarray(picture.transform((side, side), Image.Transform.AFFINE, tuple(inverse.ravel()),
                                           resample=Image.Resampling.BICUBIC))


def write_head_motion_video(path: str | Path, image: np.ndarray, num_frames: int, *, side: int | None = None,
                            fps: int = 25, amplitude: float = 1.0, audio: tuple[np.ndarray, int] | None = None,
                            **writer_options: object) -> Path:
    """Write :func:`head_motion_frames` to an H.264 MP4 (``audio``: (waveform, rate) muxed in;
    ``writer_options``: :class:`~float_core.media.video.VideoWriter`'s crf, preset, ...)."""
    from .video import VideoWriter

    with VideoWriter(path, fps=fps, audio=audio, **writer_options) as writer:  # type: ignore[arg-type]
        for frame in head_motion_frames(image, num_frames, side=side, fps=fps, amplitude=amplitude):
            writer.write(frame)
    return Path(path)
