"""Calls with the portrait over WebRTC: settings, one :class:`Call` per caller, the manager.

A call is one aiortc ``RTCPeerConnection``: the caller sends the microphone, the server sends
the portrait's video (25 fps) and voice, in sync (:mod:`float_studio.call.media`). Behind it is
one :class:`float_core.avatar.LiveAvatar` (the engine's live API: chunked live sampling, idle
frames while nobody speaks, interruptions), whose frames a worker thread of the call hands to
the tracks:

* **puppet**: the caller's voice is pushed into the avatar as it arrives and drives the portrait
  live (a virtual camera); the returned audio is the caller's voice, delayed by exactly as much
  as the video. The measured A/V delay (a frame's audio in -> the frame out) is in the stats.
* **assistant**: turns of the caller's speech are answered by an OpenAI-compatible speech
  recognition -> chat -> speech chain (:mod:`float_studio.call.assistant`); the answer is pushed
  into the avatar, which speaks it and idles while it listens; speaking over it (barge-in)
  calls the avatar's ``interrupt()``.

Every call is isolated (its own avatar, threads and peer connection) and everything it started
is released when the caller hangs up, the peer drops (no audio for ``FLOAT_CALL_TIMEOUT``
seconds, or ICE/DTLS failure), the call reaches its maximum length (``FLOAT_MAX_LIVE_SECONDS``,
counted down to the caller in its last 30 s) or the server closes. On ZeroGPU, where a GPU is
lent per request, calls are refused with a message that says which hardware runs them.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import json
import logging
import math
import os
import statistics
import threading
import time
import uuid
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, fields, replace
from typing import Any, Awaitable, Mapping

import numpy as np

from float_core.avatar import AVATAR_STALL_SECONDS, AvatarFrame, LiveAvatar
from float_core.config import FPS, SAMPLE_RATE, SamplingConfig, StreamOptions, env_number
from float_core.streaming import live_schedule

from .. import services
from ..gpu import dedicated_gpu_message, on_zero_gpu
from ..limits import live_limit_message, max_live_seconds, remaining_seconds
from ..speed import realtime_note
from .assistant import DEFAULT_SYSTEM_PROMPT, Assistant, Conversation, TurnDetector, TurnTiming, Utterance
from .media import AvatarOutput, MicReader

__all__ = ["CallError", "CallSettings", "Call", "CallManager", "ice_servers_from_env", "MODES"]

log = logging.getLogger(__name__)

MODES = ("puppet", "assistant")
#: Puppet mode: queued silence beyond what a chunk and its look-ahead need plus this is dropped.
CATCH_UP_MARGIN_S = 0.5
#: Generation keeps up when the last KEEPING_UP_FRAMES new frames were made within this many
#: seconds (20 fps: a hiccup, not a server too slow for real time).
KEEPING_UP_FRAMES = 50
KEEPING_UP_SECONDS = 2.5
MAX_PORTRAIT_BYTES = 15 * 1024 * 1024


class CallError(Exception):
    """A call cannot start or continue; ``status`` is the HTTP status the endpoint answers."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


# ---------------------------------------------------------------------------- settings
_SAMPLING_KEYS = tuple(f.name for f in fields(SamplingConfig))  # a_cfg, e_cfg, nfe, solver, emotion, seed


