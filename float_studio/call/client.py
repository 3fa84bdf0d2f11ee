"""A non-browser WebRTC client for ``POST /call/offer`` (aiortc): tests, benchmarks, scripts.

It does what the Call tab's page does: sends speech as its microphone track, receives the
portrait's video and voice, and records what arrives with arrival times. Example::

    import asyncio
    from float_studio.call.client import SpeechTrack, place_call

    rec = asyncio.run(place_call("http://127.0.0.1:7860/", "portrait.png",
                                 SpeechTrack.from_file("speech.wav", lead_s=1.0), seconds=8))
    print(rec.video_fps(), rec.status["av_delay_ms"])
"""

from __future__ import annotations

import asyncio
import base64
import fractions
import json
import mimetypes
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from float_core.config import SAMPLE_RATE

from .media import AUDIO_BLOCK, MicReader

__all__ = ["SpeechTrack", "CallRecording", "place_call", "data_url", "post_offer"]


def data_url(path: str | Path) -> str:
    """A file as a ``data:`` URL (the offer's ``portrait``)."""
    mime = mimetypes.guess_type(str(path))[0] or "application/octet-stream"
    return f"data:{mime};base64,{base64.b64encode(Path(path).read_bytes()).decode('ascii')}"


class SpeechTrack(MediaStreamTrack):
    """A microphone that plays a 16 kHz waveform in real time (20 ms packets), then silence.

    ``schedule(wave)`` queues more speech (e.g. a barge-in) to start at the next packet;
    ``sent_at`` holds the monotonic time each queued segment started playing.
    """

    kind = "audio"

    def __init__(self, wave: np.ndarray | None = None) -> None:
        super().__init__()
        self._segments: list[np.ndarray] = []
        self._current = np.zeros(0, np.float32)
        self._pos = 0
        self._start: float | None = None
        self._n = 0
        self.sent_at: list[float] = []
        self._played: list[np.ndarray] = []
        if wave is not None:
            self.schedule(wave)

    @classmethod
    def from_file(cls, path: str | Path, *, lead_s: float = 0.0) -> "SpeechTrack":
        """The speech of ``path`` after ``lead_s`` seconds of silence."""
        from float_core.media.audio import load_audio

        wave = load_audio(path, target_rate=SAMPLE_RATE)
        return cls(np.concatenate([np.zeros(int(lead_s * SAMPLE_RATE), np.float32), wave]))

    def schedule(self, wave: np.ndarray) -> None:
        self._segments.append(np.asarray(wave, np.float32))

    async def recv(self) -> Any:
        import av

        if self.readyState != "live":
            raise MediaStreamError
        if self._start is None:
            self._start = time.monotonic()
        wait = self._start + self._n * AUDIO_BLOCK / SAMPLE_RATE - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        if self._pos >= self._current.size and self._segments:
            self._current, self._pos = self._segments.pop(0), 0
            self.sent_at.append(time.monotonic())
        part = self._current[self._pos:self._pos + AUDIO_BLOCK]
        self._pos += part.size
        block = np.zeros(AUDIO_BLOCK, np.float32)
        block[:part.size] = part
        self._played.append(block)
        frame = av.AudioFrame.from_ndarray((block * 32767).astype(np.int16)[None], format="s16", layout="mono")
        frame.sample_rate = SAMPLE_RATE
        frame.pts = self._n * AUDIO_BLOCK
        frame.time_base = fractions.Fraction(1, SAMPLE_RATE)
        self._n += 1
        return frame

    @property
    def played(self) -> np.ndarray:
        """Everything sent so far (16 kHz)."""
        return np.concatenate(self._played) if self._played else np.zeros(0, np.float32)

    @property
    def idle(self) -> bool:
        """Whether everything queued has been sent."""
        return self._pos >= self._current.size and not self._segments


