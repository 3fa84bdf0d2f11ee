"""`python -m float_core converse` with the tiny random model: a script with voices, a
multi-channel file, --help, and bad arguments as clear errors (exit 2, nothing written)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from float_core.cli import build_parser, main
from float_core.media.video import probe_video
from helpers import one_torch_thread

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
IMAGES = ["--image", str(EXAMPLES / "portrait_astronaut.png"), "--image", str(EXAMPLES / "portrait_cameraman.png")]
MODEL = ["--checkpoint", "tiny-random", "--nfe", "1", "-q"]


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    with one_torch_thread():
        yield


def test_help_lists_the_command_and_its_flags(capsys) -> None:
    assert "converse" in build_parser().format_help()
    with pytest.raises(SystemExit) as done:
        main(["converse", "--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--image", "--audio", "--script", "--voice NAME=SPEC", "--names", "--layout {row,grid,speaker}",
                 "--out", "--no-captions", "--seed"):
        assert flag in text, flag


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")
def test_a_script_with_voices_becomes_one_video(tmp_path, capsys) -> None:
    script = tmp_path / "dialogue.txt"
    script.write_text("Ana: Hi Ben.\nBen: Hi.\n", encoding="utf-8")
    out = tmp_path / "talk.mp4"
    code = main(["converse", *IMAGES, "--script", str(script), "--voice", "Ben=espeak:en-gb+m3", "--names", "Ana,Ben",
                 "--layout", "grid", "--out", str(out), "--seed", "4", *MODEL])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "Ana: Hi Ben." in printed and "Ben: Hi." in printed and "seed 4" in printed
    info = probe_video(out)
    assert (info["width"], info["height"]) == (128, 78) and info["audio_codec"] == "aac"
    assert f"{info['frames']} frames" in printed


def test_a_stereo_file_gives_each_portrait_a_channel(tmp_path, capsys) -> None:
    t = np.arange(9600) / 16000
    stereo = np.stack([0.3 * np.sin(2 * np.pi * 200 * t), np.zeros_like(t)], axis=1).astype(np.float32)
    sf.write(tmp_path / "two.wav", stereo, 16000)
    out = tmp_path / "two.mp4"
    assert main(["converse", *IMAGES, "--audio", str(tmp_path / "two.wav"), "-o", str(out), *MODEL]) == 0
    assert probe_video(out)["frames"] == 15
    assert "Character 2 0%" in capsys.readouterr().out  # the silent channel's character never speaks


@pytest.mark.parametrize("extra, message", [
    (["--audio", "a.wav", "--script", "s.txt"], "give either --audio"),
    (["--script", "{script}", "--voice", "Ana"], "--voice 'Ana': expected NAME=SPEC"),
    (["--script", "{bad}"], "script line 2: no speaker"),
    (["--audio", "{wav}", "--audio", "{wav}", "--audio", "{wav}"], "2 portraits but 3 speech tracks"),
    (["--audio", "{wav}", "--audio", "silent", "--layout", "speaker", "--tile-size", "15"], "tile size"),
])
def test_bad_arguments_are_clear_errors(tmp_path, capsys, extra, message) -> None:
    (tmp_path / "s.txt").write_text("Ana: Hi.\n", encoding="utf-8")
    (tmp_path / "bad.txt").write_text("Ana: Hi.\nHello\n", encoding="utf-8")
    sf.write(tmp_path / "a.wav", np.zeros(1600, np.float32), 16000)
    fill = {"{script}": str(tmp_path / "s.txt"), "{bad}": str(tmp_path / "bad.txt"), "{wav}": str(tmp_path / "a.wav")}
    out = tmp_path / "out.mp4"
    code = main(["converse", *IMAGES, *[fill.get(a, a) for a in extra], "--out", str(out), *MODEL])
    assert code == 2 and message in capsys.readouterr().err
    assert not out.exists()
