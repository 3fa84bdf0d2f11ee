"""float_core.tts: voice specs, validation before work, espeak-ng, Piper's protocol and an
OpenAI-compatible speech server (the local stub server, real HTTP), and the app's callers."""

from __future__ import annotations

import os
import shutil
import socket
import stat
from pathlib import Path

import numpy as np
import pytest

from float_core import tts
from float_core.config import SAMPLE_RATE
from float_core.tts import TTSError, TTSSettings, Voice, check_voice, parse_voice, synthesize

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")


@pytest.fixture(scope="module")
def stub_server():
    from float_studio.call.stub_services import StubServices, serve_stub_services

    url, stub, stop = serve_stub_services(StubServices())
    yield url, stub
    stop()


def test_specs_parse_and_malformed_ones_say_the_accepted_forms() -> None:
    assert parse_voice("espeak:en-us+f3") == Voice("espeak", "en-us+f3")
    assert str(parse_voice(" URL : alloy ")) == "url:alloy"
    assert parse_voice(None, TTSSettings(espeak_voice="en-gb")) == Voice("espeak", "en-gb")
    for bad in ("alloy", "festival:kal", "espeak:", ":x"):
        with pytest.raises(TTSError, match="expected 'espeak:<voice>'"):
            parse_voice(bad)


def test_settings_from_the_environment() -> None:
    env = {"FLOAT_TTS_URL": "http://h:1/v1/", "FLOAT_TTS_MODEL": "kokoro", "FLOAT_API_KEY": "k",
           "FLOAT_SERVICE_TIMEOUT": "5", "FLOAT_ESPEAK_VOICE": "en-gb", "FLOAT_PIPER_VOICE": "/v.onnx"}
    s = TTSSettings.from_env(env)
    assert (s.url, s.model, s.api_key, s.timeout_s, s.espeak_voice) == ("http://h:1/v1", "kokoro", "k", 5.0, "en-gb")
    assert tts.default_voice("piper", s) == "piper:/v.onnx" and tts.default_voice("url", s) == "url:alloy"
    assert tts.default_voice("piper", TTSSettings()) is None
    with pytest.raises(TTSError, match="FLOAT_TTS_URL='h:1' is not an http"):
        TTSSettings.from_env({"FLOAT_TTS_URL": "h:1"})


