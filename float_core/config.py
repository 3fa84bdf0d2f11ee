"""Model and sampling configuration (paper Sec. 5.2, A.4; sizes as in the released checkpoint).

Every size in the engine comes from :class:`FloatConfig`. ``FloatConfig.official()`` is the
released checkpoint; ``FloatConfig.tiny()`` is a few-MB random model for tests and the app's
test mode (``FLOAT_TEST_MODEL=tiny-random``). :class:`SamplingConfig` holds the sampling
settings, :class:`StreamOptions` how a stream runs (torch-free, so the command line's defaults
come from here without importing the engine).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import numbers
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: Sidecar file that records a non-official :class:`FloatConfig` next to a checkpoint
#: (written by training exports; ``FloatPipeline.from_pretrained`` reads it).
CONFIG_FILE_NAME = "float_config.json"

#: Label order of the speech-emotion classifier (r-f/wav2vec-english-speech-emotion-recognition).
EMOTIONS: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise")

#: Audio rate of every model input and output (wav2vec2 works at 16 kHz).
SAMPLE_RATE: int = 16000
#: Video frame rate: FLOAT's motion has one latent per frame at 25 fps (paper Sec. 5.1).
FPS: int = 25
#: Audio samples per video frame: 640 (40 ms).
SAMPLES_PER_FRAME: int = SAMPLE_RATE // FPS


def env_number(name: str, default: float, *, minimum: float | None = None, strict: bool = False) -> float:
    """A number from the environment variable ``name``, or ``default`` when it is unset or blank.

    A value that is not a finite number (or is below ``minimum``) raises ValueError naming the
    variable when ``strict``; otherwise it is logged as a warning and ``default`` is used (a
    typo in an optional setting must not stop a server from starting).
    """
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
        if not math.isfinite(value) or (minimum is not None and value < minimum):
            raise ValueError
    except ValueError:
        bound = "" if minimum is None else f" >= {minimum:g}"
        message = f"{name}={raw!r} is not a number{bound}"
        if strict:
            raise ValueError(f"{message}; unset it or give a number") from None
        logging.getLogger(__name__).warning("%s; using %g", message, default)
        return default
    return value


def _wav2vec2_base_960h() -> dict[str, Any]:
    """Architecture of facebook/wav2vec2-base-960h (audio features), as in the manifest."""
    return dict(
        hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
        conv_dim=[512] * 7, conv_kernel=[10, 3, 3, 3, 3, 2, 2], conv_stride=[5, 2, 2, 2, 2, 2, 2],
        conv_bias=False, feat_extract_norm="group", do_stable_layer_norm=False,
        num_conv_pos_embeddings=128, num_conv_pos_embedding_groups=16,
        layer_norm_eps=1e-5, hidden_act="gelu", feat_extract_activation="gelu", vocab_size=32,
    )


def _wav2vec2_emotion_xlsr() -> dict[str, Any]:
    """Architecture of r-f/wav2vec-english-speech-emotion-recognition (xlsr-53 large, 7 labels)."""
    return dict(
        hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
        conv_dim=[512] * 7, conv_kernel=[10, 3, 3, 3, 3, 2, 2], conv_stride=[5, 2, 2, 2, 2, 2, 2],
        conv_bias=True, feat_extract_norm="layer", do_stable_layer_norm=True,
        num_conv_pos_embeddings=128, num_conv_pos_embedding_groups=16,
        layer_norm_eps=1e-5, hidden_act="gelu", feat_extract_activation="gelu", vocab_size=33,
        num_labels=len(EMOTIONS), pooling_mode="mean",
    )


def _tiny_wav2vec2(**extra: Any) -> dict[str, Any]:
    """The tiny wav2vec2 of the reference fixtures: real conv kernels/strides, 16 hidden, 2 layers."""
    return dict(
        hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
        conv_dim=[8] * 7, conv_kernel=[10, 3, 3, 3, 3, 2, 2], conv_stride=[5, 2, 2, 2, 2, 2, 2],
        num_conv_pos_embeddings=8, num_conv_pos_embedding_groups=2,
        layer_norm_eps=1e-5, hidden_act="gelu", feat_extract_activation="gelu", **extra,
    )


@dataclass(frozen=True)
class FloatConfig:
    """Sizes of every FLOAT component.

    Names follow the paper: d = ``style_dim`` (motion latent, identity latent and
    decoder style size), M = ``motion_dim`` orthonormal motion directions, L =
    ``num_frames`` generated per window, L' = ``num_prev_frames`` carried over from the
    previous window, T = ``attention_window`` (frame i attends frames i-T..i+T).
    """

    # Motion auto-encoder (paper 4.1, A.1): a LIA-style encoder/decoder at `image_size`.
    image_size: int = 512
    channel_base: int = 16384  # channels at resolution r: min(max_channels, channel_base // r)
    max_channels: int = 512
    style_dim: int = 512  # d = dim_w
    motion_dim: int = 20  # M

    # Conditions (paper 4.2): wav2vec2 audio features projected to dim_a; 7 emotions.
    dim_a: int = 512
    dim_e: int = len(EMOTIONS)
    audio_wav2vec2: dict[str, Any] = field(default_factory=_wav2vec2_base_960h)
    emotion_wav2vec2: dict[str, Any] = field(default_factory=_wav2vec2_emotion_xlsr)

    # Flow matching transformer (paper 4.2, Fig. 3; DiT-style).
    fmt_hidden: int = 1024  # h
    fmt_depth: int = 8
    fmt_heads: int = 8
    mlp_ratio: float = 4.0
    freq_embed_size: int = 256
    num_frames: int = 50  # L (2 s at 25 fps)
    num_prev_frames: int = 10  # L'
    attention_window: int = 2  # T

    # Media.
    fps: float = float(FPS)
    sample_rate: int = SAMPLE_RATE

    def __post_init__(self) -> None:
        if self.image_size < 4 or self.image_size & (self.image_size - 1):
            raise ValueError(f"image_size must be a power of two >= 4, got {self.image_size}")
        if not 0 < self.motion_dim <= self.style_dim:
            raise ValueError(f"motion_dim must be in 1..style_dim ({self.style_dim}): M orthonormal "
                             f"directions need M <= d; got {self.motion_dim}")
        if self.fmt_hidden % self.fmt_heads:
            raise ValueError(f"fmt_hidden ({self.fmt_hidden}) must be divisible by fmt_heads ({self.fmt_heads})")

    # ----------------------------------------------------------------- derived sizes
    def channels(self, resolution: int) -> int:
        """Feature channels of the auto-encoder at ``resolution`` (official: 32 at 512 ... 512 at <= 32)."""
        return min(self.max_channels, self.channel_base // resolution)

    @property
    def log_size(self) -> int:
        return int(math.log2(self.image_size))

    @property
    def decoder_resolutions(self) -> list[int]:
        """Resolutions of the decoder levels, low to high (official: 8, 16, ..., 512)."""
        return [2**i for i in range(3, self.log_size + 1)]

    @property
    def samples_per_frame(self) -> int:
        """Audio samples per video frame (640 at 16 kHz, 25 fps)."""
        return int(round(self.sample_rate / self.fps))

    @property
    def sequence_length(self) -> int:
        """Positions seen by the FMT: L' + L (official 60)."""
        return self.num_prev_frames + self.num_frames

    def num_video_frames(self, num_samples: int) -> int:
        """T = ceil(samples * fps / sample_rate), the reference's frame count."""
        return int(math.ceil(num_samples * self.fps / self.sample_rate))

    # ----------------------------------------------------------------- presets
    @classmethod
    def official(cls) -> "FloatConfig":
        """The configuration of the released ``float.pth``."""
        return cls()

    @classmethod
    def tiny(cls) -> "FloatConfig":
        """A tiny random-weight configuration (a few MB) for tests and the app's test mode."""
        return cls(
            image_size=64, channel_base=512, max_channels=32, style_dim=32, motion_dim=20,
            dim_a=16, audio_wav2vec2=_tiny_wav2vec2(conv_bias=False, feat_extract_norm="group",
                                                     do_stable_layer_norm=False, vocab_size=32),
            emotion_wav2vec2=_tiny_wav2vec2(conv_bias=True, feat_extract_norm="layer",
                                            do_stable_layer_norm=True, num_labels=len(EMOTIONS),
                                            pooling_mode="mean"),
            fmt_hidden=64, fmt_depth=2, fmt_heads=4, num_frames=10, num_prev_frames=2,
        )

    @classmethod
    def preset(cls, name: str) -> "FloatConfig":
        """``"official"`` or ``"tiny"``."""
        presets = {"official": cls.official, "tiny": cls.tiny}
        if name not in presets:
            raise ValueError(f"model preset must be one of {sorted(presets)}, got {name!r}")
        return presets[name]()

    # ----------------------------------------------------------------- serialisation
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict of every field."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "FloatConfig":
        """Inverse of :meth:`to_dict`; unknown keys are an error (a typo must not be ignored)."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown FloatConfig field(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return cls(**data)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the config as JSON (:data:`CONFIG_FILE_NAME` inside ``path`` if it is a folder)."""
        path = Path(path)
        if path.is_dir():
            path = path / CONFIG_FILE_NAME
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> "FloatConfig":
        """Read a JSON file written by :meth:`save`."""
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"cannot read the model config {path}: {exc}") from exc
        if not isinstance(data, dict):
            raise ValueError(f"{path} must hold a JSON object of FloatConfig fields")
        return cls.from_dict(data)

    @classmethod
    def for_checkpoint(cls, checkpoint_file: str | os.PathLike[str]) -> "FloatConfig":
        """The config of a checkpoint: its :data:`CONFIG_FILE_NAME` sidecar if present, else official."""
        sidecar = Path(checkpoint_file).parent / CONFIG_FILE_NAME
        return cls.load(sidecar) if sidecar.is_file() else cls.official()

    def replace(self, **changes: Any) -> "FloatConfig":
        """A copy with some fields changed (``dataclasses.replace``)."""
        return dataclasses.replace(self, **changes)


