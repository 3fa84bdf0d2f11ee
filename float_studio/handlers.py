"""What the Studio tab's events do, as plain functions (no Gradio: testable without a server).

Each handler takes the :class:`~float_studio.model.PipelineHolder`, the user's
:class:`~float_studio.state.Session` and plain values, and returns plain values or small
dataclasses; :mod:`float_studio.ui` turns them into component updates. Long handlers take a
``progress(stage, done, total)`` callback (:mod:`float_core.progress`) and stop at the next
report after the session's Stop (:func:`stop`).

Data flows one way: portrait -> :class:`~float_core.inputs.SourceImage`, speech ->
:class:`~float_core.inputs.DrivingAudio` (with its per-window emotion timeline), both ->
motion (:class:`~float_studio.state.Generation`) -> frames (preview, video). Each step runs
once per input; its result is cached in the session's bounded CPU cache.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import numpy as np

from float_core.config import EMOTIONS, SamplingConfig
from float_core.inputs import move_tensors
from float_core.progress import ProgressCallback, silent

from . import plots
from .limits import check_speech, max_speech_seconds, speech_seconds
from .model import PipelineHolder
from .speed import Throughput
from .state import Cancelled, Generation, Session, cached, cancellable, file_key, image_key

if TYPE_CHECKING:
    from torch import Tensor

    from float_core.inputs import DrivingAudio, SourceImage
    from float_core.pipeline import FloatPipeline

#: Where each stage of a generation sits on the one progress bar (float_core.progress.fraction_callback).
GENERATE_SPANS: dict[str, tuple[float, float]] = {
    "portrait": (0.0, 0.05), "speech": (0.05, 0.1), "sampling": (0.1, 0.5), "rendering": (0.5, 1.0)}
#: The same for re-rendering with edits (no analysis, no sampling).
RENDER_SPANS: dict[str, tuple[float, float]] = {"rendering": (0.0, 1.0)}
#: Frames per decoder call of every render, and the batch a preview decodes its frame in (so
#: that the preview is the video's frame bit for bit: FloatPipeline.preview_frame).
RENDER_BATCH = 8
#: Names of the motion presets (float_core.directions.PRESETS), as the app's buttons say them.
PRESET_NAMES: tuple[str, ...] = ("lips only", "calmer head", "more expressive")


# ---------------------------------------------------------------------------- portrait
@dataclass(frozen=True)
class CropPreview:
    """The photo with the crop square drawn, the model-size crop, a note and the faces found."""

    boxed: np.ndarray | None
    crop: np.ndarray | None
    note: str
    faces: list[str] = field(default_factory=list)  #: "Face 1 (largest)", ... for the face choice


def crop_preview(image: np.ndarray | None, crop: bool, size: int, face: int = 0,
                 crop_scale: float | None = None) -> CropPreview:
    """What the model will animate: the photo with the crop square, the crop and a note.

    No model is needed (only the face detector), so this runs as soon as a portrait arrives.
    With ``crop`` off, the "crop" is the whole image resized to ``size`` x ``size``.
    """
    if image is None:
        return CropPreview(None, None, "")
    from float_core.media.face import CROP_SCALE, NO_FACE_MESSAGE, crop_portrait, detect_faces, draw_crop_preview
    from float_core.media.image import load_image

    photo = load_image(image)
    if not crop:
        whole = crop_portrait(photo, crop=False, size=size)
        return CropPreview(photo, whole.image, f"Face crop is off: the whole {photo.shape[1]}x{photo.shape[0]} "
                                               f"image is resized to {size}x{size}.")
    faces = detect_faces(photo)
    if not faces:
        return CropPreview(photo, None, f"⚠️ {NO_FACE_MESSAGE[0].upper()}{NO_FACE_MESSAGE[1:]}.")
    face = int(face or 0) if 0 <= int(face or 0) < len(faces) else 0
    scale = CROP_SCALE if crop_scale is None else float(crop_scale)
    detector = lambda _image: faces  # noqa: E731 - detected once, above
    result = crop_portrait(photo, crop=True, size=size, detector=detector, face=face, scale=scale)
    labels = [f"Face {i + 1}" + (" (largest)" if i == 0 else "") for i in range(len(faces))]
    note = result.message or (f"1 face found; the green square ({scale:g}x the face box) is the "
                              f"{size}x{size} crop the model animates.")
    return CropPreview(draw_crop_preview(photo, result.box), result.image, note, labels)


def prepare_source(pipe: "FloatPipeline", sess: Session, image: np.ndarray | None, crop: bool,
                   face: int = 0, crop_scale: float | None = None,
                   progress: ProgressCallback = silent) -> tuple[str, "SourceImage"]:
    """The portrait analysis on the device, from the session's cache when the same inputs were seen."""
    if image is None:
        raise ValueError("Please add a portrait image first (upload, webcam or paste).")
    content = image_key(image)
    key = f"{content}:{int(bool(crop))}:{int(face or 0)}:{crop_scale}"

    def compute() -> "SourceImage":
        progress("portrait", 0, 1)
        out = pipe.prepare_image(image, crop=crop, face=int(face or 0), crop_scale=crop_scale)
        progress("portrait", 1, 1)
        return out

    return key, cached(sess.cache, ("source", key), pipe.device, compute, content)


