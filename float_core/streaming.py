"""Streaming FLOAT: frames out while the speech is still coming in (TalkingMachines on FLOAT).

FLOAT samples motion autoregressively in windows of L frames, each conditioned on the last L'
latents and audio features of the previous window (paper Sec. 4.2, "L' + L"). That makes it a
natural streaming model, as TalkingMachines makes one of a video diffusion model:

* **Pipelined stages.** Four threads joined by bounded queues:
  ``reader`` (live sources only: pulls the caller's iterable, validates and buffers samples)
  -> ``conditions`` (wav2vec2 features, emotion and voice activity of the next chunk or window)
  -> ``sampler`` (flow matching of the current one, :class:`~float_core.sampling.WindowSampler`)
  -> ``decoder`` (motion -> frames in batches) -> the consumer. Every queue holds at most
  ``queue_size`` items, so a slow consumer stops the decoder, which stops the sampler, and so
  on back to the reader, which then stops pulling from the source (back-pressure). Torch
  releases the GIL inside its kernels, so on a GPU (or a CPU with spare cores) the stages
  overlap.
* **Exact for known speech.** For a path or an array the whole speech is known, so the
  conditions are computed exactly as offline (whole-clip wav2vec2 features and emotion) and
  the motion comes from :meth:`FloatPipeline.iter_motion` itself: ``stream(path, idle=False,
  seed=s)`` yields the frames of ``render(prepare(...), sample_motion(..., seed=s))``; only the
  latency changes.
* **Live speech** (any iterable of float32 16 kHz mono chunks, or a :class:`LiveInput` that
  audio is pushed into): sampled in chunks (:class:`~float_core.sampling.ChunkSchedule`):
  every FMT pass commits ``chunk_frames`` new frames after the last L' committed ones, seeing
  ``lookahead_seconds`` of audio beyond them, so a frame waits for its chunk and the
  look-ahead instead of a whole window (``chunk_frames=None``: whole windows). A chunk's
  features are computed on a span with ``context_seconds`` of left context and the look-ahead.
  The schedule and the spans are fixed by frame numbers, not by how the input was cut, so any
  chunking of the input gives the same frames. The emotion is re-estimated once per window of
  L frames (dynamic emotion) unless given.
* **Silence mode** (``idle=True``): a voice-activity detector (:mod:`float_core.vad`, Silero)
  marks every 40 ms frame speaking or silent; silent frames get the null audio condition
  (w_a = 0, the condition classifier-free training drops, paper Eq. 13), so the face idles
  (blinks, small head motion) instead of mouthing noise. Transitions go through the L'
  context like any window boundary. When a live source falls more than ``stall_timeout``
  seconds behind the wall clock, silence is inserted so the stream keeps 25 fps of idle
  frames (and their silent audio) until speech arrives again.
* **Memory flat in length**: motion, frames and samples are dropped once yielded; a live
  buffer keeps only the left context and what has not been used yet (at most
  ``max_buffer_seconds`` ahead).
* **Rollback** (a :class:`LiveInput`'s ``interrupt()``, or speech pushed where idle frames
  were being made): the stream goes back to a frame not yet shown. The audio after it is
  dropped, an epoch counter makes every stage drop what it made from the old audio, and the
  sampler restores the L' context of that frame from its history
  (:meth:`~float_core.sampling.WindowSampler.rewind`).

Closing the iterator (:meth:`StreamIterator.close`, from any thread; leaving a ``with`` block;
garbage collection) stops every stage within one decode batch or one vector-field evaluation
and joins the threads before ``close()`` returns. A live source that blocks inside ``next()`` cannot be interrupted; its
reader thread ends at the source's next yield (a source may yield ``None`` as a keep-alive
when it has no audio yet).
"""

from __future__ import annotations

import dataclasses
import os
import queue
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Self

import numpy as np
import torch
from torch import Tensor

from .config import FPS, SAMPLE_RATE, SAMPLES_PER_FRAME, SamplingConfig, StreamOptions
from .emotion import resolve_emotion
from .inputs import DrivingAudio, Prepared, SourceImage, validate_waveform
from .sampling import ChunkSchedule, WindowSampler

if TYPE_CHECKING:
    from .pipeline import FloatPipeline

__all__ = ["Closing", "LiveInput", "StreamChunk", "StreamIterator", "StreamOptions", "as_samples", "feature_span",
           "live_audio_features", "live_schedule", "span_features", "stream"]

_THREAD_PREFIX = "float-stream"


# ---------------------------------------------------------------------------- public types
@dataclass(frozen=True)
class StreamChunk:
    """A batch of streamed frames with the audio they belong to.

    Attributes:
        frames: uint8 ``(k, H, W, 3)`` RGB frames.
        audio: float32 ``(k * 640,)`` at 16 kHz: exactly the input samples of these k frames
            (frame i covers samples ``[640 i, 640 (i + 1))`` of the input; the last chunk is
            zero-padded, inserted stall silence is zeros).
        start_frame: frames before this chunk (its first frame's number).
        speaking: bool ``(k,)``: the frame was driven by speech (False: silence mode, null audio).
        window: the sampling pass (window or live chunk) of the first frame, counted from 0.
        elapsed: seconds from the stream's start (first ``next()``) to this chunk being ready.
        latency: seconds from the arrival of the last input sample these frames depend on
            (their window's end plus the look-ahead; the start for a path or an array) to ready.
        sampling_seconds: wall time spent sampling the first frame's window.
        decode_seconds: wall time spent decoding these frames.
        epoch: the :class:`LiveInput` epoch the frames were made in (a rollback starts a new
            one; the stream drops frames of older epochs before yielding them).
    """

    frames: np.ndarray
    audio: np.ndarray
    start_frame: int
    speaking: np.ndarray
    window: int
    elapsed: float
    latency: float
    sampling_seconds: float
    decode_seconds: float
    epoch: int = 0

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])

    @property
    def end_frame(self) -> int:
        """The frame number after this chunk's last frame."""
        return self.start_frame + self.num_frames


