"""Stage-1 training losses: VGG-19 trunk and loading, Eq. 15-19 terms, discriminators, Stage1Losses."""

from __future__ import annotations

import math
import time
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from float_core.train import losses as L
from float_core.train.discriminators import (
    ComponentDiscriminator,
    MultiScaleDiscriminator,
    StyleGAN2Discriminator,
    minibatch_stddev,
    stylegan_channels,
)
from float_core.train.vgg import VGG19_LAYER_INDEX, VGG19Features, load_vgg19
from float_core.weights import WeightsError

# torchvision vgg19().features: (index, in, out) of the 16 3x3 convs; ReLU after each, max-pools
# at 4, 9, 18, 27, 36.
VGG19_CONVS = [(0, 3, 64), (2, 64, 64), (5, 64, 128), (7, 128, 128),
               (10, 128, 256), (12, 256, 256), (14, 256, 256), (16, 256, 256),
               (19, 256, 512), (21, 512, 512), (23, 512, 512), (25, 512, 512),
               (28, 512, 512), (30, 512, 512), (32, 512, 512), (34, 512, 512)]
VGG19_POOLS = [4, 9, 18, 27, 36]


@pytest.fixture(autouse=True)
def _small_cpu_settings():
    """Keep the file fast on a busy 2-core CPU: oneDNN (mkldnn) convolutions are ~10x slower than
    the native ones for these tiny shapes (per-shape kernel generation, thread spinning), and
    one thread avoids oversubscription. Both are restored afterwards."""
    onednn, threads = torch.backends.mkldnn.enabled, torch.get_num_threads()
    torch.backends.mkldnn.enabled = False
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.backends.mkldnn.enabled = onednn
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def vgg() -> VGG19Features:
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_vgg19("random")


def _smooth_images(batch: int, size: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 3, size // 8, size // 8, generator=g)
    return torch.tanh(F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False))


# =========================================================================== VGG
def test_vgg_layout_matches_torchvision() -> None:
    model = VGG19Features()
    expected = []
    for idx, cin, cout in VGG19_CONVS:
        expected += [(f"features.{idx}.weight", (cout, cin, 3, 3)), (f"features.{idx}.bias", (cout,))]
    assert [(k, tuple(v.shape)) for k, v in model.state_dict().items()] == expected
    assert len(model.features) == 37
    for idx in VGG19_POOLS:
        assert isinstance(model.features[idx], torch.nn.MaxPool2d)
    for idx, _, _ in VGG19_CONVS:
        assert isinstance(model.features[idx + 1], torch.nn.ReLU)
    assert [VGG19_LAYER_INDEX[n] for n in ("relu1_2", "relu2_2", "relu3_4", "relu4_4", "relu5_4")] == [3, 8, 17, 26, 35]


def test_vgg_forward_scales_normalisation_and_early_stop(vgg: VGG19Features) -> None:
    x = _smooth_images(2, 32, seed=1)
    called = []
    hook = vgg.features[27].register_forward_hook(lambda *a: called.append(1))  # pool4: not needed
    try:
        feats = vgg(x)
    finally:
        hook.remove()
    assert not called
    assert [tuple(f.shape) for f in feats] == [(2, 64, 32, 32), (2, 128, 16, 16), (2, 256, 8, 8), (2, 512, 4, 4)]
    # [-1, 1] -> [0, 1] -> ImageNet mean/std, then the torchvision layers.
    mean = torch.tensor([0.485, 0.456, 0.406]).reshape(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).reshape(1, 3, 1, 1)
    ref = vgg.features[:4](((x + 1) / 2 - mean) / std)
    torch.testing.assert_close(feats[0], ref)
    assert not any(p.requires_grad for p in vgg.parameters()) and not vgg.training
    assert "mean" not in vgg.state_dict()


