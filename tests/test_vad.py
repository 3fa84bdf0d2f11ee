"""Voice activity (float_core.vad): Silero from its wheel on silence, noise and speech."""

from __future__ import annotations

import logging
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from float_core import vad as vad_mod
from float_core.media.audio import load_audio
from float_core.config import SAMPLES_PER_FRAME as FRAME_SAMPLES
from float_core.vad import VoiceActivity, detect_speech

SPEECH = Path(__file__).resolve().parents[1] / "examples" / "arctic_a0007.wav"
RATE = 16000
needs_silero = pytest.mark.skipif(vad_mod.silero_model_path() is None, reason="silero-vad is not installed")


def noise(seconds: float, rms: float, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(int(seconds * RATE)) * rms).astype(np.float32)


@needs_silero
def test_silero_runs_offline_from_the_wheel() -> None:
    v = VoiceActivity()
    assert v.backend == "silero"
    assert str(vad_mod.silero_model_path()).endswith("silero_vad/data/silero_vad.jit")


@needs_silero
@pytest.mark.parametrize("audio", [np.zeros(2 * RATE, np.float32), noise(2, 0.01), noise(2, 0.1, seed=1),
                                   noise(2, 0.4, seed=2)], ids=["digital-silence", "noise-0.01", "noise-0.1",
                                                                "noise-0.4"])
def test_silence_and_noise_are_not_speech(audio: np.ndarray) -> None:
    flags = detect_speech(audio)
    assert flags.shape == (audio.size // FRAME_SAMPLES,)
    assert not flags.any()


@needs_silero
def test_recorded_speech_is_speech() -> None:
    wave = load_audio(SPEECH, target_rate=RATE)  # 4 s: silence to ~0.45 s, then speech
    flags = detect_speech(wave)
    assert not flags[:8].any()
    assert flags[15:95].all()


@needs_silero
@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")
def test_synthetic_speech_is_speech(tmp_path: Path) -> None:
    out = tmp_path / "tts.wav"
    subprocess.run(["espeak-ng", "-w", str(out), "The avatar listens, then it answers you."], check=True)
    wave = load_audio(out, target_rate=RATE)
    flags = detect_speech(wave)
    assert flags.mean() > 0.7
    # Speech over a noisy microphone is still found, and the noise around it is not speech.
    mixed = np.concatenate([noise(1, 0.02), wave + noise(wave.size / RATE, 0.02, seed=3), noise(1, 0.02, seed=4)])
    flags = detect_speech(mixed)
    assert not flags[:20].any() and flags[35:35 + int(wave.size / FRAME_SAMPLES * 0.6)].mean() > 0.8
    # The 300 ms hangover ends speech within half a second of its end.
    tail_start = 25 + -(-wave.size // FRAME_SAMPLES) + 13
    assert not flags[tail_start:].any()


@needs_silero
def test_streaming_decisions_do_not_depend_on_the_cut() -> None:
    wave = load_audio(SPEECH, target_rate=RATE)
    whole = detect_speech(wave)
    for size in (37, 593, 640, 4000):
        v = VoiceActivity()
        got = np.concatenate([v.push(wave[i:i + size]) for i in range(0, wave.size, size)])
        np.testing.assert_array_equal(got, whole[:got.size])
    v = VoiceActivity()
    per_frame = [v.speaking(wave[i:i + FRAME_SAMPLES]) for i in range(0, wave.size - FRAME_SAMPLES + 1, FRAME_SAMPLES)]
    np.testing.assert_array_equal(per_frame, whole[:len(per_frame)])


@needs_silero
def test_state_is_per_instance_and_reset_forgets() -> None:
    wave = load_audio(SPEECH, target_rate=RATE)
    a, b = VoiceActivity(), VoiceActivity()
    a.push(wave[:2 * RATE])  # a is now mid-speech
    assert not b.push(np.zeros(RATE, np.float32)).any()
    a.reset()
    np.testing.assert_array_equal(a.push(wave), detect_speech(wave)[:100])


@needs_silero
def test_the_callers_thread_count_is_kept() -> None:
    before = torch.get_num_threads()
    VoiceActivity().push(noise(0.5, 0.1))
    assert torch.get_num_threads() == before


def test_energy_fallback_without_silero(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(vad_mod, "silero_model_path", lambda: None)
    monkeypatch.setattr(vad_mod, "_model_bytes", None)
    monkeypatch.setattr(vad_mod, "_warned", False)
    with caplog.at_level(logging.WARNING, logger="float_core.vad"):
        v = VoiceActivity()
    assert v.backend == "energy"
    assert "pip install silero-vad" in caplog.text
    assert not v.push(np.zeros(RATE, np.float32)).any()  # digital silence
    with pytest.raises(ModuleNotFoundError, match="pip install silero-vad"):
        VoiceActivity(backend="silero")


def test_bad_input_is_a_clear_error() -> None:
    v = VoiceActivity(backend="energy")
    with pytest.raises(ValueError, match="NaN"):
        v.push(np.array([0.0, np.nan], np.float32))
    with pytest.raises(ValueError, match="int16"):
        v.push(np.zeros(640, np.int16))
    with pytest.raises(ValueError, match="mono"):
        v.push(np.zeros((640, 2), np.float32))
    with pytest.raises(ValueError, match="640 samples"):
        v.speaking(np.zeros(320, np.float32))
    with pytest.raises(ValueError, match="threshold"):
        VoiceActivity(threshold=1.5)
