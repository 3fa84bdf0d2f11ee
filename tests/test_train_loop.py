"""Training infrastructure and the stage-2 objective on known values (no dataset needed)."""

from __future__ import annotations

import argparse
import itertools

import pytest
import torch

from float_core.config import CONFIG_FILE_NAME, FloatConfig
from float_core.models.fmt import FlowMatchingTransformer
from float_core.pipeline import FloatPipeline
from float_core.train.loop import (
    CheckpointManager,
    Distributed,
    RunConfig,
    StepSampler,
    add_config_arguments,
    config_from_sources,
    export_weights,
    inference_view,
    load_base_model,
    lr_factor,
    set_learning_rates,
    step_generator,
)
from float_core.train.stage2 import (
    FlowMatchingObjective,
    Stage2Config,
    StepDraws,
    flow_matching_pair,
    fmt_losses,
    initialize_trained,
    keep_mask,
)

CPU = Distributed(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))


# --------------------------------------------------------------------------- configuration
def test_config_yaml_then_flags(tmp_path):
    yaml_file = tmp_path / "run.yaml"
    yaml_file.write_text("data: some/dir\nsteps: 7\nlr: 0.5\ncond_dropout: 0.2\n")
    config = config_from_sources(Stage2Config, str(yaml_file), {"steps": 9, "lr": None})
    assert (config.data, config.steps, config.lr, config.cond_dropout) == ("some/dir", 9, 0.5, 0.2)
    assert config.prev_dropout == 0.5 and config.lambda_vel == 1.0  # paper defaults kept


def test_config_rejects_unknown_and_bad_values(tmp_path):
    with pytest.raises(ValueError, match="unknown option.*stpes"):
        config_from_sources(Stage2Config, None, {"data": "d", "stpes": 3})
    with pytest.raises(ValueError, match="cond_dropout must be a probability"):
        config_from_sources(Stage2Config, None, {"data": "d", "cond_dropout": 1.5})
    with pytest.raises(ValueError, match="data: pass the folder"):
        config_from_sources(Stage2Config, None, {})
    with pytest.raises(ValueError, match="model preset must be one of"):
        config_from_sources(RunConfig, None, {"data": "d", "model": "huge"})
    with pytest.raises(ValueError, match="lr_schedule must be one of constant, cosine"):
        config_from_sources(Stage2Config, None, {"data": "d", "lr_schedule": "linear"})


def test_command_line_flags_map_to_fields():
    parser = argparse.ArgumentParser()
    add_config_arguments(parser, Stage2Config)
    args = parser.parse_args(["--batch-size", "4", "--finetune", "--progress", "false", "--cond-dropout", "0.3"])
    assert (args.batch_size, args.finetune, args.progress, args.cond_dropout) == (4, True, False, 0.3)
    assert args.lr is None  # unset flags do not override YAML values
    assert "probability of zeroing each of w_r" in parser.format_help().replace("\n", " ").replace("  ", " ")


def test_cosine_schedule_from_the_initial_rate_and_through_a_resume():
    assert [lr_factor("constant", step, 8) for step in (0, 4, 7)] == [1.0, 1.0, 1.0]
    assert lr_factor("cosine", 0, 8) == 1.0 and lr_factor("cosine", 4, 8) == pytest.approx(0.5)
    assert lr_factor("cosine", 6, 8) == pytest.approx((1 - 0.5**0.5) / 2)
    assert 0 < lr_factor("cosine", 7, 8) < 0.04  # the last step still moves the weights a little
    weights = [torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(3))]
    g, d = torch.optim.Adam([weights[0]], lr=4e-3), torch.optim.Adam([weights[1]], lr=1e-3)
    set_learning_rates([g, d], 0.5)
    set_learning_rates([g, d], 0.25)  # always relative to the initial rate, never compounding
    assert (g.param_groups[0]["lr"], d.param_groups[0]["lr"]) == (1e-3, 2.5e-4)
    # A resumed run restores the initial rate with the optimiser's state, whatever --lr says now.
    resumed = torch.optim.Adam([weights[0]], lr=1.0)
    resumed.load_state_dict(g.state_dict())
    set_learning_rates([resumed], 0.5)
    assert resumed.param_groups[0]["lr"] == 2e-3


