"""`python -m float_core generate` end to end with the tiny random model."""

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from float_core.cli import main
from float_core.media.video import probe_video

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.fixture
def speech(tmp_path) -> Path:
    """1.23 s of a voiced-like tone at 22.05 kHz stereo (exercises resampling and down-mixing)."""
    sr = 22050
    t = np.arange(int(1.23 * sr)) / sr
    tone = 0.3 * np.sin(2 * np.pi * 180 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 4 * t))
    path = tmp_path / "speech.wav"
    sf.write(path, np.stack([tone, 0.5 * tone], axis=1).astype(np.float32), sr)
    return path


def _frames_for(path: Path) -> int:
    seconds = sf.info(path).duration
    return math.ceil(round(seconds * 16000) * 25 / 16000)


def test_generate_writes_a_playable_mp4_with_audio(tmp_path, speech, capsys):
    out = tmp_path / "out.mp4"
    code = main(["generate", "--checkpoint", "tiny-random", "--image", str(EXAMPLES / "portrait_astronaut.png"),
                 "--audio", str(speech), "-o", str(out), "--seed", "0", "--nfe", "2", "-q"])
    assert code == 0
    info = probe_video(out)
    assert info["frames"] == _frames_for(speech) == 31
    assert info["fps"] == 25 and (info["width"], info["height"]) == (64, 64)
    assert info["video_codec"] == "h264" and info["pix_fmt"] == "yuv420p"
    assert info["audio_codec"] == "aac"
    assert info["audio_seconds"] == pytest.approx(31 / 25, abs=0.05)
    assert "31 frames" in capsys.readouterr().out


def test_paste_back_keeps_the_photo_size(tmp_path, speech):
    photo = np.asarray(Image.open(EXAMPLES / "portrait_astronaut.png").convert("RGB"))
    out = tmp_path / "paste.mp4"
    assert main(["generate", "--checkpoint", "tiny-random", "--image", str(EXAMPLES / "portrait_astronaut.png"),
                 "--audio", str(speech), "-o", str(out), "--nfe", "1", "--paste-back", "-q"]) == 0
    info = probe_video(out)
    assert (info["height"], info["width"]) == (photo.shape[0] // 2 * 2, photo.shape[1] // 2 * 2)


def test_a_failure_midway_leaves_no_file(tmp_path, speech, monkeypatch, capsys):
    from float_core.pipeline import FloatPipeline

    original = FloatPipeline.render

    def broken(self, *args, **kwargs):
        it = original(self, *args, **kwargs)
        yield next(it)
        raise ValueError("simulated failure after the first batch")

    monkeypatch.setattr(FloatPipeline, "render", broken)
    out = tmp_path / "broken.mp4"
    code = main(["generate", "--checkpoint", "tiny-random", "--image", str(EXAMPLES / "portrait_astronaut.png"),
                 "--audio", str(speech), "-o", str(out), "--nfe", "1", "--batch-size", "4", "-q"])
    assert code == 1
    assert not out.exists()
    assert list(tmp_path.glob("*.mp4")) == []  # no temporary left behind either
    assert "simulated failure" in capsys.readouterr().err


def test_batch_mode_skips_a_bad_job(tmp_path, speech, capsys):
    image = str(EXAMPLES / "portrait_astronaut.png")
    jobs = [
        {"image": image, "audio": str(speech), "output": str(tmp_path / "a.mp4"), "emotion": "happy"},
        {"image": image, "audio": str(tmp_path / "missing.wav"), "output": str(tmp_path / "b.mp4")},
        {"image": image, "audio": str(speech), "output": str(tmp_path / "c.mp4"), "crop": False, "nfe": 1},
    ]
    path = tmp_path / "jobs.json"
    path.write_text(json.dumps(jobs))
    code = main(["generate", "--checkpoint", "tiny-random", "--jobs", str(path), "--nfe", "1", "-q"])
    captured = capsys.readouterr()
    assert code == 1
    assert (tmp_path / "a.mp4").is_file() and (tmp_path / "c.mp4").is_file()
    assert not (tmp_path / "b.mp4").exists()
    assert "[2/3] error" in captured.err and "2 of 3 jobs done, 1 failed" in captured.out


def test_csv_jobs_and_argument_errors(tmp_path, speech, capsys):
    csv_path = tmp_path / "jobs.csv"
    csv_path.write_text(f"image,audio,output,solver\n{EXAMPLES / 'portrait_astronaut.png'},{speech},"
                        f"{tmp_path / 'x.mp4'},heun\n")
    assert main(["generate", "--checkpoint", "tiny-random", "--jobs", str(csv_path)]) == 2
    assert "solver: must be one of" in capsys.readouterr().err
    assert main(["generate", "--image", "a.png"]) == 2
    assert "missing --audio, --out" in capsys.readouterr().err


def test_module_entry_point_help():
    proc = subprocess.run([sys.executable, "-m", "float_core", "generate", "--help"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0
    for flag in ("--emotion", "--a-cfg", "--e-cfg", "--nfe", "--solver", "--seed", "--no-crop",
                 "--paste-back", "--device", "--dtype", "--jobs"):
        assert flag in proc.stdout
