"""How ``app.py``'s ``__main__`` serves the FLOAT Studio Blocks app.

Gradio's own ``launch()`` serves the app (so ``share``, SSR, Spaces and every launch option
keep working); the Call tab's WebRTC signalling routes (:func:`float_studio.call.mount_call_routes`)
are then added to the FastAPI app Gradio built (``demo.app``). Starlette looks routes up per
request, so routes added after start-up are served like the others; Gradio has no catch-all
route that could shadow ``/call/...``.
"""

from __future__ import annotations

import logging
from typing import Any

from .call import mount_call_routes

log = logging.getLogger(__name__)


def launch(demo: Any, holder: Any, **launch_kwargs: Any) -> Any:
    """Serve ``demo`` (a ``gr.Blocks``) with the Call routes; ``launch_kwargs`` go to ``demo.launch``.

    Blocks until the server stops, unless ``prevent_thread_lock=True`` (tests, notebooks);
    then the calls end with ``float_studio.call.call_manager(demo.app).close_all()`` before
    ``demo.close()``.

    Args:
        demo: the app built by ``app.build_demo``.
        holder: the app's :class:`float_studio.state.PipelineHolder` (for routes that need the model).

    Returns:
        What ``demo.launch`` returns (the app, the local URL and the share URL).
    """
    block = not launch_kwargs.pop("prevent_thread_lock", False)
    debug = bool(launch_kwargs.pop("debug", False))
    result = demo.launch(prevent_thread_lock=True, **launch_kwargs)
    manager = mount_call_routes(demo.app, holder)
    if block or debug:
        try:
            demo.block_thread()
        finally:
            manager.close_all()
    return result
