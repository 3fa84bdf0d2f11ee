"""Checkpoint resolution, validation, loading, download and conversion (float_core.weights)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from float_core import cli
from float_core.config import FloatConfig
from float_core.weights import (
    WeightsError,
    WeightSources,
    authors_layout,
    convert_to_safetensors,
    download_weights,
    expected_shapes,
    load_model,
    load_state_dict,
    resolve_sources,
    validate_state_dict,
)

OFFICIAL = FloatConfig.official()
TINY = FloatConfig.tiny()
AUDIO_DIR, EMOTION_DIR = "wav2vec2-base-960h", "wav2vec-english-speech-emotion-recognition"
AUDIO_PREFIX, EMOTION_PREFIX = "audio_encoder.", "emotion_encoder.wav2vec2_for_emotion."
POS_CONV_G = "audio_encoder.wav2vec2.encoder.pos_conv_embed.conv.parametrizations.weight.original0"


def _meta_state_dict(config: FloatConfig = OFFICIAL) -> dict[str, torch.Tensor]:
    """Every parameter as a meta tensor of the right shape: validation needs shapes only."""
    return {k: torch.empty(s, device="meta") for k, s in expected_shapes(config).items()}


def _legacy_weight_norm_names(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename parametrization weight-norm tensors to the hub files' ``weight_g``/``weight_v``."""
    return {k.replace("parametrizations.weight.original0", "weight_g")
             .replace("parametrizations.weight.original1", "weight_v"): v for k, v in state_dict.items()}


# --------------------------------------------------------------------------- manifest only
def test_expected_shapes_official_come_from_the_manifest():
    params = expected_shapes(OFFICIAL)
    everything = expected_shapes(OFFICIAL, include_buffers=True)
    assert (len(params), len(everything)) == (911, 947)
    assert params["fmt.pos_embed"] == (1, 60, 1024)
    assert params["audio_encoder.audio_projection.0.weight"] == (512, 9216)
    assert params["emotion_encoder.wav2vec2_for_emotion.classifier.out_proj.weight"] == (7, 1024)
    assert params[POS_CONV_G] == (1, 1, 128)
    assert "fmt.alignment_mask" not in params and everything["fmt.alignment_mask"] == (60, 60)


def test_validate_accepts_every_parameter_and_ignores_buffers():
    state_dict = _meta_state_dict()
    validate_state_dict(state_dict, OFFICIAL)
    state_dict["fmt.alignment_mask"] = torch.empty(3, 3, device="meta")  # buffers are never loaded
    validate_state_dict(state_dict, OFFICIAL)


def test_validate_names_a_missing_key_with_its_shape():
    state_dict = _meta_state_dict()
    del state_dict["fmt.x_embedder.proj.weight"]
    with pytest.raises(WeightsError, match=r"missing: fmt\.x_embedder\.proj\.weight \(expected shape \(1024, 512\)\)"):
        validate_state_dict(state_dict, OFFICIAL)


def test_validate_names_an_unexpected_key():
    state_dict = _meta_state_dict()
    state_dict["fmt.extra.weight"] = torch.empty(2, 3, device="meta")
    with pytest.raises(WeightsError, match=r"unexpected: fmt\.extra\.weight \(shape \(2, 3\)\)"):
        validate_state_dict(state_dict, OFFICIAL)


def test_validate_names_a_misshaped_key_expected_and_found():
    state_dict = _meta_state_dict()
    state_dict["motion_autoencoder.dec.direction.weight"] = torch.empty(512, 10, device="meta")
    with pytest.raises(WeightsError) as info:
        validate_state_dict(state_dict, OFFICIAL)
    assert ("wrong shape: motion_autoencoder.dec.direction.weight: expected (512, 20), found (512, 10)"
            in str(info.value))
    assert "1 problem(s)" in str(info.value)


def test_validate_caps_the_listing():
    state_dict = _meta_state_dict()
    fmt_keys = [k for k in state_dict if k.startswith("fmt.")]
    for key in fmt_keys:
        del state_dict[key]
    message = str(pytest.raises(WeightsError, validate_state_dict, state_dict, OFFICIAL).value)
    assert message.count("\n  missing: ") == 20
    assert f"... and {len(fmt_keys) - 20} more" in message


