"""Media plumbing of a call: the caller's microphone in, the portrait's video and voice out.

TalkingMachines ("Applications") streams generated frames and their audio back to
the caller over WebRTC, in sync. Here the synchronisation is by construction: every frame that
``FloatPipeline.stream`` yields carries exactly its 640 samples (40 ms at 16 kHz), and a
:class:`Playout` lays frames and samples on one 25 fps timeline of *ticks*. The video track
shows tick ``k`` at ``t0 + k / 25`` and the audio track plays the same tick's samples over
``[t0 + k / 25, t0 + (k + 1) / 25)``; when no new frame is ready for a tick (generation slower
than real time, or still warming up), the tick repeats the last frame with silence, so sound
and picture slip together and never drift apart.

Inputs to the stream are :class:`LiveFeed` iterables of float32 16 kHz chunks:
:class:`MicFeed` (puppet mode: the caller's voice as it arrives) and :class:`AnswerFeed`
(assistant mode: the spoken answers, silence paced at real time in between). Both remember
when each sample arrived, which is what the latency figures are measured from.
"""

from __future__ import annotations

import asyncio
import bisect
import fractions
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import av
import numpy as np
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError

from float_core.config import FPS, SAMPLE_RATE, SAMPLES_PER_FRAME

__all__ = ["Playout", "PortraitVideoTrack", "PortraitAudioTrack",
           "LiveFeed", "MicFeed", "AnswerFeed", "MicReader"]

AUDIO_PTIME = 0.02  #: 20 ms audio packets (the WebRTC/Opus norm)
AUDIO_BLOCK = int(SAMPLE_RATE * AUDIO_PTIME)  #: 320 samples per audio packet
VIDEO_TIME_BASE = fractions.Fraction(1, 90000)  #: RTP video clock
AUDIO_TIME_BASE = fractions.Fraction(1, SAMPLE_RATE)
#: A track more than this late (a busy event loop) skips ahead instead of bursting to catch up.
MAX_LATE_S = 0.25


# ---------------------------------------------------------------------------- playout timeline
@dataclass
class Tick:
    """One 40 ms slot of the outgoing timeline."""

    frame: np.ndarray  #: (H, W, 3) uint8 shown during the tick
    audio: np.ndarray  #: (640,) float32 played during the tick
    index: int | None  #: stream frame index (None: a repeated frame, the generator was late)
    speaking: bool = False


@dataclass
class PlayoutStats:
    """Counters of one call's outgoing timeline (read by the status endpoint)."""

    generated: int = 0  #: frames received from the stream
    shown: int = 0  #: new frames put on the timeline
    stalls: int = 0  #: ticks that repeated a frame because none was ready
    dropped: int = 0  #: frames discarded (barge-in, idle frames skipped for an answer)
    skipped: int = 0  #: idle frames skipped to catch up (the timeline was late)
    started_at: float | None = None  #: monotonic time of tick 0
    first_frame_at: float | None = None  #: monotonic time the first generated frame was shown


