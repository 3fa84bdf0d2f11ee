"""FLOAT Studio app: pure logic (float_studio.state) and the served app through gradio_client.

Everything runs on the tiny random model (FLOAT_TEST_MODEL=tiny-random, 64x64 frames).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("FLOAT_TEST_MODEL", "tiny-random")

from float_studio import plots  # noqa: E402
from float_studio import state as st  # noqa: E402
from float_core.config import EMOTIONS  # noqa: E402


# ============================================================================ fixtures
@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, Path]:
    """Two synthetic portraits (PNG) and two 1.3 s speech-like WAVs (16 kHz)."""
    import soundfile as sf
    from PIL import Image

    root = tmp_path_factory.mktemp("media")
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (96, 80, 3), dtype=np.uint8)
    Image.fromarray(image).save(root / "portrait.png")
    Image.fromarray(rng.integers(0, 256, (72, 72, 3), dtype=np.uint8)).save(root / "portrait_b.png")
    t = np.arange(int(1.3 * 16000)) / 16000
    for name, f0 in (("speech_a.wav", 220.0), ("speech_b.wav", 330.0)):
        wave = 0.3 * np.sin(2 * np.pi * f0 * t) * (1 + np.sin(2 * np.pi * 3 * t))
        sf.write(root / name, wave.astype(np.float32), 16000)
    return {"image": root / "portrait.png", "image_b": root / "portrait_b.png", "audio": root / "speech_a.wav",
            "audio_b": root / "speech_b.wav", "array": image}


@pytest.fixture(scope="module")
def pipe():
    from float_core.pipeline import FloatPipeline

    return FloatPipeline.from_pretrained("tiny-random", device="cpu")


@pytest.fixture()
def generated(pipe, media):
    """A session that has prepared the inputs and sampled motion (crop off: no face in noise)."""
    sess = st.Session()
    st.prepare_cached(pipe, sess, media["array"], str(media["audio"]), crop=False)
    st.sample_cached(pipe, sess, st.SamplingSettings(nfe=2, seed=3))
    yield sess
    sess.cleanup()


# ============================================================================ pure logic
def test_settings_validation_names_the_setting():
    ok = st.SamplingSettings.from_ui(2, 1, 10, "RK4", "Happy", 5)
    assert ok == st.SamplingSettings(a_cfg=2.0, e_cfg=1.0, nfe=10, solver="rk4", emotion="happy", seed=5)
    assert st.SamplingSettings.from_ui(5, 10, 50, "euler", "auto", 0).a_cfg == 5.0  # the ranges' ends
    for args, word in [((5.5, 1, 10, "euler", "auto", 0), "Audio guidance"),
                       ((2, 10.5, 10, "euler", "auto", 0), "Emotion guidance"),
                       ((2, 1, 51, "euler", "auto", 0), "NFE"),
                       ((2, -1, 10, "euler", "auto", 0), "Emotion guidance"),
                       ((2, 1, 0, "euler", "auto", 0), "NFE"), ((2, 1, 2.5, "euler", "auto", 0), "whole"),
                       ((2, 1, 10, "heun", "auto", 0), "Solver"), ((2, 1, 10, "euler", "bored", 0), "Emotion"),
                       ((2, 1, 10, "euler", "auto", "x"), "Seed"), ((float("nan"), 1, 10, "euler", "auto", 0), "Audio")]:
        with pytest.raises(ValueError, match=word):
            st.SamplingSettings.from_ui(*args)


def test_negative_seed_draws_a_random_seed():
    seeds = {st.SamplingSettings.from_ui(2, 1, 10, "euler", "auto", -1).seed for _ in range(4)}
    assert all(0 <= s < st.MAX_SEED for s in seeds) and len(seeds) > 1


def test_nice_ceil_and_slider_ranges():
    assert [plots.nice_ceil(x) for x in (0.7, 1.0, 1.3, 2.2, 3.0, 0.0042, 730)] == [1, 1, 2, 2.5, 5, 0.005, 1000]
    with pytest.raises(ValueError):
        plots.nice_ceil(0)
    rng = np.random.default_rng(1)
    lam = rng.standard_normal((40, 3)) * np.array([0.1, 1.0, 0.0])
    ranges = plots.slider_ranges(lam)
    spread = lam.max(0) - lam.min(0)
    assert ranges[0] >= spread[0] and ranges[1] >= spread[1]  # the clip's own variation fits
    assert ranges[1] > ranges[0] > ranges[2] > 0  # a constant direction still gets a usable slider
    assert ranges[1] <= 2.5 * max(3 * lam[:, 1].std(), spread[1])  # not absurdly wide
    assert plots.most_active_directions(lam, 2) == [1, 0]


def test_offsets_array_validates():
    assert st.offsets_array([0, None, "", 1.5], 4).tolist() == [0, 0, 0, 1.5]
    with pytest.raises(ValueError, match="expected 4"):
        st.offsets_array([0, 1], 4)
    with pytest.raises(ValueError, match="finite"):
        st.offsets_array([0, float("inf")], 2)


def test_lambda_figure_shows_active_directions_edits_and_frame_marker():
    lam = np.zeros((25, 6))
    lam[:, 4] = np.linspace(-1, 1, 25)
    lam[:, 1] = np.linspace(0, 0.5, 25)
    fig = plots.lambda_figure(lam, fps=25.0, frame_index=5, offsets=np.array([0, 0, 0, 0.3, 0, 0]), visible=2)
    names = [t.name for t in fig.data]
    assert names == ["λ1", "λ2", "λ3", "λ4", "λ4 edited", "λ5", "λ6"]
    visible = [t.name for t in fig.data if t.visible is True]
    assert visible == ["λ2", "λ5"]
    edited = fig.data[4]
    assert np.allclose(edited.y, lam[:, 3] + 0.3) and edited.line.dash == "dash"
    assert fig.layout.shapes[0].x0 == pytest.approx(0.2)  # frame 5 at 25 fps


def test_emotion_figure_highlights_the_emotion_in_use():
    probs = np.array([0.05, 0.1, 0.05, 0.2, 0.4, 0.1, 0.1])
    auto = plots.emotion_figure(probs, "auto")
    assert len(auto.data) == 1 and list(auto.data[0].x) == [e.capitalize() for e in EMOTIONS]
    assert np.allclose(auto.data[0].y, probs)
    colors = list(auto.data[0].marker.color)
    assert colors[EMOTIONS.index("neutral")] == plots.EMOTION_HIGHLIGHT and colors.count(plots.EMOTION_HIGHLIGHT) == 1
    assert "Neutral (from the speech)" in auto.layout.title.text
    redirected = plots.emotion_figure(probs, "sad")
    assert list(redirected.data[0].marker.color).index(plots.EMOTION_HIGHLIGHT) == EMOTIONS.index("sad")
    assert "Sad (redirected)" in redirected.layout.title.text
    assert np.allclose(st.emotion_vector(probs, "sad"), np.eye(7)[EMOTIONS.index("sad")])
    with pytest.raises(ValueError, match="Emotion"):
        st.emotion_vector(probs, "bored")
    with pytest.raises(ValueError, match="7 values"):
        plots.emotion_figure(probs[:3])


def test_crop_preview_draws_the_box_and_returns_the_512_crop():
    from float_core.media.image import load_image

    photo = load_image(Path(__file__).resolve().parent.parent / "examples" / "portrait_astronaut.png")
    boxed, crop, message = st.crop_preview(photo, True, 512)
    assert crop.shape == (512, 512, 3) and boxed.shape == photo.shape
    assert (boxed != photo).any() and "face" in message  # the box is drawn on a copy
    whole, resized, note = st.crop_preview(photo, False, 512)
    assert np.array_equal(whole, photo) and resized.shape == (512, 512, 3) and "off" in note
    assert np.abs(crop.astype(int) - resized.astype(int)).mean() > 5  # a real crop, not the whole photo
    assert st.crop_preview(None, True, 512) == (None, None, "")


def test_user_messages_never_carry_a_traceback():
    assert st.user_message(ValueError("audio: too long")) == "audio: too long"
    msg = st.user_message(KeyError("w"))
    assert "KeyError" in msg and "server log" in msg and "Traceback" not in msg


def test_content_keys(tmp_path):
    a = np.zeros((4, 4, 3), np.uint8)
    b = a.copy()
    b[0, 0, 0] = 1
    assert st.image_key(a) == st.image_key(a.copy()) != st.image_key(b)
    assert st.image_key(a) != st.image_key(a.reshape(4, 12, 1))
    (tmp_path / "x").write_bytes(b"abc")
    (tmp_path / "y").write_bytes(b"abc")
    (tmp_path / "z").write_bytes(b"abd")
    assert st.file_key(tmp_path / "x") == st.file_key(tmp_path / "y") != st.file_key(tmp_path / "z")


def test_session_keeps_one_video_and_cleans_up():
    sess = st.Session()
    first = sess.new_video_path("v")
    first.write_bytes(b"x")
    sess.video_path = str(first)
    second = sess.new_video_path("v")
    assert not first.exists() and second != first and second.parent == first.parent
    st.cleanup_session(sess)
    assert not first.parent.exists() and sess.workdir is None


def test_pipeline_holder_loads_once_and_reports_failures():
    calls = []

    def good():
        calls.append(1)
        return "PIPE"

    holder = st.PipelineHolder(good)
    threads = [threading.Thread(target=holder.get) for _ in range(4)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert holder.get() == "PIPE" and len(calls) == 1

    def bad():
        raise FileNotFoundError("checkpoints/float.pth not found")

    broken = st.PipelineHolder(bad)
    with pytest.raises(RuntimeError, match="float.pth not found"):
        broken.get()
    banner = broken.status_markdown()
    assert "float.pth not found" in banner and "FLOAT_TEST_MODEL=tiny-random" in banner


def test_missing_weights_are_downloaded_at_start_up(monkeypatch, tmp_path):
    import float_core.weights as weights

    root = tmp_path / "ckpt"
    calls = []

    def fake_download(repo_id=None, local_dir="checkpoints", token=None):
        calls.append(Path(local_dir))
        (Path(local_dir) / "float.pth").parent.mkdir(parents=True, exist_ok=True)
        (Path(local_dir) / "float.pth").write_bytes(b"x")
        return Path(local_dir)

    monkeypatch.setattr(weights, "download_weights", fake_download)
    assert st.ensure_weights(root) == root and calls == [root]
    assert st.ensure_weights(root) == root and calls == [root]  # present now: no second download
    monkeypatch.setenv(st.AUTO_DOWNLOAD_ENV, "0")
    with pytest.raises(weights.WeightsError, match="automatic download is off"):
        st.ensure_weights(tmp_path / "other")
    assert calls == [root]


def test_offline_start_up_fails_fast_and_the_banner_says_what_and_where(monkeypatch, tmp_path):
    import time

    monkeypatch.delenv("FLOAT_TEST_MODEL", raising=False)
    monkeypatch.setenv("FLOAT_CHECKPOINT_DIR", str(tmp_path / "ckpt"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    holder = st.PipelineHolder()
    t0 = time.perf_counter()
    assert not holder.available()
    assert time.perf_counter() - t0 < 10
    banner = holder.status_markdown()
    assert "generation is disabled" in banner
    for part in ("float.pth", "wav2vec2-base-960h", "wav2vec-english-speech-emotion-recognition"):
        assert str(tmp_path / "ckpt" / part) in banner  # exactly where each file goes
    assert "offline" in banner and "FLOAT_TEST_MODEL=tiny-random" in banner


def test_max_audio_seconds(monkeypatch):
    monkeypatch.delenv("FLOAT_MAX_SECONDS", raising=False)
    assert st.max_audio_seconds() == st.DEFAULT_MAX_SECONDS
    monkeypatch.setenv("FLOAT_MAX_SECONDS", "12.5")
    assert st.max_audio_seconds() == 12.5
    monkeypatch.setenv("FLOAT_MAX_SECONDS", "0")
    assert st.max_audio_seconds() is None
    monkeypatch.setenv("FLOAT_MAX_SECONDS", "lots")
    assert st.max_audio_seconds() == st.DEFAULT_MAX_SECONDS


# ============================================================================ with the tiny pipeline
def test_missing_inputs_are_readable_errors(pipe, media):
    with pytest.raises(ValueError, match="portrait"):
        st.prepare_cached(pipe, st.Session(), None, str(media["audio"]), crop=False)
    with pytest.raises(ValueError, match="speech"):
        st.prepare_cached(pipe, st.Session(), media["array"], None, crop=False)
    with pytest.raises(ValueError, match="Generate a video first"):
        st.preview_frame(pipe, st.Session(), 0, None)


def test_analysis_is_cached_per_input(pipe, media, generated):
    source, speech, motion = generated.source, generated.speech, generated.motion
    st.prepare_cached(pipe, generated, media["array"].copy(), str(media["audio"]), crop=False)
    assert generated.source is source and generated.speech is speech  # same content: no recompute
    assert st.sample_cached(pipe, generated, st.SamplingSettings(nfe=2, seed=3)) is motion
    st.prepare_cached(pipe, generated, media["array"], str(media["audio_b"]), crop=False)
    assert generated.source is source and generated.speech is not speech  # only the audio re-analysed
    assert generated.motion_key is None  # ... and the old motion is stale


def test_sampling_matches_the_engine_and_resamples_on_new_settings(pipe, generated):
    import torch

    expected = pipe.sample_motion(generated.prepared, nfe=2, seed=3)
    assert torch.allclose(generated.motion, expected, atol=1e-5)  # first-call kernels may differ by ~1e-7
    assert generated.lambdas.shape == (generated.num_frames, pipe.config.motion_dim)
    other = st.sample_cached(pipe, generated, st.SamplingSettings(nfe=2, seed=3, a_cfg=3.0))
    assert not torch.allclose(other, expected)
    assert np.allclose(generated.emotion, generated.speech.emotion_probs.numpy())


def _same_frame(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal up to float noise: one frame alone vs in a batch of 8 differs by ~1e-6 before the
    uint8 truncation, so a few pixels may differ by one level."""
    diff = np.abs(a.astype(int) - b.astype(int))
    return a.shape == b.shape and diff.max() <= 1 and (diff > 0).mean() < 0.01


