"""The "Live" tab of FLOAT Studio: streaming generation (owned by the stream engineer)."""

from __future__ import annotations

from typing import Any


def build_live_tab(holder: Any) -> None:
    """Lay out the Live tab; called by ``app.py`` inside ``with gr.Tab("Live"):``.

    Args:
        holder: the app's :class:`float_studio.state.PipelineHolder` (shared read-only pipeline).
    """
    import gradio as gr

    gr.Markdown("Live streaming: coming soon")
