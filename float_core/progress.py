"""One progress-callback protocol for the engine, the CLI, the app and training.

Long operations take ``progress: ProgressLike``: ``None``/``False`` (silent), ``True`` (tqdm
bars on stderr, one per stage) or a :class:`ProgressCallback` called as
``progress(stage, done, total)`` after each unit of work, e.g. ``("sampling", 2, 5)`` after
the second of five windows. :func:`as_progress` turns any of these into a callback, and
:func:`scaled` maps a stage into a fraction of an overall bar (the app's ``gr.Progress``).
"""

from __future__ import annotations

from typing import Callable, Protocol, Union, runtime_checkable

__all__ = ["ProgressCallback", "ProgressLike", "as_progress", "fraction_callback", "silent"]


@runtime_checkable
class ProgressCallback(Protocol):
    """``progress(stage, done, total)``: ``done`` of ``total`` units of ``stage`` are finished."""

    def __call__(self, stage: str, done: int, total: int) -> None: ...


ProgressLike = Union[ProgressCallback, bool, None]


def silent(stage: str, done: int, total: int) -> None:
    """A progress callback that ignores its arguments."""


class _TqdmBars:
    """tqdm bars, one per stage, opened on a stage's first report and closed when it completes."""

    def __init__(self) -> None:
        self._bars: dict[str, object] = {}

    def __call__(self, stage: str, done: int, total: int) -> None:
        from tqdm.auto import tqdm

        bar = self._bars.get(stage)
        if bar is None:
            bar = self._bars[stage] = tqdm(total=total, desc=stage, leave=False)
        bar.total = total  # type: ignore[attr-defined]
        bar.n = done  # type: ignore[attr-defined]
        bar.refresh()  # type: ignore[attr-defined]
        if done >= total:
            bar.close()  # type: ignore[attr-defined]
            del self._bars[stage]


def as_progress(progress: ProgressLike) -> ProgressCallback:
    """``None``/``False`` -> :func:`silent`; ``True`` -> tqdm bars; a callable is returned as it is."""
    if progress is None or progress is False:
        return silent
    if progress is True:
        return _TqdmBars()
    if not callable(progress):
        raise TypeError(f"progress: expected None, a bool or a callable(stage, done, total), got {progress!r}")
    return progress


def fraction_callback(report: Callable[[float, str], None],
                      spans: dict[str, tuple[float, float]]) -> ProgressCallback:
    """A callback that maps each stage onto ``[start, end]`` of one overall bar.

    ``report(fraction, description)`` is called with e.g. ``(0.3, "sampling 2/5")``; stages
    not in ``spans`` report their own fraction.
    """

    def callback(stage: str, done: int, total: int) -> None:
        lo, hi = spans.get(stage, (0.0, 1.0))
        report(lo + (hi - lo) * done / max(total, 1), f"{stage} {done}/{total}")

    return callback
