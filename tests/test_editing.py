"""Lambda editing in the orthonormal motion basis (paper Eq. 8)."""

import pytest
import torch

from float_core.editing import apply_lambda_offsets, as_lambda_offsets, lambda_to_motion, motion_to_lambda


@pytest.fixture
def basis():
    q, _ = torch.linalg.qr(torch.randn(32, 20, generator=torch.Generator().manual_seed(0)))
    return q


def test_lambda_round_trip(basis):
    lam = torch.randn(5, 20)
    assert torch.allclose(motion_to_lambda(lambda_to_motion(lam, basis), basis), lam, atol=1e-5)


def test_offsets_change_only_the_coefficients(basis):
    motion = torch.randn(7, 32)
    delta = torch.zeros(20)
    delta[3] = 1.5
    edited = apply_lambda_offsets(motion, basis, delta)
    change = motion_to_lambda(edited, basis) - motion_to_lambda(motion, basis)
    assert torch.allclose(change, delta.expand(7, 20), atol=1e-5)
    # The component outside span(V) is untouched: (I - V V^T)(w' - w) = 0.
    residual = (edited - motion) - lambda_to_motion(motion_to_lambda(edited - motion, basis), basis)
    assert residual.abs().max() < 1e-5


def test_per_frame_offsets(basis):
    motion = torch.randn(4, 32)
    delta = torch.arange(80, dtype=torch.float32).reshape(4, 20) / 80
    edited = apply_lambda_offsets(motion, basis, delta)
    assert torch.allclose(motion_to_lambda(edited - motion, basis), delta, atol=1e-5)


def test_zero_or_missing_offsets_are_identity(basis):
    assert as_lambda_offsets(None, 20) is None
    assert as_lambda_offsets([0.0] * 20, 20) is None
    motion = torch.randn(3, 32)
    assert apply_lambda_offsets(motion, basis, None) is motion


@pytest.mark.parametrize("bad", [[1.0] * 19, [[1.0] * 20] * 2, [float("nan")] + [0.0] * 19])
def test_bad_offsets_are_rejected(bad):
    with pytest.raises(ValueError, match="edits"):
        as_lambda_offsets(bad, 20, num_frames=3)


def test_motion_of_wrong_size_is_rejected(basis):
    with pytest.raises(ValueError, match="motion"):
        motion_to_lambda(torch.randn(3, 31), basis)
