"""A local OpenAI-compatible server with fixed answers: try, test and benchmark assistant mode.

It speaks the real protocol of the three services the Call tab's assistant uses (multipart
``POST /v1/audio/transcriptions``, JSON ``POST /v1/chat/completions``, JSON
``POST /v1/audio/speech`` answering WAV, plus ``GET /v1/models``), and the variants agent
frameworks ask for (Pipecat's OpenAI services, ``examples/pipecat_avatar.py``): a chat with
``"stream": true`` answers server-sent events of ``chat.completion.chunk`` objects, a speech
request with ``"response_format": "pcm"`` raw 24 kHz 16-bit mono PCM. It recognises nothing:
the transcription and the chat answer are fixed strings, and the speech is espeak-ng's reading
of the text (or a tone when espeak-ng is missing). Every request is recorded for inspection.

Run it and point the app at it::

    python -m float_studio.call.stub_services --port 8808 &
    FLOAT_ASR_URL=http://127.0.0.1:8808/v1 FLOAT_LLM_URL=http://127.0.0.1:8808/v1 \\
    FLOAT_TTS_URL=http://127.0.0.1:8808/v1 python app.py
"""

from __future__ import annotations

import argparse
import io
import shutil
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.responses import JSONResponse, Response, StreamingResponse

__all__ = ["StubServices", "serve_stub_services"]


@dataclass
class StubServices:
    """The fixed behaviour and the request log of a stub server.

    Attributes:
        transcript: what every transcription returns (a list: one per request, the last repeats).
        answer: what every chat completion returns (a list, likewise).
        fail: names of services that answer HTTP 500 ("asr", "llm", "tts").
        requests: (service, details) of every request, in order.
    """

    transcript: list[str] = field(default_factory=lambda: ["What is your name?"])
    answer: list[str] = field(default_factory=lambda: ["My name is Ava, and I am a talking portrait."])
    fail: set[str] = field(default_factory=set)
    requests: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def _pick(self, items: list[str], service: str) -> str:
        n = sum(1 for s, _ in self.requests if s == service)
        return items[min(n - 1, len(items) - 1)]

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.get("/v1/models")
        async def models() -> dict:
            return {"object": "list", "data": [{"id": "stub-model", "object": "model"}]}

        @app.post("/v1/audio/transcriptions")
        async def transcriptions(request: Request, file: UploadFile = File(...), model: str = Form(...),
                                 response_format: str = Form("json")) -> Any:
            import soundfile as sf

            data = await file.read()
            wave, rate = sf.read(io.BytesIO(data), dtype="float32")
            self.requests.append(("asr", {"model": model, "filename": file.filename, "rate": rate,
                                          "seconds": wave.shape[0] / rate, "channels": wave.ndim,
                                          "auth": request.headers.get("authorization"),
                                          "response_format": response_format}))
            if "asr" in self.fail:
                return JSONResponse({"error": "stub failure"}, status_code=500)
            return {"text": self._pick(self.transcript, "asr")}

        @app.post("/v1/chat/completions")
        async def chat(request: Request) -> Any:
            body = await request.json()
            self.requests.append(("llm", {"body": body, "auth": request.headers.get("authorization")}))
            if "llm" in self.fail:
                return JSONResponse({"error": {"message": "stub failure"}}, status_code=500)
            text = self._pick(self.answer, "llm")
            created, model = int(time.time()), body.get("model")
            if body.get("stream"):
                return StreamingResponse(_chat_events(text, created, model), media_type="text/event-stream")
            return {"id": "stub", "object": "chat.completion", "created": created, "model": model,
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": text}}]}

        @app.post("/v1/audio/speech")
        async def speech(request: Request) -> Any:
            body = await request.json()
            self.requests.append(("tts", {"body": body, "auth": request.headers.get("authorization")}))
            if "tts" in self.fail:
                return JSONResponse({"error": "stub failure"}, status_code=500)
            wav = _speech_wav(str(body.get("input", "")))
            if body.get("response_format") == "pcm":  # raw 24 kHz s16le mono, as OpenAI's "pcm"
                return Response(_pcm_24k(wav), media_type="audio/pcm")
            return Response(wav, media_type="audio/wav")

        return app


def _chat_events(text: str, created: int, model: Any) -> Any:
    """A chat answer as OpenAI's streamed ``chat.completion.chunk`` events: the role, the text a
    word at a time, the finish reason, ``[DONE]``."""
    import json

    def event(delta: dict[str, str], finish: str | None = None) -> str:
        chunk = {"id": "stub", "object": "chat.completion.chunk", "created": created, "model": model,
                 "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
        return f"data: {json.dumps(chunk)}\n\n"

    yield event({"role": "assistant", "content": ""})
    words = text.split(" ")
    for i, word in enumerate(words):
        yield event({"content": word if i == len(words) - 1 else word + " "})
    yield event({}, "stop")
    yield "data: [DONE]\n\n"


def _pcm_24k(wav: bytes) -> bytes:
    """WAV bytes as raw 24 kHz 16-bit mono PCM."""
    import soundfile as sf
    import soxr

    from float_core.media.audio import pcm16

    wave, rate = sf.read(io.BytesIO(wav), dtype="float32", always_2d=True)
    mono = soxr.resample(wave.mean(axis=1), rate, 24000) if rate != 24000 else wave.mean(axis=1)
    return pcm16(mono)


def _speech_wav(text: str) -> bytes:
    """WAV of ``text`` read by espeak-ng (22.05 kHz), or 1 s of a 220 Hz tone per 12 characters."""
    exe = shutil.which("espeak-ng")
    if exe:
        done = subprocess.run([exe, "--stdout"], input=text.encode(), capture_output=True, timeout=60, check=True)
        return done.stdout
    import soundfile as sf

    t = np.arange(int(24000 * max(1.0, len(text) / 12))) / 24000
    buf = io.BytesIO()
    sf.write(buf, (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), 24000, format="WAV")
    return buf.getvalue()


def serve_stub_services(stub: StubServices | None = None, host: str = "127.0.0.1",
                        port: int = 0) -> tuple[str, StubServices, Any]:
    """Serve ``stub`` in a background thread; returns (base URL ending in /v1, stub, stop())."""
    import uvicorn

    stub = stub or StubServices()
    sock = socket.socket()
    sock.bind((host, port))
    server = uvicorn.Server(uvicorn.Config(stub.app(), log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="stub-services", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)

    def stop() -> None:
        server.should_exit = True
        thread.join(10)
        sock.close()

    return f"http://{host}:{sock.getsockname()[1]}/v1", stub, stop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8808)
    parser.add_argument("--transcript", default=None, help="what every transcription returns")
    parser.add_argument("--answer", default=None, help="what every chat completion returns")
    args = parser.parse_args()
    stub = StubServices()
    if args.transcript:
        stub.transcript = [args.transcript]
    if args.answer:
        stub.answer = [args.answer]
    url, _, stop = serve_stub_services(stub, args.host, args.port)
    print(f"stub services at {url} (Ctrl-C to stop)", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        stop()


if __name__ == "__main__":
    main()
