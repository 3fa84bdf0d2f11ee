"""The "Call" tab of FLOAT Studio and its HTTP routes (owned by the call engineer)."""

from __future__ import annotations

from typing import Any


def build_call_tab(holder: Any) -> None:
    """Lay out the Call tab; called by ``app.py`` inside ``with gr.Tab("Call"):``.

    Args:
        holder: the app's :class:`float_studio.state.PipelineHolder`.
    """
    import gradio as gr

    gr.Markdown("Call: coming soon")


def mount_call_routes(app: Any, holder: Any) -> None:
    """Add the Call tab's FastAPI routes (e.g. ``POST /call/offer``) to the server ``app``.

    Called by :func:`float_studio.server.launch` before serving. The stub adds nothing.
    """
