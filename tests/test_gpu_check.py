"""benchmarks/gpu_check.py runs on the CPU in the suite, so the GPU check cannot rot.

Against itself the CPU must agree exactly (parity 0), the bf16 frames must be close to
float32 (finite, high PSNR), and every speed figure must be a positive finite number.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "gpu_check.py"


@pytest.fixture(scope="module")
def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def result(gpu_check):
    return gpu_check.run_checks("cpu", ("tiny",), seconds=0.5, frames=2, verbose=False)


def test_every_section_ran(result):
    assert result["errors"] == {}
    assert result["device"] == "cpu" and set(result["sizes"]) == {"tiny"}


def test_cpu_against_itself_is_exact(result):
    parity = result["sizes"]["tiny"]["parity"]
    assert parity == {"audio_features_max_abs": 0.0, "motion_max_abs": 0.0, "frames_max_abs": 0.0,
                      "frames_mean_abs": 0.0, "uint8_max_diff": 0, "uint8_fraction_differing": 0.0}


def test_low_precision_psnr(result):
    precision = result["sizes"]["tiny"]["precision"]
    bf16 = precision["bfloat16"]
    assert 40.0 < bf16["psnr_min_db"] <= bf16["psnr_mean_db"] < 200.0  # close, but not float32 itself
    # the whole bf16 pipeline adds the FMT's error to the decoder's
    assert 30.0 < bf16["pipeline_psnr_min_db"] <= bf16["pipeline_psnr_mean_db"] < 200.0
    assert bf16["stages"] == "bfloat16 decoder, float32 FMT and encoders"
    # with the FMT and encoders in float32 the motion is float32's: only the decoder's error
    assert bf16["pipeline_psnr_min_db"] == pytest.approx(bf16["psnr_min_db"], abs=1e-6)
    assert precision["bfloat16+fmt"]["stages"] == "bfloat16 decoder and FMT, float32 encoders"
    with_fmt = precision["bfloat16+fmt"]
    assert with_fmt["psnr_min_db"] == pytest.approx(bf16["psnr_min_db"], abs=1e-6)  # the same decoder
    assert with_fmt["pipeline_psnr_min_db"] != pytest.approx(with_fmt["psnr_min_db"], abs=1e-3)  # its own motion
    fp16 = precision["float16"]
    assert 40.0 < fp16["psnr_min_db"] <= fp16["psnr_mean_db"] < 200.0
    assert 30.0 < fp16["pipeline_psnr_min_db"] <= fp16["pipeline_psnr_mean_db"] < 200.0
    assert fp16["stages"] == "float16"


def test_speed_numbers_are_sane(result):
    speed = result["sizes"]["tiny"]["speed"]
    assert set(speed) == {"float32"}
    values = speed["float32"]
    assert set(values) == {"decode_fps", "fmt_s_per_window", "rtf", "first_frame_s", "peak_memory_gb"}
    assert all(math.isfinite(v) and v > 0 for v in values.values()), values


def test_report_names_every_number(gpu_check, result):
    text = gpu_check.format_report(result)
    for phrase in ("parity float32 cpu vs cpu", "frames max abs 0", "bfloat16: PSNR min", "decode fps",
                   "FMT s/window", "RTF", "first frame s", "peak mem GB", "all sections ran"):
        assert phrase in text
