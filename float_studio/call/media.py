"""Media of a call: the caller's microphone in, the portrait's video and voice out.

TalkingMachines ("Applications") streams generated frames and their audio back to the caller
over WebRTC, in sync. Here the frames come from a :class:`float_core.avatar.LiveAvatar`, which
paces them at 25 fps and carries with every frame exactly the 640 samples (40 ms at 16 kHz) it
was made from; when no new frame is ready on time it repeats the last one with silence, so
sound and picture slip together and never drift apart. :class:`AvatarOutput` hands each frame
to the two outgoing tracks: the video track sends frame ``index`` with the timestamp
``index / 25`` s, the audio track its samples as two 20 ms packets from the same instant, so
the caller's browser lines them up by timestamp too.
"""

from __future__ import annotations

import asyncio
import fractions
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable

import av
import numpy as np
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError

from float_core.avatar import AvatarFrame
from float_core.config import FPS, SAMPLE_RATE, SAMPLES_PER_FRAME

__all__ = ["AvatarOutput", "OutputStats", "PortraitVideoTrack", "PortraitAudioTrack", "MicReader"]

AUDIO_PTIME = 0.02  #: 20 ms audio packets (the WebRTC/Opus norm)
AUDIO_BLOCK = int(SAMPLE_RATE * AUDIO_PTIME)  #: 320 samples per audio packet
VIDEO_TIME_BASE = fractions.Fraction(1, 90000)  #: RTP video clock
AUDIO_TIME_BASE = fractions.Fraction(1, SAMPLE_RATE)
#: Frames a track may fall behind (a busy event loop) before the oldest is skipped, so the call's
#: delay does not grow with every hiccup.
MAX_QUEUED_FRAMES = 6


# ---------------------------------------------------------------------------- outgoing frames
@dataclass
class OutputStats:
    """Counters of a call's outgoing frames (read by the status endpoint)."""

    shown: int = 0  #: frames sent on to the tracks (25 per second)
    generated: int = 0  #: of them, new frames (the others repeat the last one: generation was late)
    late: int = 0  #: frames a track skipped because it had fallen behind
    started_at: float | None = None  #: monotonic time the first frame was sent on
    first_frame_at: float | None = None  #: monotonic time the first generated frame was sent on


class AvatarOutput:
    """The avatar's frames for the call's video and audio tracks (used on the event loop).

    Each track reads its own queue, so each sends every frame once; a track that falls more
    than :data:`MAX_QUEUED_FRAMES` behind skips the oldest (counted in ``stats.late``). Before
    the peer connects nobody reads: a track starts from the newest frame.
    """

    def __init__(self) -> None:
        self.video: asyncio.Queue[AvatarFrame | None] = asyncio.Queue()
        self.audio: asyncio.Queue[AvatarFrame | None] = asyncio.Queue()
        self.reading: set[str] = set()  #: the tracks that have asked for a frame
        self.stats = OutputStats()
        self.closed = False

    def put(self, frame: AvatarFrame, generated: bool) -> None:
        """Send ``frame`` to both tracks; ``generated``: a new frame, not a repetition."""
        if self.closed:
            return
        s = self.stats
        s.shown += 1
        if s.started_at is None:
            s.started_at = time.monotonic()
        if generated:
            s.generated += 1
            if s.first_frame_at is None:
                s.first_frame_at = time.monotonic()
        for kind, q in (("video", self.video), ("audio", self.audio)):
            while q.qsize() >= MAX_QUEUED_FRAMES:
                q.get_nowait()
                s.late += kind in self.reading
            q.put_nowait(frame)

    def close(self) -> None:
        """End both tracks (their next ``recv()`` raises MediaStreamError)."""
        self.closed = True
        for q in (self.video, self.audio):
            q.put_nowait(None)

    async def next(self, kind: str) -> AvatarFrame:
        """The next frame for the ``kind`` track; MediaStreamError once closed."""
        q = self.video if kind == "video" else self.audio
        if kind not in self.reading:  # the peer just connected: start from the newest frame
            self.reading.add(kind)
            while q.qsize() > 1:
                q.get_nowait()
        frame = await q.get()
        if frame is None:
            raise MediaStreamError
        return frame


class PortraitVideoTrack(MediaStreamTrack):
    """The portrait's video: each frame of an :class:`AvatarOutput` at ``index / 25`` s."""

    kind = "video"

    def __init__(self, output: AvatarOutput) -> None:
        super().__init__()
        self._output = output

    async def recv(self) -> av.VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        frame = await self._output.next("video")
        out = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame.image), format="rgb24")
        out.pts = frame.index * (90000 // FPS)
        out.time_base = VIDEO_TIME_BASE
        return out


class PortraitAudioTrack(MediaStreamTrack):
    """The portrait's voice: each frame's samples as two 20 ms packets (16 kHz mono) from the
    frame's own instant, ``index / 25`` s."""

    kind = "audio"

    def __init__(self, output: AvatarOutput) -> None:
        super().__init__()
        self._output = output
        self._packets: deque[tuple[np.ndarray, int]] = deque()

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if not self._packets:
            frame = await self._output.next("audio")
            start = frame.index * SAMPLES_PER_FRAME
            self._packets.extend((frame.audio[i:i + AUDIO_BLOCK], start + i)
                                 for i in range(0, SAMPLES_PER_FRAME, AUDIO_BLOCK))
        part, pts = self._packets.popleft()
        pcm = (np.clip(part, -1.0, 1.0) * 32767.0).astype(np.int16)[None]
        out = av.AudioFrame.from_ndarray(pcm, format="s16", layout="mono")
        out.sample_rate = SAMPLE_RATE
        out.pts = pts
        out.time_base = AUDIO_TIME_BASE
        return out


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
