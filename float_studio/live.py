"""The "Live" tab of FLOAT Studio: the video plays in the browser while it is being generated.

Speech comes from typed text (spoken by a text-to-speech engine: espeak-ng offline by default,
Piper when its binary and a voice are installed, or an OpenAI-compatible speech server such as
Kokoro-FastAPI at ``FLOAT_TTS_URL``), an uploaded file, or the microphone (streamed in). The
engine's :meth:`~float_core.pipeline.FloatPipeline.stream` yields frames a decode batch at a
time; this tab cuts them into short H.264/AAC MP4 segments (the first as soon as it exists,
then about a second each) and yields them to ``gr.Video(streaming=True)``, which plays them as
one HLS stream with continuous audio (Gradio re-encodes the segments' audio with one AAC
encoder per stream, gradio-app/gradio#13844). Shown while it runs: time to first frame, fps,
real-time factor, speaking/idle. Stop ends the stream within one decode batch.

Text and uploads are known speech: their conditions are the offline ones (whole-clip
features), so the video equals the Studio tab's for the same seed with idle off. The
microphone is live speech: sliding-span features, the emotion re-estimated per window, and
idle frames while nobody speaks.
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
from typing import Any, Iterator

import numpy as np

from float_core.config import EMOTIONS, FPS, SAMPLE_RATE, SamplingConfig

log = logging.getLogger(__name__)

FIRST_SEGMENT_FRAMES = 1  #: the first segment goes out with the first decoded chunk
SEGMENT_FRAMES = 25  #: later segments: about one second
MIC_QUEUE_CHUNKS = 400  #: microphone chunks buffered (~100 s at 0.25 s); the oldest are dropped
VOICE_ESPEAK, VOICE_PIPER, VOICE_SERVICE = "espeak-ng", "Piper", "Speech server (FLOAT_TTS_URL)"
SOURCES = ("Text", "Upload", "Microphone")


# ---------------------------------------------------------------------------- per-session state
class LiveSession:
    """One browser session's live state: the running stream, its Stop flag, microphone chunks.

    (A plain class, not a dataclass: Gradio would serialise a dataclass value into the page.)
    """

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.stream: Any = None  # the running StreamIterator
        self.mic: queue.Queue = queue.Queue(MIC_QUEUE_CHUNKS)
        self.mic_state = "idle"  # idle -> recording -> done
        self.workdir: str | None = None
        self.portrait: tuple[Any, Any] | None = None  # (key, SourceImage) of the last portrait
        self._lock = threading.Lock()

    def __deepcopy__(self, memo: dict) -> "LiveSession":
        return LiveSession()  # every session gets its own

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
    """What the tab shows while a stream runs."""

    state: str = "starting"  # starting, streaming, done, stopped
    frames: int = 0
    elapsed: float = 0.0
    first_frame: float | None = None
    speaking: bool = False
    latency: float | None = None

    @property
    def seconds(self) -> float:
        return self.frames / FPS

    def markdown(self) -> str:
        if self.first_frame is None:
            return f"**{self.state}** · waiting for the first frame ({self.elapsed:.1f} s)"
        fps = self.frames / max(self.elapsed, 1e-9)
        rtf = self.elapsed / max(self.seconds, 1e-9)
        mode = "**speaking**" if self.speaking else "**idle**"
        extra = f" · latency {self.latency:.2f} s" if self.latency is not None else ""
        return (f"**{self.state}** · time to first frame **{self.first_frame:.2f} s** · "
                f"**{fps:.1f} fps** · real-time factor **{rtf:.2f}** · {mode} · "
                f"{self.seconds:.1f} s generated{extra}")


def write_segment(path: Path, frames: list[np.ndarray], audio: list[np.ndarray]) -> Path:
    """One H.264/AAC MP4 segment of the stream (complete when this returns)."""
    from float_core.media.video import VideoWriter

    # Audio passed with the frames (not up front): an idle segment's silence is expected here.
    with VideoWriter(path, fps=FPS, audio_rate=SAMPLE_RATE, preset="veryfast") as writer:
        for batch, samples in zip(frames, audio):
            writer.write(batch, audio=samples)
    return path


def run_live(pipe: Any, portrait: Any, speech: Any, sampling: SamplingConfig, session: LiveSession, *,
             idle: bool = True, crop: bool = True, live: bool = False,
             ) -> Iterator[tuple[Path | None, LiveStats]]:
    """Stream ``speech`` through the engine and yield (segment path or None, stats).

    ``speech``: a path or a 16 kHz array (known speech) or, with ``live``, an iterable of chunks.
    The segment files are removed two segments later (Gradio has read them by then).
    """
    start = time.perf_counter()
    stats = LiveStats()
    yield None, stats
    source = session.source_image(pipe, portrait, crop)
    options: dict[str, Any] = {"stall_timeout": 0.5} if live else {}
    stream = pipe.stream(source, speech, sampling, idle=idle, **options)
    session.stream = stream
    frames: list[np.ndarray] = []
    audio: list[np.ndarray] = []
    pending = 0
    index = 0
    written: list[Path] = []
    try:
        for chunk in stream:
            if session.stop.is_set():
                break
            stats.first_frame = stats.first_frame if stats.first_frame is not None else time.perf_counter() - start
            frames.append(chunk.frames)
            audio.append(chunk.audio)
            pending += chunk.num_frames
            stats.frames += chunk.num_frames
            stats.speaking = bool(chunk.speaking[-1])
            stats.latency = chunk.latency if live else None
            if pending >= (FIRST_SEGMENT_FRAMES if index == 0 else SEGMENT_FRAMES):
                stats.state, stats.elapsed = "streaming", time.perf_counter() - start
                written.append(write_segment(session.new_segment_path(index), frames, audio))
                index, frames, audio, pending = index + 1, [], [], 0
                _drop_old(written)
                yield written[-1], stats
        if frames and not session.stop.is_set():
            written.append(write_segment(session.new_segment_path(index), frames, audio))
            stats.elapsed = time.perf_counter() - start
            stats.state = "done"
            yield written[-1], stats
    finally:
        stream.close()
        session.stream = None
    stats.elapsed = time.perf_counter() - start
    stats.state = "stopped" if session.stop.is_set() else "done"
    yield None, stats


def _drop_old(written: list[Path], keep: int = 2) -> None:
    for old in written[:-keep]:
        old.unlink(missing_ok=True)
    del written[:-keep]


# ---------------------------------------------------------------------------- layout
def build_live_tab(holder: Any) -> None:
    """Lay out the Live tab; called by ``app.py`` inside ``with gr.Tab("Live"):``.

    Args:
        holder: the app's :class:`float_studio.model.PipelineHolder` (shared read-only pipeline).
    """
    import gradio as gr

    voices = available_voices()
    session = gr.State(LiveSession(), time_to_live=3600, delete_callback=cleanup_session)
    gr.Markdown("Watch the portrait talk **while it is generated**: type text, upload speech or use "
                "the microphone. With *Idle when silent* on, silences (voice activity) make the face "
                "idle (blinks, small head motion) instead of mouthing noise.")
    with gr.Row():
        with gr.Column(scale=1):
            portrait = gr.Image(label="Portrait", type="numpy", sources=["upload", "clipboard", "webcam"],
                                elem_id="live-portrait")
            mode = gr.Radio(list(SOURCES), value="Text", label="Speech from", elem_id="live-mode")
            text = gr.Textbox(label="Text to speak", lines=3, elem_id="live-text",
                              value="Hello! I am a talking portrait, and you are watching me while I am made.")
            voice = gr.Dropdown(voices or [VOICE_ESPEAK], value=(voices or [VOICE_ESPEAK])[0], label="Voice",
                                elem_id="live-voice")
            upload = gr.Audio(sources=["upload"], type="filepath", label="Speech file", visible=False,
                              elem_id="live-upload")
            mic = gr.Audio(sources=["microphone"], type="numpy", streaming=True, label="Microphone",
                           visible=False, elem_id="live-mic")
            with gr.Accordion("Settings", open=False):
                idle = gr.Checkbox(True, label="Idle when silent (voice activity)", elem_id="live-idle")
                crop = gr.Checkbox(True, label="Crop to the face")
                emotion = gr.Dropdown(["auto"] + list(EMOTIONS), value="auto", label="Emotion")
                nfe = gr.Slider(1, 20, value=10, step=1, label="Steps (NFE)")
                a_cfg = gr.Slider(0, 5, value=2.0, step=0.1, label="Audio guidance γa")
                seed = gr.Number(0, precision=0, label="Seed")
            with gr.Row():
                start = gr.Button("Start", variant="primary", elem_id="live-start")
                stop = gr.Button("Stop", variant="stop", elem_id="live-stop")
        with gr.Column(scale=1):
            video = gr.Video(label="Live", streaming=True, autoplay=True, interactive=False, elem_id="live-video")
            stats = gr.Markdown("Press **Start**.", elem_id="live-stats")

    def show_source(choice: str) -> tuple[Any, Any, Any, Any]:
        return (gr.update(visible=choice == "Text"), gr.update(visible=choice == "Text"),
                gr.update(visible=choice == "Upload"), gr.update(visible=choice == "Microphone"))

    mode.change(show_source, mode, [text, voice, upload, mic], queue=False, api_visibility="private")

    def on_start(image: Any, choice: str, words: str, voice_name: str, upload_path: str | None,
                 idle_on: bool, crop_on: bool, emo: str, steps: float, a: float, seed_value: Any,
                 sess: LiveSession) -> Iterator[tuple[Any, str]]:
        if image is None:
            raise gr.Error("Add a portrait first.")
        try:
            pipe = holder.get()
            sampling = SamplingConfig(a_cfg=float(a), nfe=int(steps), emotion=None if emo == "auto" else emo,
                                      seed=int(seed_value) if seed_value not in (None, "") else None)
            if choice == "Text":
                speech: Any = speak(words, voice_name)
            elif choice == "Upload":
                if not upload_path:
                    raise ValueError("Upload a speech file first (or pick another source).")
                speech = upload_path
            else:
                while not sess.mic.empty():  # start from now, not from before Start
                    sess.mic.get_nowait()
                sess.mic_state = "waiting"
                speech = sess.mic_chunks()
        except (ValueError, RuntimeError) as exc:
            raise gr.Error(str(exc)) from None
        sess.stop.clear()
        try:
            for segment, info in run_live(pipe, image, speech, sampling, sess, idle=bool(idle_on),
                                          crop=bool(crop_on), live=choice == "Microphone"):
                yield (str(segment) if segment is not None else None), info.markdown()
        except (ValueError, RuntimeError, OSError) as exc:
            log.warning("live stream failed: %s", exc)
            raise gr.Error(f"The stream stopped: {exc}") from None

    start.click(on_start, [portrait, mode, text, voice, upload, idle, crop, emotion, nfe, a_cfg, seed, session],
                [video, stats], concurrency_limit=2, api_name="live")
    stop.click(lambda sess: sess.halt(), session, None, queue=False, api_visibility="private")

    def on_mic(chunk: Any, sess: LiveSession) -> None:
        if chunk is not None:
            rate, samples = chunk
            sess.push_mic(rate, samples)

    def on_mic_stop(sess: LiveSession) -> None:
        sess.mic_state = "done"

    mic.stream(on_mic, [mic, session], None, stream_every=0.25, time_limit=600, concurrency_limit=None,
               api_visibility="private")
    mic.stop_recording(on_mic_stop, session, None, queue=False, api_visibility="private")
