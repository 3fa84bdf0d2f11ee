"""The "Live" tab of FLOAT Studio: the video plays in the browser while it is being generated.

Speech comes from typed text (spoken by a text-to-speech engine: espeak-ng offline by default,
Piper when its binary and a voice are installed, or an OpenAI-compatible speech server such as
Kokoro-FastAPI at ``FLOAT_TTS_URL``), an uploaded file, or the microphone (streamed in). The
engine's :meth:`~float_core.pipeline.FloatPipeline.stream` yields frames a decode batch at a
time; this tab cuts them into short H.264/AAC MP4 segments (the first as soon as it exists,
then about a second each) and yields them to ``gr.Video(streaming=True)``, which plays them as
one HLS stream with continuous audio (Gradio re-encodes the segments' audio with one AAC
encoder per stream, https://github.com/gradio-app/gradio/issues/13844). Shown while it runs: time to first frame, fps,
real-time factor, speaking/idle, and, when the machine makes fewer than 25 frames a second,
the delay to expect. Stop ends the stream within one decode batch.

Limits (:mod:`float_studio.limits`): text and uploads are held to ``FLOAT_MAX_SECONDS`` (text
before and after synthesis), a microphone stream to ``FLOAT_MAX_LIVE_SECONDS`` with a countdown
in its last 30 s. On ZeroGPU the stream runs inside a GPU request sized from its speech, and the
microphone source is refused (its audio arrives through other events while the stream runs in
the GPU worker process; :mod:`float_studio.gpu`).

Text and uploads are known speech: their conditions are the offline ones (whole-clip
features), so the video equals the Studio tab's for the same seed with idle off. The
microphone is live speech, pushed into a :class:`float_core.avatar.LiveAvatar` as it arrives:
chunked live sampling, the emotion re-estimated per window, idle frames while nobody speaks,
and its measured A/V delay (a frame's audio in -> the frame out) in the stats.
"""

from __future__ import annotations

import logging
import os
import queue
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Iterator

import numpy as np

from float_core.config import EMOTIONS, FPS, SAMPLE_RATE, SamplingConfig, StreamOptions

from .gpu import dedicated_gpu_message, gpu_handler, on_zero_gpu
from .limits import (SLOWEST_CHARS_PER_SECOND, check_speech, check_speech_seconds, check_text, countdown_note,
                     estimate_text_seconds, limited_speech_seconds, limits_markdown, live_limit_message,
                     max_live_seconds, max_speech_seconds, max_text_chars)
from .speed import realtime_note

log = logging.getLogger(__name__)

FIRST_SEGMENT_FRAMES = 1  #: the first segment goes out with the first decoded chunk
SEGMENT_FRAMES = 25  #: later segments: about one second
MIC_QUEUE_CHUNKS = 400  #: microphone chunks buffered (~100 s at 0.25 s); the oldest are dropped
#: The microphone arrives in 0.25 s blocks (``stream_every``) through the web server: idle frames
#: are filled in only after this long without a block, so a late block is not taken for silence.
MIC_STALL_SECONDS = 0.5
VOICE_ESPEAK, VOICE_PIPER, VOICE_SERVICE = "espeak-ng", "Piper", "Speech server (FLOAT_TTS_URL)"
SOURCES = ("Text", "Upload", "Microphone")