def test_preview_equals_the_rendered_frame_with_the_same_edits(pipe, generated):
    k = 7
    zero = np.zeros(pipe.config.motion_dim, np.float32)
    base = st.preview_frame(pipe, generated, k, zero)
    rendered = np.concatenate(list(pipe.render(generated.prepared, generated.motion)))
    assert base.shape == (64, 64, 3) and base.dtype == np.uint8
    assert _same_frame(base, rendered[k])
    offsets = zero.copy()
    offsets[[0, 5]] = [2.0, -1.5]
    edited = st.preview_frame(pipe, generated, k, offsets)
    rendered_edit = np.concatenate(list(pipe.render(generated.prepared, generated.motion, edits=offsets)))
    assert _same_frame(edited, rendered_edit[k])
    assert np.abs(edited.astype(int) - base.astype(int)).mean() > 1.0  # the edit is visible
    # an out-of-range frame index is clamped, not an error
    assert _same_frame(st.preview_frame(pipe, generated, 10_000, zero), rendered[-1])


def test_render_video_writes_every_frame_with_audio(pipe, generated):
    av = pytest.importorskip("av")
    path, warnings = st.render_video(pipe, generated, paste_back=True)
    assert warnings and "Paste-back" in warnings[0]  # crop was off: nothing to paste into
    with av.open(str(path)) as container:
        assert container.streams.audio, "speech must be muxed into the video"
        frames = sum(1 for _ in container.decode(video=0))
    assert frames == generated.num_frames
    assert generated.video_path == str(path)


