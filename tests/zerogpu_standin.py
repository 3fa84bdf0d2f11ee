"""A stand-in for Hugging Face's ``spaces`` package on a ZeroGPU Space, and a model guard.

What it reproduces of ``spaces`` 0.51 (``spaces/zero/decorator.py`` and ``wrappers.py``):

* ``spaces.GPU(task=None, *, duration=None, size=None)`` as a bare decorator or with
  arguments; ``duration`` may be a function, called with the handler's own arguments before
  the GPU is requested (the requests and their durations are recorded in
  :attr:`FakeSpaces.requests`);
* the handler runs "on the GPU" (inside :func:`gpu_scope`, which threads started from it
  inherit), its arguments and its results (each yielded value of a generator) cross a process
  boundary: they are pickled and unpickled, so a change the handler makes to an argument is
  lost unless it is returned. Gradio's ``Progress`` and ``Request`` objects pass as they are
  (``spaces`` carries them over with its own machinery);
* generators stay generators and plain functions plain (Gradio checks the kind).

:class:`ModelGuard` makes every network of a pipeline (the FloatModel's modules and the
inference decoder) raise when it computes outside a GPU scope, as CUDA code does on ZeroGPU
outside ``@spaces.GPU``. Tests of a new tab: install :meth:`FakeSpaces.module` as
``sys.modules["spaces"]`` with ``SPACES_ZERO_GPU=true`` before building the tab, patch
``threading.Thread.start`` with :func:`inheriting_start`, and drive its handlers.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import pickle
import threading
import types
from typing import Any, Callable, Iterator

_SCOPE = "_float_zerogpu_scope"
_THREAD_START = threading.Thread.start


def in_gpu_scope() -> bool:
    """Whether the current thread runs inside a (stand-in) GPU request."""
    return getattr(threading.current_thread(), _SCOPE, 0) > 0


@contextlib.contextmanager
def gpu_scope() -> Iterator[None]:
    """The current thread is "on the GPU" while inside."""
    thread = threading.current_thread()
    setattr(thread, _SCOPE, getattr(thread, _SCOPE, 0) + 1)
    try:
        yield
    finally:
        setattr(thread, _SCOPE, getattr(thread, _SCOPE) - 1)


def inheriting_start(self: threading.Thread) -> None:
    """``threading.Thread.start`` whose new thread inherits the starter's GPU scope (the
    streaming engine's worker threads run in the GPU worker process on ZeroGPU)."""
    if in_gpu_scope():
        setattr(self, _SCOPE, 1)
    _THREAD_START(self)


def _across(value: Any) -> Any:
    """``value`` after a trip to another process (pickled), Gradio's context objects excepted."""
    import gradio as gr

    if isinstance(value, (gr.Progress, gr.Request)):
        return value
    if isinstance(value, tuple):
        return tuple(_across(v) for v in value)
    if isinstance(value, dict):
        return {k: _across(v) for k, v in value.items()}
    return pickle.loads(pickle.dumps(value))


class FakeSpaces:
    """The stand-in ``spaces`` module's state: what was decorated and what was requested."""

    def __init__(self) -> None:
        self.decorated: list[str] = []
        self.requests: list[tuple[str, int]] = []  #: (handler name, requested seconds) per call
        self._lock = threading.Lock()

    def module(self) -> types.ModuleType:
        """A module object to install as ``sys.modules["spaces"]``."""
        module = types.ModuleType("spaces")
        module.GPU = self.GPU  # type: ignore[attr-defined]
        return module

    def GPU(self, task: Callable | None = None, *, duration: Any = None, size: str | None = None,
            **_: Any) -> Any:  # noqa: N802 - the real name
        if not callable(task):
            return functools.partial(self._wrap, duration=duration)
        return self._wrap(task, duration)

    def _request(self, task: Callable, duration: Any, args: tuple, kwargs: dict) -> None:
        seconds = duration(*args, **kwargs) if callable(duration) else duration
        assert seconds is None or (isinstance(seconds, int) and seconds > 0), seconds
        with self._lock:
            self.requests.append((task.__name__, seconds))

    def _wrap(self, task: Callable, duration: Any) -> Callable:
        self.decorated.append(task.__name__)
        if inspect.isgeneratorfunction(task):
            @functools.wraps(task)
            def generator(*args: Any, **kwargs: Any) -> Iterator[Any]:
                self._request(task, duration, args, kwargs)
                inner = task(*_across(args), **_across(kwargs))
                try:
                    while True:
                        with gpu_scope():
                            try:
                                value = next(inner)
                            except StopIteration:
                                return
                        yield _across(value)
                finally:
                    with gpu_scope():
                        inner.close()

            return generator

        @functools.wraps(task)
        def plain(*args: Any, **kwargs: Any) -> Any:
            self._request(task, duration, args, kwargs)
            with gpu_scope():
                result = task(*_across(args), **_across(kwargs))
            return _across(result)

        return plain


class ModelGuard:
    """Every network of ``pipe`` raises RuntimeError when it runs outside a GPU scope; counts
    the computations inside one (:attr:`inside`) and records those outside (:attr:`outside`)."""

    def __init__(self, pipe: Any) -> None:
        self.pipe = pipe
        self.inside = 0
        self.outside: list[str] = []
        self._lock = threading.Lock()
        self._hooks = [module.register_forward_pre_hook(self._pre_hook) for module in pipe.model.modules()]
        self._decoder = pipe.decoder
        pipe.decoder = _GuardedDecoder(pipe.decoder, self.check)

    def check(self, what: str) -> None:
        with self._lock:
            if in_gpu_scope():
                self.inside += 1
                return
            self.outside.append(f"{what} in {threading.current_thread().name}")
        raise RuntimeError(f"model compute outside a GPU scope ({what}): on ZeroGPU there is no GPU here")

    def _pre_hook(self, module: Any, args: Any) -> None:
        self.check(type(module).__name__)

    def remove(self) -> None:
        for hook in self._hooks:
            hook.remove()
        self.pipe.decoder = self._decoder


class _GuardedDecoder:
    """The pipeline's inference decoder (a plain callable object, not a module), guarded."""

    def __init__(self, inner: Any, check: Callable[[str], None]) -> None:
        self._inner, self._check = inner, check

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self._check("InferenceDecoder")
        return self._inner(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)
