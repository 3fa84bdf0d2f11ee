"""Explicit host <-> device transfers, asynchronous on CUDA ("device discipline").

Every copy between the host and the accelerator in the engine goes through ``.cpu()`` or
``.to(device)``; nothing converts a device tensor implicitly (``np.asarray``, ``.numpy()``,
``float()``), which CUDA refuses or pays for with a hidden synchronisation.

On CUDA the rendered frames leave the device through :class:`HostCopies`: each batch is
copied into page-locked ("pinned") host memory with ``non_blocking=True`` on a side stream,
so the copy overlaps the next batch's decoding and the CPU's video encoding of the previous
one; the host waits only when it takes the frames (:meth:`PendingCopy.result`). On every
other device (the CPU, tests' simulated accelerator) the copy is the plain synchronous
``x.cpu().numpy()``, so the CPU path is unchanged bit for bit.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch import Tensor

__all__ = ["HostCopies", "PendingCopy", "to_device"]


def to_device(x: Tensor, device: torch.device | str, dtype: torch.dtype | None = None) -> Tensor:
    """``x.to(device, dtype)`` without stalling the host for a host-to-device copy.

    With ``non_blocking=True`` CUDA stages a pageable source immediately and returns, instead
    of synchronising the stream (which a plain ``.to("cuda")`` inside a loop would do once per
    iteration). A no-op flag on the CPU.
    """
    return x.to(device=device, dtype=dtype, non_blocking=True)


class PendingCopy:
    """A device-to-host copy in flight; :meth:`result` waits for it and returns the host array."""

    def __init__(self, result: Callable[[], np.ndarray]):
        self._result = result

    def result(self) -> np.ndarray:
        return self._result()


class HostCopies:
    """Device-to-host copies of result batches (e.g. uint8 frames) for one device.

    Attributes:
        asynchronous: True on CUDA, where :meth:`start` returns before the copy finishes;
            callers then keep one batch in flight (see ``FloatPipeline.render``).
    """

    def __init__(self, device: torch.device | str):
        device = torch.device(device)
        self.asynchronous = device.type == "cuda"
        self._stream = torch.cuda.Stream(device) if self.asynchronous else None

    def start(self, x: Tensor) -> PendingCopy:
        """Begin copying ``x`` to the host.

        On CUDA: a pinned buffer from torch's caching host allocator (freed back to it when the
        returned array is dropped, so batches never overwrite frames a caller still holds),
        filled on a side stream that first waits for the work producing ``x``.
        """
        if not self.asynchronous:
            host = x.cpu().numpy()
            return PendingCopy(lambda: host)
        assert self._stream is not None
        host_t = torch.empty(x.shape, dtype=x.dtype, pin_memory=True)
        self._stream.wait_stream(torch.cuda.current_stream(x.device))
        with torch.cuda.stream(self._stream):
            host_t.copy_(x, non_blocking=True)
            done = torch.cuda.Event()
            done.record(self._stream)
        x.record_stream(self._stream)  # x's memory is not reused before the side stream is done with it

        def result() -> np.ndarray:
            done.synchronize()
            return host_t.numpy()

        return PendingCopy(result)
