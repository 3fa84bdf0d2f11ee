"""Audio and emotion condition encoders against the reference fixtures (ARCHITECTURE.md, paper 4.2)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from float_core.config import EMOTIONS, FloatConfig
from float_core.models.conditions import (
    AudioEncoder,
    EmotionEncoder,
    linear_interpolation,
    min_num_samples,
    normalize_audio,
    pad_audio,
)
from helpers import Fixture, assert_close

MANIFEST = Path(__file__).parents[1] / "float_core" / "data" / "float_manifest.json"


@pytest.fixture(scope="module")
def tiny_audio_encoder() -> tuple[AudioEncoder, Fixture]:
    fixture = Fixture("audio_encoder_tiny")
    # The fixture's projection is Linear(2 x 16 -> 8): dim_a = 8 on top of the tiny wav2vec2.
    assert fixture.meta["wav2vec2_config"] == {**FloatConfig.tiny().audio_wav2vec2}
    encoder = AudioEncoder(FloatConfig.tiny().replace(dim_a=8)).eval()
    encoder.load_state_dict(fixture.state_dict(), strict=True)
    return encoder, fixture


@pytest.fixture(scope="module")
def tiny_emotion_encoder() -> tuple[EmotionEncoder, Fixture]:
    fixture = Fixture("emotion_encoder_tiny")
    assert fixture.meta["labels"] == list(EMOTIONS)
    encoder = EmotionEncoder(FloatConfig.tiny()).eval()
    encoder.load_state_dict(fixture.state_dict(), strict=True)
    return encoder, fixture


# --------------------------------------------------------------------------- fixtures
@torch.no_grad()
def test_audio_encoder_matches_reference(tiny_audio_encoder: tuple[AudioEncoder, Fixture]) -> None:
    encoder, fixture = tiny_audio_encoder
    audio = fixture.input("a")  # (1, 7777): 13 frames, padded to 8320 samples -> 25 conv frames
    out = encoder.encode(audio)
    assert_close(out.conv_features, fixture.output("conv_features"))
    assert_close(out.stacked, fixture.output("stacked"))
    assert_close(out.wa, fixture.output("wa"))
    assert_close(encoder(audio), fixture.output("wa"))
    # An unbatched clip gives the same features with a batch of one.
    assert_close(encoder(audio[0]), fixture.output("wa"))


@torch.no_grad()
def test_audio_encoder_batch_is_per_clip(tiny_audio_encoder: tuple[AudioEncoder, Fixture]) -> None:
    encoder, fixture = tiny_audio_encoder
    audio = fixture.input("a")
    batch = torch.cat([audio, audio.flip(-1)])
    wa = encoder(batch)
    assert_close(wa[:1], fixture.output("wa"))
    assert_close(wa[1:], encoder(audio.flip(-1)))


@torch.no_grad()
def test_emotion_encoder_matches_reference(tiny_emotion_encoder: tuple[EmotionEncoder, Fixture]) -> None:
    encoder, fixture = tiny_emotion_encoder
    audio = fixture.input("a")  # unpadded: 7777 samples -> 24 conv frames
    last_hidden_state, logits = encoder.classify(audio)
    assert_close(last_hidden_state, fixture.output("last_hidden_state"))
    assert_close(logits, fixture.output("logits"))
    assert_close(encoder.logits(audio), fixture.output("logits"))
    probs = encoder(audio)
    assert_close(probs, fixture.output("probs"))
    assert_close(probs.sum(-1), torch.ones(1), atol=1e-6)


@torch.no_grad()
def test_train_mode_does_not_leak_into_eval(tiny_audio_encoder: tuple[AudioEncoder, Fixture]) -> None:
    """Two eval passes are identical even after the module was toggled through train mode."""
    encoder, fixture = tiny_audio_encoder
    encoder.train()
    encoder.eval()
    audio = fixture.input("a")
    assert torch.equal(encoder(audio), encoder(audio))
    assert_close(encoder(audio), fixture.output("wa"))


@pytest.mark.parametrize("case", [("features_149", "to_75"), ("features_10", "to_23")])
def test_linear_interpolation_matches_reference(case: tuple[str, str]) -> None:
    fixture = Fixture("linear_interpolation")
    source, target = case
    expected = fixture.output(target)
    assert_close(linear_interpolation(fixture.input(source), expected.shape[1]), expected)


def test_linear_interpolation_analytic() -> None:
    """align_corners=True maps frame i of T to position i (N-1)/(T-1): a ramp stays a ramp."""
    ramp = torch.arange(5.0).view(1, 5, 1).expand(2, 5, 3)
    out = linear_interpolation(ramp, 9)
    assert_close(out, torch.linspace(0, 4, 9).view(1, 9, 1).expand(2, 9, 3), atol=1e-6)


# --------------------------------------------------------------------------- pre-processing
def test_normalize_audio_analytic() -> None:
    # mean 2.5, population variance 1.25 -> (x - 2.5) / sqrt(1.25 + 1e-7)
    x = torch.tensor([1.0, 2.0, 3.0, 4.0])
    expected = (x - 2.5) / np.sqrt(1.25 + 1e-7)
    assert_close(normalize_audio(x), expected, atol=1e-7)
    assert_close(normalize_audio(torch.stack([x, 10 * x + 3])), torch.stack([expected, expected]), atol=1e-6)
    # A constant clip maps to zeros (the 1e-7 floor avoids a division by zero).
    constant = torch.full((100,), 0.5, dtype=torch.float64)
    assert torch.equal(normalize_audio(constant), torch.zeros_like(constant))


def test_normalize_audio_matches_feature_extractor() -> None:
    from transformers import Wav2Vec2FeatureExtractor

    extractor = Wav2Vec2FeatureExtractor(do_normalize=True, sampling_rate=16000, return_attention_mask=False)
    clip = 0.1 * torch.randn(2, 4000, generator=torch.Generator().manual_seed(0)) + 0.05
    for row in clip:
        features = extractor(row.numpy(), sampling_rate=16000, return_tensors="np")
        expected = torch.from_numpy(features.input_values[0])
        assert_close(normalize_audio(row), expected, atol=1e-5)


def test_pad_audio_rule() -> None:
    config = FloatConfig.official()
    audio = torch.randn(7777)
    num_frames = config.num_video_frames(audio.numel())
    assert num_frames == 13  # ceil(7777 * 25 / 16000)
    padded = pad_audio(audio, num_frames, config.samples_per_frame)
    assert padded.shape == (8320,)  # 13 x 640
    assert torch.equal(padded[:7777], audio)
    assert torch.equal(padded[7777:], audio[-1].expand(8320 - 7777))
    # Batched, and already a whole number of frames: unchanged.
    batch = torch.randn(2, 1280)
    assert torch.equal(pad_audio(batch, 2), batch)
    assert pad_audio(batch, 3).shape == (2, 1920)
    with pytest.raises(ValueError, match="num_frames"):
        pad_audio(batch, 1)


def test_min_num_samples_is_receptive_field() -> None:
    config = FloatConfig.official().audio_wav2vec2
    assert min_num_samples(config["conv_kernel"], config["conv_stride"]) == 400  # 25 ms at 16 kHz


# --------------------------------------------------------------------------- official sizes
@pytest.mark.parametrize("prefix", ["audio_encoder.", "emotion_encoder."])
def test_official_keys_and_shapes_match_manifest(prefix: str) -> None:
    entries = json.loads(MANIFEST.read_text())["entries"]
    expected = {key[len(prefix):]: (tuple(shape), is_buffer) for key, shape, is_buffer, _ in entries
                if key.startswith(prefix)}
    config = FloatConfig.official()
    with torch.device("meta"):
        module = AudioEncoder(config) if prefix == "audio_encoder." else EmotionEncoder(config)
    buffers = {name for name, _ in module.named_buffers()}
    actual = {key: (tuple(value.shape), key in buffers) for key, value in module.state_dict().items()}
    assert actual == expected
    if prefix == "audio_encoder.":  # 12 layers x 768 hidden -> 512
        assert actual["audio_projection.0.weight"][0] == (512, 9216)


# --------------------------------------------------------------------------- validation
@pytest.mark.parametrize(
    ("audio", "message"),
    [
        (torch.zeros(0), "empty"),
        (torch.zeros(2, 0), "empty"),
        (torch.tensor([0.0, float("nan")] * 400), "NaN"),
        (torch.tensor([0.0, float("inf")] * 400), "NaN or infinite"),
        (torch.zeros(1, 1, 800), "shape"),
        (torch.zeros(800, dtype=torch.int16), "floating"),
        (np.zeros(800, dtype=np.float32), "torch.Tensor"),
    ],
)
def test_invalid_audio_raises(tiny_audio_encoder: tuple[AudioEncoder, Fixture],
                              tiny_emotion_encoder: tuple[EmotionEncoder, Fixture],
                              audio: object, message: str) -> None:
    for call in (tiny_audio_encoder[0], tiny_emotion_encoder[0], normalize_audio, lambda a: pad_audio(a, 2)):
        with pytest.raises(ValueError, match=f"^audio .*{message}"):
            call(audio)


def test_emotion_encoder_rejects_too_short_audio(tiny_emotion_encoder: tuple[EmotionEncoder, Fixture]) -> None:
    encoder, _ = tiny_emotion_encoder
    with pytest.raises(ValueError, match="audio must have at least 400 samples"):
        encoder(torch.randn(1, 399))
    assert encoder(torch.randn(1, 400)).shape == (1, len(EMOTIONS))