# ---------------------------------------------------------------------------- per-session state
class LiveSession:
    """One browser session's live state: the running stream, its Stop flag, microphone chunks.

    (A plain class, not a dataclass: Gradio would serialise a dataclass value into the page.)
    """

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.stream: Any = None  # the running StreamIterator (known speech) or LiveAvatar (microphone)
        self.mic: queue.Queue = queue.Queue(MIC_QUEUE_CHUNKS)
        self.mic_state = "idle"  # idle -> recording -> done
        self.workdir: str | None = None
        self.portrait: tuple[Any, Any] | None = None  # (key, SourceImage) of the last portrait
        self._lock = threading.Lock()

    def __deepcopy__(self, memo: dict) -> "LiveSession":
        return LiveSession()  # every session gets its own

    def __reduce__(self) -> tuple[Any, tuple]:
        # Pickled for ZeroGPU's GPU worker process (float_studio.gpu): a fresh session there
        # (the stream it runs is that process's; Stop reaches it by cancelling the event).
        return LiveSession, ()

    def push_mic(self, rate: int, samples: np.ndarray) -> None:
        """Queue one microphone chunk (int16 or float, mono or stereo) for the live stream."""
        x = np.asarray(samples)
        if x.ndim == 2:
            x = x.mean(axis=1)
        x = x.astype(np.float32) / 32768.0 if np.issubdtype(x.dtype, np.integer) else x.astype(np.float32)
        self.mic_state = "recording"
        try:
            self.mic.put_nowait((x, int(rate)))
        except queue.Full:  # nobody is consuming (no stream running): keep the newest
            try:
                self.mic.get_nowait()
            except queue.Empty:
                pass
            self.mic.put_nowait((x, int(rate)))

    def mic_chunks(self) -> Iterator[Any]:
        """The microphone as a live source: chunks, ``None`` keep-alives while silent, until the
        recording stops (after it has started) or Stop is pressed."""
        while not self.stop.is_set():
            try:
                yield self.mic.get(timeout=0.1)
            except queue.Empty:
                if self.mic_state == "done":
                    return
                yield None

    def source_image(self, pipe: Any, image: np.ndarray, crop: bool) -> Any:
        """The prepared portrait (face detection + encoding), reused while the photo is the same."""
        from float_studio.state import image_key

        key = (image_key(image), bool(crop), id(pipe))
        if self.portrait is None or self.portrait[0] != key:
            self.portrait = (key, pipe.prepare_image(image, crop=crop))
        return self.portrait[1]

    def new_segment_path(self, index: int) -> Path:
        with self._lock:
            if self.workdir is None or not os.path.isdir(self.workdir):
                self.workdir = tempfile.mkdtemp(prefix="float-live-")
        return Path(self.workdir) / f"segment_{index:05d}.mp4"

    def halt(self) -> None:
        """Stop the running stream (from the Stop button's thread)."""
        self.stop.set()
        stream = self.stream
        if stream is not None:
            stream.close()

    def cleanup(self) -> None:
        self.halt()
        if self.workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)


def cleanup_session(session: Any) -> None:
    if isinstance(session, LiveSession):
        session.cleanup()


def player_unavailable_reason() -> str | None:
    """Why this server cannot stream video to the page (a sentence saying what to install), or
    None. Gradio's streaming video (HLS) converts the segments with ffmpeg and ffprobe."""
    missing = [tool for tool in ("ffmpeg", "ffprobe") if shutil.which(tool) is None]
    if not missing:
        return None
    return (f"The Live tab needs {' and '.join(missing)} on the server to stream video to the page "
            "(Debian/Ubuntu: apt-get install ffmpeg; on Hugging Face Spaces packages.txt installs it).")


# ---------------------------------------------------------------------------- text to speech
#: The engine (float_core.tts) behind each voice choice of the tab.
VOICE_ENGINES = {VOICE_SERVICE: "url", VOICE_PIPER: "piper", VOICE_ESPEAK: "espeak"}


def _voice_spec(choice: str) -> str | None:
    """The voice spec of a choice: the engine's default voice (``FLOAT_ESPEAK_VOICE``,
    ``FLOAT_PIPER_VOICE``, ``FLOAT_TTS_VOICE``), None when it names none."""
    from float_core.tts import default_voice

    return default_voice(VOICE_ENGINES.get(choice, "espeak"))


def available_voices() -> list[str]:
    """Text-to-speech choices usable here (:func:`float_core.tts.check_voice`), the preferred first:
    the speech server, Piper with ``FLOAT_PIPER_VOICE``, espeak-ng."""
    from float_core.tts import TTSError, check_voice

    usable = []
    for choice in VOICE_ENGINES:
        try:
            spec = _voice_spec(choice)
            if spec is not None:
                check_voice(spec)
                usable.append(choice)
        except TTSError:
            continue
    return usable


def speak(text: str, voice: str) -> np.ndarray:
    """``text`` spoken by the choice ``voice`` as 16 kHz mono float32 (ValueError with the fix on failure)."""
    from float_core.tts import synthesize

    text = text.strip()
    if not text:
        raise ValueError("Type something for the portrait to say.")
    spec = _voice_spec(voice)
    if spec is None:
        raise ValueError("Piper is not available: install `piper` and set FLOAT_PIPER_VOICE to a voice .onnx")
    return synthesize(text, spec)


