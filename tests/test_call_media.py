"""Unit tests of the call's outgoing tracks, turn detection and settings (no network)."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

pytest.importorskip("aiortc")

from float_core.avatar import AvatarFrame  # noqa: E402
from float_core.config import SAMPLES_PER_FRAME  # noqa: E402
from float_studio.call.assistant import Conversation, TurnDetector  # noqa: E402
from aiortc.mediastreams import MediaStreamError  # noqa: E402
from float_studio.call.media import MAX_QUEUED_FRAMES, AvatarOutput, PortraitAudioTrack, PortraitVideoTrack  # noqa: E402
from float_studio.call.session import (  # noqa: E402
    CallError, CallSettings, decode_portrait, ice_servers_from_env, loopback_sdp)
from test_call import PORTRAIT, SPEECH  # noqa: E402


def avatar_frame(index: int) -> AvatarFrame:
    """Frame ``index`` whose pixels and samples both encode its number."""
    audio = (index + np.arange(SAMPLES_PER_FRAME, dtype=np.float32) / SAMPLES_PER_FRAME) / 1000.0
    return AvatarFrame(np.full((4, 4, 3), index % 256, np.uint8), audio, index, True, index / 25)


def test_the_tracks_send_each_frame_with_its_own_samples_and_timestamps():
    async def scenario():
        out = AvatarOutput()
        video, audio = PortraitVideoTrack(out), PortraitAudioTrack(out)
        for i in range(3):
            out.put(avatar_frame(i), generated=i != 1)
        # A track starts from the newest frame (the peer connects late), then gets every frame.
        first_video = await video.recv()
        first_audio = [await audio.recv() for _ in range(2)]
        for i in range(3, 6):
            out.put(avatar_frame(i), generated=True)
        videos = [await video.recv() for _ in range(3)]
        audios = [await audio.recv() for _ in range(6)]
        for _ in range(MAX_QUEUED_FRAMES + 4):  # the tracks stop reading: the oldest are skipped
            out.put(avatar_frame(9), generated=True)
        stats = out.stats
        out.close()
        with pytest.raises(MediaStreamError):
            while True:
                await video.recv()
        return first_video, first_audio, videos, audios, stats

    first_video, first_audio, videos, audios, stats = asyncio.run(scenario())
    assert first_video.pts == 2 * 3600 and first_video.to_ndarray(format="rgb24")[0, 0, 0] == 2
    assert [f.pts for f in first_audio] == [2 * 640, 2 * 640 + 320]
    assert [f.pts for f in videos] == [3 * 3600, 4 * 3600, 5 * 3600]  # 90 kHz: index / 25 s
    assert [f.to_ndarray(format="rgb24")[0, 0, 0] for f in videos] == [3, 4, 5]
    assert [f.pts for f in audios] == [i * 640 + k * 320 for i in (3, 4, 5) for k in (0, 1)]  # 16 kHz
    sent = np.concatenate([f.to_ndarray()[0] for f in audios])
    expected = np.concatenate([avatar_frame(i).audio for i in (3, 4, 5)])
    np.testing.assert_array_equal(sent, (expected * 32767).astype(np.int16))  # the frames' own samples
    assert (stats.shown, stats.generated, stats.late) == (16, 15, 8)  # 4 skipped per track


def test_puppet_backlog_is_cut_in_silence_or_beyond_the_maximum_lag():
    """Call._keep_up with the real voice-activity detector and a stand-in avatar whose backlog
    (queued_seconds) the test sets. While generation keeps up: queued silence beyond a chunk's
    need is dropped, queued speech only beyond FLOAT_CALL_MAX_LAG. A server that does not keep
    up is never cut (its work in progress would be lost): audio beyond the lag is not pushed."""
    from collections import deque
    from types import SimpleNamespace

    from float_core.media.audio import load_audio
    from float_core.vad import VoiceActivity
    from float_studio.call.session import Call

    class Avatar:
        queued_seconds = 0.0
        cuts = 0

        def interrupt(self) -> None:
            self.cuts += 1
            self.queued_seconds = 0.0

    speech = load_audio(SPEECH)[16000:48000]  # voiced throughout
    silence = np.zeros(3 * 16000, np.float32)
    fast = deque(np.arange(50) * 0.04, maxlen=50)  # 50 frames made in 2 s: keeping up
    call = SimpleNamespace(_vad=VoiceActivity(), _last_voice_at=0.0, _catch_up_s=1.0, _made_at=fast,
                           manager=SimpleNamespace(max_lag_s=3.0), dropped_input_s=0.0)
    avatar = Avatar()

    def arrive(wave: np.ndarray, t0: float, backlog: float) -> bool:
        """20 ms packets arriving from ``t0`` on while the backlog is ``backlog`` (until a cut)."""
        before, pushed = avatar.cuts, True
        for i in range(0, wave.size, 320):
            if avatar.cuts == before:
                avatar.queued_seconds = backlog
            pushed &= Call._keep_up(call, avatar, wave[i:i + 320], t0 + i / 16000)
        return pushed

    assert arrive(speech, 0.0, 0.6) and avatar.cuts == 0  # the normal delay: nothing to do
    assert arrive(speech, 2.0, 2.0) and avatar.cuts == 0  # behind, but speech is queued: kept
    assert arrive(silence, 4.0, 2.0) and avatar.cuts == 1  # once 2 s of silence are queued: cut
    assert call.dropped_input_s == 2.0 and not call._made_at  # the next cut waits for new frames
    call._made_at.extend(np.arange(50) * 0.04)
    assert arrive(speech[:320], 8.0, 3.5) and avatar.cuts == 2  # beyond the maximum lag, even in speech
    # A slow server (50 frames in 10 s): never cut; the audio beyond the maximum lag is not pushed.
    call._made_at.extend(np.arange(50) * 0.2)
    assert arrive(silence, 9.0, 2.0) and avatar.cuts == 2
    assert not arrive(speech[:640], 12.0, 3.5) and avatar.cuts == 2
    assert call.dropped_input_s == pytest.approx(2.0 + 3.5 + 0.04)


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
