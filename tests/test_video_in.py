"""Video in (float_core.video_in): motion from a video, drive, lips from speech + head from video,
dub, and bad videos. Tiny random model (64x64 noise-like frames); the face detector runs on
small real videos made from the example portrait by a known affine motion."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from helpers import one_thread_module  # noqa: F401 - the fixture of pytestmark
import torch

from float_core.config import FPS, SAMPLE_RATE
from float_core.media.face import NoFaceError
from float_core.media.head_motion import head_motion, write_head_motion_video
from float_core.media.video import VideoWriter, probe_video
from float_core.video_in import VideoError, drive_motion, ping_pong, smooth_track

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
pytestmark = pytest.mark.usefixtures("one_thread_module")
SIDE = 192  #: test videos are SIDE x SIDE (the astronaut's face is ~45 px wide)
MOVING_FRAMES = 30  #: 1.2 s
SPEECH_FRAMES = 45  #: 1.8 s: longer than the moving video (ping-pong)
AMPLITUDE = 1.5  #: of the known head motion (float_core.media.head_motion)


def _speech(seconds: float) -> np.ndarray:
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    return (0.3 * np.sin(2 * np.pi * 180 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))).astype(np.float32)


def _decode(path: Path) -> list[np.ndarray]:
    import av

    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


@pytest.fixture(scope="module")
def pipe():
    from float_core.pipeline import FloatPipeline

    return FloatPipeline.tiny_random(device="cpu")


@pytest.fixture(scope="module")
def portrait() -> np.ndarray:
    from PIL import Image

    from float_core.media.image import load_image

    photo = Image.fromarray(load_image(EXAMPLES / "portrait_astronaut.png"))
    return np.asarray(photo.resize((SIDE, SIDE), Image.Resampling.LANCZOS))


@pytest.fixture(scope="module")
def media(tmp_path_factory, portrait) -> dict[str, Path]:
    """A moving-face video with sound, a still one (lossless: identical frames), and speech."""
    import soundfile as sf

    root = tmp_path_factory.mktemp("video_in")
    write_head_motion_video(root / "moving.mp4", portrait, MOVING_FRAMES, amplitude=AMPLITUDE,
                            audio=(_speech(MOVING_FRAMES / FPS), SAMPLE_RATE), preset="ultrafast")
    with VideoWriter(root / "still.mp4", crf=0, preset="ultrafast") as writer:
        for _ in range(12):
            writer.write(portrait)
    sf.write(root / "speech.wav", _speech(SPEECH_FRAMES / FPS), SAMPLE_RATE)
    sf.write(root / "short.wav", _speech(15 / FPS), SAMPLE_RATE)
    return {"moving": root / "moving.mp4", "still": root / "still.mp4", "speech": root / "speech.wav",
            "short": root / "short.wav", "root": root}


@pytest.fixture(scope="module")
def moving(pipe, media):
    return pipe.analyse_video(media["moving"], reference_frame="auto")


@pytest.fixture(scope="module")
def still(pipe, media):
    return pipe.analyse_video(media["still"])


#: A grouping of the 20 directions for the plumbing tests (the tiny random model's measured
#: groups depend on its noise-like frames; describe_directions is tested in test_directions.py).
GROUPING = {"head": {0, 3, 7}, "mouth": {1, 4, 9}, "eyes": {2, 5}}


@pytest.fixture(scope="module")
def directions():
    from float_core.directions import DirectionInfo

    groups = [next((g for g, members in GROUPING.items() if m in members), "other") for m in range(20)]
    return [DirectionInfo(index=m, group=g, shares={"mouth": 0.25, "eyes": 0.25, "head": 0.25, "other": 0.25},
                          label=f"{g} {m}", magnitude=1.0) for m, g in enumerate(groups)]


# ============================================================================ units
def test_ping_pong_plays_back_and_forth_and_cuts():
    assert ping_pong(4, 11).tolist() == [0, 1, 2, 3, 2, 1, 0, 1, 2, 3, 2]
    assert ping_pong(5, 3).tolist() == [0, 1, 2]
    assert ping_pong(1, 3).tolist() == [0, 0, 0]
    with pytest.raises(ValueError, match="source frame"):
        ping_pong(0, 3)


def test_track_smoothing_keeps_a_still_box_exactly_and_removes_jitter():
    still = np.tile([[10.3, 20.7, 60.1, 80.9]], (30, 1))
    assert np.array_equal(smooth_track(still, 3.0), still)  # the crop of a still face never moves
    jitter = still + np.random.default_rng(0).normal(0, 2.0, still.shape)
    smoothed = smooth_track(jitter, 3.0)
    assert np.abs(smoothed - still).std() < 0.5 * np.abs(jitter - still).std()


# ============================================================================ motion from video
def test_one_encoder_path_a_video_frame_equals_the_same_image_as_a_portrait(pipe, media, still):
    with still.reader() as reader:
        frame = reader.frame(5)
    portrait = pipe.prepare_image(frame)
    assert still.crop_boxes[5] == portrait.crop_box
    motion = pipe.encode_motion(media["still"])
    assert motion.shape == (12, 32) and torch.equal(motion[5], portrait.source_motion)  # bit for bit


def test_face_tracking_follows_a_moving_face(moving, portrait):
    from float_core.media.face import detect_faces

    x1, y1, x2, y2 = detect_faces(portrait)[0].box
    centre = np.array([(x1 + x2) / 2, (y1 + y2) / 2, 1.0])
    truth = np.array([head_motion(k / FPS, SIDE, AMPLITUDE) @ centre for k in range(MOVING_FRAMES)])
    boxes = moving.track.boxes
    tracked = np.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2], axis=1)
    error = np.linalg.norm(tracked - truth, axis=1)
    travel = np.linalg.norm(truth - truth[0], axis=1).max()
    assert travel > 10  # the face really moves (px)
    assert error.max() < 4.0, error.round(1)  # ... and the crop follows it within a few px
    assert moving.track.detected[::5].all() and moving.num_frames == MOVING_FRAMES
    assert moving.motion.shape == (MOVING_FRAMES, 32) and torch.isfinite(moving.motion).all()
    assert moving.reference == 0 and "frontal, sharp" in moving.message


def test_frames_are_read_again_in_any_order(moving, monkeypatch):
    import float_core.video_in as video_in

    with moving.reader() as reader:
        forward = list(reader.frames(range(MOVING_FRAMES)))
    monkeypatch.setattr(video_in, "REVERSE_CHUNK_BYTES", 7 * SIDE * SIDE * 3)  # backwards in chunks of 7
    order = ping_pong(MOVING_FRAMES, 100).tolist()
    with moving.reader() as reader:
        again = list(reader.frames(order))
    assert all(np.array_equal(a, forward[i]) for a, i in zip(again, order))


def _write_phone_video(path: Path, frames: list[np.ndarray], times_ms: list[int], rotation: int) -> None:
    """H.264 with timestamps in ms (variable frame rate) and a display rotation, as phones write:
    the pixels are stored sideways and the display matrix turns them upright."""
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stored = [np.ascontiguousarray(np.rot90(f, -round(rotation / 90))) for f in frames]
        stream.height, stream.width = stored[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        stream.time_base = stream.codec_context.time_base = Fraction(1, 1000)
        stream.options = {"crf": "0", "preset": "ultrafast"}
        stream.set_display_rotation(rotation)
        for image, t in zip(stored, times_ms):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts, frame.time_base = t, Fraction(1, 1000)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


def test_a_variable_frame_rate_rotated_phone_video_is_resampled_and_upright(pipe, portrait, tmp_path):
    times = [0, 30, 70, 90, 150, 160, 230, 300, 310, 400]
    # a portrait-shaped picture with the source frame's number as a grey block (top left)
    frames = []
    for i in range(len(times)):
        image = portrait[:, 16:176].copy()  # 192 high, 160 wide
        image[:8, :8] = 20 * (i + 1)
        frames.append(image)
    path = tmp_path / "phone.mp4"
    _write_phone_video(path, frames, times, rotation=-90)
    assert probe_video(path)["width"] == 192  # stored sideways
    video = pipe.analyse_video(path, detect_every=1)
    assert (video.width, video.height) == (160, 192)  # upright
    # frame k at k/25 s takes the source frame nearest to it (ties: the earlier one)
    expected = [0, 1, 2, 3, 5, 6, 6, 7, 8, 9]
    with video.reader() as reader:
        got = [int(round(f[2:6, 2:6].mean() / 20)) - 1 for f in reader.frames(range(10))]
    assert got == expected
    # the face is found on the upright frames, where it is
    box = video.track.boxes[0]
    assert video.track.detected.all() and 40 < (box[0] + box[2]) / 2 < 120 and 20 < (box[1] + box[3]) / 2 < 110


def test_a_4k_video_is_handled_with_memory_bounded_by_a_few_frames(pipe, portrait, tmp_path):
    import tracemalloc

    from PIL import Image

    from float_core.media.face import detect_faces

    big = np.asarray(Image.fromarray(portrait).resize((2160, 2160), Image.Resampling.BILINEAR))
    frame = np.zeros((2160, 3840, 3), np.uint8)
    frame[:, 840:3000] = big
    path = tmp_path / "uhd.mp4"
    with VideoWriter(path, preset="ultrafast", crf=30) as writer:
        for _ in range(3):
            writer.write(frame)
    tracemalloc.start()
    try:
        video = pipe.analyse_video(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert video.num_frames == 3 and (video.width, video.height) == (3840, 2160)
    x1, y1, x2, y2 = detect_faces(portrait)[0].box
    scale = 2160 / SIDE
    bx1, by1, bx2, by2 = video.track.boxes[0]
    x, y = (bx1 + bx2) / 2, (by1 + by2) / 2
    assert abs(x - (840 + scale * (x1 + x2) / 2)) < 60 and abs(y - scale * (y1 + y2) / 2) < 60  # full-resolution box
    assert peak < 4 * frame.nbytes, f"peak {peak / 2**20:.0f} MB of Python/NumPy memory for 25 MB frames"


# ============================================================================ drive
def test_a_still_driving_video_gives_identical_frames(pipe, portrait, still, tmp_path):
    out = tmp_path / "still_drive.mp4"
    result = pipe.drive(portrait, still, out, progress=False)
    source = pipe.prepare_image(portrait)
    assert result.num_frames == 12
    assert torch.equal(result.motion, source.source_motion.expand(12, -1))  # relative: exactly the portrait's
    frames = _decode(out)
    assert len(frames) == 12 and all(np.array_equal(f, frames[0]) for f in frames)
    assert probe_video(out)["audio_codec"] is None  # the still video has no sound


def test_drive_has_the_videos_length_and_sound_and_takes_edits(pipe, portrait, media, moving, tmp_path):
    out = tmp_path / "drive.mp4"
    offsets = np.zeros(20, np.float32)
    offsets[2] = 1.5
    result = pipe.drive(portrait, moving, out, edits=offsets, progress=False)  # an analysis is reused
    info = probe_video(out)
    assert info["frames"] == MOVING_FRAMES and info["audio_codec"] == "aac"
    assert abs(info["audio_seconds"] - MOVING_FRAMES / FPS) < 0.1
    source = pipe.prepare_image(portrait)
    expected = source.source_motion + (moving.motion - moving.motion[0])  # LIA's relative transfer
    assert torch.allclose(result.motion, expected, atol=1e-6)
    assert torch.equal(drive_motion(source.source_motion, moving.motion, relative=False), moving.motion)
    # the edit reaches the frames: the video is the motion rendered with the offset
    k = 7
    edited = next(pipe.render(source, result.motion[k:k + 1], edits=offsets))[0].astype(int)
    plain = next(pipe.render(source, result.motion[k:k + 1]))[0].astype(int)
    assert np.abs(_decode(out)[k] - edited).mean() < 0.5 * np.abs(edited - plain).mean()


# ============================================================================ lips from speech + head from video
def test_head_from_video_and_the_rest_from_speech(pipe, portrait, media, moving, directions, tmp_path):
    head = GROUPING["head"]
    plain = pipe.generate(portrait, media["speech"], tmp_path / "plain.mp4", nfe=2, seed=5, progress=False)
    mixed = pipe.generate(portrait, media["speech"], tmp_path / "hybrid.mp4", nfe=2, seed=5, progress=False,
                          drive=moving, drive_groups=("head",), directions=directions)
    assert mixed.num_frames == plain.num_frames == SPEECH_FRAMES == probe_video(tmp_path / "hybrid.mp4")["frames"]
    lam_plain, lam_mixed = pipe.motion_lambda(plain.motion), pipe.motion_lambda(mixed.motion)
    mask = torch.tensor([m in head for m in range(20)])
    index = ping_pong(MOVING_FRAMES, SPEECH_FRAMES)  # 0..29, 28..14: played back and forth
    source = pipe.prepare_image(portrait)
    relative = source.source_lambda + (moving.lambdas[index] - moving.lambdas[0])
    # Tolerance: lambda = V^T w in float32 after adding V delta; measured max error 2e-6.
    assert torch.allclose(lam_mixed[:, mask], relative[:, mask], atol=2e-5)
    assert torch.allclose(lam_mixed[:, ~mask], lam_plain[:, ~mask], atol=2e-5)
    assert (lam_mixed[:, mask] - lam_plain[:, mask]).abs().max() > 1e-2  # the video did change them


# ============================================================================ dub
def test_dub_keeps_every_pixel_outside_the_face_square(pipe, media, moving, directions, monkeypatch, tmp_path):
    import float_core.media.video as video_mod

    written: list[np.ndarray] = []
    real = video_mod.write_video

    def capture(out_path, frames, **kwargs):
        def tee():
            for batch in frames:
                written.extend(batch)
                yield batch
        return real(out_path, tee(), **kwargs)

    monkeypatch.setattr(video_mod, "write_video", capture)
    out = tmp_path / "dub.mp4"
    result = pipe.dub(moving, media["speech"], out, nfe=2, seed=1, directions=directions, progress=False)
    info = probe_video(out)
    assert result.num_frames == SPEECH_FRAMES == info["frames"] == len(written)  # the speech's length
    assert (info["width"], info["height"]) == (SIDE, SIDE) and info["audio_codec"] == "aac"
    assert abs(info["audio_seconds"] - SPEECH_FRAMES / FPS) < 0.1  # the new speech
    index = ping_pong(MOVING_FRAMES, SPEECH_FRAMES)
    with moving.reader() as reader:
        originals = list(reader.frames(range(MOVING_FRAMES)))
    changed = 0
    for t, frame in enumerate(written):
        box = moving.crop_boxes[index[t]]
        inside = np.zeros((SIDE, SIDE), bool)
        inside[max(box.y0, 0):box.y1, max(box.x0, 0):box.x1] = True
        original = originals[index[t]]
        assert np.array_equal(frame[~inside], original[~inside]), t
        changed += int((frame[inside] != original[inside]).any())
    assert changed == SPEECH_FRAMES  # and the face is the generated one in every frame


def test_dub_takes_each_frames_own_head_eyes_other_and_the_speechs_mouth(pipe, media, moving, directions):
    from float_core.inputs import Prepared
    from float_core.video_in import transfer_groups

    source = moving.reference_source  # the dub's identity: the reference frame, encoded like a portrait
    assert source is not None and torch.equal(source.source_lambda, moving.lambdas[moving.reference])
    speech_motion = pipe.sample_motion(Prepared(source, pipe.prepare_audio(str(media["speech"]))), nfe=2, seed=0)
    index = ping_pong(MOVING_FRAMES, SPEECH_FRAMES)
    mixed = transfer_groups(speech_motion, moving, ("head", "eyes", "other"), directions, pipe.basis)
    mouth = torch.tensor([d.group == "mouth" for d in directions])
    assert mouth.any() and not mouth.all()
    lam = pipe.motion_lambda(mixed)
    assert torch.allclose(lam[:, ~mouth], moving.lambdas[index][:, ~mouth], atol=2e-5)  # absolute, per frame
    assert torch.allclose(lam[:, mouth], pipe.motion_lambda(speech_motion)[:, mouth], atol=2e-5)


def test_a_long_video_is_cut_to_the_speech(pipe, media, directions, tmp_path):
    out = tmp_path / "short_dub.mp4"
    result = pipe.dub(media["moving"], media["short"], out, nfe=2, seed=0, reference_frame=3, directions=directions,
                      progress=False)
    assert result.num_frames == 15 == probe_video(out)["frames"]
    assert "reference frame 3" in result.message


# ============================================================================ bad input
@pytest.fixture(scope="module")
def bad_videos(media, portrait) -> dict[str, Path]:
    import av

    root = media["root"]
    (root / "notes.mp4").write_text("not a video at all")
    (root / "empty.mp4").write_bytes(b"")
    with av.open(str(root / "zero.avi"), "w", format="avi") as container:  # a video stream without frames
        stream = container.add_stream("mpeg4", rate=25)
        stream.width = stream.height = 64
        stream.pix_fmt = "yuv420p"
        container.start_encoding()
    rng = np.random.default_rng(0)
    with VideoWriter(root / "noface.mp4", preset="ultrafast") as writer:
        for _ in range(6):
            writer.write(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    return {"notes": root / "notes.mp4", "empty": root / "empty.mp4", "zero": root / "zero.avi",
            "noface": root / "noface.mp4", "image": EXAMPLES / "portrait_astronaut.png",
            "audio": EXAMPLES / "arctic_a0007.wav", "missing": root / "missing.mp4"}


@pytest.mark.parametrize("name, error, message", [
    ("notes", VideoError, "not a video that can be decoded"),
    ("empty", VideoError, "empty"),
    ("zero", VideoError, "no video frames"),
    ("noface", NoFaceError, "no face found"),
    ("image", VideoError, "still image"),
    ("audio", VideoError, "no video stream"),
    ("missing", VideoError, "not found"),
])
def test_bad_videos_are_clear_errors_and_leave_no_file(pipe, portrait, media, bad_videos, tmp_path, name, error,
                                                       message):
    video = bad_videos[name]
    with pytest.raises(error, match=message):
        pipe.encode_motion(video)
    with pytest.raises(error, match=message):
        pipe.drive(portrait, video, tmp_path / "drive.mp4", progress=False)
    with pytest.raises(error, match=message):
        pipe.dub(video, media["speech"], tmp_path / "dub.mp4", nfe=1, progress=False)
    with pytest.raises(ValueError, match="groups"):
        pipe.dub(video, media["speech"], tmp_path / "dub.mp4", groups_from_video=("hair",), progress=False)
    assert not list(tmp_path.iterdir())  # nothing half-written


# ============================================================================ device discipline
def test_video_paths_on_a_simulated_accelerator_equal_the_cpu(pipe, portrait, media, still, directions, tmp_path):
    """No implicit host conversion and no sync in the video paths (float_core.testing), same motion."""
    from float_core.testing import SimulatedAccelerator

    with SimulatedAccelerator() as acc:
        dev = acc.pipeline(pipe)
        mark = acc.mark()
        video = dev.analyse_video(media["still"], reference_frame="auto")
        assert acc.since(mark) == []  # not one sync while decoding, tracking and encoding
        assert torch.equal(video.motion.cpu(), still.motion)
        assert dev.drive(portrait, video, tmp_path / "d.mp4", progress=False).num_frames == 12
        dubbed = dev.dub(video, str(media["short"]), tmp_path / "u.mp4", nfe=1, seed=0, directions=directions,
                         progress=False)
        assert dubbed.num_frames == 15 and probe_video(tmp_path / "u.mp4")["width"] == SIDE
