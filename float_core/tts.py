"""Text to speech: typed text -> 16 kHz mono speech that drives a portrait.

One entry point, :func:`synthesize`, and one way to name a voice, a *voice spec* string
``"<engine>:<name>"``:

================================  ==========================================================
spec                              engine
================================  ==========================================================
``"espeak:<voice>"``              espeak-ng, offline (the default engine). ``<voice>`` is a
                                  language, optionally with a variant, e.g. ``en-us``,
                                  ``en-us+f3``, ``en-gb+m3`` (``espeak-ng --voices``,
                                  ``espeak-ng --voices=variant``). ``None`` means
                                  ``"espeak:" + $FLOAT_ESPEAK_VOICE`` (default ``en-us``).
``"piper:<path to .onnx>"``       Piper: the ``piper`` command with a voice model whose
                                  ``.onnx.json`` lies beside it.
``"url:<voice name>"``            an OpenAI-compatible speech server (Kokoro-FastAPI, hosted
                                  APIs): ``POST {FLOAT_TTS_URL}/audio/speech`` with JSON
                                  ``{"model", "input", "voice", "response_format": "wav"}``;
                                  model ``$FLOAT_TTS_MODEL`` (``tts-1``), key
                                  ``$FLOAT_API_KEY`` (sent as ``Authorization: Bearer``),
                                  ``$FLOAT_SERVICE_TIMEOUT`` seconds (60).
================================  ==========================================================

:func:`available_engines` says which engines work here (and, for the others, what to install
or set); :func:`check_voice` validates a spec before any work starts (a missing program, a
voice espeak-ng does not know, a Piper model that is not there, an unset or malformed
``FLOAT_TTS_URL``). Every failure is a :class:`TTSError` (a ``ValueError``) whose message says
what to install or set. Whatever the engine answers (WAV, MP3, raw PCM at any rate) is decoded
and resampled by the engine's audio loader (:func:`float_core.media.audio.load_audio`).

The text goes to the programs on stdin and to the server in a JSON body, never through a shell.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np

from .config import SAMPLE_RATE

__all__ = ["DEFAULT_ESPEAK_VOICE", "ENGINES", "TTSError", "TTSSettings", "Voice", "available_engines",
           "check_voice", "default_voice", "parse_voice", "synthesize"]

#: The engines of a voice spec, in the order :func:`available_engines` lists them.
ENGINES: tuple[str, ...] = ("espeak", "piper", "url")
#: espeak-ng's voice when neither the spec nor ``$FLOAT_ESPEAK_VOICE`` names one.
DEFAULT_ESPEAK_VOICE = "en-us"
_INSTALL = {
    "espeak": "install espeak-ng (apt-get install espeak-ng)",
    "piper": "install Piper (pip install piper-tts) and download a voice (.onnx with its .onnx.json)",
    "url": "set FLOAT_TTS_URL to an OpenAI-compatible speech server's base URL, e.g. http://127.0.0.1:8880/v1",
}


class TTSError(ValueError):
    """Text to speech cannot run: a malformed spec, a missing engine or voice, a failing server."""


@dataclass(frozen=True)
class TTSSettings:
    """Where the ``url`` engine's server is and how to call it, plus espeak-ng's default voice.

    Build it with :meth:`from_env`; :func:`synthesize` does when none is given.
    """

    url: str | None = None  #: base URL of ``POST /audio/speech`` (``FLOAT_TTS_URL``)
    model: str = "tts-1"  #: ``FLOAT_TTS_MODEL``
    api_key: str | None = None  #: ``FLOAT_API_KEY``
    timeout_s: float = 60.0  #: ``FLOAT_SERVICE_TIMEOUT``, also the limit of one program run
    espeak_voice: str = DEFAULT_ESPEAK_VOICE  #: ``FLOAT_ESPEAK_VOICE``: the voice of ``None``
    url_voice: str = "alloy"  #: ``FLOAT_TTS_VOICE``: the server voice :func:`default_voice` names
    piper_voice: str | None = None  #: ``FLOAT_PIPER_VOICE``: the model :func:`default_voice` names

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "TTSSettings":
        """Read ``FLOAT_TTS_URL``, ``FLOAT_TTS_MODEL``, ``FLOAT_TTS_VOICE``, ``FLOAT_API_KEY``,
        ``FLOAT_SERVICE_TIMEOUT``, ``FLOAT_ESPEAK_VOICE`` and ``FLOAT_PIPER_VOICE``.

        Raises:
            TTSError: ``FLOAT_TTS_URL`` is not an http(s) URL or the timeout is not a number.
        """
        env = os.environ if env is None else env

        def get(name: str) -> str | None:
            value = env.get(name, "").strip()
            return value or None

        url = get("FLOAT_TTS_URL")
        if url is not None and not re.match(r"^https?://", url):
            raise TTSError(f"FLOAT_TTS_URL={url!r} is not an http(s) URL; {_INSTALL['url']}")
        timeout = get("FLOAT_SERVICE_TIMEOUT")
        try:
            timeout_s = float(timeout) if timeout else cls.timeout_s
        except ValueError:
            raise TTSError(f"FLOAT_SERVICE_TIMEOUT={timeout!r} is not a number of seconds") from None
        return cls(url=url.rstrip("/") if url else None, model=get("FLOAT_TTS_MODEL") or cls.model,
                   api_key=get("FLOAT_API_KEY"), timeout_s=timeout_s,
                   espeak_voice=get("FLOAT_ESPEAK_VOICE") or cls.espeak_voice,
                   url_voice=get("FLOAT_TTS_VOICE") or cls.url_voice, piper_voice=get("FLOAT_PIPER_VOICE"))


@dataclass(frozen=True)
class Voice:
    """A parsed voice spec: the engine and its voice name (``str(voice)`` is the spec again)."""

    engine: str
    name: str

    def __str__(self) -> str:
        return f"{self.engine}:{self.name}"


def parse_voice(spec: str | Voice | None, settings: TTSSettings | None = None) -> Voice:
    """The :class:`Voice` of a spec; ``None`` (or ``""``) is espeak-ng's default voice.

    Raises:
        TTSError: not ``"<engine>:<name>"`` with a known engine and a non-empty name.
    """
    if isinstance(spec, Voice):
        return spec
    if spec is None or not str(spec).strip():
        return Voice("espeak", (settings or TTSSettings.from_env()).espeak_voice)
    engine, sep, name = str(spec).strip().partition(":")
    engine, name = engine.strip().lower(), name.strip()
    if not sep or engine not in ENGINES or not name:
        raise TTSError(f"voice {spec!r}: expected 'espeak:<voice>' (e.g. espeak:en-us+f3), "
                       f"'piper:<path to .onnx>' or 'url:<voice name>' (e.g. url:alloy)")
    return Voice(engine, name)


def default_voice(engine: str = "espeak", settings: TTSSettings | None = None) -> str | None:
    """The spec an engine uses when the user names no voice: ``espeak:$FLOAT_ESPEAK_VOICE``,
    ``piper:$FLOAT_PIPER_VOICE`` (None when unset) or ``url:$FLOAT_TTS_VOICE`` (``alloy``)."""
    settings = settings or TTSSettings.from_env()
    names = {"espeak": settings.espeak_voice, "piper": settings.piper_voice, "url": settings.url_voice}
    if engine not in names:
        raise TTSError(f"engine {engine!r}: expected one of {', '.join(ENGINES)}")
    return None if names[engine] is None else f"{engine}:{names[engine]}"


def available_engines(settings: TTSSettings | None = None) -> dict[str, str | None]:
    """Every engine mapped to None when it can run here, else to what to install or set.

    ``piper`` counts as available when its program is installed (each spec names its model);
    ``url`` when ``FLOAT_TTS_URL`` is set (whether the server answers shows at the first request).
    """
    settings = settings or TTSSettings.from_env()
    return {
        "espeak": None if shutil.which("espeak-ng") else f"espeak-ng is not installed: {_INSTALL['espeak']}",
        "piper": None if shutil.which("piper") else f"the piper command is not installed: {_INSTALL['piper']}",
        "url": None if settings.url else f"FLOAT_TTS_URL is not set: {_INSTALL['url']}",
    }


def check_voice(spec: str | Voice | None, settings: TTSSettings | None = None) -> Voice:
    """Validate a voice before any work: the engine runs here and knows the voice.

    Checks what can be checked without speaking: espeak-ng is installed and has the language
    and variant; Piper is installed and the model and its ``.onnx.json`` exist; ``FLOAT_TTS_URL``
    is set (a server that does not answer is reported by :func:`synthesize`).

    Raises:
        TTSError: naming the voice and what to install or set.
    """
    settings = settings or TTSSettings.from_env()
    voice = parse_voice(spec, settings)
    missing = available_engines(settings)[voice.engine]
    if missing is not None:
        raise TTSError(f"voice {voice}: {missing}")
    if voice.engine == "espeak":
        _check_espeak_voice(voice.name, settings)
    elif voice.engine == "piper":
        _piper_model(voice.name)
    return voice


def synthesize(text: str, voice: str | Voice | None = None, *, settings: TTSSettings | None = None) -> np.ndarray:
    """``text`` spoken by ``voice`` (a spec, see the module docstring) as 16 kHz mono float32.

    An empty (or blank) text gives an empty array. ``settings`` default to
    :meth:`TTSSettings.from_env`.

    Raises:
        TTSError: the voice cannot be used, or the engine failed or answered unusable audio.
    """
    settings = settings or TTSSettings.from_env()
    voice = check_voice(voice, settings)
    if not str(text).strip():
        return np.zeros(0, np.float32)
    text = str(text).strip()
    if voice.engine == "espeak":
        data = _run("espeak", ["espeak-ng", "--stdout", "-v", voice.name], text, "espeak-ng", settings.timeout_s)
        return _decode(data, f"espeak-ng (voice {voice.name})")
    if voice.engine == "piper":
        return _speak_piper(text, voice.name, settings.timeout_s)
    return _speak_url(text, voice.name, settings)


# ---------------------------------------------------------------------------- engines
def _run(engine: str, argv: list[str], text: str, what: str, timeout_s: float) -> bytes:
    """Run an engine's program with ``text`` on stdin; its stdout, or a TTSError."""
    try:
        done = subprocess.run(argv, input=text.encode("utf-8"), capture_output=True, timeout=timeout_s, check=False)
    except FileNotFoundError:
        raise TTSError(f"{what}: {argv[0]} is not installed; {_INSTALL[engine]}") from None
    except subprocess.TimeoutExpired:
        raise TTSError(f"{what} took longer than {timeout_s:g} s (FLOAT_SERVICE_TIMEOUT)") from None
    if done.returncode != 0 or not done.stdout:
        raise TTSError(f"{what} failed (exit {done.returncode}): {done.stderr.decode(errors='replace').strip()[:200]}")
    return done.stdout


