"""LiveAvatar (float_core.avatar) on the tiny random model, driven without a clock (realtime=False).

The tiny model's window is L = 10 frames; the avatar runs the chunked schedule with k = 4 and a
3-frame (0.12 s) look-ahead. Every consumption has a deadline (``take``), so a hang fails the
test instead of stalling the suite.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soxr
from helpers import consume

from float_core import AvatarFrame, LiveAvatar
from float_core.config import SamplingConfig
from float_core.media.audio import load_audio
from float_core.pipeline import FloatPipeline
from float_core.streaming import StreamOptions

ROOT = Path(__file__).resolve().parents[1]
RATE = 16000
OPTIONS = StreamOptions(chunk_frames=4, lookahead_seconds=0.12)
SAMPLING = SamplingConfig(seed=0, nfe=2, emotion="neutral")


@pytest.fixture(scope="module")
def pipe() -> FloatPipeline:
    return FloatPipeline.tiny_random()


@pytest.fixture(scope="module")
def source(pipe: FloatPipeline):
    return pipe.prepare_image(str(ROOT / "examples" / "portrait_astronaut.png"))


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    return load_audio(ROOT / "examples" / "arctic_a0007.wav", target_rate=RATE)  # speech ~0.45-3.85 s


def avatar_of(pipe, source, realtime: bool = False) -> LiveAvatar:
    return LiveAvatar(pipe, source, sampling=SAMPLING, options=OPTIONS, realtime=realtime)


def take(frames: Iterator[AvatarFrame], n: int, timeout: float = 30.0) -> list[AvatarFrame]:
    """The next ``n`` frames, read on a helper thread; fail (not hang) after ``timeout`` seconds."""
    return consume(frames, timeout, n)


def audio_of(frames: list[AvatarFrame]) -> np.ndarray:
    return np.concatenate([f.audio for f in frames])


def avatar_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(("float-stream", "float-avatar")) and t.is_alive()]


def test_audio_round_trip_is_exact_and_idle_frames_follow(pipe, source, speech) -> None:
    wave = speech[:int(1.3 * RATE)]
    pcm = (wave * 20000).astype(np.int16)
    with avatar_of(pipe, source) as avatar:
        for start in range(0, wave.size, 1234):  # any chunk length, float32 and int16
            avatar.push_audio(wave[start:start + 1234], RATE)
        avatar.end_turn()
        assert avatar.queued_seconds == wave.size / RATE  # nothing shown yet
        frames = take(avatar.frames(), 60)
        assert avatar.queued_seconds == 0  # all of it shown
        delays = avatar.av_delays  # one per speech frame shown: arrival of its audio -> shown
        assert len(delays) == sum(f.speaking for f in frames) >= 15 and min(delays) > 0
        for start in range(0, pcm.size, 999):
            avatar.push_audio(pcm[start:start + 999], RATE)
        at8k = speech[RATE:2 * RATE:2].copy()  # 0.5 s at 8 kHz
        for start in range(0, at8k.size, 777):
            avatar.push_audio(at8k[start:start + 777], 8000)
        avatar.end_turn()
        frames += take(avatar.frames(), 120)
    assert [f.index for f in frames] == list(range(180))
    assert all(f.pts == f.index / 25 for f in frames)
    assert all(f.image.dtype == np.uint8 and f.image.shape == (64, 64, 3) for f in frames)
    assert all(f.audio.dtype == np.float32 and f.audio.shape == (640,) for f in frames)
    audio = audio_of(frames)
    # Turn 1, then zeros where nothing was queued, then turn 2 (int16 / 32768, then the 8 kHz
    # speech resampled to 16 kHz), each sample exactly once and in order.
    np.testing.assert_array_equal(audio[:wave.size], wave)
    second = np.concatenate([pcm.astype(np.float32) / 32768, soxr.resample(at8k, 8000, RATE, quality="HQ")])
    start = 60 * 640
    assert not audio[wave.size:start].any()
    np.testing.assert_array_equal(audio[start:start + second.size], second)
    assert not audio[start + second.size:].any()
    speaking = np.array([f.speaking for f in frames])
    assert speaking[15:30].all(), "speech was not marked as speech"
    assert not speaking[45:60].any(), "no idle frames after the turn"
    idle = np.stack([f.image for f in frames[45:60]]).astype(np.int16)
    assert np.abs(np.diff(idle, axis=0)).mean() > 0.5  # idle frames move: they are not a still


def test_idle_frames_come_at_once_when_nothing_is_queued(pipe, source) -> None:
    with avatar_of(pipe, source) as avatar:
        frames = take(avatar.frames(), 12)
    assert not any(f.speaking for f in frames) and not audio_of(frames).any()


def test_interrupt_silences_the_rest_of_the_turn(pipe, source, speech) -> None:
    with avatar_of(pipe, source) as avatar:
        avatar.push_audio(speech[:3 * RATE], RATE)
        avatar.end_turn()
        frames = avatar.frames()
        before = take(frames, 30)
        assert all(f.speaking for f in before[15:])
        avatar.interrupt()
        after = take(frames, 30)
        # Within 0.2 s of stream time (5 frames) the audio is silent and speaking is off.
        assert not audio_of(after[5:]).any() and not any(f.speaking for f in after[5:])
        np.testing.assert_array_equal(audio_of(before), speech[:30 * 640])
        # The avatar speaks again after an interruption.
        avatar.push_audio(speech[RATE:2 * RATE], RATE)
        avatar.end_turn()
        again = take(frames, 35)
    assert [f.index for f in again] == list(range(60, 95))
    audio = audio_of(again)
    np.testing.assert_array_equal(audio[np.flatnonzero(audio)[0]:][:RATE], speech[RATE:2 * RATE])
    assert any(f.speaking for f in again)


def test_end_turn_flushes_the_look_ahead(pipe, source, speech) -> None:
    got: list[AvatarFrame] = []
    with avatar_of(pipe, source) as avatar:
        avatar.push_audio(speech[:RATE], RATE)  # 25 frames
        def consume() -> None:
            for frame in avatar.frames():
                got.append(frame)
                if len(got) == 40:
                    return

        consumer = threading.Thread(target=consume, daemon=True)
        consumer.start()
        deadline = time.monotonic() + 30
        while len(got) < 20 and time.monotonic() < deadline:
            time.sleep(0.02)
        # Chunks of 4 frames, 3 of look-ahead: the chunk from frame 20 needs audio up to frame
        # 27, which nobody pushed: it waits for more speech or the end of the turn.
        time.sleep(0.5)
        assert len(got) == 20
        avatar.end_turn()
        consumer.join(30)
    assert len(got) == 40
    np.testing.assert_array_equal(audio_of(got)[:RATE], speech[:RATE])
    assert not audio_of(got)[RATE:].any()


def test_close_joins_every_thread_and_ends_the_frames(pipe, source, speech) -> None:
    avatar = avatar_of(pipe, source)
    frames = avatar.frames()
    avatar.push_audio(speech[:RATE], RATE)
    take(frames, 5)
    assert avatar_threads()
    avatar.close()
    assert avatar_threads() == []
    assert list(frames) == []  # the iterator ends after close()
    with pytest.raises(RuntimeError, match="closed"):
        avatar.push_audio(speech[:640], RATE)
    avatar.close()  # idempotent


@pytest.mark.parametrize("bad, rate, message", [
    (np.array([0.0, np.nan] * 400, np.float32), RATE, "NaN"),
    (np.zeros(800, np.float64), RATE, "float64"),
    (np.zeros(800, np.int32), RATE, "int32"),
    (np.zeros((800, 2), np.float32), RATE, "mono"),
    (np.zeros(800, np.float32), 0, "sample rate"),
    (np.zeros(800, np.float32), -16000, "sample rate"),
    ("not audio", RATE, "numpy array"),
])
def test_bad_input_is_a_clear_error_and_the_avatar_keeps_running(pipe, source, speech, bad, rate, message) -> None:
    with avatar_of(pipe, source) as avatar:
        frames = avatar.frames()
        take(frames, 2)
        with pytest.raises(ValueError, match=message):
            avatar.push_audio(bad, rate)
        avatar.push_audio(speech[:RATE], RATE)
        avatar.end_turn()
        rest = take(frames, 35)
    audio, s0 = audio_of(rest), np.flatnonzero(speech)[0]
    np.testing.assert_array_equal(audio[np.flatnonzero(audio)[0]:][:RATE - s0], speech[s0:RATE])


def test_realtime_frames_are_paced_and_flow_without_input(pipe, source) -> None:
    with avatar_of(pipe, source, realtime=True) as avatar:
        t0 = time.perf_counter()
        frames = take(avatar.frames(), 13)
        elapsed = time.perf_counter() - t0
    assert [f.index for f in frames] == list(range(13))
    assert elapsed >= 12 / 25 - 0.01  # paced at 25 fps (the first frame at once)
    assert avatar.repeated < len(frames)  # counted (shown again: none ready on time); idle frames were made
    assert not audio_of(frames).any() and not any(f.speaking for f in frames)