# ============================================================================ the served app
class CallCounter:
    """Counts calls of some pipeline methods (instance attributes shadow the class's methods)."""

    def __init__(self, pipe, names: tuple[str, ...]):
        self.pipe, self.names = pipe, names
        self.counts: dict[str, int] = dict.fromkeys(names, 0)
        self.decoded: list[int] = []  #: frames per decode_frames call
        self._lock = threading.Lock()
        for name in names:
            setattr(pipe, name, self._wrap(name, getattr(pipe, name)))

    def _wrap(self, name, method):
        def counted(*args, **kwargs):
            with self._lock:
                self.counts[name] += 1
                if name == "decode_frames":
                    self.decoded.append(int(args[1].shape[0]))
            return method(*args, **kwargs)

        return counted

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self.counts)

    def restore(self) -> None:
        for name in self.names:
            delattr(self.pipe, name)


@pytest.fixture(scope="module")
def served(pipe):
    """The real app (app.build_demo) served on a free port, plus a counter of engine calls."""
    pytest.importorskip("gradio_client")
    import app

    counter = CallCounter(pipe, ("prepare_image", "prepare_audio", "iter_motion", "decode_frames"))
    demo = app.build_demo(st.PipelineHolder(lambda: pipe))
    demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", quiet=True, **app.launch_kwargs())
    try:
        yield demo.local_url, counter
    finally:
        demo.close()
        counter.restore()


