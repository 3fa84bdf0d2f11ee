"""Voice activity per 40 ms video frame: which frames are speech, which are silence.

The streaming engine's silence mode (TalkingMachines' speaking/silence modes) needs
to know, frame by frame, whether the driving audio is speech: silent frames get the null audio
condition (FLOAT's classifier-free training zeroes w_a, paper Sec. 4.2 / Eq. 13), so the face
idles instead of mouthing noise. Energy alone cannot tell a noisy microphone from speech, so
the detector is `Silero VAD <https://github.com/snakers4/silero-vad>`_ (MIT licence), whose
TorchScript model ships inside the ``silero-vad`` wheel (no download, runs offline, ~1 ms per
32 ms chunk on one CPU thread). Without the package, :class:`VoiceActivity` falls back to an
adaptive energy gate and says so once (a warning naming the package to install).

Silero scores 512-sample chunks (32 ms at 16 kHz); a 640-sample video frame takes the largest
probability of the chunks that end inside it (every frame contains at least one chunk end).
The per-frame decision uses hysteresis (speech starts at ``threshold``, ends below
``neg_threshold``) and a hangover of ``min_silence_ms``, so short pauses between words stay
"speaking" and the face does not flicker between modes.

One :class:`VoiceActivity` per stream: it carries the model's recurrent state and the partial
chunk between calls, so it is not shared between streams (build one per user / call).
"""

from __future__ import annotations

import importlib.util
import dataclasses
import io
import logging
import math
import threading
import warnings
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from .config import SAMPLE_RATE, SAMPLES_PER_FRAME
from .inputs import DrivingAudio

__all__ = ["VoiceActivity", "detect_speech", "silence_mode", "silero_model_path"]

log = logging.getLogger(__name__)

_CHUNK = 512  #: Silero's window at 16 kHz (32 ms)
_INSTALL_HINT = "pip install silero-vad (its model ships in the wheel; no download)"

_model_bytes: bytes | None = None
_model_lock = threading.Lock()
_warned = False

Backend = Literal["auto", "silero", "energy"]


def silero_model_path() -> Path | None:
    """Path of the TorchScript Silero VAD inside the installed ``silero-vad`` wheel, or None.

    Found without importing the package: its ``__init__`` calls ``torch.set_num_threads(1)``,
    which would slow the caller's thread (the engine's other stages) down.
    """
    spec = importlib.util.find_spec("silero_vad")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "silero_vad.jit"
    return path if path.is_file() else None


def _load_silero() -> torch.jit.ScriptModule:
    """A fresh Silero model (its own recurrent state); the file is read once per process."""
    global _model_bytes
    with _model_lock:
        if _model_bytes is None:
            path = silero_model_path()
            if path is None:
                raise ModuleNotFoundError(f"voice activity: silero-vad is not installed; {_INSTALL_HINT}")
            _model_bytes = path.read_bytes()
    with warnings.catch_warnings():  # torch 2.13 deprecates TorchScript loading; the wheel ships it
        warnings.simplefilter("ignore", DeprecationWarning)
        model = torch.jit.load(io.BytesIO(_model_bytes), map_location="cpu")
    return model.eval()


