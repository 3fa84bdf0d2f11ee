"""The Conversation tab's logic (float_studio.conversation_tab) without a server: limits, bad
input, the GPU budget, Stop (no video left behind) and a finished conversation with its plot.
The served endpoint is tested in test_app.py, the page in test_app_browser.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from float_core.config import SamplingConfig
from float_core.media.image import load_image
from float_core.media.video import probe_video
from float_core.pipeline import FloatPipeline
from float_studio import conversation_tab as ct
from float_studio import state as st
from float_studio.model import PipelineHolder
from helpers import one_torch_thread

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SAMPLING = SamplingConfig(nfe=1, seed=9)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    with one_torch_thread():
        yield


@pytest.fixture(scope="module")
def holder() -> PipelineHolder:
    pipe = FloatPipeline.tiny_random()
    return PipelineHolder(lambda: pipe)


@pytest.fixture(scope="module")
def photos() -> list[np.ndarray]:
    return [load_image(EXAMPLES / "portrait_astronaut.png"), load_image(EXAMPLES / "portrait_cameraman.png")]


@pytest.fixture(scope="module")
def recording(tmp_path_factory) -> str:
    """0.8 s of the example speech (20 frames)."""
    path = tmp_path_factory.mktemp("conv") / "a.wav"
    wave, rate = sf.read(EXAMPLES / "arctic_a0007.wav", dtype="float32")
    sf.write(path, wave[:int(0.8 * rate)], rate)
    return str(path)


def _run(holder, sess, photos, count=2, mode="Audio per character", script="", audios=(None, None), **kw):
    args = dict(names=["Ana", ""], voices=["", ""], layout="row", captions=True, crop=True, sampling=SAMPLING)
    args.update(kw)
    return ct.run_conversation(holder, sess, count, photos, args.pop("names"), mode, script, args.pop("voices"),
                               list(audios), **args)


@pytest.mark.parametrize("count, message", [(5, "at most 4 characters"), (1, "at least 2 characters"),
                                            ("many", "expected a number from 2 to 4")])
def test_the_app_takes_two_to_four_characters(holder, photos, count, message) -> None:
    with pytest.raises(ValueError, match=message):
        _run(holder, st.Session(), photos * 3, count=count)


def test_bad_input_is_a_clear_message(holder, photos, recording) -> None:
    sess = st.Session()
    with pytest.raises(ValueError, match="Add a portrait for character 2"):
        _run(holder, sess, [photos[0], None], audios=[recording, None])
    with pytest.raises(ValueError, match="script line 2: no speaker"):
        _run(holder, sess, photos, mode="Script", script="Ana: Hello.\nHow are you?")
    with pytest.raises(ValueError, match="Add a recording for at least one character"):
        _run(holder, sess, photos)
    with pytest.raises(ValueError, match=r"portrait 2 \(Ben\): no face"):
        _run(holder, sess, [photos[0], np.full((120, 120, 3), 90, np.uint8)], audios=[recording, None])
    assert sess.workdir is None or not list(Path(sess.workdir).glob("*.mp4"))


def test_gpu_budget_grows_with_the_length(recording, monkeypatch) -> None:
    """The GPU request is sized from every character's seconds of video, the script's lines at
    the slowest voice's rate (10 characters per second) plus gaps, within FLOAT_MAX_SECONDS."""
    monkeypatch.setenv("FLOAT_MAX_SECONDS", "60")
    script = "Ana: one two three four five\nBen: six seven eight nine ten"  # 23 + 24 characters
    assert ct.estimated_seconds("Script", script, []) == pytest.approx(4.7 + 2 * 0.3)
    assert ct.video_seconds(2, "Script", script, []) == pytest.approx(2 * 5.3)
    assert ct.video_seconds(3, "Audio per character", None, [recording, None, None]) == pytest.approx(3 * 0.8)
    assert ct.video_seconds(4, "Script", "Ana: " + "word " * 2000, []) == 4 * 60  # within the limit
    assert ct.video_seconds(2, "Script", "no speaker", []) == 0


def test_a_conversation_with_its_timeline_and_stop_leaves_nothing(holder, photos, recording) -> None:
    sess = st.Session()
    view = _run(holder, sess, photos, audios=[recording, None], layout="speaker")
    info = probe_video(view.path)
    assert info["frames"] == 20 and info["audio_codec"] == "aac"
    assert "**2 characters**, speaker layout" in view.summary and "seed **9**" in view.summary
    assert view.result.names == ("Ana", "Ben")  # an empty name takes the default
    rows = {trace.y[0] for trace in view.timeline.data if len(trace.y)}
    assert rows == {"Ana", "Large tile"}  # Ben never speaks: no bar in his row
    assert not view.result.speaking[1].any()

    def press_stop(stage: str, done: int, total: int) -> None:
        if stage == "sampling":
            sess.request_stop()

    with pytest.raises(st.Cancelled):
        _run(holder, sess, photos, audios=[recording, recording], progress=press_stop)
    assert list(Path(sess.workdir).iterdir()) == []  # the earlier video was replaced, the new one never made
