"""A live avatar: speech in, talking-portrait frames and the same speech out, in sync.

:class:`LiveAvatar` is the one live API of the engine, the shape voice-agent frameworks plug an
avatar in with: push audio as it is produced (a text-to-speech voice, a microphone), say when a
turn ends, interrupt it, and iterate :class:`AvatarFrame` s, each an image and the 40 ms of audio
to play with it. Underneath it is a live :meth:`FloatPipeline.stream` on a
:class:`~float_core.streaming.LiveInput`: chunked sampling (the FMT commits a few frames per
pass after the last L' committed ones, paper Sec. 4.2), silence mode while nobody speaks (the
null audio condition of Eq. 13: idle blinks and head motion), and rollbacks for interruptions.

The audio of the frames is the pushed speech itself (resampled to 16 kHz): frame ``index`` plays
the samples the stream drove it with, so audio and video are in sync by construction, and the
concatenated audio of all frames is the pushed speech in order, each sample once, with zeros
where nothing was queued (idle frames; a real-time avatar that has no new frame on time repeats
the last one with 40 ms of silence). :meth:`LiveAvatar.interrupt` drops the speech not yet shown.

Example::

    with LiveAvatar(pipe, "portrait.png") as avatar:
        threading.Thread(target=lambda: [avatar.push_audio(c, 24000) for c in tts_chunks()]).start()
        for frame in avatar.frames():            # 25 fps, forever (until close)
            show(frame.image); play(frame.audio)
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .config import FPS, SAMPLE_RATE, SAMPLES_PER_FRAME, SamplingConfig
from .inputs import SourceImage
from .pipeline import frames_to_uint8
from .streaming import Closing, LiveInput, StreamIterator, StreamOptions, live_schedule, stream

if TYPE_CHECKING:
    from .inputs import ImageInput
    from .pipeline import FloatPipeline

__all__ = ["AVATAR_STALL_SECONDS", "AvatarFrame", "LiveAvatar"]

#: A/V delays kept for :attr:`LiveAvatar.av_delays` (20 s of speech frames).
_DELAYS_KEPT = 500

#: A real-time avatar waits this long after the last pushed audio for more speech before it
#: fills silence (idle frames): longer than a microphone's or a voice's packet period, short
#: enough that a stalled producer does not hold the face still.
AVATAR_STALL_SECONDS = 0.3
_THREAD_NAME = "float-avatar-pump"


@dataclass(frozen=True)
class AvatarFrame:
    """One video frame of a :class:`LiveAvatar` and the audio to play with it.

    Attributes:
        image: uint8 ``(H, W, 3)`` RGB.
        audio: float32 ``(640,)`` at 16 kHz: the samples to play with this frame (zeros while idle).
        index: frames before this one (counts from 0).
        speaking: the frame is driven by speech (False: idle, or a repeated frame).
        pts: presentation time in seconds, ``index / 25``.
        repeated: no new frame was ready on time (real time): the last image again, silent.
    """

    image: np.ndarray
    audio: np.ndarray
    index: int
    speaking: bool
    pts: float
    repeated: bool = False


class LiveAvatar(Closing):
    """A portrait that speaks the audio pushed into it, live (see the module docstring).

    Args:
        pipe: the :class:`~float_core.pipeline.FloatPipeline`.
        portrait: an image path, an RGB uint8 array or a prepared :class:`SourceImage`.
        sampling: a :class:`~float_core.config.SamplingConfig` (default: its defaults; the
            emotion is then re-estimated from the speech once per window).
        options: :class:`~float_core.streaming.StreamOptions` (default: the live defaults with a
            :data:`AVATAR_STALL_SECONDS` stall timeout).
        realtime: pace :meth:`frames` at 25 fps from a clock, repeating the last frame (with
            silence) when no new one is ready, so the video never stops; False: frames as fast
            as they are made, idle frames made when the consumer asks and nothing is queued
            (for tests and files).

    The stream starts at once (a thread pulls its frames); :meth:`close`, or leaving a ``with``
    block, stops and joins every thread.
    """

    def __init__(self, pipe: "FloatPipeline", portrait: "SourceImage | ImageInput", *,
                 sampling: SamplingConfig | None = None, options: StreamOptions | None = None,
                 realtime: bool = True) -> None:
        self.pipe = pipe
        self.realtime = realtime
        self.options = options or StreamOptions(stall_timeout=AVATAR_STALL_SECONDS)
        self.source = (portrait if isinstance(portrait, SourceImage)
                       else pipe.prepare_image(portrait, crop=self.options.crop))
        self._input = LiveInput(realtime=realtime)
        self._chunk = live_schedule(pipe, self.options).frames
        self._input.lead = self._chunk + 2 * FPS // 5  # raised from measured latencies as frames come
        self._stream: StreamIterator = stream(pipe, self.source, self._input, sampling or SamplingConfig(),
                                              self.options)
        self._cond = threading.Condition()
        #: frames pulled from the stream, not yet shown: (frame, epoch, image, audio, speaking)
        self._buffer: deque[tuple[int, int, np.ndarray, np.ndarray, bool]] = deque()
        self._low_water = 3 if realtime else 1  # the pump pulls a chunk when fewer frames wait
        self._error: BaseException | None = None
        self._ended = False
        self._closed = False
        self._index = 0  # AvatarFrames yielded
        self._next_frame = 0  # the stream frame to show next
        self._last_image = frames_to_uint8(self.source.image)[0]
        self._silence = np.zeros(SAMPLES_PER_FRAME, np.float32)
        self._clock: float | None = None
        self._latency = 0.0
        self._delays: deque[float] = deque(maxlen=_DELAYS_KEPT)
        #: frames :meth:`frames` repeated (real time: no new frame was ready on time)
        self.repeated = 0
        self._pump = threading.Thread(target=self._run_pump, name=_THREAD_NAME, daemon=True)
        self._pump.start()

    # ------------------------------------------------------------------ producer side
    def push_audio(self, samples: Any, sample_rate: int) -> None:
        """Queue speech: float32 or int16 mono samples, any length, any rate (resampled to 16 kHz).

        Raises ValueError for NaN or infinite samples, another dtype, several channels or a
        rate that is not a positive whole number (the avatar keeps running), and RuntimeError
        after :meth:`close`.
        """
        if self._closed:
            raise RuntimeError("push_audio: the avatar is closed")
        self._input.push(samples, sample_rate)

    def end_turn(self) -> None:
        """Nothing more to say for now: the last chunk of the queued speech is made at once
        (silence stands in for its look-ahead) instead of waiting for audio that will not come."""
        self._input.end_turn()

    def interrupt(self) -> None:
        """Drop the speech not yet shown: the next frame is idle and silent."""
        self._input.interrupt()
        with self._cond:
            self._cond.notify_all()

    # ------------------------------------------------------------------ consumer side
    def frames(self) -> Iterator[AvatarFrame]:
        """:class:`AvatarFrame` after frame, until :meth:`close` (see ``realtime``)."""
        while True:
            frame = self._next(block=not self.realtime)
            if frame is None:  # closed
                return
            yield frame

    def _next(self, block: bool) -> AvatarFrame | None:
        if self.realtime:
            now = time.perf_counter()
            if self._clock is None or now - (self._clock + self._index / FPS) > 0.5:
                self._clock = now - self._index / FPS  # start, or resume after a consumer pause: no burst
            delay = self._clock + self._index / FPS - now
            if delay > 0:
                time.sleep(delay)
        entry = self._take(block)
        if entry is None and self._closed:
            return None
        if entry is None:  # real time, nothing new on time: the last image again, silent
            self.repeated += 1
            frame = AvatarFrame(self._last_image, self._silence, self._index, False, self._index / FPS, True)
        else:
            number, _epoch, image, audio, speaking = entry
            self._next_frame = number + 1
            self._input.mark_shown(self._next_frame)
            self._last_image = image
            if speaking:  # A/V delay: the frame's last sample arrived -> the frame is shown
                arrived = self._input.arrival_time(self._next_frame * SAMPLES_PER_FRAME)
                self._delays.append(time.perf_counter() - arrived)
            frame = AvatarFrame(image, audio, self._index, speaking, self._index / FPS)
        self._index += 1
        return frame

    def _take(self, block: bool) -> tuple[int, int, np.ndarray, np.ndarray, bool] | None:
        """The next valid buffered frame (dropping frames a rollback replaced); None if none
        (``block=False``) or closed."""
        with self._cond:
            while True:
                while self._buffer and not self._closed:
                    entry = self._buffer.popleft()
                    self._cond.notify_all()  # the pump may pull the next chunk
                    if entry[0] == self._next_frame and self._input.valid(entry[0], entry[1]):
                        return entry
                if self._error is not None:
                    error, self._error = self._error, None
                    raise error
                if self._closed or self._ended or not block:
                    return None
                self._cond.wait(0.05)

    def _run_pump(self) -> None:
        """Pull the stream's chunks into the buffer, a chunk at a time, when it runs low."""
        try:
            while True:
                with self._cond:
                    while len(self._buffer) >= self._low_water and not self._closed:
                        self._cond.wait(0.05)
                    if self._closed:
                        return
                chunk = next(self._stream)
                with self._cond:
                    for i in range(chunk.num_frames):
                        audio = chunk.audio[i * SAMPLES_PER_FRAME:(i + 1) * SAMPLES_PER_FRAME]
                        self._buffer.append((chunk.start_frame + i, chunk.epoch, chunk.frames[i], audio,
                                             bool(chunk.speaking[i])))
                    self._cond.notify_all()
                # Idle frames are made this many frames ahead of the one shown: enough to cover
                # the measured time from audio to frame (with a margin), so the clock never waits.
                self._latency = max(0.8 * self._latency, chunk.latency)
                self._input.lead = self._chunk + math.ceil(1.5 * self._latency * FPS) + 2
        except StopIteration:
            pass
        except BaseException as exc:  # noqa: BLE001 - re-raised by frames()
            with self._cond:
                self._error = exc
        finally:
            with self._cond:
                self._ended = True
                self._cond.notify_all()

    # ------------------------------------------------------------------ measurements
    @property
    def av_delays(self) -> list[float]:
        """The A/V delay of the latest speech frames (at most 500), oldest first, in seconds:
        from the arrival of a frame's last audio sample (its :meth:`push_audio`) to the frame
        leaving :meth:`frames`. It is the delay a listener hears for a real-time source (a
        microphone); audio pushed faster than real time (a text-to-speech answer) also waits
        for the speech before it to be shown."""
        return list(self._delays)

    @property
    def queued_seconds(self) -> float:
        """Stream time from the next frame to show to the end of the pushed speech: 0 once every
        pushed sample has been shown (or dropped by :meth:`interrupt`)."""
        with self._input.cond:
            return max(0, self._input.real_end - self._input.shown * SAMPLES_PER_FRAME) / SAMPLE_RATE

    # ------------------------------------------------------------------ lifetime
    def close(self) -> None:
        """Stop the stream and join every thread (idempotent); :meth:`frames` then ends."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._cond.notify_all()
        self._input.close()
        self._stream.close()
        if self._pump is not threading.current_thread():
            self._pump.join()

    @property
    def closed(self) -> bool:
        return self._closed
