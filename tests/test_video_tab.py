"""The Video tab's handlers (float_studio.video_tab) without a server, tiny random model: the three
modes, the side-by-side preview, the Studio's edits acting on the result, Stop and bad input.
(The served app: tests/test_app.py /drive and /dub; the page: tests/test_app_browser.py.)"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from helpers import one_thread_module  # noqa: F401 - the fixture of pytestmark
import torch

os.environ.setdefault("FLOAT_TEST_MODEL", "tiny-random")

from float_core.config import FPS, SAMPLE_RATE  # noqa: E402
from float_core.media.video import probe_video  # noqa: E402
from float_core.video_in import ping_pong  # noqa: E402
from float_studio import handlers as h  # noqa: E402
from float_studio import state as st  # noqa: E402
from float_studio import video_tab as vt  # noqa: E402
from float_studio.model import PipelineHolder  # noqa: E402

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
pytestmark = pytest.mark.usefixtures("one_thread_module")
VIDEO_FRAMES, SPEECH_FRAMES, SIDE = 12, 20, 160
SAMPLING = st.sampling_from_ui(2.0, 1.0, 2, "euler", "auto", 3)


@pytest.fixture(scope="module")
def pipe():
    from float_core.pipeline import FloatPipeline

    return FloatPipeline.tiny_random(device="cpu")


@pytest.fixture(scope="module")
def holder(pipe):
    return PipelineHolder(lambda: pipe)


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict:
    import soundfile as sf
    from PIL import Image

    from float_core.media.head_motion import write_head_motion_video
    from float_core.media.image import load_image

    root = tmp_path_factory.mktemp("video_tab")
    photo = np.asarray(Image.fromarray(load_image(EXAMPLES / "portrait_astronaut.png")).resize((SIDE, SIDE)))
    t = np.arange(int(SPEECH_FRAMES / FPS * SAMPLE_RATE)) / SAMPLE_RATE
    speech = (0.3 * np.sin(2 * np.pi * 200 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))).astype(np.float32)
    write_head_motion_video(root / "face.mp4", photo, VIDEO_FRAMES, amplitude=1.5, preset="ultrafast",
                            audio=(speech[:VIDEO_FRAMES * 640], SAMPLE_RATE))
    sf.write(root / "speech.wav", speech, SAMPLE_RATE)
    return {"video": str(root / "face.mp4"), "speech": str(root / "speech.wav"), "photo": photo,
            "portrait": np.asarray(Image.open(EXAMPLES / "portrait_astronaut.png").convert("RGB"))}


@pytest.fixture(scope="module")
def session():
    """One session through the modes (its caches keep each analysis once)."""
    sess = st.Session()
    yield sess
    sess.cleanup()


ZERO = h.Edits(np.zeros(20, np.float32))


def test_drive_renders_the_videos_length_and_sound_and_previews_side_by_side(holder, media, session):
    gen = vt.run(holder, session, "drive", media["video"], image=media["portrait"])
    assert isinstance(gen, vt.VideoGeneration) and session.current is gen
    assert gen.num_frames == VIDEO_FRAMES and gen.speech is None and gen.audio.shape == (VIDEO_FRAMES * 640,)
    frame = vt.preview(holder, session, 3, ZERO)
    assert frame.shape == (SIDE, SIDE + 8 + SIDE, 3)  # input | output, at the video's height
    with gen.video.reader() as reader:
        assert np.array_equal(frame[:, :SIDE], reader.frame(3))  # the left half is the driving frame
    rendered = vt.render(holder, session, None)
    info = probe_video(rendered.path)
    assert info["frames"] == VIDEO_FRAMES and info["audio_codec"] == "aac"
    assert "Drive" in vt.summary_markdown(gen, rendered.seconds)


def test_head_from_video_mixes_the_chosen_groups(holder, pipe, media, session):
    gen = vt.run(holder, session, "hybrid", media["video"], image=media["portrait"], speech_path=media["speech"],
                 groups=["eyes"], sampling=SAMPLING)
    assert gen.num_frames == SPEECH_FRAMES and gen.groups == ("eyes",)
    eyes = torch.tensor([d.group == "eyes" for d in gen.directions])
    assert eyes.any()  # the tiny model's astronaut has "eyes" directions
    index = ping_pong(VIDEO_FRAMES, SPEECH_FRAMES)
    video = gen.video.lambdas.numpy()
    relative = gen.source.source_lambda.numpy() + (video[index] - video[0])
    assert np.allclose(gen.lambdas[:, eyes.numpy()], relative[:, eyes.numpy()], atol=2e-5)
    # the speech-driven rest is the Studio's sampling of the same inputs and seed
    studio = h.sample_generation(pipe, session, 0, gen.source_key, gen.source, gen.speech_key, gen.speech, SAMPLING)
    assert np.allclose(gen.lambdas[:, ~eyes.numpy()], studio.lambdas[:, ~eyes.numpy()], atol=2e-5)
    assert "nothing of that" not in vt.summary_markdown(gen, 1.0)
    # this portrait has no "head" direction: the summary says so, and nothing comes from the video
    head = vt.run(holder, session, "hybrid", media["video"], image=media["portrait"], speech_path=media["speech"],
                  groups=["head"], sampling=SAMPLING)
    note = "mostly the head (describe_directions), so nothing of that comes from the video"
    assert note in vt.summary_markdown(head, 1.0)
    assert np.allclose(head.lambdas, studio.lambdas, atol=2e-5)


def test_dub_composites_into_the_video_and_the_studio_edits_act_on_it(holder, media, session):
    gen = vt.run(holder, session, "dub", media["video"], speech_path=media["speech"], sampling=SAMPLING)
    assert gen.num_frames == SPEECH_FRAMES and gen.groups == ("head", "eyes", "other")
    assert gen.source_key.endswith(":reference") and gen.video.reference == 0
    k = 15  # played back: video frame 7
    frame = vt.preview(holder, session, k, ZERO)
    right = frame[:, SIDE + 8:]
    with gen.video.reader() as reader:
        original = reader.frame(int(gen.index[k]))
    box = gen.video.crop_boxes[int(gen.index[k])]
    outside = np.ones((SIDE, SIDE), bool)
    outside[max(box.y0, 0):box.y1, max(box.x0, 0):box.x1] = False
    assert np.array_equal(right[outside], original[outside])  # the dub keeps the picture
    assert not np.array_equal(right[~outside], original[~outside])
    # the Studio's presets and curves apply to the dub's motion and reach its pixels
    h.describe_directions(holder, session)
    edits = h.Edits(np.zeros(20, np.float32), "more expressive", h.curves_from_rows(
        [{"direction": 2, "kind": "constant", "value": 3.0}]))
    gen = session.current
    offsets = h.edit_offsets(gen, edits)
    factor = np.array([0.5 if d.group in ("mouth", "eyes") else 0.0 for d in gen.directions], np.float32)
    expected = factor * (gen.lambdas - gen.source.source_lambda.numpy())  # "more expressive": x1.5 mouth, eyes
    expected[:, 1] += 3.0  # the curve on λ2
    assert np.allclose(offsets, expected, atol=1e-5)
    edited = vt.preview(holder, session, k, edits)
    assert not np.array_equal(edited, frame)
    rendered = vt.render(holder, session, edits)
    info = probe_video(rendered.path)
    assert info["frames"] == SPEECH_FRAMES and (info["width"], info["height"]) == (SIDE, SIDE)
    assert info["audio_seconds"] == pytest.approx(SPEECH_FRAMES / FPS, abs=0.05)


def test_missing_inputs_limits_and_stop_are_messages_and_keep_the_last_result(holder, media, session,
                                                                               monkeypatch):
    before = session.current
    with monkeypatch.context() as mp:  # the server's limit applies to the video, from its header
        mp.setenv("FLOAT_MAX_SECONDS", "0.4")
        with pytest.raises(ValueError, match=r"The video is 0\.5 s long; this server accepts at most 0\.4 s"):
            vt.run(holder, session, "drive", media["video"], image=media["portrait"])
    with pytest.raises(ValueError, match="add a video"):
        vt.run(holder, session, "drive", None, image=media["portrait"])
    with pytest.raises(ValueError, match="portrait"):
        vt.run(holder, session, "hybrid", media["video"], speech_path=media["speech"], sampling=SAMPLING)
    with pytest.raises(ValueError, match="speech"):
        vt.run(holder, session, "dub", media["video"], sampling=SAMPLING)
    with pytest.raises(ValueError, match="groups"):
        vt.run(holder, session, "hybrid", media["video"], image=media["portrait"], speech_path=media["speech"],
               groups=["hair"], sampling=SAMPLING)

    def stop_now(stage: str, done: int, total: int) -> None:
        session.request_stop()

    fresh = SAMPLING.replace(seed=11)  # not cached: sampling runs and reports
    with pytest.raises(st.Cancelled):
        vt.run(holder, session, "dub", media["video"], speech_path=media["speech"], sampling=fresh,
               progress=stop_now)
    assert session.current is before  # nothing half-made was installed