@functools.lru_cache(maxsize=1)
def _espeak_variants() -> frozenset[str]:
    """The variant names espeak-ng knows (``+f3`` is the file ``!v/f3``), lower case."""
    out = subprocess.run(["espeak-ng", "--voices=variant"], capture_output=True, timeout=30, check=False)
    names = re.findall(r"!v/(\S+)", out.stdout.decode(errors="replace"))
    return frozenset(n.lower() for n in names)


@functools.lru_cache(maxsize=1)
def _espeak_voices() -> frozenset[str]:
    """The voice names espeak-ng lists (``--voices``), lower case: each voice's language code
    (``en-us``), its file (``gmw/en-us``) and file name (``en-us``), and the other languages it
    answers to (``en``)."""
    out = subprocess.run(["espeak-ng", "--voices"], capture_output=True, timeout=30, check=False)
    names: set[str] = set()
    for line in out.stdout.decode(errors="replace").splitlines()[1:]:
        fields = line.split()
        if len(fields) >= 5:
            names.update({fields[1], fields[4], fields[4].rsplit("/", 1)[-1]})
        names.update(re.findall(r"\((\S+) \d+\)", line))
    return frozenset(n.lower() for n in names)


@functools.lru_cache(maxsize=64)
def _espeak_language_ok(language: str) -> str | None:
    """None when espeak-ng lists ``language`` and loads it, else its complaint. Listed first:
    espeak-ng loads an unknown region of a known language (``en-zz``) as that language."""
    if language.lower() not in _espeak_voices():
        return "not in `espeak-ng --voices`"
    done = subprocess.run(["espeak-ng", "-q", "-v", language, ""], capture_output=True, timeout=30, check=False)
    return None if done.returncode == 0 else (done.stderr.decode(errors="replace").strip() or "unknown voice")