#: The dtype names offered as choices (``--dtype``, ``FLOAT_DTYPE``): "auto" plus the full names
#: (``float_core.precision.parse_dtype`` also takes fp32/bf16/fp16).
DTYPE_CHOICES: tuple[str, ...] = ("auto", "float32", "bfloat16", "float16")

#: ODE solvers the sampler knows, by name (``float_core.sampling.SOLVERS`` holds their
#: implementations under these names; the names live here so that validation and command-line
#: choices need no torch import).
SOLVER_NAMES: tuple[str, ...] = ("euler", "midpoint", "rk4")


#: Motion presets by name (``float_core.directions`` holds what each one scales; the names live
#: here so that validation and command-line choices need no torch import).
PRESET_NAMES: tuple[str, ...] = ("lips only", "calmer head", "more expressive")


def canonical_preset(preset: Any) -> str | None:
    """The one form of a preset setting: ``None`` (no preset) or one of :data:`PRESET_NAMES`.

    Accepts a name in any case, with spaces, hyphens or underscores between its words
    ("lips-only", "Lips_Only"), and ``None``, "" or "none" for no preset. Raises ValueError
    listing the names for anything else.
    """
    if preset is None:
        return None
    if not isinstance(preset, str):
        raise ValueError(f"preset: expected one of {', '.join(repr(p) for p in PRESET_NAMES)} or 'none', "
                         f"got {preset!r}")
    name = " ".join(preset.replace("-", " ").replace("_", " ").lower().split())
    if name in ("", "none"):
        return None
    if name not in PRESET_NAMES:
        raise ValueError(f"preset: expected one of {', '.join(repr(p) for p in PRESET_NAMES)} or 'none', "
                         f"got {preset!r}")
    return name


