"""Test helpers: reference fixtures and tolerance checks (import with `from helpers import ...`)."""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TypeVar

import numpy as np
import pytest
import torch

FIXTURES = Path(__file__).parent / "fixtures" / "reference"
_T = TypeVar("_T")


class Fixture:
    """One reference fixture (.npz): weights by key, `in.*` inputs, `out.*` outputs, `meta`."""

    def __init__(self, name: str):
        self.path = FIXTURES / f"{name}.npz"
        with np.load(self.path) as z:
            self.arrays = {k: z[k] for k in z.files if k != "__meta__"}
            self.meta = json.loads(str(z["__meta__"]))

    def tensor(self, key: str) -> torch.Tensor:
        return torch.from_numpy(np.array(self.arrays[key]))

    def input(self, name: str) -> torch.Tensor:
        return self.tensor(f"in.{name}")

    def output(self, name: str) -> torch.Tensor:
        return self.tensor(f"out.{name}")

    def state_dict(self, prefix: str = "") -> dict[str, torch.Tensor]:
        """Weights (every key that is not an input/output), optionally only those under `prefix`."""
        return {k[len(prefix):]: self.tensor(k) for k in self.arrays
                if not k.startswith(("in.", "out.")) and k.startswith(prefix)}


def assert_close(actual: torch.Tensor, expected: torch.Tensor, atol: float = 1e-5) -> None:
    """Max-abs comparison with the fixtures' tolerance (1e-5 unless stated)."""
    assert actual.shape == expected.shape, f"shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    err = (actual.detach().float() - expected.float()).abs().max().item()
    assert err <= atol, f"max abs error {err:.3g} > {atol:g}"


@contextlib.contextmanager
def one_torch_thread() -> Iterator[None]:
    """One intra-op thread for the tiny model's small kernels, restored afterwards.

    On a loaded 2-core machine two OpenMP threads made a 64 px tiny-model frame ~40x slower
    (92 ms against 2 ms per frame measured side by side in one process): every small kernel
    waits for the second thread's time slice. Results are compared only within one setting.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def one_thread_module():
    """:func:`one_torch_thread` for a whole module whose work is many tiny ops (video frames one by
    one through the tiny model): the video tests took 155 s with two threads and 24-28 s with one,
    at the same load on the 2 cores."""
    with one_torch_thread():
        yield


def consume(items: Iterator[_T], timeout: float = 60.0, limit: int | None = None, close: bool = False) -> list[_T]:
    """The items of ``items`` (at most ``limit``), read on a helper thread: a hang fails the test
    after ``timeout`` seconds instead of stalling the suite. ``close``: close the iterator once
    ``limit`` items are read. An error raised by the iterator is re-raised here."""
    out: list[_T] = []
    error: list[BaseException] = []

    def run() -> None:
        try:
            for item in items:
                out.append(item)
                if limit is not None and len(out) >= limit:
                    if close:
                        items.close()  # type: ignore[attr-defined]
                    return
        except BaseException as exc:  # noqa: BLE001 - re-raised below on the test's thread
            error.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), f"only {len(out)} items within {timeout} s"
    if error:
        raise error[0]
    return out
