"""`python -m float_core stream` end to end with the tiny random model."""

from __future__ import annotations

import io
import math
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from float_core.cli import main
from float_core.media.audio import load_audio
from float_core.media.video import probe_video

ROOT = Path(__file__).resolve().parents[1]
PORTRAIT = ROOT / "examples" / "portrait_astronaut.png"
SPEECH = ROOT / "examples" / "arctic_a0007.wav"


def pcm(seconds: float) -> bytes:
    wave = load_audio(SPEECH, target_rate=16000)[:int(seconds * 16000)]
    return (np.clip(wave, -1, 1) * 32767).astype("<i2").tobytes()


def test_stdin_pcm_writes_a_valid_mp4_and_hls(tmp_path, monkeypatch, capsys) -> None:
    data = pcm(2.0) + b"\x01"  # an odd trailing byte (a cut mid-sample) is ignored
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))
    out = tmp_path / "live.mp4"
    code = main(["stream", "--checkpoint", "tiny-random", "--image", str(PORTRAIT), "--audio", "-",
                 "--out", str(out), "--hls", str(tmp_path / "hls"), "--seed", "0", "--nfe", "2", "-q"])
    assert code == 0
    frames = math.ceil((len(data) // 2) * 25 / 16000)
    for path in (out, tmp_path / "hls" / "stream.m3u8"):
        info = probe_video(path)
        assert info["frames"] == frames == 50
        assert info["video_codec"] == "h264" and info["audio_codec"] == "aac"
        assert info["audio_seconds"] == pytest.approx(2.0, abs=0.15)  # AAC at 16 kHz: 64 ms frames, priming
    assert "#EXT-X-ENDLIST" in (tmp_path / "hls" / "stream.m3u8").read_text()
    printed = capsys.readouterr().out
    assert "50 frames" in printed and "time to first frame" in printed and "real-time factor" in printed


def test_file_input_and_errors(tmp_path, capsys) -> None:
    out = tmp_path / "file.mp4"
    assert main(["stream", "--checkpoint", "tiny-random", "--image", str(PORTRAIT), "--audio", str(SPEECH),
                 "--out", str(out), "--no-idle", "--nfe", "1", "-q"]) == 0
    assert probe_video(out)["frames"] == 100
    assert main(["stream", "--checkpoint", "tiny-random", "--image", str(PORTRAIT), "--audio", "nope.wav",
                 "--out", str(out)]) == 2
    assert "no such file: nope.wav" in capsys.readouterr().err


def test_the_mp4_is_valid_when_the_process_is_killed(tmp_path) -> None:
    out = tmp_path / "killed.mp4"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "float_core", "stream", "--checkpoint", "tiny-random", "--image", str(PORTRAIT),
         "--audio", "-", "--out", str(out), "--nfe", "1", "--seed", "0", "-q"],
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, cwd=ROOT)
    data = pcm(4.0)
    stop = threading.Event()

    def feed() -> None:  # 100 ms of PCM every 100 ms, then keep the pipe open (a live source)
        try:
            for i in range(0, len(data), 3200):
                if stop.is_set():
                    return
                proc.stdin.write(data[i:i + 3200])
                proc.stdin.flush()
                time.sleep(0.1)
        except (BrokenPipeError, OSError):
            pass

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    try:
        deadline = time.monotonic() + 120
        frames = 0
        while time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.5)
            if out.exists() and out.stat().st_size > 2000:
                try:
                    frames = probe_video(out)["frames"]
                except Exception:  # noqa: BLE001 - no complete fragment yet
                    frames = 0
                if frames >= 25:
                    break
        assert proc.poll() is None, proc.stderr.read().decode()
        assert frames >= 25, "no fragment was written within the deadline"
        proc.send_signal(signal.SIGKILL)  # no clean-up at all
        proc.wait(10)
    finally:
        stop.set()
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    info = probe_video(out)
    assert info["frames"] >= 25 and info["video_codec"] == "h264" and info["audio_codec"] == "aac"
    assert info["audio_seconds"] == pytest.approx(info["frames"] / 25, abs=0.2)
