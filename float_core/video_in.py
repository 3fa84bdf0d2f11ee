"""Video in: motion from a video's face, reenactment, lips from speech with the head from a video,
and dubbing (the motion latent space of paper Sec. 4.1).

FLOAT's motion auto-encoder is LIA's: its encoder maps any face crop to coefficients lambda over
the same M orthonormal directions the flow model samples in (Eq. 1, w_{r->D} = sum_m lambda_m v_m).
A video therefore gives motion directly: crop the face in every frame, encode each crop with the
encoder that encodes portraits (:meth:`FloatPipeline.encode_crop
<float_core.pipeline.FloatPipeline.encode_crop>`), and the (T, d) motion latents can be decoded
with any portrait's identity latent and feature pyramid (reenactment, as in LIA), or mixed
direction by direction with speech-sampled motion.

**Decoding.** PyAV decodes the first video stream that is not cover art. Frames are resampled to
:data:`~float_core.config.FPS` by their timestamps (:func:`iter_frames_at_fps`: for each instant
k / 25 s the nearest source frame), which also handles variable-frame-rate (phone) videos, and
turned upright by their display matrix (:func:`upright`: the rotation metadata phones write
instead of rotating the pixels). Frames stream through: no pass keeps more than one decoded frame
(a few when reading backwards, :class:`FrameReader`), so memory does not grow with length or
resolution beyond one frame.

**Face track.** Pass 1 detects faces (:func:`float_core.media.face.detect_faces`, on the frame
area-downscaled to at most :data:`DETECT_MAX_SIDE`) on every :data:`DETECT_EVERY`-th frame and
follows one face: the ``face``-th largest of the first frame with a face, then on each
detection frame the detection overlapping the previous one most (IoU at least
:data:`TRACK_MIN_IOU`). Frames between detections, and detection frames where the face was not
found, take their neighbours' boxes (linear interpolation, held at the ends); the box corners
are then smoothed by a Gaussian of :data:`TRACK_SIGMA_SECONDS`, so the crop does not jitter.
Each frame's crop is FLOAT's crop rule around its smoothed box
(:func:`~float_core.media.face.crop_box_for_face`). Pass 2 decodes again, crops and encodes.

**Transfer** (:func:`drive_motion`). LIA's relative transfer: the portrait's own motion plus
the driving motion at t minus the driving motion at frame 0, so a still driving video leaves the
portrait as it is and only changes are transferred; absolute transfer uses the driving motion
itself (the portrait takes the video's pose).

**Groups** (:func:`mix_motion`). The directions of the named groups (:func:`float_core.
directions.measure_directions`: mouth, eyes, head, other) take their lambda from the video,
the others keep the speech-sampled motion's; the part of the latent outside span(V) is the
speech motion's. A video shorter than the speech is played back and forth (:func:`ping_pong`),
a longer one is cut.

**Dub** (:class:`DubCompositor`). Identity comes from one reference frame of the video
(:func:`choose_reference`); every frame's head, eyes and other coefficients from that frame,
the mouth from the speech; the decoded face is pasted back into the video's own frame through
its tracked crop square (:class:`~float_core.media.face.PasteBack`: feathered edges, colour
matched), so every pixel outside the square is the input frame's.
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Sequence, Union

import numpy as np
import torch
from torch import Tensor

from .config import FPS, SAMPLE_RATE
from .directions import GROUPS
from .editing import apply_lambda_offsets, motion_to_lambda
from .progress import ProgressLike, as_progress

if TYPE_CHECKING:
    import av

    from .directions import DirectionInfo
    from .inputs import SourceImage
    from .media.face import CropBox, FaceDetection
    from .pipeline import FloatPipeline

__all__ = [
    "DETECT_EVERY",
    "DETECT_MAX_SIDE",
    "DubCompositor",
    "FaceTrack",
    "FrameReader",
    "TRACK_MIN_IOU",
    "TRACK_SIGMA_SECONDS",
    "VideoError",
    "VideoInput",
    "VideoMotion",
    "analyse_video",
    "align_to_video",
    "choose_reference",
    "drive_motion",
    "group_mask",
    "group_note",
    "iter_frames_at_fps",
    "missing_groups",
    "mix_motion",
    "open_video",
    "parse_groups",
    "ping_pong",
    "smooth_track",
    "transfer_groups",
    "upright",
    "video_audio",
    "video_seconds",
    "video_stream",
]

VideoInput = Union[str, "os.PathLike[str]"]  #: a video file path

#: Detect the face on every n-th frame (0.2 s at 25 fps); the frames between take interpolated boxes.
DETECT_EVERY = 5
#: Frames are area-downscaled to at most this side for detection (faces in talking-head videos are
#: large; MTCNN's cost grows with the pixels). Boxes are mapped back to full resolution.
DETECT_MAX_SIDE = 512
#: Standard deviation (seconds) of the Gaussian that smooths the face boxes over time.
TRACK_SIGMA_SECONDS = 0.12
#: A detection continues the track when it overlaps the previous box at least this much (IoU).
TRACK_MIN_IOU = 0.2
#: "frontal": the nose projects within this fraction of the eye distance of the eyes' midpoint ...
FRONTAL_YAW = 0.15
#: ... and the eye line is within this many degrees of horizontal.
FRONTAL_ROLL_DEGREES = 15.0
#: "sharp": the face's Laplacian variance is at least this fraction of the video's median.
SHARP_FRACTION = 0.5
#: Side of the grey face patch the sharpness is measured on (comparable across face sizes).
SHARPNESS_PATCH = 64
#: Bytes of decoded frames held at most when a video is read backwards (ping-pong).
REVERSE_CHUNK_BYTES = 256 * 2**20
#: Decode on instead of seeking when the next wanted frame is at most this many seconds ahead.
SEEK_AHEAD_SECONDS = 2.0


class VideoError(ValueError):
    """The video cannot be used: not a video, no video stream, no frames."""


# ---------------------------------------------------------------------------- decoding
def _is_cover_art(stream: Any) -> bool:
    import av

    return bool(stream.disposition & av.stream.Disposition.attached_pic)


def open_video(video: VideoInput) -> "av.container.InputContainer":
    """Open a video file for decoding, or raise :class:`VideoError` saying what is wrong.

    Refused: a missing or empty file, a file FFmpeg cannot read, a still image, a file without a
    video stream (audio only, or only cover art).
    """
    import av

    path = Path(video)
    if not path.is_file():
        raise VideoError(f"video file not found: {path}")
    if path.stat().st_size == 0:
        raise VideoError(f"{path.name} is empty (0 bytes), not a video")
    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError, ValueError, UnicodeDecodeError) as exc:
        raise VideoError(f"{path.name} is not a video that can be decoded ({exc}); "
                         "use an MP4, MOV, MKV or WebM file") from exc
    name = container.format.name
    if name == "image2" or name.endswith("_pipe"):
        container.close()
        raise VideoError(f"{path.name} is a still image, not a video; use it as the portrait instead")
    if not any(not _is_cover_art(s) for s in container.streams.video):
        cover = " (only cover art)" if container.streams.video else ""
        container.close()
        raise VideoError(f"{path.name} has no video stream{cover}; give a video of a face")
    video_stream(container).thread_type = "AUTO"
    return container


def video_stream(container: "av.container.InputContainer") -> Any:
    """The first video stream of ``container`` that is not cover art."""
    return next(s for s in container.streams.video if not _is_cover_art(s))


def _frame_time(frame: Any, stream: Any, counter: int) -> Fraction:
    """Presentation time of a decoded frame as an exact fraction of a second."""
    if frame.pts is not None:
        return Fraction(frame.pts) * Fraction(frame.time_base or stream.time_base)
    rate = stream.average_rate or stream.guessed_rate or FPS
    return Fraction(counter) / Fraction(rate)


def iter_frames_at_fps(container: "av.container.InputContainer", fps: int = FPS,
                       stream: Any = None) -> Iterator[tuple[int, Any]]:
    """Yield ``(k, frame)`` for the instants k / fps, each with the nearest decoded frame.

    Times are taken relative to the first frame and compared exactly (fractions), so a variable
    frame rate is resampled like a constant one. A source frame may be yielded several times
    (up-sampling) or not at all (down-sampling). The last frame covers half its duration past
    its time, so a 25 fps source gives back all its frames. ``stream``: the video stream
    (default: the container's first).
    """
    stream = container.streams.video[0] if stream is None else stream
    step = Fraction(1, fps)
    k, start = 0, None
    prev: tuple[Fraction, Any] | None = None
    for counter, frame in enumerate(container.decode(stream)):
        t = _frame_time(frame, stream, counter)
        if start is None:
            start = t
        t -= start
        if prev is not None and t <= prev[0]:
            continue  # a duplicate or out-of-order timestamp: keep the first
        if prev is None:
            prev = (t, frame)
            continue
        while k * step <= t:
            target = k * step
            yield k, (prev[1] if target - prev[0] <= t - target else frame)
            k += 1
        prev = (t, frame)
    if prev is None:
        return
    last_t, last = prev
    rate = stream.average_rate or stream.guessed_rate
    duration = Fraction(1) / Fraction(rate) if rate else step
    if last.duration:
        duration = Fraction(last.duration) * Fraction(last.time_base or stream.time_base)
    while k == 0 or k * step < last_t + duration / 2:  # a single-frame video still gives one frame
        yield k, last
        k += 1


def upright(frame: Any) -> np.ndarray:
    """A decoded frame as an RGB uint8 array (H, W, 3) in display orientation.

    Phones store portrait videos sideways with a display matrix ("rotation" metadata) that
    players apply; ``frame.rotation`` is its counter-clockwise angle, applied here in quarter
    turns as FFmpeg's own auto-rotation does.
    """
    rgb = frame.to_ndarray(format="rgb24")
    quarter = round(frame.rotation / 90) % 4
    return np.ascontiguousarray(np.rot90(rgb, quarter)) if quarter else rgb


def _first_time(container: "av.container.InputContainer", kind: str) -> float | None:
    """Time (s) of the first decoded frame of the first ``kind`` ("audio"/"video") stream."""
    streams = getattr(container.streams, kind)
    if not streams:
        return None
    for frame in container.decode(streams[0]):
        if frame.time is not None:
            return float(frame.time)
    return None


def _audio_offset_seconds(path: VideoInput) -> float | None:
    """How much later (seconds) the audio track starts than the first video frame, or None
    when a track is missing or has no timestamps."""
    import av

    try:
        with av.open(str(path)) as container:
            a0 = _first_time(container, "audio")
        with av.open(str(path)) as container:
            v0 = _first_time(container, "video")
    except av.FFmpegError:
        return None
    return None if a0 is None or v0 is None else a0 - v0


def align_to_video(audio: np.ndarray, path: VideoInput, rate: int) -> np.ndarray:
    """The audio track of the file ``path`` (decoded at ``rate``) shifted so that sample 0 is at
    the first video frame: containers may start one stream later than the other."""
    offset = _audio_offset_seconds(path)
    shift = 0 if offset is None else int(round(offset * rate))
    if shift > 0:
        return np.concatenate([np.zeros(shift, np.float32), audio])
    return audio[-shift:] if shift < 0 else audio


def video_audio(video: VideoInput, rate: int = SAMPLE_RATE, num_frames: int | None = None) -> np.ndarray | None:
    """The video's audio as mono float32 at ``rate``, sample 0 at the first video frame; None
    when it has no audio track. With ``num_frames`` it is cut or zero-padded to their length."""
    from .media.audio import AudioWarning, load_audio

    with open_video(video) as container:
        if not container.streams.audio:
            return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AudioWarning)  # a silent track is still the video's own sound
        audio = align_to_video(load_audio(video, target_rate=rate), video, rate)
    if num_frames is not None:
        length = int(round(num_frames * rate / FPS))
        audio = np.pad(audio[:length], (0, max(0, length - audio.shape[0])))
    return audio


# ---------------------------------------------------------------------------- face track
@dataclass(frozen=True)
class FaceTrack:
    """The tracked face of a video, per 25 fps frame (see the module docstring).

    Attributes:
        boxes: (N, 4) float64 smoothed face boxes (x1, y1, x2, y2) in upright frame pixels.
        detected: (N,) bool: the tracked face was detected on that frame (the others are interpolated).
        sharpness: (N,) float64: variance of the Laplacian of the grey face patch; nan where not detected.
        yaw: (N,) float64: distance of the nose from the eyes' midpoint along the eye line, in eye
            distances (0 = frontal); nan where unknown.
        roll: (N,) float64: angle of the eye line in degrees; nan where unknown.
    """

    boxes: np.ndarray
    detected: np.ndarray
    sharpness: np.ndarray
    yaw: np.ndarray
    roll: np.ndarray

    @property
    def num_frames(self) -> int:
        return int(self.boxes.shape[0])

    def crop_boxes(self, scale: float | None = None) -> list["CropBox"]:
        """FLOAT's crop square around every frame's box (``scale``: None for the reference 1.6)."""
        from .media.face import CROP_SCALE, crop_box_for_face

        return [crop_box_for_face(tuple(b), CROP_SCALE if scale is None else scale) for b in self.boxes.tolist()]

    def frontal(self) -> np.ndarray:
        """(N,) bool: a detected face with nose and eyes frontal (no landmarks: counted frontal)."""
        yaw_ok = np.where(np.isnan(self.yaw), True, self.yaw <= FRONTAL_YAW)
        roll_ok = np.where(np.isnan(self.roll), True, np.abs(self.roll) <= FRONTAL_ROLL_DEGREES)
        return self.detected & yaw_ok & roll_ok


def _iou(a: Sequence[float], b: Sequence[float]) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(w, 0.0) * max(h, 0.0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def smooth_track(boxes: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian smoothing over time of (N, 4) boxes (standard deviation ``sigma`` frames).

    The ends are extended with their own values. Computed as x[t] + the weighted mean of
    x[t + i] - x[t], so a box that does not change stays exactly the same number.
    """
    boxes = np.asarray(boxes, dtype=np.float64)
    if sigma <= 0 or boxes.shape[0] < 2:
        return boxes.copy()
    radius = max(1, int(math.ceil(3 * sigma)))
    offsets = np.arange(-radius, radius + 1)
    weights = np.exp(-0.5 * (offsets / sigma) ** 2)
    weights /= weights.sum()
    padded = np.pad(boxes, ((radius, radius), (0, 0)), mode="edge")
    windows = np.lib.stride_tricks.sliding_window_view(padded, 2 * radius + 1, axis=0)  # (N, 4, 2r+1)
    return boxes + np.einsum("ncw,w->nc", windows - boxes[:, :, None], weights)


def _face_measures(image: np.ndarray, det: "FaceDetection") -> tuple[float, float, float]:
    """(sharpness, yaw, roll) of one detected face (see :class:`FaceTrack`)."""
    from PIL import Image

    h, w = image.shape[:2]
    x1, y1, x2, y2 = det.box
    x1, y1 = max(0, int(x1)), max(0, int(y1))
    x2, y2 = min(w, int(math.ceil(x2))), min(h, int(math.ceil(y2)))
    sharpness = math.nan
    if x2 - x1 >= 4 and y2 - y1 >= 4:
        grey = Image.fromarray(image[y1:y2, x1:x2]).convert("L").resize((SHARPNESS_PATCH,) * 2, Image.Resampling.BOX)
        g = np.asarray(grey, dtype=np.float64)
        lap = 4 * g[1:-1, 1:-1] - g[:-2, 1:-1] - g[2:, 1:-1] - g[1:-1, :-2] - g[1:-1, 2:]
        sharpness = float(lap.var())
    yaw = roll = math.nan
    if det.landmarks is not None:
        (lx, ly), (rx, ry), (nx, ny) = det.landmarks[:3]
        ux, uy = rx - lx, ry - ly
        dist2 = ux * ux + uy * uy
        if dist2 > 0:
            yaw = abs(((nx - lx) * ux + (ny - ly) * uy) / dist2 - 0.5)
            roll = math.degrees(math.atan2(uy, ux))
    return sharpness, yaw, roll


class _Tracker:
    """Pass 1's state: follows one face over the detection frames (see the module docstring)."""

    def __init__(self, face: int, name: str):
        self.face, self.name = face, name
        self.keys: list[int] = []
        self.boxes: list[tuple[float, float, float, float]] = []
        self.measures: dict[int, tuple[float, float, float]] = {}

    def add(self, k: int, image: np.ndarray, faces: list["FaceDetection"]) -> None:
        if not faces:
            return
        if not self.boxes:
            if self.face >= len(faces):
                raise ValueError(f"face {self.face + 1} was chosen but the first frame of {self.name} with a face "
                                 f"(frame {k}) shows {len(faces)}; pick 1 to {len(faces)}")
            chosen = faces[self.face]
        else:
            chosen = max(faces, key=lambda f: _iou(f.box, self.boxes[-1]))
            if _iou(chosen.box, self.boxes[-1]) < TRACK_MIN_IOU:
                return  # another face, or a false detection: this frame takes its neighbours' box
        self.keys.append(k)
        self.boxes.append(tuple(float(v) for v in chosen.box))  # type: ignore[arg-type]
        self.measures[k] = _face_measures(image, chosen)

    def track(self, num_frames: int, sigma: float) -> FaceTrack:
        frames = np.arange(num_frames)
        keys = np.asarray(self.keys)
        known = np.asarray(self.boxes, dtype=np.float64)
        boxes = np.stack([np.interp(frames, keys, known[:, c]) for c in range(4)], axis=1)
        measures = np.full((num_frames, 3), np.nan)
        for k, values in self.measures.items():
            measures[k] = values
        detected = np.zeros(num_frames, bool)
        detected[keys] = True
        return FaceTrack(smooth_track(boxes, sigma), detected, measures[:, 0], measures[:, 1], measures[:, 2])


def _frame_index(value: Any, num_frames: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 0 <= value < num_frames:
        raise ValueError(f"reference_frame: must be a frame of the video, 0 to {num_frames - 1} (at {FPS} fps), "
                         f"got {value!r}")
    return int(value)


def choose_reference(track: FaceTrack, requested: int | None = None) -> tuple[int, str]:
    """The dub's identity frame and why: ``requested`` (validated), else the first frame whose
    face is detected, frontal (:meth:`FaceTrack.frontal`) and sharp (Laplacian variance at least
    :data:`SHARP_FRACTION` of the video's median), else the sharpest frontal, else the sharpest."""
    if requested is not None:
        k = _frame_index(requested, track.num_frames)
        return k, f"reference frame {k} (chosen)"
    sharpness = np.where(track.detected, track.sharpness, np.nan)
    measured = ~np.isnan(sharpness)
    if not measured.any():
        k = int(np.argmax(track.detected))
        return k, f"reference frame {k} ({k / FPS:.2f} s): the first with a detected face"
    sharp = measured & (np.nan_to_num(sharpness, nan=-1.0) >= SHARP_FRACTION * np.nanmedian(sharpness))
    frontal = track.frontal() & measured
    if (frontal & sharp).any():
        k, why = int(np.argmax(frontal & sharp)), "the first with a frontal, sharp face"
    else:
        pool, why = ((frontal, "no frontal face is sharp: the sharpest frontal one") if frontal.any()
                     else (measured, "no face is frontal: the sharpest one"))
        k = int(np.nanargmax(np.where(pool, sharpness, np.nan)))
    return k, f"reference frame {k} ({k / FPS:.2f} s): {why}"


# ---------------------------------------------------------------------------- motion from video
@dataclass(frozen=True)
class VideoMotion:
    """A video's face motion at 25 fps and what is needed to read its frames again.

    Attributes:
        path: the video file.
        width, height: upright frame size.
        frame_pts: the source frame (its presentation timestamp) of every 25 fps frame.
        motion: motion latents (N, d) of the frames, on the pipeline's device.
        lambdas: their coefficients (N, M) in the orthonormal basis (the encoder's lambda).
        track: the face track, or None when the frames were not cropped.
        crop_boxes: every frame's crop square, or None when not cropped.
        reference: the reference frame (identity of a dub), or None when none was asked for.
        reference_source: that frame's :class:`~float_core.inputs.SourceImage`, or None.
        has_audio: whether the video has an audio track.
        message: notes for the user (reference frame, frames without a detected face).
    """

    path: Path
    width: int
    height: int
    frame_pts: tuple[int | None, ...]
    motion: Tensor
    lambdas: Tensor
    track: FaceTrack | None
    crop_boxes: tuple["CropBox", ...] | None
    reference: int | None = None
    reference_source: "SourceImage | None" = None
    has_audio: bool = False
    message: str | None = None

    @property
    def num_frames(self) -> int:
        return int(self.motion.shape[0])

    @property
    def seconds(self) -> float:
        return self.num_frames / FPS

    def reader(self) -> "FrameReader":
        """A :class:`FrameReader` of this video's upright 25 fps frames."""
        return FrameReader(self.path, self.frame_pts)


def _checked_frames(num_frames: int, detect_every: int) -> int:
    """How many frames pass 1 runs the detector on: every n-th and the last."""
    return len(range(0, num_frames, detect_every)) + (1 if (num_frames - 1) % detect_every else 0)


def _header_seconds(container: Any, stream: Any) -> float | None:
    """The video stream's duration from the container's header (nothing decoded), or None."""
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    if container.duration:
        return container.duration / 1_000_000
    return None


def video_seconds(video: VideoInput) -> float | None:
    """How long a video is by its header (nothing decoded; None when the header does not say),
    e.g. to refuse one over a limit before any work. Raises :class:`VideoError` as
    :func:`open_video` does."""
    with open_video(video) as container:
        return _header_seconds(container, video_stream(container))


def _estimated_frames(container: Any, stream: Any) -> int:
    """The 25 fps frame count expected from the container's header (progress bars only)."""
    seconds = _header_seconds(container, stream)
    return 1 if seconds is None else max(1, int(seconds * FPS))


def analyse_video(pipe: "FloatPipeline", video: VideoInput, *, crop: bool = True, face: int = 0,
                  crop_scale: float | None = None, reference_frame: int | str | None = None,
                  detect_every: int = DETECT_EVERY, progress: ProgressLike = None) -> VideoMotion:
    """Decode a video at 25 fps, track its face and encode every frame's motion (two passes).

    Args:
        crop: track the face and crop it in every frame; False: every whole frame is resized to
            the model's input size (a video that is already a face crop).
        face: which face to follow, 0 = the largest in the first frame with a face.
        crop_scale: crop side in face-box sizes (None: the reference's 1.6).
        reference_frame: also encode a reference frame's :class:`~float_core.inputs.SourceImage`
            (a dub's identity): a frame index, ``"auto"`` (:func:`choose_reference`), or None.
        detect_every: run the face detector on every n-th frame.
        progress: reported as ``("video", frames_scanned, estimate)`` then ``("encoding", k, N)``.

    Raises:
        VideoError: not a video, no video stream, no frames.
        NoFaceError: ``crop`` and no face in any checked frame.
    """
    import av

    from .media.face import CROP_SCALE, NoFaceError, crop_portrait, detect_faces, extract_crop

    if isinstance(detect_every, bool) or not isinstance(detect_every, int) or detect_every < 1:
        raise ValueError(f"detect_every: must be a whole number >= 1, got {detect_every!r}")
    if isinstance(face, bool) or not isinstance(face, (int, np.integer)) or face < 0:
        raise ValueError(f"face: 0 is the largest face, 1 the next, ...; got {face!r}")
    if reference_frame is not None and reference_frame != "auto" and not isinstance(reference_frame, (int, np.integer)):
        raise ValueError(f"reference_frame: expected a frame index, 'auto' or None, got {reference_frame!r}")
    path = Path(video)
    report = as_progress(progress)
    size = pipe.config.image_size
    scale = CROP_SCALE if crop_scale is None else crop_scale
    tracker = _Tracker(face, path.name)
    pts: list[int | None] = []
    width = height = 0
    # ---- pass 1: timestamps, frame size, faces on every detect_every-th frame
    with open_video(path) as container:
        stream = video_stream(container)
        has_audio = bool(container.streams.audio)
        estimate = _estimated_frames(container, stream)
        try:
            last = None
            for k, frame in iter_frames_at_fps(container, stream=stream):
                pts.append(frame.pts)
                last = frame
                if k == 0 or (crop and k % detect_every == 0):
                    image = upright(frame)
                    height, width = image.shape[:2]
                    if crop:
                        tracker.add(k, image, detect_faces(image, max_side=DETECT_MAX_SIDE))
                if k % FPS == 0:
                    report("video", k + 1, max(estimate, k + 1))
            if crop and last is not None and (len(pts) - 1) % detect_every:  # the last frame too: no held box
                image = upright(last)
                tracker.add(len(pts) - 1, image, detect_faces(image, max_side=DETECT_MAX_SIDE))
        except av.FFmpegError as exc:
            raise VideoError(f"{path.name}: cannot decode its video frames ({exc})") from exc
    num = len(pts)
    if num == 0:
        raise VideoError(f"{path.name} has no video frames (zero length); give a video of at least one frame")
    report("video", num, num)
    notes: list[str] = []
    track = boxes = None
    reference = None
    if crop:
        if not tracker.keys:
            checked = _checked_frames(num, detect_every)
            raise NoFaceError(f"no face found in {path.name} ({checked} of its {num} frames checked); use a video "
                              "that shows a face, or turn cropping off for a video that is already a face crop")
        track = tracker.track(num, TRACK_SIGMA_SECONDS * FPS)
        boxes = track.crop_boxes(scale)
        checked = _checked_frames(num, detect_every)
        if checked > len(tracker.keys):
            notes.append(f"the face was not found on {checked - len(tracker.keys)} of the {checked} checked "
                         "frames; they took their neighbours' boxes")
    if reference_frame is not None:
        requested = None if reference_frame == "auto" else reference_frame
        if track is not None:
            reference, why = choose_reference(track, requested)
        elif requested is None:
            raise ValueError("reference_frame='auto' needs the face track (crop=True); give a frame index")
        else:
            reference = _frame_index(requested, num)
            why = f"reference frame {reference} (chosen)"
        notes.append(why)
    # ---- pass 2: crop and encode every frame through the portrait's encoder path; the latents go
    # into arrays allocated once (not one small tensor per frame)
    motion = torch.empty(num, pipe.config.style_dim, device=pipe.device)
    lambdas = torch.empty(num, pipe.config.motion_dim, device=pipe.device)
    encoded = 0
    reference_source = None
    with open_video(path) as container:
        stream = video_stream(container)
        try:
            for k, frame in iter_frames_at_fps(container, stream=stream):
                if k >= num:
                    break
                image = upright(frame)
                if boxes is None:
                    cropped = crop_portrait(image, crop=False, size=size).image
                else:
                    cropped = extract_crop(image, boxes[k], size)
                source = pipe.encode_crop(cropped, crop_box=None if boxes is None else boxes[k])
                motion[k] = source.source_motion
                lambdas[k] = source.source_lambda
                encoded = k + 1
                if k == reference:
                    reference_source = source
                report("encoding", k + 1, num)
        except av.FFmpegError as exc:
            raise VideoError(f"{path.name}: cannot decode its video frames ({exc})") from exc
    if encoded != num:
        raise VideoError(f"{path.name} gave {encoded} frames on the second read, {num} on the first")
    return VideoMotion(path=path, width=width, height=height, frame_pts=tuple(pts), motion=motion,
                       lambdas=lambdas, track=track, crop_boxes=None if boxes is None else tuple(boxes),
                       reference=reference, reference_source=reference_source, has_audio=has_audio,
                       message="; ".join(notes) or None)


# ---------------------------------------------------------------------------- motion transfer
def ping_pong(num_source: int, num_out: int) -> np.ndarray:
    """The source frame of every output frame: 0, 1, ..., N-1, N-2, ..., 1, 0, 1, ... (back and
    forth when the video is shorter than the output, cut when longer). (num_out,) int64."""
    if num_source < 1 or num_out < 0:
        raise ValueError(f"ping_pong: need at least one source frame and a non-negative length, got "
                         f"{num_source} and {num_out}")
    t = np.arange(num_out, dtype=np.int64)
    if num_source == 1:
        return np.zeros_like(t)
    period = 2 * num_source - 2
    t %= period
    return np.where(t < num_source, t, period - t)


def drive_motion(source_motion: Tensor, video_motion: Tensor, relative: bool = True,
                 index: np.ndarray | Sequence[int] | None = None) -> Tensor:
    """Motion latents that drive a portrait with a video's motion (LIA's transfer).

    ``relative``: w_{r->S} + (m[index[t]] - m[0]), the portrait's own motion plus the video's
    change since its first frame (a still video leaves the portrait still); else m[index[t]]
    (the video's pose itself). ``index``: the video frame of each output frame (default: all).
    """
    picked = video_motion if index is None else video_motion[torch.as_tensor(np.asarray(index), dtype=torch.long,
                                                                              device=video_motion.device)]
    if not relative:
        return picked.clone()
    return source_motion.to(picked)[None] + (picked - video_motion[:1])


def parse_groups(groups: str | Iterable[str]) -> tuple[str, ...]:
    """Direction groups from ``"head,eyes"`` or an iterable of names, validated against
    :data:`~float_core.directions.GROUPS` (order kept, duplicates dropped)."""
    names = groups.split(",") if isinstance(groups, str) else list(groups)
    out: list[str] = []
    for name in names:
        key = str(name).strip().lower()
        if not key:
            continue
        if key not in GROUPS:
            raise ValueError(f"groups: expected names from {', '.join(GROUPS)}, got {name!r}")
        if key not in out:
            out.append(key)
    if not out:
        raise ValueError(f"groups: name at least one of {', '.join(GROUPS)}")
    return tuple(out)


def group_mask(directions: Sequence["DirectionInfo"], groups: str | Iterable[str]) -> Tensor:
    """(M,) bool: the directions whose group is one of ``groups`` (``describe_directions``'s grouping)."""
    chosen = set(parse_groups(groups))
    return torch.tensor([d.group in chosen for d in directions], dtype=torch.bool)


def missing_groups(directions: Sequence["DirectionInfo"], groups: str | Iterable[str]) -> tuple[str, ...]:
    """The groups of ``groups`` with no direction in this portrait (nothing to take from a video)."""
    present = {d.group for d in directions}
    return tuple(g for g in parse_groups(groups) if g not in present)


def group_note(directions: Sequence["DirectionInfo"], groups: str | Iterable[str]) -> str | None:
    """A note for the user when some of ``groups`` have no direction in this portrait, else None."""
    missing = missing_groups(directions, groups)
    if not missing:
        return None
    return (f"no direction of this portrait moves mostly the {' or '.join(missing)} (describe_directions), so "
            f"nothing of that comes from the video")


def mix_motion(motion: Tensor, target_lambdas: Tensor, mask: Tensor, basis: Tensor) -> Tensor:
    """``motion`` (T, d) with the coefficients of the directions in ``mask`` (M,) replaced by
    ``target_lambdas`` (T, M); the other coefficients and the part outside span(V) unchanged
    (an offset in the orthonormal basis, :func:`~float_core.editing.apply_lambda_offsets`)."""
    if target_lambdas.shape[0] != motion.shape[0]:
        raise ValueError(f"mix_motion: {target_lambdas.shape[0]} target frames for {motion.shape[0]} motion frames")
    basis = basis.to(motion)
    current = motion_to_lambda(motion, basis)
    mask = mask.to(motion.device)
    delta = torch.where(mask[None], target_lambdas.to(current) - current, torch.zeros_like(current))
    return apply_lambda_offsets(motion, basis, delta)


def transfer_groups(motion: Tensor, video: VideoMotion, groups: str | Iterable[str],
                    directions: Sequence["DirectionInfo"], basis: Tensor, *, source_lambda: Tensor | None = None,
                    ) -> Tensor:
    """Speech-sampled ``motion`` (T, d) with the coefficients of the directions in ``groups`` taken
    from the video, frame t from video frame :func:`ping_pong` (N, T)[t].

    With ``source_lambda`` (the portrait's lambda(S)) the transfer is relative (LIA): lambda(S) +
    (lambda_video[t] - lambda_video[0]); without, the video frame's own coefficients (a dub,
    whose identity is one of its own frames). The other coefficients, and the part of the latent
    outside span(V), stay the speech motion's (:func:`mix_motion`).
    """
    index = torch.as_tensor(ping_pong(video.num_frames, int(motion.shape[0])), device=motion.device)
    lambdas = video.lambdas.to(motion)
    target = lambdas[index]
    if source_lambda is not None:
        target = source_lambda.to(target)[None] + (target - lambdas[:1])
    return mix_motion(motion, target, group_mask(directions, groups), basis)


# ---------------------------------------------------------------------------- reading frames again
class FrameReader:
    """Upright RGB frames of a video by 25 fps index, decoded on demand.

    :meth:`frames` takes any sequence of indices (e.g. a ping-pong order): increasing runs are
    decoded on (seeking ahead when the next frame is far), decreasing runs are read in chunks
    of at most :data:`REVERSE_CHUNK_BYTES` (a seek to the chunk's keyframe, decoded forwards,
    returned backwards). Frames are matched by their presentation timestamps recorded in
    pass 1; a video without timestamps is decoded again from its start instead of seeking.
    """

    def __init__(self, path: VideoInput, frame_pts: Sequence[int | None]):
        self.path = Path(path)
        self.frame_pts = tuple(frame_pts)
        self.seekable = all(p is not None for p in self.frame_pts)
        self._container: Any = None
        self._frames: Iterator[Any] | None = None
        self._current: Any = None  # the last decoded frame
        self._k = -1  # the last 25 fps index produced by sequential reading (no timestamps)

    def close(self) -> None:
        """Close the file (a later read opens it again)."""
        if self._container is not None:
            self._container.close()
        self._container = self._frames = self._current = None
        self._k = -1

    def __enter__(self) -> "FrameReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def frame(self, index: int) -> np.ndarray:
        """One frame (a seek, or a decode from the start without timestamps)."""
        return next(iter(self.frames([index])))

    def frames(self, indices: Iterable[int]) -> Iterator[np.ndarray]:
        """The frames at ``indices``, in that order (see the class docstring)."""
        order = [int(i) for i in indices]
        n = len(self.frame_pts)
        if any(not 0 <= i < n for i in order):
            raise IndexError(f"frame indices must be in 0..{n - 1}")
        i = 0
        while i < len(order):
            j = i + 1
            if j < len(order) and order[j] < order[i]:  # a decreasing run
                while j < len(order) and order[j] < order[j - 1]:
                    j += 1
                yield from self._backwards(order[i:j])
            else:
                while j < len(order) and order[j] >= order[j - 1]:
                    j += 1
                yield from self._forwards(order[i:j])
            i = j

    def _backwards(self, run: list[int]) -> Iterator[np.ndarray]:
        chunk = max(1, REVERSE_CHUNK_BYTES // max(1, self._frame_bytes()))
        for start in range(0, len(run), chunk):
            part = run[start:start + chunk]
            yield from reversed(list(self._forwards(part[::-1])))

    def _frame_bytes(self) -> int:
        if self._current is None:
            self._seek(0)
            self._advance(0)
        return int(self._current.width * self._current.height * 3)

    def _forwards(self, run: list[int]) -> Iterator[np.ndarray]:
        cache: tuple[int, np.ndarray] | None = None
        for index in run:
            if cache is not None and cache[0] == index:
                yield cache[1]
                continue
            self._advance(index)
            cache = (index, upright(self._current))
            yield cache[1]

    def _open(self) -> None:
        self.close()
        self._container = open_video(self.path)
        stream = video_stream(self._container)
        self._frames = (iter_frames_at_fps(self._container, stream=stream) if not self.seekable
                        else iter(self._container.decode(stream)))

    def _seek(self, index: int) -> None:
        """Position the decoder so that frame ``index`` is next or later."""
        if self._container is None:
            self._open()
        if not self.seekable:
            if self._k >= index:
                self._open()
            return
        target = self.frame_pts[index]
        current = None if self._current is None else self._current.pts
        stream = video_stream(self._container)
        ahead = SEEK_AHEAD_SECONDS / float(stream.time_base or Fraction(1, FPS))
        if current is not None and current <= target <= current + ahead:
            return
        if current is None and index < SEEK_AHEAD_SECONDS * FPS:
            return  # near the start of a freshly opened file: decode on
        self._container.seek(target, stream=stream, backward=True, any_frame=False)
        self._frames = iter(self._container.decode(stream))
        self._current = None

    def _advance(self, index: int) -> None:
        """Decode until ``self._current`` is the source frame of 25 fps frame ``index``."""
        self._seek(index)
        assert self._frames is not None
        if not self.seekable:
            for k, frame in self._frames:
                self._k, self._current = k, frame
                if k == index:
                    return
            raise VideoError(f"{self.path.name}: frame {index} could not be read again")
        target = self.frame_pts[index]
        if self._current is not None and self._current.pts == target:
            return
        for attempt in range(2):
            for frame in self._frames:
                if frame.pts is None or frame.pts < target:
                    continue
                self._current = frame
                if frame.pts == target:
                    return
                break
            if attempt == 0:  # the seek landed after the frame (an unusual index): decode from the start
                self._open()
        raise VideoError(f"{self.path.name}: frame {index} (timestamp {target}) could not be read again")


# ---------------------------------------------------------------------------- dub compositing
class DubCompositor:
    """Paste decoded faces back into a video's own frames, through its tracked crop squares.

    Output frame t is the video's frame ``index[t]`` with the generated face pasted into that
    frame's crop square (:class:`~float_core.media.face.PasteBack`, feathered, colour matched);
    pixels outside the square are the input frame's. Frames are read with one
    :class:`FrameReader`, in order, as the generated batches arrive.
    """

    def __init__(self, video: VideoMotion, index: np.ndarray | Sequence[int], size: int):
        if video.crop_boxes is None:
            raise ValueError("dub: the video's face must be tracked (crop=True) to paste the face back")
        self.video, self.index, self.size = video, np.asarray(index, dtype=np.int64), size

    def paste(self, generated: np.ndarray, original: np.ndarray, source_index: int) -> np.ndarray:
        """One generated (S, S, 3) uint8 frame pasted into the original frame ``source_index``."""
        from .media.face import PasteBack

        box = self.video.crop_boxes[source_index]  # type: ignore[index]
        return PasteBack(original, box, size=self.size, match_colour=True)(generated)

    def frames(self, batches: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        """Composite batches of generated frames (k, S, S, 3) into output frames 0, 1, ..."""
        total = self.index.shape[0]
        with self.video.reader() as reader:
            originals = reader.frames(self.index.tolist())
            t = 0
            for batch in batches:
                out = []
                for generated in batch:
                    if t >= total:
                        raise ValueError(f"dub: more generated frames than the {total} output frames")
                    out.append(self.paste(generated, next(originals), int(self.index[t])))
                    t += 1
                yield np.stack(out)

