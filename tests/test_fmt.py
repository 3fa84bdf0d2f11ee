"""Flow matching transformer (float_core/models/fmt.py) against the reference fixtures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers import Fixture, assert_close

from float_core.config import FloatConfig
from float_core.models.fmt import (
    FlowMatchingTransformer, TimestepEmbedder, alignment_mask, sinusoid_table, timestep_embedding,
)

FORWARD_INPUTS = ("t", "x", "wa", "wr", "we", "prev_x", "prev_wa")
MANIFEST = Path(__file__).parents[1] / "float_core" / "data" / "float_manifest.json"


def tiny_fmt(fixture: Fixture) -> FlowMatchingTransformer:
    """The fixtures' tiny FMT (hidden 64, 4 heads, depth 2, d 16, L 5, L' 2, T 2) with their weights."""
    c = fixture.meta.get("ctor") or fixture.meta["fmt_ctor"]
    fmt = FlowMatchingTransformer(
        dim_h=c["dim_h"], num_heads=c["num_heads"], depth=c["fmt_depth"], dim_w=c["dim_w"], dim_a=c["dim_a"],
        dim_e=c["dim_e"], mlp_ratio=c["mlp_ratio"], num_frames=c["num_frames_for_clip"],
        num_prev_frames=c["num_prev_frames"], attention_window=c["attention_window"],
    ).eval()
    fmt.load_state_dict(fixture.state_dict(), strict=True)
    return fmt


def test_constructor_builds_the_fixture_buffers_and_table():
    """pos_embed and alignment_mask come out of the constructor equal to the stored ones."""
    f = Fixture("fmt_tiny_forward")
    c = f.meta["ctor"]
    fresh = FlowMatchingTransformer(64, 4, 2, 16, 16, 7, 4.0, c["num_frames_for_clip"], 2, 2)
    assert list(fresh.state_dict()) == f.meta["state_dict_keys"]
    assert [name for name, _ in fresh.named_buffers()] == f.meta["buffer_keys"]
    assert_close(fresh.pos_embed, f.tensor("pos_embed"), atol=0)
    assert torch.equal(fresh.alignment_mask, f.tensor("alignment_mask"))
    assert not fresh.pos_embed.requires_grad


@torch.no_grad()
def test_forward_matches_reference():
    f = Fixture("fmt_tiny_forward")
    y = tiny_fmt(f)(*(f.input(n) for n in FORWARD_INPUTS))
    assert_close(y, f.output("y"))


@torch.no_grad()
def test_forward_accepts_emotion_without_frame_axis():
    f = Fixture("fmt_tiny_forward")
    fmt = tiny_fmt(f)
    inputs = {n: f.input(n) for n in FORWARD_INPUTS}
    inputs["we"] = inputs["we"][:, 0]
    assert_close(fmt(**inputs), f.output("y"))


@torch.no_grad()
def test_forward_rejects_wrong_sequence_length():
    f = Fixture("fmt_tiny_forward")
    inputs = {n: f.input(n) for n in FORWARD_INPUTS}
    inputs["x"] = inputs["x"][:, :4]  # 4 latents, 5 audio frames
    with pytest.raises(ValueError, match="L' \\+ L = 7"):
        tiny_fmt(f)(**inputs)
    inputs["x"] = torch.cat([f.input("x")] * 2, dim=1)  # longer than L
    inputs["wa"] = torch.cat([f.input("wa")] * 2, dim=1)
    with pytest.raises(ValueError, match="L' \\+ L = 7"):
        tiny_fmt(f)(**inputs)


@torch.no_grad()
def test_a_shorter_pass_equals_the_full_pass_where_the_band_cannot_see_the_difference():
    """Frames i of a pass over the first n positions equal those of the full pass wherever the
    band (T = 2 per layer, depth 2: 4 frames) does not reach the cut (up to float rounding of
    differently shaped matmuls)."""
    f = Fixture("fmt_tiny_forward")
    fmt = tiny_fmt(f)
    inputs = {n: f.input(n) for n in FORWARD_INPUTS}
    full = fmt(**inputs)
    for n in (1, 3, 5):
        short = fmt(**{**inputs, "x": inputs["x"][:, :n], "wa": inputs["wa"][:, :n]})
        assert short.shape == (full.shape[0], 2 + n, full.shape[2])
        reach = 2 * len(fmt.blocks)  # T frames per layer
        same = max(0, 2 + n - reach)
        torch.testing.assert_close(short[:, :same], full[:, :same], rtol=0, atol=1e-6)


@torch.no_grad()
def test_guided_velocity_matches_reference_and_branches():
    """Eq. 13 on one batch of three condition sets, and each branch's zeroing semantics."""
    f = Fixture("fmt_tiny_forward_with_cfv")
    fmt = tiny_fmt(f)
    inputs = {n: f.input(n) for n in FORWARD_INPUTS}
    scales = f.meta["scales"]
    v = fmt.guided_velocity(**inputs, a_cfg=scales["a_cfg_scale"], e_cfg=scales["e_cfg_scale"])
    assert_close(v, f.output("v"))

    # The branches: previous latents/audio and the source motion are never zeroed.
    zero_wa, zero_we = torch.zeros_like(inputs["wa"]), torch.zeros_like(inputs["we"])
    assert_close(fmt(**{**inputs, "wa": zero_wa, "we": zero_we}), f.output("branch_uncond"))
    assert_close(fmt(**inputs), f.output("branch_all_cond"))
    assert_close(fmt(**{**inputs, "we": zero_we}), f.output("branch_audio_cond"))


