"""FLOAT Studio app served on 127.0.0.1 and driven through gradio_client (the handlers
alone: tests/test_studio_handlers.py).

Everything runs on the tiny random model (FLOAT_TEST_MODEL=tiny-random, 64x64 frames).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("FLOAT_TEST_MODEL", "tiny-random")

from studio_helpers import same_frame  # noqa: E402

from float_core.config import EMOTIONS  # noqa: E402
from float_core.media.video import probe_video  # noqa: E402
from float_studio import plots  # noqa: E402
from float_studio.model import PipelineHolder  # noqa: E402


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


# ============================================================================ the served app
class CallCounter:
    """Counts calls of some pipeline methods (instance attributes shadow the class's methods)."""

    def __init__(self, pipe, names: tuple[str, ...]):
        self.pipe, self.names = pipe, names
        self.counts: dict[str, int] = dict.fromkeys(names, 0)
        self.decoded: list[int] = []  #: frames delivered per decoder call (FloatPipeline._decode)
        self._lock = threading.Lock()
        for name in names:
            setattr(pipe, name, self._wrap(name, getattr(pipe, name)))

    def _wrap(self, name, method):
        def counted(*args, **kwargs):
            with self._lock:
                self.counts[name] += 1
                if name == "_decode":  # every decode (preview, render, probes) goes through it
                    self.decoded.append(1 if kwargs.get("keep") is not None else int(args[1].shape[0]))
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

    counter = CallCounter(pipe, ("prepare_image", "prepare_audio", "iter_motion", "_decode"))
    demo = app.build_demo(PipelineHolder(lambda: pipe))
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
    # outputs: video, summary, seed, frame, preview, lambda plot, emotion plot, timeline, 20 sliders
    video = out[0]["video"] if isinstance(out[0], dict) else out[0]
    return {"video": Path(video), "summary": out[1], "seed": out[2], "preview": _read_png(out[4]),
            "lambda": _plot_traces(out[5]), "emotion": _plot_traces(out[6]), "probs": _probabilities(out[6]),
            "timeline": _plot_traces(out[7])}


ZERO = [0.0] * 20  #: no lambda offsets (the tiny model has 20 directions, like the official one)


def _preview(client, frame: int, offsets=ZERO, paste: bool = False) -> np.ndarray:
    return _read_png(client.predict(frame, paste, *offsets, api_name="/preview"))


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
    """The speech's 7 probabilities: the first bar trace ("heard in the speech")."""
    bars = _plot_traces(plot)[0]
    assert list(bars["x"]) == [e.capitalize() for e in EMOTIONS]
    return np.asarray(bars["y"], dtype=float)


def _engine_frames(pipe, media, image="image", audio="audio", seed=3, **kwargs) -> np.ndarray:
    prepared = pipe.prepare(str(media[image]), str(media[audio]), crop=False)
    return np.concatenate(list(pipe.render(prepared, pipe.sample_motion(prepared, nfe=2, seed=seed, **kwargs))))


def test_api_exposes_the_documented_endpoints(client):
    names = set(client.view_api(print_info=False, return_format="dict")["named_endpoints"])
    studio = {"/status", "/retry_loading", "/crop_preview", "/analyze", "/generate", "/describe_directions",
              "/preview", "/set_preset", "/edit_curves", "/apply_edits"}
    assert studio <= names  # the Live and Call tabs add their own
    assert "tiny random test model" in client.predict(api_name="/status")


def test_api_analyze_returns_7_emotion_probabilities_summing_to_1(client, pipe, media, calls):
    from gradio_client import handle_file

    before = calls.snapshot()
    bars, timeline = client.predict(handle_file(str(media["audio"])), "auto", api_name="/analyze")
    probs = _probabilities(bars)
    assert len(_plot_traces(timeline)) == 7  # one line per emotion over the windows
    assert probs.shape == (7,) and probs.sum() == pytest.approx(1.0, abs=1e-6) and (probs >= 0).all()
    expected = pipe.prepare_audio(str(media["audio"])).emotion_probs.numpy()
    assert np.allclose(probs, expected, atol=1e-6)
    assert calls.snapshot()["iter_motion"] == before["iter_motion"]  # analysis only: nothing sampled


def test_api_generate_returns_an_mp4_with_audio(client, pipe, media):
    from gradio_client import handle_file

    av = pytest.importorskip("av")
    job = client.submit(handle_file(str(media["image"])), handle_file(str(media["audio"])), False, False,
                        2.0, 1.0, 2, "euler", "auto", -1, api_name="/generate")
    job.result(timeout=120)
    updates = job.outputs()
    # the drawn seed and the emotion plot are streamed as soon as the speech is analysed
    assert len(updates) == 2 and updates[0][0] == {"__type__": "update"}  # gr.skip(): no video yet
    assert "sampling" in updates[0][1] and str(updates[1][0]).endswith(".mp4")
    drawn = updates[0][2]
    assert isinstance(drawn, (int, float)) and drawn >= 0 and updates[1][2] == drawn  # written back
    assert f"seed **{int(drawn)}**" in updates[1][1]
    assert _probabilities(updates[0][6]).sum() == pytest.approx(1.0, abs=1e-6)
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
    base = _preview(client, 5)
    assert np.array_equal(base, expected)  # frame 5 of the session's own sampled motion
    decoded = len(calls.decoded)
    edit = ZERO.copy()
    edit[2] = 3.0
    edited = _preview(client, 5, edit)
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


def test_api_presets_and_curves_edit_over_time(client, pipe, media, calls):
    from gradio_client.exceptions import AppError

    _generate(client, media)
    client.predict("lips only", api_name="/set_preset")
    with pytest.raises(AppError, match="motion directions"):  # no directions measured yet
        _preview(client, 3)
    client.predict("none", api_name="/set_preset")
    before = len(calls.decoded)
    client.predict(api_name="/describe_directions")
    assert sum(calls.decoded[before:]) == 2 * pipe.config.motion_dim + 1  # source +- step per direction
    base = _preview(client, 3)
    client.predict("lips only", api_name="/set_preset")
    lips = _preview(client, 3)
    client.predict("none", api_name="/set_preset")
    assert np.array_equal(_preview(client, 3), base)
    client.predict('[{"direction": 4, "kind": "pulse", "value": 3.0, "start": 10, "end": 20}]',
                   api_name="/edit_curves")
    assert np.array_equal(_preview(client, 3), base)  # before the pulse: unchanged
    pulsed = _preview(client, 15)
    client.predict("[]", api_name="/edit_curves")
    assert np.abs(pulsed.astype(int) - _preview(client, 15).astype(int)).mean() > 1.0
    with pytest.raises(AppError, match="edit curve 1"):
        client.predict('[{"direction": 4, "kind": "ramp", "start": 9, "end": 2}]', api_name="/edit_curves")
    with pytest.raises(AppError, match="preset"):
        client.predict("wobbly", api_name="/set_preset")
    assert lips.shape == base.shape


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
    heard, used = angry["emotion"]
    assert used["marker"]["color"] == plots.EMOTION_HIGHLIGHT and used["name"] == "used for sampling"
    assert np.allclose(used["y"], np.eye(7)[EMOTIONS.index("angry")])  # the one-hot the sampler uses
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
                previews[name].append(_preview(clients[name], k))
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
            assert np.array_equal(got, mine[k]) and not same_frame(got, theirs[k])
        assert np.array_equal(results[name]["preview"], mine[0])
        own = pipe.prepare_audio(str(media[inputs[name]["audio"]])).emotion_probs.numpy()
        assert np.allclose(results[name]["probs"], own, atol=1e-6)
        assert f"seed **{inputs[name]['seed_value']}**" in results[name]["summary"]
    assert results["a"]["video"] != results["b"]["video"]


def test_api_errors_are_messages_not_tracebacks(client, pipe, media):
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match="Generate a video first") as err:  # a new session: nothing generated
        client.predict(0, False, *ZERO, api_name="/preview")
    assert "Traceback" not in str(err.value)
    with pytest.raises(AppError, match="Generate a video first"):
        client.predict(False, *ZERO, api_name="/apply_edits")
    with pytest.raises(AppError, match="less than minimum"):  # Gradio checks slider bounds itself
        _generate(client, media, steps=0)
    with pytest.raises(AppError, match="portrait"):
        client.predict(image=None, speech=None, crop_on=False, paste=False, a=2.0, e=1.0, steps=2,
                       solver_name="euler", emo="auto", seed_value=0, api_name="/generate")