def test_load_vgg19_round_trip_ignores_classifier(tmp_path: Path, vgg: VGG19Features) -> None:
    state = {k: v.clone() for k, v in vgg.state_dict().items()}
    tv = dict(state, **{"classifier.0.weight": torch.zeros(8, 4), "classifier.6.bias": torch.zeros(3)})
    torch.save(tv, tmp_path / "vgg19-tv.pth")
    timm = dict(state, **{"pre_logits.fc1.weight": torch.zeros(4, 2, 1, 1), "head.fc.bias": torch.zeros(3)})
    save_file(timm, str(tmp_path / "model.safetensors"))
    for name in ("vgg19-tv.pth", "model.safetensors"):
        loaded = load_vgg19(tmp_path / name)
        got = loaded.state_dict()
        assert list(got) == list(state)
        for k in state:
            assert torch.equal(got[k], state[k]), k
        assert not any(p.requires_grad for p in loaded.parameters())


def test_load_vgg19_rejects_wrong_shape_and_missing_key(tmp_path: Path, vgg: VGG19Features) -> None:
    state = dict(vgg.state_dict())
    bad = dict(state, **{"features.10.weight": torch.zeros(256, 128, 1, 1)})
    torch.save(bad, tmp_path / "bad.pth")
    with pytest.raises(WeightsError, match=r"'features\.10\.weight' has shape \(256, 128, 1, 1\)"):
        load_vgg19(tmp_path / "bad.pth")
    missing = {k: v for k, v in state.items() if k != "features.21.bias"}
    torch.save(missing, tmp_path / "missing.pth")
    with pytest.raises(WeightsError, match=r"'features\.21\.bias' is missing"):
        load_vgg19(tmp_path / "missing.pth")
    bn = dict(state, **{"features.1.running_mean": torch.zeros(64)})  # a batch-norm VGG
    torch.save(bn, tmp_path / "bn.pth")
    with pytest.raises(WeightsError, match=r"features\.1\.running_mean"):
        load_vgg19(tmp_path / "bn.pth")


def test_load_vgg19_offline_and_missing_file_fail_fast(tmp_path: Path) -> None:
    start = time.perf_counter()
    with pytest.raises(WeightsError, match=r"(?s)no-such-vgg19.*hf download timm/vgg19\.tv_in1k.*--vgg"):
        load_vgg19("float-studio-tests/no-such-vgg19")
    with pytest.raises(WeightsError, match=r"(?s)does not exist.*--vgg"):
        load_vgg19(tmp_path / "vgg19.pth")
    assert time.perf_counter() - start < 15


def test_random_vgg_warns() -> None:
    with pytest.warns(UserWarning, match="meaningless"):
        load_vgg19("random", layers=("relu1_2",))


# =========================================================================== perceptual losses
def test_image_pyramid_is_area_downsampling() -> None:
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).reshape(2, 3, 8, 8)
    pyr = L.image_pyramid(x, 3)
    assert [tuple(p.shape) for p in pyr] == [(2, 3, 8, 8), (2, 3, 4, 4), (2, 3, 2, 2)]
    assert pyr[0] is x
    assert pyr[1][0, 0, 0, 0] == (x[0, 0, 0, 0] + x[0, 0, 0, 1] + x[0, 0, 1, 0] + x[0, 0, 1, 1]) / 4
    assert pyr[2][1, 2, 1, 1] == x[1, 2, 4:, 4:].mean()


def test_perceptual_losses_zero_for_identical_positive_otherwise(vgg: VGG19Features) -> None:
    real = _smooth_images(2, 64, seed=2)  # the shapes of the Stage1Losses tests (shared kernels)
    fake = _smooth_images(2, 64, seed=3)
    mask = L.component_mask([(16, 16, 48, 40)], 2, 64)
    assert L.perceptual_loss(vgg, real, real).item() == 0
    assert L.component_perceptual_loss(vgg, real, real, mask).item() == 0
    fake.requires_grad_(True)
    lp = L.perceptual_loss(vgg, fake, real)
    comp = L.component_perceptual_loss(vgg, fake, real, mask)
    assert lp.item() > 0 and comp.item() > 0
    (grad,) = torch.autograd.grad(lp + comp, fake)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0


def _pooling_extractor(x: torch.Tensor) -> list[torch.Tensor]:
    """Stand-in for VGG whose features at strides 1, 2, 4, 8 only mix pixels inside aligned cells,
    so masked features see nothing from outside an aligned mask (exact invariance)."""
    return [x, F.avg_pool2d(x, 2), F.avg_pool2d(x, 4), F.avg_pool2d(x, 8)]


