"""Audio and emotion condition encoders against the reference fixtures (paper Sec. 4.2)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from float_core.config import EMOTIONS, FloatConfig
from float_core.models.conditions import (
    CONV_CHUNK_FRAMES,
    AudioEncoder,
    EmotionEncoder,
    chunked_conv_features,
    conv_frame_geometry,
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


def test_normalize_audio_blockwise_statistics(monkeypatch: pytest.MonkeyPatch) -> None:
    """Statistics summed in blocks (ragged last block) equal the float64 whole-clip ones."""
    import float_core.models.conditions as conditions

    clip = 0.2 * torch.randn(2, 1000, generator=torch.Generator().manual_seed(3)) + 0.7
    x = clip.double()
    expected = (x - x.mean(-1, keepdim=True)) / torch.sqrt(x.var(-1, unbiased=False, keepdim=True) + 1e-7)
    monkeypatch.setattr(conditions, "STATS_BLOCK_SAMPLES", 64)
    assert_close(normalize_audio(clip), expected.float(), atol=1e-6)
    # The finiteness check looks at every block, the last (short) one included.
    clip[1, -1] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        normalize_audio(clip)


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


# --------------------------------------------------------------------------- chunked conv features
def _feature_extractor(encoder: AudioEncoder | EmotionEncoder) -> torch.nn.Module:
    w2v = encoder.wav2vec2 if isinstance(encoder, AudioEncoder) else encoder.wav2vec2_for_emotion.wav2vec2
    return w2v.feature_extractor


@contextlib.contextmanager
def _count_calls(module: torch.nn.Module) -> Iterator[list[int]]:
    """How often ``module`` itself ran (a whole-clip feature extractor call), via a forward hook."""
    calls = [0]
    handle = module.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    try:
        yield calls
    finally:
        handle.remove()


def test_conv_frame_geometry() -> None:
    config = FloatConfig.official().audio_wav2vec2
    assert conv_frame_geometry(config["conv_kernel"], config["conv_stride"]) == (320, 400)
    assert CONV_CHUNK_FRAMES == 1500  # 30 s of ~50 Hz conv frames (see its comment)


@torch.no_grad()
@pytest.mark.parametrize("which", ["audio", "emotion"])
@pytest.mark.parametrize(
    ("frames", "extra"),
    [(12, 0), (12, 319), (13, 0), (13, 5), (5, 100), (9, 0)],  # chunks of 4: exact, ragged, 1-frame tail
)
def test_chunked_conv_features_match_whole_clip(
    tiny_audio_encoder: tuple[AudioEncoder, Fixture], tiny_emotion_encoder: tuple[EmotionEncoder, Fixture],
    which: str, frames: int, extra: int,
) -> None:
    """Chunked == whole-clip conv features for both normalisations, ragged ends included.

    ``extra`` samples past the last frame's receptive field still count in the GroupNorm
    statistics of the whole-clip computation, so they must count in the chunked one too.
    """
    encoder = tiny_audio_encoder[0] if which == "audio" else tiny_emotion_encoder[0]
    extractor = _feature_extractor(encoder)
    norm = "group" if which == "audio" else "layer"
    assert FloatConfig.tiny().audio_wav2vec2["feat_extract_norm"] == "group"
    assert FloatConfig.tiny().emotion_wav2vec2["feat_extract_norm"] == "layer"
    assert isinstance(extractor.conv_layers[0].layer_norm,
                      torch.nn.GroupNorm if norm == "group" else torch.nn.LayerNorm)
    generator = torch.Generator().manual_seed(frames * 1000 + extra)
    # An offset and a slow ramp make the per-channel statistics differ clearly from chunk to chunk.
    samples = 320 * (frames - 1) + 400 + extra
    audio = torch.randn(2, samples, generator=generator) + torch.linspace(-1.0, 2.0, samples)
    expected = extractor(audio)
    assert expected.shape == (2, 8, frames)
    with _count_calls(extractor) as calls:
        chunked = chunked_conv_features(extractor, audio, chunk_frames=4)
    assert calls[0] == 0  # the whole clip never went through the extractor at once
    assert_close(chunked, expected)
    # One chunk or fewer: the extractor itself, bit for bit.
    assert torch.equal(chunked_conv_features(extractor, audio, chunk_frames=frames), expected)
    with pytest.raises(ValueError, match="chunk_frames"):
        chunked_conv_features(extractor, audio, chunk_frames=0)


@torch.no_grad()
def test_audio_encoder_chunked_equals_whole(tiny_audio_encoder: tuple[AudioEncoder, Fixture],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    encoder, _ = tiny_audio_encoder
    # 16123 samples: T = 26 frames, padded to 16640 samples -> 51 conv frames, 8 chunks of 7.
    audio = normalize_audio(torch.randn(2, 16123, generator=torch.Generator().manual_seed(1)))
    whole = encoder.encode(audio)
    monkeypatch.setattr(encoder, "conv_chunk_frames", 7)
    with _count_calls(encoder.wav2vec2.feature_extractor) as calls:
        chunked = encoder.encode(audio)
    assert calls[0] == 0
    for name in whole._fields:
        assert_close(getattr(chunked, name), getattr(whole, name))


@torch.no_grad()
def test_emotion_encoder_chunked_equals_whole(tiny_emotion_encoder: tuple[EmotionEncoder, Fixture],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    encoder, _ = tiny_emotion_encoder
    # Unpadded: 50 conv frames, 8 chunks of 7.
    audio = normalize_audio(torch.randn(2, 16123, generator=torch.Generator().manual_seed(2)))
    classifier = encoder.wav2vec2_for_emotion
    whole_hidden, whole_logits = encoder.classify(audio)
    # The decomposed forward is Wav2Vec2Model's own forward in eval mode, bit for bit.
    assert torch.equal(whole_hidden, classifier.wav2vec2(audio).last_hidden_state)
    monkeypatch.setattr(classifier, "conv_chunk_frames", 7)
    with _count_calls(classifier.wav2vec2.feature_extractor) as calls:
        hidden, logits = encoder.classify(audio)
    assert calls[0] == 0
    assert_close(hidden, whole_hidden)
    assert_close(logits, whole_logits)
    assert_close(encoder(audio), whole_logits.softmax(dim=-1))


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


def test_concurrent_threads_each_get_their_own_layer_outputs(
        tiny_audio_encoder: tuple[AudioEncoder, Fixture]) -> None:
    """The encoder's layer outputs are recorded per thread: sessions/streams share one model."""
    import threading

    encoder, _ = tiny_audio_encoder
    clips = [torch.randn(1, 6400 + 640 * i, generator=torch.Generator().manual_seed(i)) for i in range(4)]
    with torch.no_grad():
        expected = [encoder(c) for c in clips]
    results: dict[int, list[torch.Tensor]] = {i: [] for i in range(len(clips))}
    start = threading.Barrier(len(clips))

    def work(i: int) -> None:
        start.wait()
        with torch.no_grad():
            for _ in range(5):
                results[i].append(encoder(clips[i]))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(clips))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    for i, outs in results.items():
        assert len(outs) == 5
        for out in outs:
            assert torch.equal(out, expected[i])
