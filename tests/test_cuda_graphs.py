"""CUDA-graph replay of the FMT field (float_core.cuda_graphs), checked on the CPU.

CUDA's capture is replaced by one that re-runs the function on the static buffers: a sampler
whose graphed field did not refresh every argument (time, state, the window's audio, the
carried context) at every evaluation would drift from the eager sampler.
"""

from __future__ import annotations

import pytest
import torch

from float_core.cuda_graphs import GraphedFunction, capture_cuda_graph
from float_core.pipeline import FloatPipeline
from float_core.sampling import iter_motion_windows


def _replaying_capture(log: list[int]):
    def capture(fn, static_inputs):
        log.append(len(static_inputs))
        out = fn(*static_inputs)

        def replay() -> None:
            out.copy_(fn(*static_inputs))
        return replay, out
    return capture


@pytest.mark.parametrize("solver", ["euler", "midpoint"])
def test_graphed_sampler_equals_the_eager_one(monkeypatch, solver):
    pipe = FloatPipeline.tiny_random(device="cpu", dtype="float32")
    fmt, cfg = pipe.model.fmt, pipe.config
    torch.manual_seed(0)
    frames = 2 * cfg.num_frames + 3  # three windows, the last one short
    audio = torch.randn(1, frames, cfg.dim_a)
    source = torch.randn(1, cfg.style_dim)
    emotion = torch.softmax(torch.randn(1, 7), -1)
    eager = torch.cat(list(iter_motion_windows(fmt, audio, source, emotion, nfe=4, solver=solver, seed=3)), 1)

    log: list[int] = []
    import float_core.sampling as sampling

    monkeypatch.setattr(sampling, "capture_cuda_graph", _replaying_capture(log))
    graphed = torch.cat(list(iter_motion_windows(fmt, audio, source, emotion, nfe=4, solver=solver, seed=3,
                                                 cuda_graphs=True)), 1)
    assert log == [7], "captured once, with the 7 tensors of the guided field"
    assert torch.equal(graphed, eager)


def test_graphed_function_refuses_other_shapes_and_returns_copies():
    log: list[int] = []
    double = GraphedFunction(lambda a, b: a * 2 + b, capture=_replaying_capture(log))
    first = double(torch.ones(3), torch.zeros(3))
    second = double(torch.full((3,), 2.0), torch.ones(3))
    assert first.tolist() == [2.0] * 3 and second.tolist() == [5.0] * 3  # the first result was not overwritten
    with pytest.raises(ValueError, match=r"argument 1 changed from \(3,\)"):
        double(torch.ones(3), torch.ones(4))
    with pytest.raises(ValueError, match="captured with 2 arguments"):
        double(torch.ones(3))
    assert log == [2]


def test_cuda_graphs_need_cuda():
    with pytest.raises(ValueError, match="CUDA graphs need CUDA tensors"):
        capture_cuda_graph(lambda x: x + 1, [torch.ones(2)])
    with pytest.raises(ValueError, match="cuda_graphs=True needs a CUDA device"):
        FloatPipeline.tiny_random(device="cpu", cuda_graphs=True)
