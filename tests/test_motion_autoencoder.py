"""Motion auto-encoder (paper 4.1, A.1): fixtures, checkpoint layout, shapes and basis algebra."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers import Fixture, assert_close

from float_core.config import FloatConfig
from float_core.models.motion_autoencoder import Direction, Encoder, MotionAutoEncoder
from float_core.models.stylegan import perturb_constant_init_

MANIFEST = Path(__file__).parents[1] / "float_core" / "data" / "float_manifest.json"
PREFIX = "motion_autoencoder."


@pytest.fixture(scope="module")
def tiny() -> MotionAutoEncoder:
    torch.manual_seed(0)
    return perturb_constant_init_(MotionAutoEncoder(FloatConfig.tiny())).eval()


@pytest.fixture(scope="module")
def source(tiny: MotionAutoEncoder) -> torch.Tensor:
    size = tiny.config.image_size
    return torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(1)) * 2 - 1


def test_official_state_dict_matches_manifest():
    with torch.device("meta"):  # shapes only: no 100 MB of random weights
        model = MotionAutoEncoder(FloatConfig.official())
    entries = json.loads(MANIFEST.read_text())["entries"]
    expected = [(key[len(PREFIX):], shape, is_buffer) for key, shape, is_buffer, _ in entries
                if key.startswith(PREFIX)]
    buffers = {name for name, _ in model.named_buffers()}
    actual = [(key, list(t.shape), key in buffers) for key, t in model.state_dict().items()]
    assert actual == expected  # same keys, same order, same shapes, same buffer flags


@torch.no_grad()
def test_direction_fixture():
    fx = Fixture("direction")
    direction = Direction(512, 20)
    direction.load_state_dict(fx.state_dict(), strict=True)
    assert_close(direction(), fx.output("q_basis"))
    assert_close(direction.basis(), fx.output("q_basis"))
    assert_close(direction(fx.input("alpha")), fx.output("with_input"))


def test_direction_rejects_more_directions_than_dimensions():
    with pytest.raises(ValueError, match="motion_dim"):
        Direction(16, 20)


@torch.no_grad()
def test_encoder_fixture_size4():
    fx = Fixture("encoder_size4_dim16")
    encoder = Encoder(4, 16, 20)
    assert list(encoder.state_dict()) == fx.meta["state_dict_keys"]
    encoder.load_state_dict(fx.state_dict(), strict=True)
    h, lam, feats = encoder(fx.input("x"))
    assert_close(h, fx.output("h"))
    assert_close(lam, fx.output("lambda"))
    assert feats == []


def test_tiny_config_builds(tiny: MotionAutoEncoder):
    config = tiny.config
    assert tiny.dec.direction.weight.shape == (config.style_dim, config.motion_dim)
    assert len(tiny.dec.to_flows) == len(config.decoder_resolutions)


@torch.no_grad()
def test_basis_is_orthonormal_and_motion_is_q_lambda(tiny: MotionAutoEncoder):
    q = tiny.basis()
    m = tiny.config.motion_dim
    assert q.shape == (tiny.config.style_dim, m)
    assert_close(q.T @ q, torch.eye(m))
    lam = torch.randn(2, 3, m)
    assert_close(tiny.lambda_to_motion(lam), lam @ q.T)
    # Projecting a motion latent back onto the basis recovers its coefficients.
    assert_close(tiny.lambda_to_motion(lam) @ q, lam)
    with pytest.raises(ValueError, match="lam"):
        tiny.lambda_to_motion(torch.randn(2, m + 1))


@torch.no_grad()
def test_encode_shapes_and_pyramid_order(tiny: MotionAutoEncoder, source: torch.Tensor):
    config = tiny.config
    identity, lam, feats = tiny.encode(source.expand(2, -1, -1, -1))
    assert identity.shape == (2, config.style_dim)
    assert lam.shape == (2, config.motion_dim)
    assert [tuple(f.shape) for f in feats] == [(2, config.channels(r), r, r) for r in config.decoder_resolutions]
    # The last level is the first ConvLayer's output, the one before it the first ResBlock's.
    first = tiny.enc.net_app.convs[0](source)
    assert_close(feats[-1][:1], first)
    assert_close(feats[-2][:1], tiny.enc.net_app.convs[1](first))
    with pytest.raises(ValueError, match="image"):
        tiny.encode(torch.zeros(1, 3, 8, 8))


@torch.no_grad()
def test_decode_shapes_and_batch_independence(tiny: MotionAutoEncoder, source: torch.Tensor):
    config = tiny.config
    identity, lam, feats = tiny.encode(source)
    latents = identity + tiny.lambda_to_motion(torch.randn(3, config.motion_dim))
    frames = tiny.decode(latents, feats)
    assert frames.shape == (3, 3, config.image_size, config.image_size)
    assert frames.dtype == torch.float32 and torch.isfinite(frames).all()
    # Each frame depends only on its own latent; feats may have batch 1 or K. The batch size
    # changes the conv kernels' summation order, and random decoders amplify float32 rounding
    # (this one differs from its own float64 evaluation by ~2e-4 max, ~2e-6 mean).
    for actual, expected in [(tiny.decode(latents[1:2], feats), frames[1:2]),
                             (tiny.decode(latents, [f.expand(3, -1, -1, -1) for f in feats]), frames)]:
        assert_close(actual, expected, atol=1e-3)
        assert (actual - expected).abs().mean() < 1e-5
    # Different motions give different frames (the decoder is not degenerate).
    assert (frames[0] - frames[1]).abs().max() > 1e-3
    with pytest.raises(ValueError, match="latent"):
        tiny.decode(latents[:, :-1], feats)
    with pytest.raises(ValueError, match="feats"):
        tiny.decode(latents, feats[:-1])


def test_reconstruction_is_differentiable(tiny: MotionAutoEncoder, source: torch.Tensor):
    driving = torch.flip(source, [3])
    tiny.zero_grad()
    out = tiny(source, driving)
    assert out.shape == source.shape
    out.square().mean().backward()
    grads = {name: p.grad for name, p in tiny.named_parameters()}
    # Every parameter receives a gradient except the unused to_rgb1 and the noise strengths.
    unused = {n for n in grads if n.startswith("dec.to_rgb1.") or n.endswith("noise.weight")}
    assert {n for n, g in grads.items() if g is None} == unused
    assert grads["dec.direction.weight"].abs().sum() > 0
    assert grads["enc.fc.4.weight"].abs().sum() > 0
    tiny.zero_grad()
