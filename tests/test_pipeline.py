"""FloatPipeline end to end on the tiny random model (FLOAT_TEST_MODEL=tiny-random)."""

import numpy as np
import pytest
import torch

from float_core import EMOTIONS, FloatConfig, FloatPipeline
from float_core.pipeline import frames_to_uint8


@pytest.fixture(scope="module")
def pipe(monkeypatch_module):
    monkeypatch_module.setenv("FLOAT_TEST_MODEL", "tiny-random")
    return FloatPipeline.from_pretrained(device="cpu")


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


@pytest.fixture(scope="module")
def prepared(pipe):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (512, 512, 3), dtype=np.uint8)
    t = np.arange(int(1.3 * 16000)) / 16000  # 1.3 s -> 33 frames -> 4 windows of 10
    audio = (0.3 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 3 * t))).astype(np.float32)
    return pipe.prepare(image, audio, crop=False)


def test_test_model_is_tiny(pipe):
    assert pipe.config == FloatConfig.tiny()
    assert pipe.device.type == "cpu"


def test_prepared_shapes(pipe, prepared):
    cfg = pipe.config
    assert prepared.crop_box is None
    assert prepared.identity_latent.shape == (cfg.style_dim,)
    assert prepared.source_lambda.shape == (cfg.motion_dim,)
    assert prepared.source_motion.shape == (cfg.style_dim,)
    assert [f.shape[-1] for f in prepared.features] == cfg.decoder_resolutions
    assert prepared.audio_features.shape == (33, cfg.dim_a)  # ceil(20800 * 25 / 16000)
    assert prepared.emotion_probs.shape == (7,)
    assert prepared.emotion_probs.sum().item() == pytest.approx(1.0, abs=1e-5)
    # w_{r->S} = V lambda(S) (paper Eq. 8)
    assert torch.allclose(prepared.source_motion, pipe.basis @ prepared.source_lambda, atol=1e-6)


def test_sampling_is_seeded(pipe, prepared):
    a = pipe.sample_motion(prepared, nfe=3, seed=7)
    b = pipe.sample_motion(prepared, nfe=3, seed=7)
    c = pipe.sample_motion(prepared, nfe=3, seed=8)
    assert a.shape == (prepared.num_frames, pipe.config.style_dim)
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_streaming_windows_concatenate_to_the_offline_result(pipe, prepared):
    windows = list(pipe.iter_motion(prepared, nfe=2, seed=3))
    assert [w.shape[0] for w in windows] == [10, 10, 10, 3]
    assert torch.equal(torch.cat(windows), pipe.sample_motion(prepared, nfe=2, seed=3))


def test_emotion_redirection_changes_motion(pipe, prepared):
    auto = pipe.sample_motion(prepared, nfe=2, seed=1, e_cfg=2.0)
    happy = pipe.sample_motion(prepared, nfe=2, seed=1, e_cfg=2.0, emotion="happy")
    assert not torch.allclose(auto, happy, atol=1e-4)
    onehot = torch.zeros(7)
    onehot[EMOTIONS.index("happy")] = 1
    assert torch.equal(pipe.resolve_emotion(prepared, "HAPPY"), onehot)
    assert torch.equal(pipe.resolve_emotion(prepared, "auto"), prepared.emotion_probs)
    probs = pipe.resolve_emotion(prepared, [2, 0, 0, 0, 2, 0, 0])
    assert probs[0].item() == pytest.approx(0.5) and probs[4].item() == pytest.approx(0.5)


@pytest.mark.parametrize("kwargs, word", [
    (dict(emotion="bored"), "emotion"), (dict(emotion=[1, 2]), "emotion"), (dict(nfe=0), "nfe"),
    (dict(solver="heun"), "solver"), (dict(a_cfg=float("nan")), "a_cfg"),
])
def test_bad_sampling_arguments(pipe, prepared, kwargs, word):
    with pytest.raises(ValueError, match=word):
        pipe.sample_motion(prepared, **kwargs)


@pytest.mark.parametrize("audio, word", [
    (np.zeros(0, np.float32), "empty"), (np.full(1600, np.nan, np.float32), "NaN"),
    (np.zeros((2, 1600), np.float32), "mono"),
])
def test_bad_audio(pipe, audio, word):
    with pytest.raises(ValueError, match=word):
        pipe.prepare_audio(audio)


def test_prepare_audio_any_array_layout_same_features(pipe):
    """Shared (writable, contiguous), read-only and reversed-stride arrays give the same features,
    and the caller's samples are never modified (prepare_audio shares them with torch)."""
    wave = (0.1 * np.random.default_rng(1).standard_normal(9000)).astype(np.float32)
    original = wave.copy()
    expected = pipe.prepare_audio(wave)
    assert np.array_equal(wave, original)
    read_only = wave.copy()
    read_only.flags.writeable = False
    for layout in (read_only, np.ascontiguousarray(wave[::-1])[::-1]):
        speech = pipe.prepare_audio(layout)
        assert torch.equal(speech.audio_features, expected.audio_features)
        assert torch.equal(speech.emotion_probs, expected.emotion_probs)


def test_frames_to_uint8_truncates_like_the_reference():
    x = torch.tensor([-2.0, -1.0, 0.0, 0.999, 1.0, 3.0]).view(1, 1, 1, 6).expand(1, 3, 1, 6)
    assert frames_to_uint8(x)[0, 0, :, 0].tolist() == [0, 0, 127, 254, 255, 255]