# ---------------------------------------------------------------------------- internals
class _Cancelled(Exception):
    """Raised inside a stage when the stream is closed (never escapes to the caller)."""


class _Stale(Exception):
    """Raised inside the sampler when a rollback made the pass in progress useless."""


_END = object()  #: end-of-stream marker between stages


@dataclass
class _Window:
    """One pass's conditions (conditions -> sampler) and, with ``motion``, its result."""

    index: int
    num_real: int  #: frames of this pass that are committed (and exist)
    samples: np.ndarray  #: (num_real * 640,) float32, the frames' input samples (zero-padded)
    speaking: np.ndarray  #: (num_real,) bool
    ready: float  #: perf_counter() when the last sample the pass depends on arrived
    first: int = 0  #: frame number of the first frame
    epoch: int = 0  #: the live input's epoch the pass was made in
    features: Tensor | None = None  #: (1, m, d_a) live audio condition (silent frames zeroed)
    emotion: Tensor | None = None  #: (1, 7) live emotion
    motion: Tensor | None = None  #: (num_real, d)
    sampling_seconds: float = 0.0


def as_samples(samples: Any, sample_rate: Any, what: str = "audio", *, strict: bool = True) -> tuple[np.ndarray, int]:
    """Validate live audio: float32 ``(n,)`` samples and their rate, or a ValueError naming ``what``.

    Accepts float32 or int16 (scaled by 1/32768) mono samples, shaped ``(n,)`` or ``(n, 1)``, as a
    numpy array or a tensor, and a positive whole sample rate. Anything else (another dtype,
    several channels, NaN or infinite samples, a zero, negative or fractional rate) is a
    ValueError that says what is wrong and how to fix it. ``strict=False`` (the items of a live
    iterable) takes any float dtype instead and refuses integers.
    """
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)) or sample_rate <= 0:
        raise ValueError(f"{what}: the sample rate must be a positive whole number of Hz, got {sample_rate!r}")
    if torch.is_tensor(samples):
        samples = samples.detach().cpu().numpy()
    if not isinstance(samples, np.ndarray):
        raise ValueError(f"{what}: expected a float32 numpy array of mono samples"
                         f"{' (or int16 PCM)' if strict else ' (or (samples, sample_rate))'}, "
                         f"got {type(samples).__name__}")
    if samples.ndim == 2 and samples.shape[1] == 1:
        samples = samples[:, 0]
    if samples.ndim != 1:
        raise ValueError(f"{what}: expected mono samples of shape (n,), got shape {samples.shape}; "
                         "mix channels down first (e.g. x.mean(axis=1))")
    if strict and samples.dtype == np.int16:
        return samples.astype(np.float32) / 32768.0, int(sample_rate)
    if samples.dtype != np.float32 and (strict or not np.issubdtype(samples.dtype, np.floating)):
        if np.issubdtype(samples.dtype, np.floating):
            hint = " (convert with x.astype(np.float32))"
        else:
            hint = " (int16 PCM: x.astype(np.float32) / 32768)" if samples.dtype == np.int16 else ""
        expected = "float32 samples in [-1, 1] or int16 PCM" if strict else "float samples in [-1, 1]"
        raise ValueError(f"{what}: expected {expected}, got dtype {samples.dtype}{hint}")
    x = samples.astype(np.float32, copy=False)
    if not np.isfinite(x).all():
        raise ValueError(f"{what}: contains NaN or infinite samples")
    return x, int(sample_rate)


def _as_live_chunk(chunk: Any, index: int) -> tuple[np.ndarray, int]:
    """Validate one item of a live iterable: ``samples`` or ``(samples, rate)``."""
    rate = SAMPLE_RATE
    if isinstance(chunk, tuple) and len(chunk) == 2 and isinstance(chunk[1], (int, np.integer)):
        chunk, rate = chunk
    return as_samples(chunk, rate, f"audio chunk {index}", strict=False)


