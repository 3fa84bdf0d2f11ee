"""Streaming FLOAT: frames out while the speech is still coming in (TalkingMachines on FLOAT).

FLOAT samples motion autoregressively in windows of L frames, each conditioned on the last L'
latents and audio features of the previous window (paper Sec. 4.2, "L' + L"). That makes it a
natural streaming model, as TalkingMachines (seeds/003) does for a video diffusion model:

* **Pipelined stages** (DESIGN.md, "Streaming sketch"). Four threads joined by bounded queues:
  ``reader`` (live sources only: pulls the caller's iterable, validates and buffers samples)
  -> ``conditions`` (wav2vec2 features, emotion and voice activity of window k+1)
  -> ``sampler`` (flow matching of window k, :class:`~float_core.sampling.WindowSampler`)
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
* **Live speech** (any iterable of float32 16 kHz mono chunks): window k's features are
  computed on a sliding span with ``context_seconds`` of left context and
  ``lookahead_seconds`` of look-ahead (the look-ahead adds that much latency; window k waits
  for the samples up to its end plus the look-ahead). The span is fixed by frame numbers, not
  by how the input was cut, so any chunking gives the same frames. The emotion is
  re-estimated per window (dynamic emotion) unless given.
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

Closing the iterator (:meth:`StreamIterator.close`, from any thread; leaving a ``with`` block;
garbage collection) stops every stage within one decode batch or one vector-field evaluation
and joins the threads before ``close()`` returns. A live source that blocks inside ``next()`` cannot be interrupted; its
reader thread ends at the source's next yield (a source may yield ``None`` as a keep-alive
when it has no audio yet).
"""

from __future__ import annotations

import dataclasses
import math
import os
import queue
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import torch
from torch import Tensor

from .config import SAMPLE_RATE, SAMPLES_PER_FRAME, SamplingConfig
from .emotion import resolve_emotion
from .inputs import DrivingAudio, Prepared, SourceImage, validate_waveform
from .sampling import WindowSampler

if TYPE_CHECKING:
    from .pipeline import FloatPipeline

__all__ = ["StreamChunk", "StreamIterator", "StreamOptions", "feature_span", "live_audio_features", "span_features", "stream"]

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
        window: the sampling window of the first frame.
        elapsed: seconds from the stream's start (first ``next()``) to this chunk being ready.
        latency: seconds from the arrival of the last input sample these frames depend on
            (their window's end plus the look-ahead; the start for a path or an array) to ready.
        sampling_seconds: wall time spent sampling the first frame's window.
        decode_seconds: wall time spent decoding these frames.
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

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])

    @property
    def end_frame(self) -> int:
        """The frame number after this chunk's last frame."""
        return self.start_frame + self.num_frames


