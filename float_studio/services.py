"""OpenAI-compatible speech recognition, chat and speech synthesis for the Call tab's assistant.

TalkingMachines ("Applications") puts a language model between the caller's voice
and the video server; here that model is any server speaking the OpenAI HTTP protocol, so local
servers (llama.cpp ``server``, Ollama, faster-whisper-server / speaches, Kokoro-FastAPI) and
hosted ones work alike. Each service is a base URL ending in ``/v1`` (or wherever the routes
live) and the paths below are appended:

========================  ======================================================  ==============
service                   request                                                 environment
========================  ======================================================  ==============
speech recognition        ``POST {FLOAT_ASR_URL}/audio/transcriptions``           FLOAT_ASR_URL,
                          (multipart: ``file`` = 16 kHz WAV, ``model``)           FLOAT_ASR_MODEL
chat                      ``POST {FLOAT_LLM_URL}/chat/completions`` (JSON)         FLOAT_LLM_URL,
                                                                                  FLOAT_LLM_MODEL
text to speech            ``POST {FLOAT_TTS_URL}/audio/speech`` (JSON, WAV back)   FLOAT_TTS_URL,
                          unset: ``espeak-ng`` (offline)                          FLOAT_TTS_MODEL,
                                                                                  FLOAT_TTS_VOICE
========================  ======================================================  ==============

``FLOAT_API_KEY`` is sent as ``Authorization: Bearer ...`` to all three. Every failure is a
:class:`ServiceError` whose message names the service, its URL and the environment variable
to fix, never a bare traceback.
"""

from __future__ import annotations

import io
import os
import re
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from float_core.config import SAMPLE_RATE
from float_core.tts import TTSError, TTSSettings, available_engines, synthesize

__all__ = ["ServiceConfig", "ServiceError", "transcribe", "chat", "chat_model", "speak", "check_services",
           "assistant_unavailable_reason"]

_REACH_TIMEOUT_S = 3.0  #: how long the reachability check waits for a connection


class ServiceError(RuntimeError):
    """A speech/chat service is misconfigured, unreachable or answered something unusable."""


@dataclass(frozen=True)
class ServiceConfig:
    """Where the assistant's three services live (see the module docstring).

    Build it with :meth:`from_env`; ``None`` means "not configured".
    """

    asr_url: str | None = None
    asr_model: str = "whisper-1"
    llm_url: str | None = None
    llm_model: str | None = None
    tts_url: str | None = None
    tts_model: str = "tts-1"
    tts_voice: str = "alloy"
    espeak_voice: str = "en-us"
    api_key: str | None = None
    timeout_s: float = 60.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "ServiceConfig":
        """Read ``FLOAT_ASR_URL``, ``FLOAT_ASR_MODEL``, ``FLOAT_LLM_URL``, ``FLOAT_LLM_MODEL``,
        ``FLOAT_TTS_URL``, ``FLOAT_TTS_MODEL``, ``FLOAT_TTS_VOICE``, ``FLOAT_ESPEAK_VOICE``,
        ``FLOAT_API_KEY`` and ``FLOAT_SERVICE_TIMEOUT`` (seconds per request)."""
        env = os.environ if env is None else env

        def get(name: str) -> str | None:
            value = env.get(name, "").strip()
            return value or None

        def url(name: str) -> str | None:
            value = get(name)
            if value is not None and not re.match(r"^https?://", value):
                raise ServiceError(f"{name}={value!r} is not an http(s) URL; set it to the server's base "
                                   f"URL, e.g. http://127.0.0.1:8000/v1")
            return value.rstrip("/") if value else None

        timeout = get("FLOAT_SERVICE_TIMEOUT")
        try:
            timeout_s = float(timeout) if timeout else cls.timeout_s
        except ValueError:
            raise ServiceError(f"FLOAT_SERVICE_TIMEOUT={timeout!r} is not a number of seconds") from None
        return cls(
            asr_url=url("FLOAT_ASR_URL"), asr_model=get("FLOAT_ASR_MODEL") or cls.asr_model,
            llm_url=url("FLOAT_LLM_URL"), llm_model=get("FLOAT_LLM_MODEL"),
            tts_url=url("FLOAT_TTS_URL"), tts_model=get("FLOAT_TTS_MODEL") or cls.tts_model,
            tts_voice=get("FLOAT_TTS_VOICE") or cls.tts_voice,
            espeak_voice=get("FLOAT_ESPEAK_VOICE") or cls.espeak_voice,
            api_key=get("FLOAT_API_KEY"), timeout_s=timeout_s,
        )

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def describe(self) -> dict[str, Any]:
        """What is configured (URLs and models; never the key), for the page and the logs."""
        return {"asr": self.asr_url, "llm": self.llm_url, "llm_model": self.llm_model,
                "tts": self.tts_url or "espeak-ng (local)"}


