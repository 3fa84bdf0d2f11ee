"""Lambda editing in the orthonormal motion basis (paper Eq. 8) and time-varying edit curves."""

import numpy as np
import pytest
import torch

from float_core.editing import (CURVE_KINDS, EditCurve, apply_lambda_offsets, as_lambda_offsets, compile_edits,
                                lambda_to_motion, motion_to_lambda)


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


# --------------------------------------------------------------------------- time-varying edits
def test_ramp_changes_lambda_linearly_over_its_frames(basis):
    """Render-free: the lambda of the edited motion rises linearly from 0 at `start` to
    `value` at `end - 1`, stays there, and is unchanged before the ramp and in other directions."""
    motion = torch.randn(20, 32, generator=torch.Generator().manual_seed(3))
    offsets = compile_edits([EditCurve(direction=4, kind="ramp", value=2.0, start=5, end=15)], 20, 20)
    change = motion_to_lambda(apply_lambda_offsets(motion, basis, torch.from_numpy(offsets)), basis) \
        - motion_to_lambda(motion, basis)
    expected = torch.zeros(20)
    expected[5:15] = torch.linspace(0.0, 2.0, 10)
    expected[15:] = 2.0
    assert torch.allclose(change[:, 4], expected, atol=1e-5)
    others = torch.cat([change[:, :4], change[:, 5:]], dim=1)
    assert others.abs().max() < 1e-5


def test_curve_kinds_known_values():
    assert CURVE_KINDS == ("constant", "ramp", "pulse", "keyframes")
    curves = [
        EditCurve(0, "constant", 0.5),                                    # whole clip
        EditCurve(1, "constant", -1.0, start=2, end=4),
        EditCurve(2, "pulse", 1.0, start=1, end=4),
        EditCurve(3, "keyframes", keyframes=((2, 1.0), (6, -1.0))),
        EditCurve(1, "pulse", 3.0, start=3, end=5),                       # adds to the constant
    ]
    out = compile_edits(curves, 8, 5)
    assert out.shape == (8, 5) and out.dtype == np.float32
    np.testing.assert_allclose(out[:, 0], 0.5)
    np.testing.assert_allclose(out[:, 1], [0, 0, -1, 2, 3, 0, 0, 0])
    np.testing.assert_allclose(out[:, 2], [0, 1, 1, 1, 0, 0, 0, 0])
    np.testing.assert_allclose(out[:, 3], [1, 1, 1, 0.5, 0, -0.5, -1, -1])
    np.testing.assert_allclose(out[:, 4], 0)


def test_short_and_overlong_ramps():
    np.testing.assert_allclose(compile_edits([EditCurve(0, "ramp", 2.0, start=3, end=4)], 6, 1)[:, 0],
                               [0, 0, 0, 2, 2, 2])  # one frame: a step
    np.testing.assert_allclose(compile_edits([EditCurve(0, "ramp", 4.0, start=1, end=10)], 5, 1)[:, 0],
                               [0, 0, 0.5, 1.0, 1.5])  # cut at the clip's end, same slope


def test_pulse_with_soft_edges():
    v = compile_edits([EditCurve(0, "pulse", 2.0, start=10, end=30, edge=4)], 40, 1)[:, 0]
    assert (v[:10] == 0).all() and (v[30:] == 0).all()
    np.testing.assert_allclose(v[14:26], 2.0)  # full height between the edges
    rise = v[10:14]
    assert (np.diff(rise) > 0).all() and 0 < rise[0] < rise[-1] < 2.0
    np.testing.assert_allclose(v[10:30], v[10:30][::-1], atol=1e-6)  # symmetric rise and fall


@pytest.mark.parametrize("kwargs,message", [
    (dict(direction=0, kind="wave"), "kind: expected one of"),
    (dict(direction=-1), "direction"),
    (dict(direction=0, start=5, end=5), "end: must be after start"),
    (dict(direction=0, value=float("inf")), "value: must be a finite"),
    (dict(direction=0, kind="ramp", edge=2), "edge: only a pulse"),
    (dict(direction=0, kind="keyframes"), "at least one"),
    (dict(direction=0, kind="keyframes", keyframes=((3, 1.0), (3, 2.0))), "strictly increasing"),
    (dict(direction=0, kind="constant", keyframes=((3, 1.0),)), "only a 'keyframes' curve"),
])
def test_bad_curves_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        EditCurve(**kwargs)


def test_curves_that_do_not_fit_the_clip_are_rejected():
    with pytest.raises(ValueError, match="λ21 .* does not exist"):
        compile_edits([EditCurve(20, value=1.0)], 10, 20)
    with pytest.raises(ValueError, match="starts at frame 12, but the clip has only 10 frames"):
        compile_edits([EditCurve(0, "pulse", 1.0, start=12, end=15)], 10, 20)
    with pytest.raises(TypeError, match="EditCurve"):
        compile_edits([{"direction": 0}], 10, 20)
    assert compile_edits([], 3, 20).shape == (3, 20)
