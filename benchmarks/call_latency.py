"""Call latency benchmark: puppet speech-in -> mouth-out, assistant end-of-question -> answer.

    python benchmarks/call_latency.py                          # tiny, tiny-window and official, both modes
    python benchmarks/call_latency.py --sizes tiny tiny-window --modes puppet --seconds 12
    python benchmarks/call_latency.py --client browser --sizes tiny tiny-window   # the Call tab in Chromium

Each (size, mode) runs the Call routes (:func:`float_studio.call.mount_call_routes`) on a
FastAPI app served by uvicorn on 127.0.0.1 with random weights (``float_core.bench.random_model``:
the timings depend only on the model size; ``tiny-window`` is the tiny widths with the official
window shape, L = 50, L' = 10, so the live schedule is the official one and compute is small)
and calls them with the aiortc client of :mod:`float_studio.call.client` (the same WebRTC stack
as a browser, over loopback). With ``--client browser`` the whole app is served instead and the
Call tab's own page (assets/call.js) calls it from headless Chromium (Playwright, the system
``chromium``), its fake microphone playing the same speech from a WAV file; the figures are
then the server's (the page's audio is not recorded, so there is no heard delay):

* **puppet**: the caller sends 1 s of silence then the example speech (tiled) in real time.
  Reported: the A/V delay the server's LiveAvatar measures (a speech frame's last sample in ->
  that frame out to the tracks; median and p90), the delay the client hears (lag of the best
  cross-correlation between the sent and received audio envelopes), the rate of generated
  frames, stalls (frames repeated because none was ready on time), the caller audio dropped to
  keep the delay bounded (``FLOAT_CALL_MAX_LAG``), and the time to the first generated frame.
* **assistant**: a local OpenAI-compatible stub (:mod:`float_studio.call.stub_services`: fixed
  transcript and answer, espeak-ng speech) answers one question; reported: end of question
  (the last voiced frame) -> first answer frame on the timeline, and its parts (the closing
  silence that ends the turn, ASR, chat, TTS; the rest is the stream).

Timings on a shared machine are noisy; the script prints what it measured and asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from float_core.bench import BENCH_SIZES, cpu_name, random_model  # noqa: E402
from float_core.media.audio import load_audio  # noqa: E402
from float_core.pipeline import FloatPipeline  # noqa: E402

PORTRAIT = ROOT / "examples" / "portrait_astronaut.png"
SPEECH = ROOT / "examples" / "arctic_a0007.wav"


def serve_routes(pipe: FloatPipeline) -> tuple[str, Any, Any]:
    """The Call routes alone on 127.0.0.1 (uvicorn thread); returns (url, manager, stop)."""
    import uvicorn
    from fastapi import FastAPI

    from float_studio.call import mount_call_routes
    from float_studio.model import PipelineHolder

    app = FastAPI()
    manager = mount_call_routes(app, PipelineHolder(lambda: pipe))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)

    def stop() -> None:
        manager.close_all()
        server.should_exit = True
        thread.join(10)

    return f"http://127.0.0.1:{sock.getsockname()[1]}/", manager, stop


def envelope(wave: np.ndarray, hop: int = 320) -> np.ndarray:
    n = wave.size // hop
    return np.sqrt((wave[:n * hop].reshape(n, hop).astype(np.float64) ** 2).mean(axis=1))


def heard_delay_ms(sent: np.ndarray, got: np.ndarray, max_lag_s: float) -> tuple[int | None, float]:
    """Lag (ms) of the best correlation between the sent and received audio envelopes.

    Only lags that leave at least half of the sent audio overlapping count: a short overlap
    at a large lag can correlate by chance better than the true lag does."""
    a, b = envelope(sent), envelope(got)
    best: tuple[int | None, float] = (None, -1.0)
    for lag in range(0, int(max_lag_s * 50)):
        x, y = a[:max(0, min(a.size, b.size - lag))], b[lag:lag + a.size]
        if x.size < max(100, a.size // 2) or x.std() == 0 or y[:x.size].std() == 0:
            continue
        r = float(np.corrcoef(x, y[:x.size])[0, 1])
        if r > best[1]:
            best = (lag * 20, r)
    return best


def run_puppet(url: str, seconds: float, nfe: int) -> dict[str, Any]:
    from float_studio.call.client import SpeechTrack, place_call

    mic = SpeechTrack(puppet_speech(seconds))
    rec = asyncio.run(place_call(url, PORTRAIT, mic, seconds=seconds, crop=False, seed=0, nfe=nfe))
    lag, r = heard_delay_ms(mic.played, rec.audio_wave, max_lag_s=min(seconds - 2, 20))
    return {**puppet_figures(rec.status), "heard_delay_ms": lag, "heard_corr": round(r, 2),
            "received_fps": round(rec.video_fps(), 1)}


def puppet_speech(seconds: float) -> np.ndarray:
    """1 s of silence, then speech and reversed speech with uneven gaps: not periodic, so the
    heard delay is unambiguous."""
    speech = load_audio(SPEECH)
    parts, gaps = [np.zeros(16000, np.float32)], [0.3, 1.1, 0.6, 1.7, 0.2, 0.9]
    for i in range(int(np.ceil(seconds / 4.0)) + 1):
        parts += [speech if i % 2 == 0 else speech[::-1].copy(), np.zeros(int(gaps[i % 6] * 16000), np.float32)]
    return np.concatenate(parts)


def puppet_figures(st: dict[str, Any]) -> dict[str, Any]:
    """The puppet figures of a call's status."""
    return {"av_delay_ms": st["av_delay_ms"], "av_delay_p90_ms": st["av_delay_p90_ms"],
            "generated_fps": st["generated_fps"], "shown": st["frames"]["shown"],
            "generated": st["frames"]["generated"], "stalls": st["frames"]["stalls"], "late": st["frames"]["late"],
            "first_frame_s": st["first_frame_s"], "dropped_input_s": st["dropped_input_s"], "call_s": st["seconds"]}


