"""The Live tab's engine side (float_studio.live) without a browser: segments, stats, microphone."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

from float_core.config import SamplingConfig
from float_core.media.audio import load_audio
from float_core.media.image import load_image
from float_core.media.video import probe_video
from float_core.pipeline import FloatPipeline
from float_studio.live import LiveSession, run_live

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def pipe() -> FloatPipeline:
    return FloatPipeline.tiny_random()


@pytest.fixture(scope="module")
def portrait() -> np.ndarray:
    return load_image(ROOT / "examples" / "portrait_astronaut.png")


def test_known_speech_becomes_segments_with_every_frame(pipe, portrait, tmp_path) -> None:
    session = LiveSession()
    seen = []
    for segment, stats in run_live(pipe, portrait, str(ROOT / "examples" / "arctic_a0007.wav"),
                                   SamplingConfig(seed=0, nfe=1), session):
        if segment is not None:
            info = probe_video(segment)  # read now: segments are removed two segments later
            assert info["video_codec"] == "h264" and info["audio_codec"] == "aac"
            seen.append(info["frames"])
        last = stats
    assert seen[0] < 25 and sum(seen) == 100  # a short first segment, then about a second each
    assert last.state == "done" and last.frames == 100 and last.first_frame is not None
    assert "time to first frame" in last.markdown() and "real-time factor" in last.markdown()
    session.cleanup()


def test_microphone_chunks_drive_a_live_stream_until_recording_stops(pipe, portrait) -> None:
    session = LiveSession()
    session.mic_state = "waiting"
    speech = load_audio(ROOT / "examples" / "arctic_a0007.wav", target_rate=48000)[:2 * 48000]

    def record() -> None:  # 48 kHz int16 stereo blocks of 0.25 s, at real time, as the browser sends
        time.sleep(0.5)
        for start in range(0, speech.size, 12000):
            block = (speech[start:start + 12000] * 32767).astype(np.int16)
            session.push_mic(48000, np.stack([block, block], axis=1))
            time.sleep(0.25)
        session.mic_state = "done"

    recorder = threading.Thread(target=record, daemon=True)
    recorder.start()
    frames = 0
    for segment, stats in run_live(pipe, portrait, session.mic_chunks(), SamplingConfig(seed=0, nfe=1),
                                   session, live=True):
        if segment is not None:
            frames += probe_video(segment)["frames"]
    recorder.join(10)
    assert stats.state == "done"
    assert frames == stats.frames >= 50  # 2 s of speech (plus idle frames for the wait before it)
    # The LiveAvatar's measured A/V delay (a speech frame's audio in -> the frame out) is shown.
    p50, p90 = stats.av_delay
    assert 0 < p50 <= p90 and f"A/V delay **{p50:.2f} s** (p90 {p90:.2f} s)" in stats.markdown()
    session.cleanup()


def test_stop_ends_a_stream_that_would_run_forever(pipe, portrait) -> None:
    session = LiveSession()
    session.mic_state = "waiting"  # nobody speaks: idle frames from the clock, forever
    states = []
    for segment, stats in run_live(pipe, portrait, session.mic_chunks(), SamplingConfig(seed=0, nfe=1),
                                   session, live=True):
        states.append(stats.state)
        if segment is not None and not session.stop.is_set():
            threading.Timer(0.2, session.halt).start()  # the Stop button, from another thread
    assert states[-1] == "stopped"
    session.cleanup()


def test_a_server_without_ffmpeg_is_told_what_to_install(monkeypatch) -> None:
    """Gradio's streaming video needs ffmpeg and ffprobe; without them the tab says so at once
    (instead of a stream that never plays)."""
    import shutil

    from float_studio.live import player_unavailable_reason

    real = shutil.which
    monkeypatch.setattr(shutil, "which", lambda name: None if name == "ffprobe" else real(name))
    reason = player_unavailable_reason()
    assert reason is not None and "ffprobe" in reason and "apt-get install ffmpeg" in reason
    monkeypatch.setattr(shutil, "which", lambda name: f"/usr/bin/{name}")
    assert player_unavailable_reason() is None


def test_a_microphone_stream_stops_at_its_limit_and_says_why(pipe, portrait) -> None:
    """FLOAT_MAX_LIVE_SECONDS (here 1 s): a stream that would run forever stops."""
    session = LiveSession()
    session.mic_state = "waiting"  # nobody speaks: idle frames from the clock, until the limit
    for _, stats in run_live(pipe, portrait, session.mic_chunks(), SamplingConfig(seed=0, nfe=1), session,
                             live=True, max_seconds=1.0):
        pass
    assert stats.state == "limit" and stats.elapsed >= 1.0 and stats.frames > 0
    assert "Stopped: the maximum length of a live session, 1 s, was reached (FLOAT_MAX_LIVE_SECONDS)" in \
        stats.markdown()
    session.cleanup()


def test_the_stats_count_down_the_last_30_seconds() -> None:
    from float_studio.live import LiveStats

    stats = LiveStats(state="streaming", frames=100, elapsed=260.0, first_frame=1.0, live=True, limit=300.0)
    assert "ends in" not in stats.markdown()
    stats.elapsed = 288.4
    assert "This stream ends in 12 s (live sessions last at most 300 s, FLOAT_MAX_LIVE_SECONDS)" in stats.markdown()


def test_text_and_uploads_are_held_to_the_speech_limit(monkeypatch) -> None:
    """FLOAT_MAX_SECONDS for the Live tab: text clearly too long is refused before it is spoken,
    spoken text is measured, an upload is measured from its header."""
    import float_studio.live as live
    from float_studio.limits import LimitError

    monkeypatch.setenv("FLOAT_MAX_SECONDS", "1")
    spoken = []
    monkeypatch.setattr(live, "speak", lambda text, voice: spoken.append(text) or np.zeros(24000, np.float32))
    with pytest.raises(LimitError, match="characters.*at most 1 s of speech"):
        live.live_speech("Text", "x" * 26, "espeak-ng", None, LiveSession())
    assert spoken == []  # refused before synthesis
    with pytest.raises(LimitError, match=r"The spoken text is 1\.5 s long; this server accepts at most 1 s"):
        live.live_speech("Text", "Hello there", "espeak-ng", None, LiveSession())
    with pytest.raises(LimitError, match=r"The speech is 4\.0 s long.*FLOAT_MAX_SECONDS"):
        live.live_speech("Upload", "", "espeak-ng", str(ROOT / "examples" / "arctic_a0007.wav"), LiveSession())
    monkeypatch.setenv("FLOAT_MAX_SECONDS", "60")
    speech, seconds = live.live_speech("Upload", "", "espeak-ng", str(ROOT / "examples" / "arctic_a0007.wav"),
                                       LiveSession())
    assert seconds == pytest.approx(4.0)


def test_the_stats_say_when_the_stream_is_slower_than_real_time() -> None:
    from float_studio.live import LiveStats

    stats = LiveStats(state="streaming", frames=60, elapsed=12.0, first_frame=2.0, frames_at_first=10)
    assert stats.fps == 5.0 and "below real time (25 fps)" in stats.markdown()
    assert "pauses to buffer" in stats.markdown()  # known speech: the player waits
    fast = LiveStats(state="streaming", frames=260, elapsed=12.0, first_frame=2.0, frames_at_first=10)
    assert fast.fps == 25.0 and "below real time" not in fast.markdown()
