"""The "Call" tab of FLOAT Studio and its HTTP routes: a FaceTime-style call with the portrait.

TalkingMachines ("Applications") streams the avatar back over WebRTC; Gradio's
HTTP streaming (segments of a second or more) is too slow for a conversation, so the tab runs
a real WebRTC client in the page (``assets/call.js``: getUserMedia + RTCPeerConnection) and
the server side is aiortc (:mod:`float_studio.call.session`), on the app's own web server.

HTTP routes (added to Gradio's FastAPI app by :func:`mount_call_routes`; any WebRTC client can
use them, see docs/call.md):

* ``GET /call/config`` -> ``{"ice_servers", "max_calls", "active_calls", "modes", "assistant"}``
* ``POST /call/offer`` with ``{"sdp", "type": "offer", "mode", "portrait": <data URL>, ...settings}``
  -> ``{"sdp", "type": "answer", "id", "mode"}``; errors -> ``{"error": message}`` with a 4xx/5xx
* ``GET /call/{id}`` -> the call's state, frame counts, latencies and transcript
* ``DELETE /call/{id}`` -> hang up
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse

from ..limits import COUNTDOWN_SECONDS, MAX_LIVE_SECONDS_ENV, max_live_seconds
from .assistant import DEFAULT_SYSTEM_PROMPT
from .session import CallError, CallManager

__all__ = ["build_call_tab", "mount_call_routes", "call_manager"]

log = logging.getLogger(__name__)

ASSETS = Path(__file__).resolve().parents[2] / "assets"
MAX_BODY_BYTES = 25 * 1024 * 1024

#: The live view: video, connection state, latency and transcript (filled in by call.js).
CALL_VIEW_HTML = """
<div class="float-call">
  <video id="float-call-video" autoplay playsinline></video>
  <div class="float-call-bar">
    <span>State: <b id="float-call-state" data-state="idle">idle</b></span>
    <span id="float-call-speaking"></span>
    <span>Latency: <b id="float-call-latency">-</b></span>
    <span>Frames: <b id="float-call-fps">-</b></span>
  </div>
  <div id="float-call-countdown" role="timer"></div>
  <div id="float-call-warning" role="status"></div>
  <div id="float-call-error" role="alert"></div>
  <ol id="float-call-transcript"></ol>
