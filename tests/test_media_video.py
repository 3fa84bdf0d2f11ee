"""VideoWriter: H.264/AAC MP4 that re-reads correctly, atomic writes, input checks."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from float_core.media.video import VideoWriter, probe_video


def speech_like(seconds: float, rate: int = 16000) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 3 * t)) / 2).astype(np.float32)


def gradient_frames(n: int, h: int = 48, w: int = 64) -> np.ndarray:
    frames = np.zeros((n, h, w, 3), np.uint8)
    frames[..., 0] = np.linspace(0, 255, w, dtype=np.uint8)[None, None, :]
    frames[..., 1] = (np.arange(n) * 4 % 256)[:, None, None].astype(np.uint8)
    return frames


def test_mp4_rereads_with_right_frames_fps_size_and_aac(tmp_path: Path) -> None:
    out = tmp_path / "talk.mp4"
    frames = gradient_frames(50)
    with VideoWriter(out, fps=25, audio=(speech_like(2.0), 16000)) as w:
        w.write(frames[:20])  # a batch ...
        for f in frames[20:]:
            w.write(f)  # ... and single frames
        assert w.frames_written == 50
    info = probe_video(out)
    assert info["frames"] == 50 and info["fps"] == 25.0
    assert (info["width"], info["height"]) == (64, 48)
    assert info["video_codec"] == "h264" and info["pix_fmt"] == "yuv420p"
    assert info["audio_codec"] == "aac"
    assert abs(info["audio_seconds"] - 2.0) < 0.1  # AAC pads to whole 1024-sample frames
    assert sorted(p.name for p in tmp_path.iterdir()) == ["talk.mp4"]  # no temp left behind


def test_pixels_survive_encoding(tmp_path: Path) -> None:
    import av

    frames = gradient_frames(5)
    with VideoWriter(tmp_path / "q.mp4") as w:
        w.write(frames)
    with av.open(str(tmp_path / "q.mp4")) as c:
        decoded = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert len(decoded) == 5
    assert np.abs(decoded[3].astype(int) - frames[3].astype(int)).mean() < 3  # crf 18


def test_audio_from_file_and_trimmed_to_video(tmp_path: Path) -> None:
    wav = tmp_path / "speech.wav"
    sf.write(wav, speech_like(3.0, 22050), 22050)
    with VideoWriter(tmp_path / "o.mp4", fps=25, audio=wav) as w:
        w.write(gradient_frames(25))  # 1 s of video, 3 s of audio
    info = probe_video(tmp_path / "o.mp4")
    assert info["frames"] == 25 and abs(info["audio_seconds"] - 1.0) < 0.1
    assert info["audio_rate"] == 48000


def test_exception_inside_with_leaves_no_file(tmp_path: Path) -> None:
    out = tmp_path / "fail.mp4"
    with pytest.raises(RuntimeError, match="boom"):
        with VideoWriter(out, audio=(speech_like(1.0), 16000)) as w:
            w.write(gradient_frames(10))
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_failure_keeps_previous_file_intact(tmp_path: Path) -> None:
    out = tmp_path / "keep.mp4"
    out.write_bytes(b"previous result")
    with pytest.raises(ValueError, match="differs"):
        with VideoWriter(out) as w:
            w.write(gradient_frames(2))
            w.write(np.zeros((50, 64, 3), np.uint8))  # wrong size mid-way
    assert out.read_bytes() == b"previous result"
    assert [p.name for p in tmp_path.iterdir()] == ["keep.mp4"]


@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_the_finished_video_has_the_permissions_of_any_new_file(tmp_path: Path, umask: int) -> None:
    """0666 minus the umask, like a file opened for writing, not the temporary file's private
    0600 (which a rename into place would keep)."""
    old = os.umask(umask)
    try:
        with VideoWriter(tmp_path / "shared.mp4") as w:
            w.write(gradient_frames(2))
        (tmp_path / "plain.txt").write_text("a file created the usual way")
    finally:
        os.umask(old)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in tmp_path.iterdir()}
    assert modes == {"shared.mp4": 0o666 & ~umask, "plain.txt": 0o666 & ~umask}


def test_input_checks(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="even width and height"):
        with VideoWriter(tmp_path / "odd.mp4") as w:
            w.write(np.zeros((31, 32, 3), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        with VideoWriter(tmp_path / "f.mp4") as w:
            w.write(np.zeros((32, 32, 3), np.float32))
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        with VideoWriter(tmp_path / "g.mp4") as w:
            w.write(np.zeros((32, 32), np.uint8))
    with pytest.raises(ValueError, match="no frames"):
        with VideoWriter(tmp_path / "empty.mp4"):
            pass
    with pytest.raises(ValueError, match="fps"):
        VideoWriter(tmp_path / "x.mp4", fps=0)
    with pytest.raises(ValueError, match="sample rate"):
        VideoWriter(tmp_path / "x.mp4", audio=(speech_like(1.0), 0))
    with pytest.raises(FileNotFoundError, match="directory"):
        VideoWriter(tmp_path / "missing" / "x.mp4")
    assert list(tmp_path.iterdir()) == []