class VoiceActivity:
    """Streaming speech/silence decisions for 40 ms frames of 16 kHz mono audio.

    Example::

        vad = VoiceActivity()
        for block in microphone_blocks:          # float32 16 kHz, any length
            flags = vad.push(block)               # bool per frame completed by this block
        vad.speaking(frame)                       # or one 640-sample frame at a time

    Args:
        threshold: speech probability at which a frame starts speech (Silero's default 0.5).
        neg_threshold: probability below which a frame counts as silent (default threshold - 0.15).
        min_silence_ms: silence needed before "speaking" ends (hangover; default 300 ms).
        backend: "auto" (Silero if installed, else the energy gate with a warning), "silero"
            (raise ModuleNotFoundError if it is missing) or "energy".
    """

    def __init__(self, *, threshold: float = 0.5, neg_threshold: float | None = None,
                 min_silence_ms: float = 300.0, backend: Backend = "auto") -> None:
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"threshold must be in (0, 1), got {threshold}")
        self.threshold = float(threshold)
        self.neg_threshold = max(0.01, self.threshold - 0.15) if neg_threshold is None else float(neg_threshold)
        if not 0.0 < self.neg_threshold <= self.threshold:
            raise ValueError(f"neg_threshold must be in (0, threshold], got {neg_threshold}")
        if min_silence_ms < 0:
            raise ValueError(f"min_silence_ms must be >= 0, got {min_silence_ms}")
        self.hangover_frames = int(math.ceil(min_silence_ms / (1000 * SAMPLES_PER_FRAME / SAMPLE_RATE)))
        if backend not in ("auto", "silero", "energy"):
            raise ValueError(f"backend must be 'auto', 'silero' or 'energy', got {backend!r}")
        self._model = None
        if backend in ("auto", "silero"):
            try:
                self._model = _load_silero()
            except ModuleNotFoundError:
                if backend == "silero":
                    raise
                _warn_fallback()
        #: "silero" or "energy": the detector in use.
        self.backend = "silero" if self._model is not None else "energy"
        self.reset()

    def reset(self) -> None:
        """Forget everything heard so far (start of a new stream)."""
        if self._model is not None:
            self._model.reset_states()
        self._pending = np.zeros(0, np.float32)  # samples not yet scored (< one chunk)
        self._frame_fill = 0  # samples of the current frame already pushed
        self._frame_prob = 0.0  # largest chunk probability ending in the current frame
        self._speaking = False
        self._silent_run = 0
        self._noise_floor = 1e-3  # energy backend: running estimate of the background RMS
        #: Probability of the last completed frame (for display).
        self.last_probability = 0.0

    # ------------------------------------------------------------------ public API
    def speaking(self, frame_audio: np.ndarray) -> bool:
        """The decision for one frame of exactly 640 samples (40 ms)."""
        frame = _as_samples(frame_audio)
        if frame.size != SAMPLES_PER_FRAME or self._frame_fill:
            raise ValueError(f"speaking() takes one whole frame of {SAMPLES_PER_FRAME} samples, got {frame.size}"
                             + (" after a partial push()" if self._frame_fill else "") + "; use push() for any length")
        return bool(self.push(frame)[0])

    def push(self, samples: np.ndarray) -> np.ndarray:
        """Feed samples of any length; returns a bool for every frame completed by them.

        Frames are counted from the first sample ever pushed (frame f = samples
        ``[640 f, 640 (f + 1))``), so the decisions do not depend on how the audio is cut.
        """
        samples = _as_samples(samples)
        flags: list[bool] = []
        pos = 0
        while pos < samples.size:
            take = min(SAMPLES_PER_FRAME - self._frame_fill, samples.size - pos)
            self._score(samples[pos:pos + take])
            pos += take
            self._frame_fill += take
            if self._frame_fill == SAMPLES_PER_FRAME:
                flags.append(self._decide(self._frame_prob))
                self._frame_fill, self._frame_prob = 0, 0.0
        return np.array(flags, dtype=bool)

    # ------------------------------------------------------------------ internals
    def _score(self, part: np.ndarray) -> None:
        """Score every complete 512-sample chunk; keep the largest probability of this frame."""
        self._pending = np.concatenate([self._pending, part])
        while self._pending.size >= _CHUNK:
            chunk, self._pending = self._pending[:_CHUNK], self._pending[_CHUNK:]
            self._frame_prob = max(self._frame_prob, self._chunk_probability(chunk))

    def _chunk_probability(self, chunk: np.ndarray) -> float:
        if self._model is None:
            return self._energy_probability(chunk)
        # The model is a few small matmuls: one intra-op thread is ~8x faster than two on a
        # busy CPU. The setting is per thread (OpenMP), so the caller's thread is restored.
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            with torch.inference_mode():
                prob = self._model(torch.from_numpy(np.ascontiguousarray(chunk)), SAMPLE_RATE)
            return float(prob.reshape(-1)[0])
        finally:
            torch.set_num_threads(threads)

    def _energy_probability(self, chunk: np.ndarray) -> float:
        """Fallback: RMS against a slowly rising, quickly falling noise floor (no model)."""
        rms = float(np.sqrt(np.mean(chunk.astype(np.float64) ** 2)))
        if rms < 1e-4:  # -80 dBFS: digital silence
            return 0.0
        ratio = rms / self._noise_floor
        self._noise_floor = min(rms, self._noise_floor * 1.1) if rms > self._noise_floor else rms
        self._noise_floor = max(self._noise_floor, 1e-4)
        return float(np.clip((ratio - 2.0) / 4.0, 0.0, 1.0))  # 0 at 2x the floor, 1 at 6x

    def _decide(self, prob: float) -> bool:
        self.last_probability = prob
        if prob >= self.threshold:
            self._speaking, self._silent_run = True, 0
        elif prob < self.neg_threshold and self._speaking:
            self._silent_run += 1
            if self._silent_run > self.hangover_frames:
                self._speaking = False
        return self._speaking


