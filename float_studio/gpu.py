"""Hugging Face ZeroGPU and every other host: the one wrapper for Gradio handlers that run the model.

On a ZeroGPU Space (``SPACES_ZERO_GPU=true``, which the platform sets, read here the way the
``spaces`` package reads it) the GPU exists only inside functions decorated with
``spaces.GPU``. ``spaces`` runs each call of such a function in a forked worker process that
holds a GPU for at most the requested ``duration``; its arguments and results are pickled
across. Everywhere else ``spaces.GPU`` returns the function unchanged, so the wrapper costs
nothing on a CPU or on dedicated GPU hardware.

Rules for a handler that runs the model (every tab, including tabs added later):

* decorate it with :func:`gpu_handler` outermost (outside the error wrapper, so a readable
  ``gr.Error`` crosses the process boundary), giving a function of its inputs that says how
  many seconds of speech it will process; the requested duration is then
  :func:`gpu_seconds`: a load margin plus those seconds times a per-device
  seconds-per-audio-second figure;
* its arguments and results must pickle (the app's session objects do); a change to a
  session made inside it reaches the app only when the handler returns the session as an
  output, and a Stop must cancel the event (``cancels=``) since a flag set in the web server's
  process does not reach the worker;
* work that needs a GPU for minutes without pause, or input that arrives from other events
  while it runs (a call, a microphone stream), cannot run on ZeroGPU: say so with
  :func:`dedicated_gpu_message` instead of failing obscurely.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import math
import os
from typing import Any, Callable, TypeVar

from float_core.config import env_number

from .speed import DEFAULT_SECONDS_PER_AUDIO_SECOND, Throughput

log = logging.getLogger(__name__)

#: Set (to "true") by Hugging Face on ZeroGPU Spaces; ``spaces`` reads the same variable.
ZERO_GPU_ENV = "SPACES_ZERO_GPU"
#: Seconds added to every GPU request: the worker's start, moving the weights, the analysis.
MARGIN_ENV = "FLOAT_GPU_MARGIN_SECONDS"
DEFAULT_MARGIN_SECONDS = 20.0
#: Overrides the per-device seconds-per-audio-second figure of GPU requests.
FIGURE_ENV = "FLOAT_GPU_SECONDS_PER_AUDIO_SECOND"
#: Dedicated hardware that runs calls and microphone streams (Space hardware names).
DEDICATED_HARDWARE = "a Space on dedicated GPU hardware (T4, L4, A10G, L40S or A100) or a machine with a local GPU"

F = TypeVar("F", bound=Callable[..., Any])



def on_zero_gpu() -> bool:
    """Whether this process runs on a ZeroGPU Space (``SPACES_ZERO_GPU`` is 1/t/true)."""
    return os.environ.get(ZERO_GPU_ENV, "").strip().lower() in ("1", "t", "true")


if on_zero_gpu():  # imported early on purpose: spaces must come before CUDA is initialised
    try:
        import spaces  # type: ignore[import-not-found]  # noqa: F401
    except ImportError:  # pragma: no cover - reported by gpu_handler
        pass


def gpu_seconds(audio_seconds: float, device_kind: str = "cuda") -> int:
    """The GPU time to request for ``audio_seconds`` of speech on ``device_kind``:
    ``FLOAT_GPU_MARGIN_SECONDS`` (20) + seconds x the device's figure
    (:data:`~float_studio.speed.DEFAULT_SECONDS_PER_AUDIO_SECOND`, or
    ``FLOAT_GPU_SECONDS_PER_AUDIO_SECOND``), rounded up to whole seconds."""
    default = DEFAULT_SECONDS_PER_AUDIO_SECOND.get(device_kind, DEFAULT_SECONDS_PER_AUDIO_SECOND["cuda"])
    figure = env_number(FIGURE_ENV, default, minimum=0.0)
    margin = env_number(MARGIN_ENV, DEFAULT_MARGIN_SECONDS, minimum=0.0)
    return int(math.ceil(margin + max(float(audio_seconds), 0.0) * figure))


def gpu_handler(speed: Throughput, audio_seconds: Callable[..., float] | float = 0.0) -> Callable[[F], F]:
    """Decorate a Gradio handler that runs the model with ``spaces.GPU(duration=...)``.

    Args:
        speed: the pipeline's :class:`~float_studio.speed.Throughput` (``holder.speed``): its
            device type picks the figure of :func:`gpu_seconds`.
        audio_seconds: how many seconds of speech (or video) a call processes: a number, or a
            function called with the handler's arguments **by name** (parameters the caller
            left at their defaults are absent, so end it with ``**_``), e.g.
            ``lambda speech, **_: limits.speech_seconds(speech)``. It runs before the GPU is
            requested, in the web server's process, and must be cheap; if it raises, the
            request gets the margin alone and the handler reports the problem itself.

    Works for plain and generator handlers (a streaming generator holds its GPU until it
    ends). Off ZeroGPU the handler is returned unchanged, as ``spaces.GPU`` itself does there.

    Example::

        @gpu_handler(holder.speed, lambda speech, **_: limits.speech_seconds(speech))
        @ui_errors
        def on_generate(sess, image, speech, ...): ...
    """
    def decorate(fn: F) -> F:
        signature = inspect.signature(fn)

        def duration(*args: Any, **kwargs: Any) -> int:
            try:
                if callable(audio_seconds):
                    seconds = float(audio_seconds(**signature.bind(*args, **kwargs).arguments))
                else:
                    seconds = float(audio_seconds)
            except Exception:  # noqa: BLE001 - a bad input: the handler itself says what is wrong
                log.debug("GPU duration of %s: input not measurable", fn.__name__, exc_info=True)
                seconds = 0.0
            return gpu_seconds(seconds, speed.device_kind)

        if not on_zero_gpu():
            return fn
        try:  # looked up now, so that a stand-in a test put in sys.modules is the one used
            module = importlib.import_module("spaces")
        except ImportError:
            log.error("SPACES_ZERO_GPU is set but the `spaces` package is missing: pip install spaces "
                      "(it is in requirements.txt); %s runs without a GPU", fn.__name__)
            return fn
        return module.GPU(duration=duration)(fn)

    return decorate


def dedicated_gpu_message(what: str) -> str:
    """Why ``what`` (e.g. "A call") cannot run on ZeroGPU, and where it can, in plain words."""
    return (f"{what} runs the model without pause for minutes, but on ZeroGPU (this Space's hardware) a "
            f"GPU is lent only for the length of one request, so it is switched off here. It needs "
            f"{DEDICATED_HARDWARE}: duplicate this Space and pick such hardware in its settings, or run "
            "`python app.py` on your own GPU.")
