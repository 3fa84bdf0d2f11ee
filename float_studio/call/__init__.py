"""The Call tab: a FaceTime-style WebRTC call with the portrait (puppet and assistant modes).

Modules: :mod:`~float_studio.call.tab` (the tab and its HTTP signalling routes),
:mod:`~float_studio.call.session` (one call: aiortc peer connection, its LiveAvatar, stats),
:mod:`~float_studio.call.media` (the outgoing audio/video tracks, the microphone reader),
:mod:`~float_studio.call.assistant` (turn detection, speech-to-text -> chat -> speech),
:mod:`~float_studio.call.client` (a Python WebRTC client for tests and benchmarks),
:mod:`~float_studio.call.stub_services` (local OpenAI-compatible stand-ins, ``python -m
float_studio.call.stub_services``).
"""

from .tab import build_call_tab, call_manager, mount_call_routes

__all__ = ["build_call_tab", "call_manager", "mount_call_routes"]
