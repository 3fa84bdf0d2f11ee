"""Emotion over time: per-window spans, emotion_timeline, dynamic sampling, honest labels."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from float_core import sampling as sampling_mod
from float_core.config import EMOTIONS, SamplingConfig
from float_core.emotion import describe_emotion, window_spans
from float_core.emotion import resolve_emotion
from float_core.pipeline import FloatPipeline


# --------------------------------------------------------------------------- spans
def test_window_spans_known_values():
    # 5 s, 125 frames, windows of 50 frames = 32000 samples, 0.5 s = 8000 samples of context.
    assert window_spans(80000, 125, 50, 640) == [(0, 40000), (24000, 72000), (56000, 80000)]
    # Without context the spans tile the clip exactly.
    assert window_spans(80000, 125, 50, 640, context=0.0, min_seconds=0.0) == [
        (0, 32000), (32000, 64000), (64000, 80000)]
    # A short last window is grown to 1 s, towards the inside of the clip.
    assert window_spans(66000, 104, 50, 640, context=0.0) == [(0, 32000), (32000, 64000), (50000, 66000)]
    # A clip shorter than min_seconds: every span is the whole clip.
    assert window_spans(6000, 10, 5, 640) == [(0, 6000), (0, 6000)]


def test_window_spans_errors():
    with pytest.raises(ValueError, match="positive sizes"):
        window_spans(0, 10, 5, 640)
    with pytest.raises(ValueError, match=">= 0"):
        window_spans(1000, 10, 5, 640, context=-1)


# --------------------------------------------------------------------------- pipeline
@pytest.fixture(scope="module")
def pipe():
    return FloatPipeline.tiny_random(device="cpu")


def two_halves(seconds: float = 2.4) -> np.ndarray:
    """A low tone in the first half, loud broadband noise in the second."""
    n = int(seconds * 16000)
    t = np.arange(n) / 16000
    wave = 0.3 * np.sin(2 * np.pi * 150 * t)
    wave[n // 2:] = np.random.default_rng(0).normal(0, 0.8, n - n // 2)
    return wave.astype(np.float32)


@pytest.fixture(scope="module")
def prepared(pipe):
    image = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    return pipe.prepare(image, two_halves(), crop=False)


def test_emotion_of_the_whole_clip_is_the_clip_emotion(pipe, prepared):
    probs = pipe.emotion_of(prepared.speech.waveform)
    assert probs.shape == (7,) and probs.device == pipe.device
    assert torch.allclose(probs, prepared.emotion_probs, atol=1e-6)
    with pytest.raises(ValueError, match="at least 400 samples"):
        pipe.emotion_of(np.zeros(100, np.float32))


def test_emotion_timeline_is_per_window(pipe, prepared):
    timeline = pipe.emotion_timeline(prepared)
    windows = sampling_mod.num_windows(prepared.num_frames, pipe.config.num_frames)
    assert windows == 6  # 60 frames in windows of 10
    assert timeline.shape == (windows, 7) and timeline.device == pipe.device
    assert torch.allclose(timeline.sum(dim=1), torch.ones(windows), atol=1e-5)
    # The first window hears only the tone and the last only the noise: they must differ.
    assert (timeline[0] - timeline[-1]).abs().max() > 1e-3
    # Each row is the emotion of its span.
    spans = window_spans(prepared.speech.waveform.shape[0], prepared.num_frames, pipe.config.num_frames,
                         pipe.config.samples_per_frame)
    a, b = spans[-1]
    assert a >= prepared.speech.waveform.shape[0] // 2  # only the second half
    assert torch.allclose(timeline[-1], pipe.emotion_of(prepared.speech.waveform[a:b]), atol=1e-6)


def test_dynamic_sampling_uses_each_window_estimate(pipe, prepared):
    timeline = pipe.emotion_timeline(prepared)
    dynamic = pipe.sample_motion(prepared, nfe=2, seed=3, emotion="dynamic")
    explicit = sampling_mod.sample_motion(pipe.model.fmt, prepared.audio_features[None],
                                          prepared.source_motion[None], timeline[None], nfe=2, seed=3)[0]
    assert torch.equal(dynamic, explicit)
    auto = pipe.sample_motion(prepared, SamplingConfig(nfe=2, seed=3))
    assert not torch.allclose(dynamic, auto)
    # Window 0 with its own estimate as a fixed vector is window 0 of the dynamic run; the last
    # window (another estimate) is not.
    first = pipe.sample_motion(prepared, nfe=2, seed=3, emotion=timeline[0].tolist())
    window = pipe.config.num_frames
    assert torch.allclose(first[:window], dynamic[:window], atol=1e-4)
    assert not torch.allclose(first[-window:], dynamic[-window:], atol=1e-4)


def test_timeline_is_computed_once(pipe, prepared, monkeypatch):
    reports = []
    with_timeline = pipe.with_emotion_timeline(prepared, progress=lambda *r: reports.append(r))
    assert reports == [("emotion", k, 6) for k in range(1, 7)]
    assert torch.equal(with_timeline.speech.emotion_windows, pipe.emotion_timeline(prepared))
    assert prepared.speech.emotion_windows is None  # the input is not changed

    def fail(*args):
        raise AssertionError("emotion_of must not run again")

    monkeypatch.setattr(pipe, "emotion_of", fail)
    assert pipe.resolve_emotion(with_timeline, "dynamic").shape == (6, 7)
    assert pipe.sample_motion(with_timeline, nfe=1, seed=0, emotion="dynamic").shape[0] == 60


def test_generate_with_dynamic_emotion_computes_the_timeline_once(pipe, prepared, monkeypatch, tmp_path):
    calls = []
    emotion_of = pipe.emotion_of
    monkeypatch.setattr(pipe, "emotion_of", lambda wave: calls.append(len(wave)) or emotion_of(wave))
    result = pipe.generate(None, None, tmp_path / "dynamic.mp4", prepared=prepared, emotion="dynamic",
                           nfe=1, seed=0, progress=None)
    assert len(calls) == 6  # one classification per window, not one per use
    assert result.path.stat().st_size > 0 and result.num_frames == 60
    assert result.emotion.shape == (6, 7)
    assert torch.allclose(result.emotion, pipe.emotion_timeline(prepared), atol=1e-6)
    assert result.sampling.emotion == "dynamic"


def test_resolve_emotion_dynamic_needs_a_timeline():
    probs = torch.full((7,), 1 / 7)
    with pytest.raises(ValueError, match="per-window timeline"):
        resolve_emotion(probs, "dynamic")
    timeline = torch.rand(3, 7)
    assert torch.equal(resolve_emotion(probs, "dynamic", timeline), timeline)


# --------------------------------------------------------------------------- labels
def test_describe_emotion():
    probs = torch.tensor([0.05, 0.0, 0.1, 0.6, 0.2, 0.05, 0.0])
    assert describe_emotion(probs, None) == "mixture of 60% happy, 20% neutral, 10% fear (auto, soft probabilities)"
    assert describe_emotion(probs, SamplingConfig()) == describe_emotion(probs, "auto")
    assert describe_emotion(None, "Sad") == "redirected to sad (one-hot)"
    assert describe_emotion(None, SamplingConfig(emotion="happy")) == "redirected to happy (one-hot)"
    assert describe_emotion(None, (1, 0, 0, 0, 0, 1, 0)) == "mixture of 50% angry, 50% sad, 0% disgust (custom probabilities)"
    timeline = torch.zeros(4, 7)
    timeline[:2, EMOTIONS.index("happy")] = 1
    timeline[2:, EMOTIONS.index("neutral")] = 1
    assert describe_emotion(timeline, SamplingConfig(emotion="dynamic")) == (
        "dynamic: per window, 4 windows of 2 s, soft probabilities; strongest: happy (1-2), neutral (3-4)")


@pytest.mark.parametrize("probs,setting,message", [
    (torch.rand(3, 7), "auto", "'auto' uses the clip's"),
    (torch.rand(7), "dynamic", "'dynamic' needs the"),
    (None, "auto", "are needed"),
    (torch.rand(5), "auto", "7-emotion"),
    (None, "cheerful", "expected 'auto', 'dynamic'"),
])
def test_describe_emotion_errors(probs, setting, message):
    with pytest.raises(ValueError, match=message):
        describe_emotion(probs, setting)


def test_on_a_simulated_accelerator(pipe, prepared):
    """The timeline is computed on the device with explicit transfers, and dynamic sampling
    and the label run on it; the numbers equal the CPU's."""
    from float_core.testing import SimulatedAccelerator

    expected = pipe.emotion_timeline(prepared)
    with SimulatedAccelerator() as acc:
        dev_pipe = acc.pipeline(pipe)
        dev_prepared = dev_pipe.prepare(np.zeros((64, 64, 3), np.uint8), two_halves(), crop=False)
        timeline = dev_pipe.emotion_timeline(dev_prepared)
        assert timeline.device == acc.device
        motion = dev_pipe.sample_motion(dev_prepared, nfe=1, seed=0, emotion="dynamic")
        label = describe_emotion(timeline, "dynamic")
        host = timeline.cpu()
    assert torch.allclose(host, expected, atol=1e-5)
    assert motion.shape == (60, pipe.config.style_dim)
    assert label.startswith("dynamic: per window, 6 windows")