def test_unavailable_engines_say_what_to_install_or_set(monkeypatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")  # no program at all
    engines = tts.available_engines(TTSSettings())
    assert "apt-get install espeak-ng" in engines["espeak"]
    assert "pip install piper-tts" in engines["piper"]
    assert "set FLOAT_TTS_URL" in engines["url"]
    assert tts.available_engines(TTSSettings(url="http://h/v1"))["url"] is None
    with pytest.raises(TTSError, match=r"voice espeak:en-us: espeak-ng is not installed"):
        check_voice("espeak:en-us")
    with pytest.raises(TTSError, match="FLOAT_TTS_URL is not set"):
        check_voice("url:alloy", TTSSettings())


@needs_espeak
def test_espeak_voices_are_checked_before_speaking() -> None:
    assert check_voice("espeak:en-us+f3") == Voice("espeak", "en-us+f3")
    assert check_voice("espeak:en-gb-x-rp+m3") == Voice("espeak", "en-gb-x-rp+m3")
    assert check_voice("espeak:en") == Voice("espeak", "en")  # listed among en-us's languages
    with pytest.raises(TTSError, match=r"no voice 'xx-nope'.*espeak-ng --voices"):
        check_voice("espeak:xx-nope")
    with pytest.raises(TTSError, match=r"no voice 'en-zz'"):  # espeak-ng would speak it as "en"
        check_voice("espeak:en-zz")
    with pytest.raises(TTSError, match=r"no variant 'nope'.*--voices=variant"):
        check_voice("espeak:en-us+nope")


@needs_espeak
def test_espeak_speech_and_the_apps_callers_share_it(monkeypatch) -> None:
    from float_studio import live, services

    wave = synthesize("Hello there, how are you?", "espeak:en-us+f3")
    assert wave.dtype == np.float32 and wave.ndim == 1
    assert 0.8 < wave.size / SAMPLE_RATE < 4.0 and np.abs(wave).max() > 0.05
    other = synthesize("Hello there, how are you?", "espeak:en-gb+m3")
    assert other.size != wave.size or not np.array_equal(other, wave)  # another voice
    assert synthesize("   ", "espeak:en-us").size == 0
    # the Call tab's assistant and the Live tab speak through the same function
    cfg = services.ServiceConfig(espeak_voice="en-us+f3")
    np.testing.assert_array_equal(services.speak(cfg, "Hello there, how are you?"), wave)
    monkeypatch.setenv("FLOAT_ESPEAK_VOICE", "en-us+f3")
    np.testing.assert_array_equal(live.speak("Hello there, how are you?", live.VOICE_ESPEAK), wave)
    assert live.VOICE_ESPEAK in live.available_voices()


def test_url_voice_speaks_the_openai_protocol(stub_server) -> None:
    url, stub = stub_server
    settings = TTSSettings(url=url, model="kokoro", api_key="secret")
    before = len(stub.requests)
    wave = synthesize("Good morning.", "url:nova", settings=settings)
    assert wave.dtype == np.float32 and wave.size > SAMPLE_RATE // 4
    service, details = stub.requests[before]
    assert service == "tts" and details["auth"] == "Bearer secret"
    assert details["body"] == {"model": "kokoro", "input": "Good morning.", "voice": "nova", "response_format": "wav"}


def test_url_failures_are_clear(stub_server) -> None:
    url, stub = stub_server
    stub.fail.add("tts")
    try:
        with pytest.raises(TTSError, match=r"text to speech at .*/audio/speech answered HTTP 500"):
            synthesize("Hi.", "url:alloy", settings=TTSSettings(url=url))
    finally:
        stub.fail.discard("tts")
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}/v1"
    with pytest.raises(TTSError, match="is unreachable .*check FLOAT_TTS_URL"):
        synthesize("Hi.", "url:alloy", settings=TTSSettings(url=closed, timeout_s=5))


def test_services_speak_reports_a_service_error(stub_server) -> None:
    from float_studio import services

    url, stub = stub_server
    stub.fail.add("tts")
    try:
        with pytest.raises(services.ServiceError, match="HTTP 500"):
            services.speak(services.ServiceConfig(tts_url=url), "Hello.")
    finally:
        stub.fail.discard("tts")


def test_piper_models_are_checked_and_its_raw_output_resampled(tmp_path, monkeypatch) -> None:
    # Piper's command-line protocol (--model M --output_raw: text on stdin, s16le mono at the
    # voice's rate on stdout), played by a script standing in for the program: 0.5 s of a tone.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "piper"
    fake.write_text("#!/usr/bin/env python3\nimport sys, math, struct\nsys.stdin.read()\n"
                    "assert sys.argv[1] == '--model' and sys.argv[3] == '--output_raw'\n"
                    "sys.stdout.buffer.write(b''.join(struct.pack('<h', int(8000 * math.sin(i / 10)))"
                    " for i in range(11025)))\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    model = tmp_path / "voice.onnx"
    with pytest.raises(TTSError, match="no such voice model"):
        check_voice(f"piper:{model}")
    model.write_bytes(b"onnx")
    with pytest.raises(TTSError, match=r"voice.onnx.json is missing"):
        check_voice(f"piper:{model}")
    Path(f"{model}.json").write_text('{"audio": {"sample_rate": 22050}}')
    wave = synthesize("Hello.", f"piper:{model}")
    assert abs(wave.size - SAMPLE_RATE // 2) <= 2  # 11025 samples at 22.05 kHz = 0.5 s at 16 kHz
    assert 0.2 < np.abs(wave).max() < 0.3