def test_resolve_missing_folder_lists_the_layout(tmp_path):
    with pytest.raises(WeightsError) as info:
        resolve_sources(tmp_path)
    message = str(info.value)
    for path in authors_layout(tmp_path):
        assert str(path) in message
    assert "python -m float_core download" in message
    assert str(tmp_path / AUDIO_DIR / "model.safetensors") in message
    assert str(tmp_path / EMOTION_DIR / "pytorch_model.bin") in message


def test_resolve_uses_the_environment_variable_and_sibling_folders(tmp_path, monkeypatch):
    (tmp_path / "float.pth").write_bytes(b"")
    (tmp_path / AUDIO_DIR).mkdir()
    (tmp_path / AUDIO_DIR / "model.safetensors").write_bytes(b"")
    monkeypatch.setenv("FLOAT_CHECKPOINT_DIR", str(tmp_path))
    assert resolve_sources() == WeightSources(tmp_path / "float.pth", tmp_path / AUDIO_DIR, None)
    # A single file: the authors' folders next to it are used too.
    assert resolve_sources(tmp_path / "float.pth").audio_model == tmp_path / AUDIO_DIR


def test_resolve_rejects_bad_files_and_folders(tmp_path):
    (tmp_path / "weights.txt").write_text("x")
    with pytest.raises(WeightsError, match=r"unsupported file type '\.txt'"):
        resolve_sources(tmp_path / "weights.txt")
    (tmp_path / "float.pth").write_bytes(b"")
    (tmp_path / EMOTION_DIR).mkdir()
    with pytest.raises(WeightsError, match=r"emotion model folder .* has no weights file"):
        resolve_sources(tmp_path)


def test_resolve_hub_id_offline_fails_fast(tmp_path):
    (tmp_path / "float.pth").write_bytes(b"")
    start = time.perf_counter()
    with pytest.raises(WeightsError, match=r"cannot fetch the audio model 'nobody/not-cached-anywhere'"):
        resolve_sources(tmp_path, audio_model="nobody/not-cached-anywhere")
    assert time.perf_counter() - start < 10


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_truncated_file_is_reported_as_incomplete(tmp_path, suffix):
    path = tmp_path / f"float{suffix}"
    tensors = {"fmt.x": torch.randn(256, 256), "fmt.y": torch.randn(64)}
    if suffix == ".safetensors":
        save_file(tensors, path)
    else:
        torch.save(tensors, path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(WeightsError, match="incomplete or corrupt") as info:
        load_state_dict(WeightSources(path), OFFICIAL)
    assert str(path) in str(info.value) and "download" in str(info.value)


def test_pickled_objects_are_refused(tmp_path):
    torch.save({"fmt.x": torch.zeros(2), "options": Path("not a tensor")}, tmp_path / "float.pth")
    with pytest.raises(WeightsError, match="holds objects other than tensors"):
        load_state_dict(WeightSources(tmp_path / "float.pth"), OFFICIAL)


def test_offline_download_fails_fast_naming_the_files(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    with pytest.raises(WeightsError) as info:
        download_weights(local_dir=tmp_path / "ckpt")
    assert time.perf_counter() - start < 10
    message = str(info.value)
    assert "yuvraj108c/float" in message and "HF_HUB_OFFLINE" in message
    for path in authors_layout(tmp_path / "ckpt"):
        assert str(path) in message


def test_cli_download_offline_exits_1_with_the_message(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "FLOAT_WEIGHTS_REPO": "someone/float-mirror"}
    done = subprocess.run([sys.executable, "-m", "float_core", "download", "--dir", str(tmp_path)],
                          capture_output=True, text=True, env=env, timeout=120,
                          cwd=Path(__file__).parents[1])
    assert done.returncode == 1
    assert done.stderr.startswith("error: cannot download the FLOAT weights from Hugging Face (someone/float-mirror)")
    assert str(tmp_path / "float.pth") in done.stderr and "Traceback" not in done.stderr


def test_load_model_rejects_bad_arguments():
    with pytest.raises(ValueError, match="dtype: expected .auto. or one of float32, bfloat16, float16"):
        load_model(OFFICIAL, state_dict={}, dtype="float64")
    with pytest.raises(ValueError, match="either sources or state_dict"):
        load_model(OFFICIAL, WeightSources(Path("x.pth")), state_dict={})


# --------------------------------------------------------------------------- with FloatModel
@pytest.fixture(scope="module")
def tiny_model():
    """A tiny FloatModel with seeded, non-degenerate random weights."""
    from float_core.models.float_model import FloatModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = FloatModel(TINY).eval()
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p) * 0.05)
    return model


