"""Bounded work per visitor: the app's limits, read from the environment, each with one clear message.

A public server must not be held by one visitor, so every tab and endpoint applies the same
few limits (tabs added later adopt them by calling these helpers):

* ``FLOAT_MAX_SECONDS`` (default 60, 0 = no limit): the longest **speech input** of any tab or
  endpoint: an upload, a recording, or text once it is spoken. Text is estimated before it is
  synthesised (:func:`check_text`, so 20 pages are refused at once) and measured after
  (:func:`check_speech_seconds`). Files are measured from their header (:func:`speech_seconds`)
  before any decoding, and the decoder enforces the same limit again.
* ``FLOAT_MAX_LIVE_SECONDS`` (default 300, 0 = no limit): the longest **live** session, a
  microphone stream or a call. The page says so, and counts down the last
  :data:`COUNTDOWN_SECONDS` (:func:`countdown_note`).
* ``FLOAT_MAX_UPLOAD_MB`` (default 50, 0 = no limit): the largest upload, enforced by Gradio's
  upload route (``launch(max_file_size=...)``, see :func:`max_upload_bytes`).

Every limit raises :class:`LimitError` (a ``ValueError``, so the UI shows its message as is).
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np

from float_core.config import SAMPLE_RATE, env_number

MAX_SECONDS_ENV = "FLOAT_MAX_SECONDS"
MAX_LIVE_SECONDS_ENV = "FLOAT_MAX_LIVE_SECONDS"
MAX_UPLOAD_MB_ENV = "FLOAT_MAX_UPLOAD_MB"
#: Default longest speech input in seconds.
DEFAULT_MAX_SECONDS = 60.0
#: Default longest microphone stream or call in seconds.
DEFAULT_MAX_LIVE_SECONDS = 300.0
#: Default largest upload in MB (a 60 s 48 kHz stereo WAV is 11 MB; a phone photo 3-8 MB).
DEFAULT_MAX_UPLOAD_MB = 50.0
#: A live session shows a countdown during its last this many seconds.
COUNTDOWN_SECONDS = 30.0
#: Characters of English text per second of speech: espeak-ng's en-us voice says 17.4 (a
#: 215-character paragraph in 12.3 s); used for estimates shown before synthesis.
TYPICAL_CHARS_PER_SECOND = 15.0
#: Faster than any of the app's voices: text longer than the limit even at this rate is
#: refused before it is synthesised.
FASTEST_CHARS_PER_SECOND = 25.0
#: Slower than any of the app's voices: an upper bound of a text's speech (GPU durations).
SLOWEST_CHARS_PER_SECOND = 10.0


class LimitError(ValueError):
    """An input exceeds one of this server's limits; the message names the limit and its variable."""


def _limit(name: str, default: float) -> float | None:
    value = env_number(name, default)
    return value if value > 0 else None


def max_speech_seconds() -> float | None:
    """The longest accepted speech input: ``$FLOAT_MAX_SECONDS`` (0 or less: no limit) or 60 s."""
    return _limit(MAX_SECONDS_ENV, DEFAULT_MAX_SECONDS)


def max_live_seconds() -> float | None:
    """The longest microphone stream or call: ``$FLOAT_MAX_LIVE_SECONDS`` (0 or less: no limit) or 300 s."""
    return _limit(MAX_LIVE_SECONDS_ENV, DEFAULT_MAX_LIVE_SECONDS)


def max_upload_bytes() -> int | None:
    """The largest upload in bytes: ``$FLOAT_MAX_UPLOAD_MB`` (0 or less: no limit) or 50 MB.

    Pass it to ``launch(max_file_size=...)``: Gradio's upload route then answers HTTP 413
    ("File size exceeded maximum allowed size of N bytes") and its upload widgets refuse the file.
    """
    mb = _limit(MAX_UPLOAD_MB_ENV, DEFAULT_MAX_UPLOAD_MB)
    return None if mb is None else int(mb * 2**20)


def check_speech_seconds(seconds: float, limit: float | None = None, what: str = "The speech") -> float:
    """Refuse speech longer than ``limit`` (default :func:`max_speech_seconds`); returns ``seconds``.

    Raises:
        LimitError: e.g. "The speech is 73.2 s long; this server accepts at most 60 s
            (FLOAT_MAX_SECONDS). Use a shorter clip."
    """
    limit = max_speech_seconds() if limit is None else limit
    if limit is not None and seconds > limit + 1e-6:
        raise LimitError(f"{what} is {seconds:.1f} s long; this server accepts at most {limit:g} s "
                         f"({MAX_SECONDS_ENV}). Use a shorter clip.")
    return seconds