# ---------------------------------------------------------------------------- speech
def check_upload(path: str | None, missing: str, kind: str) -> str:
    """An uploaded file's path; a ValueError saying ``missing`` when there is none, or that the
    ``kind`` upload expired (Gradio deletes old uploads) when the file is gone."""
    import os

    if not path:
        raise ValueError(missing)
    if not os.path.isfile(path):
        raise ValueError(f"The {kind} upload is no longer on the server; please add it again.")
    return path


def check_audio(audio_path: str | None) -> str:
    """The speech upload's path (see :func:`check_upload`)."""
    return check_upload(audio_path, "Please add a speech recording first (upload or microphone).", "audio")


def analyse_speech(pipe: "FloatPipeline", sess: Session, audio_path: str | None,
                   progress: ProgressCallback = silent) -> tuple[str, "DrivingAudio"]:
    """The speech analysis (wav2vec2 features, emotion probabilities and per-window timeline),
    cached by file content; also what the emotion plots show (``sess.speech``).

    Raises:
        ValueError: no audio, an expired upload, unreadable audio; a
            :class:`~float_studio.limits.LimitError` for speech over ``FLOAT_MAX_SECONDS``
            (measured from the file's header before decoding; the decoder checks again).
    """
    limit = max_speech_seconds()
    check_speech(check_audio(audio_path), limit)
    content = file_key(audio_path)
    key = f"{content}:{limit}"

    def compute() -> "DrivingAudio":
        progress("speech", 0, 1)
        speech = pipe.with_emotion_timeline(pipe.prepare_audio(audio_path, max_seconds=limit))
        progress("speech", 1, 1)
        return speech

    speech = cached(sess.cache, ("speech", key), pipe.device, compute, content)
    sess.speech_key, sess.speech = key, speech
    return key, speech


@dataclass(frozen=True)
class EmotionView:
    """The emotion plots and the honest label of what sampling uses."""

    bars: Any  #: plotly figure: the clip's 7 probabilities
    timeline: Any  #: plotly figure: per-window probabilities and what is used
    label: str