@dataclass(frozen=True)
class CallSettings:
    """What a caller may choose in ``POST /call/offer`` besides the SDP and the portrait.

    The offer's keys are flat: ``mode``, the generation settings of
    :class:`float_core.config.SamplingConfig` (``a_cfg``, ``e_cfg``, ``nfe``, ``solver``,
    ``emotion``, ``seed``) and the fields below.

    Attributes:
        mode: "puppet" or "assistant".
        sampling: the generation settings.
        idle: silence mode (the face idles while nobody speaks).
        crop: crop the portrait to the largest face.
        name: the portrait's name (assistant mode; it is told to the chat model).
        system_prompt: the chat model's instructions; ``{name}`` is replaced by the name.
        end_silence_ms: silence that ends the caller's turn (assistant mode).
    """

    mode: str = "puppet"
    sampling: SamplingConfig = SamplingConfig()
    idle: bool = True
    crop: bool = True
    name: str = "Ava"
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    end_silence_ms: float = 700.0

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> "CallSettings":
        """Validate the offer's settings (every key except sdp, type and portrait)."""
        own = {f.name for f in fields(cls)} - {"sampling"}
        known = own | set(_SAMPLING_KEYS)
        extra = sorted(set(body) - known - {"sdp", "type", "portrait"})
        if extra:
            raise CallError(400, f"unknown setting(s) {', '.join(map(repr, extra))}; known: "
                                 f"{', '.join(sorted(known))}")
        given = {k: v for k, v in body.items() if k in known and v is not None and v != ""}
        kw = {k: given[k] for k in own if k in given}
        mode = kw.get("mode", "puppet")
        if mode not in MODES:
            raise CallError(400, f"mode: expected 'puppet' or 'assistant', got {mode!r}")
        for name in ("idle", "crop"):
            if name in kw and not isinstance(kw[name], bool):
                raise CallError(400, f"{name}: expected true or false, got {kw[name]!r}")
        for name, limit in (("name", 60), ("system_prompt", 4000)):
            if name in kw and (not isinstance(kw[name], str) or len(kw[name]) > limit):
                raise CallError(400, f"{name}: expected text of at most {limit} characters")
        if "end_silence_ms" in kw:
            v = kw["end_silence_ms"]
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 200 <= v <= 5000:
                raise CallError(400, f"end_silence_ms: expected a number from 200 to 5000, got {v!r}")
        try:
            sampling = SamplingConfig(**{k: given[k] for k in _SAMPLING_KEYS if k in given})
        except (TypeError, ValueError) as exc:
            raise CallError(400, str(exc)) from None
        if sampling.nfe > 50:
            raise CallError(400, f"nfe: at most 50 evaluations per window in a call, got {sampling.nfe}")
        return cls(sampling=sampling, **kw)


def decode_portrait(data_url: Any) -> np.ndarray:
    """The portrait of an offer (an image as a ``data:`` URL) as an RGB uint8 array."""
    from PIL import Image, UnidentifiedImageError

    from float_core.media.image import ImageError, load_image

    if not isinstance(data_url, str) or not data_url:
        raise CallError(400, "portrait: missing; send the image as a data URL (data:image/png;base64,...)")
    head, comma, payload = data_url.partition(",")
    mime, *params = head[5:].split(";") if head.startswith("data:") else ("", "")
    if not comma or not head.startswith("data:") or "base64" not in params:
        raise CallError(400, "portrait: expected a base64 data URL (data:image/...;base64,...)")
    if mime and not mime.startswith("image/"):
        raise CallError(415, f"portrait: {mime} is not an image; send a JPEG, PNG or WebP photo")
    if len(payload) > MAX_PORTRAIT_BYTES * 4 // 3 + 4:
        raise CallError(413, f"portrait: larger than {MAX_PORTRAIT_BYTES // 2**20} MB")
    try:
        raw = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise CallError(400, "portrait: the data URL is not valid base64") from None
    try:
        with Image.open(io.BytesIO(raw)) as img:  # load_image checks the pixel count before decoding
            return load_image(img)
    except Image.DecompressionBombError as exc:
        raise CallError(413, f"portrait: {exc}") from None
    except (UnidentifiedImageError, OSError, ImageError, ValueError) as exc:
        raise CallError(415, f"portrait: the data is not an image Pillow can read ({exc}); send a JPEG, "
                             "PNG or WebP photo") from None


