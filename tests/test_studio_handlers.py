"""FLOAT Studio's logic without a server: settings, plots, handlers on the tiny random model."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("FLOAT_TEST_MODEL", "tiny-random")


from float_core.config import EMOTIONS, SamplingConfig  # noqa: E402
from studio_helpers import same_frame  # noqa: E402
from float_studio import handlers as h  # noqa: E402
from float_studio import plots  # noqa: E402
from float_studio import state as st  # noqa: E402
from float_studio.model import PipelineHolder  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


# ============================================================================ fixtures
@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, Path]:
    """A synthetic portrait (array) and two 1.3 s speech-like WAVs (16 kHz)."""
    import soundfile as sf

    root = tmp_path_factory.mktemp("media")
    rng = np.random.default_rng(0)
    t = np.arange(int(1.3 * 16000)) / 16000
    for name, f0 in (("speech_a.wav", 220.0), ("speech_b.wav", 330.0)):
        wave = 0.3 * np.sin(2 * np.pi * f0 * t) * (1 + np.sin(2 * np.pi * 3 * t))
        sf.write(root / name, wave.astype(np.float32), 16000)
    return {"array": rng.integers(0, 256, (96, 80, 3), dtype=np.uint8),
            "array_b": rng.integers(0, 256, (72, 72, 3), dtype=np.uint8),
            "audio": root / "speech_a.wav", "audio_b": root / "speech_b.wav"}


@pytest.fixture(scope="module")
def pipe():
    from float_core.pipeline import FloatPipeline

    return FloatPipeline.from_pretrained("tiny-random", device="cpu")


@pytest.fixture()
def holder(pipe) -> PipelineHolder:
    return PipelineHolder(lambda: pipe)


def run_generate(holder, sess, image, audio, **settings) -> st.Generation:
    """Both steps of handlers.generate (crop off: no face in noise); returns the generation."""
    cfg = SamplingConfig(**{"nfe": 2, "seed": 3, **settings})
    *_, gen = h.generate(holder, sess, image, str(audio), False, cfg)
    return gen


@pytest.fixture()
def generated(holder, media):
    sess = st.Session()
    run_generate(holder, sess, media["array"], media["audio"])
    yield sess
    sess.cleanup()


def zero_edits(pipe) -> h.Edits:
    return h.Edits(np.zeros(pipe.config.motion_dim, np.float32))


# ============================================================================ settings
def test_sampling_from_ui_validates_and_names_the_setting():
    ok = st.sampling_from_ui(2, 1, 10, "RK4", "Happy", 5)
    assert ok == SamplingConfig(a_cfg=2.0, e_cfg=1.0, nfe=10, solver="rk4", emotion="happy", seed=5)
    assert st.sampling_from_ui(5, 10, 50, "euler", "auto", 0).a_cfg == 5.0  # the ranges' ends
    assert st.sampling_from_ui(2, 1, 10, "euler", "dynamic", 0).dynamic_emotion
    for args, word in [((5.5, 1, 10, "euler", "auto", 0), "Audio guidance"),
                       ((2, 10.5, 10, "euler", "auto", 0), "Emotion guidance"),
                       ((2, 1, 51, "euler", "auto", 0), "NFE"),
                       ((2, -1, 10, "euler", "auto", 0), "Emotion guidance"),
                       ((2, 1, 0, "euler", "auto", 0), "NFE"), ((2, 1, 2.5, "euler", "auto", 0), "whole"),
                       ((2, 1, 10, "heun", "auto", 0), "Solver"), ((2, 1, 10, "euler", "bored", 0), "Emotion"),
                       ((2, 1, 10, "euler", "auto", "x"), "Seed"), ((float("nan"), 1, 10, "euler", "auto", 0), "Audio")]:
        with pytest.raises(ValueError, match=word):
            st.sampling_from_ui(*args)


def test_the_controls_defaults_are_samplingconfigs():
    assert st.DEFAULTS == SamplingConfig()
    assert (st.DEFAULTS.a_cfg, st.DEFAULTS.e_cfg, st.DEFAULTS.nfe, st.DEFAULTS.solver) == (2.0, 1.0, 10, "euler")


def test_negative_seed_draws_a_concrete_random_seed():
    seeds = {st.sampling_from_ui(2, 1, 10, "euler", "auto", -1).seed for _ in range(4)}
    assert all(s is not None and 0 <= s < st.MAX_SEED for s in seeds) and len(seeds) > 1


def test_offsets_array_validates():
    assert st.offsets_array([0, None, "", 1.5], 4).tolist() == [0, 0, 0, 1.5]
    with pytest.raises(ValueError, match="expected 4"):
        st.offsets_array([0, 1], 4)
    with pytest.raises(ValueError, match="finite"):
        st.offsets_array([0, float("inf")], 2)


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


def test_a_deep_copied_session_is_fresh_and_independent():
    import copy

    sess = st.Session()
    sess.cache.put("k", np.zeros(3))
    with sess.action():
        other = copy.deepcopy(sess)
        assert other.request_stop() == 0 and sess.request_stop() == 1  # no action copied
    assert other.current is None and len(other.cache) == 0 and other.cache is not sess.cache


def test_stop_reaches_running_actions_only():
    sess = st.Session()
    with sess.action() as first, sess.action() as second:
        assert sess.request_stop() == 2 and first.is_set() and second.is_set()
    with sess.action() as later:
        assert not later.is_set()  # a Stop never reaches an action started after it
    assert sess.request_stop() == 0


# ============================================================================ plots
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


def test_lambda_figure_shows_generated_vs_edited_per_frame():
    lam = np.zeros((25, 6))
    lam[:, 4] = np.linspace(-1, 1, 25)
    lam[:, 1] = np.linspace(0, 0.5, 25)
    fig = plots.lambda_figure(lam, fps=25.0, frame_index=5, offsets=np.array([0, 0, 0, 0.3, 0, 0]), visible=2)
    names = [t.name for t in fig.data]
    assert names == ["λ1", "λ2", "λ3", "λ4", "λ4 edited", "λ5", "λ6"]
    assert [t.name for t in fig.data if t.visible is True] == ["λ2", "λ4", "λ5"]  # edited ones shown
    assert np.allclose(fig.data[4].y, lam[:, 3] + 0.3) and fig.data[4].line.dash == "dash"
    assert fig.layout.shapes[0].x0 == pytest.approx(0.2)  # frame 5 at 25 fps
    ramp = np.zeros((25, 6))
    ramp[10:, 0] = np.linspace(0, 1, 15)
    per_frame = plots.lambda_figure(lam, 25.0, offsets=ramp)
    edited = next(t for t in per_frame.data if t.name == "λ1 edited")
    assert np.allclose(edited.y, lam[:, 0] + ramp[:, 0])
    assert "edited" in per_frame.layout.title.text


def test_emotion_figure_says_what_sampling_uses():
    probs = np.array([0.05, 0.1, 0.05, 0.2, 0.4, 0.1, 0.1])
    auto = plots.emotion_figure(probs, probs, "mixture of 40% neutral (auto)")
    heard, used = auto.data
    assert list(heard.x) == [e.capitalize() for e in EMOTIONS] and np.allclose(heard.y, probs)
    assert np.allclose(used.y, probs) and used.name == "used for sampling"  # the whole mixture is used
    assert "mixture of 40% neutral" in auto.layout.title.text
    onehot = np.eye(7)[EMOTIONS.index("sad")]
    redirected = plots.emotion_figure(probs, onehot, "redirected to sad (one-hot)")
    assert np.allclose(redirected.data[1].y, onehot) and "redirected" in redirected.layout.title.text
    dynamic = plots.emotion_figure(probs, np.tile(probs, (3, 1)), "dynamic: per window")
    assert len(dynamic.data) == 1  # per-window use is shown by the timeline
    with pytest.raises(ValueError, match="7 values"):
        plots.emotion_figure(probs[:3], probs, "")


def test_emotion_timeline_figure_marks_whether_the_windows_are_used():
    windows = np.tile(np.eye(7)[[0, 3, 3]], 1)
    used = plots.emotion_timeline_figure(windows, windows, 2.0, "dynamic")
    assert len(used.data) == 7 and list(used.data[0].x) == [1.0, 3.0, 5.0]  # window centres (s)
    assert np.allclose(used.data[3].y, [0, 1, 1]) and "own estimate" in used.layout.title.text
    reference = plots.emotion_timeline_figure(windows, windows.mean(0), 2.0, "mixture of 67% happy")
    assert "for reference" in reference.layout.title.text and reference.data[0].line.dash == "dot"


def test_direction_labels_and_grouped_order():
    from float_core.directions import DirectionInfo

    def info(m, group):
        return DirectionInfo(m, group, {"mouth": 0.7, "eyes": 0.1, "head": 0.1, "other": 0.1}, f"{group} x", 0.1)

    dirs = [info(0, "head"), info(1, "mouth"), info(2, "other"), info(3, "mouth"), info(4, "eyes")]
    assert plots.grouped_order(dirs) == [1, 3, 4, 0, 2]
    assert plots.direction_label(dirs[1], 1) == "λ2 · mouth x" and plots.direction_label(None, 1) == "λ2"
    assert plots.direction_tooltip(dirs[1]).startswith("Moves: mouth 70%")


# ============================================================================ handlers
def test_crop_preview_draws_the_box_offers_faces_and_scales():
    from float_core.media.image import load_image

    photo = load_image(ROOT / "examples" / "portrait_astronaut.png")
    out = h.crop_preview(photo, True, 512)
    assert out.crop.shape == (512, 512, 3) and out.boxed.shape == photo.shape
    assert (out.boxed != photo).any() and "face" in out.note and out.faces == ["Face 1 (largest)"]
    wider = h.crop_preview(photo, True, 512, crop_scale=2.4)
    # a wider crop shows the face smaller: the centre region differs, the image stays 512
    assert wider.crop.shape == (512, 512, 3) and np.abs(wider.crop.astype(int) - out.crop.astype(int)).mean() > 5
    whole = h.crop_preview(photo, False, 512)
    assert np.array_equal(whole.boxed, photo) and whole.crop.shape == (512, 512, 3) and "off" in whole.note
    assert h.crop_preview(None, True, 512) == h.CropPreview(None, None, "")
    noise = np.random.default_rng(0).integers(0, 255, (120, 160, 3), dtype=np.uint8)
    assert "no face found" in h.crop_preview(noise, True, 512).note.lower()


def test_crop_preview_lists_several_faces_and_crops_the_chosen_one():
    from PIL import Image

    from float_core.media.image import load_image

    face = load_image(ROOT / "examples" / "portrait_astronaut.png")[30:230, 130:320]
    canvas = np.full((400, 700, 3), 128, np.uint8)
    canvas[20:220, 20:210] = face
    canvas[50:350, 300:585] = np.asarray(Image.fromarray(face).resize((285, 300)))
    largest = h.crop_preview(canvas, True, 256, face=0)
    second = h.crop_preview(canvas, True, 256, face=1)
    assert largest.faces == ["Face 1 (largest)", "Face 2"] and "2 faces" in largest.note
    assert "face 2" in second.note and not np.array_equal(largest.crop, second.crop)
    # the second crop is of the left (smaller) face: its box is drawn left of x = 250, the
    # largest face's right of it
    def box_columns(boxed):
        cols = np.argwhere((boxed != canvas).any(axis=2))[:, 1]
        return cols.min(), cols.max()

    assert box_columns(second.boxed)[1] < 250 < box_columns(largest.boxed)[0]


def test_missing_inputs_are_readable_errors(holder, media):
    sess = st.Session()
    with pytest.raises(ValueError, match="portrait"):
        run_generate(holder, sess, None, media["audio"])
    with pytest.raises(ValueError, match="speech"):
        list(h.generate(holder, sess, media["array"], None, False, SamplingConfig(seed=0)))
    with pytest.raises(ValueError, match="Generate a video first"):
        h.preview(holder, sess, 0, h.Edits(np.zeros(20, np.float32)))
    with pytest.raises(ValueError, match="Generate a video first"):
        h.apply_edits(holder, sess, h.Edits(np.zeros(20, np.float32)))


def test_generation_matches_the_engine_and_is_cached(holder, pipe, media, generated, monkeypatch):
    import torch

    gen = generated.current
    prepared = pipe.prepare(media["array"], str(media["audio"]), crop=False)
    expected = pipe.sample_motion(prepared, nfe=2, seed=3)
    assert torch.allclose(gen.motion, expected, atol=1e-5)
    assert gen.lambdas.shape == (gen.num_frames, pipe.config.motion_dim)
    assert np.allclose(gen.emotion, prepared.emotion_probs.numpy(), atol=1e-6)  # auto: the mixture
    calls = []
    for name in ("prepare_image", "prepare_audio", "iter_motion"):
        method = getattr(pipe, name)
        monkeypatch.setattr(pipe, name, lambda *a, _m=method, _n=name, **k: calls.append(_n) or _m(*a, **k))
    again = run_generate(holder, generated, media["array"].copy(), media["audio"])
    assert calls == [] and torch.equal(again.motion, gen.motion) and again.version > gen.version
    run_generate(holder, generated, media["array"], media["audio"], a_cfg=3.0)
    assert calls == ["iter_motion"]  # new settings: re-sampled, both analyses re-used
    run_generate(holder, generated, media["array"], media["audio_b"], a_cfg=3.0)
    assert calls == ["iter_motion", "prepare_audio", "iter_motion"]  # only the speech re-analysed


def test_dynamic_emotion_samples_each_window_with_its_own_estimate(holder, pipe, media):
    sess = st.Session()
    gen = run_generate(holder, sess, media["array"], media["audio"], emotion="dynamic")
    timeline = pipe.emotion_timeline(pipe.prepare_audio(str(media["audio"]))).numpy()
    assert gen.emotion.shape == timeline.shape and np.allclose(gen.emotion, timeline, atol=1e-6)
    view = h.emotion_view(pipe, gen.speech, "dynamic")
    assert view.label.startswith("dynamic: per window") and "own estimate" in view.timeline.layout.title.text
    auto = h.emotion_view(pipe, gen.speech, "auto")
    assert "auto, soft probabilities" in auto.label and "for reference" in auto.timeline.layout.title.text


def test_preview_equals_the_rendered_frame_with_the_same_edits(holder, pipe, generated):
    gen = generated.current
    k = 7
    base = h.preview(holder, generated, k, zero_edits(pipe))
    prepared = gen.prepared()
    rendered = np.concatenate(list(pipe.render(prepared, gen.motion)))
    assert base.shape == (64, 64, 3) and base.dtype == np.uint8 and np.array_equal(base, rendered[k])
    sliders = np.zeros(pipe.config.motion_dim, np.float32)
    sliders[[0, 5]] = [2.0, -1.5]
    curves = h.curves_from_rows([{"direction": 3, "kind": "pulse", "value": 2.5, "start": 5, "end": 10}])
    edits = h.Edits(sliders, None, curves)
    offsets = h.edit_offsets(gen, edits)
    assert offsets.shape == (gen.num_frames, pipe.config.motion_dim)
    rendered_edit = np.concatenate(list(pipe.render(prepared, gen.motion, edits=offsets)))
    edited = h.preview(holder, generated, k, edits)
    assert np.array_equal(edited, rendered_edit[k]) and np.abs(edited.astype(int) - base.astype(int)).mean() > 1.0
    outside = h.preview(holder, generated, 12, edits)  # the pulse is over: only the sliders apply
    slider_only = np.concatenate(list(pipe.render(prepared, gen.motion, edits=sliders)))
    # per-frame offsets (T, M) vs one (M,) row: the same numbers through gemm vs gemv, so up
    # to float rounding (a few pixels one level apart), not bit for bit
    assert same_frame(outside, slider_only[12])
    assert np.array_equal(h.preview(holder, generated, 10_000, zero_edits(pipe)), rendered[-1])  # clamped


def test_a_ramp_curve_changes_lambda_linearly_over_its_frames(generated):
    gen = generated.current
    edits = h.Edits(np.zeros(gen.lambdas.shape[1], np.float32), None,
                    h.curves_from_rows([{"direction": 2, "kind": "ramp", "value": 1.0, "start": 5, "end": 15}]))
    offsets = h.edit_offsets(gen, edits)
    assert np.allclose(offsets[:6, 1], 0) and np.allclose(offsets[5:15, 1], np.linspace(0, 1, 10), atol=1e-6)
    assert np.allclose(offsets[15:, 1], 1.0) and not np.any(np.delete(offsets, 1, axis=1))
    with pytest.raises(ValueError, match="edit curve 1"):
        h.curves_from_rows([{"direction": 2, "kind": "ramp", "value": 1.0, "start": 9, "end": 3}])


def test_lips_only_preset_holds_head_and_eyes_at_the_source(generated):
    import dataclasses

    from float_core.directions import DirectionInfo

    gen = generated.current
    m = gen.lambdas.shape[1]
    groups = ["head", "eyes", "mouth", "other"] * (m // 4)
    dirs = tuple(DirectionInfo(i, g, {"mouth": 0.25, "eyes": 0.25, "head": 0.25, "other": 0.25}, g, 0.1)
                 for i, g in enumerate(groups))
    gen = dataclasses.replace(gen, directions=dirs)
    with pytest.raises(ValueError, match="directions"):
        h.edit_offsets(dataclasses.replace(gen, directions=()), h.Edits(np.zeros(m, np.float32), "lips only"))
    offsets = h.edit_offsets(gen, h.Edits(np.zeros(m, np.float32), "lips only"))
    edited = gen.lambdas + offsets
    src = gen.source.source_lambda.numpy()
    for i, g in enumerate(groups):
        if g in ("head", "eyes"):
            assert np.allclose(edited[:, i], src[i], atol=1e-5)  # no head motion, no blinks
        else:
            assert np.allclose(edited[:, i], gen.lambdas[:, i])


def test_render_video_writes_every_frame_with_audio(holder, generated):
    av = pytest.importorskip("av")
    rendered = h.render_video(holder, generated, paste_back=True)
    assert rendered.warnings and "Paste-back" in rendered.warnings[0]  # crop was off: nothing to paste into
    with av.open(rendered.path) as container:
        assert container.streams.audio, "speech must be muxed into the video"
        frames = sum(1 for _ in container.decode(video=0))
    assert frames == generated.current.num_frames and generated.video_path == rendered.path


def test_preview_pastes_back_into_the_photo(holder, pipe, media):
    from float_core.media.face import PasteBack
    from float_core.media.image import load_image

    photo = load_image(ROOT / "examples" / "portrait_astronaut.png")
    sess = st.Session()
    *_, gen = h.generate(holder, sess, photo, str(media["audio"]), True, SamplingConfig(nfe=2, seed=1))
    plain = h.preview(holder, sess, 3, zero_edits(pipe))
    pasted = h.preview(holder, sess, 3, zero_edits(pipe), paste_back=True)
    assert plain.shape == (64, 64, 3) and pasted.shape == (512, 512, 3)
    expected = PasteBack(photo, gen.source.crop_box, size=64)(plain)
    assert np.array_equal(pasted, expected)


def test_stop_cancels_a_running_generation_at_the_next_step(holder, media):
    sess = st.Session()
    seen = []

    def progress(stage, done, total):
        seen.append(stage)
        if stage == "sampling":
            h.stop(sess)  # the user presses Stop while the motion is sampled

    with pytest.raises(st.Cancelled):
        list(h.generate(holder, sess, media["array"], str(media["audio"]), False,
                        SamplingConfig(nfe=4, seed=0), progress=progress))
    assert seen.count("sampling") == 1 and sess.current is None  # stopped after one evaluation
    gen = run_generate(holder, sess, media["array"], media["audio"])  # a new action runs again
    assert sess.current is gen


def test_stop_during_rendering_leaves_no_video(holder, generated, tmp_path):
    def progress(stage, done, total):
        if stage == "rendering":
            h.stop(generated)

    with pytest.raises(st.Cancelled):
        h.render_video(holder, generated, None, False, progress, batch_size=4)
    assert not any(Path(generated.workdir).glob("*.mp4"))  # write_video removed the unfinished file


def test_user_messages_never_carry_a_traceback():
    assert h.user_message(ValueError("audio: too long")) == "audio: too long"
    assert h.user_message(st.Cancelled("x")) == "Stopped."
    msg = h.user_message(KeyError("w"))
    assert "KeyError" in msg and "server log" in msg and "Traceback" not in msg
