"""Motion editing in the orthonormal motion basis (paper Sec. 4.1, Eq. 8).

A motion latent is w_{r->D} = sum_m lambda_m v_m with an orthonormal basis V = {v_m}
(the QR basis of ``dec.direction.weight``, shape (d, M)). Because V is orthonormal the
coefficients of any latent w are lambda = V^T w, and an edit that adds ``delta`` to the
coefficients is w' = w + V delta: the component of w outside span(V) is left unchanged,
so an edit with delta = 0 is exactly the identity.
"""

from __future__ import annotations

from typing import Sequence

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