def emotion_view(pipe: "FloatPipeline", speech: "DrivingAudio", emotion: str,
                 used: "Tensor | None" = None) -> EmotionView:
    """Both emotion plots for ``speech`` under the emotion setting ``emotion``.

    ``used`` is the emotion the sampler uses (``FloatPipeline.resolve_emotion``), resolved
    here when not given.
    """
    from float_core.emotion import describe_emotion

    cfg = SamplingConfig(emotion=_emotion_setting(emotion))
    probs = speech.emotion_probs.float().cpu().numpy()
    windows = speech.emotion_windows.float().cpu().numpy() if speech.emotion_windows is not None else probs[None]
    window_s = pipe.config.num_frames / pipe.config.fps
    label = describe_emotion(windows if cfg.dynamic_emotion else probs, cfg, window_seconds=window_s)
    used_np = (pipe.resolve_emotion(speech, cfg.emotion) if used is None else used).float().cpu().numpy()
    return EmotionView(plots.emotion_figure(probs, used_np, label),
                       plots.emotion_timeline_figure(windows, used_np, window_s, label), label)


def _emotion_setting(emotion: str | None) -> str:
    name = str(emotion or "auto").lower()
    if name not in ("auto", "dynamic") + EMOTIONS:
        raise ValueError(f"Emotion setting: expected 'auto', 'dynamic' or one of {', '.join(EMOTIONS)}, "
                         f"got {emotion!r}")
    return name


def analyze(holder: PipelineHolder, sess: Session, audio_path: str | None, emotion: str,
            progress: ProgressCallback = silent) -> EmotionView | None:
    """Analyse the speech as soon as it arrives (cached); None when there is no speech."""
    if not audio_path:
        return None
    pipe = holder.get()
    with sess.action() as stop_event:
        _, speech = analyse_speech(pipe, sess, audio_path, cancellable(progress, stop_event))
    return emotion_view(pipe, speech, emotion)


# ---------------------------------------------------------------------------- generation
@dataclass(frozen=True)
class Analysed:
    """First step of :func:`generate`: both inputs analysed, sampling starts."""

    emotion: EmotionView
    message: str | None  #: a note about the portrait (e.g. several faces)


def stop(sess: Session) -> int:
    """The Stop button: the session's running actions end at their next progress report
    (returns how many were running)."""
    return sess.request_stop()


def generate(holder: PipelineHolder, sess: Session, image: np.ndarray | None, audio_path: str | None,
             crop: bool, sampling: SamplingConfig, face: int = 0, crop_scale: float | None = None,
             progress: ProgressCallback = silent) -> Iterator[Analysed | Generation]:
    """Analyse (cached), sample the motion (cached per settings) and install it as the session's
    current :class:`Generation`; yields :class:`Analysed` first, then the generation.

    ``sampling`` must carry a concrete seed (:func:`~float_studio.state.sampling_from_ui`).
    The generation is installed only when complete, so previews and edits meanwhile keep
    acting on the previous one, consistently. **Stop** ends it at the next vector-field
    evaluation (the :class:`~float_studio.state.Cancelled` exception).
    """
    if sampling.seed is None:
        raise ValueError("generate: the sampling settings need a concrete seed")
    pipe = holder.get()
    with sess.action() as stop_event:
        yield from _generate(pipe, sess, image, audio_path, crop, sampling, face, crop_scale,
                             cancellable(progress, stop_event), holder.speed)


def _generate(pipe: "FloatPipeline", sess: Session, image: np.ndarray | None, audio_path: str | None,
              crop: bool, sampling: SamplingConfig, face: int, crop_scale: float | None,
              report: ProgressCallback, speed: Throughput) -> Iterator[Analysed | Generation]:
    version = sess.next_version()
    if image is None:  # both inputs checked before any work
        raise ValueError("Please add a portrait image first (upload, webcam or paste).")
    check_audio(audio_path)
    source_key, source = prepare_source(pipe, sess, image, crop, face, crop_scale, report)
    speech_key, speech = analyse_speech(pipe, sess, audio_path, report)
    from float_core.inputs import Prepared

    prepared = Prepared(source, speech)
    # The emotion the sampler uses, resolved once for the plots, the label and the stored
    # generation (cheap and pure: the per-window timeline is part of the speech analysis).
    used = pipe.resolve_emotion(prepared, sampling.emotion)
    yield Analysed(emotion_view(pipe, speech, sampling.emotion_label, used), source.message)
    generation = sample_generation(pipe, sess, version, source_key, source, speech_key, speech, sampling, report,
                                   speed)
    sess.install(generation)
    yield generation