def test_component_loss_ignores_outside_and_sees_inside_the_mask() -> None:
    real = _smooth_images(2, 64, seed=4)
    fake = _smooth_images(2, 64, seed=5)
    # Left half: aligned with the coarsest cells (level 2 at 16 px, stride 8: 32-px cells).
    mask = L.component_mask([(0, 0, 32, 64)], 2, 64)
    base = L.component_perceptual_loss(_pooling_extractor, fake, real, mask)
    outside = fake.clone()
    outside[..., 32:] += torch.randn_like(outside[..., 32:])
    assert L.component_perceptual_loss(_pooling_extractor, outside, real, mask).item() == base.item()
    inside = fake.clone()
    inside[..., 10:20, 5:15] += 0.5
    assert L.component_perceptual_loss(_pooling_extractor, inside, real, mask).item() != pytest.approx(base.item())
    # ... while the unmasked perceptual loss sees the outside change.
    assert L.perceptual_loss(_pooling_extractor, outside, real).item() > L.perceptual_loss(
        _pooling_extractor, fake, real).item()


def test_resize_mask_keeps_small_components_binary() -> None:
    mask = torch.zeros(1, 1, 16, 16)
    mask[..., 5, 6] = 1  # one pixel: must survive at every feature resolution
    expected = torch.zeros(1, 1, 4, 4)
    expected[..., 1, 1] = 1
    assert torch.equal(L.resize_mask(mask, (4, 4)), expected)
    assert L.resize_mask(mask, (1, 1)).item() == 1


def test_component_loss_is_mean_l1_over_masked_elements() -> None:
    real = torch.zeros(2, 3, 16, 16)
    mask = torch.zeros(2, 1, 16, 16)
    mask[0, :, 2:6, 3:9] = 1  # sample 1: empty mask -> contributes 0, no NaN
    fake = real + 0.25 * mask - 4.0 * (1 - mask)  # large error outside: ignored
    loss = L.component_perceptual_loss(lambda x: [x], fake, real, mask, levels=1)
    assert loss.item() == pytest.approx(0.25 / 2)  # per-sample mean over masked elements, batch mean


# =========================================================================== components
def test_fixed_boxes_cover_typical_components() -> None:
    boxes = L.fixed_component_boxes(512)
    assert set(boxes) == set(L.COMPONENT_NAMES)
    le, re, mo = (boxes[n].tolist() for n in L.COMPONENT_NAMES)
    # Landmark extents measured on the example portrait's 512-px FLOAT crop (dlib 68 points).
    for box, (x0, y0, x1, y1) in ((le, (0.338, 0.375, 0.432, 0.41)), (re, (0.57, 0.389, 0.668, 0.422)),
                                  (mo, (0.363, 0.598, 0.615, 0.691))):
        assert box[0] < x0 * 512 and box[1] < y0 * 512 and box[2] > x1 * 512 and box[3] > y1 * 512
    assert le[2] <= re[0] and le[3] <= mo[1]  # disjoint: left eye | right eye, eyes above mouth
    with pytest.raises(ValueError):
        L.ComponentBoxes(mouth=(0.5, 0.5, 0.4, 0.9))


def test_boxes_from_landmarks() -> None:
    lm = torch.zeros(68, 2)
    lm[:, 0], lm[:, 1] = 32.0, 32.0
    lm[36:42] = torch.tensor([[10.0, 20.0], [12, 19], [14, 19], [16, 20], [14, 21], [12, 21]])
    lm[48:68, 0] = torch.linspace(20, 40, 20)
    lm[48:68, 1] = 50.0
    boxes = L.boxes_from_landmarks(lm, 64, eye_scale=2.0, mouth_scale=1.0, min_size=1.0)
    torch.testing.assert_close(boxes["left_eye"], torch.tensor([13.0 - 6, 20 - 6, 13 + 6, 20 + 6]))
    torch.testing.assert_close(boxes["mouth"], torch.tensor([20.0, 40, 40, 60]))
    batched = L.boxes_from_landmarks(torch.stack([lm, lm + 1]), 64, eye_scale=2.0, min_size=1.0)
    assert batched["right_eye"].shape == (2, 4)
    torch.testing.assert_close(batched["left_eye"][1], boxes["left_eye"] + 1)
    clipped = L.boxes_from_landmarks(lm - 30, 64)  # components near the border are clipped
    assert clipped["left_eye"].min() >= 0


