"""Speech emotion over time: per-window audio spans and honest labels (paper Sec. 4.2, w_e).

FLOAT conditions every sampling window on a speech-emotion vector w_e (7 probabilities from
the wav2vec2 emotion classifier, or a one-hot "redirection"). The reference computes one vector
per clip. With ``SamplingConfig(emotion="dynamic")`` each window of L frames (official: 50
frames = 2 s) uses the probabilities of its own stretch of speech instead; the sampler already
takes one vector per window (:func:`float_core.sampling.iter_motion_windows`).

Spans (:func:`window_spans`): window k covers video frames [kL, (k+1)L), i.e. samples
[kL * 640, (k+1)L * 640) at 16 kHz and 25 fps. The classifier mean-pools its features over the
whole input, so a bit of context smooths the estimate across window edges and keeps short last
windows meaningful: each span is widened by :data:`CONTEXT_SECONDS` on both sides and, when
still shorter than :data:`MIN_SPAN_SECONDS`, grown to that length, always clipped to the clip.
Each span is normalised on its own (zero mean, unit variance), as the classifier's feature
extractor does for any clip it is given.

:func:`describe_emotion` says in words which emotion conditioning a setting really uses.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from .config import EMOTIONS, SAMPLE_RATE, SamplingConfig, canonical_emotion

__all__ = ["CONTEXT_SECONDS", "MIN_SPAN_SECONDS", "describe_emotion", "resolve_emotion", "window_spans"]

#: Audio added before and after each window's own span (seconds).
CONTEXT_SECONDS = 0.5
#: Spans shorter than this (the last window of a clip) are grown to it where the clip allows.
MIN_SPAN_SECONDS = 1.0


def window_spans(num_samples: int, num_frames: int, window: int, samples_per_frame: int,
                 sample_rate: int = SAMPLE_RATE, context: float = CONTEXT_SECONDS,
                 min_seconds: float = MIN_SPAN_SECONDS) -> list[tuple[int, int]]:
    """Sample ranges [start, end) of the speech each sampling window's emotion is estimated from.

    Args:
        num_samples: length of the waveform.
        num_frames: T, video frames of the clip (``ceil(num_samples * fps / sample_rate)``).
        window: L, frames per sampling window.
        samples_per_frame: audio samples per video frame (640 at 16 kHz, 25 fps).
        context: seconds added on both sides of each window's own span.
        min_seconds: shortest span; shorter ones are widened (both sides, then whichever side
            the clip allows).

    Returns:
        ``ceil(T / L)`` spans, one per window, in order.
    """
    if num_samples < 1 or num_frames < 1 or window < 1 or samples_per_frame < 1:
        raise ValueError(f"window_spans needs positive sizes, got samples={num_samples}, frames={num_frames}, "
                         f"window={window}, samples_per_frame={samples_per_frame}")
    if context < 0 or min_seconds < 0:
        raise ValueError(f"context and min_seconds must be >= 0, got {context} and {min_seconds}")
    pad = int(round(context * sample_rate))
    shortest = min(num_samples, int(round(min_seconds * sample_rate)))
    spans = []
    for k in range(-(-num_frames // window)):
        start = min(k * window * samples_per_frame, num_samples - 1)
        end = min((k + 1) * window * samples_per_frame, num_samples)
        start, end = max(0, start - pad), min(num_samples, end + pad)
        missing = shortest - (end - start)
        if missing > 0:  # grow both sides, then shift what does not fit to the other side
            start, end = start - missing // 2, end + missing - missing // 2
            if start < 0:
                start, end = 0, end - start
            if end > num_samples:
                start, end = start - (end - num_samples), num_samples
        spans.append((int(start), int(end)))
    return spans


def resolve_emotion(speech_probs: Tensor, emotion: object = None, timeline: Tensor | None = None) -> Tensor:
    """The emotion vector w_e (7,) for sampling, from the speech's probabilities and a setting.

    ``emotion`` is any form :func:`~float_core.config.canonical_emotion` accepts. ``None`` or
    ``"auto"``: ``speech_probs``; one of :data:`EMOTIONS` (any case): redirection to that
    emotion as a one-hot vector (paper Sec. 4.2); 7 numbers: a given probability vector,
    normalised to sum 1; ``"dynamic"``: the per-window ``timeline`` (W, 7) of
    ``FloatPipeline.emotion_timeline``, returned as it is. The result has ``speech_probs``'
    dtype and device.
    """
    emotion = canonical_emotion(emotion)
    if emotion is None:
        return speech_probs
    if emotion == "dynamic":
        if timeline is None or timeline.ndim != 2 or timeline.shape[1] != len(EMOTIONS):
            raise ValueError("emotion 'dynamic' needs the per-window timeline (windows, 7) of "
                             "FloatPipeline.emotion_timeline(speech)")
        return timeline.to(speech_probs)
    if isinstance(emotion, str):
        return torch.nn.functional.one_hot(torch.tensor(EMOTIONS.index(emotion)), len(EMOTIONS)).to(speech_probs)
    vec = torch.tensor(emotion, dtype=torch.float32)  # built on the host: no device sync to validate it
    return (vec / vec.sum()).to(speech_probs)


def _host_probs(probs: Tensor | np.ndarray | Sequence[float]) -> np.ndarray:
    """Probabilities as a float64 NumPy array (device tensors moved explicitly)."""
    if torch.is_tensor(probs):
        return probs.detach().to("cpu", torch.float64).numpy()
    return np.asarray(probs, dtype=np.float64)


def _mixture(vec: np.ndarray, top: int = 3) -> str:
    """"62% happy, 21% neutral, 9% sad": the ``top`` largest entries of a (7,) vector."""
    vec = vec / vec.sum()
    order = np.argsort(-vec, kind="stable")[:top]
    return ", ".join(f"{vec[i]:.0%} {EMOTIONS[i]}" for i in order)


def _check_vector(name: str, vec: np.ndarray, shape_text: str) -> None:
    if vec.shape[-1:] != (len(EMOTIONS),) or not np.isfinite(vec).all() or (vec < 0).any():
        raise ValueError(f"{name}: expected {shape_text} of non-negative {len(EMOTIONS)}-emotion "
                         f"probabilities (order {', '.join(EMOTIONS)}), got shape {vec.shape}")


def describe_emotion(probs_or_timeline: Tensor | np.ndarray | Sequence[float] | None,
                     setting: SamplingConfig | str | Sequence[float] | None,
                     window_seconds: float = 2.0) -> str:
    """A label of the emotion conditioning that ``setting`` really uses (pure).

    Args:
        probs_or_timeline: the speech-emotion probabilities (7,) for "auto", or the per-window
            timeline (W, 7) (``FloatPipeline.emotion_timeline``) for "dynamic"; unused (may be
            None) for a named redirection or a given vector.
        setting: a :class:`~float_core.config.SamplingConfig` or its ``emotion`` value: None or
            "auto", "dynamic", one of :data:`EMOTIONS`, or 7 probabilities.
        window_seconds: duration of one sampling window (L / fps), for the dynamic label.

    Returns:
        e.g. "mixture of 62% happy, 21% neutral, 9% sad (auto, soft probabilities)",
        "redirected to happy (one-hot)", "mixture of 50% angry, 50% sad (custom probabilities)",
        "dynamic: per window, 3 windows of 2 s, soft probabilities; strongest: happy (1-2),
        neutral (3)".
    """
    emotion = setting.emotion if isinstance(setting, SamplingConfig) else setting
    if isinstance(emotion, str):
        name = emotion.lower()
        if name in EMOTIONS:
            return f"redirected to {name} (one-hot)"
        if name not in ("auto", "dynamic"):
            raise ValueError(f"emotion: expected 'auto', 'dynamic' or one of {', '.join(EMOTIONS)}, got {emotion!r}")
        emotion = None if name == "auto" else name
    if emotion is not None and emotion != "dynamic":
        vec = _host_probs(emotion).reshape(-1)
        _check_vector("emotion", vec, "a vector")
        return f"mixture of {_mixture(vec)} (custom probabilities)"
    if probs_or_timeline is None:
        raise ValueError("probs_or_timeline: the speech-emotion probabilities are needed for 'auto' and 'dynamic'")
    probs = _host_probs(probs_or_timeline)
    if emotion is None:
        probs = probs.reshape(-1) if probs.ndim == 2 and probs.shape[0] == 1 else probs
        _check_vector("probs_or_timeline", probs, "a (7,) vector")
        if probs.ndim != 1:
            raise ValueError(f"probs_or_timeline: 'auto' uses the clip's (7,) probabilities, got shape {probs.shape}")
        return f"mixture of {_mixture(probs)} (auto, soft probabilities)"
    _check_vector("probs_or_timeline", probs, "a (windows, 7) timeline")
    if probs.ndim != 2:
        raise ValueError(f"probs_or_timeline: 'dynamic' needs the (windows, 7) timeline, got shape {probs.shape}")
    strongest = probs.argmax(axis=1)
    runs: list[tuple[int, int, int]] = []  # (emotion, first window, last window), 1-based windows
    for k, e in enumerate(strongest.tolist(), start=1):
        if runs and runs[-1][0] == e:
            runs[-1] = (e, runs[-1][1], k)
        else:
            runs.append((e, k, k))
    text = ", ".join(f"{EMOTIONS[e]} ({a}-{b})" if a != b else f"{EMOTIONS[e]} ({a})" for e, a, b in runs)
    n = probs.shape[0]
    return (f"dynamic: per window, {n} window{'s' if n != 1 else ''} of {window_seconds:g} s, "
            f"soft probabilities; strongest: {text}")
