"""Per-session state of the FLOAT Studio app: settings, sessions, caches, the shared pipeline.

Nothing here imports Gradio, so every function can be unit-tested directly. The app keeps
one :class:`Session` per browser session (in ``gr.State``); the loaded
:class:`~float_core.pipeline.FloatPipeline` is shared read-only by all sessions.

Caching follows DESIGN.md's one-way data flow:

* the portrait analysis (:class:`SourceImage`) is keyed by the image content and the crop flag,
* the speech analysis (:class:`DrivingAudio`) by the audio file's bytes,
* the sampled motion by both keys plus every sampling setting and the seed,

so changing the audio guidance re-samples but re-uses both analyses, and a lambda slider
re-decodes only the one previewed frame (:func:`preview_frame`).
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import secrets
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from float_core.config import EMOTIONS

if TYPE_CHECKING:  # heavy imports (torch, transformers) stay lazy for `import app` speed
    from torch import Tensor

    from float_core.pipeline import DrivingAudio, FloatPipeline, Prepared, SourceImage

log = logging.getLogger("float_studio")

#: A progress callback: fraction in [0, 1] and a short description.
ProgressFn = Callable[[float, str], None]

EMOTION_CHOICES: list[tuple[str, str]] = [("Auto (from speech)", "auto")] + [
    (name.capitalize(), name) for name in EMOTIONS]
SOLVER_CHOICES: tuple[str, ...] = ("euler", "midpoint", "rk4")
NFE_RANGE: tuple[int, int] = (1, 50)
#: Audio guidance gamma_a: accepted range and default (paper Eq. 13).
A_CFG_RANGE: tuple[float, float] = (0.0, 5.0)
A_CFG_DEFAULT = 2.0
#: Emotion guidance gamma_e ("intensity"): accepted range and default.
E_CFG_RANGE: tuple[float, float] = (0.0, 10.0)
E_CFG_DEFAULT = 1.0
NFE_DEFAULT = 10
MAX_SEED = 2**31 - 1
#: ``FLOAT_AUTO_DOWNLOAD=0`` stops the app from fetching missing weights at start-up.
AUTO_DOWNLOAD_ENV = "FLOAT_AUTO_DOWNLOAD"
#: Default longest accepted speech in seconds (``FLOAT_MAX_SECONDS`` overrides; 0 = no limit).
DEFAULT_MAX_SECONDS = 60.0


def _noop_progress(fraction: float, desc: str) -> None:
    """A progress callback that ignores its arguments."""


# ---------------------------------------------------------------------------- settings
@dataclass(frozen=True)
class SamplingSettings:
    """Everything that changes the sampled motion (besides the inputs), validated.

    Attributes:
        a_cfg: audio guidance scale gamma_a (paper Eq. 13).
        e_cfg: emotion guidance scale gamma_e.
        nfe: vector-field evaluations per window.
        solver: one of :data:`SOLVER_CHOICES`.
        emotion: "auto" or one of :data:`~float_core.config.EMOTIONS`.
        seed: noise seed, ``>= 0``.
    """

    a_cfg: float = 2.0
    e_cfg: float = 1.0
    nfe: int = 10
    solver: str = "euler"
    emotion: str = "auto"
    seed: int = 0

    @classmethod
    def from_ui(cls, a_cfg: Any, e_cfg: Any, nfe: Any, solver: Any, emotion: Any,
                seed: Any) -> "SamplingSettings":
        """Validate raw widget values; a negative or empty seed draws a random one.

        Raises:
            ValueError: with a message that names the setting and the accepted range.
        """
        a = _number("Audio guidance", a_cfg, *A_CFG_RANGE)
        e = _number("Emotion guidance", e_cfg, *E_CFG_RANGE)
        steps = _number("Steps (NFE)", nfe, *NFE_RANGE)
        if steps != int(steps):
            raise ValueError(f"Steps (NFE): must be a whole number, got {nfe!r}")
        solver = str(solver or "euler").lower()
        if solver not in SOLVER_CHOICES:
            raise ValueError(f"Solver: expected one of {', '.join(SOLVER_CHOICES)}, got {solver!r}")
        emotion = str(emotion or "auto").lower()
        if emotion != "auto" and emotion not in EMOTIONS:
            raise ValueError(f"Emotion: expected 'auto' or one of {', '.join(EMOTIONS)}, got {emotion!r}")
        if seed is None or seed == "":
            seed_value = random_seed()
        else:
            raw = _number("Seed", seed, -math.inf, MAX_SEED)
            if raw != int(raw):
                raise ValueError(f"Seed: must be a whole number, got {seed!r}")
            seed_value = random_seed() if raw < 0 else int(raw)
        return cls(a_cfg=a, e_cfg=e, nfe=int(steps), solver=solver, emotion=emotion, seed=seed_value)


def random_seed() -> int:
    """A fresh seed in ``[0, MAX_SEED)`` (the seed box's randomize button)."""
    return secrets.randbelow(MAX_SEED)


def _number(name: str, value: Any, low: float, high: float) -> float:
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected a number, got {value!r}") from None
    if not math.isfinite(x) or not low <= x <= high:
        raise ValueError(f"{name}: must be between {low:g} and {high:g}, got {value!r}")
    return x


def max_audio_seconds() -> float | None:
    """The longest accepted speech: ``$FLOAT_MAX_SECONDS`` (0 or negative: no limit) or 60 s."""
    raw = os.environ.get("FLOAT_MAX_SECONDS", "")
    try:
        value = float(raw) if raw.strip() else DEFAULT_MAX_SECONDS
    except ValueError:
        log.warning("FLOAT_MAX_SECONDS=%r is not a number; using %g s", raw, DEFAULT_MAX_SECONDS)
        value = DEFAULT_MAX_SECONDS
    return value if value > 0 else None


# ---------------------------------------------------------------------------- session
@dataclass
class Session:
    """Per-browser-session cache (lives in ``gr.State``; never shared between users)."""

    source_key: str | None = None
    source: "SourceImage | None" = None
    speech_key: str | None = None
    speech: "DrivingAudio | None" = None
    motion_key: tuple | None = None
    motion: "Tensor | None" = None  #: sampled motion latents (T, d)
    lambdas: np.ndarray | None = None  #: lambda coefficients of ``motion`` (T, M)
    emotion: np.ndarray | None = None  #: the emotion vector used for sampling (7,)
    settings: SamplingSettings | None = None
    video_path: str | None = None
    workdir: str | None = None  #: temporary folder holding this session's videos
    renders: int = 0

    @property
    def prepared(self) -> "Prepared | None":
        """The cached :class:`Prepared` analysis, or None before the first generation."""
        if self.source is None or self.speech is None:
            return None
        from float_core.pipeline import Prepared

        return Prepared(self.source, self.speech)

    @property
    def num_frames(self) -> int:
        return 0 if self.motion is None else int(self.motion.shape[0])

    def new_video_path(self, stem: str) -> Path:
        """A fresh path for the next video; the previous video of this session is deleted."""
        if self.workdir is None or not os.path.isdir(self.workdir):
            self.workdir = tempfile.mkdtemp(prefix="float-studio-")
        if self.video_path and os.path.exists(self.video_path):
            try:
                os.remove(self.video_path)
            except OSError:  # e.g. still being served on Windows; the folder goes at cleanup
                pass
        self.renders += 1
        return Path(self.workdir) / f"{stem}_{self.renders:03d}.mp4"

    def cleanup(self) -> None:
        """Delete this session's temporary files (called when Gradio drops the state)."""
        if self.workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
        self.workdir = self.video_path = None


def cleanup_session(session: Any) -> None:
    """``gr.State(delete_callback=...)``: release a session's temporary folder."""
    if isinstance(session, Session):
        session.cleanup()


def image_key(image: np.ndarray) -> str:
    """A content hash of an RGB array (shape and bytes)."""
    arr = np.ascontiguousarray(image)
    h = hashlib.sha1(f"{arr.shape}{arr.dtype}".encode())
    h.update(memoryview(arr).cast("B"))
    return h.hexdigest()


def file_key(path: str | os.PathLike[str]) -> str:
    """A content hash of a file (uploads get new temporary names but keep their bytes)."""
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# ---------------------------------------------------------------------------- pipeline holder
class PipelineHolder:
    """Loads the shared, read-only pipeline once (lazily, thread-safe) and remembers failures.

    Args:
        loader: builds the pipeline; default :func:`load_pipeline`.
    """

    def __init__(self, loader: Callable[[], "FloatPipeline"] | None = None):
        self._loader = loader or load_pipeline
        self._lock = threading.Lock()
        self._pipe: "FloatPipeline | None" = None
        self.error: str | None = None
        self.load_seconds: float | None = None

    def get(self) -> "FloatPipeline":
        """The pipeline; raises RuntimeError with a readable message when it cannot be loaded."""
        if self._pipe is not None:
            return self._pipe
        with self._lock:
            if self._pipe is None and self.error is None:
                t0 = time.perf_counter()
                try:
                    self._pipe = self._loader()
                    self.load_seconds = time.perf_counter() - t0
                    log.info("FLOAT pipeline ready in %.1f s", self.load_seconds)
                except Exception as exc:  # noqa: BLE001 - any loader failure becomes a banner
                    log.exception("could not load the FLOAT pipeline")
                    self.error = f"{type(exc).__name__}: {exc}"
        if self._pipe is None:
            raise RuntimeError(f"The FLOAT model is not available. {self.error}")
        return self._pipe

    @property
    def loaded(self) -> bool:
        """Whether the pipeline has been loaded (never triggers loading)."""
        return self._pipe is not None

    def available(self) -> bool:
        """Load the pipeline if needed; False (and :attr:`error` set) when it cannot be loaded."""
        try:
            self.get()
        except RuntimeError:
            return False
        return True

    def status_markdown(self) -> str:
        """A one-paragraph status for the banner: model size and device, or what is missing."""
        try:
            pipe = self.get()
        except RuntimeError:
            return missing_weights_markdown(self.error or "unknown error")
        cfg = pipe.config
        kind = "tiny random test model" if cfg.image_size < 512 else "FLOAT"
        return (f"**Model:** {kind}, {cfg.image_size}x{cfg.image_size} px, {cfg.fps:g} fps, "
                f"on `{pipe.device}` ({str(pipe.dtype).replace('torch.', '')} decoder).")


def checkpoint_dir() -> Path:
    """Where the app looks for (and downloads) the weights: ``$FLOAT_CHECKPOINT_DIR`` or ``./checkpoints``."""
    from float_core.weights import CHECKPOINT_DIR_ENV

    return Path(os.environ.get(CHECKPOINT_DIR_ENV) or "checkpoints").expanduser().resolve()


def ensure_weights(root: Path) -> Path:
    """Make sure the released weights are under ``root``, fetching them from the hub when absent.

    The download (``float_core.weights.download_weights``) shows tqdm progress bars in the
    server log and fails within seconds offline. ``FLOAT_AUTO_DOWNLOAD=0`` turns it off.

    Raises:
        WeightsError: the weights are absent and could not be fetched; the message lists every
            file to put in place, with its full path, and where to get it.
    """
    from float_core.weights import WeightsError, download_weights, resolve_sources

    try:
        resolve_sources(root)
        return root
    except WeightsError as missing:
        if os.environ.get(AUTO_DOWNLOAD_ENV, "1").strip() == "0":
            raise WeightsError(f"{missing}\n(automatic download is off: {AUTO_DOWNLOAD_ENV}=0)") from None
        log.info("FLOAT weights not found in %s; downloading them from the Hugging Face Hub", root)
    return download_weights(local_dir=root)


def load_pipeline() -> "FloatPipeline":
    """The app's pipeline, with ``$FLOAT_DEVICE`` / ``$FLOAT_DTYPE``.

    ``FLOAT_TEST_MODEL=tiny-random`` gives the tiny random model. Otherwise the weights come
    from :func:`checkpoint_dir`, downloaded there first when absent (:func:`ensure_weights`).
    """
    from float_core.pipeline import TEST_MODEL_ENV, FloatPipeline

    device, dtype = os.environ.get("FLOAT_DEVICE") or None, os.environ.get("FLOAT_DTYPE") or None
    if os.environ.get(TEST_MODEL_ENV):
        return FloatPipeline.from_pretrained(device=device, dtype=dtype)
    root = ensure_weights(checkpoint_dir())
    return FloatPipeline.from_pretrained(root, device=device, dtype=dtype)


_ASSETS = Path(__file__).resolve().parent.parent / "assets"


def missing_weights_markdown(error: str) -> str:
    """The banner shown when the model cannot be loaded (``assets/missing_weights.md`` + the error)."""
    template = _ASSETS / "missing_weights.md"
    text = template.read_text(encoding="utf-8") if template.is_file() else (
        "### The FLOAT weights were not found\n\nSee the README for where to put them.\n\n{error}")
    return text.replace("{error}", error.replace("`", "'").strip())


# ---------------------------------------------------------------------------- analysis + sampling
def crop_preview(image: np.ndarray | None, crop: bool, size: int
                 ) -> tuple[np.ndarray | None, np.ndarray | None, str]:
    """The photo with the detected face box drawn on it, the model-size crop, and a message.

    No model is needed (only the face detector), so this runs as soon as a portrait arrives.
    With ``crop`` off, the "crop" is the whole image resized to ``size`` x ``size``.
    """
    if image is None:
        return None, None, ""
    from float_core.media.face import NoFaceError, crop_portrait, draw_crop_preview
    from float_core.media.image import load_image

    photo = load_image(image)
    if not crop:
        whole = crop_portrait(photo, crop=False, size=size)
        return (photo, whole.image,
                f"Face crop is off: the whole {photo.shape[1]}x{photo.shape[0]} image is resized to {size}x{size}.")
    try:
        result = crop_portrait(photo, crop=True, size=size)
    except NoFaceError as err:
        return photo, None, f"⚠️ {err}"
    boxed = draw_crop_preview(photo, result.box)
    if result.message:
        return boxed, result.image, result.message
    return (boxed, result.image,
            f"{result.num_faces} face{'s' if result.num_faces != 1 else ''} found; the green square is "
            f"the {size}x{size} crop the model animates.")


def _check_audio(audio_path: str | None) -> str:
    if not audio_path:
        raise ValueError("Please add a speech recording first (upload or microphone).")
    if not os.path.isfile(audio_path):
        raise ValueError("The audio upload is no longer on the server; please add it again.")
    return audio_path


def analyse_speech_cached(pipe: "FloatPipeline", session: Session, audio_path: str | None,
                          max_seconds: float | None = None,
                          progress: ProgressFn = _noop_progress) -> "DrivingAudio":
    """The speech analysis (wav2vec2 features + emotion probabilities), cached by file content.

    Raises:
        ValueError: no audio, an expired upload, unreadable or too-long audio.
    """
    akey = f"{file_key(_check_audio(audio_path))}:{max_seconds}"
    if session.speech_key != akey or session.speech is None:
        progress(0.02, "Analysing the speech")
        session.speech, session.speech_key = pipe.prepare_audio(audio_path, max_seconds=max_seconds), akey
        session.motion_key = None
    return session.speech


def prepare_cached(pipe: "FloatPipeline", session: Session, image: np.ndarray | None,
                   audio_path: str | None, crop: bool, max_seconds: float | None = None,
                   progress: ProgressFn = _noop_progress) -> "Prepared":
    """The :class:`Prepared` analysis for these inputs, re-using whatever the session has.

    The portrait is re-encoded only when its pixels or the crop flag change, the speech only
    when its bytes change; either change makes the cached motion stale.

    Raises:
        ValueError: a missing input, unreadable media or too-long audio (readable message).
    """
    if image is None:
        raise ValueError("Please add a portrait image first (upload, webcam or paste).")
    _check_audio(audio_path)
    key = f"{image_key(image)}:{int(bool(crop))}"
    if session.source_key != key or session.source is None:
        progress(0.0, "Analysing the portrait")
        session.source, session.source_key = pipe.prepare_image(image, crop=crop), key
        session.motion_key = None
    analyse_speech_cached(pipe, session, audio_path, max_seconds, progress)
    prepared = session.prepared
    assert prepared is not None
    return prepared


def emotion_vector(detected: np.ndarray, emotion: str) -> np.ndarray:
    """The emotion vector sampling uses: the speech's probabilities for "auto", else a one-hot.

    The same rule as :meth:`FloatPipeline.resolve_emotion` (:func:`float_core.pipeline.resolve_emotion`),
    on the stored probabilities, so the emotion plot can highlight the emotion in use before
    sampling starts.
    """
    import torch

    from float_core.pipeline import resolve_emotion

    probs = torch.as_tensor(np.asarray(detected, dtype=np.float64))
    try:
        return resolve_emotion(probs, str(emotion or "auto")).numpy()
    except ValueError as exc:  # label it as the UI control it comes from
        raise ValueError(f"Emotion setting: {exc}") from None


def sample_cached(pipe: "FloatPipeline", session: Session, settings: SamplingSettings,
                  progress: ProgressFn = _noop_progress) -> "Tensor":
    """Sample motion for the session's prepared inputs unless the same settings were sampled."""
    import torch

    prepared = session.prepared
    if prepared is None:
        raise ValueError("Nothing to sample yet: generate a video first.")
    key = (session.source_key, session.speech_key, settings)
    if session.motion_key == key and session.motion is not None:
        return session.motion
    emotion = pipe.resolve_emotion(prepared, settings.emotion)
    from float_core import sampling

    windows = sampling.num_windows(prepared.num_frames, pipe.config.num_frames)
    with torch.no_grad():
        chunks = _sample_windows(pipe, prepared, settings, emotion, windows, progress)
    motion = torch.cat(chunks, dim=0)
    session.motion, session.motion_key, session.settings = motion, key, settings
    session.lambdas = pipe.motion_lambda(motion).float().cpu().numpy()
    session.emotion = emotion.float().cpu().numpy()
    return motion


def _sample_windows(pipe: "FloatPipeline", prepared: "Prepared", settings: SamplingSettings,
                    emotion: "Tensor", windows: int, progress: ProgressFn) -> list["Tensor"]:
    """The motion windows, reporting progress after each one."""
    chunks = []
    for i, window in enumerate(pipe.iter_motion(prepared, a_cfg=settings.a_cfg, e_cfg=settings.e_cfg,
                                                nfe=settings.nfe, solver=settings.solver,
                                                emotion=emotion, seed=settings.seed)):
        chunks.append(window)
        progress(0.1 + 0.4 * (i + 1) / windows, f"Sampling motion: window {i + 1}/{windows}")
    return chunks


def offsets_array(values: Sequence[Any], num_directions: int) -> np.ndarray:
    """Slider values -> lambda offsets (M,) float32; missing/None values count as 0."""
    vals = [0.0 if v is None or v == "" else float(v) for v in values]
    if len(vals) != num_directions:
        raise ValueError(f"edits: expected {num_directions} slider values, got {len(vals)}")
    out = np.asarray(vals, dtype=np.float32)
    if not np.isfinite(out).all():
        raise ValueError("edits: slider values must be finite numbers")
    return out


def render_video(pipe: "FloatPipeline", session: Session, offsets: np.ndarray | None = None,
                 paste_back: bool = False, progress: ProgressFn = _noop_progress,
                 batch_size: int = 8) -> tuple[Path, list[str]]:
    """Write the session's motion (with lambda ``offsets``) to an MP4 with the speech muxed in.

    Returns the video path and warnings for the user (e.g. paste-back without a face box).
    """
    from float_core.media.video import VideoWriter

    prepared = session.prepared
    if prepared is None or session.motion is None:
        raise ValueError("Generate a video first; edits are applied to its motion.")
    warnings: list[str] = []
    paste = None
    if paste_back:
        if prepared.crop_box is None or prepared.source.original is None:
            warnings.append("Paste-back needs a detected face crop; showing the cropped video instead.")
        else:
            from float_core.media.face import PasteBack

            paste = PasteBack(prepared.source.original, prepared.crop_box, size=pipe.config.image_size)
    edits = None if offsets is None or not np.any(offsets) else offsets
    seed = session.settings.seed if session.settings else 0
    path = session.new_video_path(f"float_seed{seed}")
    total = session.num_frames
    done = 0
    with VideoWriter(path, fps=pipe.config.fps,
                     audio=(prepared.speech.waveform, pipe.config.sample_rate)) as writer:
        for frames in pipe.render(prepared, session.motion, edits=edits, batch_size=batch_size):
            writer.write(np.stack([paste(f) for f in frames]) if paste is not None else frames)
            done += frames.shape[0]
            progress(0.5 + 0.5 * done / max(total, 1), f"Rendering frames {done}/{total}")
    session.video_path = str(path)
    return path, warnings


def preview_frame(pipe: "FloatPipeline", session: Session, frame_index: Any,
                  offsets: np.ndarray | None) -> np.ndarray:
    """Decode only frame ``frame_index`` with lambda ``offsets``: the instant edit preview.

    Equals frame ``frame_index`` of ``pipe.render(prepared, motion, edits=offsets)``.
    """
    import torch

    from float_core.editing import apply_lambda_offsets, as_lambda_offsets
    from float_core.pipeline import frames_to_uint8

    if session.source is None or session.motion is None:
        raise ValueError("Generate a video first; the sliders edit its motion.")
    k = int(np.clip(int(frame_index or 0), 0, session.num_frames - 1))
    motion = session.motion[k:k + 1]
    delta = as_lambda_offsets(None if offsets is None else torch.as_tensor(offsets),
                              pipe.config.motion_dim)
    motion = apply_lambda_offsets(motion, pipe.basis, delta)
    return frames_to_uint8(pipe.decode_frames(session.source, motion))[0]


# ---------------------------------------------------------------------------- messages
def summary_markdown(session: Session, seconds: float, edited: bool, fps: float = 25.0) -> str:
    """A short result line: frames, duration, seed, emotion, wall time."""
    s = session.settings
    what = "Re-rendered with edits" if edited else "Generated"
    emo = "auto" if s is None else s.emotion
    top = ""
    if session.speech is not None:
        probs = session.speech.emotion_probs.float().cpu().numpy()
        top = f" (speech sounds *{EMOTIONS[int(probs.argmax())]}*, {probs.max():.0%})"
    return (f"{what} **{session.num_frames} frames** ({session.num_frames / fps:.1f} s) in "
            f"{seconds:.1f} s · seed **{s.seed if s else '?'}** · emotion **{emo}**{top}")


def user_message(exc: BaseException) -> str:
    """A readable, traceback-free message for an exception raised by the engine or media code."""
    text = str(exc).strip() or type(exc).__name__
    if isinstance(exc, (ValueError, FileNotFoundError, RuntimeError)):
        return text
    if isinstance(exc, MemoryError):
        return "Out of memory: try a shorter audio clip."
    return f"Unexpected error ({type(exc).__name__}): {text}. Details are in the server log."
