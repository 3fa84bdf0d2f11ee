"""The ``float-studio`` command line: sampling flags build one SamplingConfig; face choice and
crop scale; sub-command registry."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from float_core import cli, cli_options
from float_core.batch import JobSettings, parse_settings
from float_core.config import SamplingConfig


def _parse(*argv: str) -> argparse.Namespace:
    return cli.build_parser().parse_args(["generate", *argv])


def test_flags_not_given_keep_the_samplingconfig_defaults():
    assert cli_options.sampling_from_args(_parse()) == SamplingConfig()
    args = _parse("--a-cfg", "3", "--nfe", "4", "--solver", "rk4", "--emotion", "dynamic", "--seed", "7")
    assert cli_options.sampling_from_args(args) == SamplingConfig(a_cfg=3.0, nfe=4, solver="rk4",
                                                                  emotion="dynamic", seed=7)
    with pytest.raises(ValueError, match="nfe"):
        cli_options.sampling_from_args(_parse("--nfe", "0"))


def test_settings_carry_a_samplingconfig_face_crop_scale_and_preset():
    args = _parse("--image", "a.png", "--audio", "b.wav", "-o", "c.mp4", "--e-cfg", "2", "--face", "2",
                  "--crop-scale", "2.0", "--preset", "Lips-Only")
    flags = parse_settings(cli_options.settings_from_args(args))
    assert flags == JobSettings(SamplingConfig(e_cfg=2.0), face=1, crop_scale=2.0, preset="lips only")
    row = parse_settings({"crop": "true", "paste_back": "0", "nfe": "3", "seed": "", "emotion": "Happy", "face": "1"})
    assert row == JobSettings(SamplingConfig(nfe=3, emotion="happy"), crop=True, paste_back=False, face=0)
    # a job's fields override the command line's, fields it leaves out keep them
    assert parse_settings({"nfe": 5, "preset": "none"}, flags) == JobSettings(
        SamplingConfig(e_cfg=2.0, nfe=5), face=1, crop_scale=2.0, preset=None)
    for bad, message in (({"face": "0"}, "face: 1 is the largest"), ({"crop_scale": "9"}, "crop scale must be"),
                         ({"nfe": "2.5"}, "nfe: expected a whole number"), ({"crop": "maybe"}, "crop: expected"),
                         ({"preset": "no head"}, "preset: expected one of"),
                         ({"crop": False, "paste_back": True}, "paste_back: needs crop")):
        with pytest.raises(ValueError, match=message):
            parse_settings(bad)


def test_generate_with_the_second_face_and_a_wider_crop(tmp_path, monkeypatch):
    """Two faces side by side: --face 2 --crop-scale 2 animates the smaller one, wider."""
    import numpy as np
    import soundfile as sf
    from PIL import Image

    from float_core.media.image import load_image
    from float_core.pipeline import FloatPipeline

    root = Path(__file__).resolve().parent.parent
    face = load_image(root / "examples" / "portrait_astronaut.png")[30:230, 130:320]
    canvas = np.full((400, 700, 3), 128, np.uint8)
    canvas[20:220, 20:210] = face
    canvas[50:350, 300:585] = np.asarray(Image.fromarray(face).resize((285, 300)))
    Image.fromarray(canvas).save(tmp_path / "two.png")
    sf.write(tmp_path / "s.wav", (0.3 * np.sin(np.arange(8000) / 8)).astype(np.float32), 16000)
    seen = []
    original = FloatPipeline.prepare_image

    def spy(self, image, crop=True, **kwargs):
        out = original(self, image, crop, **kwargs)
        seen.append((kwargs, out.crop_box))
        return out

    monkeypatch.setattr(FloatPipeline, "prepare_image", spy)
    code = cli.main(["generate", "--checkpoint", "tiny-random", "--image", str(tmp_path / "two.png"), "--audio",
                     str(tmp_path / "s.wav"), "-o", str(tmp_path / "o.mp4"), "--nfe", "1", "--face", "2",
                     "--crop-scale", "2", "-q"])
    assert code == 0 and (tmp_path / "o.mp4").is_file()
    (kwargs, box), = seen
    assert kwargs == {"face": 1, "crop_scale": 2.0}
    assert box.x0 + box.size / 2 < 250  # the left, smaller face


def test_training_sample_videos_use_a_samplingconfig(tmp_path, monkeypatch):
    from float_core.pipeline import FloatPipeline
    from float_core.train import stage2

    config = stage2.Stage2Config(data=str(tmp_path), out=str(tmp_path / "run"), sample_nfe=3)
    assert config.sample_sampling == SamplingConfig(nfe=3, seed=0)
    seen = []
    monkeypatch.setattr(FloatPipeline, "generate", lambda self, image, audio, out, sampling=None, **kw:
                        seen.append((sampling, kw)))
    model = FloatPipeline.tiny_random().model
    assert stage2.sample_video(model, config, tmp_path / "s.mp4", "cpu") == tmp_path / "s.mp4"
    assert seen == [(SamplingConfig(nfe=3, seed=0), {"progress": False})]