@pytest.fixture()
def client(served):
    """A new gradio_client session (its own gr.State) on the served app."""
    from gradio_client import Client

    return Client(served[0], verbose=False)


@pytest.fixture()
def calls(served) -> CallCounter:
    return served[1]


def _generate(client, media, image="image", audio="audio", **overrides):
    from gradio_client import handle_file

    args = dict(image=handle_file(str(media[image])), speech=handle_file(str(media[audio])),
                crop_on=False, paste=False, a=2.0, e=1.0, steps=2, solver_name="euler", emo="auto",
                seed_value=3)
    args.update(overrides)
    out = client.predict(**args, api_name="/generate")
    # outputs: video, summary, frame, preview, lambda plot, emotion plot, 20 sliders
    video = out[0]["video"] if isinstance(out[0], dict) else out[0]
    return {"video": Path(video), "summary": out[1], "preview": _read_png(out[3]),
            "lambda": _plot_traces(out[4]), "emotion": _plot_traces(out[5]), "probs": _probabilities(out[5])}


def _read_png(path) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(path).convert("RGB"))


def _plot_traces(plot: dict) -> list[dict]:
    """The traces of a gr.Plot output, with plotly's base64 arrays ("bdata") decoded."""
    import base64
    import json

    assert plot["type"] == "plotly"
    traces = json.loads(plot["plot"])["data"]
    for trace in traces:
        for axis in ("x", "y"):
            value = trace.get(axis)
            if isinstance(value, dict) and "bdata" in value:
                trace[axis] = np.frombuffer(base64.b64decode(value["bdata"]), dtype=value["dtype"])
    return traces


