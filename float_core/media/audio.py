"""Speech input: decode any audio (or a video's audio track) to mono float32 at 16 kHz.

Decoding uses PyAV (the FFmpeg libraries shipped in its wheel), so WAV, FLAC,
MP3, Ogg/Opus, M4A/AAC, WebM and the audio track of MP4/MOV/MKV files all go
through one code path without a system ffmpeg.

Resampling uses soxr (libsoxr, "VHQ" quality) rather than PyAV's
``AudioResampler`` (libswresample with its default 32-tap filter): soxr has a
flat passband to ~0.95 Nyquist and >140 dB stopband rejection, it works on
plain arrays (so in-memory waveforms and decoded files share exactly the same
resampler), and it is a small self-contained wheel. Down-mixing is a plain
channel mean, which keeps a mono file and the same content as stereo at the
same level (swresample's default downmix applies a -3 dB matrix).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from ..config import SAMPLE_RATE

__all__ = ["AudioError", "AudioWarning", "SILENCE_PEAK", "audio_seconds", "load_audio", "load_audio_channels", "pcm16"]

#: A waveform whose absolute peak stays below this (about -80 dBFS) is silent.
SILENCE_PEAK = 1e-4

# Interleaved arrays with more channels than this are almost surely transposed.
_MAX_CHANNELS = 16


class AudioError(ValueError):
    """The speech input cannot be used (unreadable, empty, too long, bad array)."""


class AudioWarning(UserWarning):
    """The speech input is usable but suspicious (e.g. silent)."""


def _decode_file(path: Path, max_seconds: float | None, mix: bool = True) -> tuple[np.ndarray, int]:
    """Decode the first audio stream of ``path`` to a mono float32 array at its native rate
    (``mix=False``: every channel, (channels, samples))."""
    import av

    if not path.is_file():
        raise AudioError(f"audio file not found: {path}")
    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError) as exc:
        raise AudioError(f"cannot open {path.name} as audio or video: {exc}") from exc
    with container:
        if not container.streams.audio:
            raise AudioError(f"{path.name} has no audio track")
        stream = container.streams.audio[0]
        rate = stream.codec_context.sample_rate or stream.rate
        if not rate:
            raise AudioError(f"{path.name}: audio stream has no sample rate")
        limit = None if max_seconds is None else int(max_seconds * rate) + 1
        # Only convert the sample *format* (to planar float); channel mixing and
        # rate conversion are done by us, see the module docstring.
        to_float = av.AudioResampler(format="fltp")
        chunks: list[np.ndarray] = []
        total = 0
        try:
            for frame in container.decode(stream):
                for out in to_float.resample(frame):
                    planes = out.to_ndarray()
                    chunk = planes.mean(axis=0, dtype=np.float32) if mix else planes.astype(np.float32, copy=False)
                    chunks.append(chunk)
                    total += chunk.shape[-1]
                if limit is not None and total > limit:
                    raise AudioError(_too_long_message(total / rate, max_seconds, partial=True))
        except av.FFmpegError as exc:
            raise AudioError(f"cannot decode audio in {path.name}: {exc}") from exc
    if not chunks:
        return np.zeros(0 if mix else (stream.codec_context.channels or 1, 0), dtype=np.float32), int(rate)
    return np.concatenate(chunks, axis=-1), int(rate)


def audio_seconds(path: str | Path) -> float | None:
    """The duration of the first audio stream of a file, read from its header (nothing is
    decoded, so this is cheap whatever the file's length), or None when the header does not say.

    Raises:
        AudioError: the file is missing, unreadable or has no audio track.
    """
    import av

    path = Path(path)
    if not path.is_file():
        raise AudioError(f"audio file not found: {path}")
    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise AudioError(f"{path.name} has no audio track")
            stream = container.streams.audio[0]
            if stream.duration and stream.time_base:
                return float(stream.duration * stream.time_base)
            return container.duration / av.time_base if container.duration else None
    except (av.FFmpegError, OSError) as exc:
        raise AudioError(f"cannot open {path.name} as audio or video: {exc}") from exc


def _too_long_message(seconds: float, max_seconds: float | None, partial: bool = False) -> str:
    more = "more than " if partial else ""
    return (
        f"audio is {more}{seconds:.1f} s long; the limit is {max_seconds:g} s. "
        "Trim the speech or raise max_seconds."
    )


def _array_to_mono(arr: np.ndarray) -> np.ndarray:
    """(n,) or interleaved (n, channels) PCM/float array to mono float32 in [-1, 1]."""
    if arr.ndim == 2:
        if arr.shape[1] > _MAX_CHANNELS:
            raise AudioError(
                f"audio array of shape {arr.shape} looks like (channels, samples); "
                "pass (samples,) or (samples, channels), e.g. arr.T"
            )
    elif arr.ndim != 1:
        raise AudioError(f"audio array must be 1-D or (samples, channels); got shape {arr.shape}")
    if np.issubdtype(arr.dtype, np.integer):
        info = np.iinfo(arr.dtype)
        # Unsigned PCM (8-bit WAV) is centred on the middle of its range.
        offset = (info.max + 1) / 2 if info.min == 0 else 0.0
        scaled = (arr.astype(np.float64) - offset) / (info.max + 1 - offset)
        data = scaled.astype(np.float32)
    elif np.issubdtype(arr.dtype, np.floating):
        data = arr.astype(np.float32, copy=False)
        if not np.isfinite(data).all():
            raise AudioError("audio array contains NaN or infinite values")
    else:
        raise AudioError(f"unsupported audio dtype {arr.dtype}; use float or integer PCM")
    return data.mean(axis=1, dtype=np.float32) if data.ndim == 2 else data


def _resample(wave: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    if rate_in == rate_out:
        return wave
    import soxr

    return soxr.resample(wave, rate_in, rate_out, quality="VHQ").astype(np.float32, copy=False)


def load_audio(
    src: str | Path | np.ndarray,
    sample_rate_in: int | None = None,
    *,
    target_rate: int = SAMPLE_RATE,
    max_seconds: float | None = None,
) -> np.ndarray:
    """Load speech as a mono float32 waveform at ``target_rate`` Hz.

    Args:
        src: a file path (any audio, or a video with an audio track) or an
            array (samples,) / (samples, channels) of float or integer PCM.
        sample_rate_in: the array's sample rate; required for arrays and
            not allowed for files, whose rate is read from the file.
        target_rate: output sample rate (FLOAT's audio encoder wants 16 kHz).
        max_seconds: refuse longer inputs; ``None`` means no limit.

    Returns:
        A new 1-D float32 array (not normalised; values nominally in [-1, 1]).

    Raises:
        AudioError: missing/unreadable file, no audio track, no samples,
            a malformed array, or longer than ``max_seconds``.

    Warns:
        AudioWarning: when the waveform is silent (peak below :data:`SILENCE_PEAK`).
    """
    if target_rate <= 0:
        raise AudioError(f"target_rate must be positive, got {target_rate}")
    if max_seconds is not None and max_seconds <= 0:
        raise AudioError(f"max_seconds must be positive or None, got {max_seconds}")
    if isinstance(src, np.ndarray):
        if sample_rate_in is None or sample_rate_in <= 0:
            raise AudioError("pass sample_rate_in (a positive int) together with an audio array")
        wave, rate = _array_to_mono(src), int(sample_rate_in)
        name = "audio array"
    elif isinstance(src, (str, Path)):
        if sample_rate_in is not None:
            raise AudioError("sample_rate_in is only for arrays; a file's rate is read from the file")
        wave, rate = _decode_file(Path(src), max_seconds)
        name = Path(src).name
    else:
        raise AudioError(f"expected a path or numpy array, got {type(src).__name__}")

    if wave.size == 0:
        raise AudioError(f"{name} contains no audio samples")
    seconds = wave.size / rate
    if max_seconds is not None and seconds > max_seconds:
        raise AudioError(_too_long_message(seconds, max_seconds))
    if float(np.abs(wave).max()) < SILENCE_PEAK:
        warnings.warn(
            f"{name} is silent (peak below {SILENCE_PEAK:g}); the portrait will barely move",
            AudioWarning,
            stacklevel=2,
        )
    out = _resample(wave, rate, target_rate)
    # Always hand back a fresh, writable array the caller owns.
    return np.array(out, dtype=np.float32, copy=True)


def load_audio_channels(
    path: str | Path, *, target_rate: int = SAMPLE_RATE, max_seconds: float | None = None
) -> np.ndarray:
    """Every channel of an audio file, each resampled to ``target_rate``: float32 (channels, samples).

    The same decoder and resampler as :func:`load_audio`, without the down-mix (e.g. a
    two-person recording with one voice per channel).

    Raises:
        AudioError: as :func:`load_audio`.
    """
    if target_rate <= 0:
        raise AudioError(f"target_rate must be positive, got {target_rate}")
    path = Path(path)
    planes, rate = _decode_file(path, max_seconds, mix=False)
    if planes.shape[-1] == 0:
        raise AudioError(f"{path.name} contains no audio samples")
    if max_seconds is not None and planes.shape[-1] / rate > max_seconds:
        raise AudioError(_too_long_message(planes.shape[-1] / rate, max_seconds))
    return np.stack([np.array(_resample(np.ascontiguousarray(p), rate, target_rate), dtype=np.float32)
                     for p in planes])


def pcm16(samples: np.ndarray) -> bytes:
    """float samples in [-1, 1] as little-endian 16-bit PCM bytes (x * 32768, rounded, clipped):
    the inverse of ``int16 / 32768``, so int16 audio converted to float comes back bit for bit."""
    return np.clip(np.rint(np.asarray(samples) * 32768.0), -32768, 32767).astype("<i2").tobytes()