def _parameters(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.named_parameters()}


def _write_authors_layout(model: torch.nn.Module, root: Path) -> Path:
    """float.pth without wav2vec2 keys (buffers included, as in a raw state_dict save) and the
    two Hugging Face folders as their hubs publish them."""
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2ForCTC

    state = model.state_dict()
    root.mkdir(parents=True)
    torch.save({k: v for k, v in state.items()
                if not k.startswith((AUDIO_PREFIX + "wav2vec2.", EMOTION_PREFIX))}, root / "float.pth")

    ctc = Wav2Vec2ForCTC(Wav2Vec2Config(**TINY.audio_wav2vec2))
    ctc.wav2vec2.load_state_dict({k[len(AUDIO_PREFIX + "wav2vec2."):]: v for k, v in state.items()
                                  if k.startswith(AUDIO_PREFIX + "wav2vec2.")})
    ctc.save_pretrained(root / AUDIO_DIR)  # model.safetensors + config.json; has lm_head.*
    Wav2Vec2FeatureExtractor().save_pretrained(root / AUDIO_DIR)

    emotion = root / EMOTION_DIR
    emotion.mkdir()
    Wav2Vec2Config(**TINY.emotion_wav2vec2).to_json_file(emotion / "config.json")
    torch.save(_legacy_weight_norm_names({k[len(EMOTION_PREFIX):]: v for k, v in state.items()
                                          if k.startswith(EMOTION_PREFIX)}), emotion / "pytorch_model.bin")
    return root


