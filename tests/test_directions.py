"""Named motion directions (float_core.directions): attribution, grouping, presets."""

from __future__ import annotations

import dataclasses
import pickle

import numpy as np
import pytest
import torch

from float_core.directions import (GROUPS, PRESETS, REGIONS, DirectionInfo, attribute_change, component_boxes,
                                   group_of, label_directions, preset_offsets, region_areas)
from float_core.editing import apply_lambda_offsets, motion_to_lambda
from float_core.models.decoder_inference import InferenceDecoder
from float_core.models.stylegan import EqualLinear
from float_core.pipeline import FloatPipeline

SIZE = 64


def smooth_image(size: int = SIZE, shift: float = 0.0) -> torch.Tensor:
    """(3, size, size) smooth pattern of Gaussian blobs, content shifted right by ``shift`` pixels."""
    ys, xs = torch.meshgrid(torch.arange(size, dtype=torch.float64), torch.arange(size, dtype=torch.float64),
                            indexing="ij")
    img = torch.zeros(3, size, size, dtype=torch.float64)
    rng = np.random.default_rng(0)
    for _ in range(12):
        cx, cy = rng.uniform(0, size, 2)
        r = rng.uniform(size / 12, size / 5)
        amp = torch.as_tensor(rng.uniform(-1, 1, 3))[:, None, None]
        img += amp * torch.exp(-((xs - shift - cx) ** 2 + (ys - cy) ** 2) / (2 * r * r))
    return img.float()


def warp(img: torch.Tensor, ux: torch.Tensor) -> torch.Tensor:
    """``img`` (3, H, W) with its content moved right by ``ux`` (H, W) pixels (bicubic)."""
    h, w = img.shape[1:]
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
    grid = torch.stack([xs - ux * 2 / (w - 1), ys], dim=-1)[None]
    return torch.nn.functional.grid_sample(img[None], grid, mode="bicubic", padding_mode="border",
                                           align_corners=True)[0]


def box_mask(box, size: int = SIZE) -> torch.Tensor:
    c = torch.arange(size) + 0.5
    x0, y0, x1, y1 = box
    return (((c >= y0) & (c < y1))[:, None] & ((c >= x0) & (c < x1))[None, :]).float()


BOXES = component_boxes(SIZE)


# --------------------------------------------------------------------------- attribution
def test_attribution_of_synthetic_changes():
    base = smooth_image()
    rng = torch.Generator().manual_seed(1)
    mouth_only = torch.randn(3, SIZE, SIZE, generator=rng) * box_mask(BOXES["mouth"])
    eyes_only = torch.randn(3, SIZE, SIZE, generator=rng) * (box_mask(BOXES["left_eye"]) + box_mask(BOXES["right_eye"]))
    translation = (smooth_image(shift=0.05) - smooth_image(shift=-0.05)) / 0.1  # d/dshift: pure global motion
    spread = torch.randn(3, SIZE, SIZE, generator=rng)  # unstructured change everywhere
    # A yaw-like turn: horizontal displacement largest in the middle, fading to the sides.
    xs = torch.linspace(-1, 1, SIZE)[None, :].expand(SIZE, SIZE)
    turn = 2 * torch.cos(torch.pi * xs / 2)
    yaw = (warp(base, 0.05 * turn) - warp(base, -0.05 * turn)) / 0.1
    # A local warp: only the content inside the mouth box moves.
    lips = 3 * box_mask(BOXES["mouth"])
    mouth_warp = (warp(base, 0.05 * lips) - warp(base, -0.05 * lips)) / 0.1
    cases = torch.stack([mouth_only, eyes_only, translation, spread, yaw, mouth_warp])
    shares = attribute_change(cases, base, BOXES, SIZE)
    assert shares.shape == (6, len(REGIONS))
    assert torch.allclose(shares.sum(dim=1), torch.ones(6, dtype=shares.dtype), atol=1e-9)
    mouth, eyes, head, other = (REGIONS.index(r) for r in ("mouth", "eyes", "head", "other"))
    assert shares[0, mouth] > 0.95
    assert shares[1, eyes] > 0.95
    assert shares[2, head] > 0.99
    assert shares[3, head] < 0.05 and shares[3, other] > 0.75
    assert shares[4, head] > 0.85  # measured 0.92: the affine model is head pose to first order
    assert shares[5, mouth] > 0.6  # measured 0.70 (0.17 head: a local warp leaks a little)
    areas = region_areas(BOXES, SIZE, SIZE)
    groups = [group_of(dict(zip(REGIONS, row.tolist())), areas, 1.0) for row in shares]
    assert groups == ["mouth", "eyes", "head", "other", "head", "mouth"]