# ---------------------------------------------------------------------------- the stream
@dataclass
class LiveStats:
    """What the tab shows while a stream runs.

    Attributes:
        limit: the session's maximum length in seconds (microphone streams,
            ``FLOAT_MAX_LIVE_SECONDS``), counted down in its last 30 s; None: no limit.
        estimate: what the page says while waiting for the first frame (the expected time).
    """

    state: str = "starting"  # starting, streaming, done, stopped, limit
    frames: int = 0
    repeated: int = 0  #: frames shown again because no new one was ready on time (microphone)
    elapsed: float = 0.0
    first_frame: float | None = None
    frames_at_first: int = 0  #: frames of the first chunk (the rate is measured after it)
    speaking: bool = False
    av_delay: tuple[float, float] | None = None  #: microphone: A/V delay p50 and p90 (seconds)
    live: bool = False
    limit: float | None = None
    estimate: str = ""

    @property
    def seconds(self) -> float:
        return self.frames / FPS

    @property
    def fps(self) -> float | None:
        """Frames per second generated after the first chunk (None until measurable)."""
        made = self.frames - self.repeated
        if self.first_frame is None or self.elapsed <= self.first_frame or made <= self.frames_at_first:
            return None
        return (made - self.frames_at_first) / (self.elapsed - self.first_frame)

    def markdown(self) -> str:
        if self.first_frame is None:
            wait = f"**{self.state}** · waiting for the first frame ({self.elapsed:.1f} s)"
            return wait + (f" · {self.estimate}" if self.estimate else "")
        fps = self.fps if self.fps is not None else self.frames / max(self.elapsed, 1e-9)
        rtf = self.elapsed / max(self.seconds, 1e-9)
        mode = "**speaking**" if self.speaking else "**idle**"
        extra = (f" · A/V delay **{self.av_delay[0]:.2f} s** (p90 {self.av_delay[1]:.2f} s)"
                 if self.av_delay is not None else "")
        lines = [f"**{self.state}** · time to first frame **{self.first_frame:.2f} s** · "
                 f"**{fps:.1f} fps** · real-time factor **{rtf:.2f}** · {mode} · "
                 f"{self.seconds:.1f} s generated{extra}"]
        countdown = countdown_note(self.elapsed, self.limit) if self.state == "streaming" else ""
        if countdown:
            lines.append(f"⏱️ This stream {countdown}.")
        if self.state == "limit" and self.limit is not None:
            lines.append(f"⏱️ Stopped: {live_limit_message(self.limit)}.")
        note = realtime_note(self.fps, self.frames, self.live)
        return "\n\n".join(lines + ([note] if note else []))


def write_segment(path: Path, frames: list[np.ndarray], audio: list[np.ndarray]) -> Path:
    """One H.264/AAC MP4 segment of the stream (complete when this returns)."""
    from float_core.media.video import VideoWriter

    # Audio passed with the frames (not up front): an idle segment's silence is expected here.
    with VideoWriter(path, fps=FPS, audio_rate=SAMPLE_RATE, preset="veryfast") as writer:
        for batch, samples in zip(frames, audio):
            writer.write(batch, audio=samples)
    return path


