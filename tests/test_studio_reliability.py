"""FLOAT Studio reliability: ordered generations per session, bounded CPU caches, retrying a
failed model load, and a face detector shared by threads."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("FLOAT_TEST_MODEL", "tiny-random")

from float_core.config import SamplingConfig  # noqa: E402
from float_studio import handlers as h  # noqa: E402
from float_studio import state as st  # noqa: E402
from float_studio.model import PipelineHolder  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def pipe():
    from float_core.pipeline import FloatPipeline

    return FloatPipeline.from_pretrained("tiny-random", device="cpu")


@pytest.fixture(scope="module")
def speech(tmp_path_factory) -> str:
    import soundfile as sf

    path = tmp_path_factory.mktemp("speech") / "speech.wav"
    t = np.arange(int(0.8 * 16000)) / 16000
    sf.write(path, (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), 16000)
    return str(path)


def _portraits() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(5)
    return (rng.integers(0, 256, (64, 64, 3), dtype=np.uint8), rng.integers(0, 256, (80, 72, 3), dtype=np.uint8))


def _frame(pipe, gen: st.Generation, k: int) -> np.ndarray:
    """Frame k decoded from the generation's own portrait and motion (the consistent answer)."""
    from float_core.pipeline import frames_to_uint8

    return frames_to_uint8(pipe.decode_frames(gen.source, gen.motion[k:k + 1]))[0]


# ============================================================================ ordering
def test_preview_during_a_regeneration_never_mixes_two_generations(pipe, speech, monkeypatch):
    """A race: a slider dragged while a re-generation with a new portrait runs.

    The re-generation is held inside its motion sampling, after the new portrait was analysed.
    The old app kept the new portrait in the session at that point and decoded the old motion
    on it; now the preview must show the previous generation, consistently, until the new one
    is complete, and the new one afterwards.
    """
    holder = PipelineHolder(lambda: pipe)
    sess = st.Session()
    first, second = _portraits()
    cfg = SamplingConfig(nfe=2, seed=1)
    *_, old = h.generate(holder, sess, first, speech, False, cfg)

    in_sampling, release = threading.Event(), threading.Event()
    original = pipe.iter_motion

    def held_iter_motion(*args, **kwargs):
        in_sampling.set()
        assert release.wait(60)
        yield from original(*args, **kwargs)

    monkeypatch.setattr(pipe, "iter_motion", held_iter_motion)
    result: dict[str, object] = {}
    worker = threading.Thread(target=lambda: result.setdefault("gen", list(
        h.generate(holder, sess, second, speech, False, cfg))[-1]))
    worker.start()
    try:
        assert in_sampling.wait(60), "the re-generation did not reach sampling"
        during = h.preview(holder, sess, 4, h.Edits(np.zeros(20, np.float32)))
    finally:
        release.set()
        worker.join(60)
    new = result["gen"]
    assert isinstance(new, st.Generation) and new.version > old.version
    old_frame, new_frame = _frame(pipe, old, 4), _frame(pipe, new, 4)
    from float_core.pipeline import frames_to_uint8

    mixed = frames_to_uint8(pipe.decode_frames(new.source, old.motion[4:5]))[0]  # what the old app showed
    assert not np.array_equal(mixed, old_frame)
    assert np.abs(during.astype(int) - old_frame.astype(int)).max() <= 1, "preview mixed two generations"
    after = h.preview(holder, sess, 4, h.Edits(np.zeros(20, np.float32)))
    assert np.abs(after.astype(int) - new_frame.astype(int)).max() <= 1 and sess.current is new


def test_a_preview_overtaken_by_a_new_generation_is_reported_stale(pipe, speech, monkeypatch):
    holder = PipelineHolder(lambda: pipe)
    sess = st.Session()
    first, second = _portraits()
    *_, old = h.generate(holder, sess, first, speech, False, SamplingConfig(nfe=2, seed=1))
    *_, newer = h.generate(holder, st.Session(), second, speech, False, SamplingConfig(nfe=2, seed=2))
    decode = pipe.preview_frame

    def decode_then_replace(*args, **kwargs):
        out = decode(*args, **kwargs)
        sess.install(st.Generation(**{**newer.__dict__, "version": sess.next_version()}))
        return out

    monkeypatch.setattr(pipe, "preview_frame", decode_then_replace)
    assert h.preview(holder, sess, 2, h.Edits(np.zeros(20, np.float32))) is None  # not shown
    monkeypatch.setattr(pipe, "preview_frame", decode)
    assert h.preview(holder, sess, 2, h.Edits(np.zeros(20, np.float32))) is not None