# --------------------------------------------------------------------------- determinism
def test_step_sampler_indices_depend_only_on_step_and_rank():
    def first(sampler, n):
        return list(itertools.islice(iter(sampler), n))

    single = first(StepSampler(4, CPU, start_step=0), 12)
    assert single == list(range(12))
    assert first(StepSampler(4, CPU, start_step=2), 4) == [8, 9, 10, 11]  # resume at step 2
    rank1 = Distributed(rank=1, world_size=2, local_rank=1, device=torch.device("cpu"))
    rank0 = Distributed(rank=0, world_size=2, local_rank=0, device=torch.device("cpu"))
    # Two processes with batch 2 each cover the same global indices as one process with batch 4.
    assert first(StepSampler(2, rank0), 4) == [0, 1, 4, 5]
    assert first(StepSampler(2, rank1), 4) == [2, 3, 6, 7]


def test_step_generator_is_a_function_of_its_arguments():
    a = torch.rand(3, generator=step_generator(1, 5, 0))
    assert torch.equal(a, torch.rand(3, generator=step_generator(1, 5, 0)))
    for other in (step_generator(1, 6, 0), step_generator(1, 5, 1), step_generator(2, 5, 0)):
        assert not torch.equal(a, torch.rand(3, generator=other))


# --------------------------------------------------------------------------- checkpoints and exports
def test_checkpoint_manager_keeps_newest_and_points_to_latest(tmp_path):
    manager = CheckpointManager(tmp_path, keep=2)
    assert manager.resolve("auto") is None
    for step in (1, 2, 3):
        manager.save(step, {"x": torch.tensor([step])})
    names = sorted(p.name for p in (tmp_path / "checkpoints").glob("step_*.pt"))
    assert names == ["step_00000002.pt", "step_00000003.pt"]
    latest = manager.resolve("auto")
    assert latest.name == "step_00000003.pt"
    state = manager.load(latest)
    assert state["step"] == 3 and state["x"].item() == 3
    assert manager.resolve("never") is None
    with pytest.raises(ValueError, match="no checkpoint file"):
        manager.resolve(str(tmp_path / "nope.pt"))
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot read the training checkpoint"):
        manager.load(tmp_path / "bad.pt")


def test_export_round_trips_through_from_pretrained(tmp_path):
    model = load_base_model("tiny-random", FloatConfig.tiny())
    with torch.no_grad():
        model.fmt.decoder.linear.bias.add_(1.0)  # a change that must survive the round trip
    path = export_weights(model.state_dict(), model.config, tmp_path)
    assert path.name == "float.pth" and (tmp_path / CONFIG_FILE_NAME).is_file()
    pipe = FloatPipeline.from_pretrained(tmp_path, device="cpu")
    assert pipe.config == FloatConfig.tiny()
    for key, value in model.state_dict().items():
        assert torch.equal(pipe.model.state_dict()[key], value), key
    # The same folder with the wrong size asked for is refused with a clear message.
    with pytest.raises(ValueError, match="another size"):
        load_base_model(str(tmp_path), FloatConfig.official())


def test_inference_view_restores_training_state():
    model = load_base_model("tiny-random", FloatConfig.tiny())
    model.fmt.pos_embed.requires_grad_(False)
    with inference_view(model):
        FloatPipeline(model, device="cpu")  # switches to eval and freezes everything
        assert not model.training
    assert model.training and model.fmt.training
    assert model.fmt.blocks[0].attn.qkv.weight.requires_grad and not model.fmt.pos_embed.requires_grad


# --------------------------------------------------------------------------- stage-2 objective
def test_flow_matching_pair_endpoints_and_target():
    x1, x0 = torch.randn(2, 5, 3), torch.randn(2, 5, 3)
    xt, ut = flow_matching_pair(x1, x0, torch.tensor([0.0, 1.0]))
    assert torch.equal(xt[0], x0[0]) and torch.equal(xt[1], x1[1])
    assert torch.equal(ut, x1 - x0)
    xt, _ = flow_matching_pair(x1, x0, torch.tensor([0.25, 0.25]))
    torch.testing.assert_close(xt, 0.75 * x0 + 0.25 * x1)


def test_fmt_losses_analytic():
    u = torch.zeros(1, 4, 1)
    v = torch.tensor([0.0, 1.0, 1.0, 3.0]).reshape(1, 4, 1)
    ot, vel = fmt_losses(v, u)
    assert ot.item() == pytest.approx(5 / 4)  # mean |v - u|
    assert vel.item() == pytest.approx((1 + 0 + 2) / 3)  # mean |Δv - Δu|
    ot, vel = fmt_losses(u + 2.0, u)  # a constant offset costs OT but no velocity loss
    assert (ot.item(), vel.item()) == (2.0, 0.0)


def test_keep_mask_rate():
    mask = keep_mask(20000, 0.1, torch.Generator().manual_seed(0))
    assert set(mask.unique().tolist()) == {0.0, 1.0}
    assert abs(1 - mask.mean().item() - 0.1) < 0.01
    assert keep_mask(10, 0.0, torch.Generator()).eq(1).all() and keep_mask(10, 1.0, torch.Generator()).eq(0).all()


