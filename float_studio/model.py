"""The one FLOAT pipeline of the app process: loaded lazily, shared read-only by every
session, retried after a failure (no restart needed once the weights are in place)."""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from .gpu import on_zero_gpu
from .speed import Throughput

if TYPE_CHECKING:
    from float_core.pipeline import FloatPipeline

log = logging.getLogger("float_studio")

#: ``FLOAT_AUTO_DOWNLOAD=0`` stops the app from fetching missing weights at start-up.
AUTO_DOWNLOAD_ENV = "FLOAT_AUTO_DOWNLOAD"
#: After a failed load, :meth:`PipelineHolder.get` tries again once this many seconds passed.
RETRY_AFTER_SECONDS = 30.0
_ASSETS = Path(__file__).resolve().parent.parent / "assets"


class PipelineHolder:
    """Loads the shared, read-only pipeline (lazily, thread-safe, once when it succeeds).

    A failure is remembered for ``retry_after`` seconds (so a page full of requests does not
    hammer a broken download) and then tried again; :meth:`retry` tries again at once (the
    app's "Retry loading" button), so putting the weights in place needs no restart.

    Args:
        loader: builds the pipeline; default :func:`load_pipeline`.
        retry_after: seconds after a failure before :meth:`get` loads again.
    """

    def __init__(self, loader: Callable[[], "FloatPipeline"] | None = None,
                 retry_after: float = RETRY_AFTER_SECONDS):
        self._loader = loader or load_pipeline
        self._lock = threading.Lock()
        self._pipe: "FloatPipeline | None" = None
        self._failed_at: float | None = None
        self.retry_after = retry_after
        self.error: str | None = None
        self.load_seconds: float | None = None
        self.attempts = 0
        #: The measured speed of the pipeline (estimates, GPU request durations); on ZeroGPU
        #: the model runs on CUDA although this process has no GPU of its own.
        self.speed = Throughput("cuda" if on_zero_gpu() else "cpu")

    def get(self) -> "FloatPipeline":
        """The pipeline; raises RuntimeError with a readable message when it cannot be loaded."""
        if self._pipe is not None:
            return self._pipe
        with self._lock:
            due = self._failed_at is None or time.monotonic() - self._failed_at >= self.retry_after
            if self._pipe is None and due:
                self._load()
        if self._pipe is None:
            raise RuntimeError(f"The FLOAT model is not available. {self.error}")
        return self._pipe

    def retry(self) -> bool:
        """Try loading again now (unless loaded); True when the pipeline is available."""
        with self._lock:
            if self._pipe is None:
                self._load()
        return self._pipe is not None

    def _load(self) -> None:
        self.attempts += 1
        t0 = time.perf_counter()
        try:
            self._pipe = self._loader()
        except Exception as exc:  # noqa: BLE001 - any loader failure becomes a banner
            # One line that says what to do; the details are on the page, the traceback at DEBUG.
            log.error("%s", load_failure_line(exc))
            log.debug("loading the FLOAT pipeline failed", exc_info=True)
            self.error = f"{type(exc).__name__}: {exc}"
            self._failed_at = time.monotonic()
            return
        self.load_seconds = time.perf_counter() - t0
        self.error = self._failed_at = None
        self.speed.use_device(getattr(self._pipe, "device", "cpu"))
        log.info("FLOAT pipeline ready in %.1f s", self.load_seconds)

    @property
    def loaded(self) -> bool:
        """Whether the pipeline has been loaded (never triggers loading)."""
        return self._pipe is not None

    def available(self) -> bool:
        """Load the pipeline if needed; False (and :attr:`error` set) when it cannot be loaded."""
        try:
            self.get()
        except RuntimeError:
            return False
        return True

    def status_markdown(self) -> str:
        """A one-paragraph status for the banner: model size and device, or what is missing."""
        try:
            pipe = self.get()
        except RuntimeError:
            return missing_weights_markdown(self.error or "unknown error")
        cfg = pipe.config
        kind = "tiny random test model" if cfg.image_size < 512 else "FLOAT"
        return (f"**Model:** {kind}, {cfg.image_size}x{cfg.image_size} px, {cfg.fps:g} fps, "
                f"on {pipe.describe()}.")


def load_failure_line(exc: BaseException) -> str:
    """One log line for a failed load: what happened (the message's first line) and what to do."""
    from float_core.weights import WeightsError

    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0].rstrip(".")
    if isinstance(exc, WeightsError):
        return (f"The FLOAT weights are missing ({first}). Run `python -m float_core download` online, or put "
                f"the files the page lists under {checkpoint_dir()} (or set FLOAT_CHECKPOINT_DIR); the app serves "
                "without a model until then (Retry loading on the page).")
    return (f"Could not load the FLOAT pipeline ({type(exc).__name__}: {first}); the app serves without a model. "
            "Run with log level DEBUG for the traceback.")


def checkpoint_dir() -> Path:
    """Where the app looks for (and downloads) the weights: ``$FLOAT_CHECKPOINT_DIR`` or ``./checkpoints``."""
    from float_core.weights import CHECKPOINT_DIR_ENV

    return Path(os.environ.get(CHECKPOINT_DIR_ENV) or "checkpoints").expanduser().resolve()


def ensure_weights(root: Path) -> Path:
    """Make sure the released weights are under ``root``, fetching them from the hub when absent.

    The download (``float_core.weights.download_weights``) shows tqdm progress bars in the
    server log and fails within seconds offline. ``FLOAT_AUTO_DOWNLOAD=0`` turns it off.

    Raises:
        WeightsError: the weights are absent and could not be fetched; the message lists every
            file to put in place, with its full path, and where to get it.
    """
    from float_core import weights

    try:
        weights.resolve_sources(root)
        return root
    except weights.WeightsError as missing:
        if os.environ.get(AUTO_DOWNLOAD_ENV, "1").strip() == "0":
            raise weights.WeightsError(f"{missing}\n(automatic download is off: {AUTO_DOWNLOAD_ENV}=0)") from None
        log.info("FLOAT weights not found in %s; downloading them from the Hugging Face Hub", root)
    return weights.download_weights(local_dir=root)


def load_pipeline() -> "FloatPipeline":
    """The app's pipeline, with ``$FLOAT_DEVICE`` / ``$FLOAT_DTYPE``.

    ``FLOAT_TEST_MODEL=tiny-random`` gives the tiny random model. Otherwise the weights come
    from :func:`checkpoint_dir`, downloaded there first when absent (:func:`ensure_weights`).
    """
    from float_core.pipeline import TEST_MODEL_ENV, FloatPipeline

    device, dtype = os.environ.get("FLOAT_DEVICE") or None, os.environ.get("FLOAT_DTYPE") or None
    if os.environ.get(TEST_MODEL_ENV):
        return FloatPipeline.from_pretrained(device=device, dtype=dtype)
    root = ensure_weights(checkpoint_dir())
    return FloatPipeline.from_pretrained(root, device=device, dtype=dtype)


def missing_weights_markdown(error: str) -> str:
    """The banner shown when the model cannot be loaded (``assets/missing_weights.md`` + the error)."""
    template = _ASSETS / "missing_weights.md"
    text = template.read_text(encoding="utf-8") if template.is_file() else (
        "### The FLOAT weights were not found\n\nSee the README for where to put them.\n\n{error}")
    return text.replace("{error}", error.replace("`", "'").strip())