def _probabilities(plot: dict) -> np.ndarray:
    (bars,) = _plot_traces(plot)
    assert list(bars["x"]) == [e.capitalize() for e in EMOTIONS]
    return np.asarray(bars["y"], dtype=float)


def _engine_frames(pipe, media, image="image", audio="audio", seed=3, **kwargs) -> np.ndarray:
    prepared = pipe.prepare(str(media[image]), str(media[audio]), crop=False)
    return np.concatenate(list(pipe.render(prepared, pipe.sample_motion(prepared, nfe=2, seed=seed, **kwargs))))


def test_api_exposes_the_documented_endpoints(client):
    names = set(client.view_api(print_info=False, return_format="dict")["named_endpoints"])
    assert names == {"/status", "/crop_preview", "/analyze", "/generate", "/preview", "/apply_edits"}
    assert "tiny random test model" in client.predict(api_name="/status")


def test_api_analyze_returns_7_emotion_probabilities_summing_to_1(client, pipe, media, calls):
    from gradio_client import handle_file

    before = calls.snapshot()
    probs = _probabilities(client.predict(handle_file(str(media["audio"])), "auto", api_name="/analyze"))
    assert probs.shape == (7,) and probs.sum() == pytest.approx(1.0, abs=1e-6) and (probs >= 0).all()
    expected = pipe.prepare_audio(str(media["audio"])).emotion_probs.numpy()
    assert np.allclose(probs, expected, atol=1e-6)
    assert calls.snapshot()["iter_motion"] == before["iter_motion"]  # analysis only: nothing sampled


