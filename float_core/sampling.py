"""Sampling motion latents with the flow matching transformer (paper Eq. 2, Eq. 13, Sec. 4.2).

Two layers, each usable alone:

1. ODE solvers as plain functions over a vector field (k-diffusion style):
   ``solver(field, x, times) -> x(times[-1])`` with ``field(t, x) -> dx/dt`` and ``t`` of shape
   ``(1,)``. :func:`euler`, :func:`midpoint`, :func:`rk4`; :data:`SOLVERS` maps names to them and
   :func:`time_grid` builds the uniform grid for a budget of vector-field evaluations.
2. The windowed sampler (paper Sec. 4.2, "L' + L"): :func:`iter_motion_windows` generates the
   clip L frames at a time, each window conditioned on the last L' latents and audio features of
   the previous one, and yields every window as soon as it is solved (streaming);
   :func:`sample_motion` concatenates them.

**NFE** (number of function evaluations) here means vector-field evaluations per window; each
evaluation is one batched FMT pass over the guidance branches (Eq. 13). The authors' script
builds its grid as ``linspace(0, 1, nfe)``, i.e. ``nfe - 1`` Euler steps, so its ``nfe = n``
equals our ``solver="euler", nfe=n - 1`` (ARCHITECTURE.md, "Sampling"); the paper's "NFE = 10"
results therefore use 9 evaluations.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Callable, Iterator, Mapping, Protocol

import torch
from torch import Tensor

from .config import SOLVER_NAMES, SamplingConfig
from .cuda_graphs import Capture, GraphedFunction, capture_cuda_graph
from .precision import autocast
from .transfer import to_device

__all__ = [
    "SOLVERS",
    "OdeSolver",
    "VectorField",
    "WindowInputs",
    "WindowSampler",
    "euler",
    "iter_motion_windows",
    "midpoint",
    "num_steps",
    "num_windows",
    "rk4",
    "sample_motion",
    "time_grid",
]

#: ``field(t, x) -> dx/dt`` with ``t`` a tensor of shape ``(1,)`` on ``x``'s device.
VectorField = Callable[[Tensor, Tensor], Tensor]


# --------------------------------------------------------------------------- ODE solvers
def euler(field: VectorField, x: Tensor, times: Tensor) -> Tensor:
    """Explicit Euler (first order): ``x_{k+1} = x_k + (t_{k+1} - t_k) v(t_k, x_k)``.

    One evaluation per step. With the reference's float32 grid this reproduces its sampler bit
    for bit (``dt`` is taken from the grid, not recomputed as ``1 / steps``).
    """
    times = times.to(x.device)
    for k in range(len(times) - 1):
        t0 = times[k : k + 1]
        x = x + (times[k + 1] - times[k]) * field(t0, x)
    return x


def midpoint(field: VectorField, x: Tensor, times: Tensor) -> Tensor:
    """Explicit midpoint rule (second order); two evaluations per step."""
    times = times.to(x.device)
    for k in range(len(times) - 1):
        t0, dt = times[k : k + 1], times[k + 1] - times[k]
        x_mid = x + (dt / 2) * field(t0, x)
        x = x + dt * field(t0 + dt / 2, x_mid)
    return x


def rk4(field: VectorField, x: Tensor, times: Tensor) -> Tensor:
    """Classic fourth-order Runge-Kutta; four evaluations per step."""
    times = times.to(x.device)
    for k in range(len(times) - 1):
        t0, dt = times[k : k + 1], times[k + 1] - times[k]
        k1 = field(t0, x)
        k2 = field(t0 + dt / 2, x + (dt / 2) * k1)
        k3 = field(t0 + dt / 2, x + (dt / 2) * k2)
        k4 = field(t0 + dt, x + dt * k3)
        x = x + (dt / 6) * (k1 + 2 * k2 + 2 * k3 + k4)
    return x


class _Integrator(Protocol):
    def __call__(self, field: VectorField, x: Tensor, times: Tensor) -> Tensor: ...


@dataclass(frozen=True)
class OdeSolver:
    """A fixed-grid ODE solver and its cost (vector-field evaluations per step)."""

    integrate: _Integrator
    evals_per_step: int

    def __call__(self, field: VectorField, x: Tensor, times: Tensor) -> Tensor:
        return self.integrate(field, x, times)


#: The solver registry: name (:data:`float_core.config.SOLVER_NAMES`) -> :class:`OdeSolver` (read-only).
SOLVERS: Mapping[str, OdeSolver] = MappingProxyType(dict(zip(SOLVER_NAMES, (
    OdeSolver(euler, 1),
    OdeSolver(midpoint, 2),
    OdeSolver(rk4, 4),
))))


def num_steps(nfe: int, solver: str) -> int:
    """Solver steps for a budget of ``nfe`` evaluations: ``max(1, nfe // evals_per_step)``."""
    SamplingConfig(nfe=nfe, solver=solver)  # the one validation of these settings
    return max(1, nfe // SOLVERS[solver].evals_per_step)


def time_grid(nfe: int, solver: str = "euler") -> Tensor:
    """Uniform float32 flow-time grid ``linspace(0, 1, steps + 1)`` for ``nfe`` evaluations.

    Euler takes ``nfe`` steps, midpoint ``nfe // 2``, rk4 ``nfe // 4`` (at least one step, so a
    budget below a solver's cost per step is rounded up to one step). The reference's
    ``nfe = n`` (grid ``linspace(0, 1, n)``) is ``time_grid(n - 1, "euler")``.
    """
    return torch.linspace(0.0, 1.0, num_steps(nfe, solver) + 1, dtype=torch.float32)


# --------------------------------------------------------------------------- windows
def num_windows(num_frames_total: int, window: int) -> int:
    """Windows of ``window`` frames needed for ``num_frames_total`` frames: ``ceil(T / L)``."""
    if num_frames_total < 1 or window < 1:
        raise ValueError(f"num_windows needs T >= 1 and L >= 1, got T={num_frames_total}, L={window}")
    return -(-num_frames_total // window)


@dataclass(frozen=True)
class WindowInputs:
    """Everything one window's ODE starts from (handed to ``on_window`` for inspection).

    Attributes:
        index: window number k (0-based).
        x0: starting noise ``(B, L, d)``.
        audio: the window's audio slice ``(B, L, d_a)``; the last window's is right-padded by
            replicating its last real frame.
        prev_x: last L' generated latents of window k-1 ``(B, L', d)`` (zeros for k = 0).
        prev_wa: last L' frames of window k-1's padded audio slice ``(B, L', d_a)`` (zeros for k = 0).
        num_real: how many of the L frames are real (the rest is padding, not yielded).
    """

    index: int
    x0: Tensor
    audio: Tensor
    prev_x: Tensor
    prev_wa: Tensor
    num_real: int


def _check_tensor(name: str, value: Tensor, shape: tuple[int | None, ...], meaning: str) -> None:
    """Raise ValueError unless ``value`` is a finite tensor of ``shape`` (None = any size)."""
    if not isinstance(value, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of shape {meaning}, got {type(value).__name__}")
    ok = value.dim() == len(shape) and all(s is None or s == v for s, v in zip(shape, value.shape))
    if not ok:
        raise ValueError(f"{name} must have shape {meaning}, got {tuple(value.shape)}")
    # One device sync (a single bool) per input and call, before the first window: never per step.
    if value.numel() and not bool(torch.isfinite(value).all()):
        raise ValueError(f"{name} must be finite (it contains NaN or inf)")


@torch.no_grad()
def iter_motion_windows(
    fmt: torch.nn.Module,
    audio_features: Tensor,
    source_motion: Tensor,
    emotion: Tensor,
    *,
    a_cfg: float = 2.0,
    e_cfg: float = 1.0,
    nfe: int = 10,
    solver: str = "euler",
    seed: int | None = None,
    noise: Tensor | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    on_window: Callable[[WindowInputs], None] | None = None,
    dtype: torch.dtype = torch.float32,
    cuda_graphs: bool = False,
) -> Iterator[Tensor]:
    """Generate motion latents window by window, yielding each window when it is solved.

    Window k solves the flow ODE (paper Eq. 2) from noise ``x0`` over flow time 0 -> 1 with the
    guided vector field of Eq. 13 (``fmt.guided_velocity``), conditioned on audio frames
    ``[kL, (k+1)L)``, the source motion, the emotion, and the previous window's last L' latents and
    audio features (zeros for window 0; ARCHITECTURE.md, "Windows").

    Args:
        fmt: a :class:`~float_core.models.fmt.FlowMatchingTransformer` (eval mode, on the inputs' device).
        audio_features: w_a ``(B, T, d_a)``.
        source_motion: w_{r->S} ``(B, d)``.
        emotion: w_e ``(B, 7)`` (probabilities or a one-hot redirection), or ``(B, W, 7)`` with
            one vector per window (dynamic emotion: window k uses ``emotion[:, k]``).
        a_cfg, e_cfg: audio and emotion guidance scales (paper Eq. 13; defaults 2 and 1).
        nfe: vector-field evaluations per window (see :func:`time_grid`).
        solver: a key of :data:`SOLVERS`.
        seed: seeds one CPU ``torch.Generator`` that draws fresh noise for every window in turn
            (deterministic for a seed, different across windows); ``None`` = nondeterministic.
        noise: explicit starting noise ``(num_windows, B, L, d)``; overrides ``seed``.
        progress: a :class:`~float_core.progress.ProgressCallback`, called as
            ``progress("sampling", evaluations_done, evaluations_total)`` after every
            vector-field evaluation of the whole clip.
        on_window: called with the :class:`WindowInputs` of every window before it is solved.
        dtype, cuda_graphs: compute dtype of the FMT and CUDA-graph replay (see :class:`WindowSampler`).

    Yields:
        ``(B, n_k, d)`` motion latents of window k: its ``n_k`` real frames (``L``, fewer in the last).
    """
    # ---- validation (all before the first window, so errors surface on the first next()).
    SamplingConfig(a_cfg=a_cfg, e_cfg=e_cfg, nfe=nfe, solver=solver, seed=seed)
    steps = num_steps(nfe, solver)
    integrate = SOLVERS[solver]
    L, Lp = fmt.num_frames, fmt.num_prev_frames
    d, d_a, d_e = fmt.dim_w, fmt.dim_a, fmt.dim_e
    if Lp > L:
        raise ValueError(f"the FMT's num_prev_frames ({Lp}) must not exceed num_frames ({L})")
    _check_tensor("audio_features", audio_features, (None, None, d_a), f"(B, T, {d_a})")
    batch, total = audio_features.shape[:2]
    if batch < 1 or total < 1:
        raise ValueError(f"audio_features must have B >= 1 and T >= 1 frames, got {tuple(audio_features.shape)}")
    _check_tensor("source_motion", source_motion, (batch, d), f"(B={batch}, {d})")
    windows = num_windows(total, L)
    if isinstance(emotion, Tensor) and emotion.dim() == 3:  # one emotion per window (dynamic)
        _check_tensor("emotion", emotion, (batch, windows, d_e), f"(B={batch}, num_windows={windows}, {d_e})")
        per_window = emotion.unbind(1)
    else:
        _check_tensor("emotion", emotion, (batch, d_e), f"(B={batch}, {d_e}) or (B, num_windows, {d_e})")
        per_window = (emotion,) * windows
    if noise is not None:
        _check_tensor("noise", noise, (windows, batch, L, d), f"(num_windows={windows}, B={batch}, L={L}, d={d})")
    sampler = WindowSampler(fmt, source_motion, a_cfg=a_cfg, e_cfg=e_cfg, nfe=nfe, solver=solver, seed=seed,
                            noise=noise, progress=progress, on_window=on_window,
                            evals_total=windows * steps * integrate.evals_per_step, dtype=dtype,
                            cuda_graphs=cuda_graphs)

    # ---- audio: pad once to whole windows by repeating the last frame; slices are then views.
    padded = torch.cat([audio_features, audio_features[:, -1:].expand(batch, windows * L - total, d_a)], dim=1)
    for k in range(windows):
        yield sampler.step(padded[:, k * L : (k + 1) * L], per_window[k], num_real=min(L, total - k * L))


class WindowSampler:
    """The per-window step of the "L' + L" sampler (paper Sec. 4.2), with the carried context.

    The one code path of windowed sampling: :func:`iter_motion_windows` (offline, the whole
    clip's features known) and the live loop of :mod:`float_core.streaming` (features computed
    as the speech arrives) both call :meth:`step` once per window, in order. The sampler keeps
    what window k+1 needs from window k: the last L' latents and audio features, the noise
    generator, and the evaluation count for progress.

    Args:
        fmt: a :class:`~float_core.models.fmt.FlowMatchingTransformer` (eval mode).
        source_motion: w_{r->S} ``(B, d)``; fixes batch, device and dtype.
        a_cfg, e_cfg, nfe, solver, seed, progress, on_window: as in :func:`iter_motion_windows`.
        noise: explicit starting noise ``(W, B, L, d)`` for the first W windows; overrides ``seed``.
        evals_total: the ``total`` reported to ``progress`` (0 = unknown, e.g. a live stream).
        dtype: compute dtype of the FMT's matmuls (:class:`float_core.precision.Precision`
            ``.fmt``): low precision runs each vector-field evaluation under autocast; the ODE
            state, the guidance arithmetic and the returned latents stay float32.
        cuda_graphs: replay the guided vector field from a CUDA graph captured at the first
            evaluation (:mod:`float_core.cuda_graphs`); ``capture`` replaces CUDA's capture
            (default :func:`~float_core.cuda_graphs.capture_cuda_graph`; tests pass their own).
    """

    def __init__(self, fmt: torch.nn.Module, source_motion: Tensor, *, a_cfg: float = 2.0, e_cfg: float = 1.0,
                 nfe: int = 10, solver: str = "euler", seed: int | None = None, noise: Tensor | None = None,
                 progress: Callable[[str, int, int], None] | None = None,
                 on_window: Callable[[WindowInputs], None] | None = None, evals_total: int = 0,
                 dtype: torch.dtype = torch.float32, cuda_graphs: bool = False,
                 capture: Capture | None = None) -> None:
        self.fmt = fmt
        self.dtype, self.cuda_graphs = dtype, cuda_graphs
        #: the guided field of (t, x, audio, source_motion, emotion, prev_x, prev_wa)
        self.velocity = (GraphedFunction(self._guided_velocity, capture or capture_cuda_graph) if cuda_graphs
                         else self._guided_velocity)
        self.source_motion = source_motion
        self.a_cfg, self.e_cfg = a_cfg, e_cfg
        SamplingConfig(a_cfg=a_cfg, e_cfg=e_cfg, nfe=nfe, solver=solver, seed=seed)
        self.integrate = SOLVERS[solver]
        self.times = time_grid(nfe, solver).to(source_motion.device)
        self.noise, self.progress, self.on_window = noise, progress, on_window
        self.evals_total, self.evals_done = evals_total, 0
        self.generator: torch.Generator | None = None
        if noise is None:
            self.generator = torch.Generator()  # CPU: the same seed gives the same noise on every device
            if seed is None:
                self.generator.seed()
            else:
                self.generator.manual_seed(int(seed))
        batch, device, dtype = source_motion.shape[0], source_motion.device, source_motion.dtype
        self.window, Lp = fmt.num_frames, fmt.num_prev_frames
        #: Window number of the next :meth:`step` (0-based).
        self.index = 0
        self.prev_x = torch.zeros(batch, Lp, fmt.dim_w, device=device, dtype=dtype)
        self.prev_wa = torch.zeros(batch, Lp, fmt.dim_a, device=device, dtype=dtype)

    def _guided_velocity(self, t: Tensor, x: Tensor, audio: Tensor, source_motion: Tensor, emotion: Tensor,
                         prev_x: Tensor, prev_wa: Tensor) -> Tensor:
        """Eq. 13's guided field in the sampler's compute dtype, as float32 ``(B, L' + L, d)``."""
        with autocast(x.device, self.dtype, cache=not self.cuda_graphs):
            v = self.fmt.guided_velocity(t, x, audio, source_motion, emotion, prev_x, prev_wa, self.a_cfg, self.e_cfg)
        return v.to(x.dtype)

    def _next_noise(self) -> Tensor:
        batch, device, dtype = self.source_motion.shape[0], self.source_motion.device, self.source_motion.dtype
        if self.noise is not None:
            if self.index >= self.noise.shape[0]:
                raise ValueError(f"noise: holds {self.noise.shape[0]} windows, window {self.index} needs one more")
            return to_device(self.noise[self.index], device, dtype)
        # Drawn on the host (same noise on every device for a seed), copied without stalling.
        x0 = torch.randn(batch, self.window, self.fmt.dim_w, generator=self.generator)
        return to_device(x0, device, dtype)

    def step(self, audio: Tensor, emotion: Tensor, num_real: int | None = None) -> Tensor:
        """Solve the next window and return its ``(B, num_real, d)`` motion latents.

        Args:
            audio: the window's audio features ``(B, L, d_a)`` (pad a short last window, e.g. by
                repeating its last frame; zeroed frames are the null audio condition of Eq. 13).
            emotion: w_e ``(B, 7)`` for this window.
            num_real: how many of the L frames to return (default L).
        """
        L, Lp, fmt = self.window, self.fmt.num_prev_frames, self.fmt
        batch = self.source_motion.shape[0]
        if tuple(audio.shape) != (batch, L, fmt.dim_a):
            raise ValueError(f"audio must have shape (B={batch}, L={L}, {fmt.dim_a}), got {tuple(audio.shape)}")
        if tuple(emotion.shape) != (batch, fmt.dim_e):
            raise ValueError(f"emotion must have shape (B={batch}, {fmt.dim_e}), got {tuple(emotion.shape)}")
        num_real = L if num_real is None else num_real
        if not 1 <= num_real <= L:
            raise ValueError(f"num_real must be in 1..{L}, got {num_real}")
        x0 = self._next_noise()
        prev_x, prev_wa, source_motion = self.prev_x, self.prev_wa, self.source_motion
        if self.on_window is not None:
            self.on_window(WindowInputs(self.index, x0, audio, prev_x, prev_wa, num_real))

        def field(t: Tensor, x: Tensor) -> Tensor:
            v = self.velocity(t, x, audio, source_motion, emotion, prev_x, prev_wa)
            self.evals_done += 1
            if self.progress is not None:
                self.progress("sampling", self.evals_done, self.evals_total)
            return v[:, Lp:]  # the velocity of the current window (outputs 0..L'-1 are context)

        with torch.no_grad():
            x1 = self.integrate(field, x0, self.times)
        self.prev_x, self.prev_wa = x1[:, L - Lp :], audio[:, L - Lp :]
        self.index += 1
        return x1[:, :num_real]


def sample_motion(
    fmt: torch.nn.Module, audio_features: Tensor, source_motion: Tensor, emotion: Tensor, **options: Any
) -> Tensor:
    """All windows of :func:`iter_motion_windows` concatenated: ``(B, T, d)``.

    ``options`` are the keyword arguments of :func:`iter_motion_windows` (a_cfg, e_cfg, nfe,
    solver, seed, noise, progress, on_window).
    """
    windows = iter_motion_windows(fmt, audio_features, source_motion, emotion, **options)
    return torch.cat(list(windows), dim=1)