def _check_espeak_voice(name: str, settings: TTSSettings) -> None:
    language, _, variant = name.partition("+")
    if not language or _espeak_language_ok(language) is not None:
        raise TTSError(f"voice espeak:{name}: espeak-ng has no voice {language!r} (list them with "
                       f"`espeak-ng --voices`, e.g. espeak:{settings.espeak_voice})")
    if variant and variant.lower() not in _espeak_variants():
        raise TTSError(f"voice espeak:{name}: espeak-ng has no variant {variant!r} (list them with "
                       f"`espeak-ng --voices=variant`, e.g. espeak:{language}+f3)")


def _piper_model(name: str) -> tuple[Path, int]:
    """The Piper model and its sample rate (from the ``.onnx.json`` beside it)."""
    path = Path(name).expanduser()
    config = Path(f"{path}.json")
    if not path.is_file():
        raise TTSError(f"voice piper:{name}: no such voice model; {_INSTALL['piper']}")
    if not config.is_file():
        raise TTSError(f"voice piper:{name}: its config {config.name} is missing (Piper voices come as "
                       f".onnx + .onnx.json); put it beside the model")
    try:
        rate = int(json.loads(config.read_text(encoding="utf-8"))["audio"]["sample_rate"])
    except (OSError, ValueError, KeyError, TypeError):
        raise TTSError(f"voice piper:{name}: {config.name} has no audio.sample_rate; is it a Piper voice?") from None
    return path, rate


