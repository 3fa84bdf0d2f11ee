"""FLOAT Studio: the Gradio app. Lays out the tabs and wires app-level events only; the logic
lives in the ``float_studio`` package next to this file.

Run ``python app.py`` (``FLOAT_TEST_MODEL=tiny-random`` for the tiny random model). At
start-up the weights are loaded from ``$FLOAT_CHECKPOINT_DIR`` or ``./checkpoints`` and,
when absent, fetched from the Hugging Face Hub with progress bars; when that fails the app
still starts, shows a banner saying what to download and where, and disables generation.

Environment: ``FLOAT_CHECKPOINT_DIR`` (weights), ``FLOAT_AUTO_DOWNLOAD`` (0: never download),
``FLOAT_DEVICE``, ``FLOAT_DTYPE``, the limits ``FLOAT_MAX_SECONDS`` (longest speech, 60 s),
``FLOAT_MAX_LIVE_SECONDS`` (longest microphone stream or call, 300 s) and
``FLOAT_MAX_UPLOAD_MB`` (50), ``GRADIO_SERVER_NAME`` / ``GRADIO_SERVER_PORT`` (read by Gradio
itself). Deployment (Spaces hardware, ZeroGPU, limits): docs/deployment.md.

Tabs: **Studio** (portrait + speech -> video, motion editing), **Video** (a video as input:
drive, lips from speech + head from video, dub; docs/video.md), **Conversation** (several
portraits in one video, docs/conversation.md), **Live** (streaming), **Call**.
API endpoints of the Studio tab (``gradio_client``, see docs/app.md): ``/analyze``,
``/generate``, ``/preview``, ``/apply_edits``, ``/crop_preview``, ``/status``; of the Video
tab: ``/drive``, ``/dub``; of the Conversation tab: ``/converse``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import gradio as gr

from float_studio import gpu  # noqa: F401 - first: on ZeroGPU, `spaces` must precede CUDA
from float_studio import limits, server
from float_studio.call import build_call_tab
from float_studio.conversation_tab import build_conversation_tab
from float_studio.live import build_live_tab
from float_studio.model import PipelineHolder
from float_studio.ui import build_studio_tab
from float_studio.video_tab import build_video_tab

ASSETS = Path(__file__).resolve().parent / "assets"


def build_demo(holder: PipelineHolder | None = None) -> gr.Blocks:
    """Build the (queued) Blocks app around a lazily loaded pipeline shared read-only by all sessions."""
    holder = holder or PipelineHolder()
    with gr.Blocks(title="FLOAT Studio", delete_cache=(1800, 3600)) as demo:
        gr.Markdown((ASSETS / "header.md").read_text(encoding="utf-8"), elem_id="float-header")
        with gr.Row(equal_height=True):
            status = gr.Markdown(elem_id="float-status")
            retry = gr.Button("Retry loading", size="sm", visible=False, scale=0, elem_id="float-retry")
        with gr.Tab("Studio", id="studio"):
            studio = build_studio_tab(holder)
        with gr.Tab("Video", id="video"):
            build_video_tab(holder)
        with gr.Tab("Conversation", id="conversation"):
            build_conversation_tab(holder)
        with gr.Tab("Live", id="live"):
            build_live_tab(holder)
        with gr.Tab("Call", id="call"):
            build_call_tab(holder)

        def on_load() -> tuple[str, Any, Any]:
            ok = holder.available()
            return holder.status_markdown(), gr.update(interactive=ok), gr.update(visible=not ok)

        def on_retry() -> tuple[str, Any, Any]:
            """Load the model again (e.g. after the weights were put in place): no restart needed."""
            ok = holder.retry()
            return holder.status_markdown(), gr.update(interactive=ok), gr.update(visible=not ok)

        outputs = [status, studio.generate, retry]
        demo.load(on_load, None, outputs, api_visibility="private")
        retry.click(on_retry, None, outputs, api_name="retry_loading")
    demo.queue(default_concurrency_limit=2, max_size=64)
    return demo


def launch_kwargs() -> dict[str, Any]:
    """Theme and CSS (Gradio 6 takes them in ``launch()``, not in ``Blocks()``) and the upload
    cap (``FLOAT_MAX_UPLOAD_MB``: Gradio refuses larger uploads with HTTP 413)."""
    return dict(theme=gr.themes.Soft(primary_hue="indigo", secondary_hue="sky"),
                css_paths=[ASSETS / "style.css"], show_error=True, max_file_size=limits.max_upload_bytes())


#: The one pipeline of this process, loaded lazily and shared read-only by every session.
PIPELINE = PipelineHolder()
demo = build_demo(PIPELINE)

if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    # Load (downloading the weights with progress bars when absent) before serving, so the
    # first visitor does not wait (and, on ZeroGPU, so that the weights are packed for the GPU
    # workers); a failure is logged in one line and becomes the banner.
    PIPELINE.available()
    server.launch(demo, PIPELINE, **launch_kwargs())