def test_component_mask_rasterises_boxes() -> None:
    per_sample = torch.tensor([[2.0, 3.0, 6.0, 5.0], [0.0, 0.0, 1.0, 1.0]])
    mask = L.component_mask({"a": per_sample, "b": (10, 10, 12, 14)}, 2, 16)
    assert mask.shape == (2, 1, 16, 16) and set(mask.unique().tolist()) == {0.0, 1.0}
    assert mask[0].sum() == 4 * 2 + 2 * 4 and mask[0, 0, 3:5, 2:6].all() and mask[0, 0, 10:14, 10:12].all()
    assert mask[1].sum() == 1 + 8 and mask[1, 0, 0, 0] == 1


def test_crop_components_returns_the_pattern_and_is_differentiable() -> None:
    images = torch.zeros(2, 3, 64, 64)
    colour = torch.tensor([0.2, -0.5, 0.9]).reshape(3, 1, 1)
    images[0, :, 16:24, 8:16] = colour
    images[1, :, 40:48, 30:38] = -colour
    boxes = torch.tensor([[8.0, 16.0, 16.0, 24.0], [30.0, 40.0, 38.0, 48.0]])
    for size in (8, 4):
        crops = L.crop_components(images, boxes, size)
        assert crops.shape == (2, 3, size, size)
        torch.testing.assert_close(crops[0], colour.expand(3, size, size))
        torch.testing.assert_close(crops[1], -colour.expand(3, size, size))
    # Pixel-exact: a box on whole pixels at its own size returns those pixels; mirror flips them.
    ramp = torch.randn(1, 3, 32, 32)
    torch.testing.assert_close(L.crop_components(ramp, (4, 6, 20, 14), (8, 16)), ramp[..., 6:14, 4:20])
    torch.testing.assert_close(L.crop_components(ramp, (4, 6, 20, 14), (8, 16), mirror=True),
                               ramp[..., 6:14, 4:20].flip(-1))
    images.requires_grad_(True)
    L.crop_components(images, boxes, 8).sum().backward()
    assert images.grad[0, :, 16:24, 8:16].abs().min() > 0
    assert images.grad[0].abs().sum() == images.grad[0, :, 16:24, 8:16].abs().sum()


def test_component_rois_layout() -> None:
    images = _smooth_images(3, 64, seed=6)
    boxes = L.fixed_component_boxes(64)
    eyes, mouths = L.component_rois(images, boxes, 8, 16)
    assert eyes.shape == (6, 3, 8, 8) and mouths.shape == (3, 3, 16, 16)
    torch.testing.assert_close(eyes[3:], L.crop_components(images, boxes["right_eye"], 8, mirror=True))


# =========================================================================== style loss
def test_gram_matrix_hand_computed() -> None:
    f = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).reshape(1, 2, 1, 2)
    expected = torch.tensor([[[5.0, 11.0], [11.0, 25.0]]]) / (2 * 1 * 2)
    torch.testing.assert_close(L.gram_matrix(f), expected)
    assert L.gram_matrix(torch.randn(3, 5, 4, 6)).shape == (3, 5, 5)


def test_feature_style_loss() -> None:
    torch.manual_seed(0)
    real = [torch.randn(2, 4, 8, 8), torch.randn(2, 8, 4, 4)]
    assert L.feature_style_loss(real, real).item() == 0
    fake = [r + 0.3 * torch.randn_like(r) for r in real]
    for t in fake + real:
        t.requires_grad_(True)
    loss = L.feature_style_loss(fake, real)
    manual = sum((L.gram_matrix(f) - L.gram_matrix(r)).abs().mean() for f, r in zip(fake, real))
    assert loss.item() > 0 and loss.item() == pytest.approx(manual.item(), rel=1e-6)
    loss.backward()
    assert fake[0].grad is not None and real[0].grad is None


# =========================================================================== GAN losses
def _softplus(v: float) -> float:
    return math.log1p(math.exp(v))


