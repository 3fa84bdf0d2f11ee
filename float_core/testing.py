"""A simulated accelerator on the CPU, so tests see what CUDA would refuse.

Nothing else in this project runs off the CPU in CI, so a CUDA-only failure (``np.asarray`` of
a device tensor, a host tensor mixed into a device op, a sync in every sampling step) would go
unseen. :class:`SimulatedAccelerator` makes the CPU behave like a separate device:

* Tensors "on the device" are :class:`DeviceTensor`, a ``torch.Tensor`` subclass that
  propagates through every op (``__torch_function__``) and reports ``device`` as
  :data:`SIMULATED_DEVICE` (``cpu:0``, which torch accepts wherever a device goes and which is
  distinct from the host's ``cpu``). While the simulation is active, factories called with
  ``device=SIMULATED_DEVICE`` and ``t.to(SIMULATED_DEVICE)`` produce device tensors too, so
  ``torch.zeros(..., device=x.device)`` lands where it would on CUDA.
* Explicit transfers (``t.cpu()``, ``t.to("cpu")``, ``t.to(torch.device("cpu"))``) return a
  plain host tensor (a copy, as CUDA's are) and are counted in :attr:`SimulatedAccelerator.transfers`.

What happens to each implicit host conversion of a device tensor (the engine allows no implicit
conversions and no per-step syncs):

============================================  ===========  ======================================
conversion                                     CUDA         here
============================================  ===========  ======================================
``np.asarray(t)`` / ``t.__array__()``          TypeError    :class:`ImplicitHostConversion` (a TypeError)
``t.numpy()``                                  TypeError    ImplicitHostConversion
``t.tolist()``                                 syncs        ImplicitHostConversion (banned: use ``t.cpu().tolist()``)
``float(t)``, ``int(t)``, ``complex(t)``,      syncs        ImplicitHostConversion (banned: use ``t.item()``
``operator.index(t)``                                       once, or keep the value on the device)
``t.item()``, ``bool(t)`` (``if t:``),          syncs        allowed and recorded in
``f"{t:.3f}"``, ``t.nonzero()``,                            :attr:`SimulatedAccelerator.syncs`, with the
``torch.unique``, ``masked_select``                         calling line, so a test can assert that no
                                                            sync happens per step of a loop
a host tensor with >= 1 dimension and a        RuntimeError  :class:`DeviceMismatch` (a RuntimeError);
device tensor in one op                                     0-dim host tensors pass as scalars, as on
                                                            CUDA, and so do indices, ``copy_`` and ``to``
============================================  ===========  ======================================

Known differences from CUDA: the data never leaves host memory (a device tensor and the host
array it came from may share storage when no copy was requested), kernels run synchronously,
and ops CUDA supports on mixed devices beyond the exemptions above are reported as mismatches.

Threads started while the simulation is active (the streaming engine's workers) run inside it.

Use::

    with SimulatedAccelerator() as acc:
        pipe = acc.pipeline(FloatPipeline.tiny_random())   # a copy of the model "on the device"
        pipe.generate(image, audio, "out.mp4", nfe=2, seed=0)  # raises on an implicit conversion
        frames = pipe.render(prepared, motion)
        next(frames)                  # validation syncs once, on the first batch
        mark = acc.mark()
        list(frames)
        assert acc.since(mark) == []  # no sync per batch
"""

from __future__ import annotations

import copy
import threading
import traceback
from dataclasses import dataclass
from typing import Any, Callable, Iterator, TypeVar

import torch
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten, tree_map

__all__ = [
    "SIMULATED_DEVICE",
    "DeviceMismatch",
    "DeviceTensor",
    "ImplicitHostConversion",
    "SimulatedAccelerator",
    "Sync",
    "iter_device_tensors",
]

#: The simulated accelerator's device. torch runs ``cpu:0`` tensors on the CPU, but the device
#: compares unequal to the host's ``torch.device("cpu")``, so code that moves data to "its
#: device" keeps it there and code that moves it to the host brings it back.
SIMULATED_DEVICE = torch.device("cpu", 0)
_HOST = torch.device("cpu")

M = TypeVar("M", bound=nn.Module)


class ImplicitHostConversion(TypeError):
    """A device tensor was converted to a host value implicitly (np.asarray, numpy, tolist, float, ...)."""


class DeviceMismatch(RuntimeError):
    """A host tensor and a device tensor met in one op (CUDA: "Expected all tensors to be on the same device")."""


@dataclass(frozen=True)
class Sync:
    """One device synchronisation: what caused it and the line of project code that did it."""

    kind: str  #: e.g. "item", "__bool__"
    where: str  #: "path/to/file.py:123 in function" (innermost frame outside torch and this module)

    def __str__(self) -> str:
        return f"{self.kind} at {self.where}"


