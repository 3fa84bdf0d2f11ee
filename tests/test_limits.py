"""Bounded work per visitor (float_studio.limits), honest speed (float_studio.speed), GPU request
durations (float_studio.gpu) and the one-line load failure: plain functions, no model."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from float_studio import gpu, limits
from float_studio.speed import Throughput, realtime_note

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "arctic_a0007.wav"  # 4.0 s


@pytest.fixture(autouse=True)
def _defaults(monkeypatch):
    for name in (limits.MAX_SECONDS_ENV, limits.MAX_LIVE_SECONDS_ENV, limits.MAX_UPLOAD_MB_ENV,
                 gpu.MARGIN_ENV, gpu.FIGURE_ENV, gpu.ZERO_GPU_ENV):
        monkeypatch.delenv(name, raising=False)


def test_each_limit_reads_its_variable(monkeypatch):
    assert (limits.max_speech_seconds(), limits.max_live_seconds(), limits.max_upload_bytes()) == (60, 300, 50 * 2**20)
    monkeypatch.setenv("FLOAT_MAX_SECONDS", "12.5")
    monkeypatch.setenv("FLOAT_MAX_LIVE_SECONDS", "0")  # no limit
    monkeypatch.setenv("FLOAT_MAX_UPLOAD_MB", "lots")  # not a number: the default, with a warning
    assert (limits.max_speech_seconds(), limits.max_live_seconds(), limits.max_upload_bytes()) == (12.5, None, 50 * 2**20)
    assert "12.5 s" in limits.limits_markdown() and "min" not in limits.limits_markdown()


def test_speech_is_measured_from_the_header_and_refused_with_the_limit_named(monkeypatch):
    assert limits.speech_seconds(str(EXAMPLE)) == pytest.approx(4.0)
    assert limits.speech_seconds(np.zeros(8000, np.float32)) == 0.5 and limits.speech_seconds(None) == 0.0
    monkeypatch.setenv("FLOAT_MAX_SECONDS", "3")
    with pytest.raises(limits.LimitError, match=r"The speech is 4\.0 s long; this server accepts at most 3 s "
                                                r"\(FLOAT_MAX_SECONDS\)"):
        limits.check_speech(str(EXAMPLE))
    assert limits.limited_speech_seconds(str(EXAMPLE)) == 3.0  # the most work such a request causes


def test_text_is_refused_before_synthesis_only_when_clearly_too_long(monkeypatch):
    monkeypatch.setenv("FLOAT_MAX_SECONDS", "10")
    assert limits.check_text("x" * 250) == pytest.approx(250 / 15)  # 10 s even at 25 characters/s: allowed
    with pytest.raises(limits.LimitError, match=r"251 characters.*at most 10 s of speech \(FLOAT_MAX_SECONDS\)"):
        limits.check_text("x" * 251)
    assert limits.max_text_chars() == 250


def test_the_countdown_covers_the_last_30_seconds():
    assert limits.countdown_note(269.0, 300) == ""
    assert limits.countdown_note(270.5, 300).startswith("ends in 30 s") and "FLOAT_MAX_LIVE_SECONDS" in \
        limits.countdown_note(299.2, 300)
    assert limits.countdown_note(1e6, None) == ""


def test_gpu_requests_are_margin_plus_seconds_times_the_device_figure(monkeypatch):
    assert gpu.gpu_seconds(3.7, "cuda") == 24 and gpu.gpu_seconds(3.7, "cpu") == 50  # ceil(20 + 3.7 x 1 / x 8)
    monkeypatch.setenv("FLOAT_GPU_MARGIN_SECONDS", "5")
    monkeypatch.setenv("FLOAT_GPU_SECONDS_PER_AUDIO_SECOND", "2")
    assert gpu.gpu_seconds(3.7, "cuda") == 13
    assert not gpu.on_zero_gpu()
    handler = gpu.gpu_handler(Throughput(), lambda speech, **_: 1.0)(lambda speech: speech)
    assert handler("x") == "x" and not hasattr(handler, "__wrapped__")  # off ZeroGPU: unchanged
    monkeypatch.setenv("SPACES_ZERO_GPU", "true")
    assert gpu.on_zero_gpu() and "T4, L4, A10G, L40S or A100" in gpu.dedicated_gpu_message("A call")


def test_estimates_are_rough_until_measured_then_follow_the_steps():
    speed = Throughput("cpu")
    assert speed.estimate(3.7) == ("about 30 s for this 3.7 s clip on this CPU (a rough figure until the first "
                                   "generation here is measured)")  # 3.7 x 8
    speed.record_sampling(2.0, 4.0, nfe=10)  # 0.2 s per audio second per evaluation
    speed.record_rendering(2.0, 3.0)  # 1.5 s per audio second
    assert speed.measured and speed.seconds_for(3.7, nfe=10) == pytest.approx(3.7 * 3.5)
    assert speed.estimate(3.7, nfe=5) == "about 9 s for this 3.7 s clip on this CPU"  # 3.7 x (1 + 1.5)
    speed.use_device("cuda:0")
    assert not speed.measured and speed.label == "this GPU" and speed.default_figure == 1.0


def test_a_rate_below_real_time_says_what_delay_to_expect():
    assert realtime_note(24.0, 100, live=True) == ""  # within 5 % of 25 fps
    assert realtime_note(5.0, 10, live=True) == ""  # not judged before a second of video
    live = realtime_note(5.0, 100, live=True)
    assert "5.0 fps, below real time (25 fps)" in live and "about 4.0 s per second of speech" in live
    assert "each second of speech takes about 5.0 s" in realtime_note(5.0, 100, live=False)


def test_missing_weights_log_one_error_line_with_what_to_do(tmp_path, monkeypatch, caplog):
    from float_studio.model import PipelineHolder

    monkeypatch.setenv("FLOAT_CHECKPOINT_DIR", str(tmp_path))
    monkeypatch.setenv("FLOAT_AUTO_DOWNLOAD", "0")
    monkeypatch.delenv("FLOAT_TEST_MODEL", raising=False)
    with caplog.at_level(logging.DEBUG, logger="float_studio"):
        assert not PipelineHolder().available()
    errors = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(errors) == 1 and errors[0].levelno == logging.ERROR and "\n" not in errors[0].getMessage()
    assert "python -m float_core download" in errors[0].getMessage() and str(tmp_path) in errors[0].getMessage()
    assert errors[0].exc_info is None
    assert any(r.levelno == logging.DEBUG and r.exc_info for r in caplog.records)  # the traceback, at DEBUG
