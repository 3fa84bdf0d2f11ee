"""The app on a simulated ZeroGPU Space: every tab's model-running handler runs inside a GPU
request sized from its input, calls and microphone streams say which hardware they need, and
uploads are capped. The stand-in ``spaces`` (tests/zerogpu_standin.py) pickles each handler's
arguments and results as the real one does, and the model raises outside a GPU request.

Served on 127.0.0.1 with the tiny random model, driven through gradio_client and HTTP.
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import httpx
import numpy as np
import pytest
from zerogpu_standin import FakeSpaces, ModelGuard, inheriting_start

ROOT = Path(__file__).resolve().parent.parent
ZERO = [0.0] * 20
#: The durations requested, from the defaults: 20 s margin + seconds x 8 s per audio second (CPU).
MARGIN, CPU_FIGURE = 20, 8.0


@pytest.fixture(scope="module")
def zerogpu():
    fake = FakeSpaces()
    mp = pytest.MonkeyPatch()
    mp.setitem(sys.modules, "spaces", fake.module())
    mp.setenv("SPACES_ZERO_GPU", "true")
    mp.setenv("FLOAT_MAX_UPLOAD_MB", "1")
    for name in ("FLOAT_GPU_MARGIN_SECONDS", "FLOAT_GPU_SECONDS_PER_AUDIO_SECOND", "FLOAT_MAX_SECONDS"):
        mp.delenv(name, raising=False)
    mp.setattr(threading.Thread, "start", inheriting_start)
    yield fake
    mp.undo()


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, str]:
    import soundfile as sf
    from PIL import Image

    root = tmp_path_factory.mktemp("zerogpu")
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (72, 64, 3), dtype=np.uint8)).save(root / "face.png")
    t = np.arange(int(1.3 * 16000)) / 16000
    sf.write(root / "speech.wav", (0.3 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(6 * np.pi * t))).astype(np.float32),
             16000)
    return {"image": str(root / "face.png"), "audio": str(root / "speech.wav")}


@pytest.fixture(scope="module")
def served(zerogpu):
    import app
    from float_core.pipeline import FloatPipeline
    from float_studio import server
    from float_studio.call import call_manager
    from float_studio.model import PipelineHolder

    pipe = FloatPipeline.from_pretrained("tiny-random", device="cpu")
    guard = ModelGuard(pipe)
    holder = PipelineHolder(lambda: pipe)
    assert holder.available()  # loaded before serving, as app.py does
    demo = app.build_demo(holder)
    _, url, _ = server.launch(demo, holder, prevent_thread_lock=True, server_name="127.0.0.1", quiet=True,
                              **app.launch_kwargs())
    try:
        yield url, demo, guard
    finally:
        call_manager(demo.app).close_all()
        demo.close()
        guard.remove()


def _computes(guard: ModelGuard, call):
    """Run ``call``; return its result after checking the model ran, and only inside GPU requests."""
    before = guard.inside
    result = call()
    assert guard.inside > before, "the handler ran no model compute: the check would be vacuous"
    assert guard.outside == [], guard.outside
    return result


def test_every_tabs_model_handlers_run_inside_a_gpu_request_sized_from_the_input(zerogpu, served, media):
    from gradio_client import Client, handle_file

    url, _, guard = served
    client = Client(url, verbose=False)
    image, audio = handle_file(media["image"]), handle_file(media["audio"])
    # Studio: 1.3 s of speech
    _computes(guard, lambda: client.predict(audio, "auto", api_name="/analyze"))
    out = _computes(guard, lambda: client.predict(image, audio, False, False, 2.0, 1.0, 1, "euler", "auto", 3,
                                                  api_name="/generate"))
    assert "33 frames" in out[1]
    _computes(guard, lambda: client.predict(api_name="/describe_directions"))
    # A preset needs the directions measured in the GPU worker: the session came back with them.
    client.predict("lips only", api_name="/set_preset")
    frame = _computes(guard, lambda: client.predict(5, False, *ZERO, api_name="/preview"))
    assert Path(frame).is_file()
    applied = _computes(guard, lambda: client.predict(False, *ZERO, api_name="/apply_edits"))
    assert "Re-rendered with edits" in applied[1]
    # Live: typed text (12 characters) and an upload
    for mode, text, upload in (("Text", "Hello there.", None), ("Upload", "", audio)):
        _, stats = _computes(guard, lambda: client.predict(image, mode, text, "espeak-ng", upload, True, False,
                                                           "auto", 1, 2.0, 0, api_name="/live"))
        assert "done" in stats, stats
    # Conversation: two portraits, one recording (1.3 s), the other listens
    slots = [image, image, None, None] + [""] * 8 + [audio, None, None, None]
    made = _computes(guard, lambda: client.predict(2, "Audio per character", "", "row", False, False, 1, 0, *slots,
                                                   api_name="/converse"))
    assert "**2 characters**" in made[2]
    # Video: the example clip (2.96 s) drives the portrait (whole frames: it is noise), then is dubbed
    clip = handle_file(str(ROOT / "examples" / "driving_grace_hopper.mp4"))
    driven = _computes(guard, lambda: client.predict(image, clip, None, "drive", ["head"], True, False, False, 2.0,
                                                     1.0, 1, 0, api_name="/drive"))
    assert "**74 frames**" in driven[1]
    dubbed = _computes(guard, lambda: client.predict(clip, audio, ["head", "eyes", "other"], -1, 2.0, 1.0, 1, 0,
                                                     api_name="/dub"))
    assert "**33 frames**" in dubbed[1]
    assert set(zerogpu.decorated) == {"on_analyze", "on_generate", "on_describe", "on_preview", "on_apply",
                                      "on_start", "on_converse", "on_drive", "on_dub"}
    speech = int(np.ceil(MARGIN + 1.3 * CPU_FIGURE))  # 31
    expected = [("on_analyze", speech), ("on_generate", speech),
                ("on_describe", int(np.ceil(MARGIN + 41 / 25 * CPU_FIGURE))),  # the source +- 20 directions
                ("on_preview", int(np.ceil(MARGIN + CPU_FIGURE / 25))),  # one frame
                ("on_apply", int(np.ceil(MARGIN + 33 / 25 * CPU_FIGURE))),  # the clip's 33 frames
                ("on_start", int(np.ceil(MARGIN + 12 / 10 * CPU_FIGURE))),  # 12 characters, slowest voice
                ("on_start", speech),
                ("on_converse", int(np.ceil(MARGIN + 2 * 1.3 * CPU_FIGURE))),  # two characters' video
                ("on_drive", int(np.ceil(MARGIN + 2.96 * CPU_FIGURE))),  # the clip
                ("on_dub", int(np.ceil(MARGIN + (2.96 + 1.3) * CPU_FIGURE)))]  # the clip and the speech
    assert zerogpu.requests == expected


def test_model_compute_outside_a_gpu_request_raises(served):
    """The negative control: the guard is real."""
    _, _, guard = served
    with pytest.raises(RuntimeError, match="outside a GPU scope"):
        guard.pipe.prepare_audio(np.zeros(16000, np.float32))
    assert guard.outside
    guard.outside.clear()


def test_calls_and_the_microphone_say_they_need_dedicated_gpu_hardware(served, media):
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    url, demo, guard = served
    hardware = "dedicated GPU hardware (T4, L4, A10G, L40S or A100)"
    config = httpx.get(url + "call/config").json()
    assert config["available"] is False and hardware in config["reason"]
    answer = httpx.post(url + "call/offer", json={"sdp": "v=0", "type": "offer"})
    assert answer.status_code == 503 and hardware in answer.json()["error"]
    props = {c.get("props", {}).get("elem_id"): c["props"] for c in demo.config["components"]}
    assert props["float-call-start"]["interactive"] is False
    assert hardware in props["float-call-unavailable"]["value"]
    assert hardware in props["live-zerogpu"]["value"]
    with pytest.raises(AppError, match="microphone stream") as err:
        Client(url, verbose=False).predict(handle_file(media["image"]), "Microphone", "", "espeak-ng", None, True,
                                           False, "auto", 1, 2.0, 0, api_name="/live")
    assert hardware in str(err.value)
    assert guard.outside == []


def test_uploads_over_the_cap_are_refused(served):
    url, _, _ = served
    big = httpx.post(url + "gradio_api/upload", files={"files": ("big.wav", b"\0" * (3 * 2**19))})
    assert big.status_code == 413 and "maximum allowed size of 1048576 bytes" in big.text
    small = httpx.post(url + "gradio_api/upload", files={"files": ("small.wav", b"\0" * 1000)})
    assert small.status_code == 200
