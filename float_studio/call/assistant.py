"""Assistant mode of a call: turns of speech -> recognition -> chat -> voice -> the portrait.

TalkingMachines ("Applications"): the caller's audio is captured, a language model
answers, and the video server lip-syncs the answer. The pieces here:

* :class:`TurnDetector` cuts the caller's audio into utterances with the engine's voice-activity
  detector (:class:`float_core.vad.VoiceActivity`): a turn starts with speech and ends after
  ``end_silence_ms`` of silence; it also reports speech while the portrait talks (barge-in).
* :class:`Conversation` keeps the chat history with the system prompt and the portrait's name.
* :class:`Assistant` runs the services (``float_studio.services``) in its own thread, one turn
  at a time; a newer turn supersedes an older one that is still being answered.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from float_core.config import SAMPLES_PER_FRAME

from .. import services

__all__ = ["Utterance", "TurnDetector", "Conversation", "Assistant", "DEFAULT_SYSTEM_PROMPT"]

log = logging.getLogger(__name__)


DEFAULT_SYSTEM_PROMPT = ("You are {name}, a friendly talking portrait on a live video call. Answer in one "
                         "to three short, spoken sentences; no lists, markup or emoji.")


@dataclass
class Utterance:
    """One turn of the caller's speech."""

    turn: int
    wave: np.ndarray  #: float32 16 kHz, with a little audio before the speech started
    speech_end_at: float  #: monotonic arrival time of its last voiced frame ("end of question")
    ended_at: float  #: when the end of the turn was decided (after the closing silence)


class TurnDetector:
    """Cuts a live 16 kHz stream into utterances (single-threaded: feed it from one thread).

    Args:
        end_silence_ms: silence that ends a turn (the VAD's hangover).
        min_speech_ms: voiced audio needed for a turn (shorter blips are ignored).
        preroll_ms: audio kept before the first voiced frame (word onsets are often unvoiced).
        max_turn_s: a turn longer than this is cut and answered anyway.
        backend: the VAD backend ("auto": Silero when installed).
    """

    def __init__(self, *, end_silence_ms: float = 700.0, min_speech_ms: float = 240.0,
                 preroll_ms: float = 300.0, max_turn_s: float = 30.0, backend: str = "auto") -> None:
        from float_core.vad import VoiceActivity

        self.vad = VoiceActivity(min_silence_ms=end_silence_ms, backend=backend)  # type: ignore[arg-type]
        self.min_speech = int(np.ceil(min_speech_ms / 40.0))
        self.preroll = int(np.ceil(preroll_ms / 40.0))
        self.max_frames = int(max_turn_s * 25)
        self._partial = np.zeros(0, np.float32)
        self._history: list[np.ndarray] = []  # recent silent frames (the pre-roll)
        self._frames: list[np.ndarray] = []  # frames of the current turn
        self._voiced = 0
        self._last_voiced_at = 0.0
        self.in_speech = False  #: whether the caller is speaking now
        self.voiced_run = 0  #: consecutive voiced frames of the current turn (barge-in evidence)

    def push(self, samples: np.ndarray, arrived: float) -> list[tuple[np.ndarray, float, bool]]:
        """Feed samples; returns ``(wave, speech_end_at, cut)`` for every turn that ended."""
        done: list[tuple[np.ndarray, float, bool]] = []
        data = np.concatenate([self._partial, samples]) if self._partial.size else samples
        n = data.size // SAMPLES_PER_FRAME * SAMPLES_PER_FRAME
        self._partial = data[n:].copy()
        for i in range(0, n, SAMPLES_PER_FRAME):
            frame = data[i:i + SAMPLES_PER_FRAME]
            speaking = self.vad.speaking(frame)
            voiced = self.vad.last_probability >= self.vad.threshold
            if speaking:
                if not self.in_speech:
                    self.in_speech, self._voiced, self.voiced_run = True, 0, 0
                    self._frames = self._history[-self.preroll:] if self.preroll else []
                self._frames.append(frame)
                if voiced:
                    self._voiced += 1
                    self.voiced_run += 1
                    self._last_voiced_at = arrived
                if len(self._frames) >= self.max_frames:
                    done.append(self._finish(cut=True))
            else:
                if self.in_speech:
                    result = self._finish(cut=False)
                    if result is not None:
                        done.append(result)
                self._history.append(frame)
                del self._history[:-max(self.preroll, 1)]
        return [d for d in done if d is not None]

    def _finish(self, cut: bool) -> tuple[np.ndarray, float, bool] | None:
        frames, voiced = self._frames, self._voiced
        self._frames, self._voiced, self.voiced_run = [], 0, 0
        self.in_speech = cut  # a cut turn goes on being speech
        if voiced < self.min_speech:
            return None
        return np.concatenate(frames), self._last_voiced_at, cut


