"""ODE solvers and the windowed motion sampler (float_core/sampling.py)."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import Fixture, assert_close
from test_fmt import tiny_fmt

from float_core.sampling import (
    SOLVERS, ChunkSchedule, WindowInputs, WindowSampler, euler, iter_motion_windows, midpoint, num_steps, num_windows, rk4, sample_motion,
    time_grid,
)

REFERENCE_RUNS = ("float_sample_tiny_s2e", "float_sample_tiny_onehot")


# --------------------------------------------------------------------------- solvers
def _grid(steps: int) -> torch.Tensor:
    return torch.linspace(0, 1, steps + 1, dtype=torch.float64)


def _exp_sin_field(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """dx/dt = cos(t) x, so x(1) = x(0) exp(sin 1); depends on t and x."""
    assert t.shape == (1,)
    return torch.cos(t) * x


@pytest.mark.parametrize("solver, order", [(euler, 1), (midpoint, 2), (rk4, 4)])
def test_solver_convergence_order(solver, order):
    x0 = torch.tensor([1.0, -0.5], dtype=torch.float64)
    exact = x0 * math.exp(math.sin(1.0))
    errors = [(solver(_exp_sin_field, x0, _grid(n)) - exact).abs().max().item() for n in (8, 16, 32)]
    rates = [math.log2(errors[i] / errors[i + 1]) for i in range(2)]
    assert all(abs(rate - order) < 0.25 for rate in rates), rates


def test_solver_exactness_on_polynomial_fields():
    """Euler is exact for constant fields, midpoint for dx/dt = t, rk4 for dx/dt = 4 t^3 (Simpson)."""
    x0, grid = torch.zeros(1, dtype=torch.float64), _grid(4)
    for solver in (euler, midpoint, rk4):
        assert solver(lambda t, x: torch.full_like(x, 3.0), x0, grid).item() == pytest.approx(3.0, abs=1e-14)
    assert midpoint(lambda t, x: t.expand_as(x), x0, grid).item() == pytest.approx(0.5, abs=1e-14)
    assert euler(lambda t, x: t.expand_as(x), x0, grid).item() == pytest.approx(3 / 8, abs=1e-14)  # sum of t_k h
    cubic = lambda t, x: (4 * t**3).expand_as(x)  # noqa: E731
    assert rk4(cubic, x0, grid).item() == pytest.approx(1.0, abs=1e-14)
    assert abs(midpoint(cubic, x0, grid).item() - 1.0) > 1e-3


@pytest.mark.parametrize("solver, nfe, steps", [("euler", 9, 9), ("midpoint", 10, 5), ("midpoint", 9, 4),
                                                ("rk4", 10, 2), ("rk4", 3, 1), ("euler", 1, 1)])
def test_time_grid_counts_evaluations(solver, nfe, steps):
    grid = time_grid(nfe, solver)
    assert grid.dtype == torch.float32 and len(grid) == steps + 1 and num_steps(nfe, solver) == steps
    assert grid[0] == 0 and grid[-1] == 1
    calls = []
    SOLVERS[solver](lambda t, x: calls.append(t) or x, torch.zeros(1), grid)
    assert len(calls) == steps * SOLVERS[solver].evals_per_step


def test_time_grid_reproduces_reference_grid():
    """The reference's nfe = 10 is linspace(0, 1, 10): our Euler with NFE 9."""
    assert torch.equal(time_grid(9, "euler"), Fixture("float_sample_tiny_s2e").input("time_grid"))


@pytest.mark.parametrize("kwargs, match", [({"nfe": 0}, "nfe"), ({"nfe": 2.5}, "nfe"), ({"nfe": True}, "nfe"),
                                           ({"nfe": 4, "solver": "heun"}, "euler")])
def test_time_grid_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        time_grid(**kwargs)


def test_num_windows():
    assert [num_windows(t, 5) for t in (1, 5, 6, 12, 15)] == [1, 1, 2, 3, 3]
    with pytest.raises(ValueError):
        num_windows(0, 5)


# --------------------------------------------------------------------------- windowed sampler
def _reference_run(name: str):
    f = Fixture(name)
    call = f.meta["call"]
    args = (tiny_fmt(f), f.input("wa"), f.input("r_s"), f.input("we")[:, 0])
    return f, args, dict(a_cfg=call["a_cfg_scale"], e_cfg=call["e_cfg_scale"])


@pytest.mark.parametrize("name", REFERENCE_RUNS)
def test_sample_reproduces_reference(name):
    """The reference FLOAT.sample (nfe 10 -> 9 Euler evaluations) with its per-window noise."""
    f, args, scales = _reference_run(name)
    seen: list[WindowInputs] = []
    out = sample_motion(*args, **scales, nfe=9, solver="euler", noise=f.output("x0_per_chunk"),
                        on_window=seen.append)
    assert_close(out, f.output("sample"))
    assert [w.index for w in seen] == [0, 1, 2] and [w.num_real for w in seen] == [5, 5, 2]
    for k, window in enumerate(seen):
        assert_close(window.audio, f.output("wa_chunk_padded")[k], atol=0)
        assert_close(window.prev_x, f.output("prev_x_per_chunk")[k])
        assert_close(window.prev_wa, f.output("prev_wa_per_chunk")[k], atol=0)