def test_render_batches_and_edits(pipe, prepared):
    motion = pipe.sample_motion(prepared, nfe=2, seed=0)[:11]
    batches = list(pipe.render(prepared, motion, batch_size=4))
    assert [b.shape for b in batches] == [(4, 64, 64, 3), (4, 64, 64, 3), (3, 64, 64, 3)]
    assert all(b.dtype == np.uint8 for b in batches)
    frames = np.concatenate(batches)
    expected = frames_to_uint8(pipe.decode_frames(prepared, motion))
    assert np.array_equal(frames, expected)
    zero = np.concatenate(list(pipe.render(prepared, motion, edits=[0.0] * 20, batch_size=4)))
    assert np.array_equal(zero, frames)
    edit = torch.zeros(20)
    edit[0] = 5.0
    edited = np.concatenate(list(pipe.render(prepared, motion, edits=edit, batch_size=4)))
    assert np.abs(edited.astype(int) - frames).max() > 0


def test_render_holds_one_batch_at_a_time(pipe, prepared, monkeypatch):
    calls = []
    original = pipe.decoder

    def spy(latents, feats, keep=None):
        calls.append(latents.shape[0])
        return original(latents, feats, keep=keep)

    monkeypatch.setattr(pipe, "decoder", spy)
    motion = torch.zeros(20, pipe.config.style_dim)
    it = pipe.render(prepared, motion, batch_size=6)
    next(it)
    assert calls == [6]  # lazily: the first batch only
    list(it)
    assert calls == [6, 6, 6, 2]


def test_bad_motion_is_rejected(pipe, prepared):
    with pytest.raises(ValueError, match="motion"):
        pipe.decode_frames(prepared, torch.zeros(3, 5))
    with pytest.raises(ValueError, match="batch_size"):
        next(pipe.render(prepared, torch.zeros(3, pipe.config.style_dim), batch_size=0))


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_preview_frame_is_the_rendered_frame_bit_for_bit(prepared, dtype):
    """A one-frame preview and the frame ``render`` delivers are the same computation (the
    render batch's low levels, then the frame alone), so they are equal in every precision,
    with constant and per-frame edits, at the start, inside and at the end of a batch."""
    pipe = FloatPipeline.tiny_random(device="cpu", dtype=dtype)
    source = pipe.prepare_image(np.asarray(prepared.source.original if prepared.source.original is not None
                                           else np.full((64, 64, 3), 128, np.uint8)), crop=False)
    motion = source.source_motion[None] + 0.3 * torch.randn(21, pipe.config.style_dim,
                                                            generator=torch.Generator().manual_seed(0))
    per_frame = torch.linspace(-2, 2, 21)[:, None] * torch.ones(21, pipe.config.motion_dim)
    for edits in (None, torch.full((pipe.config.motion_dim,), 0.7), per_frame):
        video = np.concatenate(list(pipe.render(source, motion, edits=edits, batch_size=8)))
        for index in (0, 5, 8, 20):
            assert np.array_equal(pipe.preview_frame(source, motion, index, edits=edits, batch_size=8), video[index])
    with pytest.raises(ValueError, match="frames 0..20"):
        pipe.preview_frame(source, motion, 21)


@pytest.mark.parametrize("emotion", [
    np.array([0, 0, 0, 1, 0, 0, 0], np.float32), [0, 0, 0, 1, 0, 0, 0], (0.0, 0.0, 0.0, 2.0, 0.0, 0.0, 0.0),
    torch.tensor([0, 0, 0, 1, 0, 0, 0.0]), "happy", "HAPPY"])
def test_every_documented_emotion_form_samples_the_same_motion(pipe, prepared, emotion):
    """A name, a list, a tuple (unnormalised), an ndarray and a tensor of the same one-hot give
    one canonical setting and the same motion; SamplingConfig.dynamic_emotion is a plain bool."""
    from float_core import SamplingConfig

    cfg = SamplingConfig(emotion=emotion, nfe=2, seed=3)
    assert cfg.dynamic_emotion is False
    assert cfg.emotion in ("happy", (0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0), (0.0, 0.0, 0.0, 2.0, 0.0, 0.0, 0.0))
    expected = pipe.sample_motion(prepared, nfe=2, seed=3, emotion="happy")
    assert torch.equal(pipe.sample_motion(prepared, cfg), expected)


def test_generate_accepts_an_ndarray_emotion(pipe, prepared, tmp_path):
    result = pipe.generate(None, None, tmp_path / "out.mp4", prepared=prepared, nfe=1, seed=0, progress=None,
                           emotion=np.array([0, 0, 0, 1, 0, 0, 0], np.float32))
    assert result.sampling.emotion == (0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0)
    assert torch.equal(result.emotion, torch.tensor([0, 0, 0, 1.0, 0, 0, 0]))
    assert (tmp_path / "out.mp4").is_file()


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_guidance_is_refused_before_the_first_window(pipe, prepared, bad):
    """Validated once, by SamplingConfig, wherever sampling starts (the FMT does not re-check)."""
    from float_core.sampling import iter_motion_windows

    with pytest.raises(ValueError, match="e_cfg: must be a finite number"):
        pipe.sample_motion(prepared, e_cfg=bad)
    windows = iter_motion_windows(pipe.model.fmt, prepared.audio_features[None], prepared.source_motion[None],
                                  prepared.emotion_probs[None], e_cfg=bad)
    with pytest.raises(ValueError, match="e_cfg: must be a finite number"):
        next(windows)


@pytest.mark.parametrize("bad, message", [
    (np.zeros(7), "positive sum"), ([1, 2], "7 finite non-negative"), ([float("nan")] * 7, "finite"),
    ("joyful", "expected 'auto', 'dynamic' or one of"), (object(), "probabilities")])
def test_bad_emotions_are_refused_once_with_the_accepted_forms(bad, message):
    from float_core import SamplingConfig

    with pytest.raises(ValueError, match=message):
        SamplingConfig(emotion=bad)