class Playout:
    """Frames and their audio on one 25 fps timeline, filled by a worker and read by two tracks.

    Args:
        placeholder: the frame shown before the first generated one (the portrait crop).
        max_buffered: generated frames held ahead of the timeline; :meth:`put` blocks beyond it,
            which is the back-pressure that paces the stream.
        on_show: called as ``on_show(tick)`` (in the event loop) when a new frame reaches the
            timeline: the latency bookkeeping.
        catch_up: when more than this many frames wait, silent (idle) frames are skipped until
            the backlog is back to it, so a slow start or a hiccup does not delay the rest of
            the call; speech frames are never skipped. None: never skip.
    """

    def __init__(self, placeholder: np.ndarray, *, max_buffered: int = 2 * FPS,
                 on_show: Callable[[Tick, float], None] | None = None, catch_up: int | None = None) -> None:
        self._cond = threading.Condition()
        self._pending: deque[Tick] = deque()
        self._ticks: deque[Tick] = deque(maxlen=2 * FPS)  # recent ticks: the audio track may lag a little
        self._next_tick = 0  # index of the next tick to materialise
        self._last = placeholder
        self._max = max(1, int(max_buffered))
        self._drop: list[tuple[int, int]] = []  # stream frame index spans to discard
        self._closed = False
        self._on_show = on_show
        self._catch_up = catch_up
        self.stats = PlayoutStats()

    # -- producer side (the worker thread that iterates the stream)
    def put(self, frames: np.ndarray, audio: np.ndarray, start_frame: int, speaking: np.ndarray) -> bool:
        """Queue one StreamChunk's frames; blocks while the buffer is full. False once closed."""
        with self._cond:
            while len(self._pending) >= self._max and not self._closed:
                self._cond.wait(0.1)
            if self._closed:
                return False
            for i in range(frames.shape[0]):
                index = start_frame + i
                self.stats.generated += 1
                if self._dropped(index):
                    self.stats.dropped += 1
                    continue
                self._pending.append(Tick(frames[i], audio[i * SAMPLES_PER_FRAME:(i + 1) * SAMPLES_PER_FRAME],
                                          index, bool(speaking[i])))
            return True

    def drop(self, first: int, last: int | None = None) -> int:
        """Discard frames ``first <= index < last`` (None: open-ended until :meth:`end_drop`),
        both already queued and still to come; returns how many queued ones were discarded."""
        with self._cond:
            self._drop.append((first, last if last is not None else 1 << 62))
            kept = deque(t for t in self._pending if not self._dropped(t.index))
            removed = len(self._pending) - len(kept)
            self._pending = kept
            self.stats.dropped += removed
            self._cond.notify_all()
            return removed

    def end_drop(self, last: int) -> None:
        """Close every open-ended drop span at frame ``last`` (frames from there on play again)."""
        with self._cond:
            self._drop = [(a, min(b, last)) for a, b in self._drop]

    def _dropped(self, index: int | None) -> bool:
        return index is not None and any(a <= index < b for a, b in self._drop)

    def close(self) -> None:
        """Release a blocked producer; nothing is queued any more."""
        with self._cond:
            self._closed = True
            self._pending.clear()
            self._cond.notify_all()

    @property
    def buffered(self) -> int:
        return len(self._pending)

    # -- consumer side (the two tracks, in the event loop)
    def start(self, now: float) -> float:
        """The monotonic time of tick 0 (set by the first track that asks)."""
        with self._cond:
            if self.stats.started_at is None:
                self.stats.started_at = now
            return self.stats.started_at

    def tick(self, k: int) -> Tick:
        """Tick ``k`` of the timeline, materialising it (and any before it) when needed."""
        shown: list[Tick] = []
        with self._cond:
            while self._next_tick <= k:
                if self._catch_up is not None:
                    while len(self._pending) > self._catch_up and not self._pending[0].speaking:
                        self._pending.popleft()
                        self.stats.skipped += 1
                if self._pending:
                    t = self._pending.popleft()
                    self._last = t.frame
                    self.stats.shown += 1
                    shown.append(t)
                    self._cond.notify_all()
                else:
                    t = Tick(self._last, np.zeros(SAMPLES_PER_FRAME, np.float32), None)
                    if self.stats.shown:  # before the first frame, waiting is warm-up, not a stall
                        self.stats.stalls += 1
                self._ticks.append(t)
                self._next_tick += 1
            oldest = self._next_tick - len(self._ticks)
            result = self._ticks[max(k - oldest, 0)]
        now = time.monotonic()
        for t in shown:
            if self.stats.first_frame_at is None:
                self.stats.first_frame_at = now
            if self._on_show is not None:
                self._on_show(t, now)
        return result