def test_windows_are_yielded_incrementally():
    """The first window is available after exactly one window's evaluations."""
    f, args, scales = _reference_run("float_sample_tiny_s2e")
    fmt = args[0]
    passes: list[int] = []
    fmt.register_forward_hook(lambda module, inputs, output: passes.append(output.shape[0]))
    windows = iter_motion_windows(*args, **scales, nfe=9, noise=f.output("x0_per_chunk"))
    assert passes == []  # a generator: nothing runs before the first next()
    first = next(windows)
    assert first.shape == (1, 5, 16) and len(passes) == 9 and set(passes) == {3}  # 3 batched branches
    assert_close(first, f.output("sample")[:, :5])
    rest = list(windows)
    assert [w.shape[1] for w in rest] == [5, 2] and len(passes) == 27


def test_progress_reports_every_evaluation():
    f, args, scales = _reference_run("float_sample_tiny_onehot")
    reports: list[tuple[str, int, int]] = []
    sample_motion(*args, **scales, nfe=4, solver="midpoint", seed=0, progress=lambda *p: reports.append(p))
    assert reports == [("sampling", i, 12) for i in range(1, 13)]  # 3 windows x 2 steps x 2 evaluations


def test_seeded_noise_is_deterministic_and_differs_across_windows():
    f, args, scales = _reference_run("float_sample_tiny_s2e")
    noises: list[torch.Tensor] = []
    a = sample_motion(*args, **scales, nfe=2, seed=7, on_window=lambda w: noises.append(w.x0))
    b = sample_motion(*args, **scales, nfe=2, seed=7)
    c = sample_motion(*args, **scales, nfe=2, seed=8)
    assert torch.equal(a, b) and not torch.allclose(a, c)
    assert not torch.allclose(noises[0], noises[1]) and not torch.allclose(noises[1], noises[2])
    # The contract: one CPU generator seeded once, drawing (B, L, d) per window in order.
    generator = torch.Generator().manual_seed(7)
    expected = torch.stack([torch.randn(1, 5, 16, generator=generator) for _ in range(3)])
    assert torch.equal(torch.stack(noises), expected)
    assert torch.equal(sample_motion(*args, **scales, nfe=2, noise=expected), a)


def test_unseeded_noise_differs_between_calls():
    f, args, scales = _reference_run("float_sample_tiny_s2e")
    assert not torch.allclose(sample_motion(*args, **scales, nfe=1), sample_motion(*args, **scales, nfe=1))


def test_batch_members_are_independent():
    """A batch of two equals the two single runs (window bookkeeping is per sample)."""
    f, (fmt, wa, wr, we), scales = _reference_run("float_sample_tiny_s2e")
    noise = torch.randn(3, 2, 5, 16, generator=torch.Generator().manual_seed(1))
    wa2, wr2, we2 = torch.cat([wa, wa.flip(1)]), torch.cat([wr, -wr]), torch.cat([we, we.flip(1)])
    both = sample_motion(fmt, wa2, wr2, we2, **scales, nfe=3, noise=noise)
    for i in range(2):
        single = sample_motion(fmt, wa2[i:i + 1], wr2[i:i + 1], we2[i:i + 1], **scales, nfe=3, noise=noise[:, i:i + 1])
        assert_close(both[i:i + 1], single)


@pytest.mark.parametrize("change, match", [
    (dict(nfe=0), "nfe"),
    (dict(solver="dopri5"), "solver"),
    (dict(a_cfg=float("nan")), "a_cfg"),
    (dict(e_cfg=float("inf")), "e_cfg"),
    (dict(noise=torch.zeros(2, 1, 5, 16)), r"num_windows=3, B=1, L=5, d=16"),
    (dict(noise=torch.full((3, 1, 5, 16), float("nan"))), "noise"),
])
def test_sampler_option_validation(change, match):
    f, args, scales = _reference_run("float_sample_tiny_s2e")
    with pytest.raises(ValueError, match=match):
        next(iter_motion_windows(*args, **{**scales, **change}))


@pytest.mark.parametrize("index, bad, match", [
    (1, torch.zeros(1, 12, 15), "audio_features"),
    (1, torch.full((1, 12, 16), float("nan")), "audio_features"),
    (2, torch.zeros(2, 16), "source_motion"),
    (3, torch.zeros(1, 1, 7), "emotion"),
])
def test_sampler_input_validation(index, bad, match):
    f, args, scales = _reference_run("float_sample_tiny_s2e")
    args = list(args)
    args[index] = bad
    with pytest.raises(ValueError, match=match):
        sample_motion(*args, **scales)


