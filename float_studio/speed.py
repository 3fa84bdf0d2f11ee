"""Honest speed: the app's measured throughput on the machine it runs on, its estimates, and
what to say when a live stream cannot keep real time.

The cost of a generation is nearly linear in the speech's length: the flow-matching sampler
solves one window of L frames per 2 s (paper Sec. 4.2) with NFE vector-field evaluations
each, and the decoder renders every frame. :class:`Throughput` keeps the two parts apart,
seconds per audio second **per evaluation** for sampling and seconds per audio second for
rendering, so an estimate follows the steps (NFE) setting. Until the first generation on
this process has been measured, estimates use a per-device figure
(:data:`DEFAULT_SECONDS_PER_AUDIO_SECOND`) and say so.

Live streams and calls measure their own frame rate; :func:`realtime_note` turns a rate
below :data:`~float_core.config.FPS` into the delay to expect.
"""

from __future__ import annotations

import threading
from typing import Any

from float_core.config import FPS, SamplingConfig

#: Seconds of compute per second of speech, whole pipeline at the default settings (NFE 10,
#: Euler, 512 px), per device type, before anything was measured here. CPU: ~7 s measured on
#: 2 AVX2 cores in float32 (``float-studio bench``), rounded up. CUDA: the paper's 41 fps of
#: forward passes on a V100 at NFE 10 (Table 3) is 0.6 s per second of video; 1.0 leaves room
#: for the speech encoders and the H.264 encoding. MPS: not measured, between the two.
DEFAULT_SECONDS_PER_AUDIO_SECOND: dict[str, float] = {"cuda": 1.0, "mps": 4.0, "cpu": 8.0}
#: A live stream counts as real time down to this fraction of FPS (a paced stream's measured
#: rate wobbles by a few percent around 25 fps with the arrival of the input).
REALTIME_TOLERANCE = 0.95
#: Frames a live stream needs before its rate is judged (one second of video).
MIN_FRAMES_FOR_RATE = FPS


def device_label(device: Any) -> str:
    """"this CPU", "this GPU" or "this mps device": how estimates name the machine."""
    kind = getattr(device, "type", None) or str(device).split(":")[0]
    return {"cpu": "this CPU", "cuda": "this GPU"}.get(kind, f"this {kind} device")


class Throughput:
    """The measured speed of this process's pipeline (thread-safe; one per
    :class:`~float_studio.model.PipelineHolder`, ``holder.speed``).

    Args:
        device: the pipeline's device (a ``torch.device`` or its name); set again by
            :meth:`use_device` when the pipeline loads.
    """

    def __init__(self, device: Any = "cpu") -> None:
        self._lock = threading.Lock()
        self.device_kind = "cpu"
        self.label = device_label("cpu")
        self.sampling: float | None = None  #: s per audio second per vector-field evaluation
        self.rendering: float | None = None  #: s per audio second (decode + encode)
        self.use_device(device)

    def use_device(self, device: Any) -> None:
        """The pipeline runs on ``device`` (its estimates and default figure follow it)."""
        kind = getattr(device, "type", None) or str(device).split(":")[0]
        with self._lock:
            if kind != self.device_kind:
                self.sampling = self.rendering = None
            self.device_kind, self.label = kind, device_label(kind)

    @property
    def default_figure(self) -> float:
        """Seconds per audio second on this device type before any measurement (NFE 10)."""
        return DEFAULT_SECONDS_PER_AUDIO_SECOND.get(self.device_kind, DEFAULT_SECONDS_PER_AUDIO_SECOND["cpu"])

    @property
    def measured(self) -> bool:
        """Whether both parts have been measured on this process."""
        return self.sampling is not None and self.rendering is not None

    def record_sampling(self, audio_seconds: float, seconds: float, nfe: int) -> None:
        """Sampling ``audio_seconds`` of motion with ``nfe`` evaluations per window took ``seconds``."""
        if audio_seconds > 0 and nfe > 0:
            with self._lock:
                self.sampling = seconds / (audio_seconds * nfe)

    def record_rendering(self, audio_seconds: float, seconds: float) -> None:
        """Rendering (decoding and encoding) ``audio_seconds`` of video took ``seconds``."""
        if audio_seconds > 0:
            with self._lock:
                self.rendering = seconds / audio_seconds

    def seconds_for(self, audio_seconds: float, nfe: int = SamplingConfig().nfe) -> float:
        """Estimated wall seconds to sample and render ``audio_seconds`` of speech at ``nfe``."""
        with self._lock:
            if self.sampling is not None and self.rendering is not None:
                return audio_seconds * (self.sampling * nfe + self.rendering)
        return audio_seconds * self.default_figure

    def estimate(self, audio_seconds: float, nfe: int = SamplingConfig().nfe, what: str = "clip") -> str:
        """E.g. "about 45 s for this 3.7 s clip on this CPU" (+ how the figure was obtained)."""
        total = self.seconds_for(audio_seconds, nfe)
        how = "" if self.measured else " (a rough figure until the first generation here is measured)"
        return f"about {_duration(total)} for this {audio_seconds:.1f} s {what} on {self.label}{how}"


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{max(1, round(seconds)):d} s"
    return f"{seconds / 60:.0f} min" if seconds >= 600 else f"{seconds / 60:.1f} min"


def realtime_note(fps: float | None, frames: int, live: bool) -> str:
    """What to expect when the measured rate ``fps`` is below real time, else "".

    Args:
        fps: generated frames per second, measured after the first frame.
        frames: frames generated so far (the rate is judged after :data:`MIN_FRAMES_FOR_RATE`).
        live: the input arrives in real time (microphone, call): the video falls behind the
            voice; otherwise (a file, text) the player waits for the video.
    """
    if fps is None or frames < MIN_FRAMES_FOR_RATE or fps >= REALTIME_TOLERANCE * FPS:
        return ""
    behind = FPS / max(fps, 1e-3) - 1.0  # seconds of delay added per second of speech
    if live:
        return (f"⚠️ This machine generates {fps:.1f} fps, below real time ({FPS} fps): the video falls "
                f"behind the voice by about {behind:.1f} s per second of speech (the oldest input is "
                f"dropped when the delay grows too long). A GPU keeps real time.")
    return (f"⚠️ This machine generates {fps:.1f} fps, below real time ({FPS} fps): the video pauses to "
            f"buffer; each second of speech takes about {behind + 1:.1f} s to generate.")
