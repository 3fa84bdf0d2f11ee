"""Plots and slider ranges of the FLOAT Studio app (plotly figures; no Gradio).

Pure functions of arrays: the lambda(t) coefficients plot, the speech-emotion plot and the
edit-slider ranges derived from the sampled motion.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from float_core.config import EMOTIONS

from .state import emotion_vector

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


# ---------------------------------------------------------------------------- plots
_LAYOUT = dict(template="plotly_white", margin=dict(l=40, r=10, t=40, b=40), height=300,
               legend=dict(orientation="h", y=-0.25))


def lambda_figure(lambdas: np.ndarray, fps: float, frame_index: int | None = None,
                  offsets: np.ndarray | None = None, visible: int = 5) -> "go.Figure":
    """Motion coefficients lambda_m(t) over the clip; the ``visible`` most active are shown.

    Edited directions get a dashed trace of lambda + offset; a vertical line marks the
    previewed frame. Other directions are one legend click away.
    """
    import plotly.graph_objects as go

    lam = np.asarray(lambdas, dtype=np.float64)
    t = np.arange(lam.shape[0]) / fps
    shown = set(most_active_directions(lam, visible))
    fig = go.Figure()
    for m in range(lam.shape[1]):
        fig.add_trace(go.Scatter(x=t, y=lam[:, m], mode="lines", name=f"λ{m + 1}",
                                 legendgroup=f"d{m}", visible=True if m in shown else "legendonly"))
        if offsets is not None and offsets[m] != 0:
            fig.add_trace(go.Scatter(x=t, y=lam[:, m] + float(offsets[m]), mode="lines",
                                     name=f"λ{m + 1} edited", legendgroup=f"d{m}",
                                     line=dict(dash="dash"), showlegend=False))
    if frame_index is not None and lam.shape[0]:
        fig.add_vline(x=float(frame_index) / fps, line_dash="dot", line_color="gray")
    fig.update_layout(title="Motion coefficients λ(t) (orthonormal motion basis)",
                      xaxis_title="time (s)", yaxis_title="λ", **_LAYOUT)
    return fig


#: Bar colours of the emotion plot: the emotion in use, and the others.
EMOTION_HIGHLIGHT, EMOTION_OTHER = "#4f46e5", "#cbd5e1"


def emotion_figure(detected: np.ndarray, emotion: str = "auto") -> "go.Figure":
    """The 7 speech-emotion probabilities as bars, the emotion in use highlighted.

    Args:
        detected: the classifier's probabilities (7,), order :data:`EMOTIONS`.
        emotion: the emotion setting, "auto" (the most probable emotion is in use) or a name
            (redirection: that bar is highlighted and the title says so).
    """
    import plotly.graph_objects as go

    probs = np.asarray(detected, dtype=np.float64)
    if probs.shape != (len(EMOTIONS),):
        raise ValueError(f"emotion probabilities: expected {len(EMOTIONS)} values, got shape {probs.shape}")
    in_use = int(np.argmax(emotion_vector(probs, emotion)))
    names = [e.capitalize() for e in EMOTIONS]
    colors = [EMOTION_HIGHLIGHT if i == in_use else EMOTION_OTHER for i in range(len(EMOTIONS))]
    fig = go.Figure(go.Bar(x=names, y=probs, marker_color=colors, name="speech emotion",
                           text=[f"{p:.0%}" for p in probs], textposition="outside",
                           hovertemplate="%{x}: %{y:.1%}<extra></extra>"))
    how = "from the speech" if str(emotion or "auto").lower() == "auto" else "redirected"
    fig.update_layout(title=f"Speech emotion · in use: {names[in_use]} ({how})",
                      yaxis=dict(range=[0, 1.1], title="probability", tickformat=".0%"),
                      showlegend=False, **_LAYOUT)
    return fig