def test_api_generate_returns_an_mp4_with_audio(client, pipe, media):
    from gradio_client import handle_file

    av = pytest.importorskip("av")
    job = client.submit(handle_file(str(media["image"])), handle_file(str(media["audio"])), False, False,
                        2.0, 1.0, 2, "euler", "auto", 3, api_name="/generate")
    job.result(timeout=120)
    updates = job.outputs()
    # the emotion plot is streamed as soon as the speech is analysed, before the video exists
    assert len(updates) == 2 and updates[0][0] == {"__type__": "update"}  # gr.skip(): no video yet
    assert "sampling" in updates[0][1] and str(updates[1][0]).endswith(".mp4")
    assert _probabilities(updates[0][5]).sum() == pytest.approx(1.0, abs=1e-6)
    out = _generate(client, media)
    assert out["video"].suffix == ".mp4" and "33 frames" in out["summary"] and "seed **3**" in out["summary"]
    with av.open(str(out["video"])) as container:
        assert container.format.name.startswith("mov,mp4")
        assert container.streams.video[0].codec_context.name == "h264"
        assert container.streams.audio, "the speech must be muxed into the video"
        assert container.streams.audio[0].duration * container.streams.audio[0].time_base > 1.2
        frames = sum(1 for _ in container.decode(video=0))
    assert frames == 33  # 1.3 s at 25 fps
    assert out["probs"].shape == (7,) and out["probs"].sum() == pytest.approx(1.0, abs=1e-6)
    assert len(out["lambda"]) == pipe.config.motion_dim  # one λ_m(t) trace per basis direction
    assert all(len(t["y"]) == 33 for t in out["lambda"])


def test_api_edit_redecodes_one_frame_without_resampling(client, pipe, media, calls):
    expected = _engine_frames(pipe, media)[5]
    out = _generate(client, media)
    after_generation = calls.snapshot()
    zero = [0.0] * pipe.config.motion_dim
    base = _read_png(client.predict(5, *zero, api_name="/preview"))
    assert _same_frame(base, expected)  # frame 5 of the session's own sampled motion
    decoded = len(calls.decoded)
    edit = zero.copy()
    edit[2] = 3.0
    edited = _read_png(client.predict(5, *edit, api_name="/preview"))
    assert np.abs(edited.astype(int) - base.astype(int)).mean() > 1.0  # the edit changed the frame
    now = calls.snapshot()
    assert now["iter_motion"] == after_generation["iter_motion"], "an edit must not re-sample"
    assert now["prepare_image"] == after_generation["prepare_image"], "an edit must not re-encode"
    assert now["prepare_audio"] == after_generation["prepare_audio"]
    assert calls.decoded[decoded:] == [1], "an edit decodes exactly one frame"
    # Apply to video: every frame re-rendered from the cached motion, still no sampling
    applied = client.predict(False, *edit, api_name="/apply_edits")
    assert Path(applied[0]["video"] if isinstance(applied[0], dict) else applied[0]).is_file()
    assert "Re-rendered with edits" in applied[1]
    assert sum(calls.decoded[decoded + 1:]) == 33
    assert calls.snapshot()["iter_motion"] == after_generation["iter_motion"]
    assert out["preview"].shape == (64, 64, 3)


