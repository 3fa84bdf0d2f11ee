"""The Call tab's WebRTC server: a real aiortc client calls ``POST /call/offer``.

The app runs as ``app.py`` serves it (:func:`float_studio.server.launch`) on 127.0.0.1 with the
tiny random model (64x64 frames). ICE uses host candidates only (no STUN/TURN).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

pytest.importorskip("aiortc")

from float_core.config import StreamOptions  # noqa: E402
from float_studio.call.client import SpeechTrack, data_url, place_call, post_offer  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
PORTRAIT = ROOT / "examples" / "portrait_astronaut.png"
SPEECH = ROOT / "examples" / "arctic_a0007.wav"


def _call_threads() -> list[str]:
    return [t.name for t in threading.enumerate()
            if t.name.startswith(("float-call-", "float-stream-")) and t.name != "float-call-media"]


def wait_until(predicate, timeout: float, step: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


_SERVED: dict = {}


@pytest.fixture(scope="module")
def served(request):
    """(url, CallManager) of the whole app served on 127.0.0.1 with the tiny model.

    Launched once per test session and shared by every test_call*.py module (they import
    this fixture); stopped when the session ends.
    """
    if not _SERVED:
        # ICE on 127.0.0.1 only: tests send traffic to loopback addresses and nowhere else.
        os.environ["FLOAT_ICE_LOOPBACK"] = "1"
        import app
        from float_core.pipeline import FloatPipeline
        from float_studio import server
        from float_studio.call import call_manager
        from float_studio.model import PipelineHolder

        pipe = FloatPipeline.from_pretrained("tiny-random", device="cpu")
        holder = PipelineHolder(lambda: pipe)
        demo = app.build_demo(holder)
        _, url, _ = server.launch(demo, holder, prevent_thread_lock=True, server_name="127.0.0.1", quiet=True)
        manager = call_manager(demo.app)

        def stop() -> None:
            manager.close_all()
            demo.close()
            _SERVED.clear()

        request.config.add_cleanup(stop)
        _SERVED.update(url=url, manager=manager)
    return _SERVED["url"], _SERVED["manager"]


@pytest.fixture()
def manager(served):
    """The call manager, checked to be left with no call and no call thread after the test."""
    _, mgr = served
    defaults = (mgr.max_calls, mgr.idle_timeout_s, mgr.services_config, mgr.max_seconds)
    yield mgr
    mgr.max_calls, mgr.idle_timeout_s, mgr.services_config, mgr.max_seconds = defaults
    assert wait_until(lambda: not mgr.calls and not _call_threads(), 15), (mgr.calls, _call_threads())
    # ... and no task of a call (mic reader, watchdog, stats, aiortc's own) left on the media loop
    assert wait_until(lambda: not _media_tasks(mgr), 10), _media_tasks(mgr)


def _media_tasks(mgr) -> list[str]:
    if mgr._loop is None:
        return []
    return [repr(t.get_coro()) for t in asyncio.all_tasks(mgr._loop) if not t.done()]


def envelope(wave: np.ndarray, hop: int = 320) -> np.ndarray:
    """RMS per 20 ms."""
    n = wave.size // hop
    return np.sqrt((wave[:n * hop].reshape(n, hop).astype(np.float64) ** 2).mean(axis=1))


def best_lag(sent: np.ndarray, got: np.ndarray, max_lag: int) -> tuple[int, float]:
    """The lag (in envelope steps) at which ``got`` best matches ``sent``, and the correlation."""
    best = (0, -1.0)
    for lag in range(0, max_lag):
        a, b = sent[:max(0, min(sent.size, got.size - lag))], got[lag:lag + sent.size]
        if a.size < 50 or a.std() == 0 or b.std() == 0:
            continue
        r = float(np.corrcoef(a, b[:a.size])[0, 1])
        if r > best[1]:
            best = (lag, r)
    return best


def test_puppet_call_streams_video_and_the_voice_back(served, manager):
    url, _ = served
    mic = SpeechTrack.from_file(SPEECH, lead_s=1.0)
    rec = asyncio.run(place_call(url, PORTRAIT, mic, seconds=9.0, crop=False, seed=0, nfe=4))

    assert rec.answer["type"] == "answer" and rec.answer["mode"] == "puppet"
    candidates = [line.split()[4] for line in rec.answer["sdp"].splitlines() if line.startswith("a=candidate:")]
    assert candidates and all(a.startswith("127.") for a in candidates), candidates  # FLOAT_ICE_LOOPBACK
    # Video at 25 fps made of generated frames. (Whether generation itself keeps up with real
    # time depends on the machine's load: benchmarks/call_latency.py measures it; on a stall
    # the track repeats a frame with silence, so the rate and the sync hold regardless.)
    assert rec.video_fps() >= 20, rec.video_fps()
    frames = rec.status["frames"]
    assert frames["generated"] >= 75 and frames["generated"] + frames["stalls"] == frames["shown"], frames
    assert rec.video_frames[-1].shape == (64, 64, 3)
    late = np.stack(rec.video_frames[-20:]).astype(np.int16)
    assert np.abs(np.diff(late, axis=0)).mean() > 1.0, "the received frames do not change"
    # The voice comes back: the received audio follows the sent speech's envelope, delayed.
    sent, got = envelope(mic.played), envelope(rec.audio_wave)
    lag, r = best_lag(sent, got, max_lag=300)
    assert r > 0.6, (lag, r)
    # Delayed by at least the tiny model's window (10 frames: its live chunks are whole windows)
    # plus the look-ahead (the audio plays on one timeline, so every sample waits as long as the
    # first of a window); how much more depends on the machine's load.
    assert lag * 20 >= 1000 * (10 / 25 + StreamOptions().lookahead_seconds) - 20, lag
    # The A/V delay (speech in -> mouth out) is measured by the server's LiveAvatar and agrees
    # with the delay heard.
    delay = rec.status["av_delay_ms"]
    assert delay is not None and rec.status["av_delay_p90_ms"] >= delay
    assert abs(delay - lag * 20) < max(400, 0.25 * lag * 20), (delay, lag * 20)
    events = [e["type"] for e in rec.events]
    assert "stats" in events and {"type": "state", "state": "connected"} in rec.events


def _offer_body(**overrides):
    """A syntactically valid offer from a real aiortc peer (closed afterwards)."""
    from aiortc import RTCPeerConnection

    async def make() -> str:
        pc = RTCPeerConnection()
        pc.addTrack(SpeechTrack(np.zeros(1, np.float32)))
        pc.addTransceiver("video", direction="recvonly")
        await pc.setLocalDescription(await pc.createOffer())
        sdp = pc.localDescription.sdp
        await pc.close()
        return sdp

    body = {"sdp": asyncio.run(make()), "type": "offer", "mode": "puppet", "portrait": data_url(PORTRAIT),
            "crop": False}
    body.update(overrides)
    return {k: v for k, v in body.items() if v is not None}


@pytest.mark.parametrize("overrides, status, message", [
    ({"type": "answer"}, 400, "type: expected 'offer'"),
    ({"sdp": "hello"}, 400, "sdp: expected"),
    ({"sdp": "v=0\r\nthis is not a session description\r\n"}, 400, "offer:"),
    ({"portrait": None}, 400, "portrait: missing"),
    ({"portrait": "data:text/plain;base64,aGVsbG8="}, 415, "not an image"),
    ({"portrait": "data:image/png;base64,aGVsbG8gd29ybGQ="}, 415, "not an image Pillow can read"),
    ({"portrait": "http://example.com/a.png"}, 400, "base64 data URL"),
    ({"mode": "karaoke"}, 400, "mode: expected"),
    ({"nfe": 0}, 400, "nfe"),
    ({"emotion": "furious"}, 400, "emotion"),
    ({"volume": 11}, 400, "unknown setting"),
])
def test_bad_offers_get_a_clear_error_and_leave_nothing_running(served, manager, overrides, status, message):
    url, _ = served
    code, body = asyncio.run(post_offer(url, _offer_body(**overrides)))
    assert code == status, body
    assert message in body["error"], body


def test_a_portrait_without_a_face(served, manager):
    import base64
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (200, 200), (255, 255, 255)).save(buf, format="PNG")
    blank = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
    url, _ = served
    code, body = asyncio.run(post_offer(url, _offer_body(portrait=blank, crop=True)))
    assert code == 422 and body["error"].startswith("portrait:") and "face" in body["error"], body


def test_body_that_is_not_json(served, manager):
    url, _ = served
    r = httpx.post(url + "call/offer", content=b"{nope", headers={"content-type": "application/json"})
    assert r.status_code == 400 and "not JSON" in r.json()["error"]
    r = httpx.get(url + "call/0123456789ab")
    assert r.status_code == 404 and "no call" in r.json()["error"]


def test_offer_without_video_section(served, manager):
    from aiortc import RTCPeerConnection

    async def make() -> str:
        pc = RTCPeerConnection()
        pc.addTrack(SpeechTrack(np.zeros(1, np.float32)))
        await pc.setLocalDescription(await pc.createOffer())
        sdp = pc.localDescription.sdp
        await pc.close()
        return sdp

    url, _ = served
    code, body = asyncio.run(post_offer(url, _offer_body(sdp=asyncio.run(make()))))
    assert code == 400 and "no video section" in body["error"]


def test_assistant_mode_needs_its_services(served, manager, monkeypatch):
    url, _ = served
    for name in ("FLOAT_ASR_URL", "FLOAT_LLM_URL", "FLOAT_TTS_URL"):
        monkeypatch.delenv(name, raising=False)
    code, body = asyncio.run(post_offer(url, _offer_body(mode="assistant")))
    assert code == 503 and "FLOAT_ASR_URL and FLOAT_LLM_URL" in body["error"]
    # Unreachable: nothing listens on a port we just had and released.
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("FLOAT_ASR_URL", f"http://127.0.0.1:{port}/v1")
    monkeypatch.setenv("FLOAT_LLM_URL", f"http://127.0.0.1:{port}/v1")
    code, body = asyncio.run(post_offer(url, _offer_body(mode="assistant")))
    assert code == 502 and "unreachable" in body["error"] and "FLOAT_ASR_URL" in body["error"], body
    cfg = httpx.get(url + "call/config").json()
    assert cfg["assistant"]["available"] is True and cfg["ice_servers"] == []


def test_too_many_calls(served, manager):
    url, _ = served
    manager.max_calls = 1
    second = _offer_body()

    async def scenario() -> tuple[int, dict, dict]:
        tasks: list[asyncio.Task] = []
        first = place_call(url, PORTRAIT, SpeechTrack(np.zeros(1, np.float32)), seconds=2.0, crop=False,
                           on_connected=lambda rec: tasks.append(asyncio.ensure_future(post_offer(url, second))))
        rec = await first
        code, body = await tasks[0]
        return code, body, rec.status

    code, body, status = asyncio.run(scenario())
    assert status["state"] in ("connecting", "connected")
    assert code == 429 and "too many calls" in body["error"] and "FLOAT_MAX_CALLS=1" in body["error"]


_DROPPED_CLIENT = r"""
import asyncio, sys, numpy as np
from float_studio.call.client import SpeechTrack, place_call
def connected(rec):
    print("CONNECTED", rec.answer["id"], flush=True)