def _speak_piper(text: str, name: str, timeout_s: float) -> np.ndarray:
    from .media.audio import load_audio

    path, rate = _piper_model(name)
    data = _run("piper", ["piper", "--model", str(path), "--output_raw"], text, f"Piper (voice {path.name})",
                timeout_s)
    wave = np.frombuffer(data[:len(data) // 2 * 2], "<i2").astype(np.float32) / 32768.0
    return load_audio(wave, rate, target_rate=SAMPLE_RATE)


def _speak_url(text: str, name: str, settings: TTSSettings) -> np.ndarray:
    """``POST {FLOAT_TTS_URL}/audio/speech`` (the OpenAI speech protocol), decoded."""
    url = f"{settings.url}/audio/speech"
    body = json.dumps({"model": settings.model, "input": text, "voice": name, "response_format": "wav"})
    headers = {"Content-Type": "application/json"}
    if settings.api_key:
        headers["Authorization"] = f"Bearer {settings.api_key}"
    request = urllib.request.Request(url, data=body.encode("utf-8"), headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=settings.timeout_s) as response:
            data = response.read()
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace").strip().replace("\n", " ")[:300]
        hint = " (check FLOAT_API_KEY)" if exc.code in (401, 403) else ""
        raise TTSError(f"text to speech at {url} answered HTTP {exc.code}{hint}: {detail}") from None
    except TimeoutError:
        raise TTSError(f"text to speech at {url} did not answer within {settings.timeout_s:g} s "
                       f"(FLOAT_SERVICE_TIMEOUT); is the server overloaded?") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise TTSError(f"text to speech at {url} is unreachable ({reason}); check FLOAT_TTS_URL and that "
                       f"the server is running") from None
    return _decode(data, f"text to speech at {url}")


def _decode(data: bytes, what: str) -> np.ndarray:
    """Any audio container (WAV, MP3, Opus, ...) to 16 kHz mono float32, via the engine's decoder."""
    from .media.audio import AudioError, load_audio

    with tempfile.TemporaryDirectory(prefix="float-tts-") as tmp:
        path = Path(tmp) / "speech"
        path.write_bytes(data)
        try:
            return load_audio(path, target_rate=SAMPLE_RATE)
        except AudioError as exc:
            raise TTSError(f"{what} returned audio that cannot be decoded: {exc}") from None