def run_assistant(url: str, timeout: float, nfe: int) -> dict[str, Any]:
    from float_studio.call.client import SpeechTrack, place_call
    from float_studio.call.stub_services import serve_stub_services

    stub_url, stub, stop = serve_stub_services()
    for name in ("FLOAT_ASR_URL", "FLOAT_LLM_URL", "FLOAT_TTS_URL"):
        os.environ[name] = stub_url
    try:
        mic = SpeechTrack(np.concatenate([np.zeros(16000, np.float32), load_audio(SPEECH)]))
        rec = asyncio.run(place_call(url, PORTRAIT, mic, mode="assistant", seconds=timeout, crop=False, nfe=nfe,
                                     until=lambda r: r.first_event("answer_started") is not None))
    finally:
        stop()
    answers = rec.status["answers"]
    return answers[0] if answers else {"answer_latency_ms": None, "note": f"no answer within {timeout:g} s"}


def serve_app(pipe: FloatPipeline) -> tuple[str, Any, Any]:
    """The whole app (Gradio + the Call routes) on 127.0.0.1; returns (url, manager, stop)."""
    os.environ["FLOAT_ICE_LOOPBACK"] = "1"  # one machine: ICE over 127.0.0.1
    import app  # the repository root is on sys.path (above)
    from float_studio import server
    from float_studio.call import call_manager
    from float_studio.model import PipelineHolder

    holder = PipelineHolder(lambda: pipe)
    demo = app.build_demo(holder)
    _, url, _ = server.launch(demo, holder, prevent_thread_lock=True, server_name="127.0.0.1", quiet=True)
    manager = call_manager(demo.app)

    def stop() -> None:
        manager.close_all()
        demo.close()

    return url, manager, stop