def detect_speech(wave: np.ndarray, **options: object) -> np.ndarray:
    """Speaking flags (ceil(S / 640),) for a whole 16 kHz waveform; the last frame is zero-padded.

    ``options`` are :class:`VoiceActivity`'s keyword arguments. The same detector as the live
    path, run over the clip from its start, so a file and the same samples streamed agree.
    """
    wave = _as_samples(wave)
    frames = -(-wave.size // SAMPLES_PER_FRAME)
    padded = np.zeros(frames * SAMPLES_PER_FRAME, np.float32)
    padded[:wave.size] = wave
    return VoiceActivity(**options).push(padded)  # type: ignore[arg-type]


def silence_mode(speech: DrivingAudio, *, threshold: float = 0.5,
                 min_silence_ms: float = 300.0) -> tuple[DrivingAudio, np.ndarray]:
    """Silence mode on known speech: the frames' speaking flags and the speech whose silent
    frames carry the null audio condition.

    TalkingMachines' speaking/silence modes on FLOAT: a frame the detector marks silent gets
    w_a = 0, the condition that classifier-free training drops (paper Sec. 4.2, Eq. 13), so the
    face idles (blinks, small head motion, mouth at rest) instead of mouthing noise or someone
    else's voice. The one rule of every path that knows its speech in advance (a stream of a
    file, ``generate(idle=True)``, each character of a conversation).

    Args:
        speech: the analysed speech (its waveform and its (T, d_a) features).
        threshold, min_silence_ms: as :class:`VoiceActivity`.

    Returns:
        (the speech with silent frames' features zeroed, speaking flags bool (T,)).
    """
    total = speech.num_frames
    flags = np.zeros(total, bool)
    detected = detect_speech(speech.waveform, threshold=threshold, min_silence_ms=min_silence_ms)[:total]
    flags[:detected.size] = detected
    mask = torch.from_numpy(flags).to(speech.audio_features)[:, None]
    return dataclasses.replace(speech, audio_features=speech.audio_features * mask), flags


def _as_samples(samples: np.ndarray) -> np.ndarray:
    x = np.asarray(samples)
    if x.ndim != 1:
        raise ValueError(f"voice activity: expected mono samples (n,), got shape {x.shape}")
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"voice activity: expected float samples in [-1, 1], got {x.dtype}")
    x = x.astype(np.float32, copy=False)
    if not np.isfinite(x).all():
        raise ValueError("voice activity: the samples contain NaN or infinite values")
    return x


def _warn_fallback() -> None:
    global _warned
    if not _warned:
        _warned = True
        log.warning("voice activity: silero-vad is not installed, so silence is detected by energy "
                    "alone (a noisy microphone will read as speech); %s", _INSTALL_HINT)