@torch.no_grad()
@pytest.mark.parametrize("a_cfg, e_cfg", [(1.0, 1.0), (2.5, 2.5), (0.0, 3.0)])
def test_guided_velocity_shortcuts_equal_three_branch_formula(a_cfg, e_cfg):
    """a = e = 1 (one branch) and a = e (two branches) equal v_u + a (v_a - v_u) + e (v_ae - v_a)."""
    f = Fixture("fmt_tiny_forward_with_cfv")
    fmt = tiny_fmt(f)
    inputs = {n: f.input(n) for n in FORWARD_INPUTS}
    u, ae, a = (f.output(n) for n in ("branch_uncond", "branch_all_cond", "branch_audio_cond"))
    expected = u + a_cfg * (a - u) + e_cfg * (ae - a)
    assert_close(fmt.guided_velocity(**inputs, a_cfg=a_cfg, e_cfg=e_cfg), expected)


@torch.no_grad()
def test_guided_velocity_single_evaluation_at_unit_scales():
    """At a = e = 1 only one (un-batched) forward pass runs."""
    f = Fixture("fmt_tiny_forward_with_cfv")
    fmt = tiny_fmt(f)
    batch_sizes: list[int] = []
    fmt.register_forward_hook(lambda module, args, output: batch_sizes.append(output.shape[0]))
    inputs = {n: f.input(n) for n in FORWARD_INPUTS}
    fmt.guided_velocity(**inputs, a_cfg=1.0, e_cfg=1.0)
    fmt.guided_velocity(**inputs, a_cfg=2.0, e_cfg=1.5)
    assert batch_sizes == [2, 6]


@torch.no_grad()
def test_timestep_embedder_matches_reference():
    f = Fixture("timestep_embedder")
    t = f.input("t")
    assert_close(timestep_embedding(t, 256), f.output("freq"))
    assert_close(timestep_embedding(t, 9), f.output("freq_dim9"))
    assert torch.all(timestep_embedding(t, 9)[:, -1] == 0)
    embedder = TimestepEmbedder(f.meta["ctor"]["hidden_size"], f.meta["ctor"]["frequency_embedding_size"])
    embedder.load_state_dict(f.state_dict(), strict=True)
    assert_close(embedder(t), f.output("emb"))


@pytest.mark.parametrize("name, n, dim", [("table_60x1024", 60, 1024), ("table_7x64", 7, 64)])
def test_sinusoid_table_matches_reference(name, n, dim):
    assert_close(sinusoid_table(n, dim), Fixture("sinusoid_table").output(name))


def test_sinusoid_table_analytic_values():
    table = sinusoid_table(3, 4)
    assert torch.equal(table[0], torch.tensor([0.0, 1.0, 0.0, 1.0]))  # sin 0, cos 0
    assert table[2, 0] == pytest.approx(torch.sin(torch.tensor(2.0)).item())
    assert table[2, 3] == pytest.approx(torch.cos(torch.tensor(2.0 / 100.0)).item())  # 10000^(2/4) = 100


@pytest.mark.parametrize("name, n, window", [("mask_T60_w2", 60, 2), ("mask_T7_w2", 7, 2), ("mask_T9_w1", 9, 1)])
def test_alignment_mask_matches_reference(name, n, window):
    expected = Fixture("alignment_mask").output(name)
    mask = alignment_mask(n, window)
    assert mask.dtype == torch.bool
    assert torch.equal(mask, expected)


@pytest.mark.parametrize("call", [lambda: alignment_mask(0, 2), lambda: alignment_mask(5, -1),
                                  lambda: sinusoid_table(0, 8), lambda: timestep_embedding(torch.zeros(2), 0)])
def test_pure_helpers_reject_bad_sizes(call):
    with pytest.raises(ValueError):
        call()


def test_constructor_rejects_indivisible_heads():
    with pytest.raises(ValueError, match="num_heads"):
        FlowMatchingTransformer(60, 8, 1, 16, 16, 7, 4.0, 5, 2, 2)


def test_official_size_state_dict_matches_manifest():
    """Every fmt.* key of float.pth with its shape and parameter/buffer kind (built on meta: no memory)."""
    entries = json.loads(MANIFEST.read_text())["entries"]
    expected = {key[len("fmt."):]: (tuple(shape), is_buffer) for key, shape, is_buffer, _ in entries
                if key.startswith("fmt.")}
    with torch.device("meta"):
        fmt = FlowMatchingTransformer.from_config(FloatConfig.official())
    buffers = {name for name, _ in fmt.named_buffers()}
    actual = {name: (tuple(t.shape), name in buffers) for name, t in fmt.state_dict().items()}
    assert actual == expected


def test_from_config_tiny_shapes():
    config = FloatConfig.tiny()
    fmt = FlowMatchingTransformer.from_config(config)
    assert fmt.pos_embed.shape == (1, config.sequence_length, config.fmt_hidden)
    assert fmt.c_embedder.in_features == config.style_dim + config.dim_a + config.dim_e
    assert len(fmt.blocks) == config.fmt_depth