def _objective(config: FloatConfig) -> tuple[FlowMatchingObjective, torch.nn.Module]:
    model = load_base_model("tiny-random", config)
    initialize_trained(model.fmt, model.audio_encoder.audio_projection, seed=0)
    return FlowMatchingObjective(model.fmt, model.audio_encoder.audio_projection, config.num_prev_frames), model


def test_dit_initialisation_gives_zero_field():
    config = FloatConfig.tiny()
    _, model = _objective(config)
    fmt: FlowMatchingTransformer = model.fmt
    n, lp = config.sequence_length, config.num_prev_frames
    v = fmt(torch.rand(2), torch.randn(2, n - lp, 32), torch.randn(2, n - lp, 16), torch.randn(2, 32),
            torch.rand(2, 7), torch.randn(2, lp, 32), torch.randn(2, lp, 16))
    assert torch.equal(v, torch.zeros_like(v))


def _window_batch(config: FloatConfig, batch: int = 3, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    n = config.sequence_length
    features = config.audio_wav2vec2["num_hidden_layers"] * config.audio_wav2vec2["hidden_size"]
    return {"motion": torch.randn(batch, n, config.style_dim, generator=g),
            "audio": torch.randn(batch, n, features, generator=g),
            "emotion": torch.rand(batch, 7, generator=g).softmax(-1),
            "source_motion": torch.randn(batch, config.style_dim, generator=g)}


def test_objective_with_zero_field_equals_target_norms():
    config = FloatConfig.tiny()
    objective, _ = _objective(config)
    batch = _window_batch(config)
    draws = StepDraws.draw(3, config.sequence_length, config.style_dim, Stage2Config(data="d"),
                           torch.Generator().manual_seed(1))
    ot, vel = objective(batch, draws)
    _, u = flow_matching_pair(batch["motion"], draws.x0, draws.t)
    expected_ot, expected_vel = fmt_losses(torch.zeros_like(u), u)  # v == 0 at initialisation
    torch.testing.assert_close(ot, expected_ot)
    torch.testing.assert_close(vel, expected_vel)


def test_dropped_conditions_do_not_reach_the_field():
    """A dropped condition must not influence v: changing it leaves the output unchanged."""
    config = FloatConfig.tiny()
    objective, _ = _objective(config)
    with torch.no_grad():  # leave DiT's zero init so that every input matters
        for p in objective.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    batch = _window_batch(config, batch=2)
    base = StepDraws.draw(2, config.sequence_length, config.style_dim, Stage2Config(data="d"),
                          torch.Generator().manual_seed(3))
    zeros, ones = torch.zeros(2), torch.ones(2)
    draws = StepDraws(base.t, base.x0, keep_wr=zeros, keep_we=zeros, keep_audio=ones, keep_prev=zeros)
    altered = dict(batch, source_motion=batch["source_motion"] + 5, emotion=batch["emotion"].flip(-1))
    assert torch.equal(objective(batch, draws)[0], objective(altered, draws)[0])
    # With everything kept, the same change does alter the loss.
    kept = StepDraws(base.t, base.x0, ones, ones, ones, ones)
    assert not torch.equal(objective(batch, kept)[0], objective(altered, kept)[0])


def test_base_none_takes_the_public_wav2vec2_weights(tmp_path):
    """Training from scratch without float.pth: random networks plus the pretrained audio model."""
    from transformers import Wav2Vec2Config, Wav2Vec2ForCTC

    config = FloatConfig.tiny()
    torch.manual_seed(5)
    hub_model = Wav2Vec2ForCTC(Wav2Vec2Config(**config.audio_wav2vec2))
    hub_model.save_pretrained(tmp_path / "audio")  # a Hugging Face folder, as downloaded
    model = load_base_model("none", config, audio_model=str(tmp_path / "audio"))
    ours = model.audio_encoder.wav2vec2.state_dict()
    for key, value in hub_model.wav2vec2.state_dict().items():
        if key in ours:
            assert torch.equal(ours[key], value), key
    assert torch.equal(ours["feature_projection.projection.weight"],
                       hub_model.wav2vec2.feature_projection.projection.weight)
    random_model = load_base_model("none", config)
    assert not torch.equal(random_model.audio_encoder.wav2vec2.feature_projection.projection.weight,
                           ours["feature_projection.projection.weight"])
    from float_core.weights import WeightsError

    with pytest.raises(WeightsError, match="neither a folder nor a Hugging Face model id"):
        load_base_model("none", config, audio_model=str(tmp_path / "missing" / "x" / "y"))