asyncio.run(place_call(sys.argv[1], sys.argv[2], SpeechTrack(np.zeros(1, np.float32)), seconds=60,
                       crop=False, on_connected=connected))
"""


def test_a_dropped_peer_frees_the_call(served, manager):
    """A client killed mid-call (no hang-up, no DTLS close) is noticed by the audio watchdog."""
    url, _ = served
    manager.idle_timeout_s = 2.0
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", _DROPPED_CLIENT, url, str(PORTRAIT)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("CONNECTED"), line
        call_id = line.split()[1]
        assert wait_until(lambda: call_id in manager.calls and manager.calls[call_id].state == "connected", 10)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    assert wait_until(lambda: call_id not in manager.calls, 10)


def test_two_calls_are_isolated(served, manager):
    """Two callers at once: each gets its own stream; one hanging up leaves the other going."""
    url, _ = served
    manager.max_calls = 2
    marks: dict[str, float] = {}

    async def scenario():
        # Long enough for both streams' first window (0.4 s + 0.4 s look-ahead of audio, then the
        # compute of two streams sharing the CPU) even when the machine is loaded.
        short = place_call(url, PORTRAIT, SpeechTrack(np.zeros(1, np.float32)), seconds=4.0, crop=False, nfe=2)
        long = place_call(url, PORTRAIT, SpeechTrack(np.zeros(1, np.float32)), seconds=9.0, crop=False, nfe=2,
                          until=lambda r: "short" in marks and len(manager.calls) == 1
                          and r.video_times and r.video_times[-1] > marks["short"] + 1.5)
        a = asyncio.ensure_future(short)
        b = asyncio.ensure_future(long)
        first = await a
        marks["short"] = time.monotonic()
        return first, await b

    first, second = asyncio.run(scenario())
    assert first.answer["id"] != second.answer["id"]
    assert "state" in first.status and "state" in second.status, (first.events[-2:], second.events[-2:])
    assert first.status["state"] == second.status["state"] == "connected"
    assert first.status["frames"]["generated"] > 0 and second.status["frames"]["generated"] > 0
    assert second.video_times[-1] > marks["short"] + 1.5  # still receiving after the first hung up


def test_a_call_ends_at_its_maximum_length_after_a_countdown(served, manager):
    """FLOAT_MAX_LIVE_SECONDS: the stats count the call's remaining seconds down (the page shows
    the last 30 s), then the server hangs up and says why."""
    url, _ = served
    assert manager.max_seconds == 300  # the default
    manager.max_seconds = 2.0

    def closed(rec) -> bool:
        return any(e.get("type") == "state" and e.get("state") == "closed" for e in rec.events)

    rec = asyncio.run(place_call(url, PORTRAIT, SpeechTrack(np.zeros(1, np.float32)), seconds=15.0, crop=False,
                                 nfe=1, until=closed))
    assert closed(rec), rec.events[-3:]
    stats = [e for e in rec.events if e["type"] == "stats"]
    assert stats and all(e["max_seconds"] == 2.0 and 0 <= e["remaining_s"] <= 2.0 for e in stats), stats
    assert all("generated_fps" in e and "realtime" in e for e in stats)  # the below-real-time warning's fields
    reason = next(e["reason"] for e in rec.events if e.get("state") == "closed")
    assert "maximum length" in reason and "2 s" in reason and "FLOAT_MAX_LIVE_SECONDS" in reason
