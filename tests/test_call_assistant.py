"""Assistant mode end to end: caller speech -> VAD turn -> ASR -> chat -> TTS -> portrait.

The services are a local OpenAI-compatible server on 127.0.0.1
(:mod:`float_studio.call.stub_services`: real multipart / JSON protocol, fixed answers, espeak-ng
speech); the caller is an aiortc client sending recorded speech; the app runs the tiny model.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("aiortc")

from float_core.media.audio import load_audio  # noqa: E402
from float_studio.call.client import SpeechTrack, place_call  # noqa: E402
from float_studio.call.stub_services import StubServices, serve_stub_services  # noqa: E402
from test_call import PORTRAIT, SPEECH, manager, served, wait_until  # noqa: E402,F401 - shared fixtures

LONG_ANSWER = ("I am Zed, a portrait that talks. I can tell you a long story about the stars, the sea, "
               "and the mountains, and I will keep talking until you interrupt me, which you should do now.")
SHORT_ANSWER = "Sure, I will stop. What else?"


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x.astype(np.float64) ** 2))) if x.size else 0.0


@pytest.fixture()
def stub(monkeypatch):
    url, stub, stop = serve_stub_services(StubServices(transcript=["What is your name?", "Stop please."],
                                                       answer=[LONG_ANSWER, SHORT_ANSWER]))
    for name in ("FLOAT_ASR_URL", "FLOAT_LLM_URL", "FLOAT_TTS_URL"):
        monkeypatch.setenv(name, url)
    monkeypatch.setenv("FLOAT_API_KEY", "test-key")
    monkeypatch.delenv("FLOAT_LLM_MODEL", raising=False)
    yield stub
    stop()


def test_assistant_answers_and_barge_in_stops_the_answer(served, manager, stub):
    url, _ = served
    speech = load_audio(SPEECH)
    mic = SpeechTrack(np.concatenate([np.zeros(16000, np.float32), speech]))
    marks: dict[str, float] = {}

    def scenario(rec) -> bool:
        """Interrupt 1.5 s into the first answer; done when the second answer is seen."""
        started = rec.first_event("answer_started", turn=1)
        if started and "barge" not in marks and rec.audio_times and rec.audio_times[-1] > started[1] + 1.5:
            marks["barge"] = rec.audio_times[-1]
            mic.schedule(speech)
        return rec.first_event("answer_started", turn=2) is not None

    rec = asyncio.run(place_call(url, PORTRAIT, mic, mode="assistant", seconds=60, until=scenario,
                                 crop=False, nfe=4, name="Zed", system_prompt="You are {name}. Be brief."))
    kinds = [s for s, _ in stub.requests]
    assert kinds == ["asr", "llm", "tts", "asr", "llm", "tts"], kinds

    # The real protocol went out: multipart 16 kHz mono WAV of the turn, JSON chat with the
    # system prompt, the name and the history, JSON speech request for the answer text.
    asr = [d for s, d in stub.requests if s == "asr"]
    assert asr[0]["rate"] == 16000 and asr[0]["channels"] == 1 and asr[0]["model"] == "whisper-1"
    assert 3.5 <= asr[0]["seconds"] <= 5.5, asr[0]  # the 4 s question plus pre-roll, minus trailing silence
    assert all(d["auth"] == "Bearer test-key" for _, d in stub.requests)
    chats = [d["body"] for s, d in stub.requests if s == "llm"]
    assert chats[0]["model"] == "stub-model"  # FLOAT_LLM_MODEL unset: the first of GET /models
    assert chats[0]["messages"][0] == {"role": "system", "content": "You are Zed. Be brief."}
    assert chats[0]["messages"][-1] == {"role": "user", "content": "What is your name?"}
    assert [m["role"] for m in chats[1]["messages"]] == ["system", "user", "assistant", "user"]
    assert [d["body"]["input"] for s, d in stub.requests if s == "tts"] == [LONG_ANSWER, SHORT_ANSWER]

    # The transcript, with the interrupted answer marked.
    transcript = rec.status["transcript"]
    assert [(t["role"], t["text"]) for t in transcript] == [
        ("user", "What is your name?"), ("assistant", LONG_ANSWER), ("user", "Stop please."),
        ("assistant", SHORT_ANSWER)]
    assert transcript[1].get("interrupted") is True and not transcript[3].get("interrupted")

    # The answer was heard, and barge-in silenced it: the first answer plays until the caller
    # speaks over it, then the portrait is quiet until its next answer.
    first = rec.first_event("answer_started", turn=1)
    barge = rec.first_event("barge_in", turn=1)
    second = rec.first_event("answer_started", turn=2)
    assert first and barge and second
    assert first[0]["answer_latency_ms"] > 0 and rec.status["answers"][0]["asr_ms"] is not None
    during = rec.audio_between(first[1] + 0.3, marks["barge"])
    after = rec.audio_between(barge[1] + 0.5, second[1] - 0.2)
    assert rms(during) > 0.02, rms(during)
    assert after.size > 8000 and rms(after) < 0.1 * rms(during), (rms(after), rms(during))
    assert barge[1] - marks["barge"] < 2.0  # noticed within the 320 ms of speech it needs, plus transport


def test_a_failing_service_is_reported_and_the_call_goes_on(served, manager, stub):
    url, _ = served
    stub.fail.add("llm")
    mic = SpeechTrack(np.concatenate([np.zeros(8000, np.float32), load_audio(SPEECH)]))
    rec = asyncio.run(place_call(url, PORTRAIT, mic, mode="assistant", seconds=30, crop=False, nfe=4,
                                 until=lambda r: r.first_event("error") is not None))
    error = rec.first_event("error")
    assert error is not None, rec.events
    assert "chat at http://127.0.0.1" in error[0]["message"] and "HTTP 500" in error[0]["message"]
    assert rec.status["state"] == "connected" and rec.status["error"] is None
