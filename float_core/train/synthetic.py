"""A tiny synthetic talking-face data set, for tests and demos of the training pipeline.

Real talking-head data (HDTF, RAVDESS, VFHQ; paper Sec. 5.1) cannot ship with the project,
so the tests and the quick-start demo use drawn faces instead. Each clip is an H.264/AAC MP4
(written by :class:`float_core.media.VideoWriter`) of a shaded cartoon face whose **mouth
opening follows the loudness of the speech-like audio frame by frame**: the one audio-visual
dependency that FLOAT's stage 2 has to learn (paper Sec. 4.2). A little seeded head jitter and
blinking give the motion auto-encoder of stage 1 (Sec. 4.1) something besides the mouth to
encode.

The face is drawn realistically enough (skin shading, eye sockets, brows, irises, nostrils,
lips, hair, ears) for the project's face detector (:func:`float_core.media.face.detect_faces`,
MTCNN offline) to find it in nearly every frame at 64-256 px, so ``prepare`` runs its normal
detect-and-crop path on it. The face fills about 60 % of the frame height: detectors, like
the paper's pre-processing, expect reasonably large faces.

:func:`make_synthetic_dataset` can also write deliberately unusable files (corrupt bytes, no
face, no audio stream, silent audio, too short) so that ``prepare``'s skip logic is tested.
"""

from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from ..config import FPS, SAMPLE_RATE, SAMPLES_PER_FRAME

__all__ = [
    "BROKEN_FILES",
    "SyntheticClip",
    "SyntheticDataset",
    "draw_face",
    "envelope",
    "make_synthetic_clip",
    "make_synthetic_dataset",
    "speech_like_audio",
]

#: Amplitude (RMS) of the speech-like signal at full syllable gain; a frame whose RMS equals it
#: has the mouth fully open.
SPEECH_RMS = 0.2

#: Deliberately unusable files of :func:`make_synthetic_dataset` and a word that ``prepare``'s
#: skip reason for each must contain.
BROKEN_FILES: dict[str, str] = {
    "corrupt.mp4": "cannot decode",
    "noface.mp4": "no face",
    "silent_video.mp4": "no audio",
    "silent_audio.mp4": "silent",
    "tooshort.mp4": "too short",
}

_SKINS = ((224, 172, 140), (232, 190, 160), (198, 134, 66), (255, 219, 172), (170, 110, 70))
_BACKGROUNDS = ((70, 110, 150), (120, 140, 90), (200, 200, 190), (90, 70, 110), (150, 90, 80))
_HAIRS = ((50, 35, 25), (20, 20, 20), (90, 50, 30), (60, 45, 40))
_SHIRTS = ((60, 60, 80), (40, 80, 60), (110, 40, 40), (30, 30, 30))


@dataclass(frozen=True)
class SyntheticClip:
    """One written clip and the ground truth it was drawn from.

    Attributes:
        path: the MP4 file.
        envelope: (T,) RMS of the audio in each video frame's 640-sample window.
        mouth: (T,) mouth opening in [0, 1] drawn in each frame (a monotone function of
            ``envelope``: ``min(envelope / SPEECH_RMS, 1)``).
        face_center: (x, y) of the head's centre before jitter, in pixels.
        fps, sample_rate: 25 and 16000 by default.
    """

    path: Path
    envelope: np.ndarray
    mouth: np.ndarray
    face_center: tuple[float, float]
    fps: int = 25
    sample_rate: int = SAMPLE_RATE

    @property
    def num_frames(self) -> int:
        return int(self.envelope.shape[0])


@dataclass(frozen=True)
class SyntheticDataset:
    """What :func:`make_synthetic_dataset` wrote: good clips and broken files (name -> reason word)."""

    folder: Path
    clips: list[SyntheticClip]
    broken: dict[str, str] = field(default_factory=dict)