def test_grouping_rule():
    areas = {"mouth": 0.1, "eyes": 0.1, "other": 0.8}
    assert group_of({"mouth": 0.3, "eyes": 0.0, "head": 0.6, "other": 0.1}, areas, 1.0) == "head"
    assert group_of({"mouth": 0.3, "eyes": 0.0, "head": 0.4, "other": 0.3}, areas, 1.0) == "mouth"  # 0.5 / 0.1
    assert group_of({"mouth": 0.1, "eyes": 0.1, "head": 0.4, "other": 0.4}, areas, 1.0) == "head"  # 1.67x: spread
    assert group_of({"mouth": 0.1, "eyes": 0.1, "head": 0.3, "other": 0.5}, areas, 1.0) == "other"
    assert group_of({"mouth": 1.0, "eyes": 0.0, "head": 0.0, "other": 0.0}, areas, 0.0) == "other"  # inert


def test_inert_direction_is_other():
    shares = attribute_change(torch.zeros(1, 3, SIZE, SIZE), smooth_image(), BOXES, SIZE)
    assert shares[0].tolist() == [0.0, 0.0, 0.0, 1.0]


def test_labels_number_each_group():
    assert label_directions(["head", "mouth", "head", "other"]) == ["Head 1", "Mouth 1", "Head 2", "Other 1"]


def test_landmark_boxes_are_used():
    lm = np.zeros((68, 2), np.float32)
    lm[36:42] = (10, 20)
    lm[42:48] = (50, 20)
    lm[48:68] = (30, 8)  # a "mouth" near the top: clearly not the fixed box
    boxes = component_boxes(SIZE, lm)
    assert boxes["mouth"][1] < 8 < boxes["mouth"][3]
    assert boxes != BOXES


# --------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def pipe():
    return FloatPipeline.tiny_random(device="cpu")


@pytest.fixture(scope="module")
def source(pipe):
    image = np.random.default_rng(0).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    return pipe.prepare_image(image, crop=False)


def test_random_model_description(pipe, source):
    info = pipe.describe_directions(source)
    assert [d.index for d in info] == list(range(pipe.config.motion_dim))
    for d in info:
        assert d.group in GROUPS
        assert set(d.shares) == set(REGIONS)
        assert sum(d.shares.values()) == pytest.approx(1.0, abs=1e-9)
        assert d.magnitude > 0
        assert d.label.startswith(d.group.capitalize())
    assert pickle.loads(pickle.dumps(info)) == info  # plain data: app state can copy it
    # Pairs split differently: the same numbers up to float32 rounding. Measured relative
    # differences: magnitudes <= 3.6e-6, shares <= 2.1e-6, on the AVX2 and the unvectorised
    # (ATEN_CPU_CAPABILITY=default) kernels alike; the bounds below leave ~30x of margin.
    again = pipe.describe_directions(source, batch_size=3)
    for a, b in zip(info, again):
        assert a.group == b.group and a.magnitude == pytest.approx(b.magnitude, rel=1e-4)
        assert dict(a.shares) == pytest.approx(dict(b.shares), abs=1e-4)


