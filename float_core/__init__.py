"""FLOAT Studio engine: audio-driven talking portraits by flow matching in a motion latent space.

Public API::

    from float_core import FloatPipeline, FloatConfig, EMOTIONS
    pipe = FloatPipeline.from_pretrained("checkpoints")   # or FLOAT_TEST_MODEL=tiny-random
    pipe.generate("portrait.jpg", "speech.wav", "out.mp4")
"""

from .config import EMOTIONS, FloatConfig

__all__ = ["EMOTIONS", "FloatConfig", "FloatPipeline", "Prepared"]
__version__ = "0.1.0"


def __getattr__(name: str):
    # Lazy: `import float_core` stays cheap (no torch/transformers import) for the CLI's --help.
    if name in ("FloatPipeline", "Prepared"):
        from . import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module 'float_core' has no attribute {name!r}")
