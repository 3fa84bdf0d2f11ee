"""The FLOAT container: one module whose state-dict keys are exactly those of ``float.pth``.

Top-level prefixes, as in the released checkpoint: ``motion_autoencoder.`` (enc, dec), ``audio_encoder.``
(wav2vec2 + audio_projection), ``emotion_encoder.`` (wav2vec2_for_emotion), ``fmt.``.
"""

from __future__ import annotations

from torch import nn

from ..config import FloatConfig
from .conditions import AudioEncoder, EmotionEncoder
from .fmt import FlowMatchingTransformer
from .motion_autoencoder import MotionAutoEncoder


class FloatModel(nn.Module):
    """All FLOAT networks, built from a :class:`FloatConfig` with random weights."""

    def __init__(self, config: FloatConfig):
        super().__init__()
        self.config = config
        self.motion_autoencoder = MotionAutoEncoder(config)
        self.audio_encoder = AudioEncoder(config)
        self.emotion_encoder = EmotionEncoder(config)
        self.fmt = FlowMatchingTransformer.from_config(config)
