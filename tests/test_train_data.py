"""Training data: synthetic talking faces, `prepare`, precomputation and the stage datasets."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from torch.utils.data import DataLoader

from float_core.media import detect_faces, load_audio, probe_video
from float_core.media.face import CropBox, extract_crop
from float_core.media.video import VideoWriter
from float_core.train import prepare as prepare_mod
from float_core.train.data import (
    ClipStore,
    DatasetError,
    Stage1Dataset,
    Stage2Dataset,
    frames_to_tensor,
)
from float_core.train.prepare import (
    LandmarkDetectorError,
    iter_frames_at_fps,
    main,
    precompute_conditions,
    precompute_landmarks,
    precompute_motion,
    prepare_dataset,
)
from float_core.train.synthetic import BROKEN_FILES, envelope, make_synthetic_clip, make_synthetic_dataset

SIZE = 128  # synthetic video frames
CROP = 64  # prepared crops (= the tiny model's image size)
MIN_SECONDS = 1.0


def _decode(path: Path) -> np.ndarray:
    import av

    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return make_synthetic_clip(tmp_path_factory.mktemp("clip") / "talk.mp4", seconds=2.0, seed=3, size=SIZE)


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    return make_synthetic_dataset(tmp_path_factory.mktemp("videos"), num_clips=2, seconds=1.68, seed=0, size=SIZE)


@pytest.fixture(scope="module")
def prepared(videos, tmp_path_factory):
    out = tmp_path_factory.mktemp("prepared") / "data"
    report = prepare_dataset(videos.folder, out, size=CROP, min_seconds=MIN_SECONDS, progress=False)
    return out, report


@pytest.fixture(scope="module")
def tiny_model():
    from float_core.pipeline import FloatPipeline

    return FloatPipeline.tiny_random().model


@pytest.fixture(scope="module")
def precomputed(prepared, tiny_model, tmp_path_factory):
    root = tmp_path_factory.mktemp("precomputed") / "data"
    shutil.copytree(prepared[0], root)
    precompute_conditions(root, tiny_model, progress=False)
    precompute_motion(root, tiny_model.motion_autoencoder, batch_size=16, progress=False)
    return root


class FakeLandmarks:
    """A landmark detector for tests: call k returns a fixed face shifted by (0.25 k, 0.1 k) in
    the 64-px crop, or None for the calls in ``none_at``; every result is kept in ``outputs``."""

    def __init__(self, none_at=()):
        rng = np.random.default_rng(0)
        self.base = np.empty((68, 2), np.float32)
        self.base[:] = rng.uniform(8, 56, (68, 2))  # jaw, brows, nose: anywhere on the face
        for sl, (cx, cy), r in ((slice(36, 42), (20, 24), 3), (slice(42, 48), (40, 24), 3),
                                (slice(48, 68), (30, 44), 6)):
            self.base[sl] = np.array([cx, cy]) + rng.uniform(-r, r, (sl.stop - sl.start, 2))
        self.none_at, self.outputs = set(none_at), []

    def __call__(self, frame):
        assert frame.shape == (CROP, CROP, 3) and frame.dtype == np.uint8
        k = len(self.outputs)
        out = None if k in self.none_at else self.base + np.float32([0.25 * k, 0.1 * k])
        self.outputs.append(out)
        return out


@pytest.fixture(scope="module")
def landmarked(prepared, tmp_path_factory):
    """The prepared set with landmarks by :class:`FakeLandmarks`: no face in frames 3 and 10 of
    the first clip and 0 of the second (42 frames each)."""
    root = tmp_path_factory.mktemp("landmarked") / "data"
    shutil.copytree(prepared[0], root)
    fake = FakeLandmarks(none_at={3, 10, 42})
    done = precompute_landmarks(root, detector=fake, progress=False)
    return root, fake, done


# ----------------------------------------------------------------------------- synthetic data
def test_envelope_known_values():
    assert np.allclose(envelope(np.full(1300, 0.5, np.float32)), [0.5, 0.5])  # trailing 20 samples dropped
    t = np.arange(640 * 4) / 16000
    sine = 0.3 * np.sin(2 * np.pi * 200 * t)  # 200 Hz: whole periods in every 640-sample window
    assert np.allclose(envelope(sine), 0.3 / np.sqrt(2), atol=1e-6)
    steps = np.concatenate([np.zeros(640), np.ones(640), -2 * np.ones(640)])
    assert envelope(steps).tolist() == [0.0, 1.0, 2.0]
    with pytest.raises(ValueError, match="1-D"):
        envelope(np.zeros((10, 2)))


def test_synthetic_clip_file(clip):
    info = probe_video(clip.path)
    assert info["frames"] == 50 == clip.num_frames
    assert (info["fps"], info["width"], info["height"]) == (25.0, SIZE, SIZE)
    assert (info["video_codec"], info["audio_codec"]) == ("h264", "aac")
    assert 2.0 <= info["audio_seconds"] <= 2.0 + 1024 / 16000  # AAC pads to whole 1024-sample frames
    # The audio is speech-like: loud syllables and silences, so the mouth really moves.
    env = clip.envelope
    assert env.max() > 0.1 and env.min() < 0.1 * env.max()
    assert env.std() > 0.4 * env.mean()


def test_mouth_follows_audio_envelope(clip):
    # By construction ...
    assert np.corrcoef(clip.mouth, clip.envelope)[0, 1] > 0.99
    # ... and in the files: the envelope of the decoded AAC track matches the drawn one, and
    # the dark inner-mouth area counted in the decoded H.264 frames follows it.
    decoded_env = envelope(load_audio(clip.path))[: clip.num_frames]
    assert np.corrcoef(decoded_env, clip.envelope)[0, 1] > 0.99
    frames = _decode(clip.path).astype(int)
    lower = frames[:, SIZE // 2:]
    r, g, b = lower[..., 0], lower[..., 1], lower[..., 2]
    dark_red = ((r < 110) & (g < 50) & (b < 60) & (r > g + 15)).sum(axis=(1, 2))
    assert dark_red.max() > 5 * max(dark_red.min(), 1)
    assert np.corrcoef(dark_red, clip.mouth)[0, 1] > 0.9


def test_synthetic_face_is_detected(clip):
    frames = _decode(clip.path)
    for k in (0, 12, 25, 49):
        faces = detect_faces(frames[k])
        assert faces, f"no face detected in frame {k}"
        x1, y1, x2, y2 = faces[0].box
        cx, cy = clip.face_center
        assert abs((x1 + x2) / 2 - cx) < 0.1 * SIZE and abs((y1 + y2) / 2 - cy) < 0.15 * SIZE
        assert 0.3 * SIZE < x2 - x1 < 0.9 * SIZE


def test_no_face_frame_is_not_detected(videos):
    frames = _decode(videos.folder / "noface.mp4")
    assert detect_faces(frames[0]) == []


# ----------------------------------------------------------------------------- resampling
@pytest.mark.parametrize("src_fps, expected", [
    (50, list(range(0, 50, 2))),  # every second frame
    (25, list(range(25))),  # unchanged
    # 10 fps: instant k/25 takes the nearest of the frames at i/10;
    # the last frame (0.9 s) covers up to 0.95 s, so 24 instants.
    (10, [0, 0, 1, 1, 2, 2, 2, 3, 3, 4, 4, 4, 5, 5, 6, 6, 6, 7, 7, 8, 8, 8, 9, 9]),
])
def test_iter_frames_at_fps_picks_nearest_frames(tmp_path, src_fps, expected):
    import av

    path = tmp_path / f"count_{src_fps}.mp4"
    with VideoWriter(path, fps=src_fps) as writer:
        for i in range(src_fps):  # one second; frame i is uniformly grey at level 4 * i
            writer.write(np.full((32, 32, 3), 4 * i, np.uint8))
    with av.open(str(path)) as container:
        got = [int(round(f.to_ndarray(format="rgb24").mean() / 4)) for _, f in iter_frames_at_fps(container)]
    assert got == expected


# ----------------------------------------------------------------------------- prepare
def test_prepare_index_lists_good_clips_and_skips_broken(prepared, videos):
    out, report = prepared
    index = json.loads((out / "index.json").read_text())
    assert (index["format"], index["version"], index["fps"], index["sample_rate"], index["image_size"]) == (
        "float-studio-dataset", 1, 25, 16000, CROP)
    by_source = {c["source"]: c for c in index["clips"]}
    assert set(by_source) == {"clip_000.mp4", "speaker_b/clip_001.mp4"}
    assert {c["id"] for c in index["clips"]} == {"clip_000", "speaker_b__clip_001"}
    for source, entry in by_source.items():
        path = videos.folder / source
        expected = min(probe_video(path)["frames"], load_audio(path).size // 640)
        assert entry["num_frames"] == expected == 42  # 42 frames; AAC padding gives 43 * 640 samples
        assert entry["dir"] == f"clips/{entry['id']}"
    skipped = {s["source"]: s["reason"] for s in index["skipped"]}
    assert set(skipped) == set(BROKEN_FILES)
    for name, word in BROKEN_FILES.items():
        assert word in skipped[name], f"{name}: {skipped[name]!r} should mention {word!r}"
    assert sorted(report.prepared) == ["clip_000", "speaker_b__clip_001"] and report.reused == []
    assert "2 clips prepared" in report.summary() and "5 skipped" in report.summary()


def test_prepared_frames_and_audio(prepared, videos):
    out, _ = prepared
    store = ClipStore(out)
    assert len(store) == 2 and store.total_frames == 84
    for clip in store.clips:
        offsets = np.load(clip.dir / "frames_offsets.npy")
        assert offsets.dtype == np.int64 and offsets.shape == (clip.num_frames + 1,)
        assert offsets[0] == 0 and offsets[-1] == (clip.dir / "frames.bin").stat().st_size
        frames = store.frames(clip, range(clip.num_frames))
        assert frames.shape == (clip.num_frames, CROP, CROP, 3) and frames.dtype == np.uint8
        info = sf.info(str(clip.dir / "audio.wav"))
        assert (info.samplerate, info.channels, info.frames, info.subtype) == (16000, 1, clip.num_frames * 640, "FLOAT")
        audio = store.audio(clip)
        source = load_audio(videos.folder / clip.source)
        np.testing.assert_array_equal(audio, source[: clip.num_frames * 640])
    with pytest.raises(IndexError, match="0..41"):
        store.frames(store.clips[0], [42])


def test_prepared_crop_box_is_fixed_and_holds_the_face(prepared, videos):
    out, _ = prepared
    store = ClipStore(out)
    truth = {c.path.relative_to(videos.folder).as_posix(): c for c in videos.clips}
    for entry in store.index["clips"]:
        x0, y0, side = entry["crop_box"]
        cx, cy = truth[entry["source"]].face_center
        assert x0 < cx < x0 + side and y0 < cy < y0 + side
        assert abs(x0 + side / 2 - cx) < 0.1 * SIZE  # centred on the face, not just touching it
        assert entry["faces_found"][0] == entry["faces_found"][1] == 9  # every 5th of 42 frames
        # Every stored frame is the same box cut out of the source frame.
        source = _decode(videos.folder / entry["source"])
        box = CropBox(x0, y0, side)
        for k in (0, 20, entry["num_frames"] - 1):
            expected = extract_crop(source[k], box, CROP).astype(int)
            got = store.frames(entry["id"], [k])[0].astype(int)
            assert np.abs(got - expected).mean() < 3.0  # JPEG q95 only


def test_prepare_resumes_and_overwrites(prepared, tmp_path, videos):
    out = tmp_path / "data"
    shutil.copytree(prepared[0], out)
    stamp = {p: p.stat().st_mtime_ns for p in out.glob("clips/*/frames.bin")}
    (out / "clips" / ".tmp-half-done-123").mkdir()  # what a crash would leave
    report = prepare_dataset(videos.folder, out, size=CROP, min_seconds=MIN_SECONDS, progress=False)
    assert report.prepared == [] and sorted(report.reused) == ["clip_000", "speaker_b__clip_001"]
    assert {p: p.stat().st_mtime_ns for p in out.glob("clips/*/frames.bin")} == stamp
    assert not (out / "clips" / ".tmp-half-done-123").exists()
    assert json.loads((out / "index.json").read_text())["clips"] == json.loads(
        (prepared[0] / "index.json").read_text())["clips"]
    with pytest.raises(DatasetError, match="64 px"):
        prepare_dataset(videos.folder, out, size=32, progress=False)
    report = prepare_dataset(videos.folder, out, size=CROP, min_seconds=MIN_SECONDS, progress=False, overwrite=True)
    assert sorted(report.prepared) == ["clip_000", "speaker_b__clip_001"] and report.reused == []
    assert sorted(p.name for p in (out / "clips").iterdir()) == ["clip_000", "speaker_b__clip_001"]


def test_a_failing_clip_is_skipped_and_leaves_nothing(videos, tmp_path, monkeypatch):
    def fail(path, box, num_frames, size, folder, bar):
        (folder / "frames.bin").write_bytes(b"partial")
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(prepare_mod, "_write_frames", fail)
    out = tmp_path / "data"
    report = prepare_dataset(videos.folder, out, size=CROP, min_seconds=MIN_SECONDS, progress=False)
    assert report.num_clips == 0
    reasons = {s.source: s.reason for s in report.skipped}
    assert "disk on fire" in reasons["clip_000.mp4"] and "disk on fire" in reasons["speaker_b/clip_001.mp4"]
    assert list((out / "clips").iterdir()) == []
    with pytest.raises(DatasetError, match="no clips"):
        Stage1Dataset(ClipStore(out), CROP)


def test_prepare_command_line(videos, tmp_path, capsys):
    out = tmp_path / "data"
    assert main(["--videos", str(videos.folder), "--out", str(out), "--size", "32",
                 "--min-seconds", "1", "--detect-every", "10", "-q"]) == 0
    printed = capsys.readouterr().out
    assert "2 clips prepared" in printed and "5 skipped" in printed and "no face" in printed
    assert ClipStore(out).frames("clip_000", [0]).shape == (1, 32, 32, 3)
    assert main(["--out", str(out)]) == 2  # nothing to do
    assert main(["--out", str(out), "--emotion"]) == 2  # a model is needed
    assert main(["--out", str(out), "--emotion", "--weights", "tiny-random", "-q"]) == 0
    assert ClipStore(out).emotion("clip_000").shape == (7,)


# ----------------------------------------------------------------------------- store errors
def test_store_explains_what_is_wrong(tmp_path, prepared):
    with pytest.raises(DatasetError, match="not a prepared dataset.*float_core.train prepare"):
        ClipStore(tmp_path)
    (tmp_path / "index.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(DatasetError, match="float-studio-dataset"):
        ClipStore(tmp_path)
    store = ClipStore(prepared[0])
    assert store.audio_features("clip_000") is None and store.motion("clip_000") is None
    with pytest.raises(DatasetError, match=r"2 of 2 clips lack audio_features.npy.*--audio-features"):
        store.require("audio_features")
    with pytest.raises(DatasetError, match="lack motion.npy"):
        Stage2Dataset(store, num_frames=10, num_prev_frames=2)


# ----------------------------------------------------------------------------- precompute
def test_precomputed_conditions_match_the_model(precomputed, tiny_model):
    from float_core.models.conditions import normalize_audio

    store = ClipStore(precomputed)
    store.require("audio_features", "emotion", "motion")
    index = json.loads((precomputed / "index.json").read_text())
    assert index["precomputed"]["audio_features"]["dim"] == 32  # 2 layers x 16 hidden
    assert index["precomputed"]["motion"] == {"dim": 32, "image_size": 64}
    for entry in index["clips"]:
        assert (entry["audio_features_dim"], entry["emotion_dim"], entry["motion_dim"]) == (32, 7, 32)
    clip = store.clips[0]
    feats = store.audio_features(clip)
    assert feats.dtype == np.float16 and feats.shape == (clip.num_frames, 32)
    with torch.no_grad():
        audio = normalize_audio(torch.from_numpy(store.audio(clip))[None])
        direct = tiny_model.audio_encoder.encode(audio).stacked[0].numpy()
        probs = tiny_model.emotion_encoder(audio)[0].numpy()
    assert np.abs(feats.astype(np.float32) - direct).max() <= 1e-3 * max(1.0, np.abs(direct).max())
    emotion = store.emotion(clip)
    assert emotion.dtype == np.float32 and emotion.shape == (7,)
    np.testing.assert_allclose(emotion, probs, atol=1e-6)
    assert emotion.sum() == pytest.approx(1.0, abs=1e-5)


def test_precomputed_motion_matches_the_encoder(precomputed, tiny_model):
    store = ClipStore(precomputed)
    clip = store.clips[1]
    motion = store.motion(clip)
    assert motion.dtype == np.float32 and motion.shape == (clip.num_frames, 32)
    ae = tiny_model.motion_autoencoder
    with torch.no_grad():
        _, lam, _ = ae.encode(frames_to_tensor(store.frames(clip, [0, 17, 39]), 64))
        expected = ae.lambda_to_motion(lam).numpy()
    np.testing.assert_allclose(motion[[0, 17, 39]], expected, atol=1e-5)
    # The latents lie in the span of the motion basis (paper Eq. 1).
    basis = ae.basis().detach().numpy()
    np.testing.assert_allclose(motion @ basis @ basis.T, motion, atol=1e-5)
    # A second run keeps what exists.
    assert precompute_motion(precomputed, ae, progress=False) == []


# ----------------------------------------------------------------------------- datasets
def test_stage1_dataset(prepared):
    store = ClipStore(prepared[0])
    data = Stage1Dataset(store, image_size=32, seed=0)
    item = data[7]
    assert set(item) == {"source", "driving"}
    for x in item.values():
        assert x.shape == (3, 32, 32) and x.dtype == torch.float32
        assert -1.0 <= x.min() < -0.5 and 0.5 < x.max() <= 1.0
    assert not torch.equal(item["source"], item["driving"])
    again = data[7]
    assert all(torch.equal(item[k], again[k]) for k in item)
    other = Stage1Dataset(store, image_size=32, seed=1)[7]
    assert not torch.equal(item["source"], other["source"]) or not torch.equal(item["driving"], other["driving"])
    # Full-size items are the stored frames mapped to [-1, 1].
    full = Stage1Dataset(store, image_size=CROP, seed=0)[0]
    assert full["source"].shape == (3, CROP, CROP)
    frames = [store.frames(c, range(c.num_frames)) for c in store.clips]
    pool = torch.from_numpy(np.concatenate(frames)).permute(0, 3, 1, 2).float() / 127.5 - 1
    assert (pool - full["source"]).abs().flatten(1).max(1).values.min() < 1e-6
    # DataLoader with the resumable sampler: batch b holds items 4b .. 4b+3.
    loader = DataLoader(data, batch_size=4, sampler=range(4, 12), num_workers=0)
    batches = list(loader)
    assert len(batches) == 2 and batches[0]["source"].shape == (4, 3, 32, 32)
    assert torch.equal(batches[0]["driving"][3], data[7]["driving"])
    # Picklable for worker processes, and the copy gives the same items.
    clone = pickle.loads(pickle.dumps(data))
    assert torch.equal(clone[7]["source"], item["source"])


def test_stage2_dataset(precomputed):
    store = ClipStore(precomputed)
    data = Stage2Dataset(store, num_frames=10, num_prev_frames=2, seed=0)
    assert data.window == 12 and len(data) > 10**15
    item = data[3]
    assert {k: tuple(v.shape) for k, v in item.items()} == {
        "motion": (12, 32), "audio": (12, 32), "emotion": (7,), "source_motion": (32,)}
    assert all(v.dtype == torch.float32 for v in item.values())
    # The window is a contiguous slice of one clip's stored arrays, audio and motion aligned.
    matches = []
    for clip in store.clips:
        motion, feats = np.asarray(store.motion(clip)), np.asarray(store.audio_features(clip), np.float32)
        for s in range(clip.num_frames - 12 + 1):
            if np.array_equal(motion[s:s + 12], item["motion"].numpy()):
                matches.append((clip.id, s))
                np.testing.assert_array_equal(feats[s:s + 12], item["audio"].numpy())
                np.testing.assert_array_equal(store.emotion(clip), item["emotion"].numpy())
                assert any(np.array_equal(row, item["source_motion"].numpy()) for row in motion)
    assert len(matches) == 1
    again = data[3]
    assert all(torch.equal(item[k], again[k]) for k in item)
    other = Stage2Dataset(store, num_frames=10, num_prev_frames=2, seed=5)[3]
    assert not torch.equal(item["motion"], other["motion"])
    starts = set()
    for i in range(40):  # windows start anywhere in [0, T - 12], both clips are used
        m = data[i]["motion"].numpy()
        for clip in store.clips:
            motion = np.asarray(store.motion(clip))
            starts.update((clip.id, s) for s in range(42 - 12 + 1) if np.array_equal(motion[s:s + 12], m))
    assert len({c for c, _ in starts}) == 2 and len(starts) > 15
    batch = next(iter(DataLoader(data, batch_size=3, sampler=range(0, 3))))
    assert batch["motion"].shape == (3, 12, 32) and torch.equal(batch["motion"][2], data[2]["motion"])
    with pytest.raises(DatasetError, match="no clip .* at least L'\\+L = 60"), \
            pytest.warns(UserWarning, match="2 clip"):
        Stage2Dataset(store, num_frames=50, num_prev_frames=10)


# ----------------------------------------------------------------------------- landmarks
def test_precompute_landmarks_stores_the_detector_output(landmarked):
    root, fake, done = landmarked
    store = ClipStore(root)
    assert done == ["clip_000", "speaker_b__clip_001"] and len(fake.outputs) == 84
    for c, clip in enumerate(store.clips):
        lm = store.landmarks(clip)
        assert lm.dtype == np.float32 and lm.shape == (42, 68, 2)
        outputs = fake.outputs[42 * c: 42 * (c + 1)]
        found = np.stack([o for o in outputs if o is not None])
        median = np.median(found, axis=0)
        for k, out in enumerate(outputs):
            np.testing.assert_array_equal(lm[k], median if out is None else out)
    # Frame 3 of clip 0 (no face) holds the median of the other 40 frames: shift (0.25, 0.1) x 21.5.
    np.testing.assert_allclose(store.landmarks("clip_000")[3], fake.base + np.float32([5.375, 2.15]), atol=1e-5)
    index = json.loads((root / "index.json").read_text())
    assert index["precomputed"]["landmarks"]["points"] == 68
    assert index["precomputed"]["landmarks"]["frames_filled_with_median"] == 3
    assert all(entry["landmarks_dim"] == 68 for entry in index["clips"])
    assert ClipStore(root).missing("landmarks") == []
    # A second run keeps what exists (the detector is not called).
    again = FakeLandmarks()
    assert precompute_landmarks(root, detector=again, progress=False) == [] and again.outputs == []


def test_stage1_dataset_boxes_from_driving_landmarks(landmarked, prepared):
    from float_core.train.losses import boxes_from_landmarks, unstack_component_boxes

    store = ClipStore(landmarked[0])
    data = Stage1Dataset(store, image_size=32, seed=0)
    assert data.use_landmarks
    pools = {c.id: frames_to_tensor(store.frames(c, range(c.num_frames)), 32) for c in store.clips}
    for i in (0, 5, 7):
        item = data[i]
        assert set(item) == {"source", "driving", "boxes"}
        assert item["boxes"].dtype == torch.float32 and item["boxes"].shape == (3, 4)
        # The driving frame: the one stored frame the item's driving image is.
        hits = [(cid, k) for cid, pool in pools.items() for k in range(len(pool))
                if (pool[k] - item["driving"]).abs().max() < 1e-6]
        assert hits
        expected = []
        for cid, k in hits:
            scaled = np.asarray(store.landmarks(cid)[k]) * (32 / CROP)  # 64-px crop -> 32-px model images
            b = boxes_from_landmarks(scaled, 32)
            expected.append(torch.stack([b["left_eye"], b["right_eye"], b["mouth"]]))
        assert any(torch.allclose(item["boxes"], e, atol=1e-5) for e in expected)
    # Known values: the left eye of clip 0, frame 0 (shift 0) is the template's, halved.
    eye = FakeLandmarks().base[36:42] * 0.5
    centre, side = eye.mean(0), 1.5 * (eye.max(0) - eye.min(0)).max()
    torch.testing.assert_close(data.driving_boxes("clip_000", 0)[0],
                               torch.tensor([*(centre - side / 2), *(centre + side / 2)]), atol=1e-5, rtol=0)
    batch = next(iter(DataLoader(data, batch_size=4, sampler=range(0, 4))))
    assert batch["boxes"].shape == (4, 3, 4) and torch.equal(batch["boxes"][2], data[2]["boxes"])
    assert unstack_component_boxes(batch["boxes"])["mouth"].shape == (4, 4)
    clone = pickle.loads(pickle.dumps(data))
    assert torch.equal(clone[5]["boxes"], data[5]["boxes"])
    # landmarks=False never gives boxes; a set without landmarks has none.
    assert "boxes" not in Stage1Dataset(store, image_size=32, landmarks=False)[0]
    assert "boxes" not in Stage1Dataset(ClipStore(prepared[0]), image_size=32)[0]
    with pytest.raises(DatasetError, match="2 of 2 clips lack landmarks.npy.*--landmarks"):
        Stage1Dataset(ClipStore(prepared[0]), image_size=32, landmarks=True)


def test_clip_without_landmarks_gets_no_file_and_fixed_boxes(prepared, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(prepared[0], root)
    with pytest.warns(UserWarning, match="no landmarks found in any frame of 1 clip"):
        done = precompute_landmarks(root, detector=FakeLandmarks(none_at=range(42, 84)), progress=False)
    store = ClipStore(root)
    assert done == ["clip_000"] and store.landmarks("speaker_b__clip_001") is None
    assert store.landmarks("clip_000").shape == (42, 68, 2)
    with pytest.warns(UserWarning, match="1 of 2 clips lack landmarks.npy"):
        data = Stage1Dataset(store, image_size=32)
    assert not data.use_landmarks and all("boxes" not in data[i] for i in range(4))
    with pytest.raises(ValueError, match=r"shape \(3, 2\)"):
        precompute_landmarks(root, detector=lambda frame: np.zeros((3, 2)), progress=False, overwrite=True)


def test_precompute_landmarks_without_face_alignment_fails_clearly(prepared, tmp_path, monkeypatch, capsys):
    import sys
    import types

    root = tmp_path / "data"
    shutil.copytree(prepared[0], root)
    monkeypatch.setitem(sys.modules, "face_alignment", None)  # as if not installed
    with pytest.raises(LandmarkDetectorError, match="face_alignment.*pip install face-alignment"):
        precompute_landmarks(root, progress=False)
    assert main(["--out", str(root), "--landmarks", "-q"]) == 1
    assert "pip install face-alignment" in capsys.readouterr().err
    # Installed, but offline: the weights cannot be downloaded.
    fake_module = types.ModuleType("face_alignment")
    fake_module.LandmarksType = types.SimpleNamespace(TWO_D=1)

    def offline(*args, **kwargs):
        raise OSError("<urlopen error [Errno -3] Temporary failure in name resolution>")

    fake_module.FaceAlignment = offline
    monkeypatch.setitem(sys.modules, "face_alignment", fake_module)
    with pytest.raises(LandmarkDetectorError, match="could not load its models.*hub/checkpoints"):
        precompute_landmarks(root, progress=False)
    assert ClipStore(root).missing("landmarks") == ["clip_000", "speaker_b__clip_001"]
    # The command line uses the detector and records the item in index.json.
    monkeypatch.setattr(prepare_mod, "face_alignment_detector", lambda device="cpu": FakeLandmarks())
    assert main(["--out", str(root), "--landmarks", "-q"]) == 0
    assert "landmarks computed for 2 clips" in capsys.readouterr().out
    assert json.loads((root / "index.json").read_text())["precomputed"]["landmarks"]["detector"] == "face_alignment"
    assert ClipStore(root).landmarks("speaker_b__clip_001").shape == (42, 68, 2)