#: Direction groups (``float_core.directions.GROUPS``) that a video gives by default when it
#: drives a generation from speech (``generate(drive=...)``): the head, the lips staying with the
#: speech. Here so that the command line and job files need no torch import.
DEFAULT_DRIVE_GROUPS: tuple[str, ...] = ("head",)
#: Direction groups a dub keeps from each frame of its video by default: all but the mouth,
#: which follows the new speech.
DEFAULT_DUB_GROUPS: tuple[str, ...] = ("head", "eyes", "other")


#: Compositions of a conversation's video (``float_core.conversation.Layout``): side by side, a
#: grid, or the current speaker large (here so that command-line choices need no torch import).
LAYOUTS: tuple[str, ...] = ("row", "grid", "speaker")
#: Seconds of silence between two consecutive lines of a conversation's script.
DEFAULT_GAP: float = 0.3


def canonical_emotion(emotion: Any) -> None | str | tuple[float, ...]:
    """The one form of an emotion setting: ``None`` (auto, from the speech), ``"dynamic"``, an
    emotion name in lower case, or a tuple of 7 floats (a probability vector, not yet normalised).

    Accepts "auto"/"dynamic"/a name in any case, or 7 numbers as a list, tuple, numpy array or
    tensor on any device (copied to the host explicitly). Raises ValueError with the accepted
    forms for anything else, or for numbers that are not 7 finite non-negative values with a
    positive sum.
    """
    if emotion is None:
        return None
    if isinstance(emotion, str):
        name = emotion.strip().lower()
        if name not in ("auto", "dynamic") + EMOTIONS:
            raise ValueError(f"emotion: expected 'auto', 'dynamic' or one of {', '.join(EMOTIONS)}, got {emotion!r}")
        return None if name == "auto" else name
    if hasattr(emotion, "detach"):  # a tensor, possibly on a device: an explicit copy to the host
        emotion = emotion.detach().cpu().reshape(-1).tolist()
    elif hasattr(emotion, "tolist"):  # a numpy array
        emotion = emotion.reshape(-1).tolist()
    try:
        vec = tuple(float(p) for p in emotion)
    except (TypeError, ValueError):
        raise ValueError(f"emotion: expected 'auto', 'dynamic', a name or {len(EMOTIONS)} probabilities, "
                         f"got {emotion!r}") from None
    if len(vec) != len(EMOTIONS) or not all(math.isfinite(p) and p >= 0 for p in vec) or sum(vec) <= 0:
        raise ValueError(f"emotion: a probability vector needs {len(EMOTIONS)} finite non-negative numbers with "
                         f"a positive sum (order: {', '.join(EMOTIONS)}), got {list(vec)}")
    return vec