def engineered_pipeline(active: int) -> FloatPipeline:
    """The tiny model with its decoder arranged so that only direction ``active`` has any effect
    and the flows are the identity warp: every modulation ignores the other 19 directions
    (W <- W (I - V_o V_o^T)) and the flow heads' x/y outputs are zero."""
    p = FloatPipeline.tiny_random(device="cpu")
    dec = p.model.motion_autoencoder.dec
    others = torch.cat([p.basis[:, :active], p.basis[:, active + 1:]], dim=1)
    keep = torch.eye(p.basis.shape[0]) - others @ others.T
    with torch.no_grad():
        for module in dec.modules():
            if isinstance(module, EqualLinear) and module.weight.shape[1] == p.config.style_dim:
                module.weight.copy_(module.weight @ keep)
        for flow in dec.to_flows:
            flow.conv.weight[:, :2].zero_()
            flow.bias[:, :2].zero_()
    p.decoder = InferenceDecoder(dec)
    return p


@pytest.mark.parametrize("region,active", [("mouth", 3), ("eyes", 11)])
def test_engineered_decoder_direction_is_grouped_by_region(source, region, active):
    """The real (fast) decoder, with weights arranged so that direction ``active`` changes only
    one region: the source pyramid is zero except inside that region's box at full resolution,
    so with identity flows the image can change only there (1x1 heads, no upsampling of it)."""
    p = engineered_pipeline(active)
    names = ["mouth"] if region == "mouth" else ["left_eye", "right_eye"]
    mask = sum(box_mask(BOXES[n]) for n in names)[None, None]
    feats = [torch.zeros_like(f) for f in source.features[:-1]] + [source.features[-1] * mask]
    src = dataclasses.replace(source, features=tuple(feats))
    info = p.describe_directions(src)
    assert info[active].group == region
    assert info[active].shares[region] > 0.9
    assert info[active].magnitude > 1e-4
    for d in info[:active] + info[active + 1:]:
        assert d.magnitude < 1e-5 and d.group == "other"  # the other directions do nothing here


class ShiftingDecoder:
    """A constructed decoder: lambda_head translates a smooth image, lambda_mouth brightens the
    mouth box, everything else is ignored (stands in for pipe.decoder). Both act relative to
    the source's lambda, so the unedited frame is the smooth image itself."""

    def __init__(self, pipe, source, head: int, mouth: int):
        self.basis, self.identity, self.head, self.mouth = pipe.basis, source.identity_latent, head, mouth
        self.source_lambda = source.source_lambda

    def __call__(self, latents, feats, keep=None):
        lam = (latents - self.identity) @ self.basis - self.source_lambda
        frames = [smooth_image(shift=4 * float(l[self.head])) + 0.5 * float(l[self.mouth])
                  * box_mask(BOXES["mouth"]) for l in lam]
        return torch.stack(frames)


def test_constructed_decoder_head_and_mouth(pipe, source, monkeypatch):
    monkeypatch.setattr(pipe, "decoder", ShiftingDecoder(pipe, source, head=5, mouth=2))
    info = pipe.describe_directions(source)
    assert info[5].group == "head" and info[5].shares["head"] > 0.95 and info[5].label == "Head 1"
    assert info[2].group == "mouth" and info[2].shares["mouth"] > 0.8 and info[2].label == "Mouth 1"
    assert all(d.group == "other" for d in info if d.index not in (2, 5))


# --------------------------------------------------------------------------- presets
def fake_directions(groups):
    return [DirectionInfo(i, g, {r: float(r == g) for r in REGIONS}, g, 1.0)
            for i, g in enumerate(groups)]


GROUP_CYCLE = ["mouth", "eyes", "head", "other", "head"] * 4


@pytest.fixture
def motion_case():
    gen = torch.Generator().manual_seed(0)
    basis, _ = torch.linalg.qr(torch.randn(32, 20, generator=gen))
    motion = torch.randn(9, 32, generator=gen)
    source_lambda = torch.randn(20, generator=gen)
    return basis, motion, source_lambda


def edited_lambdas(name, basis, motion, source_lambda, **kw):
    lam = motion_to_lambda(motion, basis)
    offsets = preset_offsets(name, lam, source_lambda, fake_directions(GROUP_CYCLE), **kw)
    assert offsets.shape == (9, 20) and offsets.dtype == np.float32
    return lam, motion_to_lambda(apply_lambda_offsets(motion, basis, torch.from_numpy(offsets)), basis)