def test_gan_losses_analytic() -> None:
    logits = torch.tensor([0.0, 2.0, -1.0])
    g = (_softplus(0.0) + _softplus(-2.0) + _softplus(1.0)) / 3
    assert L.generator_nonsaturating_loss(logits).item() == pytest.approx(g)
    assert L.generator_nonsaturating_loss([logits, torch.tensor([3.0])]).item() == pytest.approx(g + _softplus(-3.0))
    d = L.discriminator_loss(torch.tensor([3.0, -0.5]), torch.tensor([-1.0]))
    assert d.item() == pytest.approx((_softplus(-3.0) + _softplus(0.5)) / 2 + _softplus(-1.0))
    # -log sigmoid(l) is the non-saturating loss -log D(fake) of Eq. 17.
    assert L.generator_nonsaturating_loss(torch.tensor([0.7])).item() == pytest.approx(
        -math.log(1 / (1 + math.exp(-0.7))))
    with pytest.raises(ValueError):
        L.discriminator_loss([logits], [logits, logits])


def test_r1_penalty_of_a_linear_discriminator() -> None:
    a = torch.randn(1, 3, 4, 4)
    x = torch.randn(5, 3, 4, 4, requires_grad=True)
    logits = (x * a).sum(dim=(1, 2, 3))
    assert L.r1_penalty(logits, x).item() == pytest.approx(a.pow(2).sum().item(), rel=1e-5)


# =========================================================================== discriminators
def test_minibatch_stddev_groups() -> None:
    x = torch.randn(6, 4, 2, 2)
    out = minibatch_stddev(x, group_size=4)  # 6 is not divisible by 4: groups of 3
    assert out.shape == (6, 5, 2, 2)
    groups = x.reshape(3, 2, 4, 2, 2)  # sample i belongs to group i % 2
    expected = torch.sqrt(groups.var(dim=0, unbiased=False) + 1e-8).mean(dim=(1, 2, 3))
    torch.testing.assert_close(out[:, 4, 0, 0], expected.repeat(3))
    assert torch.isfinite(minibatch_stddev(torch.randn(5, 4, 2, 2))).all()  # prime batch: groups of 1


def test_stylegan2_discriminators_shapes_and_widths() -> None:
    torch.manual_seed(0)
    disc = StyleGAN2Discriminator(64, channel_base=512, max_channels=32)
    x = torch.randn(3, 3, 64, 64)
    assert disc(x).shape == (3, 1)
    assert [m.weight.shape[0] for m in (disc.convs[0][0], disc.convs[-1].conv2[1])] == [8, 32]
    ms = MultiScaleDiscriminator(64, 2, channel_base=512, max_channels=32)
    logits = ms(x)
    assert len(logits) == 2 and all(t.shape == (3, 1) for t in logits)
    assert [d.size for d in ms.discs] == [64, 32]
    official = stylegan_channels()  # StyleGAN2 multiplier 1 (LIA): 32 channels at 512 ... 512 at <= 32
    assert [official(r) for r in (512, 256, 128, 64, 32, 4)] == [32, 64, 128, 256, 512, 512]
    with pytest.raises(ValueError):
        StyleGAN2Discriminator(48)
    with pytest.raises(ValueError):
        disc(torch.randn(1, 3, 32, 32))