def assistant_unavailable_reason(cfg: ServiceConfig) -> str | None:
    """Why assistant mode cannot run with ``cfg`` (a sentence saying what to set), or None."""
    missing = [name for name, value in (("FLOAT_ASR_URL", cfg.asr_url), ("FLOAT_LLM_URL", cfg.llm_url))
               if value is None]
    if missing:
        return (f"Assistant mode needs {' and '.join(missing)} (OpenAI-compatible speech recognition "
                f"and chat servers, e.g. faster-whisper-server and llama.cpp/Ollama); puppet mode "
                f"works without them.")
    if cfg.tts_url is None and available_engines()["espeak"] is not None:
        return ("Assistant mode needs a voice: set FLOAT_TTS_URL (an OpenAI-compatible /audio/speech "
                "server such as Kokoro-FastAPI) or install espeak-ng (apt-get install espeak-ng).")
    return None


# ---------------------------------------------------------------------------- HTTP plumbing
def _client(cfg: ServiceConfig, timeout: float | None = None) -> Any:
    import httpx

    return httpx.Client(timeout=timeout or cfg.timeout_s, headers=cfg.headers, follow_redirects=True)


def _request(cfg: ServiceConfig, what: str, env_name: str, method: str, url: str, **kwargs: Any) -> Any:
    """One HTTP request; every failure becomes a :class:`ServiceError` naming the service."""
    import httpx

    try:
        with _client(cfg) as client:
            response = client.request(method, url, **kwargs)
    except httpx.TimeoutException:
        raise ServiceError(f"{what} at {url} did not answer within {cfg.timeout_s:g} s "
                           f"(FLOAT_SERVICE_TIMEOUT); is the server overloaded?") from None
    except httpx.HTTPError as exc:
        raise ServiceError(f"{what} at {url} is unreachable ({type(exc).__name__}: {exc}); "
                           f"check {env_name} and that the server is running") from None
    if response.status_code >= 400:
        body = response.text.strip().replace("\n", " ")[:300]
        hint = " (check FLOAT_API_KEY)" if response.status_code in (401, 403) else ""
        raise ServiceError(f"{what} at {url} answered HTTP {response.status_code}{hint}: {body}")
    return response


def _json(response: Any, what: str) -> Any:
    try:
        return response.json()
    except ValueError:
        raise ServiceError(f"{what} at {response.request.url} answered something that is not JSON: "
                           f"{response.text[:200]!r}") from None


def check_services(cfg: ServiceConfig) -> None:
    """Fail fast (before a call starts) when a configured service cannot be reached.

    Any HTTP answer counts as reachable (servers differ in what ``GET /`` returns); a refused
    connection, an unknown host or a timeout raises :class:`ServiceError`.
    """
    import httpx

    reason = assistant_unavailable_reason(cfg)
    if reason:
        raise ServiceError(reason)
    for what, env_name, base in (("speech recognition", "FLOAT_ASR_URL", cfg.asr_url),
                                 ("chat", "FLOAT_LLM_URL", cfg.llm_url),
                                 ("text to speech", "FLOAT_TTS_URL", cfg.tts_url)):
        if base is None:
            continue
        try:
            with _client(cfg, timeout=_REACH_TIMEOUT_S) as client:
                client.get(base)
        except httpx.HTTPError as exc:
            raise ServiceError(f"{what} at {base} is unreachable ({type(exc).__name__}: {exc}); "
                               f"check {env_name} and that the server is running") from None