def sample_generation(pipe: "FloatPipeline", sess: Session, version: int, source_key: str, source: "SourceImage",
                      speech_key: str, speech: "DrivingAudio", sampling: SamplingConfig,
                      report: ProgressCallback = silent, speed: Throughput | None = None) -> Generation:
    """The motion sampled for an analysed portrait and speech with ``sampling`` (cached per
    session by both keys and the settings), as a :class:`Generation` (not yet installed);
    ``speed`` records the sampling's throughput (the app's time estimates)."""
    import torch

    from float_core.inputs import Prepared

    prepared = Prepared(source, speech)
    used = pipe.resolve_emotion(prepared, sampling.emotion)
    motion_key = ("motion", source_key, speech_key, sampling)
    motion = sess.cache.get(motion_key, pipe.device)
    if motion is None:
        t0 = time.perf_counter()
        with torch.no_grad():
            motion = torch.cat(list(pipe.iter_motion(prepared, sampling, progress=report)), dim=0)
        if speed is not None:
            speed.record_sampling(motion.shape[0] / pipe.config.fps, time.perf_counter() - t0, sampling.nfe)
        sess.cache.put(motion_key, motion)
    return Generation(
        version=version, source_key=source_key, speech_key=speech_key,
        source=sess.cache.get(("source", source_key)) or move_tensors(source, "cpu"),
        speech=sess.cache.get(("speech", speech_key)) or move_tensors(speech, "cpu"),
        motion=motion.detach().to("cpu"), lambdas=pipe.motion_lambda(motion).float().cpu().numpy(),
        emotion=used.float().cpu().numpy(), sampling=sampling,
        directions=tuple(sess.cache.get(("directions", source_key)) or ()))


def cached_directions(pipe: "FloatPipeline", sess: Session, source_key: str, source: "SourceImage",
                      progress: ProgressCallback = silent) -> tuple:
    """The portrait's :meth:`FloatPipeline.describe_directions`, cached per session by its key."""
    key = ("directions", source_key)
    directions = sess.cache.get(key)
    if directions is None:
        directions = tuple(pipe.describe_directions(move_tensors(source, pipe.device), progress=progress))
        sess.cache.put(key, directions)
    return tuple(directions)


def describe_directions(holder: PipelineHolder, sess: Session,
                        progress: ProgressCallback = silent) -> Generation | None:
    """Measure what each motion direction does in the current portrait (cached per portrait)
    and attach it to the current generation; None when there is none yet."""
    gen = sess.current
    if gen is None:
        return None
    pipe = holder.get()
    with sess.action() as stop_event:
        directions = cached_directions(pipe, sess, gen.source_key, gen.source, cancellable(progress, stop_event))
    import dataclasses

    updated = dataclasses.replace(gen, directions=tuple(directions))
    return updated if sess.install(updated) else None


# ---------------------------------------------------------------------------- edits
@dataclass(frozen=True)
class Edits:
    """The user's edits: constant slider offsets, a preset and time-varying curves."""

    sliders: np.ndarray  #: (M,) lambda offsets for every frame
    preset: str | None = None  #: one of PRESET_NAMES, applied on top
    curves: tuple = ()  #: float_core.editing.EditCurve values

    @property
    def empty(self) -> bool:
        return not np.any(self.sliders) and self.preset is None and not self.curves


