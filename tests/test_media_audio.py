"""load_audio: containers/codecs, video audio tracks, resampling, mixing and errors."""

from __future__ import annotations

import warnings
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf

from float_core.media.audio import AudioError, AudioWarning, load_audio

EXAMPLE = Path(__file__).parents[1] / "examples" / "arctic_a0007.wav"


def tone(seconds: float, rate: int, freq: float = 440.0, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def encode_with_pyav(path: Path, codec: str, wave: np.ndarray, rate: int, layout: str = "stereo") -> None:
    """Encode a (samples,) float tone into ``path`` (container from the suffix) with PyAV."""
    channels = 2 if layout == "stereo" else 1
    planar = np.ascontiguousarray(np.repeat(wave[None], channels, axis=0))
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=rate)
        stream.layout = layout
        fmt = stream.codec_context.codec.audio_formats[0].name
        frame = av.AudioFrame.from_ndarray(planar, format="fltp", layout=layout)
        frame.sample_rate, frame.pts, frame.time_base = rate, 0, Fraction(1, rate)
        resampler = av.AudioResampler(format=fmt, layout=layout, rate=rate)
        for f in resampler.resample(frame):
            out.mux(stream.encode(f))
        out.mux(stream.encode(None))


def peak_frequency(wave: np.ndarray, rate: int = 16000) -> float:
    spectrum = np.abs(np.fft.rfft(wave * np.hanning(wave.size)))
    return float(np.fft.rfftfreq(wave.size, 1 / rate)[spectrum.argmax()])


@pytest.mark.parametrize(
    ("name", "codec", "rate"),
    [
        ("a.mp3", "libmp3lame", 44100),
        ("a.ogg", "vorbis (soundfile)", 22050),
        ("b.ogg", "libopus", 48000),
        ("a.opus", "libopus", 48000),
        ("a.m4a", "aac", 44100),
        ("a.webm", "libopus", 48000),
        ("a.mp4", "aac", 32000),
    ],
)
def test_lossy_formats_decode_to_16k_mono(tmp_path: Path, name: str, codec: str, rate: int) -> None:
    path = tmp_path / name
    if codec == "vorbis (soundfile)":  # PyAV's wheel has no Vorbis encoder; libsndfile has
        sf.write(path, np.stack([tone(1.0, rate)] * 2, 1), rate, format="OGG", subtype="VORBIS")
    else:
        encode_with_pyav(path, codec, tone(1.0, rate), rate)
    out = load_audio(path)
    assert out.dtype == np.float32 and out.ndim == 1
    assert abs(out.size - 16000) < 0.1 * 16000  # encoder priming/padding only
    assert abs(peak_frequency(out) - 440) < 3
    assert 0.4 < np.abs(out[4000:12000]).max() < 0.6


@pytest.mark.parametrize("ext", [".wav", ".flac"])
def test_lossless_stereo_is_channel_mean_and_exact_length(tmp_path: Path, ext: str) -> None:
    left = tone(2.0, 44100, amp=0.8)
    stereo = np.stack([left, 0.5 * left], axis=1)  # mean = 0.6 * left
    sf.write(tmp_path / f"s{ext}", stereo, 44100, subtype="PCM_16")
    out = load_audio(tmp_path / f"s{ext}")
    assert out.size == 32000
    np.testing.assert_allclose(np.abs(out[2000:30000]).max(), 0.6, atol=0.01)
    expected = tone(2.0, 16000, amp=0.6)
    assert np.abs(out[2000:30000] - expected[2000:30000]).max() < 5e-3  # phase- and gain-true resampling


def test_audio_track_of_a_video(tmp_path: Path) -> None:
    from float_core.media.video import VideoWriter

    path = tmp_path / "v.mp4"
    with VideoWriter(path, fps=25, audio=(tone(1.0, 16000, freq=300), 16000)) as w:
        w.write(np.zeros((25, 32, 32, 3), np.uint8))
    out = load_audio(path)
    assert abs(out.size - 16000) < 1600 and abs(peak_frequency(out) - 300) < 3


def test_video_without_audio_track(tmp_path: Path) -> None:
    from float_core.media.video import VideoWriter

    with VideoWriter(tmp_path / "mute.mp4") as w:
        w.write(np.zeros((16, 16, 3), np.uint8))
    with pytest.raises(AudioError, match="no audio track"):
        load_audio(tmp_path / "mute.mp4")


def test_arrays_int_and_float_any_rate() -> None:
    pcm = (tone(1.0, 8000) * 32767).astype(np.int16)
    out = load_audio(pcm, 8000)
    assert out.size == 16000 and abs(np.abs(out[1000:15000]).max() - 0.5) < 0.01
    same = load_audio(tone(0.5, 16000), 16000)
    np.testing.assert_array_equal(same, tone(0.5, 16000))  # no-op at the target rate
    u8 = np.full(100, 128, np.uint8)  # unsigned 8-bit PCM: 128 is zero
    with pytest.warns(AudioWarning):
        assert np.abs(load_audio(u8, 16000)).max() == 0
    assert load_audio(np.stack([tone(0.1, 16000)] * 2, 1), 16000, target_rate=8000).size == 800


def test_array_errors() -> None:
    with pytest.raises(AudioError, match="sample_rate_in"):
        load_audio(tone(0.1, 16000))
    with pytest.raises(AudioError, match=r"arr\.T"):
        load_audio(np.zeros((2, 1600), np.float32), 16000)
    with pytest.raises(AudioError, match="NaN"):
        load_audio(np.array([0.1, np.nan], np.float32), 16000)
    with pytest.raises(AudioError, match="no audio samples"):
        load_audio(np.zeros(0, np.float32), 16000)
    with pytest.raises(AudioError, match="only for arrays"):
        load_audio(EXAMPLE, 16000)


def test_silence_warns_but_returns(tmp_path: Path) -> None:
    sf.write(tmp_path / "quiet.wav", np.zeros(16000, np.float32), 16000)
    with pytest.warns(AudioWarning, match="silent"):
        out = load_audio(tmp_path / "quiet.wav")
    assert out.size == 16000


def test_max_seconds(tmp_path: Path) -> None:
    sf.write(tmp_path / "long.wav", tone(3.0, 16000), 16000)
    with pytest.raises(AudioError, match=r"limit is 2 s.*max_seconds"):
        load_audio(tmp_path / "long.wav", max_seconds=2)
    with pytest.raises(AudioError, match="3.0 s long"):
        load_audio(tone(3.0, 16000), 16000, max_seconds=2.5)
    assert load_audio(tmp_path / "long.wav", max_seconds=3.5).size == 48000


def test_unreadable_missing_and_empty(tmp_path: Path) -> None:
    (tmp_path / "junk.mp3").write_bytes(b"\x00garbage" * 100)
    with pytest.raises(AudioError, match="junk.mp3"):
        load_audio(tmp_path / "junk.mp3")
    with pytest.raises(AudioError, match="not found"):
        load_audio(tmp_path / "nope.wav")
    sf.write(tmp_path / "empty.wav", np.zeros(0, np.float32), 16000)
    with pytest.raises(AudioError, match="no audio samples"):
        load_audio(tmp_path / "empty.wav")


def test_example_speech() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", AudioWarning)
        out = load_audio(EXAMPLE)
    assert out.size == 64000  # CMU ARCTIC a0007 is 4.000 s at 16 kHz
    reference, rate = sf.read(EXAMPLE, dtype="float32")
    assert rate == 16000
    np.testing.assert_allclose(out, reference, atol=1e-6)
