"""Turn a folder of talking-head videos into a training set (paper Sec. 5.1 pre-processing).

``python -m float_core.train prepare --videos DIR --out DIR`` (or ``python -m
float_core.train.prepare ...``) does, for every video found under DIR (recursively):

1. decode it with PyAV and resample the video to 25 fps by timestamps (for each 1/25 s
   instant the nearest source frame), and the audio to 16 kHz mono float32
   (:func:`float_core.media.audio.load_audio`), as the paper converts HDTF/RAVDESS/VFHQ;
2. detect the face every ``detect_every`` frames and derive ONE crop square for the whole
   clip with the inference crop rule (:func:`float_core.media.face.crop_box_for_face`) from
   the median centre and median size of the detected boxes. A fixed box, like the paper's
   face-alignment pre-processing of whole clips (following FOMM/LIA), keeps the head motion
   (translation, scale) in the data, so the motion latents learn it; re-centring every frame
   would erase it and add detector jitter. The median ignores occasional misdetections;
3. crop every frame to ``size`` x ``size`` (zero padding outside the picture), store the
   frames as JPEGs (quality 95) in one ``frames.bin`` with an offset table, and the audio as
   ``audio.wav``, both trimmed to a common T = min(video frames, floor(samples / 640))
   frames (the audio keeps exactly T * 640 samples).

The layout is documented in :mod:`float_core.train.data`. Each clip is written to a
temporary folder and renamed when complete, so a crash never leaves half a clip; re-running
on the same ``--out`` keeps the clips already there (resume) unless ``--overwrite``. Unusable
videos (undecodable, no video or audio stream, silent, no face, too short) are skipped and
listed with their reason in ``index.json`` and in the final summary; one bad video never
stops the run.

Optional precomputation (needs a model, ``--weights``): ``--audio-features`` (the stacked
wav2vec2 layer outputs *before* the trainable projection, Sec. 4.2) and ``--emotion`` (the
speech-emotion probabilities w_e) for stage 2 with frozen audio/emotion encoders, and
``--motion`` (the motion latents w_{r->D} of every frame by the trained stage-1 encoder).

``--landmarks`` (no model needed; ``pip install face-alignment``, whose S3FD and 2D-FAN
weights are downloaded on first use) writes ``landmarks.npy``: the 68-point landmarks of every
stored frame, in pixels of the stored crop (:func:`precompute_landmarks`). Stage 1 then takes
its eye and mouth regions from them instead of fixed regions of the aligned crop.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import shutil
import statistics
import sys
import warnings
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from float_core.train.data import (
    AUDIO_FILE,
    CLIP_FILE,
    DATASET_FORMAT,
    DATASET_VERSION,
    FRAMES_FILE,
    INDEX_FILE,
    NUM_LANDMARKS,
    OFFSETS_FILE,
    PRECOMPUTED,
    ClipStore,
    DatasetError,
    frames_to_tensor,
    read_index,
    write_json_atomic,
)
from float_core.video_in import align_to_video, iter_frames_at_fps

if TYPE_CHECKING:
    import av

    from float_core.media.face import CropBox, FaceDetector
    from float_core.models.float_model import FloatModel
    from float_core.models.motion_autoencoder import MotionAutoEncoder

__all__ = [
    "DEFAULT_DETECT_EVERY",
    "DEFAULT_MIN_FACE_FRACTION",
    "DEFAULT_MIN_SECONDS",
    "VIDEO_EXTENSIONS",
    "LandmarkDetector",
    "LandmarkDetectorError",
    "PrepareReport",
    "Skipped",
    "add_prepare_parser",
    "add_subparser",
    "clip_id_for",
    "face_alignment_detector",
    "find_videos",
    "iter_frames_at_fps",
    "main",
    "precompute_conditions",
    "precompute_landmarks",
    "precompute_motion",
    "prepare_dataset",
    "run_prepare",
    "stable_crop_box",
]

VIDEO_EXTENSIONS = (".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v")
FPS = 25
SAMPLE_RATE = 16000
SAMPLES_PER_FRAME = SAMPLE_RATE // FPS  # 640

#: L' + L of the official model (10 + 50 frames at 25 fps): a shorter clip cannot give one
#: stage-2 training window (paper A.4).
DEFAULT_MIN_SECONDS = 2.4
#: Detect the face every 5th frame (0.2 s): enough samples for a robust median, 5x cheaper.
DEFAULT_DETECT_EVERY = 5
#: Skip a video whose face is found in fewer than this fraction of the sampled frames: the fixed
#: crop would then hold no usable face much of the time (cuts, profile views, other people).
DEFAULT_MIN_FACE_FRACTION = 0.5

_TMP_PREFIX = ".tmp-"
_JPEG_QUALITY = 95


class _SkipClip(Exception):
    """Internal: this video cannot be used; ``args[0]`` is the human-readable reason."""


@dataclass(frozen=True)
class Skipped:
    """A video that was not prepared and why (``source`` relative to the videos folder)."""

    source: str
    reason: str


@dataclass
class PrepareReport:
    """Outcome of :func:`prepare_dataset`."""

    out: Path
    prepared: list[str] = field(default_factory=list)  #: clip ids written in this run
    reused: list[str] = field(default_factory=list)  #: clip ids kept from an earlier run (resume)
    skipped: list[Skipped] = field(default_factory=list)

    @property
    def num_clips(self) -> int:
        return len(self.prepared) + len(self.reused)

    def summary(self) -> str:
        """A summary line plus one line per skipped video."""
        line = (f"{self.num_clips} clips prepared in {self.out} ({len(self.prepared)} new, "
                f"{len(self.reused)} kept from an earlier run), {len(self.skipped)} skipped")
        return "\n".join([line] + [f"  skipped {s.source}: {s.reason}" for s in self.skipped])


# ----------------------------------------------------------------------------- discovery
def find_videos(folder: str | os.PathLike[str], *, exclude: str | os.PathLike[str] | None = None) -> list[Path]:
    """Video files under ``folder`` (recursively, by extension, case-insensitive), sorted.

    Hidden files and folders are ignored, and so is everything under ``exclude`` (the output
    folder when it lies inside the videos folder).
    """
    folder = Path(folder)
    skip = Path(exclude).resolve() if exclude is not None else None
    found = []
    for path in folder.rglob("*"):
        rel = path.relative_to(folder)
        if any(part.startswith(".") for part in rel.parts) or path.suffix.lower() not in VIDEO_EXTENSIONS:
            continue
        if skip is not None and path.resolve().is_relative_to(skip):
            continue
        if path.is_file():
            found.append(path)
    return sorted(found, key=lambda p: p.relative_to(folder).as_posix())


def clip_id_for(relative: str | os.PathLike[str]) -> str:
    """A file-system safe id from a video's relative path: folders joined by ``__``, no suffix.

    ``"speaker_b/clip 1.mp4"`` -> ``"speaker_b__clip_1"``.
    """
    rel = Path(relative)
    parts = [*rel.parent.parts, rel.stem] if rel.parent != Path(".") else [rel.stem]
    ident = "__".join(re.sub(r"[^A-Za-z0-9._-]+", "_", p) for p in parts).strip("._") or "clip"
    return ident


def _unique_id(relative: str, used: set[str]) -> str:
    base = clip_id_for(relative)
    ident, n = base, 2
    while ident in used:
        ident, n = f"{base}-{n}", n + 1
    used.add(ident)
    return ident


# ----------------------------------------------------------------------------- decoding
def _open(path: Path) -> av.container.InputContainer:
    import av

    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise _SkipClip(f"cannot decode: {exc}") from exc
    if not container.streams.video:
        container.close()
        raise _SkipClip("no video stream")
    container.streams.video[0].thread_type = "AUTO"
    return container


def _load_audio(path: Path) -> np.ndarray:
    """16 kHz mono float32 with the audio track aligned to the first video frame."""
    from float_core.media.audio import SILENCE_PEAK, AudioError, AudioWarning, load_audio

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", AudioWarning)  # silence is reported as a skip reason
            audio = load_audio(path, target_rate=SAMPLE_RATE)
    except AudioError as exc:
        raise _SkipClip(f"audio: {exc}") from exc
    if float(np.abs(audio).max()) < SILENCE_PEAK:
        raise _SkipClip(f"silent audio (peak below {SILENCE_PEAK:g})")
    # Streams may start at different times (e.g. audio delayed in the container).
    audio = align_to_video(audio, path, SAMPLE_RATE)
    return audio


# ----------------------------------------------------------------------------- cropping
def stable_crop_box(boxes: list[tuple[float, float, float, float]]) -> CropBox:
    """One crop square for a clip from per-frame face boxes (x1, y1, x2, y2).

    The median centre and the median width and height give a representative box, to which
    FLOAT's inference crop rule is applied (see the module docstring for why one fixed box).
    """
    from float_core.media.face import crop_box_for_face

    if not boxes:
        raise ValueError("need at least one face box")
    cx = statistics.median((b[0] + b[2]) / 2 for b in boxes)
    cy = statistics.median((b[1] + b[3]) / 2 for b in boxes)
    w = statistics.median(b[2] - b[0] for b in boxes)
    h = statistics.median(b[3] - b[1] for b in boxes)
    return crop_box_for_face((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2))


def _center_square(width: int, height: int) -> CropBox:
    from float_core.media.face import CropBox

    side = min(width, height)
    return CropBox(x0=(width - side) // 2, y0=(height - side) // 2, size=side)


# ----------------------------------------------------------------------------- one clip
@dataclass(frozen=True)
class _Settings:
    size: int
    min_seconds: float
    detect_every: int
    min_face_fraction: float
    crop: bool


def _scan(path: Path, settings: _Settings, detector: FaceDetector | None) -> dict[str, Any]:
    """Pass 1: count 25 fps frames and detect faces on every ``detect_every``-th."""
    import av

    from float_core.media.face import detect_faces

    boxes: list[tuple[float, float, float, float]] = []
    sampled = frames = width = height = 0
    with _open(path) as container:
        stream = container.streams.video[0]
        src_fps = float(stream.average_rate) if stream.average_rate else None
        try:
            for k, frame in iter_frames_at_fps(container):
                frames, width, height = k + 1, frame.width, frame.height
                if settings.crop and k % settings.detect_every == 0:
                    sampled += 1
                    faces = detect_faces(frame.to_ndarray(format="rgb24"), detector)
                    if faces:
                        boxes.append(faces[0].box)
        except av.FFmpegError as exc:
            raise _SkipClip(f"cannot decode video frames: {exc}") from exc
    if frames == 0:
        raise _SkipClip("cannot decode: the video stream has no frames")
    return dict(frames=frames, width=width, height=height, boxes=boxes, sampled=sampled, src_fps=src_fps)


def _write_frames(path: Path, box: CropBox, num_frames: int, size: int, folder: Path, bar: Any) -> None:
    """Pass 2: crop, JPEG-encode and append the first ``num_frames`` frames to frames.bin."""
    import av
    from PIL import Image

    from float_core.media.face import extract_crop

    offsets = [0]
    with _open(path) as container, open(folder / FRAMES_FILE, "wb") as out:
        try:
            for k, frame in iter_frames_at_fps(container):
                if k >= num_frames:
                    break
                crop = extract_crop(frame.to_ndarray(format="rgb24"), box, size)
                buf = io.BytesIO()
                Image.fromarray(crop).save(buf, format="JPEG", quality=_JPEG_QUALITY)
                out.write(buf.getbuffer())
                offsets.append(out.tell())
                bar.update(1)
        except av.FFmpegError as exc:
            raise _SkipClip(f"cannot decode video frames: {exc}") from exc
    if len(offsets) != num_frames + 1:
        raise _SkipClip(f"the video gave {len(offsets) - 1} frames on the second read, {num_frames} on the first")
    np.save(folder / OFFSETS_FILE, np.asarray(offsets, dtype=np.int64))


def _prepare_one(path: Path, source: str, clip_id: str, clips_dir: Path, settings: _Settings,
                 detector: FaceDetector | None, progress: bool) -> dict[str, Any]:
    """Prepare one video into ``clips_dir/clip_id``; returns its index entry or raises _SkipClip."""
    import soundfile as sf
    from tqdm.auto import tqdm

    min_frames = int(np.ceil(settings.min_seconds * FPS - 1e-9))
    container = _open(path)  # undecodable / no video stream: fail before the (slower) audio decode
    container.close()
    audio = _load_audio(path)
    if audio.size // SAMPLES_PER_FRAME < min_frames:
        raise _SkipClip(f"too short: {audio.size / SAMPLE_RATE:.2f} s of audio, need {settings.min_seconds:g} s")
    scan = _scan(path, settings, detector)
    num_frames = min(scan["frames"], audio.size // SAMPLES_PER_FRAME)
    if num_frames < min_frames:
        raise _SkipClip(f"too short: {num_frames / FPS:.2f} s, need {settings.min_seconds:g} s")
    if settings.crop:
        found, sampled = len(scan["boxes"]), scan["sampled"]
        if found == 0:
            raise _SkipClip(f"no face found in any of the {sampled} sampled frames")
        if found < settings.min_face_fraction * sampled:
            raise _SkipClip(f"a face was found in only {found} of {sampled} sampled frames "
                            f"(need {settings.min_face_fraction:.0%})")
        box = stable_crop_box(scan["boxes"])
    else:
        box = _center_square(scan["width"], scan["height"])

    tmp = clips_dir / f"{_TMP_PREFIX}{clip_id}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        with tqdm(total=num_frames, desc=clip_id, unit="frame", disable=not progress, leave=False) as bar:
            _write_frames(path, box, num_frames, settings.size, tmp, bar)
        sf.write(tmp / AUDIO_FILE, audio[: num_frames * SAMPLES_PER_FRAME], SAMPLE_RATE, subtype="FLOAT")
        entry = {
            "id": clip_id, "source": source, "num_frames": num_frames, "dir": f"clips/{clip_id}",
            "crop_box": [box.x0, box.y0, box.size], "cropped": settings.crop, "image_size": settings.size,
            "source_size": [scan["width"], scan["height"]], "source_fps": scan["src_fps"],
            "faces_found": [len(scan["boxes"]), scan["sampled"]],
        }
        write_json_atomic(tmp / CLIP_FILE, entry)
        final = clips_dir / clip_id
        if final.exists():  # --overwrite: swap the old clip out only once the new one is complete
            old = clips_dir / f"{_TMP_PREFIX}old-{clip_id}-{os.getpid()}"
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return entry


def _prepare_one_safe(path: Path, source: str, clip_id: str, clips_dir: Path, settings: _Settings,
                      detector: FaceDetector | None, progress: bool) -> dict[str, Any] | Skipped:
    """:func:`_prepare_one` that turns any per-video failure into a :class:`Skipped`."""
    try:
        return _prepare_one(path, source, clip_id, clips_dir, settings, detector, progress)
    except _SkipClip as exc:
        return Skipped(source, str(exc))
    except (ImportError, MemoryError):
        raise  # no detector / out of memory: every other video would fail the same way
    except Exception as exc:  # noqa: BLE001 - one bad video must never stop the run
        return Skipped(source, f"unexpected error: {type(exc).__name__}: {exc}")


# ----------------------------------------------------------------------------- index
def _existing_clips(clips_dir: Path) -> dict[str, dict[str, Any]]:
    """Complete clips of an earlier run: source -> clip.json entry."""
    found: dict[str, dict[str, Any]] = {}
    if not clips_dir.is_dir():
        return found
    for meta in sorted(clips_dir.glob(f"*/{CLIP_FILE}")):
        if meta.parent.name.startswith(_TMP_PREFIX):
            continue
        try:
            entry = json.loads(meta.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            continue  # not ours or damaged: that video is simply prepared again
        if isinstance(entry, dict) and isinstance(entry.get("source"), str) and entry.get("id") == meta.parent.name:
            found[entry["source"]] = entry
    return found


def _precomputed_fields(clip_dir: Path) -> dict[str, int]:
    """``{"audio_features_dim": F, "emotion_dim": 7, "motion_dim": d, "landmarks_dim": 68}`` for the
    arrays present (the last dimension; for landmarks (T, 68, 2) the number of points)."""
    fields: dict[str, int] = {}
    for name, (filename, _) in PRECOMPUTED.items():
        path = clip_dir / filename
        if path.is_file():
            try:
                shape = np.load(path, mmap_mode="r").shape
            except (OSError, ValueError):
                continue
            if name == "landmarks":
                fields[f"{name}_dim"] = int(shape[1]) if len(shape) == 3 else 0
            else:
                fields[f"{name}_dim"] = int(shape[-1]) if shape else 0
    return fields


def _write_index(out: Path, size: int, clips: list[dict[str, Any]], skipped: list[Skipped],
                 precomputed: dict[str, Any]) -> None:
    entries = []
    for clip in clips:
        entry = {k: v for k, v in clip.items() if not k.endswith("_dim")}
        entry.update(_precomputed_fields(out / clip["dir"]))
        entries.append(entry)
    index = {
        "format": DATASET_FORMAT, "version": DATASET_VERSION, "fps": FPS, "sample_rate": SAMPLE_RATE,
        "image_size": size, "clips": entries,
        "skipped": [{"source": s.source, "reason": s.reason} for s in skipped],
        "precomputed": precomputed,
    }
    write_json_atomic(out / INDEX_FILE, index)


def prepare_dataset(
    videos: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    size: int = 512,
    min_seconds: float = DEFAULT_MIN_SECONDS,
    detect_every: int = DEFAULT_DETECT_EVERY,
    min_face_fraction: float = DEFAULT_MIN_FACE_FRACTION,
    workers: int = 1,
    progress: bool = True,
    crop: bool = True,
    overwrite: bool = False,
    detector: FaceDetector | None = None,
) -> PrepareReport:
    """Prepare every video under ``videos`` into the training layout at ``out``.

    Args:
        size: side of the stored frames (the paper uses 512; smaller sets can feed smaller models).
        min_seconds: skip videos shorter than this (default: L' + L of the official model).
        detect_every: run the face detector on every n-th (25 fps) frame.
        min_face_fraction: skip a video whose face is found in fewer sampled frames than this.
        workers: videos prepared in parallel (processes); 1 works in this process.
        progress: tqdm bars (per video, and per frame with one worker).
        crop: face-crop (default); False keeps the centre square of the whole picture.
        overwrite: prepare again videos whose clips already exist (default: keep them).
        detector: a face detector callable (default: :func:`float_core.media.face.default_detector`);
            only with ``workers=1``.

    Returns:
        A :class:`PrepareReport`; ``out/index.json`` lists the clips and the skipped videos.
    """
    from tqdm.auto import tqdm

    videos, out = Path(videos), Path(out)
    if not videos.is_dir():
        raise FileNotFoundError(f"videos folder not found: {videos}")
    if size < 2 or size % 2:
        raise ValueError(f"size must be even and >= 2, got {size}")
    if detect_every < 1:
        raise ValueError(f"detect_every must be >= 1, got {detect_every}")
    if min_seconds < 0 or not 0.0 <= min_face_fraction <= 1.0:
        raise ValueError("min_seconds must be >= 0 and min_face_fraction in [0, 1]")
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if detector is not None and workers > 1:
        raise ValueError("a custom detector cannot be sent to worker processes; use workers=1")
    out.mkdir(parents=True, exist_ok=True)
    clips_dir = out / "clips"
    clips_dir.mkdir(exist_ok=True)
    precomputed: dict[str, Any] = {}
    if (out / INDEX_FILE).is_file():
        old = read_index(out)
        if old["image_size"] != size and not overwrite:
            raise DatasetError(f"{out} holds clips prepared at {old['image_size']} px, not {size}; "
                               "use the same --size, another --out, or --overwrite")
        precomputed = old.get("precomputed", {}) if old["image_size"] == size else {}
    for partial in clips_dir.glob(f"{_TMP_PREFIX}*"):  # left by a crash: never a complete clip
        shutil.rmtree(partial, ignore_errors=True)

    existing = _existing_clips(clips_dir)
    used = {e["id"] for e in existing.values()}
    sources = [p.relative_to(videos).as_posix() for p in find_videos(videos, exclude=out)]
    report = PrepareReport(out=out)
    settings = _Settings(size, float(min_seconds), int(detect_every), float(min_face_fraction), crop)
    results: dict[str, dict[str, Any] | Skipped] = {}
    jobs = []
    for source in sources:
        if source in existing and not overwrite:
            results[source] = existing[source]
            report.reused.append(existing[source]["id"])
        else:
            clip_id = existing[source]["id"] if source in existing else _unique_id(source, used)
            jobs.append((videos / source, source, clip_id))

    bar = tqdm(total=len(jobs), desc="preparing videos", unit="video", disable=not progress)
    try:
        if workers == 1:
            for path, source, clip_id in jobs:
                results[source] = _prepare_one_safe(path, source, clip_id, clips_dir, settings, detector, progress)
                bar.update(1)
        else:
            import multiprocessing

            with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
                futures = {pool.submit(_prepare_one_safe, path, source, clip_id, clips_dir, settings, None, False):
                           source for path, source, clip_id in jobs}
                for future, source in futures.items():
                    results[source] = future.result()
                    bar.update(1)
    finally:
        bar.close()

    clips = []
    for source in sources:
        result = results[source]
        if isinstance(result, Skipped):
            report.skipped.append(result)
        else:
            clips.append(result)
            if result["id"] not in report.reused:
                report.prepared.append(result["id"])
    _write_index(out, size, clips, report.skipped, precomputed)
    return report


def _update_index(root: Path, precomputed: dict[str, Any]) -> None:
    """Refresh the per-clip ``*_dim`` fields from the files and merge ``precomputed`` notes."""
    index = read_index(root)
    notes = dict(index.get("precomputed", {}))
    notes.update(precomputed)
    skipped = [Skipped(s["source"], s["reason"]) for s in index.get("skipped", [])]
    _write_index(root, index["image_size"], index["clips"], skipped, notes)


def _save_npy_atomic(path: Path, array: np.ndarray) -> None:
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npy")
    np.save(tmp, array)
    os.replace(tmp, path)


# ----------------------------------------------------------------------------- precomputation
def precompute_conditions(
    root: str | os.PathLike[str],
    model: FloatModel,
    *,
    device: str = "cpu",
    progress: bool = True,
    audio_features: bool = True,
    emotion: bool = True,
    overwrite: bool = False,
) -> list[str]:
    """Write ``audio_features.npy`` and/or ``emotion.npy`` for every clip (paper Sec. 4.2).

    The audio features are ``model.audio_encoder.encode(audio).stacked``: the concatenated
    wav2vec2 layer outputs (T, layers * hidden) *before* the trainable projection, stored as
    float16; the emotion is ``model.emotion_encoder(audio)`` (7,) float32. Both see the clip's
    normalised audio (:func:`float_core.models.conditions.normalize_audio`) exactly as inference
    does. Clips whose arrays exist with the model's sizes are kept unless ``overwrite``.

    The model is moved to ``device`` and evaluated in eval mode (its training flag is restored).

    Returns:
        The ids of the clips computed.
    """
    import torch
    from tqdm.auto import tqdm

    from float_core.models.conditions import normalize_audio

    root = Path(root)
    store = ClipStore(root)
    w2v = model.audio_encoder.wav2vec2.config
    dim = w2v.num_hidden_layers * w2v.hidden_size
    num_emotions = model.config.dim_e
    done = []
    was_training = model.training
    model.to(device).eval()
    try:
        with torch.no_grad():
            for clip in tqdm(store.clips, desc="audio features / emotion", unit="clip", disable=not progress):
                fields = _precomputed_fields(clip.dir)
                need_a = audio_features and (overwrite or fields.get("audio_features_dim") != dim)
                need_e = emotion and (overwrite or fields.get("emotion_dim") != num_emotions)
                if not (need_a or need_e):
                    continue
                audio = normalize_audio(torch.from_numpy(store.audio(clip)).to(device)[None])
                if need_a:
                    stacked = model.audio_encoder.encode(audio).stacked[0]
                    if stacked.shape[0] != clip.num_frames:
                        raise DatasetError(f"{clip.id}: audio encoder gave {stacked.shape[0]} frames, "
                                           f"the clip has {clip.num_frames}")
                    _save_npy_atomic(clip.dir / PRECOMPUTED["audio_features"][0],
                                     stacked.float().cpu().numpy().astype(np.float16))
                if need_e:
                    probs = model.emotion_encoder(audio)[0]
                    _save_npy_atomic(clip.dir / PRECOMPUTED["emotion"][0], probs.float().cpu().numpy())
                done.append(clip.id)
    finally:
        model.train(was_training)
    notes: dict[str, Any] = {}
    if audio_features:
        notes["audio_features"] = {"dim": dim, "layers": w2v.num_hidden_layers, "hidden": w2v.hidden_size,
                                   "dtype": "float16"}
    if emotion:
        notes["emotion"] = {"dim": num_emotions}
    _update_index(root, notes)
    return done


def precompute_motion(
    root: str | os.PathLike[str],
    motion_autoencoder: MotionAutoEncoder,
    *,
    device: str = "cpu",
    batch_size: int = 16,
    progress: bool = True,
    overwrite: bool = False,
) -> list[str]:
    """Write ``motion.npy`` (T, d) float32: the motion latent w_{r->D} = V lambda(D) of every frame.

    Frames are resized to the auto-encoder's ``config.image_size`` with
    :func:`float_core.train.data.frames_to_tensor` (the same anti-aliased resize as stage 1
    training), encoded in batches, and mapped through the orthonormal basis (paper Eq. 1).
    Clips whose array exists with the model's d are kept unless ``overwrite``.

    Returns:
        The ids of the clips computed.
    """
    import torch
    from tqdm.auto import tqdm

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    root = Path(root)
    store = ClipStore(root)
    config = motion_autoencoder.config
    done = []
    was_training = motion_autoencoder.training
    motion_autoencoder.to(device).eval()
    total = sum(c.num_frames for c in store.clips)
    try:
        with torch.no_grad(), tqdm(total=total, desc="motion latents", unit="frame", disable=not progress) as bar:
            for clip in store.clips:
                if not overwrite and _precomputed_fields(clip.dir).get("motion_dim") == config.style_dim:
                    bar.update(clip.num_frames)
                    continue
                latents = []
                for start in range(0, clip.num_frames, batch_size):
                    idx = np.arange(start, min(start + batch_size, clip.num_frames))
                    images = frames_to_tensor(store.frames(clip, idx), config.image_size).to(device)
                    _, lam, _ = motion_autoencoder.encode(images)
                    latents.append(motion_autoencoder.lambda_to_motion(lam).float().cpu().numpy())
                    bar.update(idx.size)
                _save_npy_atomic(clip.dir / PRECOMPUTED["motion"][0], np.concatenate(latents).astype(np.float32))
                done.append(clip.id)
    finally:
        motion_autoencoder.train(was_training)
    _update_index(root, {"motion": {"dim": config.style_dim, "image_size": config.image_size}})
    return done


#: A landmark detector: an RGB uint8 frame (H, W, 3) -> (68, 2) iBUG points (x, y) in its
#: pixels, or None when no face is found.
LandmarkDetector = Callable[[np.ndarray], np.ndarray | None]


class LandmarkDetectorError(RuntimeError):
    """The default landmark detector (face_alignment) is not installed or cannot load its weights."""


def face_alignment_detector(device: str = "cpu") -> LandmarkDetector:
    """The 2D-FAN landmark detector of the ``face_alignment`` package (its S3FD finds the face).

    When a frame holds several faces, the largest (by landmark extent) is kept: the crop is
    centred on the speaker. Raises :class:`LandmarkDetectorError` saying what to install or
    download when the package or its weights are missing.
    """
    try:
        import face_alignment
    except ImportError as exc:
        raise LandmarkDetectorError(
            "landmarks need the face_alignment package: pip install face-alignment "
            f"(or pass a detector callable); import failed: {exc}") from exc
    kinds = face_alignment.LandmarksType
    kind = getattr(kinds, "TWO_D", None) or getattr(kinds, "_2D")  # TWO_D since face_alignment 1.4
    try:
        model = face_alignment.FaceAlignment(kind, device=device, flip_input=False)
    except Exception as exc:  # noqa: BLE001 - offline download failures come in many types
        raise LandmarkDetectorError(
            f"face_alignment could not load its models ({type(exc).__name__}: {exc}). It downloads the "
            "S3FD face-detector and 2D-FAN landmark weights on first use into the torch hub cache "
            "($TORCH_HOME/hub/checkpoints, by default ~/.cache/torch/hub/checkpoints): run it once with "
            "network access, or copy those files there from a machine that has them") from exc

    def detect(frame: np.ndarray) -> np.ndarray | None:
        found = model.get_landmarks_from_image(frame)
        if not found:
            return None
        return max((np.asarray(f)[:, :2] for f in found), key=lambda p: float(np.ptp(p, axis=0).prod()))

    return detect


def precompute_landmarks(
    root: str | os.PathLike[str],
    *,
    detector: LandmarkDetector | None = None,
    device: str = "cpu",
    progress: bool = True,
    overwrite: bool = False,
) -> list[str]:
    """Write ``landmarks.npy``, float32 (T, 68, 2), for every clip: 68-point iBUG landmarks (x, y)
    of every stored frame, in pixels of the stored crop (the dataset's ``image_size``).

    Args:
        detector: frame (H, W, 3) uint8 RGB -> (68, 2) points or None (no face); default:
            :func:`face_alignment_detector` on ``device`` (needs ``pip install face-alignment``
            and its weights, else :class:`LandmarkDetectorError` at once, before any clip).
        overwrite: compute again clips that already have the file (default: keep them).

    A frame where the detector finds no face gets the clip's median landmarks (per coordinate,
    over the frames where it found one): the crop is fixed for the whole clip, so the median
    is where the components usually are. A clip with no landmarks in any frame gets no file
    (an old one is removed), and stage 1 then uses the fixed regions of the aligned crop.

    Returns:
        The ids of the clips whose file was written.
    """
    from tqdm.auto import tqdm

    root = Path(root)
    store = ClipStore(root)
    name = "custom" if detector is not None else "face_alignment"
    todo = [c for c in store.clips if overwrite or not (c.dir / PRECOMPUTED["landmarks"][0]).is_file()]
    if todo and detector is None:
        detector = face_alignment_detector(device)
    done, empty, filled = [], [], 0
    chunk = 32
    with tqdm(total=sum(c.num_frames for c in todo), desc="landmarks", unit="frame", disable=not progress) as bar:
        for clip in todo:
            points: list[np.ndarray | None] = []
            for start in range(0, clip.num_frames, chunk):
                for frame in store.frames(clip, np.arange(start, min(start + chunk, clip.num_frames))):
                    found = detector(frame)  # type: ignore[misc]
                    if found is not None:
                        found = np.asarray(found, dtype=np.float32)
                        if found.shape != (NUM_LANDMARKS, 2):
                            raise ValueError(f"the landmark detector returned shape {found.shape}, "
                                             f"expected ({NUM_LANDMARKS}, 2)")
                    points.append(found)
                    bar.update(1)
            path = clip.dir / PRECOMPUTED["landmarks"][0]
            known = [p for p in points if p is not None]
            if not known:
                empty.append(clip.id)
                path.unlink(missing_ok=True)
                continue
            median = np.median(np.stack(known), axis=0).astype(np.float32)
            filled += len(points) - len(known)
            _save_npy_atomic(path, np.stack([median if p is None else p for p in points]).astype(np.float32))
            done.append(clip.id)
    if empty:
        warnings.warn(f"no landmarks found in any frame of {len(empty)} clip(s) ({', '.join(empty[:5])}"
                      f"{' ...' if len(empty) > 5 else ''}): stage 1 uses the fixed component regions for "
                      "every clip unless all have landmarks", stacklevel=2)
    notes = {"landmarks": {"points": NUM_LANDMARKS, "layout": "iBUG-68", "detector": name,
                           "coordinates": "x, y in pixels of the stored crop", "image_size": store.image_size,
                           "frames_filled_with_median": filled, "clips_without_landmarks": empty}} if todo else {}
    _update_index(root, notes)
    return done


# ----------------------------------------------------------------------------- command line
def _add_arguments(p: argparse.ArgumentParser) -> None:
    io_ = p.add_argument_group("videos and output")
    io_.add_argument("--videos", help="folder of talking-head videos (searched recursively: "
                                      + ", ".join(VIDEO_EXTENSIONS) + "); may be left out to only precompute")
    io_.add_argument("-o", "--out", required=True, help="output folder (created; re-running resumes)")
    io_.add_argument("--size", type=int, default=512, help="side of the stored face crops (default: 512)")
    io_.add_argument("--min-seconds", type=float, default=DEFAULT_MIN_SECONDS,
                     help=f"skip shorter videos (default: {DEFAULT_MIN_SECONDS}, L'+L frames)")
    io_.add_argument("--detect-every", type=int, default=DEFAULT_DETECT_EVERY,
                     help=f"detect the face every n-th frame (default: {DEFAULT_DETECT_EVERY})")
    io_.add_argument("--min-face-fraction", type=float, default=DEFAULT_MIN_FACE_FRACTION,
                     help="skip videos whose face is found in fewer sampled frames (default: 0.5)")
    io_.add_argument("--no-crop", dest="crop", action="store_false",
                     help="no face detection: keep the centre square of the whole picture")
    io_.add_argument("--workers", type=int, default=1, help="videos prepared in parallel (default: 1)")
    io_.add_argument("--overwrite", action="store_true", help="prepare again videos already in --out")
    pre = p.add_argument_group("precomputation (needs --weights, except --landmarks)")
    pre.add_argument("--audio-features", action="store_true", help="stacked wav2vec2 features (stage 2)")
    pre.add_argument("--emotion", action="store_true", help="speech-emotion probabilities (stage 2)")
    pre.add_argument("--motion", action="store_true", help="motion latents of every frame (after stage 1)")
    pre.add_argument("--landmarks", action="store_true",
                     help="68-point landmarks of every frame, for stage 1's eye/mouth losses (no --weights; "
                          "pip install face-alignment)")
    pre.add_argument("--weights", help="checkpoint for the precomputation (anything FloatPipeline.from_pretrained "
                                       "reads; 'tiny-random' for a test model)")
    pre.add_argument("--device", default="cpu", help="cpu (default), cuda, ...")
    pre.add_argument("--batch-size", type=int, default=16, help="frames per motion-encoder batch (default: 16)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")


def add_prepare_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``prepare`` on a sub-command parser; sets ``func`` to :func:`run_prepare`."""
    p = subparsers.add_parser(
        "prepare", help="turn talking-head videos into a training set",
        description="Decode, resample (25 fps, 16 kHz), face-crop and store videos for training; "
                    "optionally precompute audio features, emotions, motion latents and landmarks.",
    )
    _add_arguments(p)
    p.set_defaults(func=run_prepare)
    return p


#: The name float_core.cli uses for sub-command providers.
add_subparser = add_prepare_parser


def run_prepare(args: argparse.Namespace) -> int:
    """Run ``prepare`` from parsed arguments; returns the exit code."""
    want = {"audio_features": args.audio_features, "emotion": args.emotion, "motion": args.motion}
    if not args.videos and not any(want.values()) and not args.landmarks:
        print("error: give --videos, or a precomputation flag (--audio-features, --emotion, --motion, "
              "--landmarks)", file=sys.stderr)
        return 2
    if any(want.values()) and not args.weights:
        print("error: --audio-features, --emotion and --motion need --weights (a checkpoint)", file=sys.stderr)
        return 2
    progress = not args.quiet
    try:
        if args.videos:
            report = prepare_dataset(
                args.videos, args.out, size=args.size, min_seconds=args.min_seconds,
                detect_every=args.detect_every, min_face_fraction=args.min_face_fraction,
                workers=args.workers, progress=progress, crop=args.crop, overwrite=args.overwrite,
            )
            print(report.summary())
            if report.num_clips == 0:
                print(f"error: no usable video in {args.videos}", file=sys.stderr)
                return 1
        if args.landmarks:
            done = precompute_landmarks(args.out, device=args.device, progress=progress, overwrite=args.overwrite)
            print(f"landmarks computed for {len(done)} clips")
        if any(want.values()):
            from float_core.pipeline import FloatPipeline

            model = FloatPipeline.from_pretrained(args.weights, device=args.device).model
            if want["audio_features"] or want["emotion"]:
                done = precompute_conditions(args.out, model, device=args.device, progress=progress,
                                             audio_features=want["audio_features"], emotion=want["emotion"],
                                             overwrite=args.overwrite)
                print(f"audio features / emotion computed for {len(done)} clips")
            if want["motion"]:
                done = precompute_motion(args.out, model.motion_autoencoder, device=args.device,
                                         batch_size=args.batch_size, progress=progress, overwrite=args.overwrite)
                print(f"motion latents computed for {len(done)} clips")
    except (DatasetError, FileNotFoundError, ValueError, LandmarkDetectorError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m float_core.train.prepare ...``"""
    parser = argparse.ArgumentParser(prog="python -m float_core.train.prepare", description=__doc__.split("\n")[0])
    _add_arguments(parser)
    return run_prepare(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
