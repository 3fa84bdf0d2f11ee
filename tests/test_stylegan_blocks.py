"""StyleGAN2 building blocks against the reference fixtures (paper Sec. 4.1, A.1)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from helpers import Fixture, assert_close
from torch import nn

from float_core.models import stylegan as sg


def _load(name: str, module: nn.Module) -> tuple[Fixture, nn.Module]:
    """Load a fixture's full state_dict strictly and check the key names and their order."""
    fx = Fixture(name)
    assert list(module.state_dict()) == fx.meta["state_dict_keys"]
    module.load_state_dict(fx.state_dict(), strict=True)
    return fx, module.eval()


# (fixture, constructor, call(fixture, module) -> output compared with out.y)
SINGLE_OUTPUT: list[tuple[str, Callable[[], nn.Module], Callable[[Fixture, nn.Module], torch.Tensor]]] = [
    ("equal_linear", lambda: sg.EqualLinear(24, 16), lambda f, m: m(f.input("x"))),
    ("equal_linear_act", lambda: sg.EqualLinear(24, 16, activation=True), lambda f, m: m(f.input("x"))),
    ("equal_conv2d_k3", lambda: sg.EqualConv2d(4, 6, 3, padding=1), lambda f, m: m(f.input("x"))),
    ("equal_conv2d_k4_nobias", lambda: sg.EqualConv2d(6, 5, 4, bias=False), lambda f, m: m(f.input("x"))),
    ("conv_layer_k3", lambda: sg.ConvLayer(4, 6, 3), lambda f, m: m(f.input("x"))),
    ("conv_layer_k1", lambda: sg.ConvLayer(3, 6, 1), lambda f, m: m(f.input("x"))),
    ("conv_layer_down_k3", lambda: sg.ConvLayer(4, 6, 3, downsample=True), lambda f, m: m(f.input("x"))),
    ("conv_layer_down_k1_noact_nobias",
     lambda: sg.ConvLayer(4, 6, 1, downsample=True, bias=False, activate=False), lambda f, m: m(f.input("x"))),
    ("resblock", lambda: sg.ResBlock(8, 16), lambda f, m: m(f.input("x"))),
    ("upsample", lambda: sg.Upsample(), lambda f, m: m(f.input("x"))),
    ("modulated_conv2d", lambda: sg.ModulatedConv2d(6, 5, 3, 32),
     lambda f, m: m(f.input("x"), f.input("style"))),
    ("modulated_conv2d_up", lambda: sg.ModulatedConv2d(6, 5, 3, 32, upsample=True),
     lambda f, m: m(f.input("x"), f.input("style"))),
    ("modulated_conv2d_k1_nodemod", lambda: sg.ModulatedConv2d(6, 3, 1, 32, demodulate=False),
     lambda f, m: m(f.input("x"), f.input("style"))),
    ("styled_conv", lambda: sg.StyledConv(6, 5, 3, 32), lambda f, m: m(f.input("x"), f.input("style"))),
    ("styled_conv_up", lambda: sg.StyledConv(6, 5, 3, 32, upsample=True),
     lambda f, m: m(f.input("x"), f.input("style"))),
]


@pytest.mark.parametrize("name, build, call", SINGLE_OUTPUT, ids=[c[0] for c in SINGLE_OUTPUT])
@torch.no_grad()
def test_block_matches_fixture(name, build, call):
    fx, module = _load(name, build())
    assert_close(call(fx, module), fx.output("y"))


@torch.no_grad()
def test_to_rgb_with_and_without_skip():
    fx, module = _load("to_rgb", sg.ToRGB(6))
    assert_close(module(fx.input("x")), fx.output("no_skip"))
    assert_close(module(fx.input("x"), fx.input("skip")), fx.output("with_skip"))


