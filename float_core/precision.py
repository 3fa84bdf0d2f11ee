"""Mixed precision: which stage computes in which dtype (docs/performance.md).

One pipeline dtype (``FloatPipeline(dtype=...)``, CLI ``--dtype``) maps to a per-stage
:class:`Precision` (``FloatPipeline(precision=...)`` sets one directly). The rule is measured,
not assumed, against a bar of per-frame PSNR >= 45 dB against the all-float32
pipeline. Official size, seeded random weights with flow-scaled ToFlow as in
``benchmarks/decoder_speed.py``, 2 s of CMU ARCTIC speech, NFE 10; first, each stage alone
(4 frames spread over the clip):

============================  =======================  =======================
stage in low precision        bfloat16 (min / mean)    float16 (min / mean)
============================  =======================  =======================
decoder, every level          39.9 / 47.5 dB           60.2 / 65.3 dB
decoder, levels > 16 px       46.0 / 51.7 dB           (not needed)
FMT under autocast            44.5 / 47.2 dB           57.1 / 65.9 dB
FMT, embedders + final fp32   45.9 / 52.8 dB           --
audio + emotion encoders      33.7 / 40.5 dB (+FMT)    51.1 / 56.2 dB (+FMT)
============================  =======================  =======================

then the whole pipeline (``benchmarks/gpu_check.py``, its first 8 frames): bf16 decoder alone
46.0 / 54.9 dB; bf16 decoder + bf16 FMT 41.6 / 52.8 dB (fails: the two errors add); float16
everywhere 50.0 / 60.3 dB (float16 decoder alone 64.0 / 72.7).

So **bfloat16** runs the decoder in bf16, with its levels up to 16 px (~5 % of its FLOPs) in
float32 (:data:`~float_core.models.decoder_inference.LOW_PRECISION_FLOAT32_MAX_RESOLUTION`),
and keeps the FMT and the two wav2vec2 encoders float32: the encoders' 1.3 % relative feature
error in bf16 moves the motion by up to 0.06, and a bf16 FMT on top of the bf16 decoder
misses the bar. **float16**'s 3 more mantissa bits pass everywhere, so float16 runs every
stage in float16 (the same float32 parts kept: the decoder's low levels, and the FMT's
condition and input embedders and final layer, :func:`full_precision` in
:mod:`float_core.models.fmt`, which in bf16 cost 1.4 dB for ~1.5 % of its FLOPs). The ODE
state, guidance arithmetic and every output stay float32 in all modes: only the matmuls and
convolutions inside a stage run low. ``Precision(decoder=..., fmt=..., encoders=...)`` picks
any other mix (e.g. a bf16 FMT where speed matters more than the bar).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import ContextManager

import torch

from .config import DTYPE_CHOICES

__all__ = ["DTYPE_CHOICES", "DTYPE_ENV", "Precision", "auto_reason", "autocast", "full_precision", "native_bf16", "native_fp16",
           "parse_dtype", "select_device", "select_dtype"]

_COMPUTE_DTYPES = (torch.float32, torch.bfloat16, torch.float16)

#: Every dtype name the engine, the command line and the app accept, and what it means.
_DTYPE_NAMES: dict[str, torch.dtype] = {"float32": torch.float32, "fp32": torch.float32,
                                        "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
                                        "float16": torch.float16, "fp16": torch.float16}
#: Environment variable that sets what ``dtype="auto"`` (the default everywhere) resolves to,
#: for the whole process and the processes it starts, e.g. ``FLOAT_DTYPE=float32`` to keep the
#: reference's numbers on hardware where auto would pick bfloat16 (the test suite sets it).
DTYPE_ENV = "FLOAT_DTYPE"


def parse_dtype(name: str | torch.dtype) -> torch.dtype:
    """A dtype from its name ("float32"/"fp32", "bfloat16"/"bf16", "float16"/"fp16", any case) or
    a torch dtype among those; ValueError naming the choices otherwise. ("auto" is resolved by
    :func:`select_dtype`, not here.)"""
    if isinstance(name, torch.dtype):
        if name in _COMPUTE_DTYPES:
            return name
    elif str(name).strip().lower() in _DTYPE_NAMES:
        return _DTYPE_NAMES[str(name).strip().lower()]
    raise ValueError(f"dtype: expected 'auto' or one of {', '.join(DTYPE_CHOICES[1:])}, got {name!r}")


def select_device(device: str | torch.device | None = None) -> torch.device:
    """``None``/"auto" -> CUDA when available, else CPU; anything else is passed to torch.device."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bfloat16 natively (fast): CUDA compute capability 8.0+
    (Ampere), or a CPU with AMX tiles or AVX512-BF16. Elsewhere bf16 is emulated and much slower
    than float32 (docs/performance.md)."""
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.get_device_capability(device)[0] >= 8
    if device.type == "cpu":
        return bool(torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported())
    return False


def native_fp16(device: torch.device) -> bool:
    """Whether ``device`` computes float16 natively (fast): CUDA compute capability 7.0+
    (tensor cores), or a CPU with AMX-FP16. Elsewhere float16 is emulated."""
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.get_device_capability(device)[0] >= 7
    if device.type == "cpu":
        return bool(torch.cpu._is_amx_fp16_supported())
    return False


def select_dtype(dtype: str | torch.dtype | None, device: str | torch.device | None = None) -> torch.dtype:
    """The pipeline's dtype, which :meth:`Precision.for_dtype` maps to per-stage dtypes.

    ``None``/"auto" (the default) is ``$FLOAT_DTYPE`` when that is set to a dtype name, else the
    hardware rule: bfloat16 where ``device`` has native bf16 (:func:`native_bf16`; frames within
    PSNR >= 45 dB of float32 with the measured float32 parts, see the module docstring), float32
    elsewhere. "float32" reproduces the reference numbers; "bfloat16"/"float16" force the low
    precision.
    """
    if dtype is None or str(dtype).strip().lower() == "auto":
        pinned = os.environ.get(DTYPE_ENV, "").strip()
        if pinned and pinned.lower() != "auto":
            try:
                return parse_dtype(pinned)
            except ValueError:
                raise ValueError(f"{DTYPE_ENV}={pinned!r}: expected one of {', '.join(DTYPE_CHOICES)}") from None
        return torch.bfloat16 if native_bf16(select_device(device)) else torch.float32
    return parse_dtype(dtype)


def auto_reason(device: str | torch.device | None = None) -> str:
    """Why ``dtype="auto"`` resolves as it does on ``device``, in words (for ``describe()``)."""
    pinned = os.environ.get(DTYPE_ENV, "").strip()
    if pinned and pinned.lower() != "auto":
        return f"{DTYPE_ENV}={pinned}"
    device = select_device(device)
    return f"{'native' if native_bf16(device) else 'no native'} bf16 on {device.type}"


@dataclass(frozen=True)
class Precision:
    """Compute dtype of each stage. Build with :meth:`for_dtype`; float32 everywhere by default."""

    #: the motion decoder's convolutions (:class:`~float_core.models.decoder_inference.InferenceDecoder`)
    decoder: torch.dtype = torch.float32
    #: the flow matching transformer's matmuls (autocast around each vector-field evaluation)
    fmt: torch.dtype = torch.float32
    #: the wav2vec2 audio and emotion encoders (autocast around each call)
    encoders: torch.dtype = torch.float32

    def __post_init__(self) -> None:
        for stage in ("decoder", "fmt", "encoders"):
            value = getattr(self, stage)
            if value not in _COMPUTE_DTYPES:
                raise ValueError(f"Precision.{stage} must be torch.float32, torch.bfloat16 or torch.float16, "
                                 f"got {value!r}")

    @classmethod
    def for_dtype(cls, dtype: torch.dtype) -> "Precision":
        """The measured per-stage rule for a pipeline dtype (see the module docstring)."""
        if dtype == torch.float32:
            return cls()
        if dtype == torch.bfloat16:
            return cls(decoder=dtype)
        if dtype == torch.float16:
            return cls(decoder=dtype, fmt=dtype, encoders=dtype)
        raise ValueError(f"dtype must be float32, bfloat16 or float16, got {dtype}")

    def describe(self) -> str:
        """E.g. ``"bfloat16 decoder, float32 FMT and encoders"`` or ``"float32"``."""
        groups: dict[str, list[str]] = {}
        for stage, dtype in (("decoder", self.decoder), ("FMT", self.fmt), ("encoders", self.encoders)):
            groups.setdefault(str(dtype).replace("torch.", ""), []).append(stage)
        if len(groups) == 1:
            return next(iter(groups))
        return ", ".join(f"{name} {' and '.join(stages)}" for name, stages in groups.items())


def autocast(device: torch.device, dtype: torch.dtype, cache: bool = True) -> ContextManager[object]:
    """Autocast to ``dtype`` on ``device`` inside the block; nothing at all for float32 (so the
    float32 path is exactly the reference formulation, with no autocast machinery).
    ``cache=False`` for code captured in a CUDA graph (autocast's weight-cast cache must not
    outlive the capture, PyTorch's CUDA graphs notes)."""
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype, cache_enabled=cache)


def full_precision(device: torch.device) -> ContextManager[object]:
    """Switch autocast off inside the block (for the numerically sensitive parts of a stage
    that otherwise runs under :func:`autocast`); feed it float32 inputs."""
    return torch.autocast(device.type, enabled=False)