def run_live(pipe: Any, portrait: Any, speech: Any, sampling: SamplingConfig, session: LiveSession, *,
             idle: bool = True, crop: bool = True, live: bool = False, max_seconds: float | None = None,
             estimate: str = "") -> Iterator[tuple[Path | None, LiveStats]]:
    """Stream ``speech`` through the engine and yield (segment path or None, stats).

    ``speech``: a path or a 16 kHz array (known speech: ``FloatPipeline.stream``) or, with
    ``live``, an iterable of ``(samples, rate)`` chunks (``None``: keep-alive) pushed into a
    :class:`~float_core.avatar.LiveAvatar` until it ends, then played out. ``max_seconds``:
    stop after this many seconds of wall time (state "limit"; the stats count down the last
    30 s). ``estimate``: shown until the first frame. The segment files are removed two
    segments later (Gradio has read them by then).
    """
    start = time.perf_counter()
    stats = LiveStats(live=live, limit=max_seconds, estimate=estimate)
    yield None, stats
    source = session.source_image(pipe, portrait, crop)
    batches = (_avatar_batches(pipe, source, speech, sampling, session, idle, stats) if live
               else _stream_batches(pipe, source, speech, sampling, session, idle))
    frames: list[np.ndarray] = []
    audio: list[np.ndarray] = []
    pending = 0
    index = 0
    written: list[Path] = []
    try:
        for batch, samples, speaking in batches:
            if session.stop.is_set():
                break
            if stats.first_frame is None:
                stats.first_frame, stats.frames_at_first = time.perf_counter() - start, batch.shape[0]
            frames.append(batch)
            audio.append(samples)
            pending += batch.shape[0]
            stats.frames += batch.shape[0]
            stats.speaking = speaking
            over = max_seconds is not None and time.perf_counter() - start >= max_seconds
            if over or pending >= (FIRST_SEGMENT_FRAMES if index == 0 else SEGMENT_FRAMES):
                stats.state, stats.elapsed = "streaming", time.perf_counter() - start
                written.append(write_segment(session.new_segment_path(index), frames, audio))
                index, frames, audio, pending = index + 1, [], [], 0
                _drop_old(written)
                stats.state = "limit" if over else stats.state
                yield written[-1], stats
            if over:
                break
        if frames and not session.stop.is_set():
            written.append(write_segment(session.new_segment_path(index), frames, audio))
            stats.elapsed = time.perf_counter() - start
            stats.state = "done"
            yield written[-1], stats
    finally:
        batches.close()
        session.stream = None
    stats.elapsed = time.perf_counter() - start
    stats.state = "stopped" if session.stop.is_set() else ("limit" if stats.state == "limit" else "done")
    yield None, stats


def _stream_batches(pipe: Any, source: Any, speech: Any, sampling: SamplingConfig, session: LiveSession,
                    idle: bool) -> Iterator[tuple[np.ndarray, np.ndarray, bool]]:
    """Known speech: ``FloatPipeline.stream``'s chunks as (frames, their audio, speaking now)."""
    stream = pipe.stream(source, speech, sampling, idle=idle)
    session.stream = stream
    try:
        for chunk in stream:
            yield chunk.frames, chunk.audio, bool(chunk.speaking[-1])
    finally:
        stream.close()


def _avatar_batches(pipe: Any, source: Any, chunks: Any, sampling: SamplingConfig, session: LiveSession,
                    idle: bool, stats: LiveStats) -> Iterator[tuple[np.ndarray, np.ndarray, bool]]:
    """Live speech: a LiveAvatar's frames (one at a time, 25 fps) while a thread pushes the
    chunks into it; after the last chunk, until the pushed speech has been shown. Keeps the
    stats' repeated-frame count and A/V delay."""
    from float_core.avatar import LiveAvatar

    avatar = LiveAvatar(pipe, source, sampling=sampling,
                        options=StreamOptions(idle=idle, stall_timeout=MIC_STALL_SECONDS), realtime=True)
    session.stream = avatar
    fed = threading.Event()
    failed: list[BaseException] = []

    def feed() -> None:
        try:
            for item in chunks:
                if avatar.closed:
                    return
                if item is not None:
                    samples, rate = item
                    avatar.push_audio(samples, rate)
            avatar.end_turn()
        except BaseException as exc:  # noqa: BLE001 - re-raised by the consumer
            if not avatar.closed:
                failed.append(exc)
        finally:
            fed.set()

    feeder = threading.Thread(target=feed, name="float-live-mic", daemon=True)
    feeder.start()
    try:
        for frame in avatar.frames():
            if failed:
                raise failed[0]
            stats.repeated = avatar.repeated
            delays = avatar.av_delays[-200:]
            if delays:
                stats.av_delay = (float(np.median(delays)), float(np.percentile(delays, 90)))
            yield frame.image[None], frame.audio, frame.speaking
            if fed.is_set() and avatar.queued_seconds == 0:  # the recording ended and has been shown
                break
    finally:
        avatar.close()
        feeder.join(5)


def _drop_old(written: list[Path], keep: int = 2) -> None:
    for old in written[:-keep]:
        old.unlink(missing_ok=True)
    del written[:-keep]