def speech_seconds(audio: Any) -> float:
    """How long a speech input is, without decoding it: a path (from the file's header), a
    16 kHz waveform, or None/"" (0). A file whose header says nothing counts as 0 here (the
    decoder's own check still applies the limit)."""
    if audio is None or (isinstance(audio, str) and not audio):
        return 0.0
    if isinstance(audio, (str, os.PathLike)):
        from float_core.media.audio import audio_seconds

        return audio_seconds(audio) or 0.0
    return float(np.asarray(audio).shape[0]) / SAMPLE_RATE


def limited_speech_seconds(audio: Any) -> float:
    """:func:`speech_seconds` at most the limit: the work a request with this speech can cause
    (longer speech is refused before any work), e.g. to size a GPU request."""
    seconds, limit = speech_seconds(audio), max_speech_seconds()
    return seconds if limit is None else min(seconds, limit)


def check_speech(audio: Any, limit: float | None = None) -> float:
    """:func:`speech_seconds` of ``audio`` checked against the limit (see :func:`check_speech_seconds`)."""
    return check_speech_seconds(speech_seconds(audio), limit)


def estimate_text_seconds(text: str, chars_per_second: float = TYPICAL_CHARS_PER_SECOND) -> float:
    """About how long ``text`` takes to say, from its length (before any synthesis)."""
    return len((text or "").strip()) / chars_per_second


def max_text_chars(limit: float | None = None) -> int | None:
    """The most characters a text box needs to accept: the limit at the fastest speech rate."""
    limit = max_speech_seconds() if limit is None else limit
    return None if limit is None else int(math.ceil(limit * FASTEST_CHARS_PER_SECOND))


def check_text(text: str, limit: float | None = None) -> float:
    """Refuse text that is longer than the limit even when spoken fast, before synthesising it;
    returns its :func:`estimate_text_seconds`. Check the synthesised speech again afterwards
    with :func:`check_speech_seconds`.

    Raises:
        LimitError: naming the estimate, the limit and ``FLOAT_MAX_SECONDS``.
    """
    limit = max_speech_seconds() if limit is None else limit
    typical = estimate_text_seconds(text)
    if limit is not None and estimate_text_seconds(text, FASTEST_CHARS_PER_SECOND) > limit:
        raise LimitError(f"This text ({len(text.strip())} characters) takes about {typical:.0f} s to say; this "
                         f"server accepts at most {limit:g} s of speech ({MAX_SECONDS_ENV}). Shorten it.")
    return typical


def live_limit_message(limit: float) -> str:
    """Why a live session ended at its limit."""
    return (f"the maximum length of a live session, {limit:g} s, was reached ({MAX_LIVE_SECONDS_ENV}); "
            "start again to continue")


def remaining_seconds(elapsed: float, limit: float | None) -> float | None:
    """Seconds left of a live session, or None when there is no limit."""
    return None if limit is None else max(0.0, limit - elapsed)


def countdown_note(elapsed: float, limit: float | None) -> str:
    """"Ends in 12 s (...)" during the last :data:`COUNTDOWN_SECONDS` of a live session, else ""."""
    left = remaining_seconds(elapsed, limit)
    if left is None or left > COUNTDOWN_SECONDS:
        return ""
    return f"ends in {math.ceil(left):d} s (live sessions last at most {limit:g} s, {MAX_LIVE_SECONDS_ENV})"


def limits_markdown() -> str:
    """One line for the page: this server's limits."""
    parts = []
    speech, live, upload = max_speech_seconds(), max_live_seconds(), max_upload_bytes()
    if speech is not None:
        parts.append(f"speech up to **{speech:g} s**")
    if live is not None:
        parts.append(f"microphone streams and calls up to **{_minutes(live)}**, with a countdown in the "
                     f"last {COUNTDOWN_SECONDS:g} s")
    if upload is not None:
        parts.append(f"uploads up to **{upload / 2**20:g} MB**")
    return ("Limits on this server: " + "; ".join(parts) + ".") if parts else ""


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:g} min" if seconds >= 60 and seconds % 60 == 0 else f"{seconds:g} s"