@pytest.mark.parametrize("call", ["no_skip", "with_skip"])
@torch.no_grad()
def test_to_flow_all_outputs(call):
    fx, module = _load("to_flow", sg.ToFlow(6, 32))
    args = [fx.input("x"), fx.input("style"), fx.input("feat")]
    if call == "with_skip":
        args.append(fx.input("skip"))
    outputs = module(*args)
    for key, actual in zip(("feat_warp", "out", "raw", "flow"), outputs):
        assert_close(actual, fx.output(f"{call}.{key}"))


def test_fir_kernel_is_normalised_outer_product():
    k = sg.make_fir_kernel((1, 3, 3, 1))
    expected = torch.tensor([1.0, 3.0, 3.0, 1.0])
    assert_close(k, torch.outer(expected, expected) / 64, atol=0)
    with pytest.raises(ValueError, match="taps"):
        sg.make_fir_kernel(())


def test_upfirdn2d_analytic_cases():
    x = torch.randn(2, 3, 6, 6)
    # A unit kernel with no resampling is the identity; down=2 decimates.
    one = torch.ones(1, 1)
    assert_close(sg.upfirdn2d(x, one), x, atol=0)
    assert_close(sg.upfirdn2d(x, one, down=2), x[:, :, ::2, ::2], atol=0)
    # up=2 with a unit kernel inserts zeros after each sample.
    up = sg.upfirdn2d(x, one, up=2)
    assert up.shape == (2, 3, 12, 12)
    assert_close(up[:, :, ::2, ::2], x, atol=0)
    assert up[:, :, 1::2].abs().sum() == 0 and up[:, :, :, 1::2].abs().sum() == 0
    # The FIR is applied as a true convolution (flipped), and negative pads crop.
    kernel = torch.arange(1.0, 5.0).reshape(2, 2)
    conv = F.conv2d(x.reshape(6, 1, 6, 6), kernel.flip(0, 1)[None, None]).reshape(2, 3, 5, 5)
    assert_close(sg.upfirdn2d(x, kernel), conv)
    assert_close(sg.upfirdn2d(x, one, pad=(-1, -2)), x[:, :, 1:-2, 1:-2], atol=0)
    with pytest.raises(ValueError, match="up and down"):
        sg.upfirdn2d(x, one, up=0)


def test_upsample_preserves_constants_in_the_interior():
    # The FIR times factor^2 after zero insertion is an interpolator: constants stay constant.
    y = sg.Upsample()(torch.full((1, 1, 8, 8), 2.5))
    assert y.shape == (1, 1, 16, 16)
    assert_close(y[:, :, 2:-2, 2:-2], torch.full((1, 1, 12, 12), 2.5))


def test_noise_injection_is_identity_without_noise():
    layer = sg.NoiseInjection()
    with torch.no_grad():
        layer.weight.fill_(0.7)
    x, noise = torch.randn(2, 3, 4, 4), torch.randn(2, 1, 4, 4)
    assert torch.equal(layer(x), x)
    assert_close(layer(x, noise), x + 0.7 * noise)


def test_modulated_conv_matches_per_sample_plain_conv():
    # Analytic check of the grouped formulation: sample b == conv2d with its own demodulated weight.
    torch.manual_seed(0)
    layer = sg.ModulatedConv2d(4, 5, 3, 8)
    x, style = torch.randn(3, 4, 6, 6), torch.randn(3, 8)
    with torch.no_grad():
        out = layer(x, style)
        for b in range(3):
            s = layer.modulation(style[b:b + 1])[0]
            w = layer.weight[0] * layer.scale * s[None, :, None, None]
            w = w / torch.sqrt(w.pow(2).sum([1, 2, 3], keepdim=True) + 1e-8)
            assert_close(out[b:b + 1], F.conv2d(x[b:b + 1], w, padding=1))


def test_perturb_constant_init_changes_only_constant_parameters():
    layer = sg.StyledConv(4, 5, 3, 8)
    before = {k: v.clone() for k, v in layer.state_dict().items()}
    sg.perturb_constant_init_(layer, generator=torch.Generator().manual_seed(0))
    after = layer.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"conv.modulation.bias", "noise.weight", "activate.bias"}