@dataclass
class Conversation:
    """The chat history of one call (system prompt with the portrait's name, then the turns)."""

    name: str = "Ava"
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    max_turns: int = 10
    turns: list[dict[str, str]] = field(default_factory=list)

    def messages(self, user_text: str) -> list[dict[str, str]]:
        system = self.system_prompt.replace("{name}", self.name)
        if self.name and self.name not in system:
            system = f"Your name is {self.name}. {system}"
        return [{"role": "system", "content": system}, *self.turns[-2 * self.max_turns:],
                {"role": "user", "content": user_text}]

    def add(self, user_text: str, answer: str) -> None:
        self.turns += [{"role": "user", "content": user_text}, {"role": "assistant", "content": answer}]


@dataclass
class TurnTiming:
    """Where an answer's time went (seconds; ``first_frame`` is filled in when it is shown)."""

    turn: int
    speech_end_at: float
    ended_at: float
    asr_s: float = 0.0
    llm_s: float = 0.0
    tts_s: float = 0.0
    queued_at: float = 0.0
    first_frame_s: float | None = None  #: end of question -> first answer frame on the timeline

    def as_dict(self) -> dict[str, float | int | None]:
        ms = lambda s: None if s is None else round(1000 * s)  # noqa: E731
        return {"turn": self.turn, "end_of_turn_wait_ms": ms(self.ended_at - self.speech_end_at),
                "asr_ms": ms(self.asr_s), "llm_ms": ms(self.llm_s), "tts_ms": ms(self.tts_s),
                "answer_latency_ms": ms(self.first_frame_s)}


class Assistant:
    """Answers utterances in a worker thread: ASR -> chat -> TTS -> ``say(turn, wave, timing)``.

    Args:
        cfg: where the services are.
        conversation: the history (system prompt, name).
        say: queues the answer's speech on the stream (called from the worker thread).
        emit: sends an event dict to the caller (transcript, errors, timings).
    """

    def __init__(self, cfg: services.ServiceConfig, conversation: Conversation,
                 say: Callable[[int, np.ndarray, TurnTiming], None],
                 emit: Callable[[dict], None]) -> None:
        self.cfg = cfg
        self.conversation = conversation
        self._say = say
        self._emit = emit
        self._queue: queue.Queue[Utterance | None] = queue.Queue()
        self.latest_turn = 0
        self._thread = threading.Thread(target=self._run, name="float-call-assistant", daemon=True)
        self._thread.start()

    def submit(self, utterance: Utterance) -> None:
        """Answer ``utterance``; an older turn still in progress is abandoned."""
        self.latest_turn = max(self.latest_turn, utterance.turn)
        self._queue.put(utterance)

    def close(self, timeout: float = 5.0) -> None:
        self.latest_turn = 1 << 30
        self._queue.put(None)
        self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def _stale(self, turn: int) -> bool:
        return turn < self.latest_turn

    def _run(self) -> None:
        while True:
            u = self._queue.get()
            if u is None:
                return
            if self._stale(u.turn):
                continue
            try:
                self._answer(u)
            except services.ServiceError as exc:
                log.warning("assistant turn %d: %s", u.turn, exc)
                self._emit({"type": "error", "message": str(exc), "turn": u.turn})
            except Exception as exc:  # noqa: BLE001 - a failed turn must not end the call
                log.exception("assistant turn %d failed", u.turn)
                self._emit({"type": "error", "turn": u.turn,
                            "message": f"The answer failed ({type(exc).__name__}: {exc})."})

    def _answer(self, u: Utterance) -> None:
        timing = TurnTiming(u.turn, u.speech_end_at, u.ended_at)
        t = time.monotonic()
        text = services.transcribe(self.cfg, u.wave)
        timing.asr_s = time.monotonic() - t
        if not text or self._stale(u.turn):
            return
        self._emit({"type": "transcript", "role": "user", "text": text, "turn": u.turn})
        t = time.monotonic()
        answer = services.chat(self.cfg, self.conversation.messages(text))
        timing.llm_s = time.monotonic() - t
        if self._stale(u.turn):
            return
        self.conversation.add(text, answer)
        self._emit({"type": "transcript", "role": "assistant", "text": answer, "turn": u.turn})
        t = time.monotonic()
        wave = services.speak(self.cfg, answer)
        timing.tts_s = time.monotonic() - t
        if self._stale(u.turn) or wave.size == 0:
            return
        timing.queued_at = time.monotonic()
        self._say(u.turn, wave, timing)