def test_an_older_generation_never_replaces_a_newer_one(pipe, speech):
    holder = PipelineHolder(lambda: pipe)
    sess = st.Session()
    first, _ = _portraits()
    *_, gen = h.generate(holder, sess, first, speech, False, SamplingConfig(nfe=2, seed=1))
    newer = st.Generation(**{**gen.__dict__, "version": sess.next_version()})
    assert sess.install(newer) and not sess.install(gen) and sess.current is newer


# ============================================================================ caches
def test_lru_cache_is_bounded_in_bytes_and_keeps_cpu_copies():
    import torch

    cache = st.LRUCache(max_bytes=3 * 4000)
    for i in range(5):
        cache.put(i, torch.zeros(1000))  # 4000 bytes each
        assert cache.total_bytes <= 3 * 4000
    assert cache.keys() == [2, 3, 4]
    assert cache.get(2) is not None and cache.keys() == [3, 4, 2]  # a hit is the most recent
    cache.put(5, torch.zeros(1000))
    assert cache.keys() == [4, 2, 5] and cache.get(3) is None
    big = st.LRUCache(max_bytes=10)
    big.put("only", torch.zeros(100))
    assert big.keys() == ["only"]  # the newest entry stays even when it alone is larger


def test_session_cache_holds_analyses_on_the_cpu_within_its_bound(pipe, speech, monkeypatch):
    monkeypatch.setenv("FLOAT_SESSION_CACHE_MB", "0.5")
    holder = PipelineHolder(lambda: pipe)
    sess = st.Session()
    assert sess.cache.max_bytes == 2**19
    rng = np.random.default_rng(0)
    for seed in range(4):
        image = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
        list(h.generate(holder, sess, image, speech, False, SamplingConfig(nfe=1, seed=seed)))
        assert sess.cache.total_bytes <= sess.cache.max_bytes or len(sess.cache) == 1
    import torch

    for key in sess.cache.keys():
        value = sess.cache.get(key)
        tensors = [v for v in _tensors(value)]
        assert tensors and all(t.device.type == "cpu" for t in tensors), key
    assert all(t.device.type == "cpu" for t in _tensors(sess.current))  # the generation too
    assert torch.is_tensor(sess.current.motion)


def _tensors(value):
    import dataclasses

    import torch

    if torch.is_tensor(value):
        yield value
    elif isinstance(value, tuple):
        for v in value:
            yield from _tensors(v)
    elif dataclasses.is_dataclass(value):
        for f in dataclasses.fields(value):
            yield from _tensors(getattr(value, f.name))


def test_to_device_moves_only_what_is_elsewhere(pipe):
    source = pipe.prepare_image(_portraits()[0], crop=False)
    assert source.to("cpu") is source  # already there: no copy
    meta = source.to("meta")  # a device that is not the CPU
    assert all(t.device.type == "meta" for t in _tensors(meta))
    assert meta.crop_box is source.crop_box and isinstance(meta.features, tuple)
    assert st.nbytes(source) == sum(t.numel() * t.element_size() for t in _tensors(source))