# ---------------------------------------------------------------------------- speech of a request
def live_speech(choice: str, words: str, voice_name: str, upload_path: str | None,
                sess: LiveSession) -> tuple[Any, float | None]:
    """The speech source a Start request asks for, within the limits: (speech, its seconds or
    None for the microphone).

    Text is refused before synthesis when it is clearly too long, and measured after it;
    an upload is measured from its header (``FLOAT_MAX_SECONDS``). The microphone is a live
    source (``FLOAT_MAX_LIVE_SECONDS`` applies while it runs) and is refused on ZeroGPU.

    Raises:
        ValueError: missing input, a failed synthesis, or a :class:`~float_studio.limits.LimitError`.
    """
    if choice == "Text":
        check_text(words)
        speech = speak(words, voice_name)
        return speech, check_speech_seconds(speech.shape[0] / SAMPLE_RATE, what="The spoken text")
    if choice == "Upload":
        if not upload_path:
            raise ValueError("Upload a speech file first (or pick another source).")
        return upload_path, check_speech(upload_path)
    if on_zero_gpu():
        raise ValueError(dedicated_gpu_message("A microphone stream"))
    while not sess.mic.empty():  # start from now, not from before Start
        sess.mic.get_nowait()
    sess.mic_state = "waiting"
    return sess.mic_chunks(), None


def _live_request_seconds(choice: str, words: str = "", upload_path: str | None = None, **_: Any) -> float:
    """Seconds of speech a Start request can make the model process (its GPU request's size)."""
    if choice == "Text":
        limit = max_speech_seconds()
        seconds = estimate_text_seconds(words, SLOWEST_CHARS_PER_SECOND)
        return seconds if limit is None else min(seconds, limit)
    if choice == "Upload":
        return limited_speech_seconds(upload_path)
    return max_live_seconds() or 0.0


# ---------------------------------------------------------------------------- layout
class LiveLayout(SimpleNamespace):
    """The Live tab's components by name (set by :func:`layout_live_tab`)."""


def build_live_tab(holder: Any) -> None:
    """Lay out the Live tab and wire its events; called by ``app.py`` inside ``with gr.Tab("Live"):``.

    Args:
        holder: the app's :class:`float_studio.model.PipelineHolder` (shared read-only pipeline).
    """
    wire_live_tab(layout_live_tab(), live_handlers(holder))


def layout_live_tab() -> LiveLayout:
    """Create the Live tab's components (no events)."""
    import gradio as gr

    voices = available_voices() or [VOICE_ESPEAK]
    ui = LiveLayout(session=gr.State(LiveSession(), time_to_live=3600, delete_callback=cleanup_session))
    gr.Markdown("Watch the portrait talk **while it is generated**: type text, upload speech or use "
                "the microphone. With *Idle when silent* on, silences (voice activity) make the face "
                "idle (blinks, small head motion) instead of mouthing noise. " + limits_markdown())
    if on_zero_gpu():
        gr.Markdown(f"ℹ️ {dedicated_gpu_message('A microphone stream')}", elem_id="live-zerogpu")
    with gr.Row():
        with gr.Column(scale=1):
            ui.portrait = gr.Image(label="Portrait", type="numpy", sources=["upload", "clipboard", "webcam"],
                                   elem_id="live-portrait")
            ui.mode = gr.Radio(list(SOURCES), value="Text", label="Speech from", elem_id="live-mode")
            ui.text = gr.Textbox(label="Text to speak", lines=3, elem_id="live-text", max_length=max_text_chars(),
                                 value="Hello! I am a talking portrait, and you are watching me while I am made.")
            ui.voice = gr.Dropdown(voices, value=voices[0], label="Voice", elem_id="live-voice")
            ui.upload = gr.Audio(sources=["upload"], type="filepath", label="Speech file", visible=False,
                                 elem_id="live-upload")
            ui.mic = gr.Audio(sources=["microphone"], type="numpy", streaming=True, label="Microphone",
                              visible=False, elem_id="live-mic")
            with gr.Accordion("Settings", open=False):
                ui.idle = gr.Checkbox(True, label="Idle when silent (voice activity)", elem_id="live-idle")
                ui.crop = gr.Checkbox(True, label="Crop to the face")
                ui.emotion = gr.Dropdown(["auto"] + list(EMOTIONS), value="auto", label="Emotion")
                ui.nfe = gr.Slider(1, 20, value=10, step=1, label="Steps (NFE)")
                ui.a_cfg = gr.Slider(0, 5, value=2.0, step=0.1, label="Audio guidance γa")
                ui.seed = gr.Number(0, precision=0, label="Seed")
            with gr.Row():
                ui.start = gr.Button("Start", variant="primary", elem_id="live-start")
                ui.stop = gr.Button("Stop", variant="stop", elem_id="live-stop")
        with gr.Column(scale=1):
            ui.video = gr.Video(label="Live", streaming=True, autoplay=True, interactive=False, elem_id="live-video")
            ui.stats = gr.Markdown("Press **Start**.", elem_id="live-stats")
    return ui


