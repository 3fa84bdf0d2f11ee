"""Plots and slider ranges of the FLOAT Studio app (plotly figures; no Gradio).

Pure functions of arrays: the lambda(t) coefficients plot (generated vs edited), the
speech-emotion bars and timeline (with what sampling really uses), the direction slider
labels and the edit-slider ranges derived from the sampled motion.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from float_core.config import EMOTIONS

if TYPE_CHECKING:
    import plotly.graph_objects as go


# ---------------------------------------------------------------------------- slider ranges
def nice_ceil(x: float) -> float:
    """The smallest of 1, 2, 2.5, 5 x 10^k that is >= x (x > 0)."""
    if not x > 0 or not math.isfinite(x):
        raise ValueError(f"nice_ceil: expected a positive finite number, got {x!r}")
    exp = math.floor(math.log10(x))
    for m in (1.0, 2.0, 2.5, 5.0, 10.0):
        v = m * 10.0**exp
        if v >= x * (1 - 1e-9):
            return float(f"{v:.12g}")
    return 10.0 ** (exp + 1)  # unreachable


def slider_ranges(lambdas: np.ndarray, minimum: float = 1e-3) -> np.ndarray:
    """Half-width of each direction's edit slider from the motion's lambda (T, M).

    Each slider spans +-max(3 std, the clip's full peak-to-peak range) of that coefficient,
    rounded up to a readable number, so the slider's ends are clearly visible edits while
    its middle region holds the variation the clip already has.
    """
    lam = np.asarray(lambdas, dtype=np.float64)
    if lam.ndim != 2 or lam.shape[0] == 0:
        raise ValueError(f"lambdas: expected (frames, directions), got shape {lam.shape}")
    spread = np.maximum(3 * lam.std(axis=0), lam.max(axis=0) - lam.min(axis=0))
    floor = max(minimum, 0.05 * float(np.abs(lam).max()))
    return np.array([nice_ceil(max(float(s), floor)) for s in spread])


def most_active_directions(lambdas: np.ndarray, k: int = 5) -> list[int]:
    """Indices of the ``k`` directions whose coefficient varies most over the clip."""
    std = np.asarray(lambdas, dtype=np.float64).std(axis=0)
    return [int(i) for i in np.argsort(-std, kind="stable")[:k]]


# ---------------------------------------------------------------------------- directions
#: Direction groups in the order the sliders show them, with their headings.
GROUP_TITLES: dict[str, str] = {"mouth": "Mouth", "eyes": "Eyes", "head": "Head", "other": "Other"}


def direction_label(info: Any | None, index: int) -> str:
    """A slider label: "λ3 · Mouth 1" with a DirectionInfo, "λ3" without."""
    return f"λ{index + 1}" if info is None else f"λ{index + 1} · {info.label}"


def direction_tooltip(info: Any | None) -> str:
    """The slider's info line: what the direction moves, region shares, or a placeholder."""
    if info is None:
        return "Not measured yet: generate a video to find out what this direction moves."
    shares = ", ".join(f"{r} {info.shares[r]:.0%}" for r in sorted(info.shares, key=info.shares.get, reverse=True))
    return f"Moves: {shares}."


def grouped_order(directions: Sequence[Any]) -> list[int]:
    """Direction indices sorted by group (mouth, eyes, head, other), then by index."""
    rank = {g: i for i, g in enumerate(GROUP_TITLES)}
    return sorted(range(len(directions)), key=lambda m: (rank.get(directions[m].group, len(rank)), m))


# ---------------------------------------------------------------------------- plots
_LAYOUT = dict(template="plotly_white", margin=dict(l=40, r=10, t=50, b=40), height=300,
               legend=dict(orientation="h", y=-0.25))


def lambda_figure(lambdas: np.ndarray, fps: float, frame_index: int | None = None,
                  offsets: np.ndarray | None = None, visible: int = 5,
                  directions: Sequence[Any] = ()) -> "go.Figure":
    """Motion coefficients lambda_m(t) over the clip, generated vs edited.

    The ``visible`` most active directions are shown (others one legend click away); every
    edited direction gets a dashed "edited" trace lambda + offset and is shown. ``offsets``
    is (M,) for every frame or (T, M) per frame. A vertical line marks the previewed frame.
    """
    import plotly.graph_objects as go

    lam = np.asarray(lambdas, dtype=np.float64)
    t = np.arange(lam.shape[0]) / fps
    delta = None if offsets is None else np.broadcast_to(np.asarray(offsets, dtype=np.float64), lam.shape)
    edited = set() if delta is None else {m for m in range(lam.shape[1]) if np.any(delta[:, m])}
    shown = set(most_active_directions(lam, visible)) | edited
    fig = go.Figure()
    for m in range(lam.shape[1]):
        name = direction_label(directions[m] if directions else None, m)
        fig.add_trace(go.Scatter(x=t, y=lam[:, m], mode="lines", name=name,
                                 legendgroup=f"d{m}", visible=True if m in shown else "legendonly"))
        if m in edited:
            fig.add_trace(go.Scatter(x=t, y=lam[:, m] + delta[:, m], mode="lines", name=f"{name} edited",
                                     legendgroup=f"d{m}", line=dict(dash="dash"), showlegend=False))
    if frame_index is not None and lam.shape[0]:
        fig.add_vline(x=float(frame_index) / fps, line_dash="dot", line_color="gray")
    title = "Motion coefficients λ(t): generated" + (" (solid) vs edited (dashed)" if edited else "")
    fig.update_layout(title=title, xaxis_title="time (s)", yaxis_title="λ", **_LAYOUT)
    return fig


#: Bar colours of the emotion plot: what sampling uses, and the speech's own estimate.
EMOTION_HIGHLIGHT, EMOTION_OTHER = "#4f46e5", "#cbd5e1"


def _check_probs(name: str, probs: np.ndarray, ndim: int) -> np.ndarray:
    arr = np.asarray(probs, dtype=np.float64)
    if arr.ndim != ndim or arr.shape[-1] != len(EMOTIONS):
        want = f"{len(EMOTIONS)} values" if ndim == 1 else f"(windows, {len(EMOTIONS)})"
        raise ValueError(f"{name}: expected {want}, got shape {arr.shape}")
    return arr


def emotion_figure(detected: np.ndarray, used: np.ndarray, label: str) -> "go.Figure":
    """The speech's 7 emotion probabilities and, next to them, the vector sampling uses.

    Args:
        detected: the classifier's probabilities for the whole clip (7,), order :data:`EMOTIONS`.
        used: what the sampler is conditioned on: (7,) (the same mixture for "auto", a one-hot
            for a redirection) or (W, 7) per window ("dynamic": see the timeline plot).
        label: :func:`float_core.emotion.describe_emotion` of the setting (the title says it).
    """
    import plotly.graph_objects as go

    probs = _check_probs("emotion probabilities", detected, 1)
    names = [e.capitalize() for e in EMOTIONS]
    fig = go.Figure(go.Bar(x=names, y=probs, marker_color=EMOTION_OTHER, name="heard in the speech",
                           text=[f"{p:.0%}" for p in probs], textposition="outside",
                           hovertemplate="%{x}: %{y:.1%}<extra>heard</extra>"))
    vec = np.asarray(used, dtype=np.float64)
    if vec.ndim == 1:
        vec = _check_probs("used emotion", vec, 1)
        fig.add_trace(go.Bar(x=names, y=vec, marker_color=EMOTION_HIGHLIGHT, name="used for sampling",
                             hovertemplate="%{x}: %{y:.1%}<extra>used</extra>"))
    fig.update_layout(title=dict(text=f"Speech emotion<br><sub>sampling uses: {label}</sub>"),
                      barmode="group", yaxis=dict(range=[0, 1.15], title="probability", tickformat=".0%"),
                      showlegend=True, **_LAYOUT)
    return fig


def emotion_timeline_figure(windows: np.ndarray, used: np.ndarray, window_seconds: float,
                            label: str) -> "go.Figure":
    """Per-window speech-emotion probabilities over time (one line per emotion).

    With the "dynamic" setting (``used`` is (W, 7)) these lines are what each window is
    sampled with; otherwise they are shown for reference and the title says that one vector
    (``label``) is used for every window.
    """
    import plotly.graph_objects as go

    probs = _check_probs("emotion timeline", windows, 2)
    dynamic = np.asarray(used).ndim == 2
    t = (np.arange(probs.shape[0]) + 0.5) * window_seconds
    fig = go.Figure()
    for i, name in enumerate(EMOTIONS):
        fig.add_trace(go.Scatter(x=t, y=probs[:, i], mode="lines+markers", name=name.capitalize(),
                                 line=dict(dash="solid" if dynamic else "dot"),
                                 hovertemplate=f"{name}: %{{y:.1%}} at %{{x:.1f}} s<extra></extra>"))
    how = ("used: each window is sampled with its own estimate" if dynamic
           else f"for reference; every window uses {label}")
    fig.update_layout(title=dict(text=f"Emotion over time ({window_seconds:g} s windows)<br><sub>{how}</sub>"),
                      xaxis_title="time (s)", yaxis=dict(range=[0, 1.05], title="probability", tickformat=".0%"),
                      **_LAYOUT)
    return fig


#: One colour per character of a conversation (the speaking-timeline plot), cycled.
CHARACTER_COLORS = ("#4f46e5", "#0ea5e9", "#f59e0b", "#10b981", "#ef4444", "#a855f7")


def speaking_timeline_figure(names: Sequence[str], speaking: np.ndarray, fps: float,
                             speaker: np.ndarray | None = None) -> "go.Figure":
    """Who speaks when in a conversation: one row per character with the spans its voice
    activity marks speech (the rest of the time it idles in silence mode), and, for the
    "speaker" layout, a row "Large tile" saying who is shown large.

    Args:
        names: the characters, in order (the first row at the top).
        speaking: bool (N, T) speaking flags.
        fps: frames per second (the time axis is in seconds).
        speaker: int (T,) the large tile's character, or None.
    """
    import plotly.graph_objects as go

    from float_core.conversation import speech_runs

    flags = np.asarray(speaking, bool)
    if flags.ndim != 2 or flags.shape[0] != len(names):
        raise ValueError(f"speaking: expected ({len(names)}, frames) flags, got shape {flags.shape}")
    rows = list(names) + (["Large tile"] if speaker is not None else [])
    fig = go.Figure()

    def spans(row: str, runs: list[tuple[int, int]], index: int, legend: bool) -> None:
        fig.add_trace(go.Bar(
            y=[row] * len(runs), x=[(b - a) / fps for a, b in runs], base=[a / fps for a, _ in runs],
            orientation="h", name=names[index], legendgroup=names[index], showlegend=legend,
            marker_color=CHARACTER_COLORS[index % len(CHARACTER_COLORS)],
            hovertemplate=f"{names[index]}: %{{base:.2f}}-%{{x:.2f}} s<extra>{row}</extra>"))

    for i, name in enumerate(names):
        spans(name, speech_runs(flags[i]), i, True)
    if speaker is not None:
        on = np.asarray(speaker)
        for i in range(len(names)):
            spans("Large tile", speech_runs(on == i), i, False)
    seconds = flags.shape[1] / fps
    fig.update_layout(title=dict(text="Who speaks when<br><sub>bars: speaking (voice activity); elsewhere the "
                                      "character listens (silence mode)</sub>"),
                      barmode="overlay", xaxis=dict(title="time (s)", range=[0, seconds]),
                      yaxis=dict(categoryorder="array", categoryarray=rows[::-1], type="category"),
                      **{**_LAYOUT, "height": 120 + 40 * len(rows)})
    return fig
