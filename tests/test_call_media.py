"""Unit tests of the call's media timeline, feeds, turn detection and settings (no network)."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

pytest.importorskip("aiortc")

from float_studio.call.assistant import Conversation, TurnDetector  # noqa: E402
from float_core.config import SAMPLES_PER_FRAME  # noqa: E402
from float_studio.call.media import AnswerFeed, MicFeed, Playout  # noqa: E402
from float_studio.call.session import (  # noqa: E402
    CallError, CallSettings, decode_portrait, ice_servers_from_env, loopback_sdp)
from test_call import PORTRAIT, SPEECH  # noqa: E402


def chunk(start: int, k: int, speaking: bool = True) -> tuple[np.ndarray, np.ndarray, int, np.ndarray]:
    """k frames whose pixels and samples both encode their frame number."""
    frames = np.stack([np.full((4, 4, 3), (start + i) % 256, np.uint8) for i in range(k)])
    audio = np.repeat(np.arange(start, start + k, dtype=np.float32) / 1000.0, SAMPLES_PER_FRAME)
    return frames, audio, start, np.full(k, speaking)


def test_playout_keeps_each_frame_with_its_own_samples():
    placeholder = np.zeros((4, 4, 3), np.uint8)
    p = Playout(placeholder)
    assert p.tick(0).index is None and p.tick(0).frame is placeholder  # warm-up: the portrait
    p.put(*chunk(0, 3))
    for k, frame_no in ((1, 0), (2, 1), (3, 2)):
        t = p.tick(k)
        assert t.index == frame_no and t.frame[0, 0, 0] == frame_no
        assert np.allclose(t.audio, frame_no / 1000.0)  # the audio of that frame, in that tick
    stall = p.tick(4)  # nothing ready: the last frame again, with silence
    assert stall.index is None and stall.frame[0, 0, 0] == 2 and not stall.audio.any()
    assert (p.stats.shown, p.stats.stalls) == (3, 1)
    assert p.tick(2).index == 1  # an earlier tick is still there for the audio track


def test_playout_drop_and_catch_up():
    p = Playout(np.zeros((4, 4, 3), np.uint8), catch_up=4)
    p.put(*chunk(0, 6, speaking=False))
    p.put(*chunk(6, 4, speaking=True))
    p.drop(7, 9)  # e.g. an interrupted answer
    p.put(*chunk(10, 2, speaking=True))
    shown = [p.tick(k).index for k in range(8)]
    # 10 frames waiting > 4: idle frames are skipped (all six: speech is never skipped, so the
    # backlog cannot shrink below the speech), frames 7-8 dropped.
    assert shown == [6, 9, 10, 11, None, None, None, None], shown
    assert p.stats.skipped == 6 and p.stats.dropped == 2


def test_playout_back_pressure_and_close():
    p = Playout(np.zeros((4, 4, 3), np.uint8), max_buffered=2)
    p.put(*chunk(0, 2))
    done = []
    worker = threading.Thread(target=lambda: done.append(p.put(*chunk(2, 1))))
    worker.start()
    time.sleep(0.2)
    assert not done  # blocked: two frames already wait
    p.tick(0)
    worker.join(2)
    assert done == [True]
    p.close()
    assert p.put(*chunk(3, 1)) is False


def test_mic_feed_fills_silence_when_the_caller_stalls_and_drops_late_audio():
    feed = MicFeed(stall_s=0.1, max_lag_s=1.0)
    t0 = time.monotonic()
    feed.push(np.ones(320, np.float32), t0)
    assert feed.__next__().size == 320
    silence = next(feed)  # nothing for >= 0.1 s: silence up to the clock
    assert not silence.any() and 1600 <= silence.size <= 4000
    # The late packets that then arrive are dropped as far as silence was inserted.
    now = time.monotonic()
    for _ in range(10):
        feed.push(np.ones(320, np.float32), now)
    assert feed.dropped >= silence.size - 1600 - 320
    assert feed.arrival(0) == t0 and feed.arrival(400) >= now - 1  # sample 400 is in the silence
    feed.close()
    with pytest.raises(StopIteration):
        while True:
            next(feed)


def test_answer_feed_paces_ahead_of_the_position_and_cancels():
    position = [0]
    feed = AnswerFeed(lambda: position[0], ahead_s=0.5)
    got = []
    worker = threading.Thread(target=lambda: [got.append(next(feed)) for _ in range(6)])
    worker.start()
    time.sleep(0.3)
    assert sum(c.size for c in got) == 9600  # 200 ms chunks until >= 0.5 s ahead, then it waits
    answer = feed.say(1, np.ones(3200, np.float32))
    time.sleep(0.1)
    assert len(got) == 3  # still waiting for the position to move
    position[0] = 16000
    worker.join(2)
    assert not worker.is_alive() and (answer.start, answer.end) == (9600, 12800)
    assert got[3].min() == 1.0 and not got[4].any() and not got[5].any()
    long = feed.say(2, np.ones(16000, np.float32))
    next(feed)
    feed.cancel()
    assert long.end == feed.fed and not feed.busy and not next(feed).any()


def test_turn_detector_cuts_a_turn_after_the_closing_silence():
    from float_core.media.audio import load_audio

    speech = load_audio(SPEECH)
    wave = np.concatenate([np.zeros(16000, np.float32), speech, np.zeros(24000, np.float32)])
    td = TurnDetector(end_silence_ms=700)
    turns = []
    for i in range(0, wave.size, 320):
        turns += td.push(wave[i:i + 320], arrived=i / 16000)
    assert len(turns) == 1
    utterance, speech_end, cut = turns[0]
    assert not cut and 3.0 <= utterance.size / 16000 <= 5.0
    assert 4.0 <= speech_end <= 5.0  # the last voiced frame: inside the clip (it ends at 5 s)


def test_conversation_messages():
    c = Conversation(name="Zed", system_prompt="Be brief.")
    c.add("hi", "hello")
    assert c.messages("who?") == [{"role": "system", "content": "Your name is Zed. Be brief."},
                                  {"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
                                  {"role": "user", "content": "who?"}]


def test_call_settings_and_portrait():
    s = CallSettings.from_json({"mode": "assistant", "nfe": 5, "emotion": "happy", "seed": 3, "name": "Zed",
                                "idle": False, "sdp": "v=0", "type": "offer", "portrait": "x"})
    assert (s.mode, s.sampling.nfe, s.sampling.emotion, s.sampling.seed, s.idle, s.name) == (
        "assistant", 5, "happy", 3, False, "Zed")
    for bad, message in (({"idle": "yes"}, "idle"), ({"end_silence_ms": 10}, "end_silence_ms"),
                         ({"nfe": 99}, "at most 50"), ({"solver": "leapfrog"}, "solver")):
        with pytest.raises(CallError, match=message) as err:
            CallSettings.from_json(bad)
        assert err.value.status == 400
    import base64

    image = decode_portrait("data:image/png;base64," + base64.b64encode(PORTRAIT.read_bytes()).decode())
    assert image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8


def test_ice_servers_from_env():
    assert ice_servers_from_env({}) == []
    assert ice_servers_from_env({"FLOAT_STUN_URL": "stun:s:3478", "FLOAT_TURN_URL": "turn:t:3478",
                                 "FLOAT_TURN_USERNAME": "u", "FLOAT_TURN_CREDENTIAL": "p"}) == [
        {"urls": "stun:s:3478"}, {"urls": "turn:t:3478", "username": "u", "credential": "p"}]
    assert ice_servers_from_env({"FLOAT_ICE_SERVERS": '{"urls": ["turn:a", "turns:b"]}'}) == [
        {"urls": ["turn:a", "turns:b"]}]
    with pytest.raises(ValueError, match="FLOAT_ICE_SERVERS"):
        ice_servers_from_env({"FLOAT_ICE_SERVERS": "[{"})


def test_loopback_sdp_keeps_only_loopback_candidates():
    sdp = ("v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"
           "a=candidate:1 1 udp 2122260223 192.0.2.2 50001 typ host\r\n"
           "a=candidate:2 1 udp 2122194687 127.0.0.1 50002 typ host\r\n"
           "a=candidate:3 1 udp 1686052607 203.0.113.5 50003 typ srflx raddr 192.0.2.2 rport 50001\r\n"
           "a=end-of-candidates\r\n")
    out = loopback_sdp(sdp).split("\r\n")
    assert [line for line in out if line.startswith("a=candidate:")] == [
        "a=candidate:2 1 udp 2122194687 127.0.0.1 50002 typ host"]
    assert "m=audio 9 UDP/TLS/RTP/SAVPF 111" in out and "a=end-of-candidates" in out