def test_api_new_settings_resample_but_reuse_the_analysis(client, media, calls):
    _generate(client, media)
    before = calls.snapshot()
    _generate(client, media, a=3.5, e=2.0, steps=3, solver_name="midpoint", seed_value=4)
    now = calls.snapshot()
    assert now["iter_motion"] == before["iter_motion"] + 1
    assert now["prepare_image"] == before["prepare_image"] and now["prepare_audio"] == before["prepare_audio"]


def test_api_redirecting_the_emotion_changes_the_motion(client, media):
    auto = _generate(client, media, emo="auto")
    angry = _generate(client, media, emo="angry")
    lam_auto = np.stack([t["y"] for t in auto["lambda"]])
    lam_angry = np.stack([t["y"] for t in angry["lambda"]])
    assert lam_auto.shape == lam_angry.shape
    assert np.abs(lam_auto - lam_angry).max() > 1e-3, "a redirected emotion must change the motion"
    colors = angry["emotion"][0]["marker"]["color"]
    assert colors[EMOTIONS.index("angry")] == plots.EMOTION_HIGHLIGHT and colors.count(plots.EMOTION_HIGHLIGHT) == 1
    again = _generate(client, media, emo="auto")  # same settings, same seed: the same motion
    assert np.allclose(np.stack([t["y"] for t in again["lambda"]]), lam_auto, atol=1e-6)


def test_two_concurrent_sessions_never_see_each_others_results(served, pipe, media):
    from gradio_client import Client

    clients = {"a": Client(served[0], verbose=False), "b": Client(served[0], verbose=False)}
    inputs = {"a": dict(image="image", audio="audio", seed_value=3),
              "b": dict(image="image_b", audio="audio_b", seed_value=8)}
    results: dict[str, dict] = {}
    previews: dict[str, list[np.ndarray]] = {"a": [], "b": []}
    errors: list[BaseException] = []

    def run(name: str) -> None:
        try:
            results[name] = _generate(clients[name], media, **inputs[name])
            for k in (4, 9, 4):
                previews[name].append(_read_png(clients[name].predict(k, *[0.0] * pipe.config.motion_dim,
                                                                      api_name="/preview")))
        except BaseException as exc:  # noqa: BLE001 - re-raised below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(n,)) for n in clients]
    [t.start() for t in threads]
    [t.join(timeout=120) for t in threads]
    assert not errors, errors
    for name, other in (("a", "b"), ("b", "a")):
        mine = _engine_frames(pipe, media, inputs[name]["image"], inputs[name]["audio"], inputs[name]["seed_value"])
        theirs = _engine_frames(pipe, media, inputs[other]["image"], inputs[other]["audio"],
                                inputs[other]["seed_value"])
        for got, k in zip(previews[name], (4, 9, 4)):
            assert _same_frame(got, mine[k]) and not _same_frame(got, theirs[k])
        assert _same_frame(results[name]["preview"], mine[0])
        own = pipe.prepare_audio(str(media[inputs[name]["audio"]])).emotion_probs.numpy()
        assert np.allclose(results[name]["probs"], own, atol=1e-6)
        assert f"seed **{inputs[name]['seed_value']}**" in results[name]["summary"]
    assert results["a"]["video"] != results["b"]["video"]