# Implicit conversions: raising ones and counted syncs (see the module docstring's table).
_RAISES: dict[Callable[..., Any], str] = {
    Tensor.__array__: "np.asarray()", Tensor.numpy: ".numpy()", Tensor.tolist: ".tolist()",
    Tensor.__float__: "float()", Tensor.__int__: "int()", Tensor.__complex__: "complex()",
    Tensor.__index__: "operator.index() (a tensor used as an int)",
}
_SYNCS: dict[Callable[..., Any], str] = {
    Tensor.item: "item", Tensor.__bool__: "__bool__", Tensor.__format__: "__format__",
    Tensor.nonzero: "nonzero", torch.nonzero: "nonzero", torch.unique: "unique", Tensor.unique: "unique",
    torch.masked_select: "masked_select", Tensor.masked_select: "masked_select",
}
# Ops that accept host tensors next to device ones on CUDA too (indices, cross-device copies,
# shape-only references).
_MIXING_ALLOWED = {Tensor.__getitem__, Tensor.__setitem__, Tensor.copy_, Tensor.to, Tensor.expand_as,
                   Tensor.view_as, Tensor.reshape_as, Tensor.new_tensor, Tensor.new_empty, Tensor.new_zeros,
                   Tensor.new_ones, Tensor.new_full, Tensor.__repr__, Tensor.__format__}

# Property getters reach __torch_function__ as fresh method-wrappers: compare with ==.
_DEVICE_GET, _IS_CPU_GET = Tensor.device.__get__, Tensor.is_cpu.__get__

_active = threading.local()  # the innermost active SimulatedAccelerator of this thread


def _current() -> "SimulatedAccelerator | None":
    stack = getattr(_active, "stack", None)
    return stack[-1] if stack else None


def _as_device(value: Any) -> torch.device | None:
    """``value`` as a torch.device when it names one (a torch.device or a string), else None."""
    if isinstance(value, (torch.device, str)):
        try:
            return torch.device(value)
        except RuntimeError:
            return None
    return None


def _is_device(value: Any) -> bool:
    """Whether ``value`` names the simulated device."""
    return _as_device(value) == SIMULATED_DEVICE


def _target_of_to(args: tuple, kwargs: dict) -> str | None:
    """Where ``Tensor.to(*args, **kwargs)`` sends its tensor: "device", "host" or None (stays)."""
    candidates = list(args[1:]) + [kwargs.get("device")]
    for value in candidates:
        if isinstance(value, DeviceTensor):
            return "device"
        if isinstance(value, Tensor):
            return "host"
        device = _as_device(value)
        if device is not None:
            return "device" if device == SIMULATED_DEVICE else "host"
    return None


def _caller() -> str:
    """The innermost stack frame outside torch and this module, as "file:line in function"."""
    for frame in reversed(traceback.extract_stack()[:-2]):
        name = frame.filename.replace("\\", "/")
        if "/torch/" in name or name.endswith("float_core/testing.py"):
            continue
        short = name.split("/float_core/")[-1] if "/float_core/" in name else name
        short = f"float_core/{short}" if "/float_core/" in name else short
        return f"{short}:{frame.lineno} in {frame.name}"
    return "<unknown>"


def _plain(t: Tensor) -> Tensor:
    """A plain host tensor with ``t``'s values (a copy, as a device-to-host transfer makes)."""
    with torch._C.DisableTorchFunctionSubclass():
        return t.as_subclass(Tensor).clone() if isinstance(t, Tensor) else t


class DeviceTensor(Tensor):
    """A tensor "on the simulated accelerator" (see the module docstring for its rules)."""

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        acc = _current()
        if func in _RAISES:
            raise ImplicitHostConversion(
                f"{_RAISES[func]} of a tensor on the accelerator ({SIMULATED_DEVICE}): an implicit "
                "device-to-host conversion (CUDA refuses np.asarray/.numpy() and syncs on the rest); "
                "copy it explicitly with .cpu() first")
        if func in _SYNCS and acc is not None:
            acc.syncs.append(Sync(_SYNCS[func], _caller()))
        if func == _DEVICE_GET:
            return SIMULATED_DEVICE
        if func == _IS_CPU_GET:
            return False
        if func is Tensor.cpu or (func is Tensor.to and _target_of_to(args, kwargs) == "host"):
            if acc is not None:
                acc.transfers["to_host"] += 1
            with torch._C.DisableTorchFunctionSubclass():
                out = func(*args, **kwargs)
            return _plain(out)
        if func not in _MIXING_ALLOWED:
            _check_same_device(func, args, kwargs)
        if func is Tensor.__format__ and args[0].dim() == 0:
            return format(_plain(args[0]).item(), *args[1:])
        return super().__torch_function__(func, types, args, kwargs)


def _check_same_device(func: Any, args: tuple, kwargs: dict) -> None:
    """Raise DeviceMismatch when a host tensor with >= 1 dimension meets a device tensor."""
    for value in tree_flatten((args, kwargs))[0]:
        if isinstance(value, Tensor) and not isinstance(value, DeviceTensor) and value.dim() > 0:
            name = getattr(func, "__qualname__", None) or getattr(func, "__name__", repr(func))
            raise DeviceMismatch(
                f"{name}: a host tensor of shape {tuple(value.shape)} met a tensor on the accelerator "
                f"({SIMULATED_DEVICE}); CUDA raises 'Expected all tensors to be on the same device'. "
                f"Move it with .to(device) first (at {_caller()})")


