"""The analysed inputs of FLOAT: a portrait (:class:`SourceImage`), speech (:class:`DrivingAudio`)
and the pair (:class:`Prepared`), with their validation.

These are the "prepared state" of the one-way data flow: portrait + speech -> prepared state ->
motion (flow matching, paper Sec. 4.2) -> frames (motion auto-encoder, Sec. 4.1). They are
computed once by :meth:`FloatPipeline.prepare_image <float_core.pipeline.FloatPipeline.prepare_image>`
and :meth:`~float_core.pipeline.FloatPipeline.prepare_audio`, are immutable, and can be cached
(on the CPU, moved with :meth:`SourceImage.to`) and shared by any number of requests. This
module sits below the pipeline, the streaming engine and everything built on them.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any, Sequence, TypeVar, Union

import numpy as np
import torch
from torch import Tensor

from .config import SAMPLE_RATE

__all__ = [
    "AudioInput",
    "DrivingAudio",
    "EmotionInput",
    "ImageInput",
    "Prepared",
    "SourceImage",
    "move_tensors",
    "validate_motion",
    "validate_waveform",
]

ImageInput = Union[str, "os.PathLike[str]", np.ndarray]  #: a file path or an RGB uint8 array (H, W, 3)
AudioInput = Union[str, "os.PathLike[str]", np.ndarray, Tensor]  #: a file path or float32 16 kHz mono samples
#: "auto", "dynamic", an emotion name, 7 probabilities (list, tuple, array, tensor) or None (auto)
EmotionInput = Union[str, Sequence[float], np.ndarray, Tensor, None]

_T = TypeVar("_T")


def move_tensors(value: _T, device: torch.device | str) -> _T:
    """``value`` with every tensor moved to ``device`` (dataclasses and tuples recursively).

    Values already there are returned as they are (no copy), so on a CPU-only host this is free.
    """
    if torch.is_tensor(value):
        return value.to(device)  # type: ignore[return-value]
    if isinstance(value, tuple) and not hasattr(value, "_fields"):
        moved = tuple(move_tensors(v, device) for v in value)
        return value if all(m is v for m, v in zip(moved, value)) else moved  # type: ignore[return-value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        changes = {f.name: move_tensors(getattr(value, f.name), device) for f in dataclasses.fields(value)}
        if all(changes[k] is getattr(value, k) for k in changes):
            return value
        return dataclasses.replace(value, **changes)  # type: ignore[type-var]
    return value


class _Movable:
    """``.to(device)`` for the frozen input dataclasses."""

    def to(self, device: torch.device | str):  # noqa: ANN201 - returns the same type
        """A copy with every tensor on ``device`` (``self`` when they already are)."""
        return move_tensors(self, device)


@dataclass(frozen=True)
class SourceImage(_Movable):
    """Everything the decoder needs from the portrait (computed once, reused by every edit)."""

    image: Tensor  #: (1, 3, S, S) source crop in [-1, 1]
    crop_box: Any  #: :class:`float_core.media.face.CropBox` in original-image pixels, or None
    original: np.ndarray | None  #: the decoded photo (H, W, 3) uint8, for paste-back
    identity_latent: Tensor  #: w_{S->r} (d,)  (paper Eq. 8)
    source_lambda: Tensor  #: lambda(S) (M,)
    source_motion: Tensor  #: w_{r->S} = V lambda(S) (d,)
    features: tuple[Tensor, ...]  #: encoder feature pyramid, low to high resolution, batch 1
    message: str | None = None  #: e.g. "2 faces found; used the largest"


@dataclass(frozen=True)
class DrivingAudio(_Movable):
    """Everything the sampler needs from the speech (computed once per audio)."""

    waveform: np.ndarray  #: float32 16 kHz mono, as decoded (muxed into the video)
    audio_features: Tensor  #: w_a (T, dim_a)
    emotion_probs: Tensor  #: speech-emotion softmax w_e (7,), order :data:`~float_core.config.EMOTIONS`
    #: per-window probabilities (W, 7) once computed (``FloatPipeline.with_emotion_timeline``)
    emotion_windows: Tensor | None = None

    @property
    def num_frames(self) -> int:
        return int(self.audio_features.shape[0])

    @property
    def seconds(self) -> float:
        return self.waveform.shape[0] / SAMPLE_RATE


@dataclass(frozen=True)
class Prepared(_Movable):
    """Cached analysis of one portrait and one speech clip (see ``FloatPipeline.prepare``)."""

    source: SourceImage
    speech: DrivingAudio

    crop_box = property(lambda self: self.source.crop_box)
    identity_latent = property(lambda self: self.source.identity_latent)
    source_lambda = property(lambda self: self.source.source_lambda)
    source_motion = property(lambda self: self.source.source_motion)
    features = property(lambda self: self.source.features)
    audio_features = property(lambda self: self.speech.audio_features)
    emotion_probs = property(lambda self: self.speech.emotion_probs)
    num_frames = property(lambda self: self.speech.num_frames)


# ---------------------------------------------------------------------------- validation
def validate_waveform(audio: Any) -> np.ndarray:
    """A float32 mono waveform (samples,) from an array or tensor, or a ValueError saying what is wrong.

    A tensor on a device is copied to the host explicitly.
    """
    wave = audio.detach().cpu().numpy() if torch.is_tensor(audio) else np.asarray(audio)
    if wave.ndim != 1:
        raise ValueError(f"audio: expected a mono waveform (samples,) at {SAMPLE_RATE} Hz, got shape {wave.shape}; "
                         "pass a file path to decode and resample any other format")
    if wave.size == 0:
        raise ValueError("audio: the waveform is empty")
    if not (np.issubdtype(wave.dtype, np.floating) or np.issubdtype(wave.dtype, np.integer)):
        raise ValueError(f"audio: expected float samples in [-1, 1], got dtype {wave.dtype}")
    if np.issubdtype(wave.dtype, np.integer):
        hint = " (int16 PCM: x.astype(np.float32) / 32768)" if wave.dtype == np.int16 else ""
        raise ValueError(f"audio: expected float samples in [-1, 1], got dtype {wave.dtype}{hint}")
    wave = wave.astype(np.float32, copy=False)
    if not np.isfinite(wave).all():
        raise ValueError("audio: the waveform contains NaN or infinite samples")
    return wave


def validate_motion(motion: Any, dim: int) -> Tensor:
    """Motion latents as a (frames, dim) tensor, or a ValueError.

    One device sync (a single bool) per call: callers validate once, never per batch.
    """
    motion = torch.as_tensor(motion)
    if motion.ndim != 2 or motion.shape[1] != dim or motion.shape[0] == 0:
        raise ValueError(f"motion: expected motion latents of shape (frames, {dim}), got {tuple(motion.shape)}")
    if not torch.isfinite(motion).all():
        raise ValueError("motion: contains NaN or infinite values")
    return motion