def columns(group):
    return [i for i, g in enumerate(GROUP_CYCLE) if g == group]


def test_lips_only_holds_head_and_eyes_at_the_source(motion_case):
    basis, motion, src = motion_case
    lam, edited = edited_lambdas("lips only", basis, motion, src)
    held = columns("head") + columns("eyes")
    assert torch.allclose(edited[:, held], src[held].expand(9, -1), atol=1e-5)
    free = columns("mouth") + columns("other")
    assert torch.allclose(edited[:, free], lam[:, free], atol=1e-5)


@pytest.mark.parametrize("name,groups,factor", [("calmer head", ["head"], 0.5),
                                                ("More Expressive", ["mouth", "eyes"], 1.5),
                                                ("calmer head", ["head"], 0.2)])
def test_scaling_presets(motion_case, name, groups, factor):
    basis, motion, src = motion_case
    kw = {} if factor in (0.5, 1.5) else {"strength": factor}
    lam, edited = edited_lambdas(name, basis, motion, src, **kw)
    cols = [c for g in groups for c in columns(g)]
    assert torch.allclose(edited[:, cols], src[cols] + factor * (lam[:, cols] - src[cols]), atol=1e-5)
    rest = [c for c in range(20) if c not in cols]
    assert torch.allclose(edited[:, rest], lam[:, rest], atol=1e-5)


def test_preset_errors():
    lam, src, dirs = np.zeros((4, 20)), np.zeros(20), fake_directions(GROUP_CYCLE)
    assert PRESETS == ("lips only", "calmer head", "more expressive")
    with pytest.raises(ValueError, match="preset: expected one of"):
        preset_offsets("no head", lam, src, dirs)
    with pytest.raises(ValueError, match="strength"):
        preset_offsets("calmer head", lam, src, dirs, strength=-1)
    with pytest.raises(ValueError, match="directions: expected 20"):
        preset_offsets("calmer head", lam, src, dirs[:5])
    with pytest.raises(ValueError, match="lambdas must be"):
        preset_offsets("calmer head", lam[0], src, dirs)


def test_on_a_simulated_accelerator(pipe, source):
    """describe_directions and preset_offsets take device tensors and move data only explicitly."""
    from float_core.testing import SimulatedAccelerator

    expected = pipe.describe_directions(source)
    with SimulatedAccelerator() as acc:
        dev_pipe = acc.pipeline(pipe)
        image = np.random.default_rng(0).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)  # as `source`
        dev_source = dev_pipe.prepare_image(image, crop=False)
        info = dev_pipe.describe_directions(dev_source)
        lam = acc.tensor(torch.randn(5, 20))
        offsets = preset_offsets("lips only", lam, dev_source.source_lambda, info)
    assert [d.group for d in info] == [d.group for d in expected]
    for a, b in zip(info, expected):
        assert dict(a.shares) == pytest.approx(dict(b.shares), abs=1e-5)
    assert isinstance(offsets, np.ndarray) and offsets.shape == (5, 20)


def test_lips_only_on_the_tiny_pipeline(pipe, source):
    """With the pipeline's own basis and description: the edited motion's head and eye
    coefficients equal the source's in every frame."""
    info = pipe.describe_directions(source)
    info = [dataclasses.replace(d, group="head") if d.index in (0, 1) else d for d in info]  # both kinds present
    motion = source.source_motion + 0.5 * torch.randn(12, pipe.config.style_dim, generator=torch.Generator().manual_seed(2))
    lam = pipe.motion_lambda(motion)
    offsets = preset_offsets("lips only", lam, source.source_lambda, info)
    edited = pipe.motion_lambda(apply_lambda_offsets(motion, pipe.basis, torch.from_numpy(offsets)))
    held = [d.index for d in info if d.group in ("head", "eyes")]
    free = [d.index for d in info if d.group not in ("head", "eyes")]
    assert held and free
    assert torch.allclose(edited[:, held], source.source_lambda[held].expand(12, -1), atol=1e-5)
    assert torch.allclose(edited[:, free], lam[:, free], atol=1e-5)