def curves_from_rows(rows: Sequence[dict[str, Any]]) -> tuple:
    """EditCurves from JSON-able dicts (the app's curve list, ``/edit_curves``): direction is 1-based λ."""
    from float_core.editing import EditCurve

    curves = []
    for i, row in enumerate(rows or (), 1):
        try:
            args = {k: row[k] for k in ("kind", "value", "start", "end", "edge") if row.get(k) not in (None, "")}
            for name in ("start", "end", "edge"):
                if name in args:
                    args[name] = _whole_number(name, args[name])
            if "value" in args:
                args["value"] = float(args["value"])
            curves.append(EditCurve(direction=_whole_number("direction", row["direction"]) - 1, **args))
        except KeyError as exc:
            raise ValueError(f"edit curve {i}: missing {exc.args[0]!r}") from None
        except (TypeError, ValueError) as exc:
            raise ValueError(f"edit curve {i}: {exc}") from None
    return tuple(curves)


def _whole_number(name: str, value: Any) -> int:
    x = float(value)
    if x != int(x):
        raise ValueError(f"{name}: must be a whole number, got {value!r}")
    return int(x)


def edit_offsets(gen: Generation, edits: Edits) -> np.ndarray | None:
    """The lambda offsets of ``edits`` for the generation: (M,) constant, (T, M) when a preset
    or a curve varies over time, None for no edit."""
    if edits.empty:
        return None
    if edits.preset is None and not edits.curves:
        return edits.sliders
    from float_core.editing import compile_edits

    total = np.broadcast_to(edits.sliders, gen.lambdas.shape).astype(np.float32)
    if edits.curves:
        total = total + compile_edits(list(edits.curves), gen.num_frames, gen.lambdas.shape[1])
    if edits.preset is not None:
        if not gen.directions:
            raise ValueError("Presets need the motion directions: wait until the sliders are labelled.")
        from float_core.directions import preset_offsets

        total = total + preset_offsets(edits.preset, gen.lambdas, gen.source.source_lambda, list(gen.directions))
    return total


def preview(holder: PipelineHolder, sess: Session, frame_index: Any, edits: Edits,
            paste_back: bool = False) -> np.ndarray | None:
    """Decode only frame ``frame_index`` of the current generation with ``edits``.

    Equals that frame of the video :func:`render_video` writes with the same edits. Returns
    None when a new generation replaced the one it decoded from meanwhile (a stale result
    that must not be shown).
    """
    gen = sess.current  # read once: the whole decode uses one consistent generation
    if gen is None:
        raise ValueError("Generate a video first; the sliders edit its motion.")
    pipe = holder.get()
    _, frame = edited_frame(pipe, gen, frame_index, edits)
    if paste_back:
        paste, _ = paste_back_transform(pipe, sess, gen)
        frame = paste(frame) if paste is not None else frame
    return frame if sess.is_current(gen) else None


def edited_frame(pipe: "FloatPipeline", gen: Generation, frame_index: Any, edits: Edits) -> tuple[int, np.ndarray]:
    """(k, frame k of ``gen`` rendered with ``edits``, (S, S, 3) uint8); ``frame_index`` is
    clipped to the clip. The render's own batch rule: the frame equals the video's frame bit for
    bit, decoding only what that frame needs."""
    k = int(np.clip(int(frame_index or 0), 0, gen.num_frames - 1))
    return k, pipe.preview_frame(gen.source.to(pipe.device), gen.motion.to(pipe.device), k,
                                 edits=edit_offsets(gen, edits), batch_size=RENDER_BATCH)


def paste_back_transform(pipe: "FloatPipeline", sess: Session, gen: Generation) -> tuple[Any, str | None]:
    """The generation's :class:`~float_core.media.face.PasteBack` (one per session's current
    portrait: its masks cost more than a small preview), or (None, why not)."""
    if gen.source.crop_box is None or gen.source.original is None:
        return None, "Paste-back needs a detected face crop; showing the cropped video instead."
    from float_core.media.face import PasteBack

    cached_paste = sess.paste
    if cached_paste is None or cached_paste[0] != gen.source_key:
        cached_paste = sess.paste = (gen.source_key, PasteBack(gen.source.original, gen.source.crop_box,
                                                               size=pipe.config.image_size))
    return cached_paste[1], None