class LiveInput:
    """Live speech for :meth:`FloatPipeline.stream`, pushed from any thread (what
    :class:`~float_core.avatar.LiveAvatar` drives).

    The stream's audio is one timeline of 16 kHz samples: frame f plays samples
    ``[640 f, 640 (f + 1))``. :meth:`push` appends speech to it; where the stream needs audio
    that was not pushed, it inserts silence (zeros), so idle frames keep coming:

    * ``realtime=True``: when nothing was pushed for ``stall_timeout`` seconds and a chunk is
      needed within ``lead`` frames of the frame being shown;
    * ``realtime=False``: only when the consumer waits for a frame no pushed speech covers;
    * after :meth:`end_turn`: at once, for the look-ahead of the speech pushed so far.

    Speech pushed while silence not yet handed to the consumer was inserted replaces that
    silence (a rollback to the first frame not yet delivered), so a reply starts without
    waiting behind idle frames. :meth:`interrupt` drops everything after the frame being
    shown. Either way an epoch counter tells the stream's stages to drop what they made from the
    old audio. The consumer reports the frames it has shown with :meth:`mark_shown`.

    Args:
        realtime: whether a clock drives the consumer (see above).
    """

    def __init__(self, *, realtime: bool = True) -> None:
        self.realtime = realtime
        self.cond = threading.Condition()
        self.options = StreamOptions()
        self.stop = threading.Event()
        self.clock_fill = False  # an iterable's stall silence (from the wall clock), not pushes
        self.blocks: deque[tuple[int, np.ndarray]] = deque()  # (start position, samples)
        #: samples in the timeline (pushed speech plus inserted silence)
        self.total = 0
        #: end of the last pushed sample
        self.real_end = 0
        self.flush_at = 0  # end_turn(): speech before this is complete; its look-ahead may be silence
        self.ended = False
        self.closed = False
        self.keep_from = 0  # samples before this are no longer needed
        self.arrivals: deque[tuple[int, float]] = deque()  # (total after an append, perf_counter)
        self.t0 = time.perf_counter()
        self.inserted = 0  # silence samples inserted
        self.last_push: float | None = None
        #: rollbacks so far; stages drop what they made in an older epoch
        self.epoch = 0
        self._restart: int | None = None  # lowest rollback frame the conditions stage has not taken
        self._rollbacks: deque[tuple[int, int]] = deque(maxlen=256)  # (epoch started, frame)
        #: frames shown (the number of the next frame to show)
        self.shown = 0
        #: frames handed to the consumer
        self.delivered = 0
        #: realtime: how many frames ahead of the one shown idle frames are made
        self.lead = 15
        self._resampler: Any = None
        self._resample_rate: int | None = None

    # ---- producer side (any thread)
    def push(self, samples: Any, sample_rate: int = SAMPLE_RATE) -> None:
        """Append speech: float32 or int16 mono samples of any length at any rate (resampled
        to 16 kHz). Bad input is a ValueError and changes nothing; blocks while more than
        ``max_buffer_seconds`` are waiting (back-pressure)."""
        x, rate = as_samples(samples, sample_rate, "push_audio")
        with self.cond:
            if self.closed or self.ended:
                raise RuntimeError("push_audio: the live input is closed")
            x = self._resample(x, rate)
            if x.size:
                self._append(x, splice=True)

    def end_turn(self) -> None:
        """Nothing more to say for now: the speech pushed so far is complete, so its last chunk
        is made at once with silence as its look-ahead."""
        with self.cond:
            if self._resampler is not None:  # the resampler's delayed tail belongs to this turn
                tail = self._resampler.resample_chunk(np.zeros(0, np.float32), last=True)
                self._resampler = self._resample_rate = None
                if tail.size:
                    self._append(tail.astype(np.float32, copy=False), splice=True)
            self.flush_at = self.real_end
            self.cond.notify_all()

    def interrupt(self) -> int:
        """Drop the speech not yet shown: the stream rolls back to the first frame not shown and
        continues on silence. Returns that frame's number."""
        with self.cond:
            target = self.shown
            self._truncate(target * SAMPLES_PER_FRAME)
            self._resampler = self._resample_rate = None
            self._rollback(target)
            return target

    def mark_shown(self, frame: int) -> None:
        """The consumer has shown every frame before ``frame``."""
        with self.cond:
            if frame > self.shown:
                self.shown = frame
                self.cond.notify_all()

    def valid(self, frame: int, epoch: int) -> bool:
        """Whether frame ``frame`` made in epoch ``epoch`` still stands: no later rollback went
        back to it or before it (a consumer drops the frames it holds that do not)."""
        with self.cond:
            return all(frame < target for started, target in self._rollbacks if started > epoch)

    def arrival_time(self, position: int) -> float:
        """When the sample before ``position`` arrived (``time.perf_counter()``; kept for the
        samples not yet released, i.e. from ``context_seconds`` before the frame shown on)."""
        with self.cond:
            for end, t in self.arrivals:
                if end >= position:
                    return t
            return self.arrivals[-1][1] if self.arrivals else time.perf_counter()

    def close(self) -> None:
        """No more input; pushes raise from now on."""
        with self.cond:
            self.closed = True
            self.stop.set()
            self.cond.notify_all()

    # ---- internals (the stream's threads; the lock is the condition's)
    def _attach(self, options: StreamOptions, stop: threading.Event) -> None:
        with self.cond:
            self.options, self.stop = options, stop
            if self.closed:
                stop.set()

    def _append(self, x: np.ndarray, splice: bool = False) -> None:
        """Append samples (with the lock held for pushes; the reader of an iterable takes it)."""
        limit = int(self.options.max_buffer_seconds * SAMPLE_RATE)
        with self.cond:
            while self.total - self.keep_from > limit and not self.stop.is_set():
                self.cond.wait(0.05)  # back-pressure: the generation is behind the source
            if splice:
                # Silence inserted after the last speech and not yet handed to the consumer
                # gives way to the new speech: roll back to the first frame not delivered.
                cut = max(self.real_end, self.delivered * SAMPLES_PER_FRAME)
                if self.total > cut:
                    self._truncate(cut)
                    self._rollback(self.delivered)
            self._push(x)
            self.real_end = self.total
            self.last_push = time.perf_counter()

    def _resample(self, x: np.ndarray, rate: int) -> np.ndarray:
        if rate == SAMPLE_RATE and self._resampler is None:
            return x
        import soxr

        if self._resample_rate is None:
            self._resampler = soxr.ResampleStream(rate, SAMPLE_RATE, 1, dtype="float32", quality="HQ")
            self._resample_rate = rate
        elif rate != self._resample_rate:
            raise ValueError(f"audio: the live source changed its sample rate from {self._resample_rate} to {rate} Hz"
                             " within a turn; call end_turn() between rates")
        return self._resampler.resample_chunk(x).astype(np.float32, copy=False)

    def _finish(self) -> None:
        with self.cond:
            if self._resampler is not None:
                tail = self._resampler.resample_chunk(np.zeros(0, np.float32), last=True)
                if tail.size:
                    self._push(tail.astype(np.float32, copy=False))
                    self.real_end = self.total
            self.ended = True
            self.cond.notify_all()

    def _push(self, x: np.ndarray) -> None:  # with the lock held
        self.blocks.append((self.total, x))
        self.total += x.size
        self.arrivals.append((self.total, time.perf_counter()))
        self.cond.notify_all()

    def _insert_silence(self, n: int) -> None:  # with the lock held
        self.inserted += n
        self._push(np.zeros(n, np.float32))

    def _truncate(self, position: int) -> None:
        """Drop the samples from ``position`` on (with the lock held)."""
        if position >= self.total:
            return
        while self.blocks and self.blocks[-1][0] >= position:
            self.blocks.pop()
        if self.blocks and self.blocks[-1][0] + self.blocks[-1][1].size > position:
            start, block = self.blocks.pop()
            self.blocks.append((start, block[:position - start]))
        while len(self.arrivals) > 1 and self.arrivals[-1][0] > position:
            self.arrivals.pop()
        self.total = position
        self.real_end = min(self.real_end, position)
        self.flush_at = min(self.flush_at, position)

    def _rollback(self, frame: int) -> None:
        """Start a new epoch from ``frame`` (with the lock held)."""
        self.epoch += 1
        self._restart = frame if self._restart is None else min(self._restart, frame)
        self._rollbacks.append((self.epoch, frame))
        self.delivered = min(self.delivered, frame)
        self.cond.notify_all()

    def _take_restart(self) -> tuple[int, int | None]:
        """The current epoch and the frame of a rollback the conditions stage has not restarted
        from yet (None: no rollback since the last call), read together."""
        with self.cond:
            frame, self._restart = self._restart, None
            return self.epoch, frame

    def _delivered(self, frame: int) -> None:
        with self.cond:
            self.delivered = max(self.delivered, frame)
            if self.clock_fill:
                self.shown = self.delivered  # an iterable's consumer shows what it gets
            self.cond.notify_all()

    def _silence_allowed(self, first: int, needed: int, stall_fill: bool) -> int:
        """How many samples of silence may be inserted now for the pass at frame ``first``,
        which needs ``needed`` samples (with the lock held)."""
        now = time.perf_counter()
        timeout = self.options.stall_timeout
        if self.clock_fill:  # an iterable: keep up with the wall clock when it stalls
            if not stall_fill or timeout is None:
                return 0
            behind = (now - self.t0 - timeout) * SAMPLE_RATE - self.total
            return int(behind) if behind >= 1 else 0
        if first * SAMPLES_PER_FRAME < self.flush_at:
            return needed - self.total  # the turn ended: its last chunk is made now
        if self.realtime:
            stalled = self.last_push is None or (timeout is not None and now - self.last_push >= timeout)
            return needed - self.total if stalled and first < self.shown + self.lead else 0
        if self.real_end <= first * SAMPLES_PER_FRAME and first <= self.shown:
            return needed - self.total  # the consumer waits for a frame nothing was pushed for
        return 0

    def _wait_for(self, first: int, needed: int, epoch: int, stall_fill: bool) -> bool:
        """Block until ``needed`` samples exist (inserting silence where allowed), the input
        ended or the stream stops; False when a rollback started a new epoch meanwhile."""
        with self.cond:
            while True:
                if self.stop.is_set():
                    raise _Cancelled
                if self.epoch != epoch:
                    return False
                if self.total >= needed or self.ended:
                    return True
                n = self._silence_allowed(first, needed, stall_fill)
                if n > 0:
                    self._insert_silence(n)
                    continue
                self.cond.wait(0.02)

    def _read(self, start: int, stop: int) -> np.ndarray:
        """Samples ``[start, stop)`` (clipped to what exists), as one float32 array."""
        with self.cond:
            stop = min(stop, self.total)
            parts = [b[max(0, start - s):max(0, stop - s)] for s, b in self.blocks
                     if s < stop and s + b.size > start]
        return np.concatenate(parts) if parts else np.zeros(0, np.float32)

    def _release(self, position: int) -> None:
        """Samples before ``position`` are no longer needed (memory stays flat)."""
        with self.cond:
            self.keep_from = max(self.keep_from, position)
            while self.blocks and self.blocks[0][0] + self.blocks[0][1].size <= self.keep_from:
                self.blocks.popleft()
            while len(self.arrivals) > 1 and self.arrivals[1][0] <= self.keep_from:
                self.arrivals.popleft()
            self.cond.notify_all()