# ---------------------------------------------------------------------------- handlers
def live_handlers(holder: Any) -> SimpleNamespace:
    """The Live tab's event handlers; ``on_start`` (the stream) runs inside a GPU request on
    ZeroGPU, sized from the speech it will process (:func:`float_studio.gpu.gpu_handler`)."""
    import gradio as gr

    def show_source(choice: str) -> tuple[Any, Any, Any, Any]:
        return (gr.update(visible=choice == "Text"), gr.update(visible=choice == "Text"),
                gr.update(visible=choice == "Upload"), gr.update(visible=choice == "Microphone"))

    @gpu_handler(holder.speed, _live_request_seconds)
    def on_start(image: Any, choice: str, words: str, voice_name: str, upload_path: str | None,
                 idle_on: bool, crop_on: bool, emo: str, steps: float, a: float, seed_value: Any,
                 sess: LiveSession) -> Iterator[tuple[Any, str]]:
        if image is None:
            raise gr.Error("Add a portrait first.")
        missing = player_unavailable_reason()
        if missing:
            raise gr.Error(missing)
        try:
            pipe = holder.get()
            sampling = SamplingConfig(a_cfg=float(a), nfe=int(steps), emotion=None if emo == "auto" else emo,
                                      seed=int(seed_value) if seed_value not in (None, "") else None)
            speech, seconds = live_speech(choice, words, voice_name, upload_path, sess)
        except (ValueError, RuntimeError) as exc:
            raise gr.Error(str(exc)) from None
        live = seconds is None
        estimate = "" if live else f"generating takes {holder.speed.estimate(seconds, sampling.nfe, 'speech')}"
        sess.stop.clear()
        try:
            for segment, info in run_live(pipe, image, speech, sampling, sess, idle=bool(idle_on),
                                          crop=bool(crop_on), live=live, estimate=estimate,
                                          max_seconds=max_live_seconds() if live else None):
                yield (str(segment) if segment is not None else None), info.markdown()
        except (ValueError, RuntimeError, OSError) as exc:
            log.warning("live stream failed: %s", exc)
            raise gr.Error(f"The stream stopped: {exc}") from None

    def on_stop(sess: LiveSession) -> None:
        sess.halt()

    def on_mic(chunk: Any, sess: LiveSession) -> None:
        if chunk is not None:
            rate, samples = chunk
            sess.push_mic(rate, samples)

    def on_mic_stop(sess: LiveSession) -> None:
        sess.mic_state = "done"

    return SimpleNamespace(show_source=show_source, on_start=on_start, on_stop=on_stop, on_mic=on_mic,
                           on_mic_stop=on_mic_stop)


# ---------------------------------------------------------------------------- wiring
def wire_live_tab(ui: LiveLayout, fn: SimpleNamespace) -> None:
    """Connect the Live tab's components to its handlers (API endpoint ``/live``)."""
    ui.mode.change(fn.show_source, ui.mode, [ui.text, ui.voice, ui.upload, ui.mic], queue=False,
                   api_visibility="private")
    start = ui.start.click(fn.on_start, [ui.portrait, ui.mode, ui.text, ui.voice, ui.upload, ui.idle, ui.crop,
                                         ui.emotion, ui.nfe, ui.a_cfg, ui.seed, ui.session],
                           [ui.video, ui.stats], concurrency_limit=2, api_name="live")
    # Stop sets the session's flag: the stream ends within one decode batch and says "stopped".
    # On ZeroGPU the stream runs in a GPU worker process that the flag does not reach, so Stop
    # cancels the event there (the worker closes the stream at its next segment).
    ui.stop.click(fn.on_stop, ui.session, None, queue=False, api_visibility="private",
                  cancels=[start] if on_zero_gpu() else None)
    live = max_live_seconds()
    ui.mic.stream(fn.on_mic, [ui.mic, ui.session], None, stream_every=0.25,
                  time_limit=int(live) + 30 if live else None, concurrency_limit=None, api_visibility="private")
    ui.mic.stop_recording(fn.on_mic_stop, ui.session, None, queue=False, api_visibility="private")