@dataclass(frozen=True)
class Rendered:
    """A finished video of the current generation."""

    path: str
    generation: Generation
    warnings: list[str]
    seconds: float


def render_video(holder: PipelineHolder, sess: Session, edits: Edits | None = None, paste_back: bool = False,
                 progress: ProgressCallback = silent, batch_size: int = RENDER_BATCH,
                 generation: Generation | None = None) -> Rendered:
    """Write the current generation (with ``edits``) to an MP4 with the speech muxed in.

    Uses :func:`float_core.media.video.write_video`, the one video loop: the file appears only
    when complete (Stop removes the unfinished one).
    """
    from float_core.media.video import write_video

    gen = generation or sess.current
    if gen is None:
        raise ValueError("Generate a video first; edits are applied to its motion.")
    pipe = holder.get()
    t0 = time.perf_counter()
    warnings: list[str] = []
    paste = None
    if paste_back:
        paste, why = paste_back_transform(pipe, sess, gen)
        warnings += [why] if why else []
    offsets = None if edits is None else edit_offsets(gen, edits)
    path = sess.new_video_path(f"float_seed{gen.sampling.seed}")
    prepared = gen.prepared(pipe.device)
    with sess.action() as stop_event:
        write_video(path, pipe.render(prepared, gen.motion.to(pipe.device), edits=offsets, batch_size=batch_size),
                    fps=int(pipe.config.fps), audio=(gen.speech.waveform, pipe.config.sample_rate),
                    transform=paste, progress=cancellable(progress, stop_event), total=gen.num_frames)
    sess.video_path = str(path)
    seconds = time.perf_counter() - t0
    holder.speed.record_rendering(gen.num_frames / pipe.config.fps, seconds)
    return Rendered(str(path), gen, warnings, seconds)


def apply_edits(holder: PipelineHolder, sess: Session, edits: Edits, paste_back: bool = False,
                progress: ProgressCallback = silent) -> Rendered:
    """**Apply to video**: re-render every frame of the current generation with ``edits``
    (no re-sampling)."""
    return render_video(holder, sess, edits, paste_back, progress)


# ---------------------------------------------------------------------------- messages
def generation_estimate(holder: PipelineHolder, audio_path: str | None, nfe: int) -> str:
    """"Generating takes about 45 s for this 3.7 s clip on this CPU": before long work, from the
    measured throughput (:class:`~float_studio.speed.Throughput`); "" without usable speech."""
    try:
        seconds = speech_seconds(audio_path)
    except ValueError:
        return ""
    return f"Generating takes {holder.speed.estimate(seconds, int(nfe))}." if seconds > 0 else ""


def summary_markdown(gen: Generation, seconds: float, edited: bool, fps: float = 25.0) -> str:
    """A short result line: frames, duration, seed, emotion, wall time."""
    what = "Re-rendered with edits" if edited else "Generated"
    probs = gen.speech.emotion_probs.float().cpu().numpy()
    top = f" (speech sounds *{EMOTIONS[int(probs.argmax())]}*, {probs.max():.0%})"
    return (f"{what} **{gen.num_frames} frames** ({gen.num_frames / fps:.1f} s) in {seconds:.1f} s · "
            f"seed **{gen.sampling.seed}** · emotion **{gen.sampling.emotion_label}**{top}")


def user_message(exc: BaseException) -> str:
    """A readable, traceback-free message for an exception raised by the engine or media code."""
    text = str(exc).strip() or type(exc).__name__
    if isinstance(exc, Cancelled):
        return "Stopped."
    if isinstance(exc, (ValueError, FileNotFoundError, RuntimeError)):
        return text
    if isinstance(exc, MemoryError):
        return "Out of memory: try a shorter audio clip."
    return f"Unexpected error ({type(exc).__name__}): {text}. Details are in the server log."
