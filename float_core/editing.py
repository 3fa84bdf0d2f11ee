"""Motion editing in the orthonormal motion basis (paper Sec. 4.1, Eq. 8).

A motion latent is w_{r->D} = sum_m lambda_m v_m with an orthonormal basis V = {v_m}
(the QR basis of ``dec.direction.weight``, shape (d, M)). Because V is orthonormal the
coefficients of any latent w are lambda = V^T w, and an edit that adds ``delta`` to the
coefficients is w' = w + V delta: the component of w outside span(V) is left unchanged,
so an edit with delta = 0 is exactly the identity.

Edits may vary over time: :class:`EditCurve` describes one direction's offset as a curve over
video frames (constant, ramp, pulse or keyframes) and :func:`compile_edits` sums curves into the
(T, M) per-frame offsets that ``FloatPipeline.render(..., edits=...)`` takes.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch import Tensor


def motion_to_lambda(motion: Tensor, basis: Tensor) -> Tensor:
    """Coefficients lambda = V^T w of motion latents ``motion`` (..., d) in ``basis`` (d, M)."""
    _check_basis(motion, basis)
    return motion @ basis.to(motion.dtype)


def lambda_to_motion(coefficients: Tensor, basis: Tensor) -> Tensor:
    """Motion latents w = V lambda for coefficients (..., M) in ``basis`` (d, M)."""
    if coefficients.shape[-1] != basis.shape[1]:
        raise ValueError(
            f"coefficients: last dimension must be the number of motion directions "
            f"{basis.shape[1]}, got shape {tuple(coefficients.shape)}"
        )
    return coefficients @ basis.to(coefficients.dtype).T


def as_lambda_offsets(
    offsets: Tensor | Sequence[float] | None, num_directions: int, num_frames: int | None = None
) -> Tensor | None:
    """Validate ``offsets`` (M,) for every frame or (T, M) per frame; None or all-zero -> None."""
    if offsets is None:
        return None
    delta = torch.as_tensor(offsets, dtype=torch.float32)
    if delta.ndim not in (1, 2) or delta.shape[-1] != num_directions:
        raise ValueError(
            f"edits: expected {num_directions} lambda offsets (one per motion direction) or a "
            f"(frames, {num_directions}) array, got shape {tuple(delta.shape)}"
        )
    if delta.ndim == 2 and num_frames is not None and delta.shape[0] != num_frames:
        raise ValueError(f"edits: per-frame offsets must have {num_frames} rows, got {delta.shape[0]}")
    if not torch.isfinite(delta).all():
        raise ValueError("edits: lambda offsets must be finite numbers")
    return None if not delta.any() else delta


def apply_lambda_offsets(motion: Tensor, basis: Tensor, offsets: Tensor | None) -> Tensor:
    """Add ``offsets`` (M,) or (T, M) to the lambda coefficients of ``motion`` (T, d).

    Returns ``motion + offsets @ V^T``; the part of the latent outside span(V) is untouched.
    """
    if offsets is None:
        return motion
    _check_basis(motion, basis)
    return motion + lambda_to_motion(offsets.to(motion.device, motion.dtype), basis.to(motion.device))


def _check_basis(motion: Tensor, basis: Tensor) -> None:
    if basis.ndim != 2 or motion.shape[-1] != basis.shape[0]:
        raise ValueError(
            f"motion: last dimension must equal the latent size {basis.shape[0]} of the basis, "
            f"got shape {tuple(motion.shape)}"
        )


# --------------------------------------------------------------------------- time-varying edits
#: Curve shapes of :class:`EditCurve`.
CURVE_KINDS: tuple[str, ...] = ("constant", "ramp", "pulse", "keyframes")


def _whole(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name}: must be a whole number >= {minimum}, got {value!r}")
    return int(value)


def _finite(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"{name}: must be a finite number, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class EditCurve:
    """A lambda offset of one motion direction over the frames of a clip.

    Frames are video frames (25 per second), 0-based; ranges are [start, end) with ``end``
    None meaning the end of the clip; a range running past the clip is cut at its end (a
    ramp keeps its slope). Kinds:

    - "constant": ``value`` on [start, end), 0 elsewhere (defaults: the whole clip).
    - "ramp": 0 at ``start``, rising linearly to ``value`` at frame ``end - 1``, then held at
      ``value`` (a gradual change that stays); 0 before ``start``.
    - "pulse": ``value`` on [start, end), 0 elsewhere; ``edge`` > 0 frames of raised-cosine
      rise and fall inside the range soften the steps.
    - "keyframes": linear interpolation of the (frame, value) points ``keyframes``, held
      constant before the first and after the last point; ``value``, ``start`` and ``end``
      are unused.

    Attributes:
        direction: m, the 0-based motion direction (the app's "λ{m + 1}").
        kind: one of :data:`CURVE_KINDS`.
        value: the offset in lambda units (the target of a ramp, the height of a pulse).
        start, end: the frame range.
        edge: frames of soft rise/fall of a pulse (0: hard steps).
        keyframes: (frame, value) points, frames strictly increasing.
    """

    direction: int
    kind: str = "constant"
    value: float = 0.0
    start: int = 0
    end: int | None = None
    edge: int = 0
    keyframes: tuple[tuple[float, float], ...] = ()

    def __post_init__(self) -> None:
        _whole("direction", self.direction, 0)
        if self.kind not in CURVE_KINDS:
            raise ValueError(f"kind: expected one of {', '.join(CURVE_KINDS)}, got {self.kind!r}")
        object.__setattr__(self, "value", _finite("value", self.value))
        start = _whole("start", self.start, 0)
        if self.end is not None and _whole("end", self.end, 0) <= start:
            raise ValueError(f"end: must be after start (frames [start, end)), got start={start}, end={self.end}")
        edge = _whole("edge", self.edge, 0)
        if edge and self.kind != "pulse":
            raise ValueError(f"edge: only a pulse has soft edges, got edge={edge} for a {self.kind!r} curve")
        points = tuple((_finite("keyframe frame", f), _finite("keyframe value", v)) for f, v in self.keyframes)
        if self.kind == "keyframes":
            if not points:
                raise ValueError("keyframes: a keyframes curve needs at least one (frame, value) point")
            frames = [f for f, _ in points]
            if any(b <= a for a, b in zip(frames, frames[1:])):
                raise ValueError(f"keyframes: frames must be strictly increasing, got {frames}")
        elif points:
            raise ValueError(f"keyframes: only a 'keyframes' curve takes points, this one is {self.kind!r}")
        object.__setattr__(self, "keyframes", points)

    def values(self, num_frames: int) -> np.ndarray:
        """The offset at every frame, (num_frames,) float64."""
        t = np.arange(num_frames, dtype=np.float64)
        if self.kind == "keyframes":
            frames, vals = zip(*self.keyframes)
            return np.interp(t, frames, vals)
        end = num_frames if self.end is None else self.end
        if self.start >= num_frames:
            raise ValueError(f"edit of λ{self.direction + 1} starts at frame {self.start}, but the clip has "
                             f"only {num_frames} frames (0-{num_frames - 1})")
        inside = (t >= self.start) & (t < end)
        if self.kind == "ramp":
            span = end - 1 - self.start  # frames from 0 to the full value
            if span == 0:  # a one-frame ramp is a step
                return np.where(t >= self.start, self.value, 0.0)
            return self.value * np.clip((t - self.start) / span, 0.0, 1.0)
        out = np.where(inside, self.value, 0.0)
        if self.kind == "pulse" and self.edge:
            # Raised-cosine rise over the first `edge` frames of the range and fall over the last.
            ramp = min(self.edge, (end - self.start) // 2) or 1
            rise = np.clip((t - self.start + 1) / (ramp + 1), 0.0, 1.0)
            fall = np.clip((end - t) / (ramp + 1), 0.0, 1.0)
            out = out * 0.5 * (1 - np.cos(np.pi * np.minimum(rise, fall)))
        return out


def compile_edits(curves: Sequence[EditCurve], num_frames: int, num_directions: int) -> np.ndarray:
    """Sum edit curves into per-frame lambda offsets (T, M) float32 for ``render(edits=...)``.

    Several curves on one direction add up; directions without a curve get 0.

    Raises:
        ValueError: a curve names a direction outside 0..M-1 or starts after the clip.
    """
    _whole("num_frames", num_frames, 1)
    _whole("num_directions", num_directions, 1)
    offsets = np.zeros((num_frames, num_directions), dtype=np.float64)
    for curve in curves:
        if not isinstance(curve, EditCurve):
            raise TypeError(f"curves: expected EditCurve values, got {type(curve).__name__}")
        if curve.direction >= num_directions:
            raise ValueError(f"direction: λ{curve.direction + 1} (index {curve.direction}) does not exist; "
                             f"the model has {num_directions} directions (0-{num_directions - 1})")
        offsets[:, curve.direction] += curve.values(num_frames)
    return offsets.astype(np.float32)