def _assert_same_tensors(actual: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert sorted(actual) == sorted(expected)
    for key, value in expected.items():
        assert torch.equal(actual[key], value), key


def test_official_manifest_matches_the_model_built_here():
    """The manifest's names (weight-norm naming included) are those of the installed versions."""
    from float_core.models.float_model import FloatModel

    with torch.device("meta"):
        model = FloatModel(OFFICIAL)
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == expected_shapes(
        OFFICIAL, include_buffers=True)


def test_authors_layout_loads_the_same_tensors(tiny_model, tmp_path):
    root = _write_authors_layout(tiny_model, tmp_path / "checkpoints")
    sources = resolve_sources(root)
    assert sources == WeightSources(root / "float.pth", root / AUDIO_DIR, root / EMOTION_DIR)
    expected = _parameters(tiny_model)
    state_dict = load_state_dict(sources, TINY)
    _assert_same_tensors(state_dict, expected)  # no buffers, no lm_head, weight_g/v renamed

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = load_model(TINY, sources)
    assert not model.training
    _assert_same_tensors(_parameters(model), expected)
    for key, buffer in tiny_model.named_buffers():
        assert torch.equal(dict(model.named_buffers())[key], buffer), key


def test_missing_wav2vec2_folder_says_where_to_put_it(tiny_model, tmp_path):
    root = _write_authors_layout(tiny_model, tmp_path / "checkpoints")
    sources = WeightSources(root / "float.pth", root / AUDIO_DIR, None)
    with pytest.raises(WeightsError, match=r"lacks the emotion model weights") as info:
        load_state_dict(sources, TINY)
    assert str(root / EMOTION_DIR) in str(info.value) and "--emotion-model" in str(info.value)


def test_convert_round_trip_through_one_safetensors_file(tiny_model, tmp_path):
    root = _write_authors_layout(tiny_model, tmp_path / "checkpoints")
    out = convert_to_safetensors(resolve_sources(root), TINY, tmp_path / "out" / "float.safetensors")
    # no temp file left; the tiny size is recorded beside the weights
    assert sorted(p.name for p in out.parent.iterdir()) == ["float.safetensors", "float_config.json"]
    single = resolve_sources(out)
    assert single.checkpoint == out and single.audio_model is None and single.emotion_model is None
    _assert_same_tensors(load_state_dict(single, TINY), _parameters(tiny_model))


def test_cli_convert(tiny_model, tmp_path, capsys):
    root = _write_authors_layout(tiny_model, tmp_path / "checkpoints")
    out = tmp_path / "tiny.safetensors"
    assert cli.main(["convert", "--checkpoint", str(root), "--config", "tiny", "--out", str(out)]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    _assert_same_tensors(load_state_dict(WeightSources(out), TINY), _parameters(tiny_model))
    assert cli.main(["convert", "--checkpoint", str(tmp_path / "nowhere"), "-o", str(out)]) == 1
    assert capsys.readouterr().err.startswith(f"error: no FLOAT checkpoint at {tmp_path / 'nowhere'}")


def test_weight_norm_names_accepted_in_both_spellings(tiny_model, tmp_path):
    expected = _parameters(tiny_model)
    legacy = _legacy_weight_norm_names(expected)
    assert legacy.keys() != expected.keys()
    path = tmp_path / "legacy.pth"
    torch.save(legacy, path)
    _assert_same_tensors(load_state_dict(WeightSources(path), TINY), expected)
    _assert_same_tensors(_parameters(load_model(TINY, state_dict=legacy)), expected)


def test_load_model_rejects_a_misshaped_state_dict_before_building(tiny_model):
    state_dict = _parameters(tiny_model)
    state_dict["fmt.pos_embed"] = state_dict["fmt.pos_embed"][:, :-1]
    with pytest.raises(WeightsError, match=r"wrong shape: fmt\.pos_embed"):
        load_model(TINY, state_dict=state_dict)


@pytest.mark.slow
def test_full_size_random_checkpoint_loads_without_warnings(tmp_path):
    """All 947 keys of the released float.pth (random values) in the authors' layout."""
    generator = torch.Generator().manual_seed(0)
    state_dict = {}
    for key, shape in expected_shapes(OFFICIAL, include_buffers=True).items():
        # Buffers get garbage on purpose: they must be ignored (rebuilt by the constructors).
        state_dict[key] = torch.empty(shape).uniform_(-0.05, 0.05, generator=generator)
    state_dict["fmt.alignment_mask"] = torch.ones(60, 60, dtype=torch.bool)
    torch.save(state_dict, tmp_path / "float.pth")
    probe = {k: state_dict[k].clone() for k in ("fmt.blocks.7.mlp.fc2.weight", POS_CONV_G,
                                                "motion_autoencoder.dec.direction.weight")}
    del state_dict

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = load_model(OFFICIAL, resolve_sources(tmp_path))
    loaded = model.state_dict()
    for key, value in probe.items():
        assert torch.equal(loaded[key], value), key
    # The constructor's band (True = blocked; |i - j| <= 2 allowed), not the file's all-True mask.
    assert loaded["fmt.alignment_mask"].sum() == 60 * 60 - (60 * 5 - 6)


@pytest.mark.parametrize("safetensors", [True, False])
def test_save_pretrained_round_trip_of_a_trained_non_official_size(tmp_path, safetensors):
    """A model of another size, as training exports it, goes through save_pretrained and
    from_pretrained unchanged (every tensor, the size, the numbers it computes); convert keeps
    its float_config.json without being told the size."""
    from float_core.models.float_model import FloatModel
    from float_core.pipeline import FloatPipeline
    from float_core.train.loop import export_weights

    config = FloatConfig.tiny().replace(fmt_depth=1, num_frames=8)
    trained = FloatPipeline(FloatModel(config), device="cpu")
    with torch.no_grad():
        trained.model.fmt.decoder.linear.bias.add_(1.0)  # a change that must survive
    run = tmp_path / "run"
    export_weights(trained.model.state_dict(), config, run)
    loaded = FloatPipeline.from_pretrained(run, device="cpu")
    saved = loaded.save_pretrained(tmp_path / "saved", safetensors=safetensors)
    assert saved.name == ("float.safetensors" if safetensors else "float.pth")
    again = FloatPipeline.from_pretrained(tmp_path / "saved", device="cpu")
    assert again.config == config
    _assert_same_tensors(_parameters(again.model), _parameters(trained.model))
    with pytest.raises(ValueError, match="already holds"):
        again.save_pretrained(tmp_path / "saved", safetensors=not safetensors)
    out = tmp_path / "converted" / "model.safetensors"
    assert cli.main(["convert", "--checkpoint", str(run), "-o", str(out)]) == 0
    assert FloatPipeline.from_pretrained(out, device="cpu").config == config