# ---------------------------------------------------------------------------- ICE
def ice_servers_from_env(env: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
    """STUN/TURN servers, in the browser's ``RTCIceServer`` form, from the environment.

    ``FLOAT_ICE_SERVERS``: a JSON list such as ``[{"urls": "turn:turn.example:3478",
    "username": "u", "credential": "p"}]``; or ``FLOAT_STUN_URL`` and/or ``FLOAT_TURN_URL``
    (+ ``FLOAT_TURN_USERNAME``, ``FLOAT_TURN_CREDENTIAL``). None set: no servers (host
    candidates only, enough on one machine or a LAN).
    """
    env = os.environ if env is None else env
    raw = env.get("FLOAT_ICE_SERVERS", "").strip()
    if raw:
        try:
            servers = json.loads(raw)
        except ValueError as exc:
            raise ValueError(f"FLOAT_ICE_SERVERS is not JSON ({exc}); expected a list like "
                             f'[{{"urls": "stun:stun.l.google.com:19302"}}]') from None
        if isinstance(servers, dict):
            servers = [servers]
        if not isinstance(servers, list) or not all(isinstance(s, dict) and "urls" in s for s in servers):
            raise ValueError('FLOAT_ICE_SERVERS: expected a list of objects with "urls"')
        return servers
    servers: list[dict[str, Any]] = []
    if env.get("FLOAT_STUN_URL", "").strip():
        servers.append({"urls": env["FLOAT_STUN_URL"].strip()})
    if env.get("FLOAT_TURN_URL", "").strip():
        turn = {"urls": env["FLOAT_TURN_URL"].strip()}
        if env.get("FLOAT_TURN_USERNAME"):
            turn.update(username=env["FLOAT_TURN_USERNAME"], credential=env.get("FLOAT_TURN_CREDENTIAL", ""))
        servers.append(turn)
    return servers


#: ``FLOAT_ICE_LOOPBACK=1``: ICE on 127.0.0.1 only (one machine, e.g. tests or a host with only
#: a loopback interface): aioice normally skips 127.0.0.1 when it gathers host candidates.
ICE_LOOPBACK_ENV = "FLOAT_ICE_LOOPBACK"


def ice_loopback() -> bool:
    """Whether :data:`ICE_LOOPBACK_ENV` asks for loopback-only ICE."""
    return os.environ.get(ICE_LOOPBACK_ENV, "").strip().lower() in ("1", "true", "yes")


def use_loopback_candidates() -> None:
    """Make aioice (aiortc's ICE agent, process-wide) gather 127.0.0.1 as its only host candidate."""
    import aioice.ice

    aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"] if use_ipv4 else []


def loopback_sdp(sdp: str) -> str:
    """``sdp`` without ICE candidates outside 127.0.0.0/8 (a browser also offers its LAN addresses)."""
    lines = sdp.splitlines()
    kept = [line for line in lines if not line.startswith("a=candidate:")
            or (len(line.split()) > 4 and line.split()[4].startswith("127."))]
    return "\r\n".join(kept) + "\r\n"


def _rtc_configuration(servers: list[dict[str, Any]]) -> Any:
    from aiortc import RTCConfiguration, RTCIceServer

    return RTCConfiguration(iceServers=[RTCIceServer(urls=s["urls"], username=s.get("username"),
                                                     credential=s.get("credential")) for s in servers])


def _median_ms(values: list[float]) -> int | None:
    return round(1000 * statistics.median(values)) if values else None


# ---------------------------------------------------------------------------- one call
@dataclass
class _Answer:
    """An answer pushed into the avatar (assistant mode), until its last frame is shown."""

    turn: int
    samples: int
    timing: TurnTiming
    started: bool = False


class Call:
    """One caller: the peer connection, the avatar with its frame worker, and (assistant mode)
    the services.

    Built and driven on the manager's media event loop; only :meth:`status` is read from
    other threads.
    """

    def __init__(self, manager: "CallManager", settings: CallSettings, pipe: Any, source: Any,
                 cfg: services.ServiceConfig | None) -> None:
        from aiortc import RTCPeerConnection

        self.id = uuid.uuid4().hex[:12]
        self.manager = manager
        self.settings = settings
        self.pipe = pipe
        self.source = source
        self.state = "new"
        self.error: str | None = None
        self.created_at = time.monotonic()
        self.transcript: list[dict[str, Any]] = []
        self.timings: list[TurnTiming] = []
        self._events: list[str] = []
        self._channel: Any = None
        self._tasks: list[asyncio.Task] = []
        self._closed: asyncio.Future | None = None
        self._speaking_now = False
        self.output = AvatarOutput()
        self.avatar: LiveAvatar | None = None  # started with the answer to the offer
        self.dropped_input_s = 0.0  # pushed audio dropped by interrupt(): puppet backlog, barge-in
        self.pc = RTCPeerConnection(_rtc_configuration(manager.ice_servers))
        self.mic: MicReader | None = None
        self._worker = threading.Thread(target=self._pump, name=f"float-call-{self.id}", daemon=True)
        self.assistant: Assistant | None = None
        self.turns: TurnDetector | None = None
        self._turn = 0
        # Assistant mode: answers pushed and not yet over (oldest first), and the latest caller
        # turn a barge-in cancelled (its answers, and older ones still being made, are dropped).
        self._answers: deque[_Answer] = deque()
        self._answers_lock = threading.Lock()
        self._barged_turn = 0
        # Puppet mode: when the caller last spoke (voice activity of the arriving audio), and when
        # the latest frames were made (whether generation keeps up with real time).
        self._last_voice_at = 0.0
        self._made_at: deque[float] = deque(maxlen=KEEPING_UP_FRAMES)
        self._vad: Any = None
        self.options = self._avatar_options()
        schedule = live_schedule(pipe, self.options)
        #: puppet: the backlog beyond which queued silence is dropped (what a chunk needs, + a margin)
        self._catch_up_s = (schedule.frames + schedule.lookahead) / FPS + CATCH_UP_MARGIN_S
        if settings.mode == "puppet":
            from float_core.vad import VoiceActivity

            self._vad = VoiceActivity(threshold=StreamOptions().vad_threshold)
        if settings.mode == "assistant":
            assert cfg is not None
            self.turns = TurnDetector(end_silence_ms=settings.end_silence_ms)
            self.assistant = Assistant(cfg, Conversation(settings.name or "Ava", settings.system_prompt),
                                       self._say, self._emit_threadsafe)

    def _avatar_options(self) -> StreamOptions:
        """The avatar's stream options: the live defaults (chunked sampling, the stall timeout
        of a pushed source) with the call's silence mode. Puppet: room for the caller's backlog
        up to ``max_lag_s`` beyond the features' left context, so a push never blocks the event
        loop (the backlog is cut at ``max_lag_s`` first)."""
        options = StreamOptions(idle=self.settings.idle, stall_timeout=AVATAR_STALL_SECONDS)
        if self.settings.mode == "puppet":
            buffer = math.ceil(options.context_seconds + self.manager.max_lag_s + 2.0)
            options = replace(options, max_buffer_seconds=buffer)
        return options

    # -------------------------------------------------------------- signalling
    async def answer(self, sdp: str, kind: str) -> dict[str, str]:
        """Apply the caller's offer and return the answer (ICE candidates gathered, no trickle)."""
        from aiortc import RTCSessionDescription

        from .media import PortraitAudioTrack, PortraitVideoTrack

        pc = self.pc

        @pc.on("datachannel")
        def on_datachannel(channel: Any) -> None:
            self._channel = channel
            for text in self._events:  # what happened before the channel opened
                channel.send(text)

            @channel.on("message")
            def on_message(message: Any) -> None:
                if message == "hangup":
                    self._spawn(self.close("the caller hung up"))

        @pc.on("track")
        def on_track(track: Any) -> None:
            if track.kind == "audio" and self.mic is None:
                self.mic = MicReader(track, self._on_mic)
                self._spawn(self._read_mic())

        @pc.on("connectionstatechange")
        async def on_state() -> None:
            self._set_state(pc.connectionState)
            if pc.connectionState in ("failed", "closed"):
                await self.close(f"connection {pc.connectionState}")

        try:
            if ice_loopback():
                sdp = loopback_sdp(sdp)
            await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type=kind))
        except (ValueError, TypeError, AttributeError, IndexError, KeyError) as exc:
            raise CallError(400, f"offer: the SDP cannot be parsed ({type(exc).__name__}: {exc})") from None
        kinds = {t.kind for t in pc.getTransceivers()}
        if "audio" not in kinds:
            raise CallError(400, "offer: no audio section; send the microphone as an audio track")
        if "video" not in kinds:
            raise CallError(400, "offer: no video section; add a video transceiver (direction "
                                 "'recvonly') to receive the portrait")
        pc.addTrack(PortraitVideoTrack(self.output))
        pc.addTrack(PortraitAudioTrack(self.output))
        await pc.setLocalDescription(await pc.createAnswer())
        self.avatar = LiveAvatar(self.pipe, self.source, sampling=self.settings.sampling,
                                 options=self.options, realtime=True)
        self._worker.start()
        self._spawn(self._watchdog())
        self._spawn(self._report())
        self._set_state("connecting")
        return {"sdp": pc.localDescription.sdp, "type": pc.localDescription.type}

    # -------------------------------------------------------------- media
    async def _read_mic(self) -> None:
        assert self.mic is not None
        await self.mic.run()
        await self.close("the caller's audio ended")

    def _on_mic(self, samples: np.ndarray, arrived: float) -> None:
        """Caller audio (event loop): into the avatar (puppet) or the turn detector (assistant)."""
        avatar = self.avatar
        if avatar is None or avatar.closed:
            return
        if self.settings.mode == "puppet":
            if self._keep_up(avatar, samples, arrived):
                avatar.push_audio(samples, SAMPLE_RATE)
            return
        assert self.turns is not None and self.assistant is not None
        for wave, speech_end_at, _cut in self.turns.push(samples, arrived):
            self._turn += 1  # a newer turn: an older answer still being prepared is dropped
            self.assistant.submit(Utterance(self._turn, wave, speech_end_at, time.monotonic()))
        if self._answers and self.turns.in_speech and self.turns.voiced_run >= self.manager.barge_in_frames:
            self._barge_in()

    def _keep_up(self, avatar: LiveAvatar, samples: np.ndarray, now: float) -> bool:
        """Puppet mode: keep the delay bounded; returns whether to push ``samples``.

        The avatar plays a real-time timeline, so a hiccup (a busy CPU) would delay everything
        after it for good. While generation keeps up with real time, the queued audio is
        dropped (``interrupt()``; the face goes on from the audio that arrives next) when it is
        more than a chunk and its look-ahead plus a margin and all of it is silence, or when it
        is more than ``max_lag_s``. A server that does not keep up would lose its work in
        progress at every cut, so there the audio beyond ``max_lag_s`` is not pushed instead.
        """
        if self._vad.push(samples).any():
            self._last_voice_at = now
        backlog = avatar.queued_seconds
        if backlog <= self._catch_up_s:
            return True
        made = self._made_at
        keeping_up = len(made) == made.maxlen and made[-1] - made[0] <= KEEPING_UP_SECONDS
        if keeping_up and (now - self._last_voice_at >= backlog or backlog > self.manager.max_lag_s):
            avatar.interrupt()
            self.dropped_input_s += backlog
            made.clear()  # the next cut waits for generation to be seen keeping up again
            return True
        if backlog > self.manager.max_lag_s:
            self.dropped_input_s += samples.size / SAMPLE_RATE
            return False
        return True

    def _barge_in(self) -> None:
        """The caller speaks over the answer: stop its voice and mouth now (``interrupt()``)."""
        assert self.avatar is not None
        with self._answers_lock:
            answers = list(self._answers)
            self._answers.clear()
            self._barged_turn = self._turn
            self.dropped_input_s += self.avatar.queued_seconds
            self.avatar.interrupt()
        if not answers:
            return
        turn = answers[0].turn
        for entry in reversed(self.transcript):
            if entry["role"] == "assistant" and entry.get("turn") == turn:
                entry["interrupted"] = True
                break
        self._emit({"type": "barge_in", "turn": turn})

    def _say(self, turn: int, wave: np.ndarray, timing: TurnTiming) -> None:
        """The assistant's answer is ready (assistant thread): push it into the avatar, a second
        at a time so that a barge-in stops it between two pieces."""
        avatar = self.avatar
        if avatar is None:
            return
        step = SAMPLE_RATE
        for start in range(0, wave.size, step):
            with self._answers_lock:
                if turn <= self._barged_turn or avatar.closed:
                    return
                avatar.push_audio(wave[start:start + step], SAMPLE_RATE)
                if start + step >= wave.size:
                    self._answers.append(_Answer(turn, wave.size, timing))
                    avatar.end_turn()
                    self.timings.append(timing)

    def _answer_progress(self, queued: int) -> list[_Answer]:
        """The answers that started with the frame just shown (worker thread), from ``queued``:
        the samples from the next frame to the end of the pushed speech. The answers lie end to
        end at the end of the pushed speech, so the newest ``k`` have been reached once
        ``queued`` is below their length; answers wholly shown are forgotten (barge-in looks at
        the rest)."""
        started: list[_Answer] = []
        with self._answers_lock:
            after = 0  # samples of the answers pushed after this one
            for answer in reversed(self._answers):
                if not answer.started and queued < after + answer.samples:
                    answer.started = True
                    started.append(answer)
                after += answer.samples
            while self._answers and queued <= after - self._answers[0].samples:
                after -= self._answers.popleft().samples
        return started

    def _pump(self) -> None:
        """The worker thread: every frame of the avatar (25 fps) to the tracks, until the call ends."""
        avatar = self.avatar
        assert avatar is not None
        frames = avatar.frames()
        try:
            for frame in frames:
                started = self._answer_progress(round(avatar.queued_seconds * SAMPLE_RATE)) if self._answers else []
                self.manager.loop.call_soon_threadsafe(self._show, frame, started)
        except RuntimeError as exc:
            if avatar.closed or "loop" in str(exc):  # the call or the server is closing
                return
            self._fail(exc)
        except Exception as exc:  # noqa: BLE001 - reported to the caller, then the call ends
            if not avatar.closed:
                self._fail(exc)

    def _fail(self, exc: BaseException) -> None:
        log.error("call %s: the portrait stream failed", self.id, exc_info=exc)
        self.error = f"The portrait stream failed: {type(exc).__name__}: {exc}"
        self._emit_threadsafe({"type": "error", "message": self.error})
        asyncio.run_coroutine_threadsafe(self.close(self.error), self.manager.loop)

    def _show(self, frame: AvatarFrame, started: list[_Answer]) -> None:
        """A frame leaves for the caller (event loop): to the tracks, and the started answers' timings."""
        self.output.put(frame, not frame.repeated)
        if not frame.repeated:
            self._made_at.append(time.monotonic())
        self._speaking_now = frame.speaking
        for answer in started:
            timing = answer.timing
            timing.first_frame_s = time.monotonic() - timing.speech_end_at
            self._emit({"type": "answer_started", **timing.as_dict()})

    # -------------------------------------------------------------- events and status
    def _set_state(self, state: str) -> None:
        if self.state != state and self.state != "closed":
            self.state = state
            self._emit({"type": "state", "state": state})

    def _emit(self, event: dict[str, Any]) -> None:
        """Send an event to the caller's data channel (event loop only)."""
        if event.get("type") == "transcript":
            self.transcript.append({k: event[k] for k in ("role", "text", "turn")})
        text = json.dumps(event)
        if self._channel is not None and self._channel.readyState == "open":
            self._channel.send(text)
        else:
            self._events.append(text)
            del self._events[:-50]

    def _emit_threadsafe(self, event: dict[str, Any]) -> None:
        try:
            self.manager.loop.call_soon_threadsafe(self._emit, event)
        except RuntimeError:  # the loop has stopped: the server is shutting down
            pass

    def status(self) -> dict[str, Any]:
        """Everything the page shows: state, frame rate, A/V delay, answer latencies, transcript."""
        s = self.output.stats
        now = time.monotonic()
        elapsed = now - s.started_at if s.started_at else 0.0
        # The A/V delay of a real-time source, the caller's voice (puppet mode): its audio in ->
        # its frame out. An answer is pushed at once, so its frames wait for its own playback.
        delays = self.avatar.av_delays[-200:] if self.avatar is not None and self.settings.mode == "puppet" else []
        answers = [t.as_dict() for t in self.timings]
        return {
            "id": self.id, "mode": self.settings.mode, "state": self.state, "error": self.error,
            "seconds": round(now - self.created_at, 1),
            "first_frame_s": round(s.first_frame_at - self.created_at, 2) if s.first_frame_at else None,
            "frames": {"generated": s.generated, "shown": s.shown, "stalls": s.shown - s.generated, "late": s.late,
                       "fps": round(s.shown / elapsed, 1) if elapsed > 1 else None},
            "speaking": self._speaking_now,
            "av_delay_ms": _median_ms(delays),
            "av_delay_p90_ms": round(1000 * float(np.percentile(delays, 90))) if delays else None,
            "answers": answers,
            "answer_latency_ms": answers[-1]["answer_latency_ms"] if answers else None,
            "transcript": list(self.transcript),
            "dropped_input_s": round(self.dropped_input_s, 2),
            **self._limits(now),
        }

    def _limits(self, now: float) -> dict[str, Any]:
        """The call's maximum length and what is left of it, and whether generation keeps real time."""
        s = self.output.stats
        limit = self.manager.max_seconds
        remaining = remaining_seconds(now - self.created_at, limit)
        rate = None
        if s.first_frame_at and now - s.first_frame_at > 1.0:
            rate = round(s.generated / (now - s.first_frame_at), 1)
        return {"max_seconds": limit, "remaining_s": None if remaining is None else round(remaining, 1),
                "generated_fps": rate, "realtime": realtime_note(rate, s.generated, live=True) or None}

    async def _report(self) -> None:
        """Stats to the caller once a second."""
        while self.state != "closed":
            await asyncio.sleep(1.0)
            st = self.status()
            self._emit({"type": "stats", **{k: st[k] for k in (
                "frames", "av_delay_ms", "av_delay_p90_ms", "speaking", "answer_latency_ms", "seconds", "max_seconds",
                "remaining_s", "generated_fps", "realtime")}})

    async def _watchdog(self) -> None:
        """Hang up on a peer that went away without saying so (no audio for the timeout), and
        at the call's maximum length."""
        timeout, limit = self.manager.idle_timeout_s, self.manager.max_seconds
        started = time.monotonic()
        while self.state != "closed":
            await asyncio.sleep(min(1.0, timeout / 4))
            if limit is not None and time.monotonic() - self.created_at >= limit:
                await self.close(live_limit_message(limit))
                return
            last = self.mic.last_packet_at if self.mic is not None else started
            if time.monotonic() - max(last, started) > timeout:
                await self.close(f"no audio from the caller for {timeout:g} s")
                return
            if not self._worker.is_alive() and self.state != "closed":
                await self.close(self.error or "the portrait stream ended")
                return

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.append(task)

    # -------------------------------------------------------------- hang-up
    async def close(self, reason: str = "hung up") -> None:
        """Free everything: avatar, worker thread, assistant, tasks, peer connection (idempotent)."""
        if self._closed is not None:
            await asyncio.shield(self._closed)
            return
        self._closed = asyncio.get_running_loop().create_future()
        log.info("call %s closing: %s", self.id, reason)
        self._emit({"type": "state", "state": "closed", "reason": reason})
        self.state = "closed"
        self.output.close()
        current = asyncio.current_task()
        for task in self._tasks:
            if task is not current:
                task.cancel()
        try:
            await asyncio.wait_for(self.pc.close(), 5.0)
        except Exception:  # noqa: BLE001 - closing must go on
            log.exception("call %s: closing the peer connection failed", self.id)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self._join)
        self.manager._forget(self)
        self._closed.set_result(None)

    def _join(self, timeout: float = 60.0) -> None:
        """Close the avatar (its stream stops after the current decode batch, which on a slow CPU
        at 512 px can take several seconds), then wait for the worker and the assistant thread."""
        if self.avatar is not None:
            self.avatar.close()
        if self._worker.is_alive():
            self._worker.join(timeout)
        if self.assistant is not None:
            self.assistant.close()
        if self._worker.is_alive():
            log.error("call %s: the stream worker did not stop within %g s", self.id, timeout)

    @property
    def threads_alive(self) -> bool:
        """Whether any thread of this call still runs (tests: nothing left behind)."""
        return self._worker.is_alive() or (self.assistant is not None and self.assistant.alive)