@dataclass(frozen=True)
class SamplingConfig:
    """Every setting that changes the sampled motion besides the inputs (paper Sec. 4.2, Eq. 13).

    One frozen value used by the pipeline, the CLI, the app and training's sample videos, so
    the defaults live here only. Build variants with :meth:`replace` or
    :meth:`with_overrides` (which ignores ``None`` values, the "not given" of CLI flags).

    Attributes:
        a_cfg: audio guidance scale gamma_a (Eq. 13); 1 with ``e_cfg`` 1 means no guidance.
        e_cfg: emotion guidance scale gamma_e (Eq. 13), the "emotion intensity".
        nfe: vector-field evaluations per 50-frame window (the reference's ``nfe = n`` is
            ``nfe = n - 1`` with Euler; see :mod:`float_core.sampling`).
        solver: "euler", "midpoint" or "rk4".
        emotion: ``None``/"auto" (from the speech), "dynamic" (each window with its own
            speech-emotion estimate), one of :data:`EMOTIONS` (redirection, one-hot) or 7
            probabilities (list, tuple, numpy array or tensor on any device); stored in the
            one form of :func:`canonical_emotion` (None, a name, "dynamic" or a tuple).
        seed: seed of the per-window noise; ``None`` draws fresh noise.
    """

    a_cfg: float = 2.0
    e_cfg: float = 1.0
    nfe: int = 10
    solver: str = "euler"
    emotion: Any = None
    seed: int | None = None

    def __post_init__(self) -> None:
        for name in ("a_cfg", "e_cfg"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
                raise ValueError(f"{name}: must be a finite number, got {value!r}")
            object.__setattr__(self, name, float(value))
        if isinstance(self.nfe, bool) or not isinstance(self.nfe, numbers.Integral) or self.nfe < 1:
            raise ValueError(f"nfe: must be a whole number >= 1 (evaluations per window), got {self.nfe!r}")
        object.__setattr__(self, "nfe", int(self.nfe))
        if self.solver not in SOLVER_NAMES:
            raise ValueError(f"solver: must be one of {', '.join(SOLVER_NAMES)}, got {self.solver!r}")
        if self.seed is not None:
            if isinstance(self.seed, bool) or not isinstance(self.seed, numbers.Integral) or self.seed < 0:
                raise ValueError(f"seed: must be a whole number >= 0 or None (random), got {self.seed!r}")
            object.__setattr__(self, "seed", int(self.seed))
        object.__setattr__(self, "emotion", canonical_emotion(self.emotion))

    @property
    def dynamic_emotion(self) -> bool:
        """Whether each window uses its own speech-emotion estimate."""
        return isinstance(self.emotion, str) and self.emotion == "dynamic"

    @property
    def emotion_label(self) -> str:
        """"auto", "dynamic", an emotion name or "custom" (a given probability vector)."""
        if self.emotion is None:
            return "auto"
        return self.emotion if isinstance(self.emotion, str) else "custom"

    def replace(self, **changes: Any) -> "SamplingConfig":
        """A copy with some fields changed (validated)."""
        return dataclasses.replace(self, **changes)

    def with_overrides(self, **overrides: Any) -> "SamplingConfig":
        """A copy with the given fields changed; ``None`` values keep the current setting.

        Unknown names are an error (a misspelt option must not be ignored). ``emotion=None``
        keeps the current emotion; pass ``emotion="auto"`` to reset it.
        """
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise TypeError(f"unknown sampling option(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        changes = {k: v for k, v in overrides.items() if v is not None}
        return dataclasses.replace(self, **changes) if changes else self

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (the emotion as its label or its probabilities)."""
        data = dataclasses.asdict(self)
        if isinstance(self.emotion, tuple):
            data["emotion"] = list(self.emotion)
        return data


#: The :class:`SamplingConfig` fields, which are also the command-line flags and batch job
#: fields of the same names.
SAMPLING_FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(SamplingConfig))


@dataclass(frozen=True)
class StreamOptions:
    """How :meth:`FloatPipeline.stream` runs (everything but the sampling settings of :class:`SamplingConfig`).

    Attributes:
        idle: silence mode: frames the voice-activity detector marks silent use the null audio
            condition, and a stalled live source is padded with silence (``False``: the audio
            drives every frame as offline, nothing is inserted).
        crop: detect and crop the face when ``source`` is an image path or array.
        batch_size: frames decoded at once (and so per :class:`StreamChunk`).
        chunk_frames: live input: frames committed per FMT pass (the low-latency schedule,
            :class:`~float_core.sampling.ChunkSchedule`); a frame waits for the rest of its
            chunk and the look-ahead. ``None`` (or a value >= the model's window L): whole
            windows of L frames. Paths and arrays always use whole windows (exactly offline).
        context_seconds: live input: left context of the wav2vec2 span of a chunk.
        lookahead_seconds: live input: audio after a chunk's end seen by its features and its
            FMT pass; a chunk waits for it, so it adds this much latency.
        stall_timeout: live input, idle mode: how many seconds the source may fall behind the
            wall clock before silence is inserted to keep 25 fps (``None``: wait forever).
            Must exceed the source's chunk period. For a
            :class:`~float_core.streaming.LiveInput` in real time: how
            long after the last push the stream waits for more speech before it fills silence.
        max_buffer_seconds: live input: how far the source may run ahead of the frames being
            made before the reader stops pulling from it (back-pressure).
        queue_size: items each inter-stage queue holds.
        first_frame_first: the sampler starts window 1 only once the first frames are decoded,
            so the two do not share the processor before the first frame (on a CPU without
            spare cores overlapping them delays the first frame, not the throughput).
        vad_threshold: speech probability that starts speech (:class:`~float_core.vad.VoiceActivity`).
        min_silence_ms: silence needed before a speaking span ends.
    """

    idle: bool = True
    crop: bool = True
    batch_size: int = 8
    # The live defaults, measured side by side (benchmarks/streaming.py --delay / --schedule /
    # --features-only; docs/streaming.md): chunks of 10 frames and a 0.12 s look-ahead keep the
    # A/V delay of a real-time source under 0.6 s (p90) at 1.9x the FMT work of whole windows;
    # 4 s of left context halves the live features' difference from the whole clip's against 1 s.
    chunk_frames: int | None = 10
    context_seconds: float = 4.0
    lookahead_seconds: float = 0.12
    stall_timeout: float | None = 1.0
    max_buffer_seconds: float = 60.0
    queue_size: int = 2
    first_frame_first: bool = True
    vad_threshold: float = 0.5
    min_silence_ms: float = 300.0

    def __post_init__(self) -> None:
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"batch_size: must be a whole number >= 1, got {self.batch_size!r}")
        if self.chunk_frames is not None and (isinstance(self.chunk_frames, bool)
                                              or not isinstance(self.chunk_frames, int) or self.chunk_frames < 1):
            raise ValueError(f"chunk_frames: must be a whole number >= 1 or None (whole windows), "
                             f"got {self.chunk_frames!r}")
        if isinstance(self.queue_size, bool) or not isinstance(self.queue_size, int) or self.queue_size < 1:
            raise ValueError(f"queue_size: must be a whole number >= 1, got {self.queue_size!r}")
        for name in ("context_seconds", "lookahead_seconds", "max_buffer_seconds", "min_silence_ms"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ValueError(f"{name}: must be a finite number >= 0, got {value!r}")
        if self.stall_timeout is not None and not (isinstance(self.stall_timeout, (int, float))
                                                   and math.isfinite(self.stall_timeout) and self.stall_timeout > 0):
            raise ValueError(f"stall_timeout: must be a number of seconds > 0 or None, got {self.stall_timeout!r}")
        if self.max_buffer_seconds < 1:
            raise ValueError(f"max_buffer_seconds: must be >= 1, got {self.max_buffer_seconds!r}")
