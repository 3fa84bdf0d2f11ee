"""Helpers shared by the FLOAT Studio tests (import with ``from studio_helpers import ...``)."""

from __future__ import annotations

import numpy as np


def same_frame(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal up to float noise (a few pixels one level apart): for frames of two different
    computations, e.g. a stream's and a render's; a preview and its render are equal exactly."""
    diff = np.abs(a.astype(int) - b.astype(int))
    return a.shape == b.shape and diff.max() <= 1 and (diff > 0).mean() < 0.01
