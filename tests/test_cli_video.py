"""`python -m float_core drive`, `dub` and `generate --drive` with the tiny random model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import one_thread_module  # noqa: F401 - the fixture of pytestmark
import soundfile as sf

from float_core.cli import main
from float_core.config import FPS, SAMPLE_RATE
from float_core.media.video import probe_video

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
pytestmark = pytest.mark.usefixtures("one_thread_module")
VIDEO_FRAMES = 10
SPEECH_FRAMES = 18  #: longer than the video: played back and forth
MODEL = ["--checkpoint", "tiny-random", "-q"]


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, Path]:
    from PIL import Image

    from float_core.media.head_motion import write_head_motion_video
    from float_core.media.image import load_image

    root = tmp_path_factory.mktemp("cli_video")
    photo = np.asarray(Image.fromarray(load_image(EXAMPLES / "portrait_astronaut.png")).resize((160, 160)))
    t = np.arange(int(SPEECH_FRAMES / FPS * SAMPLE_RATE)) / SAMPLE_RATE
    speech = (0.3 * np.sin(2 * np.pi * 200 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))).astype(np.float32)
    write_head_motion_video(root / "face.mp4", photo, VIDEO_FRAMES, audio=(speech[:VIDEO_FRAMES * 640], SAMPLE_RATE),
                            preset="ultrafast")
    sf.write(root / "speech.wav", speech, SAMPLE_RATE)
    (root / "notes.mp4").write_text("not a video")
    return {"video": root / "face.mp4", "speech": root / "speech.wav", "notes": root / "notes.mp4",
            "image": EXAMPLES / "portrait_astronaut.png"}


def test_drive_writes_the_videos_length_and_sound(media, tmp_path, capsys):
    out = tmp_path / "drive.mp4"
    assert main(["drive", "--image", str(media["image"]), "--video", str(media["video"]), "--out", str(out),
                 *MODEL]) == 0
    info = probe_video(out)
    assert info["frames"] == VIDEO_FRAMES and info["audio_codec"] == "aac"
    assert info["audio_seconds"] == pytest.approx(VIDEO_FRAMES / FPS, abs=0.05)
    assert f"{VIDEO_FRAMES} frames" in capsys.readouterr().out


def test_dub_follows_the_speech_at_the_videos_resolution(media, tmp_path):
    out = tmp_path / "dub.mp4"
    assert main(["dub", "--video", str(media["video"]), "--audio", str(media["speech"]), "-o", str(out),
                 "--nfe", "1", "--seed", "0", "--groups", "head,eyes", *MODEL]) == 0
    info = probe_video(out)
    assert info["frames"] == SPEECH_FRAMES and (info["width"], info["height"]) == (160, 160)
    assert info["audio_seconds"] == pytest.approx(SPEECH_FRAMES / FPS, abs=0.05)


def test_generate_takes_the_head_from_a_video(media, tmp_path):
    out = tmp_path / "hybrid.mp4"
    assert main(["generate", "--image", str(media["image"]), "--audio", str(media["speech"]), "-o", str(out),
                 "--drive", str(media["video"]), "--drive-groups", "head,eyes", "--nfe", "1", "--seed", "0",
                 *MODEL]) == 0
    assert probe_video(out)["frames"] == SPEECH_FRAMES


def test_bad_inputs_are_one_line_errors_and_write_nothing(media, tmp_path, capsys):
    out = tmp_path / "out.mp4"
    cases = [
        (["drive", "--image", str(media["image"]), "--video", str(media["notes"]), "--out", str(out)], 1,
         "not a video that can be decoded"),
        (["dub", "--video", str(media["video"]), "--audio", str(media["speech"]), "--out", str(out),
          "--groups", "hair"], 1, "groups: expected names from mouth, eyes, head, other"),
        (["dub", "--video", str(tmp_path / "missing.mp4"), "--audio", str(media["speech"]), "--out", str(out)], 2,
         "--video: no such file"),
        (["generate", "--image", str(media["image"]), "--audio", str(media["speech"]), "-o", str(out),
          "--drive-groups", "head"], 2, "--drive-groups: needs --drive"),
    ]
    for argv, code, message in cases:
        assert main([*argv, *MODEL]) == code, argv
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, err
    assert not list(tmp_path.iterdir())


def test_help_says_what_each_mode_keeps_from_which_input(capsys):
    for command, phrases in (("drive", ["Kept from --image", "Taken from --video", "relative"]),
                             ("dub", ["Kept from --video", "Taken from --audio", "reference"]),
                             ("generate", ["--drive VIDEO", "--drive-groups"])):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        assert all(p in text for p in phrases), (command, text)