def test_per_window_emotion_equals_each_window_sampled_with_its_own_emotion():
    f, args, scales = _reference_run("float_sample_tiny_s2e")
    fmt, wa, wr, we = args
    windows = num_windows(wa.shape[1], fmt.num_frames)
    noise = torch.randn(windows, 1, fmt.num_frames, fmt.dim_w, generator=torch.Generator().manual_seed(0))
    other = torch.roll(we, 1, dims=-1)
    per_window = torch.stack([we if k % 2 == 0 else other for k in range(windows)], dim=1)
    mixed = list(iter_motion_windows(fmt, wa, wr, per_window, **scales, nfe=2, noise=noise))
    plain = list(iter_motion_windows(fmt, wa, wr, we, **scales, nfe=2, noise=noise))
    # Window 0 uses `we` in both runs; window 1 differs only through its emotion.
    assert torch.equal(mixed[0], plain[0]) and not torch.allclose(mixed[1], plain[1])
    with pytest.raises(ValueError, match="num_windows"):
        next(iter_motion_windows(fmt, wa, wr, per_window[:, :1].expand(1, windows + 1, -1), **scales, nfe=2))


# --------------------------------------------------------------------------- live chunks
def test_whole_window_chunks_equal_the_offline_windows():
    f, args, scales = _reference_run("float_sample_tiny_s2e")
    offline = sample_motion(*args, **scales, nfe=3, seed=4)
    chunked = sample_motion(*args, **scales, nfe=3, seed=4, chunk=ChunkSchedule.whole_windows(5))
    assert torch.equal(offline, chunked)


def test_chunks_commit_k_frames_with_the_offline_noise_of_each_frame():
    f, args, scales = _reference_run("float_sample_tiny_s2e")  # T = 12, L = 5, L' = 2
    seen: list[WindowInputs] = []
    chunk = ChunkSchedule(frames=2, lookahead=1)
    windows = list(iter_motion_windows(*args, **scales, nfe=2, seed=7, chunk=chunk, on_window=seen.append))
    assert [w.shape[1] for w in windows] == [2] * 6
    assert [w.first_frame for w in seen] == [0, 2, 4, 6, 8, 10]
    generator = torch.Generator().manual_seed(7)
    per_frame = torch.cat([torch.randn(1, 5, 16, generator=generator) for _ in range(3)], dim=1)
    for w in seen:  # passes of k + look-ahead = 3 frames, across noise blocks where they must
        assert torch.equal(w.x0, per_frame[:, w.first_frame:w.first_frame + 3])
    wa = args[1]
    # The context of pass i is the last L' committed latents and their features.
    assert torch.equal(seen[3].prev_wa, wa[:, 4:6]) and torch.equal(seen[3].prev_x, torch.cat(windows, 1)[:, 4:6])
    # The last pass has only frames 10, 11 of audio: it repeats the last feature.
    assert torch.equal(seen[5].audio, torch.cat([wa[:, 10:12], wa[:, 11:12]], dim=1))
    null = ChunkSchedule(frames=2, lookahead=1, length=5, padding="null")
    seen.clear()
    list(iter_motion_windows(*args, **scales, nfe=1, seed=7, chunk=null, on_window=seen.append))
    assert seen[0].audio.shape[1] == 5 and not seen[0].audio[:, 3:].any()
    assert torch.equal(seen[0].audio[:, :3], wa[:, :3])


def test_rewind_restores_the_context_and_noise_of_a_frame():
    f, (fmt, wa, wr, we), scales = _reference_run("float_sample_tiny_s2e")
    chunk = ChunkSchedule(frames=2, lookahead=1)

    def run(sampler: WindowSampler, first: int, count: int) -> list[torch.Tensor]:
        return [sampler.step(chunk.pass_audio(wa[:, f:f + 3], 5), we, commit=2)[:, :2]
                for f in range(first, first + 2 * count, 2)]

    straight = run(WindowSampler(fmt, wr, **scales, nfe=2, seed=3), 0, 5)
    sampler = WindowSampler(fmt, wr, **scales, nfe=2, seed=3, keep_history=True)
    run(sampler, 0, 4)  # frames 0..7 committed
    sampler.forget_before(3)
    sampler.rewind(4)  # drop frames 4..7: the next pass starts at frame 4 with frames 2, 3 as context
    again = run(sampler, 4, 3)
    assert all(torch.equal(a, b) for a, b in zip(again, straight[2:]))
    with pytest.raises(ValueError, match="outside the kept history"):
        sampler.rewind(2)  # forgotten
    with pytest.raises(ValueError, match="keep_history"):
        WindowSampler(fmt, wr, nfe=1, seed=0).rewind(0)


@pytest.mark.parametrize("kwargs, match", [(dict(frames=0), "frames"), (dict(frames=2, lookahead=-1), "lookahead"),
                                           (dict(frames=3, length=2), "length"),
                                           (dict(frames=2, padding="zeros"), "padding")])
def test_chunk_schedule_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ChunkSchedule(**kwargs)
    f, args, scales = _reference_run("float_sample_tiny_s2e")
    with pytest.raises(ValueError, match="exceed"):
        next(iter_motion_windows(*args, **scales, nfe=1, seed=0, chunk=ChunkSchedule(frames=6)))