@dataclass
class CallRecording:
    """What the client received during a call."""

    answer: dict[str, Any] = field(default_factory=dict)
    video_times: list[float] = field(default_factory=list)  #: monotonic arrival of each video frame
    video_frames: list[np.ndarray] = field(default_factory=list)  #: a sample of received frames (RGB)
    audio: list[np.ndarray] = field(default_factory=list)  #: received audio, 16 kHz mono chunks
    audio_times: list[float] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)  #: data channel events
    event_times: list[float] = field(default_factory=list)  #: monotonic arrival of each event
    status: dict[str, Any] = field(default_factory=dict)  #: GET /call/{id} just before hanging up
    connected_at: float | None = None

    def video_fps(self, last_s: float = 3.0) -> float:
        """Frames per second received over the last ``last_s`` seconds."""
        if len(self.video_times) < 2:
            return 0.0
        end = self.video_times[-1]
        recent = [t for t in self.video_times if t >= end - last_s]
        return (len(recent) - 1) / max(recent[-1] - recent[0], 1e-6)

    def first_event(self, kind: str, **match: Any) -> tuple[dict[str, Any], float] | None:
        """The first event of type ``kind`` (with the given fields) and when it arrived."""
        for ev, t in zip(self.events, self.event_times):
            if ev.get("type") == kind and all(ev.get(k) == v for k, v in match.items()):
                return ev, t
        return None

    def audio_between(self, t0: float, t1: float) -> np.ndarray:
        """Received audio that arrived between monotonic times ``t0`` and ``t1``."""
        parts = [a for a, t in zip(self.audio, self.audio_times) if t0 <= t < t1]
        return np.concatenate(parts) if parts else np.zeros(0, np.float32)

    @property
    def audio_wave(self) -> np.ndarray:
        return np.concatenate(self.audio) if self.audio else np.zeros(0, np.float32)


async def post_offer(url: str, body: dict[str, Any], timeout: float = 60.0) -> tuple[int, dict[str, Any]]:
    """POST ``body`` to ``{url}call/offer``; returns (HTTP status, JSON body)."""
    import httpx

    async with httpx.AsyncClient(timeout=timeout) as client:
        r = await client.post(url.rstrip("/") + "/call/offer", json=body)
    return r.status_code, r.json()


async def place_call(url: str, portrait: str | Path, mic: MediaStreamTrack, *, seconds: float = 8.0,
                     mode: str = "puppet", keep_frames: int = 50, until: Any = None,
                     on_connected: Any = None, **settings: Any) -> CallRecording:
    """Call the server at ``url``, talk through ``mic`` for ``seconds`` (or until ``until(rec)``
    is true), hang up; returns what was received. Raises RuntimeError on an HTTP error."""
    import httpx

    rec = CallRecording()
    from .session import ice_loopback, use_loopback_candidates

    if ice_loopback():  # FLOAT_ICE_LOOPBACK=1: offer 127.0.0.1, as the server expects
        use_loopback_candidates()
    # No ICE servers: aiortc's default would be a public STUN server; host candidates suffice here.
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTrack(mic)
    pc.addTransceiver("video", direction="recvonly")
    channel = pc.createDataChannel("events")

    @channel.on("message")
    def on_message(message: str) -> None:
        rec.events.append(json.loads(message))
        rec.event_times.append(time.monotonic())

    readers: list[asyncio.Task] = []

    async def read_video(track: Any) -> None:
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            rec.video_times.append(time.monotonic())
            if len(rec.video_frames) < keep_frames or len(rec.video_times) % 10 == 0:
                rec.video_frames.append(frame.to_ndarray(format="rgb24"))
                del rec.video_frames[:-keep_frames]

    def on_audio(samples: np.ndarray, t: float) -> None:
        rec.audio.append(samples)
        rec.audio_times.append(t)

    @pc.on("track")
    def on_track(track: Any) -> None:
        if track.kind == "video":
            readers.append(asyncio.ensure_future(read_video(track)))
        else:
            readers.append(asyncio.ensure_future(MicReader(track, on_audio).run()))

    @pc.on("connectionstatechange")
    def on_state() -> None:
        if pc.connectionState == "connected" and rec.connected_at is None:
            rec.connected_at = time.monotonic()

    try:
        await pc.setLocalDescription(await pc.createOffer())
        body = {"sdp": pc.localDescription.sdp, "type": "offer", "mode": mode,
                "portrait": data_url(portrait), **settings}
        status, answer = await post_offer(url, body)
        if status != 200:
            raise RuntimeError(f"HTTP {status}: {answer.get('error')}")
        rec.answer = answer
        await pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type=answer["type"]))
        if on_connected is not None:
            on_connected(rec)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not (until is not None and until(rec)):
            await asyncio.sleep(0.05)
        async with httpx.AsyncClient(timeout=10) as client:
            base = url.rstrip("/") + "/call/" + answer["id"]
            rec.status = (await client.get(base)).json()
            await client.delete(base)
    finally:
        await pc.close()
        for task in readers:
            task.cancel()
    return rec