# ---------------------------------------------------------------------------- all calls
class CallManager:
    """The calls of one server: the concurrency limit, the media event loop, the registry.

    Args:
        holder: the app's ``PipelineHolder`` (the shared, read-only pipeline).
        max_calls: concurrent calls (default ``FLOAT_MAX_CALLS`` or 1: one call already takes a
            2-core CPU; raise it on a GPU).
        ice_servers: STUN/TURN servers (default :func:`ice_servers_from_env`).
        idle_timeout_s: hang up after this long without caller audio (``FLOAT_CALL_TIMEOUT``, 15).
        max_lag_s: puppet mode: backlog of caller audio not yet shown beyond which it is dropped
            (``interrupt()``; ``FLOAT_CALL_MAX_LAG``, 3 s) so the delay stays bounded on a slow server.
        max_seconds: the longest call in seconds (default ``FLOAT_MAX_LIVE_SECONDS``, 300; 0: no limit).
        services_config: assistant mode's services (default: from the environment, per call).
    """

    def __init__(self, holder: Any, *, max_calls: int | None = None, ice_servers: list[dict] | None = None,
                 idle_timeout_s: float | None = None, max_lag_s: float | None = None,
                 max_seconds: float | None = None,
                 services_config: services.ServiceConfig | None = None) -> None:
        self.holder = holder
        self.max_calls = int(max_calls if max_calls is not None else env_number("FLOAT_MAX_CALLS", 1, strict=True))
        if self.max_calls < 1:
            raise ValueError(f"FLOAT_MAX_CALLS must be >= 1, got {self.max_calls}")
        self.ice_servers = ice_servers if ice_servers is not None else ice_servers_from_env()
        if ice_loopback():
            use_loopback_candidates()
        self.idle_timeout_s = (idle_timeout_s if idle_timeout_s is not None
                               else env_number("FLOAT_CALL_TIMEOUT", 15.0, minimum=0.1, strict=True))
        self.max_lag_s = max_lag_s if max_lag_s is not None else env_number("FLOAT_CALL_MAX_LAG", 3.0, strict=True)
        self.max_seconds = max_live_seconds() if max_seconds is None else (max_seconds if max_seconds > 0 else None)
        self.services_config = services_config
        self.barge_in_frames = 8  # 320 ms of voiced caller speech stops an answer
        self.calls: dict[str, Call] = {}
        self._reserved = 0
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    # -------------------------------------------------------------- the media loop
    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The event loop every call's aiortc objects live on (its own thread, started lazily)."""
        with self._lock:
            if self._loop is None:
                self._loop = asyncio.new_event_loop()
                self._thread = threading.Thread(target=self._loop.run_forever, name="float-call-media",
                                                daemon=True)
                self._thread.start()
            return self._loop

    def run(self, coro: Awaitable[Any]) -> Future:
        """Schedule ``coro`` on the media loop (from any thread)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop)  # type: ignore[arg-type]

    # -------------------------------------------------------------- public API
    def config(self) -> dict[str, Any]:
        """What a client needs before calling (``GET /call/config``)."""
        try:
            reason = services.assistant_unavailable_reason(self._services())
        except services.ServiceError as exc:
            reason = str(exc)
        unavailable = self.unavailable_reason()
        return {"ice_servers": self.ice_servers, "max_calls": self.max_calls, "active_calls": len(self.calls),
                "modes": list(MODES), "assistant": {"available": reason is None, "reason": reason},
                "max_seconds": self.max_seconds, "available": unavailable is None, "reason": unavailable}

    @staticmethod
    def unavailable_reason() -> str | None:
        """Why this server takes no calls (ZeroGPU lends a GPU per request, a call needs one for
        minutes), or None."""
        return dedicated_gpu_message("A call") if on_zero_gpu() else None

    def _services(self) -> services.ServiceConfig:
        return self.services_config or services.ServiceConfig.from_env()

    async def offer(self, body: Any) -> dict[str, Any]:
        """Handle ``POST /call/offer`` (any event loop): validate, start the call, answer.

        Raises:
            CallError: with the HTTP status and a message saying what to fix.
        """
        unavailable = self.unavailable_reason()
        if unavailable:
            raise CallError(503, unavailable)
        if not isinstance(body, dict):
            raise CallError(400, "expected a JSON object {sdp, type, mode, portrait, ...}")
        sdp, kind = body.get("sdp"), body.get("type")
        if kind != "offer":
            raise CallError(400, f"type: expected 'offer', got {kind!r}")
        if not isinstance(sdp, str) or not sdp.lstrip().startswith("v=0"):
            raise CallError(400, "sdp: expected the offer's session description (text starting with 'v=0')")
        settings = CallSettings.from_json(body)
        image = decode_portrait(body.get("portrait"))
        cfg = None
        if settings.mode == "assistant":
            try:
                cfg = self._services()
                reason = services.assistant_unavailable_reason(cfg)
                if reason:
                    raise CallError(503, reason)
                await asyncio.to_thread(services.check_services, cfg)
            except services.ServiceError as exc:
                raise CallError(502, str(exc)) from None
        self._reserve()
        try:
            try:
                pipe = self.holder.get()
            except RuntimeError as exc:
                raise CallError(503, str(exc)) from None
            try:
                source = await asyncio.to_thread(pipe.prepare_image, image, settings.crop)
            except ValueError as exc:
                raise CallError(422, f"portrait: {exc}") from None
            return await asyncio.wrap_future(self.run(self._start(settings, pipe, source, cfg, sdp)))
        finally:
            with self._lock:
                self._reserved -= 1

    def _reserve(self) -> None:
        with self._lock:
            if len(self.calls) + self._reserved >= self.max_calls:
                raise CallError(429, f"too many calls: {self.max_calls} in progress (FLOAT_MAX_CALLS="
                                     f"{self.max_calls}); try again when one ends")
            self._reserved += 1

    async def _start(self, settings: CallSettings, pipe: Any, source: Any,
                     cfg: services.ServiceConfig | None, sdp: str) -> dict[str, Any]:
        call = Call(self, settings, pipe, source, cfg)
        try:
            answer = await call.answer(sdp, "offer")
        except BaseException:
            await call.close("the offer was refused")
            raise
        with self._lock:
            self.calls[call.id] = call
        log.info("call %s started (%s mode)", call.id, settings.mode)
        return {**answer, "id": call.id, "mode": settings.mode}

    def _forget(self, call: Call) -> None:
        with self._lock:
            self.calls.pop(call.id, None)

    def get(self, call_id: str) -> Call:
        call = self.calls.get(call_id)
        if call is None:
            raise CallError(404, f"no call {call_id!r} (it ended or never existed)")
        return call

    def status(self, call_id: str) -> dict[str, Any]:
        return self.get(call_id).status()

    async def hangup(self, call_id: str, wait_s: float = 3.0) -> dict[str, Any]:
        """End a call; answers within ``wait_s`` ("closing" while the stream's current decode
        batch finishes; the call counts against the limit until its threads have stopped)."""
        call = self.get(call_id)
        done = asyncio.wrap_future(self.run(call.close("the caller hung up")))
        try:
            await asyncio.wait_for(asyncio.shield(done), wait_s)
        except asyncio.TimeoutError:
            return {"id": call_id, "state": "closing"}
        return {"id": call_id, "state": "closed"}

    def close_all(self, timeout: float = 20.0) -> None:
        """End every call and stop the media loop (server shutdown; tests)."""
        if self._loop is None:
            return
        calls = list(self.calls.values())
        if calls:
            async def close_them() -> None:
                await asyncio.gather(*(c.close("the server is shutting down") for c in calls))

            done = self.run(close_them())
            try:
                done.result(timeout)
            except Exception:  # noqa: BLE001
                log.exception("closing the calls failed")
        loop, self._loop = self._loop, None
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(timeout)