# ============================================================================ model loading
def test_pipeline_holder_loads_once_and_can_retry_after_a_failure():
    calls = []

    def good():
        calls.append(1)
        time.sleep(0.05)
        return "PIPE"

    holder = PipelineHolder(good)
    threads = [threading.Thread(target=holder.get) for _ in range(4)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert holder.get() == "PIPE" and len(calls) == 1

    state = {"present": False}

    def flaky():
        if not state["present"]:
            raise FileNotFoundError("checkpoints/float.pth not found")
        return "PIPE"

    broken = PipelineHolder(flaky, retry_after=3600)
    with pytest.raises(RuntimeError, match="float.pth not found"):
        broken.get()
    banner = broken.status_markdown()
    assert "float.pth not found" in banner and "FLOAT_TEST_MODEL=tiny-random" in banner and "Retry" in banner
    attempts = broken.attempts
    state["present"] = True  # the weights were put in place
    with pytest.raises(RuntimeError):
        broken.get()  # within retry_after: the failure is remembered, nothing reloaded
    assert broken.attempts == attempts
    assert broken.retry() and broken.get() == "PIPE" and broken.error is None
    soon = PipelineHolder(flaky, retry_after=0.0)
    state["present"] = False
    assert not soon.available()
    state["present"] = True
    assert soon.available()  # after retry_after, get() loads again by itself


def test_missing_weights_are_downloaded_at_start_up(monkeypatch, tmp_path):
    import float_core.weights as weights
    from float_studio import model

    root = tmp_path / "ckpt"
    calls = []

    def fake_download(repo_id=None, local_dir="checkpoints", token=None):
        calls.append(Path(local_dir))
        (Path(local_dir) / "float.pth").parent.mkdir(parents=True, exist_ok=True)
        (Path(local_dir) / "float.pth").write_bytes(b"x")
        return Path(local_dir)

    monkeypatch.setattr(weights, "download_weights", fake_download)
    assert model.ensure_weights(root) == root and calls == [root]
    assert model.ensure_weights(root) == root and calls == [root]  # present now: no second download
    monkeypatch.setenv(model.AUTO_DOWNLOAD_ENV, "0")
    with pytest.raises(weights.WeightsError, match="automatic download is off"):
        model.ensure_weights(tmp_path / "other")
    assert calls == [root]


def test_offline_start_up_fails_fast_and_the_banner_says_what_and_where(monkeypatch, tmp_path):
    monkeypatch.delenv("FLOAT_TEST_MODEL", raising=False)
    monkeypatch.setenv("FLOAT_CHECKPOINT_DIR", str(tmp_path / "ckpt"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    holder = PipelineHolder()
    t0 = time.perf_counter()
    assert not holder.available()
    assert time.perf_counter() - t0 < 10
    banner = holder.status_markdown()
    assert "generation is disabled" in banner
    for part in ("float.pth", "wav2vec2-base-960h", "wav2vec-english-speech-emotion-recognition"):
        assert str(tmp_path / "ckpt" / part) in banner  # exactly where each file goes
    assert "offline" in banner and "FLOAT_TEST_MODEL=tiny-random" in banner


# ============================================================================ face detector
def test_the_shared_face_detector_is_safe_under_concurrent_calls():
    """Eight threads detect on different images with the one cached detector; every result
    equals the sequential one (OpenCV's DNN nets keep per-call buffers)."""
    from PIL import Image

    from float_core.media.face import default_detector, detect_faces
    from float_core.media.image import load_image

    photo = load_image(ROOT / "examples" / "portrait_astronaut.png")
    images = [np.asarray(Image.fromarray(photo).resize((s, s))) for s in (512, 448, 384, 320)] * 2
    expected = [detect_faces(im) for im in images]
    assert all(len(e) == 1 for e in expected)
    results: list = [None] * len(images)
    barrier = threading.Barrier(len(images))

    def work(i):
        barrier.wait()
        for _ in range(3):
            results[i] = detect_faces(images[i])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(images))]
    [t.start() for t in threads]
    [t.join(120) for t in threads]
    assert results == expected
    assert default_detector() is default_detector()


def test_locked_detector_serialises_calls():
    from float_core.media.face import FaceDetection, LockedDetector

    inside, overlaps = [0], []

    def racy(image):
        inside[0] += 1
        overlaps.append(inside[0])
        time.sleep(0.01)
        inside[0] -= 1
        return [FaceDetection((0, 0, 1, 1), 1.0)]

    locked = LockedDetector(racy)
    threads = [threading.Thread(target=locked, args=(None,)) for _ in range(6)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert overlaps == [1] * 6  # never two calls inside the detector at once