def test_api_errors_are_messages_not_tracebacks(client, pipe, media):
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match="Generate a video first") as err:  # a new session: nothing generated
        client.predict(0, *[0.0] * pipe.config.motion_dim, api_name="/preview")
    assert "Traceback" not in str(err.value)
    with pytest.raises(AppError, match="Generate a video first"):
        client.predict(False, *[0.0] * pipe.config.motion_dim, api_name="/apply_edits")
    with pytest.raises(AppError, match="less than minimum"):  # Gradio checks slider bounds itself
        _generate(client, media, steps=0)
    with pytest.raises(AppError, match="portrait"):
        client.predict(image=None, speech=None, crop_on=False, paste=False, a=2.0, e=1.0, steps=2,
                       solver_name="euler", emo="auto", seed_value=0, api_name="/generate")


# ============================================================================ python app.py
def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_python_app_py_starts_without_weights_and_shows_the_banner(tmp_path):
    """The README's start command on a machine without weights and offline: the app starts,
    the banner says what to download and where, and generation is refused with that reason."""
    import subprocess
    import sys
    import time

    from gradio_client import Client
    from gradio_client.exceptions import AppError

    root = Path(__file__).resolve().parent.parent
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != "FLOAT_TEST_MODEL"}
    env.update(FLOAT_CHECKPOINT_DIR=str(tmp_path / "ckpt"), HF_HUB_OFFLINE="1", GRADIO_SERVER_NAME="127.0.0.1",
               GRADIO_SERVER_PORT=str(port), GRADIO_ANALYTICS_ENABLED="False")
    log_path = tmp_path / "app.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "app.py"], cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        client = None
        while client is None:
            assert proc.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, "app.py did not start in 120 s:\n" + log_path.read_text()
            try:
                client = Client(f"http://127.0.0.1:{port}/", verbose=False)
            except Exception:  # noqa: BLE001 - not listening yet
                time.sleep(0.5)
        banner = client.predict(api_name="/status")
        assert "generation is disabled" in banner
        assert str(tmp_path / "ckpt" / "float.pth") in banner and "offline" in banner
        from gradio_client import handle_file

        examples = root / "examples"
        with pytest.raises(AppError, match="not available"):
            client.predict(handle_file(str(examples / "portrait_astronaut.png")),
                           handle_file(str(examples / "arctic_a0007.wav")), True, False, 2.0, 1.0, 10,
                           "euler", "auto", 0, api_name="/generate")
        assert "downloading them from the Hugging Face Hub" in log_path.read_text()
    finally:
        proc.terminate()
        proc.wait(timeout=30)


# ============================================================================ Space metadata
def test_space_front_matter_and_api_docs(served):
    import re

    import gradio
    import yaml
    from gradio_client import Client
    from packaging.specifiers import SpecifierSet

    root = Path(__file__).resolve().parent.parent
    text = (root / "README.md").read_text(encoding="utf-8")
    meta = yaml.safe_load(text.split("---")[1])
    assert meta["sdk"] == "gradio" and meta["app_file"] == "app.py" and meta["license"] == "mit"
    assert meta["title"] and len(meta["short_description"]) <= 60  # the Hub's limit
    assert "CC BY-NC-ND 4.0" in meta["short_description"] and "non-commercial" in meta["short_description"]
    spec = next(line.split("#")[0].split("gradio", 1)[1].strip()
                for line in (root / "requirements.txt").read_text().splitlines() if line.startswith("gradio"))
    assert meta["sdk_version"] in SpecifierSet(spec) and meta["sdk_version"] == gradio.__version__
    assert "ffmpeg" in (root / "packages.txt").read_text().split()
    # every endpoint and keyword argument the "## API" example uses exists on the app
    api = text.split("### App API", 1)[1]
    endpoints = Client(served[0], verbose=False).view_api(print_info=False, return_format="dict")["named_endpoints"]
    for name in set(re.findall(r'api_name="(/\w+)"', api)):
        assert name in endpoints, name
    generate_params = {p["parameter_name"] for p in endpoints["/generate"]["parameters"]}
    example = api[api.index('api_name="/analyze"'):api.index('api_name="/generate"')]
    assert set(re.findall(r"(\w+)=", example)) - {"api_name"} <= generate_params