@pytest.mark.parametrize("size", [8, 16, 32, 64, 128])
def test_component_discriminator_sizes(size: int) -> None:
    torch.manual_seed(0)
    disc = ComponentDiscriminator(size, (4, 8, 8))
    logits, feats = disc(torch.randn(2, 3, size, size))
    assert logits.shape == (2, 1, size // 4, size // 4)
    assert [tuple(f.shape) for f in feats] == [(2, 8, size // 2, size // 2), (2, 8, size // 4, size // 4)]


def test_component_discriminator_rejects_bad_sizes() -> None:
    with pytest.raises(ValueError):
        ComponentDiscriminator(6, (4, 8, 8))
    with pytest.raises(ValueError):
        ComponentDiscriminator(16, (4,))


def test_discriminator_training_lowers_its_loss() -> None:
    torch.manual_seed(0)
    disc = StyleGAN2Discriminator(8, channel_base=32, max_channels=8)
    opt = torch.optim.Adam(disc.parameters(), lr=1e-2, betas=(0.0, 0.99))
    real = _smooth_images(8, 16, seed=7)[..., ::2, ::2]  # smooth "faces" vs uniform noise
    fake = torch.rand(8, 3, 8, 8) * 2 - 1
    losses = []
    for _ in range(20):
        loss = L.discriminator_loss(disc(real), disc(fake))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[0] == pytest.approx(2 * math.log(2), abs=0.2)  # an untrained D is near chance
    assert losses[-1] < 0.6 * losses[0]


# =========================================================================== Stage1Losses
@pytest.fixture(scope="module")
def stage1(vgg: VGG19Features) -> L.Stage1Losses:
    torch.manual_seed(0)
    return L.Stage1Losses(vgg, config=L.Stage1LossConfig.tiny(r1_gamma=10.0))


def test_stage1_generator_step(stage1: L.Stage1Losses) -> None:
    real = _smooth_images(2, 64, seed=8)
    fake = _smooth_images(2, 64, seed=9).requires_grad_(True)
    terms = stage1.generator_step(fake, real)
    names = list(L.AutoEncoderLossWeights().as_dict())
    assert set(terms) == set(names) | {"total"}
    assert all(torch.isfinite(t) and t.ndim == 0 for t in terms.values())
    assert all(terms[n].item() > 0 for n in names)
    w = stage1.config.weights
    assert w == L.AutoEncoderLossWeights(1, 10, 100, 1, 1, 100, 1, 100)
    weighted = sum(getattr(w, n) * terms[n] for n in names)
    assert terms["total"].item() == pytest.approx(weighted.item(), rel=1e-6)
    terms["total"].backward()
    assert fake.grad is not None and torch.isfinite(fake.grad).all() and fake.grad.abs().sum() > 0
    assert all(p.grad is None for p in stage1.vgg.parameters())
    assert all(p.grad is None for p in stage1.discriminator_parameters())
    assert all(p.requires_grad for p in stage1.discriminator_parameters())  # restored after the step


def test_stage1_discriminator_step(stage1: L.Stage1Losses) -> None:
    real = _smooth_images(2, 64, seed=10)
    fake = _smooth_images(2, 64, seed=11).requires_grad_(True)
    terms = stage1.discriminator_step(fake, real)
    assert set(terms) == {"full", "eye", "lip"}
    total = sum(terms.values())
    total.backward()
    assert fake.grad is None
    grads = [p.grad for p in stage1.discriminator_parameters()]
    assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)
    assert all(p.grad is None for p in stage1.vgg.parameters())
    n_disc = sum(p.numel() for p in stage1.discriminators.parameters())
    assert sum(p.numel() for p in stage1.discriminator_parameters()) == n_disc
    stage1.discriminators.zero_grad(set_to_none=True)
    with_r1 = stage1.discriminator_step(fake, real, r1=True)
    assert set(with_r1) == {"full", "eye", "lip", "r1"} and with_r1["r1"].item() > 0
    sum(with_r1.values()).backward()
    stage1.discriminators.zero_grad(set_to_none=True)
    state = {k: v.clone() for k, v in stage1.discriminators_state_dict().items()}
    assert state and not any(k.startswith("vgg") or "features." in k for k in state)
    stage1.load_discriminators_state_dict(state)
    stage1.train()
    assert not stage1.vgg.training and stage1.discriminators.training


def test_stage1_per_sample_boxes_mask_and_switched_off_terms(vgg: VGG19Features) -> None:
    torch.manual_seed(0)
    weights = L.AutoEncoderLossWeights(full_adv=0.0, lip_adv=0.0, lip_fsm=0.0)
    losses = L.Stage1Losses(vgg, 64, weights=weights)  # the trainer's call
    real = _smooth_images(2, 64, seed=12)
    fake = _smooth_images(2, 64, seed=13)
    boxes = {"left_eye": torch.tensor([[16.0, 20, 28, 32], [18, 20, 30, 32]]),
             "right_eye": (36, 20, 48, 32), "mouth": torch.tensor([[20.0, 38, 44, 50], [22, 38, 46, 50]])}
    assert losses.config == L.Stage1LossConfig.tiny(weights=weights)
    terms = losses.generator_step(fake, real, boxes=boxes)
    assert terms["full_adv"].item() == 0 and terms["lip_adv"].item() == 0 and terms["lip_fsm"].item() == 0
    assert terms["eye_adv"].item() > 0 and terms["comp_lp"].item() > 0
    # An explicit mask replaces the box mask: outside it nothing counts.
    empty = torch.zeros(2, 1, 64, 64)
    assert losses.generator_step(fake, real, boxes=boxes, mask=empty)["comp_lp"].item() == 0
    assert set(losses.discriminator_step(fake, real, boxes=boxes)) == {"eye"}
    with pytest.raises(ValueError):
        losses.generator_step(fake[:, :, :32, :32], real[:, :, :32, :32])


def test_stack_and_unstack_component_boxes_round_trip() -> None:
    boxes = {"left_eye": torch.tensor([[1.0, 2, 3, 4], [5, 6, 7, 8]]), "right_eye": (9, 10, 11, 12),
             "mouth": torch.tensor([[13.0, 14, 15, 16], [17, 18, 19, 20]])}
    stacked = L.stack_component_boxes(boxes)
    assert stacked.dtype == torch.float32 and stacked.shape == (2, 3, 4)
    assert stacked[1].tolist() == [[5, 6, 7, 8], [9, 10, 11, 12], [17, 18, 19, 20]]  # COMPONENT_NAMES order
    back = L.unstack_component_boxes(stacked)
    assert list(back) == list(L.COMPONENT_NAMES)
    torch.testing.assert_close(back["left_eye"], boxes["left_eye"])
    torch.testing.assert_close(back["right_eye"], torch.tensor([[9.0, 10, 11, 12]] * 2))
    torch.testing.assert_close(L.stack_component_boxes(back), stacked)
    single = L.stack_component_boxes(L.fixed_component_boxes(64))  # one item's (3, 4)
    assert single.shape == (3, 4) and L.unstack_component_boxes(single)["mouth"].tolist() == [
        pytest.approx(v) for v in (0.32 * 64, 0.55 * 64, 0.68 * 64, 0.79 * 64)]
    with pytest.raises(ValueError, match="lack"):
        L.stack_component_boxes({"left_eye": (0, 0, 1, 1)})
    with pytest.raises(ValueError, match=r"\(3, 4\)"):
        L.unstack_component_boxes(torch.zeros(2, 2, 4))


def test_stage1_losses_use_landmark_boxes(stage1: L.Stage1Losses) -> None:
    real = _smooth_images(2, 64, seed=14)
    fake = _smooth_images(2, 64, seed=15)
    lm = torch.full((2, 68, 2), 32.0)  # components low on the left, away from the fixed boxes
    lm[:, 36:42] = torch.tensor([[6.0, 40], [8, 39], [10, 39], [12, 40], [10, 41], [8, 41]])
    lm[:, 42:48] = lm[:, 36:42] + torch.tensor([10.0, 0])
    lm[:, 48:68, 0], lm[:, 48:68, 1] = torch.linspace(4, 20, 20), 56.0
    lm[1] += 2.0
    batch_boxes = L.stack_component_boxes(L.boxes_from_landmarks(lm, 64))  # what a batch carries
    assert batch_boxes.shape == (2, 3, 4)
    fixed = stage1.generator_step(fake, real)
    with_lm = stage1.generator_step(fake, real, boxes=batch_boxes)
    as_dict = stage1.generator_step(fake, real, boxes=L.unstack_component_boxes(batch_boxes))
    assert with_lm["comp_lp"].item() != pytest.approx(fixed["comp_lp"].item(), rel=1e-3)
    assert with_lm["eye_fsm"].item() != pytest.approx(fixed["eye_fsm"].item(), rel=1e-3)
    assert with_lm["comp_lp"].item() == pytest.approx(as_dict["comp_lp"].item(), rel=1e-6)
    mask = L.component_mask(L.unstack_component_boxes(batch_boxes), 2, 64)
    explicit = stage1.generator_step(fake, real, mask=mask)  # the landmark mask, by hand
    assert with_lm["comp_lp"].item() == pytest.approx(explicit["comp_lp"].item(), rel=1e-6)
    d_fixed = stage1.discriminator_step(fake, real)
    d_lm = stage1.discriminator_step(fake, real, boxes=batch_boxes)
    assert d_lm["lip"].item() != pytest.approx(d_fixed["lip"].item(), rel=1e-4)
    assert d_lm["full"].item() == pytest.approx(d_fixed["full"].item(), rel=1e-6)
