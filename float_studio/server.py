"""How ``app.py``'s ``__main__`` serves the FLOAT Studio Blocks app."""

from __future__ import annotations

from typing import Any


def launch(demo: Any, holder: Any, **launch_kwargs: Any) -> Any:
    """Serve ``demo`` (a ``gr.Blocks``); ``launch_kwargs`` go to ``demo.launch``.

    Args:
        demo: the app built by ``app.build_demo``.
        holder: the app's :class:`float_studio.state.PipelineHolder` (for routes that need the model).
    """
    return demo.launch(**launch_kwargs)
