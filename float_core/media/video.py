"""MP4 output: H.264 (yuv420p) video at 25 fps with the speech muxed as AAC.

Encoding and muxing run in-process through PyAV (FFmpeg libraries, libx264
and the native AAC encoder ship in its wheel), not through a system ffmpeg and
not through a subprocess pipe: both streams are encoded and interleaved in one
pass, errors surface as Python exceptions, and no temporary audio file or
shell command is needed.

Memory stays flat with length: each frame is encoded as soon as it is written,
and the audio is encoded alongside up to the current video time, so the muxer
never has to buffer one stream while waiting for the other.

The file is written to a hidden temporary file next to the target and moved
into place (atomic rename) only when the ``with`` block finishes without an
exception, so a failed run never leaves a half-written video at ``out_path``.

Streaming (``container=``, used by ``python -m float_core stream`` and the app's Live tab):

* ``"fmp4"``: a fragmented MP4 (``movflags=frag_keyframe+empty_moov+default_base_moof``,
  a keyframe and so a fragment every second) written in place: the file is a valid, playable
  MP4 at every moment, so a process killed mid-way leaves every complete second.
* ``"hls"``: ``out_path`` is an HLS playlist (``.m3u8``, an "event" playlist that grows) with
  one-second H.264/AAC MPEG-TS segments next to it, for players that follow a live stream.

Both use x264's ``zerolatency`` tuning (no frame look-ahead, so a frame is encoded as soon as
it is written). The audio can be given up front or passed along with the frames
(``audio_rate=`` and ``write(frames, audio=samples)``).
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from types import TracebackType
from typing import Any, Callable, Iterable

import numpy as np

from float_core.files import PARTIAL_SUFFIX, AtomicFile
from float_core.media.audio import load_audio

__all__ = ["AUDIO_RATE_FOR_FILES", "CONTAINERS", "VideoWriter", "probe_video", "write_video"]

#: ``container`` values of :class:`VideoWriter`: a finished MP4 (atomic), a fragmented MP4 valid
#: at every moment, an HLS playlist with MPEG-TS segments.
CONTAINERS = ("mp4", "fmp4", "hls")

#: Audio given as a file path is decoded at this rate for the AAC track.
AUDIO_RATE_FOR_FILES = 48000

AudioInput = tuple[np.ndarray, int] | str | Path | None


class VideoWriter:
    """Stream RGB frames into an H.264/AAC MP4.

    Example::

        with VideoWriter("out.mp4", fps=25, audio=(waveform, 16000)) as w:
            for frames in chunks:
                w.write(frames)  # (N, H, W, 3) or (H, W, 3) uint8

    The audio track is trimmed to the video's duration (``frames / fps``).
    Width and height must be even (a yuv420p requirement); the first frame
    fixes them.
    """

    def __init__(
        self,
        out_path: str | Path,
        fps: int = 25,
        audio: AudioInput = None,
        *,
        crf: int = 18,
        preset: str = "medium",
        audio_bitrate: int = 128_000,
        container: str = "mp4",
        audio_rate: int | None = None,
    ) -> None:
        """``container``: see :data:`CONTAINERS`; ``audio_rate``: the rate of audio passed
        to :meth:`write` along with the frames (instead of ``audio`` up front)."""
        if container not in CONTAINERS:
            raise ValueError(f"container must be one of {', '.join(CONTAINERS)}, got {container!r}")
        if audio is not None and audio_rate is not None:
            raise ValueError("give the audio either up front (audio=) or with the frames (audio_rate=), not both")
        if audio_rate is not None and (not isinstance(audio_rate, int) or audio_rate <= 0):
            raise ValueError(f"audio_rate must be a positive int (samples per second), got {audio_rate!r}")
        if int(fps) != fps or fps <= 0:
            raise ValueError(f"fps must be a positive integer, got {fps}")
        if not 0 <= crf <= 51:
            raise ValueError(f"crf must be in 0..51 (lower is better quality), got {crf}")
        self.out_path = Path(out_path)
        if not self.out_path.parent.is_dir():
            raise FileNotFoundError(f"output directory does not exist: {self.out_path.parent}")
        self.fps = int(fps)
        self._crf, self._preset, self._audio_bitrate = crf, preset, audio_bitrate
        self._audio, self._audio_rate = _prepare_audio(audio)
        self.container = container
        if audio_rate is not None:  # streamed audio: appended by write(), consumed samples dropped
            self._audio, self._audio_rate = np.zeros(0, np.float32), audio_rate
        self._streamed_audio = audio_rate is not None
        self._audio_pos = 0  # samples already sent to the AAC encoder
        self._audio_base = 0  # absolute index of self._audio[0] (streamed audio drops what is sent)
        self._frames = 0
        self._container: Any = None
        self._video: Any = None
        self._audio_stream: Any = None
        self._tmp: AtomicFile | None = None  # the mp4 container's temporary file
        self._closed = False

    # ------------------------------------------------------------------ context manager

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    # ------------------------------------------------------------------ public API

    @property
    def frames_written(self) -> int:
        """Number of video frames encoded so far."""
        return self._frames

    def write(self, frames: np.ndarray, audio: np.ndarray | None = None) -> None:
        """Encode one (H, W, 3) frame or a batch (N, H, W, 3) of uint8 RGB frames.

        ``audio``: with ``audio_rate=``, the mono float samples that go with these frames.
        """
        if self._closed:
            raise RuntimeError("VideoWriter is closed")
        if audio is not None:
            if not self._streamed_audio:
                raise ValueError("write(audio=...) needs VideoWriter(audio_rate=...)")
            self._append_audio(audio)
        frames = np.asarray(frames)
        if frames.ndim == 3:
            frames = frames[None]
        if frames.ndim != 4 or frames.shape[-1] != 3:
            raise ValueError(f"frames must be (H, W, 3) or (N, H, W, 3) RGB; got shape {frames.shape}")
        if frames.dtype != np.uint8:
            raise ValueError(f"frames must be uint8 (0..255); got {frames.dtype}")
        if self._container is None:
            self._open(width=frames.shape[2], height=frames.shape[1])
        expected = (self._video.height, self._video.width)
        if frames.shape[1:3] != expected:
            raise ValueError(f"frame size {frames.shape[2]}x{frames.shape[1]} differs from the first frame's "
                             f"{expected[1]}x{expected[0]}")
        import av

        for frame in frames:
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            vf.pts = self._frames
            self._container.mux(self._video.encode(vf))
            self._frames += 1
        self._encode_audio_until(self._frames / self.fps)

    def close(self) -> None:
        """Flush the encoders and move the finished file to ``out_path``."""
        if self._closed:
            return
        if self._container is None:
            self._closed = True
            raise ValueError("no frames were written; refusing to create an empty video")
        try:
            self._encode_audio_until(self._frames / self.fps)
            self._container.mux(self._video.encode(None))
            if self._audio_stream is not None:
                self._container.mux(self._audio_stream.encode(None))
            self._container.close()
            self._container = None
            if self._tmp is not None:
                self._tmp.commit()
        except BaseException:
            self.abort()
            raise
        self._closed = True

    def abort(self) -> None:
        """Stop without producing a file; removes the temporary file. Safe to call twice.

        A streaming container (fmp4, hls) is written in place and valid at every moment: it
        keeps the frames written so far (the last fragment is flushed).
        """
        self._closed = True
        if self._container is not None and self.container != "mp4":
            try:
                self._container.mux(self._video.encode(None))
                self._container.close()
            except Exception:  # noqa: BLE001 - the fragments already on disk stay valid
                pass
            self._container = None
            return
        if self._container is not None:
            try:
                self._container.close()
            except Exception:  # noqa: BLE001 - already failing; cleanup must go on
                pass
            self._container = None
        if self._tmp is not None:
            self._tmp.discard()
            self._tmp = None

    # ------------------------------------------------------------------ internals

    def _open(self, width: int, height: int) -> None:
        if width % 2 or height % 2:
            raise ValueError(
                f"H.264 yuv420p needs even width and height, got {width}x{height}; crop or pad one pixel"
            )
        import av

        options = {"crf": str(self._crf), "preset": self._preset}
        if self.container == "mp4":
            # moved into place with the usual permissions of a new file, not a temporary's 0600
            self._tmp = AtomicFile(self.out_path, prefix=f".{self.out_path.stem}.", suffix=PARTIAL_SUFFIX)
            tmp = str(self._tmp.path)
            # faststart puts the index first so browsers (the Gradio app) can start
            # playing before the whole file has arrived.
            self._container = av.open(tmp, mode="w", format="mp4", options={"movflags": "+faststart"})
        else:
            # A keyframe (so a fragment / segment) every second; zerolatency: no look-ahead.
            options.update(g=str(self.fps), keyint_min=str(self.fps), tune="zerolatency")
            if self.container == "fmp4":
                muxer = {"movflags": "frag_keyframe+empty_moov+default_base_moof", "flush_packets": "1"}
                self._container = av.open(str(self.out_path), mode="w", format="mp4", options=muxer)
            else:
                muxer = {"hls_time": "1", "hls_list_size": "0", "hls_playlist_type": "event",
                         "hls_segment_type": "mpegts", "hls_flags": "independent_segments+temp_file",
                         "hls_segment_filename": str(self.out_path.with_name(self.out_path.stem + "_%05d.ts"))}
                self._container = av.open(str(self.out_path), mode="w", format="hls", options=muxer)
        video = self._container.add_stream("libx264", rate=self.fps)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        video.time_base = Fraction(1, self.fps)
        video.options = options
        self._video = video
        if self._audio is not None:
            stream = self._container.add_stream("aac", rate=self._audio_rate)
            stream.layout = "mono"
            stream.bit_rate = self._audio_bitrate
            self._audio_stream = stream

    def _encode_audio_until(self, seconds: float) -> None:
        if self._audio_stream is None or self._audio is None:
            return
        import av

        end = min(int(round(seconds * self._audio_rate)), self._audio_base + self._audio.size)
        if end <= self._audio_pos:
            return
        chunk = self._audio[self._audio_pos - self._audio_base : end - self._audio_base]
        af = av.AudioFrame.from_ndarray(chunk[None, :], format="fltp", layout="mono")
        af.sample_rate = self._audio_rate
        af.pts = self._audio_pos
        af.time_base = Fraction(1, self._audio_rate)
        self._container.mux(self._audio_stream.encode(af))
        self._audio_pos = end
        if self._streamed_audio:  # keep memory flat: drop what the encoder has
            self._audio = self._audio[end - self._audio_base:]
            self._audio_base = end

    def _append_audio(self, samples: np.ndarray) -> None:
        x = np.asarray(samples)
        if x.ndim != 1 or not np.issubdtype(x.dtype, np.floating):
            raise ValueError(f"audio must be mono float samples (n,), got shape {x.shape} dtype {x.dtype}")
        if not np.isfinite(x).all():
            raise ValueError("audio contains NaN or infinite samples")
        self._audio = np.concatenate([self._audio, x.astype(np.float32, copy=False)])


def write_video(
    out_path: str | Path,
    frames: Iterable[np.ndarray],
    *,
    fps: int = 25,
    audio: AudioInput = None,
    transform: Callable[[np.ndarray], np.ndarray] | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    total: int | None = None,
    **writer_options: Any,
) -> int:
    """Write batches of uint8 frames (k, H, W, 3) to an MP4 with ``audio`` muxed in; the one
    video loop of the engine, the CLI and the app.

    Args:
        frames: an iterable of frame batches (e.g. :meth:`FloatPipeline.render`); it is
            consumed lazily, so memory does not grow with length.
        transform: applied to every frame before encoding (e.g. :class:`~float_core.media.face.PasteBack`).
        progress: ``progress("rendering", done, total)`` after every batch (a
            :class:`~float_core.progress.ProgressCallback`); ``total`` defaults to 0 (unknown).
        writer_options: passed to :class:`VideoWriter` (crf, preset, audio_bitrate).

    Returns:
        The number of frames written. The file appears at ``out_path`` only when complete.
    """
    done = 0
    with VideoWriter(out_path, fps=fps, audio=audio, **writer_options) as writer:
        for batch in frames:
            batch = np.asarray(batch)
            if transform is not None:
                batch = np.stack([transform(f) for f in (batch if batch.ndim == 4 else batch[None])])
            writer.write(batch)
            done = writer.frames_written
            if progress is not None:
                progress("rendering", done, total or 0)
    return done


def _prepare_audio(audio: AudioInput) -> tuple[np.ndarray | None, int]:
    if audio is None:
        return None, 0
    if isinstance(audio, (str, Path)):
        return load_audio(audio, target_rate=AUDIO_RATE_FOR_FILES), AUDIO_RATE_FOR_FILES
    if isinstance(audio, tuple) and len(audio) == 2:
        wave, rate = audio
        if not isinstance(rate, (int, np.integer)) or rate <= 0:
            raise ValueError(f"audio sample rate must be a positive int, got {rate!r}")
        # Reuse the audio loader's validation and mono conversion, at the same rate.
        return load_audio(np.asarray(wave), int(rate), target_rate=int(rate)), int(rate)
    raise ValueError("audio must be None, a file path, or a (waveform, sample_rate) tuple")


def probe_video(path: str | Path) -> dict[str, Any]:
    """Read back an MP4's basic facts (decodes the video to count frames exactly).

    Returns:
        ``dict(frames, fps, width, height, video_codec, pix_fmt, audio_codec,
        audio_seconds, audio_rate)``; the audio fields are ``None`` without audio.
    """
    import av

    with av.open(str(path)) as container:
        v = container.streams.video[0]
        frames = sum(1 for _ in container.decode(v))
        info: dict[str, Any] = {
            "frames": frames,
            "fps": float(v.average_rate) if v.average_rate else None,
            "width": v.codec_context.width,
            "height": v.codec_context.height,
            "video_codec": v.codec_context.name,
            "pix_fmt": v.codec_context.pix_fmt,
            "audio_codec": None,
            "audio_seconds": None,
            "audio_rate": None,
        }
    with av.open(str(path)) as container:
        if container.streams.audio:
            a = container.streams.audio[0]
            samples = sum(f.samples for f in container.decode(a))
            info["audio_codec"] = a.codec_context.name
            info["audio_rate"] = a.codec_context.sample_rate
            info["audio_seconds"] = samples / a.codec_context.sample_rate
    return info