# ---------------------------------------------------------------------------- the services
def wav_bytes(wave: np.ndarray, rate: int = SAMPLE_RATE) -> bytes:
    """16-bit PCM WAV of a float waveform (what every transcription server accepts)."""
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, np.clip(np.asarray(wave, np.float32), -1.0, 1.0), rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def transcribe(cfg: ServiceConfig, wave: np.ndarray) -> str:
    """Speech recognition of a 16 kHz mono waveform: ``POST {asr}/audio/transcriptions``."""
    if cfg.asr_url is None:
        raise ServiceError("speech recognition is not configured: set FLOAT_ASR_URL")
    url = f"{cfg.asr_url}/audio/transcriptions"
    response = _request(cfg, "speech recognition", "FLOAT_ASR_URL", "POST", url,
                        files={"file": ("speech.wav", wav_bytes(wave), "audio/wav")},
                        data={"model": cfg.asr_model, "response_format": "json"})
    if "json" not in response.headers.get("content-type", ""):
        return response.text.strip()  # some servers answer text/plain whatever was asked
    text = _json(response, "speech recognition").get("text")
    if not isinstance(text, str):
        raise ServiceError(f"speech recognition at {url} answered JSON without a 'text' field")
    return text.strip()


def chat_model(cfg: ServiceConfig) -> str:
    """The chat model: ``FLOAT_LLM_MODEL``, or when it is unset the first one ``GET {llm}/models`` lists."""
    if cfg.llm_model:
        return cfg.llm_model
    url = f"{cfg.llm_url}/models"
    try:
        models = _json(_request(cfg, "chat", "FLOAT_LLM_URL", "GET", url), "chat").get("data") or []
        return str(models[0]["id"])
    except (ServiceError, AttributeError, IndexError, KeyError, TypeError):
        raise ServiceError(f"chat: FLOAT_LLM_MODEL is unset and {url} lists no model; set "
                           f"FLOAT_LLM_MODEL to the model's name") from None


def chat(cfg: ServiceConfig, messages: Sequence[Mapping[str, str]], *, max_tokens: int = 200) -> str:
    """The assistant's answer to ``messages`` (OpenAI chat format): ``POST {llm}/chat/completions``."""
    if cfg.llm_url is None:
        raise ServiceError("chat is not configured: set FLOAT_LLM_URL")
    url = f"{cfg.llm_url}/chat/completions"
    body = {"model": chat_model(cfg), "messages": list(messages),
            "max_tokens": max_tokens, "stream": False}
    data = _json(_request(cfg, "chat", "FLOAT_LLM_URL", "POST", url, json=body), "chat")
    try:
        content = data["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        raise ServiceError(f"chat at {url} answered JSON without choices[0].message.content") from None
    return spoken_text(str(content or ""))


def spoken_text(text: str) -> str:
    """Drop what a voice should not read aloud: markdown emphasis, headings, code fences, emoji."""
    text = re.sub(r"```.*?```", " ", text, flags=re.S)
    text = re.sub(r"[*_#`>|~]+", "", text)
    text = re.sub(r"[\U0001F000-\U0001FAFF\u2600-\u27BF]", "", text)
    return re.sub(r"\s+", " ", text).strip()


def speak(cfg: ServiceConfig, text: str) -> np.ndarray:
    """Speech for ``text`` as 16 kHz mono float32: ``POST {tts}/audio/speech`` when ``tts_url`` is
    set, else espeak-ng (both through :func:`float_core.tts.synthesize`)."""
    if not text.strip():
        return np.zeros(0, np.float32)
    settings = TTSSettings(url=cfg.tts_url, model=cfg.tts_model, api_key=cfg.api_key, timeout_s=cfg.timeout_s,
                           espeak_voice=cfg.espeak_voice, url_voice=cfg.tts_voice)
    voice = f"url:{cfg.tts_voice}" if cfg.tts_url is not None else f"espeak:{cfg.espeak_voice}"
    try:
        return synthesize(text, voice, settings=settings)
    except TTSError as exc:
        raise ServiceError(str(exc)) from None
