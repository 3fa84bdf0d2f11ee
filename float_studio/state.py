"""Per-session state of the FLOAT Studio app: settings, sessions, bounded caches, generations.

Nothing here imports Gradio, so every function can be unit-tested directly. The app keeps
one :class:`Session` per browser session (in ``gr.State``); the loaded
:class:`~float_core.pipeline.FloatPipeline` is shared read-only by all sessions.

Caching follows the engine's one-way data flow (portrait + speech -> prepared state -> motion
-> frames). Each session keeps an :class:`LRUCache`
(bounded in bytes, ``FLOAT_SESSION_CACHE_MB``) of

* portrait analyses (:class:`~float_core.inputs.SourceImage`), keyed by the image content,
  the crop flag, the chosen face and the crop scale,
* speech analyses (:class:`~float_core.inputs.DrivingAudio`), keyed by the file's bytes,
* sampled motion, keyed by both keys plus the :class:`~float_core.config.SamplingConfig`,

all stored on the CPU and moved to the model's device only while a request uses them
(:func:`float_core.inputs.move_tensors`), so idle sessions hold no device memory.

**Ordering.** What the editing controls act on is one immutable :class:`Generation`
(portrait, speech, motion, settings), installed by a single assignment when a generation
is complete and stamped with an increasing version. A preview reads that snapshot once, so
it never decodes one generation's motion on another's portrait, and a result computed from
a snapshot that was replaced meanwhile is reported as stale (:meth:`Session.is_current`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import math
import os
import secrets
import shutil
import tempfile
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Hashable, Iterator, Sequence

import numpy as np

from float_core.config import EMOTIONS, SOLVER_NAMES, SamplingConfig, env_number
from float_core.inputs import move_tensors
from float_core.progress import ProgressCallback

if TYPE_CHECKING:  # heavy imports (torch, transformers) stay lazy for `import app` speed
    from torch import Tensor

    from float_core.inputs import DrivingAudio, Prepared, SourceImage

log = logging.getLogger("float_studio")

EMOTION_CHOICES: list[tuple[str, str]] = (
    [("Auto (from speech)", "auto"), ("Dynamic (per window)", "dynamic")]
    + [(name.capitalize(), name) for name in EMOTIONS])
NFE_RANGE: tuple[int, int] = (1, 50)
#: Audio guidance gamma_a: accepted range (paper Eq. 13); the default is SamplingConfig's.
A_CFG_RANGE: tuple[float, float] = (0.0, 5.0)
#: Emotion guidance gamma_e ("intensity"): accepted range.
E_CFG_RANGE: tuple[float, float] = (0.0, 10.0)
#: The defaults of the controls: the one set in :class:`SamplingConfig`.
DEFAULTS = SamplingConfig()
MAX_SEED = 2**31 - 1
#: Bound of one session's analysis/motion cache (``FLOAT_SESSION_CACHE_MB`` overrides). An
#: official-size portrait analysis is ~63 MB (the encoder's feature pyramid).
DEFAULT_SESSION_CACHE_MB = 256.0


# ---------------------------------------------------------------------------- settings
def sampling_from_ui(a_cfg: Any, e_cfg: Any, nfe: Any, solver: Any, emotion: Any,
                     seed: Any) -> SamplingConfig:
    """Validate raw widget values into a :class:`SamplingConfig` with a concrete seed.

    A negative or empty seed draws a random one (the returned config holds it, so the app
    can write it back into the seed box).

    Raises:
        ValueError: with a message that names the setting and the accepted range.
    """
    a = _number("Audio guidance", a_cfg, *A_CFG_RANGE)
    e = _number("Emotion guidance", e_cfg, *E_CFG_RANGE)
    steps = _number("Steps (NFE)", nfe, *NFE_RANGE)
    if steps != int(steps):
        raise ValueError(f"Steps (NFE): must be a whole number, got {nfe!r}")
    solver = str(solver or DEFAULTS.solver).lower()
    if solver not in SOLVER_NAMES:
        raise ValueError(f"Solver: expected one of {', '.join(SOLVER_NAMES)}, got {solver!r}")
    emotion = str(emotion or "auto").lower()
    if emotion not in ("auto", "dynamic") + EMOTIONS:
        raise ValueError(f"Emotion: expected 'auto', 'dynamic' or one of {', '.join(EMOTIONS)}, got {emotion!r}")
    if seed is None or seed == "":
        seed_value = random_seed()
    else:
        raw = _number("Seed", seed, -math.inf, MAX_SEED)
        if raw != int(raw):
            raise ValueError(f"Seed: must be a whole number, got {seed!r}")
        seed_value = random_seed() if raw < 0 else int(raw)
    return SamplingConfig(a_cfg=a, e_cfg=e, nfe=int(steps), solver=solver, emotion=emotion, seed=seed_value)


def random_seed() -> int:
    """A fresh seed in ``[0, MAX_SEED)`` (the seed box's randomize button, and seed -1)."""
    return secrets.randbelow(MAX_SEED)


def _number(name: str, value: Any, low: float, high: float) -> float:
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected a number, got {value!r}") from None
    if not math.isfinite(x) or not low <= x <= high:
        raise ValueError(f"{name}: must be between {low:g} and {high:g}, got {value!r}")
    return x


def session_cache_bytes() -> int:
    """The byte bound of one session's cache: ``$FLOAT_SESSION_CACHE_MB`` (default 256)."""
    return int(env_number("FLOAT_SESSION_CACHE_MB", DEFAULT_SESSION_CACHE_MB, minimum=0.0) * 2**20)


# ---------------------------------------------------------------------------- cancellation
class Cancelled(Exception):
    """The user pressed Stop; the running step ends at its next progress report."""


def cancellable(progress: ProgressCallback, event: threading.Event) -> ProgressCallback:
    """``progress`` that first raises :class:`Cancelled` once ``event`` is set.

    The engine reports after every vector-field evaluation and every rendered batch, so a
    Stop takes effect within one of those steps (and :func:`~float_core.media.video.write_video`
    removes its unfinished file).
    """

    def report(stage: str, done: int, total: int) -> None:
        if event.is_set():
            raise Cancelled("Stopped.")
        progress(stage, done, total)

    return report


# ---------------------------------------------------------------------------- device moves
def nbytes(value: Any) -> int:
    """Bytes of the tensors and arrays in ``value`` (dataclasses and tuples recursively)."""
    import torch

    if torch.is_tensor(value):
        return value.numel() * value.element_size()
    if isinstance(value, np.ndarray):
        return int(value.nbytes)
    if isinstance(value, (tuple, list)):
        return sum(nbytes(v) for v in value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return sum(nbytes(getattr(value, f.name)) for f in dataclasses.fields(value))
    return 0


class LRUCache:
    """A thread-safe least-recently-used cache bounded by the bytes of its values.

    Values are stored on the CPU (:func:`float_core.inputs.move_tensors`); :meth:`get` returns them on the
    requested device. The newest entry is always kept, even when it alone exceeds the bound.
    """

    def __init__(self, max_bytes: int | None = None):
        self.max_bytes = session_cache_bytes() if max_bytes is None else int(max_bytes)
        self._items: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        """Picklable (ZeroGPU sends a handler's arguments to its GPU worker process): the lock stays."""
        with self._lock:
            return {"max_bytes": self.max_bytes, "items": list(self._items.items())}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.max_bytes = state["max_bytes"]
        self._items = OrderedDict(state["items"])
        self._lock = threading.Lock()

    def get(self, key: Hashable, device: Any = None) -> Any:
        """The value for ``key`` (moved to ``device`` when given), or None."""
        with self._lock:
            item = self._items.get(key)
            if item is None:
                return None
            self._items.move_to_end(key)
        return item[0] if device is None else move_tensors(item[0], device)

    def put(self, key: Hashable, value: Any) -> Any:
        """Store a CPU copy of ``value`` under ``key``, evicting the least recently used; returns the copy."""
        stored = move_tensors(value, "cpu")
        size = nbytes(stored)
        with self._lock:
            self._items.pop(key, None)
            self._items[key] = (stored, size)
            while len(self._items) > 1 and self.total_bytes > self.max_bytes:
                self._items.popitem(last=False)
        return stored

    @property
    def total_bytes(self) -> int:
        return sum(size for _, size in self._items.values())

    def keys(self) -> list[Hashable]:
        """Keys from least to most recently used."""
        with self._lock:
            return list(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


# ---------------------------------------------------------------------------- generation
@dataclass(frozen=True)
class Generation:
    """One complete, consistent generation of a session (CPU tensors; never mutated).

    Attributes:
        version: increases with every generation of the session.
        source, speech: the analyses the motion was sampled for.
        motion: motion latents (T, d).
        lambdas: their coefficients in the orthonormal basis (T, M), for plots and ranges.
        emotion: the emotion the sampler used, (7,) or (W, 7) per window ("dynamic").
        sampling: the settings, with the concrete seed.
        directions: what each motion direction does (``describe_directions``), if known.
    """

    version: int
    source_key: str
    speech_key: str
    source: "SourceImage"
    speech: "DrivingAudio"
    motion: "Tensor"
    lambdas: np.ndarray
    emotion: np.ndarray
    sampling: SamplingConfig
    directions: tuple = ()

    @property
    def num_frames(self) -> int:
        return int(self.motion.shape[0])

    def prepared(self, device: Any = None) -> "Prepared":
        """The :class:`~float_core.inputs.Prepared` pair, on ``device`` when given."""
        from float_core.inputs import Prepared

        return move_tensors(Prepared(self.source, self.speech), device) if device is not None else Prepared(
            self.source, self.speech)


class Session:
    """Per-browser-session state (lives in ``gr.State``; never shared between users).

    ``copy.deepcopy`` (what ``gr.State`` does to its initial value for each new session)
    gives a fresh, empty session, since locks, events and caches cannot be copied. (A plain
    class, not a dataclass: Gradio would serialise a dataclass value into the page config.)

    Attributes:
        cache: the bounded CPU cache of analyses and motion.
        current: the :class:`Generation` the editing controls act on.
        speech_key, speech: the speech analysed last (for the emotion plots).
        workdir, video_path, renders: this session's videos in a temporary folder.
        paste: (source key, PasteBack) of the current portrait.
    """

    def __init__(self, cache: LRUCache | None = None):
        self.cache = cache if cache is not None else LRUCache()
        self.current: Generation | None = None
        self.speech_key: str | None = None
        self.speech: "DrivingAudio | None" = None
        self._actions: set[threading.Event] = set()
        self.workdir: str | None = None
        self.video_path: str | None = None
        self.renders = 0
        self.paste: tuple | None = None
        self._version = 0
        self._lock = threading.Lock()

    def __deepcopy__(self, memo: dict) -> "Session":
        return Session(cache=LRUCache(self.cache.max_bytes))

    def __getstate__(self) -> dict[str, Any]:
        """Picklable with its cache and generation, for ZeroGPU's GPU worker process (see
        :mod:`float_studio.gpu`); the lock and the running actions' stop events stay here."""
        state = dict(self.__dict__)
        del state["_lock"], state["_actions"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()
        self._actions = set()

    @contextlib.contextmanager
    def action(self) -> Iterator[threading.Event]:
        """One long action (analysis, generation, rendering): its own stop event, set by
        :meth:`request_stop` while the action runs. A Stop therefore never reaches an action
        started after it."""
        event = threading.Event()
        with self._lock:
            self._actions.add(event)
        try:
            yield event
        finally:
            with self._lock:
                self._actions.discard(event)

    def request_stop(self) -> int:
        """The Stop button: every running action stops at its next step; returns how many."""
        with self._lock:
            for event in self._actions:
                event.set()
            return len(self._actions)

    def next_version(self) -> int:
        """A new, larger version number for a generation being started."""
        with self._lock:
            self._version += 1
            return self._version

    def install(self, generation: Generation) -> bool:
        """Make ``generation`` current unless a newer one is already installed; True if it was."""
        with self._lock:
            if self.current is not None and self.current.version > generation.version:
                return False
            self.current = generation
            return True

    def is_current(self, generation: Generation | None) -> bool:
        """Whether ``generation`` is still the one the controls act on (results are not stale)."""
        return generation is not None and self.current is generation

    def new_video_path(self, stem: str) -> Path:
        """A fresh path for the next video; the previous video of this session is deleted."""
        with self._lock:
            if self.workdir is None or not os.path.isdir(self.workdir):
                self.workdir = tempfile.mkdtemp(prefix="float-studio-")
            if self.video_path and os.path.exists(self.video_path):
                try:
                    os.remove(self.video_path)
                except OSError:  # e.g. still being served on Windows; the folder goes at cleanup
                    pass
            self.renders += 1
            return Path(self.workdir) / f"{stem}_{self.renders:03d}.mp4"

    def cleanup(self) -> None:
        """Delete this session's temporary files and cached tensors (Gradio dropped the state)."""
        if self.workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
        self.workdir = self.video_path = None
        self.cache.clear()
        self.current = self.speech = self.paste = None


def cleanup_session(session: Any) -> None:
    """``gr.State(delete_callback=...)``: release a session's files and caches."""
    if isinstance(session, Session):
        session.cleanup()


# ---------------------------------------------------------------------------- content keys
def image_key(image: np.ndarray) -> str:
    """A content hash of an RGB array (shape and bytes)."""
    arr = np.ascontiguousarray(image)
    h = hashlib.sha1(f"{arr.shape}{arr.dtype}".encode())
    h.update(memoryview(arr).cast("B"))
    return h.hexdigest()


def file_key(path: str | os.PathLike[str]) -> str:
    """A content hash of a file (uploads get new temporary names but keep their bytes)."""
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class SharedExamples:
    """Analyses of the shipped example files, computed once per process and shared read-only.

    Only contents registered with :meth:`register` (the gallery's files, by content hash) are
    shared; an analysis is an immutable value of the example alone, so sharing it leaks
    nothing between users. Everything else stays per session.
    """

    def __init__(self, max_bytes: int = 512 * 2**20):
        self.cache = LRUCache(max_bytes)
        self.contents: set[str] = set()

    def register(self, content: str) -> None:
        """Share the analyses of the image or file whose content key is ``content``."""
        self.contents.add(content)


#: The process's shared example analyses (filled by the app's gallery).
EXAMPLES = SharedExamples()


def cached(cache: LRUCache, key: Hashable, device: Any, compute: Callable[[], Any],
           content: str | None = None) -> Any:
    """``cache[key]`` on ``device``, computing and storing it first when absent.

    When ``content`` is a registered example (:data:`EXAMPLES`), the value is taken from, or
    computed once into, the shared example cache (and referenced, not copied, by ``cache``).
    """
    value = cache.get(key, device)
    if value is None:
        shared = EXAMPLES.cache if content is not None and content in EXAMPLES.contents else None
        value = shared.get(key, device) if shared is not None else None
        if value is None:
            value = compute()
            if shared is not None:
                value = move_tensors(shared.put(key, value), device)
        cache.put(key, value)
    return value


def offsets_array(values: Sequence[Any], num_directions: int) -> np.ndarray:
    """Slider values -> lambda offsets (M,) float32; missing/None values count as 0."""
    vals = [0.0 if v is None or v == "" else float(v) for v in values]
    if len(vals) != num_directions:
        raise ValueError(f"edits: expected {num_directions} slider values, got {len(vals)}")
    out = np.asarray(vals, dtype=np.float32)
    if not np.isfinite(out).all():
        raise ValueError("edits: slider values must be finite numbers")
    return out

