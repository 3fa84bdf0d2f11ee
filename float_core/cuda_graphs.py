"""CUDA graphs for the flow matching transformer's vector field (the GPU path).

One guided FMT evaluation (paper Eq. 13; 3 branches x 60 frames at the official size) is
~56 GFLOP in ~100 small kernels: on a large GPU its launch overhead, not its arithmetic,
sets the time. A CUDA graph records those launches once and replays them with one call.
Graphs need fixed shapes and fixed memory, so :class:`GraphedFunction` copies each call's
tensor arguments into static input buffers, replays the graph and returns a copy of the
static output. A :class:`~float_core.sampling.WindowSampler` with ``cuda_graphs=True``
captures its field at the first evaluation (the shapes of a sampler never change) and
replays it for every later evaluation and window.

The capture step is injectable (``capture=``): on a CPU the tests replace CUDA's capture by
one that re-runs the function on the static buffers, which checks the buffer plumbing (every
argument really refreshed at every call) against the eager sampler bit for bit.
"""

from __future__ import annotations

from typing import Callable, Protocol, Sequence

import torch
from torch import Tensor

__all__ = ["Capture", "GraphedFunction", "capture_cuda_graph"]


class Capture(Protocol):
    """Records ``fn(*static_inputs)``; returns (replay, static_output)."""

    def __call__(self, fn: Callable[..., Tensor], static_inputs: Sequence[Tensor]) -> tuple[Callable[[], None], Tensor]:
        ...


def capture_cuda_graph(fn: Callable[..., Tensor], static_inputs: Sequence[Tensor],
                       warmup: int = 2) -> tuple[Callable[[], None], Tensor]:
    """Capture ``fn(*static_inputs)`` as a CUDA graph (PyTorch's recipe: warm-up on a side
    stream, then capture). Returns ``(graph.replay, static_output)``."""
    device = static_inputs[0].device
    if device.type != "cuda":
        raise ValueError(f"CUDA graphs need CUDA tensors, got {device}")
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        for _ in range(warmup):  # lazy initialisation (cuBLAS handles, autotuning) outside the graph
            fn(*static_inputs)
    torch.cuda.current_stream(device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_output = fn(*static_inputs)
    return graph.replay, static_output


class GraphedFunction:
    """``fn`` of tensors replayed from a graph captured at the first call.

    Every call must pass tensors of the first call's shapes, dtypes and device (else a
    ValueError says which argument changed). Not thread-safe: one per sampler.
    """

    def __init__(self, fn: Callable[..., Tensor], capture: Capture = capture_cuda_graph):
        self.fn, self.capture = fn, capture
        self.static_inputs: list[Tensor] | None = None
        self.replay: Callable[[], None] | None = None
        self.static_output: Tensor | None = None

    def __call__(self, *args: Tensor) -> Tensor:
        if self.static_inputs is None:
            self.static_inputs = [a.detach().clone() for a in args]
            self.replay, self.static_output = self.capture(self.fn, self.static_inputs)
        else:
            if len(args) != len(self.static_inputs):
                raise ValueError(f"graphed function: captured with {len(self.static_inputs)} arguments, "
                                 f"called with {len(args)}")
            for i, (static, a) in enumerate(zip(self.static_inputs, args)):
                if a.shape != static.shape or a.dtype != static.dtype or a.device != static.device:
                    raise ValueError(f"graphed function: argument {i} changed from {tuple(static.shape)} "
                                     f"{static.dtype} on {static.device} to {tuple(a.shape)} {a.dtype} on {a.device}")
                static.copy_(a)
        self.replay()
        return self.static_output.clone()  # the next replay overwrites the static output