def live_schedule(pipe: "FloatPipeline", options: StreamOptions) -> ChunkSchedule:
    """The :class:`~float_core.sampling.ChunkSchedule` a live stream with ``options`` samples with.

    ``chunk_frames`` frames per pass (whole windows of L when None or >= L); the look-ahead
    frames condition the pass; a shortened pass is padded by repeating the last feature (as
    offline pads its last window), a whole window needs no padding inside the stream.
    """
    L = pipe.model.fmt.num_frames
    lookahead = int(round(options.lookahead_seconds * FPS))
    if options.chunk_frames is None or options.chunk_frames >= L:
        return ChunkSchedule(frames=L, lookahead=lookahead, length=L)
    return ChunkSchedule(frames=options.chunk_frames, lookahead=lookahead, padding=LIVE_PADDING)


#: What pads a live pass past the speech that has arrived (measured: benchmarks/streaming.py --schedule).
LIVE_PADDING = "repeat"


class _Run:
    """The threads, queues and shared state of one stream."""

    def __init__(self, pipe: "FloatPipeline", source: "SourceImage", audio: Any,
                 cfg: SamplingConfig, options: StreamOptions) -> None:
        self.pipe, self.source, self.audio, self.cfg, self.options = pipe, source, audio, cfg, options
        c = pipe.config
        self.L, self.spf, self.rate = pipe.model.fmt.num_frames, c.samples_per_frame, c.sample_rate
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.q_windows: queue.Queue = queue.Queue(options.queue_size)
        self.q_motion: queue.Queue = queue.Queue(options.queue_size)
        self.q_out: queue.Queue = queue.Queue(options.queue_size)
        self.threads: list[threading.Thread] = []
        self.t_start = time.perf_counter()
        self.num_threads = torch.get_num_threads()
        self.live: LiveInput | None = None
        self.schedule = live_schedule(pipe, options)
        self.first_out = threading.Event()  # the first chunk is decoded

    # ---- thread plumbing
    def start(self) -> None:
        self.t_start = time.perf_counter()
        if isinstance(self.audio, LiveInput):
            self.live = self.audio
            self.live._attach(self.options, self.stop)
        elif _is_live(self.audio):
            self.live = LiveInput(realtime=True)
            self.live.clock_fill = True
            self.live._attach(self.options, self.stop)
            self._spawn("reader", self._read_live)
        if self.live is not None:
            self.live.t0 = self.t_start
            self._spawn("conditions", self._live_conditions)
            self._spawn("sampler", self._sample_live)
        else:
            self._spawn("sampler", self._sample_known)
        self._spawn("decoder", self._decode)

    def _spawn(self, name: str, target: Callable[[], None]) -> None:
        def body() -> None:
            torch.set_num_threads(self.num_threads)  # per thread (OpenMP): as the caller's
            try:
                with torch.inference_mode():
                    target()
            except _Cancelled:
                pass
            except BaseException as exc:  # noqa: BLE001 - handed to the consumer, who re-raises it
                if self.error is None:
                    self.error = exc
                self.stop.set()

        # Daemon: a live source blocked inside next() must not keep the interpreter alive.
        thread = threading.Thread(target=body, name=f"{_THREAD_PREFIX}-{name}", daemon=True)
        self.threads.append(thread)
        thread.start()

    def _put(self, q: queue.Queue, item: Any) -> None:
        while True:
            if self.stop.is_set():
                raise _Cancelled
            try:
                q.put(item, timeout=0.05)
                return
            except queue.Full:
                continue

    def _get(self, q: queue.Queue) -> Any:
        while True:
            if self.stop.is_set():
                raise _Cancelled
            try:
                return q.get(timeout=0.05)
            except queue.Empty:
                continue

    def _stale(self, item: Any) -> bool:
        """A live item made before the latest rollback."""
        return self.live is not None and item is not _END and item.epoch != self.live.epoch

    def _wait_first_chunk(self) -> None:
        """With ``first_frame_first``, block (stoppably) until the first chunk is decoded."""
        while self.options.first_frame_first and not self.first_out.wait(0.05):
            if self.stop.is_set():
                raise _Cancelled

    def _check_stop(self, _stage: str = "", _done: int = 0, _total: int = 0) -> None:
        """A progress callback that aborts sampling between vector-field evaluations."""
        if self.stop.is_set():
            raise _Cancelled

    def shutdown(self, timeout: float = 60.0) -> None:
        self.stop.set()
        if self.live is not None:
            with self.live.cond:
                self.live.cond.notify_all()
        deadline = time.monotonic() + timeout
        for thread in self.threads:
            if thread.name.endswith("reader") or thread is threading.current_thread():
                continue  # the reader may sit in the caller's next(); it exits at the source's next yield
            thread.join(max(0.0, deadline - time.monotonic()))

    # ---- known speech (a path, an array or a DrivingAudio): exactly the offline path
    def _sample_known(self) -> None:
        from .vad import silence_mode

        pipe, opts = self.pipe, self.options
        speech = self.audio if isinstance(self.audio, DrivingAudio) else pipe.prepare_audio(self.audio)
        total = speech.num_frames
        wave = np.zeros(total * self.spf, np.float32)
        wave[:min(wave.size, speech.waveform.size)] = speech.waveform[:wave.size]
        if opts.idle:  # the null audio condition on silent frames (paper Eq. 13: w_a dropped to zero)
            speech, flags = silence_mode(speech, threshold=opts.vad_threshold, min_silence_ms=opts.min_silence_ms)
        else:
            flags = np.ones(total, bool)
        prepared = Prepared(self.source, speech)
        motion_windows = pipe.iter_motion(prepared, self.cfg, progress=self._check_stop)
        start = 0
        while start < total:
            t0 = time.perf_counter()
            motion = next(motion_windows)
            n = int(motion.shape[0])
            window = _Window(index=start // self.L, num_real=n, samples=wave[start * self.spf:(start + n) * self.spf],
                             speaking=flags[start:start + n], ready=self.t_start, first=start, motion=motion,
                             sampling_seconds=time.perf_counter() - t0)
            self._put(self.q_motion, window)
            self._wait_first_chunk()
            start += n
        self._put(self.q_motion, _END)

    # ---- live speech
    def _read_live(self) -> None:
        live = self.live
        assert live is not None
        index = 0
        try:
            for index, item in enumerate(self.audio):
                if self.stop.is_set():
                    return
                if item is None:  # keep-alive: no audio yet
                    continue
                x, rate = _as_live_chunk(item, index)
                with live.cond:
                    x = live._resample(x, rate)
                if x.size:
                    live._append(x)
        except (ValueError, _Cancelled):
            raise
        except Exception as exc:
            raise RuntimeError(f"audio: the live source raised {type(exc).__name__} at chunk {index} "
                               f"({live.total / self.rate:.2f} s in): {exc}") from exc
        finally:
            live._finish()

    def _live_conditions(self) -> None:
        """Chunk after chunk: wait for its audio and look-ahead, then its features, voice
        activity and emotion; after a rollback, start again at the rollback frame."""
        from .models.conditions import normalize_audio
        from .vad import VoiceActivity

        pipe, opts, live, L, spf = self.pipe, self.options, self.live, self.L, self.spf
        assert live is not None
        k, lookahead = self.schedule.frames, self.schedule.lookahead
        context = int(round(opts.context_seconds * FPS))
        vad = VoiceActivity(threshold=opts.vad_threshold, min_silence_ms=opts.min_silence_ms) if opts.idle else None
        vad_pos = 0  # samples pushed to the detector
        flags: deque[bool] = deque()  # detector decisions for frames [flags_start, ...)
        flags_start = 0
        fixed_emotion = None if self.cfg.emotion is None or self.cfg.dynamic_emotion else self.cfg.emotion
        emotion: Tensor | None = None
        emotion_window = -1  # the window of L frames the emotion was last estimated in
        first, index = 0, 0
        while True:
            epoch, restart = live._take_restart()
            if restart is not None:  # a rollback: the frames from `restart` on are made again
                first = restart
                if vad is not None:
                    vad.reset()  # the detector heard audio that was dropped
                vad_pos, flags_start = first * spf, first
                flags.clear()
            needed = (first + k + lookahead) * spf
            if not live._wait_for(first, needed, epoch, stall_fill=opts.idle):
                continue
            with live.cond:
                available, ended, current = live.total, live.ended, live.epoch
            if current != epoch:
                continue
            if available <= first * spf:
                if index == 0:
                    raise ValueError("audio: the live source ended before sending any samples")
                break
            frames_available = -(-available // spf)
            num_real = min(k, frames_available - first) if ended else k
            known = min(k + lookahead, frames_available - first)
            span_start, end = feature_span(first, k, context, lookahead, spf, available)
            ready = live.arrival_time(end)
            span = live._read(span_start, end)
            samples = np.zeros(num_real * spf, np.float32)
            own = live._read(first * spf, (first + num_real) * spf)
            samples[:own.size] = own

            # Voice activity of the chunk's frames (the detector runs over the stream in order).
            if vad is not None:
                frame_end = (first + num_real) * spf
                if vad_pos < frame_end:
                    chunk = live._read(vad_pos, frame_end)
                    if chunk.size < frame_end - vad_pos:  # the last, partial frame: zero-padded
                        chunk = np.concatenate([chunk, np.zeros(frame_end - vad_pos - chunk.size, np.float32)])
                    flags.extend(vad.push(chunk).tolist())
                    vad_pos = frame_end
                speaking = np.array([flags[f - flags_start] for f in range(first, first + num_real)], bool)
                while flags_start < first + num_real:
                    flags.popleft()
                    flags_start += 1
            else:
                speaking = np.ones(num_real, bool)

            feats = span_features(pipe, span, first - span_start // spf, known)
            # Silent frames get the null audio condition; the look-ahead frames (not yet judged
            # by the detector) follow the chunk's last frame, so silence stays silence.
            mask = np.concatenate([speaking, np.full(known - num_real, speaking[-1])])
            feats = feats * torch.from_numpy(mask).to(feats)[:, None]

            if fixed_emotion is not None:
                if emotion is None:
                    probs = torch.full((pipe.config.dim_e,), 1.0 / pipe.config.dim_e, device=pipe.device)
                    emotion = resolve_emotion(probs, fixed_emotion)
            elif emotion is None or (speaking.any() and first // L != emotion_window):
                # Dynamic emotion, once per window of L frames (a silent chunk keeps the last
                # one): the L frames up to the chunk's end and its look-ahead.
                own_span = live._read(max(0, first + k - L) * spf, end)
                if own_span.size < SAMPLES_PER_FRAME:
                    own_span = np.concatenate([own_span, np.zeros(SAMPLES_PER_FRAME - own_span.size, np.float32)])
                y = normalize_audio(torch.from_numpy(own_span).to(pipe.device)[None])
                emotion = pipe.classify_emotion(y)[0]
                emotion_window = first // L
            window = _Window(index=index, num_real=num_real, samples=samples, speaking=speaking, ready=ready,
                             first=first, epoch=epoch, features=feats[None], emotion=emotion[None])
            self._put(self.q_windows, window)
            with live.cond:
                shown = live.shown
            live._release(max(0, min(first + num_real, shown) - context) * spf)
            first += num_real
            index += 1
            if ended and first >= frames_available:
                break
        self._put(self.q_windows, _END)

    def _sample_live(self) -> None:
        cfg, live, L = self.cfg, self.live, self.L
        assert live is not None
        sampler = WindowSampler(self.pipe.model.fmt, self.source.source_motion[None], a_cfg=cfg.a_cfg,
                                e_cfg=cfg.e_cfg, nfe=cfg.nfe, solver=cfg.solver, seed=cfg.seed,
                                dtype=self.pipe.precision.fmt, cuda_graphs=self.pipe.cuda_graphs,
                                keep_history=True)
        while True:
            window = self._get(self.q_windows)
            if window is _END:
                break
            if self._stale(window):
                continue
            if window.first != sampler.frame:  # a rollback: restore the context of that frame
                sampler.rewind(window.first)
            with live.cond:
                shown = live.shown
            sampler.forget_before(shown)  # shown frames are never rolled back to

            def check(_stage: str = "", _done: int = 0, _total: int = 0, epoch: int = window.epoch) -> None:
                self._check_stop()
                if live.epoch != epoch:
                    raise _Stale

            sampler.progress = check
            t0 = time.perf_counter()
            try:
                motion = sampler.step(self.schedule.pass_audio(window.features, L), window.emotion,
                                      num_real=window.num_real, commit=window.num_real)
            except _Stale:
                continue
            window.motion = motion[0]
            window.sampling_seconds = time.perf_counter() - t0
            window.features = window.emotion = None
            self._put(self.q_motion, window)
            self._wait_first_chunk()
        self._put(self.q_motion, _END)

    # ---- decoding
    def _decode(self) -> None:
        """Decode motion in batches of ``batch_size``; a live stream also flushes at chunk ends.

        For known speech the batches start at multiples of ``batch_size`` from frame 0, as in
        :meth:`FloatPipeline.render`, so the frames are the offline ones bit for bit.
        """
        batch = self.options.batch_size
        flush_windows = self.live is not None
        pending: list[_Window] = []
        have = 0  # frames pending
        while True:
            window = self._get(self.q_motion)
            final = window is _END
            if not final:
                if self._stale(window):
                    continue
                if pending and pending[0].epoch != window.epoch:
                    pending, have = [], 0  # made before a rollback
                pending.append(window)
                have += window.num_real
            while have >= batch or (have and (final or flush_windows)):
                n = min(batch, have)
                if not self._stale(pending[0]):
                    self._put(self.q_out, self._decode_batch(pending, n))
                    self.first_out.set()
                have -= n
                pending = _drop_frames(pending, n)
            if final:
                self._put(self.q_out, _END)
                return

    def _decode_batch(self, pending: list[_Window], n: int) -> StreamChunk:
        motion, samples, speaking, taken, ready, sampling = [], [], [], 0, 0.0, pending[0].sampling_seconds
        for w in pending:
            take = min(n - taken, w.num_real)
            motion.append(w.motion[:take])
            samples.append(w.samples[:take * self.spf])
            speaking.append(w.speaking[:take])
            ready = max(ready, w.ready)
            taken += take
            if taken == n:
                break
        t0 = time.perf_counter()
        (frames,) = list(self.pipe.render(self.source, torch.cat(motion), batch_size=n))
        now = time.perf_counter()
        return StreamChunk(frames=frames, audio=np.concatenate(samples), start_frame=pending[0].first,
                           speaking=np.concatenate(speaking), window=pending[0].index,
                           elapsed=now - self.t_start, latency=now - ready, sampling_seconds=sampling,
                           decode_seconds=now - t0, epoch=pending[0].epoch)

    # ---- consumer
    def next_chunk(self) -> StreamChunk:
        """The next chunk; StopIteration at the end or once stopped; a stage's error re-raised."""
        while True:
            try:
                item = self.q_out.get(timeout=0.05)
            except queue.Empty:
                if self.error is not None:
                    raise self.error
                if self.stop.is_set():
                    raise StopIteration
                continue
            if item is _END:
                if self.error is not None:
                    raise self.error
                raise StopIteration
            if self._stale(item):
                continue
            if self.live is not None:
                self.live._delivered(item.end_frame)
            return item


class Closing:
    """``with`` blocks and garbage collection call :meth:`close` (which must be idempotent)."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown, a half-built object
            pass


class StreamIterator(Closing, Iterator[StreamChunk]):
    """The iterator :meth:`FloatPipeline.stream` returns: :class:`StreamChunk` after chunk.

    The stages start at the first ``next()``. :meth:`close` (from any thread, also while
    another thread waits in ``next()``, which then ends) stops all work within one decode batch
    or one vector-field evaluation and joins the worker threads; so does leaving a ``with``
    block, an error, the end of the stream, and garbage collection.
    """

    def __init__(self, run: _Run) -> None:
        self._run = run
        self._started = False
        self._closed = False

    def __iter__(self) -> "StreamIterator":
        return self

    def __next__(self) -> StreamChunk:
        if self._closed:
            raise StopIteration
        if not self._started:
            self._started = True
            self._run.start()
        try:
            return self._run.next_chunk()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Stop every stage and join the threads (idempotent)."""
        self._closed = True
        if self._started:
            self._run.shutdown()

    @property
    def closed(self) -> bool:
        return self._closed


def feature_span(first: int, window: int, context: int, lookahead: int, samples_per_frame: int,
                 available: int) -> tuple[int, int]:
    """Samples ``[start, end)`` whose wav2vec2 features condition a live chunk (or window).

    The chunk's frames ``[first, first + window)`` plus ``context`` frames before and
    ``lookahead`` frames after, clipped to the stream's start and to the ``available`` samples
    (the end of the stream). Fixed by frame numbers only, so the cut of the input does not matter.
    """
    start = max(0, first - context) * samples_per_frame
    return start, min((first + window + lookahead) * samples_per_frame, available)


def span_features(pipe: "FloatPipeline", span: np.ndarray, offset: int, count: int) -> Tensor:
    """w_a ``(count, d_a)`` of frames ``[offset, offset + count)`` of a span's own wav2vec2 pass.

    The span is normalised on its own (zero mean, unit variance, as the whole clip is offline)
    and encoded like :meth:`FloatPipeline.prepare_audio` does a clip.
    """
    from .models.conditions import normalize_audio

    x = normalize_audio(torch.from_numpy(np.ascontiguousarray(span)).to(pipe.device)[None])
    feats = pipe.encode_audio(x)[0][offset:offset + count]
    if feats.shape[0] < count:  # cannot happen for spans padded to whole frames; keep the shape
        feats = torch.cat([feats, feats[-1:].expand(count - feats.shape[0], -1)])
    return feats


@torch.no_grad()
def live_audio_features(pipe: "FloatPipeline", wave: np.ndarray, *, context_seconds: float | None = None,
                        lookahead_seconds: float | None = None, chunk_frames: int | None = None) -> Tensor:
    """The w_a ``(T, d_a)`` a live stream of ``wave`` computes for the frames it commits
    (no silence mode): chunk by chunk of ``chunk_frames`` (None: windows of L); the context and
    look-ahead default to :class:`~float_core.config.StreamOptions`'.

    For measuring the sliding span against the whole clip's features
    (``benchmarks/streaming.py``); the stream itself calls the same :func:`feature_span` and
    :func:`span_features`.
    """
    spf, defaults = pipe.config.samples_per_frame, StreamOptions()
    options = dataclasses.replace(
        defaults, chunk_frames=chunk_frames,
        context_seconds=defaults.context_seconds if context_seconds is None else context_seconds,
        lookahead_seconds=defaults.lookahead_seconds if lookahead_seconds is None else lookahead_seconds)
    schedule = live_schedule(pipe, options)
    k, lookahead = schedule.frames, schedule.lookahead
    context = int(round(options.context_seconds * FPS))
    total = pipe.config.num_video_frames(wave.size)
    parts = []
    for first in range(0, total, k):
        start, end = feature_span(first, k, context, lookahead, spf, wave.size)
        parts.append(span_features(pipe, wave[start:end], first - start // spf, min(k, total - first)))
    return torch.cat(parts)


def _drop_frames(pending: list[_Window], n: int) -> list[_Window]:
    """``pending`` without its first ``n`` frames (windows sliced, emptied ones removed)."""
    out: list[_Window] = []
    for w in pending:
        if n >= w.num_real:
            n -= w.num_real
            continue
        if n:
            w = dataclasses.replace(w, num_real=w.num_real - n, motion=w.motion[n:], first=w.first + n,
                                    samples=w.samples[n * (w.samples.size // w.num_real):],  # 640 per frame
                                    speaking=w.speaking[n:])
            n = 0
        out.append(w)
    return out


def _is_live(audio: Any) -> bool:
    if isinstance(audio, LiveInput):
        return True
    if isinstance(audio, (str, os.PathLike, np.ndarray, DrivingAudio)) or torch.is_tensor(audio):
        return False
    if isinstance(audio, (bytes, bytearray)):
        raise ValueError("audio: raw bytes are ambiguous; pass a file path, a float32 array, or an iterable "
                         "of float32 chunks (decode s16le PCM with np.frombuffer(b, '<i2') / 32768)")
    if not isinstance(audio, Iterable):
        raise ValueError(f"audio: expected a file path, a float32 16 kHz mono array or an iterable of chunks, "
                         f"got {type(audio).__name__}")
    return True


def stream(pipe: "FloatPipeline", source: Any, audio: Any, sampling: SamplingConfig | None = None,
           options: StreamOptions | None = None) -> StreamIterator:
    """Stream frames as they are made; see :meth:`FloatPipeline.stream` (the public entry)."""
    cfg = sampling or SamplingConfig()
    options = options or StreamOptions()
    if not isinstance(source, SourceImage):
        source = pipe.prepare_image(source, crop=options.crop)
    if isinstance(audio, np.ndarray) or torch.is_tensor(audio):
        audio = validate_waveform(audio)
    if _is_live(audio) and not isinstance(audio, LiveInput):
        audio = iter(audio)
    return StreamIterator(_Run(pipe, source, audio, cfg, options))