def test_api_converse_makes_one_video_of_two_portraits(client, media):
    """/converse: two example portraits, one recording (the other character listens)."""
    import json

    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    examples = Path(__file__).resolve().parent.parent / "examples"
    portraits = [handle_file(str(examples / "portrait_astronaut.png")),
                 handle_file(str(examples / "portrait_cameraman.png")), None, None]
    settings = ["Audio per character", "", "row", True, True, 1, 4]  # mode, script, layout, captions, crop, nfe, seed
    slots = [*portraits, "Ana", "Ben", "", "", "", "", "", "", handle_file(str(media["audio"])), None, None, None]
    video, timeline, summary, seed = client.predict(2, *settings, *slots, api_name="/converse")
    info = probe_video(video["video"] if isinstance(video, dict) else video)
    assert info["frames"] == 33 and (info["width"], info["height"]) == (128, 64 + 14)  # two tiles + captions
    assert seed == 4 and "**2 characters**, row layout" in summary and "seed **4**" in summary
    rows = json.loads(timeline["plot"])["layout"]["yaxis"]["categoryarray"]
    assert rows == ["Ben", "Ana"]  # one row per character, the first at the top
    with pytest.raises(AppError, match="maximum|at most 4"):  # the app's limit (the engine takes any number)
        client.predict(5, *settings, *slots, api_name="/converse")


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
    # every endpoint and keyword argument the App API example of docs/app.md uses exists on the app
    api = (root / "docs" / "app.md").read_text(encoding="utf-8").split("## App API", 1)[1]
    endpoints = Client(served[0], verbose=False).view_api(print_info=False, return_format="dict")["named_endpoints"]
    for name in set(re.findall(r'api_name="(/\w+)"', api)):
        assert name in endpoints, name
    generate_params = {p["parameter_name"] for p in endpoints["/generate"]["parameters"]}
    example = api[api.index('api_name="/analyze"'):api.index('api_name="/generate"')]
    assert set(re.findall(r"(\w+)=", example)) - {"api_name"} <= generate_params