# ----------------------------------------------------------------------------- audio
def envelope(audio: np.ndarray, samples_per_frame: int = SAMPLES_PER_FRAME) -> np.ndarray:
    """Per-frame RMS of ``audio``: frame k covers samples [k*spf, (k+1)*spf).

    A trailing partial window is dropped (the same rule as ``prepare``'s trimming to
    ``floor(samples / 640)`` frames). Returns float32 (samples // samples_per_frame,).
    """
    audio = np.asarray(audio, dtype=np.float64)
    if audio.ndim != 1:
        raise ValueError(f"audio must be 1-D (mono samples), got shape {audio.shape}")
    if samples_per_frame < 1:
        raise ValueError(f"samples_per_frame must be >= 1, got {samples_per_frame}")
    n = audio.size // samples_per_frame
    windows = audio[: n * samples_per_frame].reshape(n, samples_per_frame)
    return np.sqrt(np.mean(windows * windows, axis=1)).astype(np.float32)


def speech_like_audio(num_samples: int, rng: np.random.Generator, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """A voiced, syllable-modulated harmonic signal, float32 (num_samples,).

    A harmonic tone (f0 120-200 Hz with slow vibrato, 10 harmonics falling as 1/k) is switched
    on for random "syllables" of 80-300 ms with 20 ms raised-cosine attack/decay and random
    gains 0.35-1, separated by 40-250 ms of silence, so its loudness (and the drawn mouth)
    varies strongly from frame to frame. The tone is scaled to RMS :data:`SPEECH_RMS` at gain 1.
    """
    t = np.arange(num_samples) / sample_rate
    f0 = rng.uniform(120.0, 200.0) * (1.0 + 0.03 * np.sin(2 * np.pi * rng.uniform(2.0, 5.0) * t))
    phase = 2 * np.pi * np.cumsum(f0) / sample_rate
    tone = sum(np.sin(k * phase + rng.uniform(0, 2 * np.pi)) / k for k in range(1, 11))
    tone *= SPEECH_RMS / np.sqrt(np.mean(tone**2))
    gain = np.zeros(num_samples)
    ramp = int(0.02 * sample_rate)
    pos = int(rng.uniform(0.0, 0.15) * sample_rate)
    while pos < num_samples:
        length = int(rng.uniform(0.08, 0.30) * sample_rate)
        shape = np.ones(length)
        edge = 0.5 - 0.5 * np.cos(np.linspace(0.0, np.pi, min(ramp, length // 2)))
        shape[: edge.size] = edge
        shape[length - edge.size:] = edge[::-1]
        end = min(pos + length, num_samples)
        gain[pos:end] = rng.uniform(0.35, 1.0) * shape[: end - pos]
        pos = end + int(rng.uniform(0.04, 0.25) * sample_rate)
    return (tone * gain).astype(np.float32)


# ----------------------------------------------------------------------------- drawing
def _shade(color: tuple[int, int, int], factor: float) -> tuple[int, int, int]:
    return tuple(int(max(0, min(255, c * factor))) for c in color)  # type: ignore[return-value]


@functools.lru_cache(maxsize=4)
def _pixel_grid(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Read-only float32 row and column index grids (n, n), shared by every frame."""
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float32)
    yy.flags.writeable = xx.flags.writeable = False
    return yy, xx


#: A Gaussian further than this many sigmas (in x or y) from its centre is below 1.2e-7 / depth
#: for depth >= 0.2: 1 - depth * g rounds to exactly 1.0 in float32 there, so skipping those
#: pixels leaves every frame bit-identical to darkening the whole image.
_GAUSS_SIGMAS = math.sqrt(17.0)


def _darken_gaussian(arr: np.ndarray, xx: np.ndarray, yy: np.ndarray, inside: np.ndarray,
                     x: tuple[float, float], y: tuple[float, float], sigma: tuple[float, float],
                     depth: float) -> None:
    """``arr *= 1 - depth * exp(-((xx - x0 - dx)/sx)^2 - ((yy - y0 - dy)/sy)^2)`` inside the face,
    in place, computed only in the box where the factor differs from 1 (the centre is given as
    (base, offset) pairs, subtracted in that order, as the full-image formula rounded them)."""
    (bx, ox), (by, oy), (sx, sy) = x, y, sigma
    cx, cy = bx + ox, by + oy
    n = arr.shape[0]
    x0, x1 = max(0, math.floor(cx - _GAUSS_SIGMAS * sx)), min(n, math.ceil(cx + _GAUSS_SIGMAS * sx) + 1)
    y0, y1 = max(0, math.floor(cy - _GAUSS_SIGMAS * sy)), min(n, math.ceil(cy + _GAUSS_SIGMAS * sy) + 1)
    if x0 >= x1 or y0 >= y1:
        return
    box = (slice(y0, y1), slice(x0, x1))
    g = np.exp(-(((xx[box] - bx - ox) / sx) ** 2 + ((yy[box] - by - oy) / sy) ** 2))
    arr[box] *= (1.0 - depth * g * inside[box])[..., None]


def draw_face(
    size: int,
    *,
    mouth: float,
    center: tuple[float, float],
    scale: float = 1.0,
    eyes_open: float = 1.0,
    skin: tuple[int, int, int] = _SKINS[0],
    background: tuple[int, int, int] = _BACKGROUNDS[0],
    hair: tuple[int, int, int] = _HAIRS[0],
    shirt: tuple[int, int, int] = _SHIRTS[0],
) -> np.ndarray:
    """Draw one (size, size, 3) uint8 frame of the cartoon face.

    Args:
        mouth: opening in [0, 1] (inner mouth height grows linearly with it).
        center: head centre in pixels.
        scale: head size; 1.0 = an ellipse 0.5 x 0.66 of the frame.
        eyes_open: 1 open, < 0.3 drawn as a closed lid (a blink).

    Drawn at twice the size and box-downsampled (anti-aliasing), with a radial shading of
    the skin and soft eye-socket and nose shadows: flat cartoon faces are missed by MTCNN far
    more often.
    """
    ss = 2 * size
    fx, fy = 2 * center[0], 2 * center[1]
    hw, hh = 0.25 * ss * scale, 0.33 * ss * scale
    img = Image.new("RGB", (ss, ss), background)
    d = ImageDraw.Draw(img)
    d.ellipse([fx - 1.7 * hw, fy + 1.1 * hh, fx + 1.7 * hw, fy + 2.8 * hh], fill=shirt)
    d.rectangle([fx - 0.4 * hw, fy + 0.5 * hh, fx + 0.4 * hw, fy + 1.3 * hh], fill=_shade(skin, 0.75))
    d.ellipse([fx - 1.1 * hw, fy - 1.12 * hh, fx + 1.1 * hw, fy + 0.35 * hh], fill=hair)
    for s in (-1, 1):
        d.ellipse([fx + s * hw - 0.13 * hw, fy - 0.18 * hh, fx + s * hw + 0.13 * hw, fy + 0.18 * hh],
                  fill=_shade(skin, 0.85))

    arr = np.asarray(img).astype(np.float32)
    yy, xx = _pixel_grid(ss)
    # The shaded skin, computed in the head's bounding box only (r2 > 1 outside it).
    head = (slice(max(0, math.floor(fy - hh)), max(0, math.ceil(fy + hh) + 1)),
            slice(max(0, math.floor(fx - hw)), max(0, math.ceil(fx + hw) + 1)))
    r2 = ((xx[head] - fx) / hw) ** 2 + ((yy[head] - fy) / hh) ** 2
    inside = np.zeros((ss, ss), bool)
    inside[head] = r2 <= 1.0
    face = np.asarray(skin, np.float32) * (1.05 - 0.35 * r2**1.5)[..., None]
    arr[head] = np.where(inside[head][..., None], face, arr[head])
    for s in (-1, 1):  # eye sockets
        _darken_gaussian(arr, xx, yy, inside, (fx, s * 0.38 * hw), (fy, -0.1 * hh), (0.3 * hw, 0.14 * hh), 0.25)
    _darken_gaussian(arr, xx, yy, inside, (fx, 0.07 * hw), (fy, 0.1 * hh), (0.06 * hw, 0.18 * hh), 0.2)  # nose

    img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    d = ImageDraw.Draw(img)
    d.chord([fx - 1.03 * hw, fy - 1.06 * hh, fx + 1.03 * hw, fy - 0.25 * hh], 180, 360, fill=hair)
    for s in (-1, 1):
        ex, ey = fx + s * 0.38 * hw, fy - 0.1 * hh
        d.line([ex - 0.24 * hw, ey - 0.2 * hh, ex, ey - 0.24 * hh, ex + 0.24 * hw, ey - 0.21 * hh],
               fill=_shade(hair, 1.1), width=max(1, int(0.07 * hw)), joint="curve")
        ew, eh = 0.2 * hw, 0.075 * hh * max(eyes_open, 0.1)
        d.ellipse([ex - ew, ey - eh, ex + ew, ey + eh], fill=(235, 235, 230))
        if eyes_open > 0.3:
            r, rp = 0.085 * hw, 0.04 * hw
            d.ellipse([ex - r, ey - min(r, eh), ex + r, ey + min(r, eh)], fill=(80, 55, 35))
            d.ellipse([ex - rp, ey - min(rp, eh), ex + rp, ey + min(rp, eh)], fill=(10, 10, 10))
        else:
            d.line([ex - ew, ey, ex + ew, ey], fill=(60, 40, 30), width=max(1, int(0.03 * hw)))
    for s in (-1, 1):  # nostrils
        nx, ny = fx + s * 0.08 * hw, fy + 0.22 * hh
        d.ellipse([nx - 0.04 * hw, ny - 0.02 * hh, nx + 0.04 * hw, ny + 0.02 * hh], fill=_shade(skin, 0.45))
    my, mw = fy + 0.48 * hh, 0.3 * hw
    mh = (0.02 + 0.18 * float(np.clip(mouth, 0.0, 1.0))) * hh
    d.ellipse([fx - mw, my - mh - 0.035 * hh, fx + mw, my + mh + 0.035 * hh], fill=(175, 85, 85))  # lips
    d.ellipse([fx - 0.85 * mw, my - mh, fx + 0.85 * mw, my + mh], fill=(55, 15, 20))  # inner mouth
    img = img.filter(ImageFilter.GaussianBlur(ss / 300))
    return np.asarray(img.resize((size, size), Image.Resampling.BOX))


def _smooth_walk(rng: np.random.Generator, n: int, amplitude: float) -> np.ndarray:
    """A smooth random wobble in [-amplitude, amplitude] (sum of three slow sinusoids)."""
    t = np.arange(n) / FPS
    walk = sum(np.sin(2 * np.pi * rng.uniform(0.1, 0.6) * t + rng.uniform(0, 2 * np.pi)) for _ in range(3))
    return amplitude * walk / 3.0


def _blinks(rng: np.random.Generator, n: int) -> np.ndarray:
    """Eye openness per frame: 1, with a 3-frame blink (0.5, 0, 0.5) every 1.5-3.5 s."""
    eyes = np.ones(n)
    k = int(rng.integers(10, 50))
    while k + 3 <= n:
        eyes[k:k + 3] = (0.5, 0.0, 0.5)
        k += int(rng.integers(38, 88))
    return eyes


# ----------------------------------------------------------------------------- clips
def make_synthetic_clip(
    path: str | os.PathLike[str],
    *,
    seconds: float = 3.0,
    seed: int = 0,
    size: int = 128,
    fps: int = 25,
    sample_rate: int = SAMPLE_RATE,
    broken: bool = False,
    style: int | None = None,
    jitter: float | None = None,
) -> SyntheticClip:
    """Write a talking cartoon face with speech-like audio to ``path`` (H.264 + AAC MP4).

    Args:
        seconds: duration; the clip has T = round(seconds * fps) frames and exactly
            T * sample_rate / fps audio samples.
        seed: seeds the audio, face placement, jitter and blinks.
        size: frame side in pixels (even).
        broken: draw no face (a plain background with the audio): an unusable clip.
        style: index of skin / background / hair / shirt colours (default: ``seed``).
        jitter: head jitter amplitude in pixels (default: 2 % of ``size``).

    Returns:
        A :class:`SyntheticClip` with the per-frame ground truth.
    """
    from float_core.media.video import VideoWriter

    if size % 2 or size < 32:
        raise ValueError(f"size must be even and >= 32, got {size}")
    if sample_rate % fps:
        raise ValueError(f"sample_rate ({sample_rate}) must be a multiple of fps ({fps})")
    spf = sample_rate // fps
    num_frames = int(round(seconds * fps))
    if num_frames < 1:
        raise ValueError(f"seconds must give at least one frame at {fps} fps, got {seconds}")
    rng = np.random.default_rng(seed)
    audio = speech_like_audio(num_frames * spf, rng, sample_rate)
    env = envelope(audio, spf)
    mouth = np.minimum(env / SPEECH_RMS, 1.0).astype(np.float32)

    k = seed if style is None else style
    colors = dict(skin=_SKINS[k % len(_SKINS)], background=_BACKGROUNDS[k % len(_BACKGROUNDS)],
                  hair=_HAIRS[k % len(_HAIRS)], shirt=_SHIRTS[k % len(_SHIRTS)])
    center = (size * rng.uniform(0.45, 0.55), size * rng.uniform(0.47, 0.53))
    scale = rng.uniform(0.8, 0.95)
    amp = 0.02 * size if jitter is None else float(jitter)
    dx, dy = _smooth_walk(rng, num_frames, amp), _smooth_walk(rng, num_frames, amp)
    eyes = _blinks(rng, num_frames)
    path = Path(path)
    with VideoWriter(path, fps=fps, audio=(audio, sample_rate)) as writer:
        for i in range(num_frames):
            if broken:
                frame = np.empty((size, size, 3), np.uint8)
                frame[:] = colors["background"]
            else:
                frame = draw_face(size, mouth=float(mouth[i]), center=(center[0] + dx[i], center[1] + dy[i]),
                                  scale=scale, eyes_open=float(eyes[i]), **colors)
            writer.write(frame)
    return SyntheticClip(path=path, envelope=env, mouth=mouth, face_center=center, fps=fps,
                         sample_rate=sample_rate)


def _write_without_audio(path: Path, frames: np.ndarray, fps: int) -> None:
    from float_core.media.video import VideoWriter

    with VideoWriter(path, fps=fps) as writer:
        writer.write(frames)


def make_synthetic_dataset(
    folder: str | os.PathLike[str],
    num_clips: int = 4,
    seconds: float = 3.0,
    seed: int = 0,
    size: int = 128,
    broken: bool = True,
) -> SyntheticDataset:
    """Write ``num_clips`` talking-face clips (different seeds, colours, placements) to ``folder``.

    Clips are ``clip_000.mp4``, ``clip_001.mp4``, ...; every second one goes into a
    ``speaker_b/`` subfolder so that recursive discovery is exercised. With ``broken=True`` the
    files of :data:`BROKEN_FILES` are added: random bytes named .mp4, a clip without a face, a
    face video without an audio stream, a face video with an all-zero audio track, and a
    10-frame clip.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    clips = []
    for i in range(num_clips):
        sub = folder / "speaker_b" if i % 2 else folder
        sub.mkdir(exist_ok=True)
        clips.append(make_synthetic_clip(sub / f"clip_{i:03d}.mp4", seconds=seconds, seed=seed + i, size=size))
    bad: dict[str, str] = {}
    if broken:
        rng = np.random.default_rng(seed + 10_000)
        (folder / "corrupt.mp4").write_bytes(rng.integers(0, 256, 4096, dtype=np.uint8).tobytes())
        make_synthetic_clip(folder / "noface.mp4", seconds=seconds, seed=seed + 1000, size=size, broken=True)
        face = draw_face(size, mouth=0.3, center=(size / 2, size / 2), scale=0.9)
        _write_without_audio(folder / "silent_video.mp4", np.repeat(face[None], int(seconds * FPS), axis=0), FPS)
        _write_silent_audio(folder / "silent_audio.mp4", face, int(seconds * 25))
        make_synthetic_clip(folder / "tooshort.mp4", seconds=0.4, seed=seed + 2000, size=size)
        bad = dict(BROKEN_FILES)
    return SyntheticDataset(folder=folder, clips=clips, broken=bad)


def _write_silent_audio(path: Path, face: np.ndarray, num_frames: int) -> None:
    import warnings

    from float_core.media.audio import AudioWarning
    from float_core.media.video import VideoWriter

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AudioWarning)  # the silence is the point of this file
        writer = VideoWriter(path, fps=FPS, audio=(np.zeros(num_frames * SAMPLES_PER_FRAME, np.float32), SAMPLE_RATE))
    with writer:
        writer.write(np.repeat(face[None], num_frames, axis=0))