class _PacedTrack:
    """Shared pacing of the two outgoing tracks: slot ``n`` is due at ``t0 + n * period``."""

    def _init_pacing(self, playout: Playout, period: float) -> None:
        self._playout = playout
        self._period = period
        self._slot = 0

    async def _next_slot(self) -> int:
        t0 = self._playout.start(time.monotonic())
        due = t0 + self._slot * self._period
        wait = due - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        elif -wait > MAX_LATE_S:  # far behind: skip to now rather than burst
            self._slot = int((time.monotonic() - t0) / self._period)
        slot = self._slot
        self._slot += 1
        return slot


class PortraitVideoTrack(MediaStreamTrack, _PacedTrack):
    """The portrait's video at 25 fps, read from a :class:`Playout`."""

    kind = "video"

    def __init__(self, playout: Playout) -> None:
        super().__init__()
        self._init_pacing(playout, 1.0 / FPS)

    async def recv(self) -> av.VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        k = await self._next_slot()
        tick = self._playout.tick(k)
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(tick.frame), format="rgb24")
        frame.pts = k * (90000 // FPS)
        frame.time_base = VIDEO_TIME_BASE
        return frame


class PortraitAudioTrack(MediaStreamTrack, _PacedTrack):
    """The portrait's voice: 20 ms packets of the same timeline's samples (16 kHz mono)."""

    kind = "audio"

    def __init__(self, playout: Playout) -> None:
        super().__init__()
        self._init_pacing(playout, AUDIO_PTIME)

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        j = await self._next_slot()
        per_tick = SAMPLES_PER_FRAME // AUDIO_BLOCK
        tick = self._playout.tick(j // per_tick)
        part = tick.audio[(j % per_tick) * AUDIO_BLOCK:(j % per_tick + 1) * AUDIO_BLOCK]
        pcm = (np.clip(part, -1.0, 1.0) * 32767.0).astype(np.int16)[None]
        frame = av.AudioFrame.from_ndarray(pcm, format="s16", layout="mono")
        frame.sample_rate = SAMPLE_RATE
        frame.pts = j * AUDIO_BLOCK
        frame.time_base = AUDIO_TIME_BASE
        return frame


# ---------------------------------------------------------------------------- stream inputs
class LiveFeed:
    """A live audio input for ``FloatPipeline.stream``: an iterator of float32 16 kHz chunks.

    Iteration blocks until audio is available and ends after :meth:`close`. It records when
    each sample reached the server (:meth:`arrival`), so a shown frame's latency is known.
    """

    chunk = SAMPLES_PER_FRAME  #: samples handed to the stream per step when producing silence

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._queue: deque[np.ndarray] = deque()
        self._queued = 0  # samples in _queue
        self._closed = False
        self.fed = 0  #: samples handed to the stream so far
        self._marks: list[int] = []  # fed-sample positions ...
        self._times: list[float] = []  # ... and the monotonic arrival time of the sample there

    def __iter__(self) -> Iterator[np.ndarray]:
        return self

    def __next__(self) -> np.ndarray:
        chunk = self._take()
        if chunk is None:
            raise StopIteration
        return chunk

    def _take(self) -> np.ndarray | None:
        raise NotImplementedError

    def _hand_out(self, samples: np.ndarray, arrived: float) -> np.ndarray:
        self._marks.append(self.fed)
        self._times.append(arrived)
        self.fed += samples.size
        if len(self._marks) > 20000:  # keep memory flat in a long call (~7 minutes of 20 ms marks)
            del self._marks[:10000], self._times[:10000]
        return samples

    def arrival(self, sample: int) -> float | None:
        """When input sample ``sample`` (counted from the start of the stream) arrived."""
        with self._cond:
            i = bisect.bisect_right(self._marks, sample) - 1
            return self._times[i] if i >= 0 else None

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed


class MicFeed(LiveFeed):
    """Puppet mode: the caller's voice, chunk by chunk, as it arrives.

    The feed keeps to the wall clock of the caller's audio (from its first packet): when the
    caller sends nothing for ``stall_s`` (muted, or the network stalls), silence up to the clock
    is handed out so the face keeps idling; audio that then arrives late, or a backlog beyond
    ``max_lag_s`` (the server cannot keep up), is dropped, oldest first, so the call's delay
    stays bounded instead of growing with every hiccup.
    """

    def __init__(self, *, stall_s: float = 0.2, max_lag_s: float = 3.0) -> None:
        super().__init__()
        self.stall = int(stall_s * SAMPLE_RATE)
        self.max_lag = int(max_lag_s * SAMPLE_RATE)
        self.dropped = 0  #: samples discarded (late after a stall, or backlog)
        self._arrivals: deque[float] = deque()
        self._t0: float | None = None
        self._owed = 0  # inserted silence not yet made up for by dropping late audio

    def _clock(self, now: float) -> int:
        """Samples the caller has produced by ``now`` (from the first packet)."""
        return 0 if self._t0 is None else int((now - self._t0) * SAMPLE_RATE)

    def _drop_oldest(self, excess: int) -> None:  # with the lock held
        while excess > 0 and self._queue:
            old = self._queue.popleft()
            self._arrivals.popleft()
            self._queued -= old.size
            self.dropped += old.size
            excess -= old.size

    def push(self, samples: np.ndarray, arrived: float | None = None) -> None:
        """Add mic samples (float32 16 kHz mono) that reached the server at ``arrived``."""
        if samples.size == 0:
            return
        arrived = time.monotonic() if arrived is None else arrived
        with self._cond:
            if self._t0 is None:
                self._t0 = arrived - samples.size / SAMPLE_RATE
            self._queue.append(samples)
            self._arrivals.append(arrived)
            self._queued += samples.size
            # Audio ahead of the clock: late audio after inserted silence (drop as much of it as
            # was inserted), or the clock started late (the first packet was delayed: move it).
            ahead = self.fed + self._queued - self._clock(arrived) - self.stall
            if ahead > 0:
                drop = min(ahead, self._owed)
                self._owed -= drop
                self._drop_oldest(drop)
                self._t0 -= max(0, ahead - drop) / SAMPLE_RATE
            self._drop_oldest(self._queued - self.max_lag)  # the stream is not keeping up
            self._cond.notify_all()

    def _take(self) -> np.ndarray | None:
        with self._cond:
            while not self._queue and not self._closed:
                now = time.monotonic()
                behind = self._clock(now) - self.fed
                if self._t0 is not None and behind >= self.stall:  # the caller went quiet on the wire
                    self._owed += behind
                    return self._hand_out(np.zeros(behind, np.float32), now)
                wait = (self.stall - behind) / SAMPLE_RATE if self._t0 is not None else 0.05
                self._cond.wait(max(wait, 0.005))
            if self._closed:
                return None
            samples = self._queue.popleft()
            self._queued -= samples.size
            return self._hand_out(samples, self._arrivals.popleft())


@dataclass
class Answer:
    """One spoken answer queued on an :class:`AnswerFeed`."""

    turn: int
    wave: np.ndarray
    pos: int = 0  #: samples of ``wave`` already handed out
    start: int | None = None  #: fed-sample position of its first sample
    end: int | None = None  #: fed-sample position after its last sample
    on_start: Callable[[int], None] | None = None


class AnswerFeed(LiveFeed):
    """Assistant mode: the spoken answers, with silence in between, just ahead of the playout.

    The stream needs a whole window (L frames) plus its look-ahead before it can make any of
    the window's frames, so the feed hands out samples while it is less than ``ahead`` samples
    past ``position()`` (the sample the caller is about to see): far enough that idle frames
    are ready in time, near enough that a new answer starts soon (its frames replace the idle
    frames queued before it, see ``Call``).

    Args:
        position: the input sample from which the caller's timeline will continue.
        ahead_s: how far past ``position()`` the feed may run.
    """

    chunk = 5 * SAMPLES_PER_FRAME  #: 200 ms per step

    def __init__(self, position: Callable[[], int], *, ahead_s: float = 3.0) -> None:
        super().__init__()
        self.position = position
        self.ahead = int(ahead_s * SAMPLE_RATE)
        self._answers: deque[Answer] = deque()
        self.history: dict[int, Answer] = {}  #: every answer by turn (spans for latency and barge-in)

    def say(self, turn: int, wave: np.ndarray, on_start: Callable[[int], None] | None = None) -> Answer:
        """Queue ``wave`` (float32 16 kHz) as the answer of ``turn``; ``on_start(position)`` is
        called (in the stream's reader thread) when its first sample is handed out."""
        answer = Answer(turn, np.asarray(wave, np.float32), on_start=on_start)
        with self._cond:
            self._answers.append(answer)
            self.history[turn] = answer
            if len(self.history) > 64:
                self.history.pop(next(iter(self.history)))
            self._cond.notify_all()
        return answer

    def cancel(self) -> Answer | None:
        """Barge-in: forget every queued answer; returns the one that was being spoken, if any."""
        with self._cond:
            speaking = self._answers[0] if self._answers and self._answers[0].start is not None else None
            for a in self._answers:
                if a.start is not None and a.end is None:
                    a.end = self.fed
            self._answers.clear()
            return speaking

    @property
    def busy(self) -> bool:
        """Whether an answer is queued or being handed out."""
        return bool(self._answers)

    def wake(self) -> None:
        """``position()`` moved: re-check the pacing now."""
        with self._cond:
            self._cond.notify_all()

    def _take(self) -> np.ndarray | None:
        with self._cond:
            while not self._closed and self.fed >= self.position() + self.ahead:
                self._cond.wait(0.02)
            if self._closed:
                return None
            now = time.monotonic()
            if not self._answers:
                return self._hand_out(np.zeros(self.chunk, np.float32), now)
            a = self._answers[0]
            if a.start is None:
                a.start = self.fed
                if a.on_start is not None:
                    a.on_start(a.start)
            part = a.wave[a.pos:a.pos + self.chunk]
            a.pos += part.size
            if a.pos >= a.wave.size:
                self._answers.popleft()
                a.end = self.fed + part.size
            return self._hand_out(part, now)


# ---------------------------------------------------------------------------- microphone in
class MicReader:
    """Reads the caller's audio track and hands 16 kHz mono float32 to ``sink(samples, t)``.

    The Opus decoder delivers 48 kHz stereo s16; the channels are averaged and the rate
    converted with soxr's streaming resampler (the engine's resampler, ``float_core.media.audio``).
    """

    def __init__(self, track: Any, sink: Callable[[np.ndarray, float], None]) -> None:
        self.track = track
        self.sink = sink
        self._resamplers: dict[tuple[int, int], Any] = {}
        self.last_packet_at = time.monotonic()
        self.samples = 0

    def convert(self, frame: Any) -> np.ndarray:
        """One ``av.AudioFrame`` (any rate, layout, s16/flt, packed or planar) to 16 kHz mono."""
        import soxr

        pcm = frame.to_ndarray()
        channels = len(frame.layout.channels)
        if frame.format.is_planar:
            data = pcm.astype(np.float32)  # (channels, n)
        else:
            data = pcm.reshape(-1, channels).T.astype(np.float32)
        if np.issubdtype(pcm.dtype, np.integer):
            data /= float(np.iinfo(pcm.dtype).max) + 1.0
        mono = data.mean(axis=0)
        key = (frame.sample_rate, channels)
        if frame.sample_rate == SAMPLE_RATE:
            return np.ascontiguousarray(mono, np.float32)
        rs = self._resamplers.get(key)
        if rs is None:
            rs = self._resamplers[key] = soxr.ResampleStream(frame.sample_rate, SAMPLE_RATE, 1,
                                                             dtype="float32", quality="HQ")
        return rs.resample_chunk(np.ascontiguousarray(mono, np.float32))

    async def run(self) -> None:
        """Read until the track ends (the caller hung up or dropped); returns then."""
        while True:
            try:
                frame = await self.track.recv()
            except MediaStreamError:
                return
            now = time.monotonic()
            self.last_packet_at = now
            samples = self.convert(frame)
            self.samples += samples.size
            self.sink(samples, now)