def _wrap(value: Any) -> Any:
    return value.as_subclass(DeviceTensor) if type(value) is Tensor else value


class _Mode(TorchFunctionMode):
    """Makes device placement work for plain tensors: factories with ``device=SIMULATED_DEVICE``
    and ``plain.to(SIMULATED_DEVICE)`` return device tensors (everything else passes through)."""

    def __init__(self, acc: "SimulatedAccelerator"):
        super().__init__()
        self.acc = acc

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if any(isinstance(v, DeviceTensor) for v in tree_flatten((args, kwargs))[0]):
            return func(*args, **kwargs)  # DeviceTensor.__torch_function__ handles it
        if func is Tensor.to and _target_of_to(args, kwargs) == "device":
            self.acc.transfers["to_device"] += 1
            out = func(*args, **kwargs)
            # A host-to-device copy never shares memory with its source.
            return _wrap(out.clone() if out is args[0] else out)
        out = func(*args, **kwargs)
        if _is_device(kwargs.get("device")):
            return tree_map(_wrap, out)
        return out


class SimulatedAccelerator:
    """Context manager: while active, :class:`DeviceTensor` and ``SIMULATED_DEVICE`` act as a
    separate accelerator (see the module docstring), in this thread and in threads started
    while it is active. Re-entrant.

    Attributes:
        device: :data:`SIMULATED_DEVICE`, to pass wherever a device goes.
        syncs: every counted synchronisation (:class:`Sync`), in order.
        transfers: counts of explicit copies, keys "to_host" and "to_device".
    """

    device = SIMULATED_DEVICE

    def __init__(self) -> None:
        self.syncs: list[Sync] = []
        self.transfers: dict[str, int] = {"to_host": 0, "to_device": 0}
        self._mode = _Mode(self)

    def __enter__(self) -> "SimulatedAccelerator":
        _active.stack = getattr(_active, "stack", []) + [self]
        self._mode.__enter__()
        # torch's function-mode stack is per thread: threads started while the simulation is
        # active (e.g. the streaming engine's workers) run inside it too.
        self._thread_run = threading.Thread.run
        acc, original = self, self._thread_run

        def run(thread: threading.Thread) -> None:
            _active.stack = getattr(_active, "stack", []) + [acc]
            with _Mode(acc):
                original(thread)

        threading.Thread.run = run  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc: Any) -> None:
        threading.Thread.run = self._thread_run  # type: ignore[method-assign]
        self._mode.__exit__(*exc)
        _active.stack = _active.stack[:-1]

    # ------------------------------------------------------------------ placement
    def tensor(self, value: Any) -> DeviceTensor:
        """A device copy of a tensor (or anything ``torch.as_tensor`` takes)."""
        return torch.as_tensor(value).detach().clone().as_subclass(DeviceTensor)

    def to_device(self, module: M) -> M:
        """Move ``module``'s parameters and buffers onto the accelerator, in place (tied
        parameters stay tied). Unlike ``module.to(device)`` the tensors change class, which
        ``Module.to`` cannot do."""
        memo: dict[int, Tensor] = {}
        for sub in module.modules():
            for store in (sub._parameters, sub._buffers):
                for name, t in store.items():
                    if t is None or isinstance(t, DeviceTensor):
                        continue
                    if id(t) not in memo:
                        data = t.detach().as_subclass(DeviceTensor)
                        memo[id(t)] = nn.Parameter(data, t.requires_grad) if isinstance(t, nn.Parameter) else data
                    store[name] = memo[id(t)]
        return module

    def pipeline(self, pipe: Any) -> Any:
        """A copy of a :class:`~float_core.pipeline.FloatPipeline` (or of a ``FloatModel``)
        with its networks on the accelerator and the same per-stage precision; the original is untouched."""
        from .pipeline import FloatPipeline

        if not isinstance(pipe, FloatPipeline):
            return FloatPipeline(self.to_device(copy.deepcopy(pipe)), device=self.device)
        return type(pipe)(self.to_device(copy.deepcopy(pipe.model)), device=self.device, precision=pipe.precision)

    # ------------------------------------------------------------------ inspection
    def syncs_in(self, *paths: str) -> list[Sync]:
        """The syncs made by code in files whose path contains one of ``paths``."""
        return [s for s in self.syncs if any(p in s.where for p in paths)]

    def mark(self) -> int:
        """A position in :attr:`syncs`, for :meth:`since`."""
        return len(self.syncs)

    def since(self, mark: int) -> list[Sync]:
        """The syncs recorded after ``mark``."""
        return self.syncs[mark:]


def iter_device_tensors(obj: Any) -> Iterator[Tensor]:
    """Tensors inside nested containers/dataclasses that are on the simulated accelerator."""
    import dataclasses

    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        obj = [getattr(obj, f.name) for f in dataclasses.fields(obj)]
    for value in tree_flatten(obj)[0]:
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            yield from iter_device_tensors(value)
        elif isinstance(value, DeviceTensor):
            yield value