@dataclass(frozen=True)
class StreamOptions:
    """How a stream is run (everything but the sampling settings of :class:`SamplingConfig`).

    Attributes:
        idle: silence mode: frames the voice-activity detector marks silent use the null audio
            condition, and a stalled live source is padded with silence (``False``: the audio
            drives every frame as offline, nothing is inserted).
        crop: detect and crop the face when ``source`` is an image path or array.
        batch_size: frames decoded at once (and so per :class:`StreamChunk`).
        context_seconds: live input: left context of the wav2vec2 span of a window.
        lookahead_seconds: live input: audio after a window's end seen by its features; a
            window waits for it, so it adds this much latency.
        stall_timeout: live input, idle mode: how many seconds the source may fall behind the
            wall clock before silence is inserted to keep 25 fps (``None``: wait forever).
            Must exceed the source's chunk period.
        max_buffer_seconds: live input: how far the source may run ahead of the frames being
            made before the reader stops pulling from it (back-pressure).
        queue_size: items each inter-stage queue holds.
        first_frame_first: the sampler starts window 1 only once the first frames are decoded,
            so the two do not share the processor before the first frame (on a CPU without
            spare cores overlapping them delays the first frame, not the throughput).
        vad_threshold: speech probability that starts speech (:class:`~float_core.vad.VoiceActivity`).
        min_silence_ms: silence needed before a speaking span ends.
    """

    idle: bool = True
    crop: bool = True
    batch_size: int = 8
    context_seconds: float = 4.0
    lookahead_seconds: float = 0.4
    stall_timeout: float | None = 1.0
    max_buffer_seconds: float = 60.0
    queue_size: int = 2
    first_frame_first: bool = True
    vad_threshold: float = 0.5
    min_silence_ms: float = 300.0

    def __post_init__(self) -> None:
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"batch_size: must be a whole number >= 1, got {self.batch_size!r}")
        if isinstance(self.queue_size, bool) or not isinstance(self.queue_size, int) or self.queue_size < 1:
            raise ValueError(f"queue_size: must be a whole number >= 1, got {self.queue_size!r}")
        for name in ("context_seconds", "lookahead_seconds", "max_buffer_seconds", "min_silence_ms"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ValueError(f"{name}: must be a finite number >= 0, got {value!r}")
        if self.stall_timeout is not None and not (isinstance(self.stall_timeout, (int, float))
                                                   and math.isfinite(self.stall_timeout) and self.stall_timeout > 0):
            raise ValueError(f"stall_timeout: must be a number of seconds > 0 or None, got {self.stall_timeout!r}")
        if self.max_buffer_seconds < 1:
            raise ValueError(f"max_buffer_seconds: must be >= 1, got {self.max_buffer_seconds!r}")


# ---------------------------------------------------------------------------- internals
class _Cancelled(Exception):
    """Raised inside a stage when the stream is closed (never escapes to the caller)."""


_END = object()  #: end-of-stream marker between stages


@dataclass
class _Window:
    """One window's conditions (conditions -> sampler) and, with ``motion``, its result."""

    index: int
    num_real: int  #: frames of this window that exist
    samples: np.ndarray  #: (num_real * 640,) float32, the frames' input samples (zero-padded)
    speaking: np.ndarray  #: (num_real,) bool
    ready: float  #: perf_counter() when the last sample the window depends on arrived
    features: Tensor | None = None  #: (1, L, d_a) live audio condition (padded, silent frames zeroed)
    emotion: Tensor | None = None  #: (1, 7) live emotion
    motion: Tensor | None = None  #: (num_real, d)
    sampling_seconds: float = 0.0


def _as_live_chunk(chunk: Any, index: int) -> tuple[np.ndarray, int]:
    """Validate one item of a live source: (samples float32 (n,), rate)."""
    rate = SAMPLE_RATE
    if isinstance(chunk, tuple) and len(chunk) == 2 and isinstance(chunk[1], (int, np.integer)):
        chunk, rate = chunk
        if rate <= 0:
            raise ValueError(f"audio chunk {index}: sample rate must be positive, got {rate}")
    if torch.is_tensor(chunk):
        chunk = chunk.detach().cpu().numpy()
    if not isinstance(chunk, np.ndarray):
        raise ValueError(f"audio chunk {index}: expected a float32 numpy array of 16 kHz mono samples "
                         f"(or (samples, sample_rate)), got {type(chunk).__name__}")
    if chunk.ndim != 1:
        raise ValueError(f"audio chunk {index}: expected mono samples of shape (n,), got shape {chunk.shape}; "
                         "mix channels down first (e.g. x.mean(axis=1))")
    if not np.issubdtype(chunk.dtype, np.floating):
        hint = " (int16 PCM: x.astype(np.float32) / 32768)" if chunk.dtype == np.int16 else ""
        raise ValueError(f"audio chunk {index}: expected float samples in [-1, 1], got dtype {chunk.dtype}{hint}")
    x = chunk.astype(np.float32, copy=False)
    if not np.isfinite(x).all():
        raise ValueError(f"audio chunk {index}: contains NaN or infinite samples")
    return x, int(rate)


class _LiveAudio:
    """The samples of a live source: a bounded buffer filled by the reader thread.

    Sample positions are absolute (0 = the first sample of the stream). ``total`` counts the
    received samples plus inserted stall silence.
    """

    def __init__(self, options: StreamOptions, stop: threading.Event, sample_rate: int) -> None:
        self.cond = threading.Condition()
        self.options, self.stop, self.rate = options, stop, sample_rate
        self.blocks: deque[tuple[int, np.ndarray]] = deque()  # (start position, samples)
        self.total = 0
        self.ended = False
        self.keep_from = 0  # samples before this are no longer needed
        self.arrivals: deque[tuple[int, float]] = deque()  # (total after an append, perf_counter)
        self.t0 = time.perf_counter()
        self.inserted = 0  # stall silence samples inserted
        self._resampler: Any = None
        self._resample_rate: int | None = None

    # ---- reader side
    def append(self, x: np.ndarray, rate: int) -> None:
        if rate != self.rate:
            x = self._resample(x, rate)
        if x.size == 0:
            return
        limit = int(self.options.max_buffer_seconds * self.rate)
        with self.cond:
            while self.total - self.keep_from > limit and not self.stop.is_set():
                self.cond.wait(0.05)  # back-pressure: the generation is behind the source
            self._push(x)

    def _resample(self, x: np.ndarray, rate: int) -> np.ndarray:
        import soxr

        if self._resample_rate is None:
            self._resampler = soxr.ResampleStream(rate, self.rate, 1, dtype="float32", quality="HQ")
            self._resample_rate = rate
        elif rate != self._resample_rate:
            raise ValueError(f"audio: the live source changed its sample rate from {self._resample_rate} to {rate} Hz")
        return self._resampler.resample_chunk(x).astype(np.float32, copy=False)

    def finish(self) -> None:
        with self.cond:
            if self._resampler is not None:
                tail = self._resampler.resample_chunk(np.zeros(0, np.float32), last=True)
                if tail.size:
                    self._push(tail.astype(np.float32, copy=False))
            self.ended = True
            self.cond.notify_all()

    def _push(self, x: np.ndarray) -> None:  # with the lock held
        self.blocks.append((self.total, x))
        self.total += x.size
        self.arrivals.append((self.total, time.perf_counter()))
        self.cond.notify_all()

    # ---- conditions side
    def wait_for(self, needed: int, stall_fill: bool) -> None:
        """Block until ``needed`` samples exist, the source ended or the stream stops.

        With ``stall_fill`` (idle mode), a source more than ``stall_timeout`` behind the wall
        clock is padded with silence up to the clock, so idle frames keep flowing.
        """
        timeout = self.options.stall_timeout
        with self.cond:
            while self.total < needed and not self.ended:
                if self.stop.is_set():
                    raise _Cancelled
                if stall_fill and timeout is not None:
                    behind = (time.perf_counter() - self.t0 - timeout) * self.rate - self.total
                    if behind >= 1:
                        n = int(behind)
                        self.inserted += n
                        self._push(np.zeros(n, np.float32))
                        continue
                self.cond.wait(0.02)

    def read(self, start: int, stop: int) -> np.ndarray:
        """Samples ``[start, stop)`` (clipped to what exists), as one float32 array."""
        with self.cond:
            stop = min(stop, self.total)
            parts = [b[max(0, start - s):max(0, stop - s)] for s, b in self.blocks
                     if s < stop and s + b.size > start]
        return np.concatenate(parts) if parts else np.zeros(0, np.float32)

    def arrival_time(self, position: int) -> float:
        """When the sample before ``position`` arrived (perf_counter)."""
        with self.cond:
            for end, t in self.arrivals:
                if end >= position:
                    return t
            return self.arrivals[-1][1] if self.arrivals else time.perf_counter()

    def release(self, position: int) -> None:
        """Samples before ``position`` are no longer needed (memory stays flat)."""
        with self.cond:
            self.keep_from = max(self.keep_from, position)
            while self.blocks and self.blocks[0][0] + self.blocks[0][1].size <= self.keep_from:
                self.blocks.popleft()
            while len(self.arrivals) > 1 and self.arrivals[1][0] <= self.keep_from:
                self.arrivals.popleft()
            self.cond.notify_all()


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
        self.live: _LiveAudio | None = None
        self.first_out = threading.Event()  # the first chunk is decoded

    # ---- thread plumbing
    def start(self) -> None:
        self.t_start = time.perf_counter()
        if _is_live(self.audio):
            self.live = _LiveAudio(self.options, self.stop, self.rate)
            self._spawn("reader", self._read_live)
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
                             speaking=flags[start:start + n], ready=self.t_start, motion=motion,
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
                live.append(x, rate)
        except (ValueError, _Cancelled):
            raise
        except Exception as exc:
            raise RuntimeError(f"audio: the live source raised {type(exc).__name__} at chunk {index} "
                               f"({live.total / self.rate:.2f} s in): {exc}") from exc
        finally:
            live.finish()

    def _live_conditions(self) -> None:
        from .vad import VoiceActivity

        pipe, opts, live, L, spf = self.pipe, self.options, self.live, self.L, self.spf
        assert live is not None
        fps = pipe.config.fps
        context, lookahead = int(round(opts.context_seconds * fps)), int(round(opts.lookahead_seconds * fps))
        vad = VoiceActivity(threshold=opts.vad_threshold, min_silence_ms=opts.min_silence_ms) if opts.idle else None
        vad_pos = 0  # samples pushed to the detector
        flags: deque[bool] = deque()  # detector decisions for frames [flags_start, ...)
        flags_start = 0
        fixed_emotion = None if self.cfg.emotion is None or self.cfg.dynamic_emotion else self.cfg.emotion
        emotion: Tensor | None = None
        k = 0
        while True:
            first = k * L
            needed = (first + L + lookahead) * spf
            live.wait_for(needed, stall_fill=opts.idle)
            if self.stop.is_set():
                raise _Cancelled
            with live.cond:
                available, ended = live.total, live.ended
            if available <= first * spf:
                if k == 0:
                    raise ValueError("audio: the live source ended before sending any samples")
                break
            total_frames = -(-available // spf) if ended else None
            num_real = L if total_frames is None else min(L, total_frames - first)
            span_start, end = feature_span(first, L, context, lookahead, spf, available)
            ready = live.arrival_time(end)
            span = live.read(span_start, end)
            samples = np.zeros(num_real * spf, np.float32)
            own = live.read(first * spf, (first + num_real) * spf)
            samples[:own.size] = own

            # Voice activity of the window's frames (the detector runs over the stream in order).
            if vad is not None:
                frame_end = (first + num_real) * spf
                if vad_pos < frame_end:
                    chunk = live.read(vad_pos, frame_end)
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

            feats = span_features(pipe, span, first - span_start // spf, num_real)
            feats = feats * torch.from_numpy(speaking).to(feats)[:, None]
            padded = torch.cat([feats, feats[-1:].expand(L - num_real, -1)])[None]

            if fixed_emotion is not None:
                if emotion is None:
                    probs = torch.full((pipe.config.dim_e,), 1.0 / pipe.config.dim_e, device=pipe.device)
                    emotion = resolve_emotion(probs, fixed_emotion)
            elif speaking.any() or emotion is None:
                # Dynamic emotion: the window's own speech (a silent window keeps the last one).
                own_span = live.read(first * spf, end)
                if own_span.size < SAMPLES_PER_FRAME:
                    own_span = np.concatenate([own_span, np.zeros(SAMPLES_PER_FRAME - own_span.size, np.float32)])
                from .models.conditions import normalize_audio

                y = normalize_audio(torch.from_numpy(own_span).to(pipe.device)[None])
                emotion = pipe.classify_emotion(y)[0]
            window = _Window(index=k, num_real=num_real, samples=samples, speaking=speaking, ready=ready,
                             features=padded, emotion=emotion[None])
            self._put(self.q_windows, window)
            live.release(max(0, first + L - context) * spf)
            k += 1
            if num_real < L:
                break
        self._put(self.q_windows, _END)

    def _sample_live(self) -> None:
        cfg = self.cfg
        sampler = WindowSampler(self.pipe.model.fmt, self.source.source_motion[None], a_cfg=cfg.a_cfg,
                                e_cfg=cfg.e_cfg, nfe=cfg.nfe, solver=cfg.solver, seed=cfg.seed,
                                progress=self._check_stop, dtype=self.pipe.precision.fmt,
                                cuda_graphs=self.pipe.cuda_graphs)
        while True:
            window = self._get(self.q_windows)
            if window is _END:
                break
            t0 = time.perf_counter()
            window.motion = sampler.step(window.features, window.emotion, window.num_real)[0]
            window.sampling_seconds = time.perf_counter() - t0
            window.features = window.emotion = None
            self._put(self.q_motion, window)
            self._wait_first_chunk()
        self._put(self.q_motion, _END)

    # ---- decoding
    def _decode(self) -> None:
        """Decode motion in batches of ``batch_size``; a live stream also flushes at window ends.

        For known speech the batches start at multiples of ``batch_size`` from frame 0, as in
        :meth:`FloatPipeline.render`, so the frames are the offline ones bit for bit.
        """
        batch = self.options.batch_size
        flush_windows = self.live is not None
        pending: list[_Window] = []
        done = 0  # frames yielded
        have = 0  # frames pending
        while True:
            window = self._get(self.q_motion)
            final = window is _END
            if not final:
                pending.append(window)
                have += window.num_real
            while have >= batch or (have and (final or flush_windows)):
                n = min(batch, have)
                self._put(self.q_out, self._decode_batch(pending, done, n))
                self.first_out.set()
                done += n
                have -= n
                pending = _drop_frames(pending, n)
            if final:
                self._put(self.q_out, _END)
                return

    def _decode_batch(self, pending: list[_Window], start_frame: int, n: int) -> StreamChunk:
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
        return StreamChunk(frames=frames, audio=np.concatenate(samples), start_frame=start_frame,
                           speaking=np.concatenate(speaking), window=pending[0].index,
                           elapsed=now - self.t_start, latency=now - ready, sampling_seconds=sampling,
                           decode_seconds=now - t0)

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
            return item


class StreamIterator(Iterator[StreamChunk]):
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

    def __enter__(self) -> "StreamIterator":
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass


def feature_span(first: int, window: int, context: int, lookahead: int, samples_per_frame: int,
                 available: int) -> tuple[int, int]:
    """Samples ``[start, end)`` whose wav2vec2 features condition a live window.

    The window's frames ``[first, first + window)`` plus ``context`` frames before and
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
def live_audio_features(pipe: "FloatPipeline", wave: np.ndarray, *, context_seconds: float = 4.0,
                        lookahead_seconds: float = 0.4) -> Tensor:
    """The w_a ``(T, d_a)`` a live stream of ``wave`` computes, window by window (no silence mode).

    For measuring the sliding span against the whole clip's features
    (``benchmarks/streaming.py``); the stream itself calls the same :func:`feature_span` and
    :func:`span_features`.
    """
    fps, spf, L = pipe.config.fps, pipe.config.samples_per_frame, pipe.model.fmt.num_frames
    context, lookahead = int(round(context_seconds * fps)), int(round(lookahead_seconds * fps))
    total = pipe.config.num_video_frames(wave.size)
    parts = []
    for first in range(0, total, L):
        start, end = feature_span(first, L, context, lookahead, spf, wave.size)
        parts.append(span_features(pipe, wave[start:end], first - start // spf, min(L, total - first)))
    return torch.cat(parts)


def _drop_frames(pending: list[_Window], n: int) -> list[_Window]:
    """``pending`` without its first ``n`` frames (windows sliced, emptied ones removed)."""
    out: list[_Window] = []
    for w in pending:
        if n >= w.num_real:
            n -= w.num_real
            continue
        if n:
            w = dataclasses.replace(w, num_real=w.num_real - n, motion=w.motion[n:],
                                    samples=w.samples[n * (w.samples.size // w.num_real):],  # 640 per frame
                                    speaking=w.speaking[n:])
            n = 0
        out.append(w)
    return out


def _is_live(audio: Any) -> bool:
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
    if _is_live(audio):
        audio = iter(audio)
    return StreamIterator(_Run(pipe, source, audio, cfg, options))