</div>
"""

CALL_VIEW_CSS = """
.float-call video { width: 100%; max-height: 480px; background: #111; border-radius: 8px; }
.float-call-bar { display: flex; gap: 1.2em; flex-wrap: wrap; margin: .4em 0; }
#float-call-error:not(:empty) { color: #b91c1c; font-weight: 600; margin: .4em 0; }
#float-call-countdown:not(:empty) { font-weight: 600; margin: .4em 0; }
#float-call-warning:not(:empty) { color: #92400e; margin: .4em 0; }
#float-call-transcript { max-height: 240px; overflow-y: auto; padding-left: 1.2em; }
#float-call-transcript .interrupted { opacity: .6; }
"""


def build_call_tab(holder: Any) -> None:
    """Lay out the Call tab; called by ``app.py`` inside ``with gr.Tab("Call"):``.

    The Call and Hang-up buttons run in the page only (``js=``): the browser talks to
    ``POST /call/offer`` directly, so no Gradio event (or queue) sits in the media path.

    Args:
        holder: the app's :class:`float_studio.state.PipelineHolder` (read by the routes).
    """
    import gradio as gr

    from ..state import EMOTION_CHOICES

    unavailable = CallManager.unavailable_reason()  # ZeroGPU: said plainly, and Call is disabled
    limit = max_live_seconds()
    gr.Markdown("Call the portrait like a video call. **Puppet**: your voice drives the face live, like "
                "a virtual camera. **Assistant**: talk with it; it listens, answers through a chat "
                "model and speaks (needs `FLOAT_ASR_URL` and `FLOAT_LLM_URL`, see docs/call.md). Speak over "
                "an answer to interrupt it. Allow the microphone when the browser asks."
                + (f" A call lasts at most **{limit:g} s** (`{MAX_LIVE_SECONDS_ENV}`); the last "
                   f"{COUNTDOWN_SECONDS:g} s are counted down." if limit else ""))
    if unavailable:
        gr.Markdown(f"⚠️ {unavailable}", elem_id="float-call-unavailable")
    with gr.Row(equal_height=False):
        with gr.Column(scale=4):
            portrait = gr.Image(label="Portrait", type="filepath", height=240, elem_id="float-call-portrait",
                                sources=["upload", "webcam", "clipboard"])
            mode = gr.Radio([("Puppet (my voice drives it)", "puppet"), ("Assistant (talk with it)", "assistant")],
                            value="puppet", label="Mode", elem_id="float-call-mode")
            with gr.Accordion("Settings", open=False, elem_id="float-call-settings"):
                name = gr.Textbox("Ava", label="Portrait's name", max_length=60, elem_id="float-call-name")
                prompt = gr.Textbox(DEFAULT_SYSTEM_PROMPT, label="System prompt", lines=3, max_length=4000,
                                    info="The chat model's instructions; {name} becomes the name.")
                emotion = gr.Dropdown(EMOTION_CHOICES, value="auto", label="Emotion")
                with gr.Row():
                    a_cfg = gr.Slider(0, 5, value=2.0, step=0.1, label="Audio guidance γa")
                    e_cfg = gr.Slider(0, 10, value=1.0, step=0.1, label="Emotion intensity γe")
                with gr.Row():
                    nfe = gr.Slider(1, 50, value=10, step=1, label="Steps (NFE)",
                                    info="Fewer steps: lower latency.")
                    seed = gr.Number(value=-1, precision=0, minimum=-1, label="Seed (-1: random)")
                with gr.Row():
                    crop = gr.Checkbox(True, label="Crop to the face")
                    idle = gr.Checkbox(True, label="Idle while silent",
                                       info="Blinks and small head motion instead of mouthing noise.")
            with gr.Row():
                start = gr.Button("Call", variant="primary", elem_id="float-call-start", interactive=not unavailable)
                hangup = gr.Button("Hang up", variant="stop", elem_id="float-call-hangup")
        with gr.Column(scale=6):
            gr.HTML(CALL_VIEW_HTML, css_template=CALL_VIEW_CSS, elem_id="float-call-view",
                    js_on_load=(ASSETS / "call.js").read_text(encoding="utf-8"))
    inputs = [portrait, mode, name, prompt, emotion, a_cfg, e_cfg, nfe, seed, crop, idle]
    start.click(None, inputs, None, js="(...args) => window.floatCall ? window.floatCall.start(...args) "
                                       ": alert('The call client did not load; reload the page.')")
    hangup.click(None, None, None, js="() => window.floatCall && window.floatCall.hangup()")


def call_manager(app: Any) -> CallManager | None:
    """The :class:`CallManager` that :func:`mount_call_routes` attached to ``app``, if any."""
    return getattr(app.state, "float_calls", None)


def mount_call_routes(app: Any, holder: Any) -> CallManager:
    """Add the Call routes (``/call/config``, ``/call/offer``, ``/call/{id}``) to ``app``.

    Called by :func:`float_studio.server.launch` once Gradio's FastAPI app exists. Returns the
    :class:`CallManager` (also at ``app.state.float_calls``); its ``close_all()`` ends every call.
    """
    manager = CallManager(holder)
    app.state.float_calls = manager

    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status)

    async def guarded(work: Any) -> JSONResponse:
        try:
            return JSONResponse(await work)
        except CallError as exc:
            return error(exc.status, exc.message)
        except Exception as exc:  # noqa: BLE001 - the HTTP boundary: a message, never a traceback
            log.exception("call route failed")
            return error(500, f"unexpected error ({type(exc).__name__}: {exc}); details are in the server log")

    async def config() -> JSONResponse:
        return JSONResponse(manager.config())

    async def offer(request: Request) -> JSONResponse:
        raw = await request.body()
        if len(raw) > MAX_BODY_BYTES:
            return error(413, f"the offer is larger than {MAX_BODY_BYTES // 2**20} MB (a smaller portrait?)")
        try:
            body = json.loads(raw)
        except ValueError:
            return error(400, "the body is not JSON; send {\"sdp\", \"type\": \"offer\", \"mode\", \"portrait\"}")
        return await guarded(manager.offer(body))

    async def status(call_id: str) -> JSONResponse:
        async def get() -> dict:
            return manager.status(call_id)
        return await guarded(get())

    async def hangup(call_id: str) -> JSONResponse:
        return await guarded(manager.hangup(call_id))

    app.add_api_route("/call/config", config, methods=["GET"], include_in_schema=False)
    app.add_api_route("/call/offer", offer, methods=["POST"], include_in_schema=False)
    app.add_api_route("/call/{call_id}", status, methods=["GET"], include_in_schema=False)
    app.add_api_route("/call/{call_id}", hangup, methods=["DELETE"], include_in_schema=False)
    return manager