def run_browser(url: str, manager: Any, mode: str, seconds: float, timeout: float) -> dict[str, Any]:
    """One call placed by the Call tab in headless Chromium, its microphone playing a WAV file."""
    import shutil
    import tempfile

    import soundfile as sf
    from playwright.sync_api import sync_playwright

    chromium = os.environ.get("FLOAT_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("--client browser needs a system Chromium (Debian: apt-get install -y chromium)")
    stop_services = None
    if mode == "assistant":
        from float_studio.call.stub_services import serve_stub_services

        stub_url, _, stop_services = serve_stub_services()
        for name in ("FLOAT_ASR_URL", "FLOAT_LLM_URL", "FLOAT_TTS_URL"):
            os.environ[name] = stub_url
        speech = np.concatenate([np.zeros(16000, np.float32), load_audio(SPEECH), np.zeros(10 * 16000, np.float32)])
    else:
        speech = puppet_speech(seconds)
    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as p:
        wav = Path(tmp) / "mic.wav"
        sf.write(wav, speech, 16000, subtype="PCM_16")
        browser = p.chromium.launch(executable_path=chromium, headless=True, args=[
            "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--use-fake-device-for-media-stream",
            "--use-fake-ui-for-media-stream", f"--use-file-for-fake-audio-capture={wav}",
            "--autoplay-policy=no-user-gesture-required", "--allow-loopback-in-peer-connection",
            "--disable-features=WebRtcHideLocalIpsWithMdns"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1200})
            page.goto(url)
            page.get_by_role("tab", name="Call").click(timeout=60000)
            page.locator("#float-call-portrait input[type=file]").set_input_files(str(PORTRAIT))
            page.locator("#float-call-portrait img").wait_for(timeout=20000)
            if mode == "assistant":
                page.get_by_label("Assistant (talk with it)").check()
            page.locator("#float-call-start").click()
            page.wait_for_selector('#float-call-state[data-state="connected"]', timeout=120000)
            call = next(iter(manager.calls.values()))
            deadline = time.monotonic() + (seconds if mode == "puppet" else timeout)
            def answered() -> bool:  # the first answer frame is on the timeline
                answers = call.status()["answers"]
                return bool(answers) and answers[0].get("answer_latency_ms") is not None

            while time.monotonic() < deadline and (mode == "puppet" or not answered()):
                time.sleep(0.2)
            st = call.status()
            page.locator("#float-call-hangup").click()
        finally:
            browser.close()
            if stop_services is not None:
                stop_services()
    if mode == "puppet":
        return puppet_figures(st)
    return st["answers"][0] if st["answers"] else {"answer_latency_ms": None, "note": f"no answer within {timeout:g} s"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", nargs="+", default=list(BENCH_SIZES), choices=BENCH_SIZES)
    parser.add_argument("--modes", nargs="+", default=["puppet", "assistant"], choices=["puppet", "assistant"])
    parser.add_argument("--seconds", type=float, default=None,
                        help="puppet call length (default 12, official 40)")
    parser.add_argument("--nfe", type=int, default=10,
                        help="steps (the aiortc client; the browser uses the page's default, 10)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--client", default="aiortc", choices=["aiortc", "browser"],
                        help="who calls: the Python aiortc client, or the Call tab in headless Chromium")
    parser.add_argument("--json", action="store_true", help="print one JSON line per run")
    args = parser.parse_args(argv)
    import torch

    print(f"# call latency, {os.cpu_count()} CPUs ({cpu_name()}), torch threads {torch.get_num_threads()}, "
          f"load {os.getloadavg()[0]:.1f} (random weights; a shared machine is noisy)", flush=True)
    for size in args.sizes:
        pipe = FloatPipeline(random_model(size), device=args.device, dtype=args.dtype)
        url, manager, stop = serve_app(pipe) if args.client == "browser" else serve_routes(pipe)
        try:
            for mode in args.modes:
                t0 = time.perf_counter()
                seconds = args.seconds or (40.0 if size == "official" else 12.0)
                timeout = 180.0 if size == "official" else 30.0
                if args.client == "browser":
                    result = run_browser(url, manager, mode, seconds, timeout)
                elif mode == "puppet":
                    result = run_puppet(url, seconds, args.nfe)
                else:
                    result = run_assistant(url, timeout, args.nfe)
                row = {"size": size, "mode": mode, "client": args.client, "device": str(pipe.device),
                       "dtype": args.dtype,
                       "nfe": args.nfe, **result, "wall_s": round(time.perf_counter() - t0, 1)}
                print(json.dumps(row) if args.json else "  ".join(f"{k}={v}" for k, v in row.items()), flush=True)
        finally:
            stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