# ============================================================================ Video tab
def test_video_api_example_in_the_docs_runs(served, monkeypatch):
    """docs/video.md's gradio_client example, run as written against the served app (NFE 2)."""
    import re

    from float_core.media.video import probe_video

    root = Path(__file__).resolve().parent.parent
    section = (root / "docs" / "video.md").read_text(encoding="utf-8").split("### App API (gradio_client)", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, flags=re.S).group(1)
    code = code.replace('"http://127.0.0.1:7860/"', repr(served[0])).replace("nfe=10", "nfe=2")
    monkeypatch.chdir(root)  # the example's paths are relative to the checkout
    scope: dict = {}
    from helpers import one_torch_thread

    with one_torch_thread():  # frame-by-frame tiny ops (see helpers.one_thread_module)
        exec(compile(code, "docs/video.md", "exec"), scope)  # noqa: S102 - our own documentation
    dubbed, driven = (Path(v["video"] if isinstance(v, dict) else v) for v in (scope["dubbed"], scope["driven"]))
    info = probe_video(dubbed)
    assert info["frames"] == 100 and (info["width"], info["height"]) == (256, 256)  # the speech's 4 s, the clip's size
    assert info["audio_seconds"] == pytest.approx(4.0, abs=0.05)
    assert scope["summary"].startswith("Drive: **74 frames**")
    info = probe_video(driven)
    assert info["frames"] == 74 and info["audio_codec"] == "aac"  # the clip's length and its sound
    assert scope["seed"] == 0
