"""FLOAT Studio engine: audio-driven talking portraits by flow matching in a motion latent space.

Public API::

    from float_core import FloatPipeline, SamplingConfig
    pipe = FloatPipeline.from_pretrained("checkpoints")   # or FLOAT_TEST_MODEL=tiny-random
    pipe.generate("portrait.jpg", "speech.wav", "out.mp4", SamplingConfig(seed=0))

Every name in ``__all__`` is importable from ``float_core``; the torch-free ones (configuration
and constants) are imported eagerly, the others on first use, so ``import float_core`` (and the
command line's ``--help``) stays cheap.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from .config import EMOTIONS, FPS, SAMPLE_RATE, SAMPLES_PER_FRAME, FloatConfig, SamplingConfig, StreamOptions

__version__ = "0.1.0"

#: Lazily imported public names -> the module that defines them.
_LAZY = {
    "FloatPipeline": "pipeline",
    "GenerationResult": "pipeline",
    "SourceImage": "inputs",
    "DrivingAudio": "inputs",
    "Prepared": "inputs",
    "Precision": "precision",
    "StreamChunk": "streaming",
    "StreamIterator": "streaming",
    "Script": "conversation",
    "ConversationResult": "conversation",
    "synthesize": "tts",
    "VideoMotion": "video_in",
    "LiveAvatar": "avatar",
    "AvatarFrame": "avatar",
}

__all__ = [  # the torch-free names above, then every lazy one (tests/test_import_graph.py checks both)
    "EMOTIONS", "FPS", "SAMPLE_RATE", "SAMPLES_PER_FRAME", "FloatConfig", "SamplingConfig", "StreamOptions",
    "AvatarFrame", "ConversationResult", "DrivingAudio", "FloatPipeline", "GenerationResult", "LiveAvatar",
    "Precision", "Prepared", "Script", "SourceImage", "StreamChunk", "StreamIterator", "VideoMotion", "synthesize",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value  # later lookups skip this function
        return value
    raise AttributeError(f"module 'float_core' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
