"""Sampling motion latents with the flow matching transformer (paper Eq. 2, Eq. 13, Sec. 4.2).

Two layers, each usable alone:

1. ODE solvers as plain functions over a vector field (k-diffusion style):
   ``solver(field, x, times) -> x(times[-1])`` with ``field(t, x) -> dx/dt`` and ``t`` of shape
   ``(1,)``. :func:`euler`, :func:`midpoint`, :func:`rk4`; :data:`SOLVERS` maps names to them and
   :func:`time_grid` builds the uniform grid for a budget of vector-field evaluations.
2. The windowed sampler (paper Sec. 4.2, "L' + L"): :func:`iter_motion_windows` generates the
   clip L frames at a time, each window conditioned on the last L' latents and audio features of
   the previous one, and yields every window as soon as it is solved (streaming);
   :func:`sample_motion` concatenates them. A :class:`ChunkSchedule` instead commits k frames
   per pass (live streams: a frame waits for k frames of audio, not L). Every pass is one
   :meth:`WindowSampler.step`.

**NFE** (number of function evaluations) here means vector-field evaluations per window; each
evaluation is one batched FMT pass over the guidance branches (Eq. 13). The authors' script
builds its grid as ``linspace(0, 1, nfe)``, i.e. ``nfe - 1`` Euler steps, so its ``nfe = n``
equals our ``solver="euler", nfe=n - 1``; the paper's "NFE = 10"
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
    "PADDINGS",
    "SOLVERS",
    "ChunkSchedule",
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
    """Uniform float32 flow-time grid ``k / steps`` (k = 0..steps) for ``nfe`` evaluations.

    Euler takes ``nfe`` steps, midpoint ``nfe // 2``, rk4 ``nfe // 4`` (at least one step, so a
    budget below a solver's cost per step is rounded up to one step). The reference's
    ``nfe = n`` (grid ``linspace(0, 1, n)``) is ``time_grid(n - 1, "euler")``.

    Each time is divided in float64 and rounded once to float32, so the grid is the same on
    every CPU and GPU: a float32 ``torch.linspace`` rounds some points differently per kernel
    (its vectorised and scalar paths use different formulas). For the reference's default
    grid, ``linspace(0, 1, 10)``, the two agree.
    """
    steps = num_steps(nfe, solver)
    return (torch.arange(steps + 1, dtype=torch.float64) / steps).to(torch.float32)


# --------------------------------------------------------------------------- windows
def num_windows(num_frames_total: int, window: int) -> int:
    """Windows of ``window`` frames needed for ``num_frames_total`` frames: ``ceil(T / L)``."""
    if num_frames_total < 1 or window < 1:
        raise ValueError(f"num_windows needs T >= 1 and L >= 1, got T={num_frames_total}, L={window}")
    return -(-num_frames_total // window)


#: What conditions the padding positions of a shortened live pass (:class:`ChunkSchedule`).
PADDINGS: tuple[str, ...] = ("repeat", "null")


@dataclass(frozen=True)
class ChunkSchedule:
    """The live schedule: one FMT pass per ``frames`` new frames (paper Sec. 4.2's window, cut short).

    A pass covers ``[L' context | k new frames | look-ahead | padding]``. The L' context
    positions are the last L' committed latents and their audio features, exactly as window
    k+1 is conditioned on window k offline. The k new frames and the ``lookahead`` frames
    after them carry the audio features that have arrived; ``length - k - lookahead``
    positions of padding follow. Only the k new frames are committed (they become the next
    pass's context); the look-ahead frames are solved again, with their own look-ahead, by the
    next pass. The FMT's band attention (T = 2 frames per layer) and its fixed sinusoid
    positions make this possible without retraining: a frame sees ``depth * T`` frames on each
    side at most, and a short pass uses the first positions of the same table.

    Attributes:
        frames: k, frames committed per pass (1 .. L).
        lookahead: frames of known audio after the k new ones (conditioning only).
        length: frames per pass after the context, ``k + lookahead`` .. L; None: ``k +
            lookahead`` clipped to L (the shortest pass, no padding inside the stream).
        padding: the audio condition of padding positions (and of frames past the end of the
            speech): ``"repeat"`` the last known feature, as offline pads its last window, or
            ``"null"``, w_a = 0 (the dropped audio condition of Eq. 13).
    """

    frames: int
    lookahead: int = 0
    length: int | None = None
    padding: str = "repeat"

    def __post_init__(self) -> None:
        for name in ("frames", "lookahead"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < (1 if name == "frames" else 0):
                raise ValueError(f"{name}: must be a whole number >= {1 if name == 'frames' else 0}, got {value!r}")
        if self.length is not None and (isinstance(self.length, bool) or not isinstance(self.length, int)
                                        or self.length < self.frames):
            raise ValueError(f"length: must be None or a whole number >= frames ({self.frames}), got {self.length!r}")
        if self.padding not in PADDINGS:
            raise ValueError(f"padding: must be one of {PADDINGS}, got {self.padding!r}")

    @classmethod
    def whole_windows(cls, window: int) -> "ChunkSchedule":
        """The offline schedule: L frames committed per pass of L (no look-ahead inside the pass)."""
        return cls(frames=window, lookahead=0, length=window)

    def check(self, window: int) -> None:
        """Raise ValueError unless k fits the FMT's window L."""
        if self.frames > window:
            raise ValueError(f"chunk frames ({self.frames}) must not exceed the FMT's window L = {window}")

    def pass_length(self, window: int) -> int:
        """Frames per pass after the context: ``length`` (or k + lookahead), at most L."""
        return min(window, self.frames + self.lookahead if self.length is None else self.length)

    def pass_audio(self, known: Tensor, window: int) -> Tensor:
        """The pass's audio condition ``(B, n, d_a)`` from the known features ``(B, m, d_a)``
        of its first frames (the k new frames and the look-ahead that has arrived)."""
        n = self.pass_length(window)
        batch, m, dim = known.shape
        if m >= n:
            return known[:, :n]
        if self.padding == "repeat":
            fill = known[:, -1:].expand(batch, n - m, dim)
        else:
            fill = known.new_zeros(batch, n - m, dim)
        return torch.cat([known, fill], dim=1)


@dataclass(frozen=True)
class WindowInputs:
    """Everything one pass's ODE starts from (handed to ``on_window`` for inspection).

    Attributes:
        index: pass number (0-based; the window number offline).
        x0: starting noise ``(B, n, d)`` (n = L offline).
        audio: the pass's audio condition ``(B, n, d_a)``; the last window's is right-padded by
            replicating its last real frame.
        prev_x: last L' committed latents ``(B, L', d)`` (zeros for the first pass).
        prev_wa: their audio features ``(B, L', d_a)`` (zeros for the first pass).
        num_real: how many of the n frames are real (the rest is padding, not yielded).
        first_frame: the frame number of the pass's first frame.
    """

    index: int
    x0: Tensor
    audio: Tensor
    prev_x: Tensor
    prev_wa: Tensor
    num_real: int
    first_frame: int = 0


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
    chunk: ChunkSchedule | None = None,
) -> Iterator[Tensor]:
    """Generate motion latents window by window, yielding each window when it is solved.

    Window k solves the flow ODE (paper Eq. 2) from noise ``x0`` over flow time 0 -> 1 with the
    guided vector field of Eq. 13 (``fmt.guided_velocity``), conditioned on audio frames
    ``[kL, (k+1)L)``, the source motion, the emotion, and the previous window's last L' latents and
    audio features (zeros for window 0).

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
        chunk: sample with a live :class:`ChunkSchedule` instead of whole windows (the whole
            clip's features stand in for the live ones: for measuring the schedule alone).
            Frame f gets the same starting noise as offline, so the two differ only by the
            schedule; ``noise`` then covers every frame a pass reaches.

    Yields:
        ``(B, n_k, d)`` motion latents of window k: its ``n_k`` real frames (``L``, fewer in the
        last); with ``chunk``, the k committed frames of every pass.
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
    starts = range(0, total, L if chunk is None else chunk.frames)
    if chunk is not None:
        chunk.check(L)
    noise_windows = windows if chunk is None else num_windows(starts[-1] + chunk.pass_length(L), L)
    if noise is not None:
        _check_tensor("noise", noise, (noise_windows, batch, L, d),
                      f"(num_windows={noise_windows}, B={batch}, L={L}, d={d})")
    sampler = WindowSampler(fmt, source_motion, a_cfg=a_cfg, e_cfg=e_cfg, nfe=nfe, solver=solver, seed=seed,
                            noise=noise, progress=progress, on_window=on_window,
                            evals_total=len(starts) * steps * integrate.evals_per_step, dtype=dtype,
                            cuda_graphs=cuda_graphs)
    if chunk is not None:
        for first in starts:
            known = audio_features[:, first:first + chunk.frames + chunk.lookahead]
            real = min(chunk.frames, total - first)
            yield sampler.step(chunk.pass_audio(known, L), per_window[first // L], num_real=real, commit=real)
        return

    # ---- audio: pad once to whole windows by repeating the last frame; slices are then views.
    padded = torch.cat([audio_features, audio_features[:, -1:].expand(batch, windows * L - total, d_a)], dim=1)
    for k in range(windows):
        yield sampler.step(padded[:, k * L : (k + 1) * L], per_window[k], num_real=min(L, total - k * L))


class WindowSampler:
    """One FMT pass of the "L' + L" sampler (paper Sec. 4.2) at a time, with the carried context.

    The one code path of sampling: :func:`iter_motion_windows` (offline, whole windows or a
    :class:`ChunkSchedule`) and the live loop of :mod:`float_core.streaming` (features
    computed as the speech arrives, in chunks) both call :meth:`step` once per pass, in frame
    order. The sampler keeps what the next pass needs: the last L' committed latents and audio
    features, the noise of every frame, and the evaluation count for progress. A live sampler
    built with ``keep_history`` can also :meth:`rewind` to an earlier frame (an interrupted
    avatar drops frames generated ahead of the one shown).

    Noise is a property of the frame, not of the pass: frames ``[wL, (w+1)L)`` take block w,
    drawn as ``(B, L, d)`` in order from the seeded generator (or ``noise[w]``), so a whole
    window's pass draws exactly the offline noise, and a chunked pass over frames f .. f+n
    reuses the same per-frame noise (the look-ahead frames start from the noise they will be
    committed with).

    Args:
        fmt: a :class:`~float_core.models.fmt.FlowMatchingTransformer` (eval mode).
        source_motion: w_{r->S} ``(B, d)``; fixes batch, device and dtype.
        a_cfg, e_cfg, nfe, solver, seed, progress, on_window: as in :func:`iter_motion_windows`.
        noise: explicit starting noise ``(W, B, L, d)`` for the frames of the first W windows; overrides ``seed``.
        evals_total: the ``total`` reported to ``progress`` (0 = unknown, e.g. a live stream).
        dtype: compute dtype of the FMT's matmuls (:class:`float_core.precision.Precision`
            ``.fmt``): low precision runs each vector-field evaluation under autocast; the ODE
            state, the guidance arithmetic and the returned latents stay float32.
        cuda_graphs: replay the guided vector field from a CUDA graph captured at the first
            evaluation (:mod:`float_core.cuda_graphs`); ``capture`` replaces CUDA's capture
            (default :func:`~float_core.cuda_graphs.capture_cuda_graph`; tests pass their own).
        keep_history: keep the committed latents and features (and the noise) back to the last
            :meth:`forget_before`, so :meth:`rewind` can restore the context of any of those frames.
    """

    def __init__(self, fmt: torch.nn.Module, source_motion: Tensor, *, a_cfg: float = 2.0, e_cfg: float = 1.0,
                 nfe: int = 10, solver: str = "euler", seed: int | None = None, noise: Tensor | None = None,
                 progress: Callable[[str, int, int], None] | None = None,
                 on_window: Callable[[WindowInputs], None] | None = None, evals_total: int = 0,
                 dtype: torch.dtype = torch.float32, cuda_graphs: bool = False,
                 capture: Capture | None = None, keep_history: bool = False) -> None:
        self.fmt = fmt
        self.dtype, self.cuda_graphs = dtype, cuda_graphs
        #: the guided field of (t, x, audio, source_motion, emotion, prev_x, prev_wa) (every
        #: pass of one schedule has the same shapes, so one CUDA graph serves them all)
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
        #: Pass number of the next :meth:`step` (0-based; the window number offline).
        self.index = 0
        #: Frames committed so far (the frame number of the next pass's first frame).
        self.frame = 0
        self.prev_x = torch.zeros(batch, Lp, fmt.dim_w, device=device, dtype=dtype)
        self.prev_wa = torch.zeros(batch, Lp, fmt.dim_a, device=device, dtype=dtype)
        self._blocks: dict[int, Tensor] = {}  # noise block w -> (B, L, d) on the device
        self._drawn = 0  # noise blocks drawn from the generator so far
        self.keep_history = keep_history
        # History: committed latents / features of frames [_hist_from, frame), starting with the
        # L' zero frames "before" frame 0 that the first pass sees as its context.
        self._hist_from = -Lp
        self._hist_x, self._hist_wa = self.prev_x, self.prev_wa
        self._forgotten = 0  # rewinds before this frame are impossible

    def _guided_velocity(self, t: Tensor, x: Tensor, audio: Tensor, source_motion: Tensor, emotion: Tensor,
                         prev_x: Tensor, prev_wa: Tensor) -> Tensor:
        """Eq. 13's guided field in the sampler's compute dtype, as float32 ``(B, L' + n, d)``."""
        with autocast(x.device, self.dtype, cache=not self.cuda_graphs):
            v = self.fmt.guided_velocity(t, x, audio, source_motion, emotion, prev_x, prev_wa, self.a_cfg, self.e_cfg)
        return v.to(x.dtype)

    def _block(self, w: int) -> Tensor:
        """Noise block w: the starting noise ``(B, L, d)`` of frames ``[wL, (w+1)L)``."""
        if w not in self._blocks:
            batch, device, dtype = self.source_motion.shape[0], self.source_motion.device, self.source_motion.dtype
            if self.noise is not None:
                if w >= self.noise.shape[0]:
                    raise ValueError(f"noise: holds {self.noise.shape[0]} windows, window {w} needs one more")
                self._blocks[w] = to_device(self.noise[w], device, dtype)
            else:
                # Drawn on the host in order (same noise on every device for a seed), copied
                # without stalling; blocks are drawn once and kept until forgotten.
                while self._drawn <= w:
                    x0 = torch.randn(batch, self.window, self.fmt.dim_w, generator=self.generator)
                    if self._drawn * self.window + self.window > self._forgotten:
                        self._blocks[self._drawn] = to_device(x0, device, dtype)
                    self._drawn += 1
        return self._blocks[w]

    def _noise(self, first: int, n: int) -> Tensor:
        """Starting noise ``(B, n, d)`` of frames ``[first, first + n)``."""
        L = self.window
        w0, w1 = first // L, (first + n - 1) // L
        if w0 == w1:
            block = self._block(w0)
            return block if n == L else block[:, first - w0 * L:first - w0 * L + n]
        parts = [self._block(w) for w in range(w0, w1 + 1)]
        return torch.cat(parts, dim=1)[:, first - w0 * L:first - w0 * L + n]

    def step(self, audio: Tensor, emotion: Tensor, num_real: int | None = None, *,
             commit: int | None = None) -> Tensor:
        """Solve the next pass and return its ``(B, num_real, d)`` motion latents.

        Args:
            audio: the pass's audio features ``(B, n, d_a)``, ``1 <= n <= L`` (a whole window
                is n = L; pad a short last window, e.g. by repeating its last frame; zeroed
                frames are the null audio condition of Eq. 13).
            emotion: w_e ``(B, 7)`` for this pass.
            num_real: how many of the n frames to return (default n).
            commit: how many of the n frames become the committed motion: the next pass starts
                after them, with their last L' latents and features as its context (default n).
        """
        L, Lp, fmt = self.window, self.fmt.num_prev_frames, self.fmt
        batch = self.source_motion.shape[0]
        n = audio.shape[1] if audio.dim() == 3 else 0
        if audio.dim() != 3 or audio.shape[0] != batch or audio.shape[2] != fmt.dim_a or not 1 <= n <= L:
            raise ValueError(f"audio must have shape (B={batch}, n, {fmt.dim_a}) with 1 <= n <= L={L}, "
                             f"got {tuple(audio.shape)}")
        if tuple(emotion.shape) != (batch, fmt.dim_e):
            raise ValueError(f"emotion must have shape (B={batch}, {fmt.dim_e}), got {tuple(emotion.shape)}")
        num_real = n if num_real is None else num_real
        commit = n if commit is None else commit
        if not 1 <= num_real <= n:
            raise ValueError(f"num_real must be in 1..{n}, got {num_real}")
        if not 1 <= commit <= n:
            raise ValueError(f"commit must be in 1..{n}, got {commit}")
        x0 = self._noise(self.frame, n)
        prev_x, prev_wa, source_motion = self.prev_x, self.prev_wa, self.source_motion
        if self.on_window is not None:
            self.on_window(WindowInputs(self.index, x0, audio, prev_x, prev_wa, num_real, self.frame))

        def field(t: Tensor, x: Tensor) -> Tensor:
            v = self.velocity(t, x, audio, source_motion, emotion, prev_x, prev_wa)
            self.evals_done += 1
            if self.progress is not None:
                self.progress("sampling", self.evals_done, self.evals_total)
            return v[:, Lp:]  # the velocity of the pass's own frames (outputs 0..L'-1 are context)

        with torch.no_grad():
            x1 = self.integrate(field, x0, self.times)
        self._commit(x1[:, :commit], audio[:, :commit])
        self.index += 1
        return x1[:, :num_real]

    def _commit(self, x: Tensor, wa: Tensor) -> None:
        """Append committed frames: they become (the end of) the next pass's L' context."""
        Lp, c = self.fmt.num_prev_frames, x.shape[1]
        if c >= Lp:
            self.prev_x, self.prev_wa = x[:, c - Lp:], wa[:, c - Lp:]
        else:
            self.prev_x = torch.cat([self.prev_x[:, c:], x], dim=1)
            self.prev_wa = torch.cat([self.prev_wa[:, c:], wa], dim=1)
        self.frame += c
        if self.keep_history:
            self._hist_x = torch.cat([self._hist_x, x], dim=1)
            self._hist_wa = torch.cat([self._hist_wa, wa], dim=1)
        else:
            self.forget_before(self.frame)

    def forget_before(self, frame: int) -> None:
        """Rewinds to frames before ``frame`` will not be asked for: drop their history and noise."""
        frame = min(frame, self.frame)
        if frame <= self._forgotten:
            return
        self._forgotten = frame
        for w in [w for w in self._blocks if (w + 1) * self.window <= frame]:
            del self._blocks[w]
        keep_from = frame - self.fmt.num_prev_frames
        if self.keep_history and keep_from > self._hist_from:
            self._hist_x = self._hist_x[:, keep_from - self._hist_from:]
            self._hist_wa = self._hist_wa[:, keep_from - self._hist_from:]
            self._hist_from = keep_from

    def rewind(self, frame: int) -> None:
        """Drop the committed frames from ``frame`` on; the next pass starts at ``frame`` with the
        context of the L' committed frames before it (needs ``keep_history``)."""
        if not self.keep_history:
            raise ValueError("rewind needs a WindowSampler built with keep_history=True")
        if not self._forgotten <= frame <= self.frame:
            raise ValueError(f"rewind: frame {frame} is outside the kept history [{self._forgotten}, {self.frame}]")
        Lp, keep = self.fmt.num_prev_frames, frame - self._hist_from
        self._hist_x, self._hist_wa = self._hist_x[:, :keep], self._hist_wa[:, :keep]
        self.prev_x, self.prev_wa = self._hist_x[:, keep - Lp:], self._hist_wa[:, keep - Lp:]
        self.frame = frame


def sample_motion(
    fmt: torch.nn.Module, audio_features: Tensor, source_motion: Tensor, emotion: Tensor, **options: Any
) -> Tensor:
    """All windows of :func:`iter_motion_windows` concatenated: ``(B, T, d)``.

    ``options`` are the keyword arguments of :func:`iter_motion_windows` (a_cfg, e_cfg, nfe,
    solver, seed, noise, progress, on_window).
    """
    windows = iter_motion_windows(fmt, audio_features, source_motion, emotion, **options)
    return torch.cat(list(windows), dim=1)
