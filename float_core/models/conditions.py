"""Driving conditions: wav2vec2 audio features w_a and speech-emotion probabilities w_e.

Paper Sec. 4.2 ("Driving Conditions", "Speech-driven Emotional Labels") and ARCHITECTURE.md
"Audio and emotion conditions". Both encoders are built on Hugging Face's
:class:`~transformers.Wav2Vec2Model` so that the public checkpoints
(``facebook/wav2vec2-base-960h`` and ``r-f/wav2vec-english-speech-emotion-recognition``) and the
``audio_encoder.*`` / ``emotion_encoder.*`` tensors of ``float.pth`` load under their own names.

Audio path (per clip, 16 kHz, already normalised with :func:`normalize_audio`)::

    pad to T*640 samples -> conv feature extractor (B, N, 512)
        -> linear interpolation to T frames (align_corners=True)  # before the transformer
        -> feature projection -> transformer encoder -> 12 layer outputs
        -> concat per frame (B, T, 12*768) -> Linear -> LayerNorm -> SiLU -> w_a (B, T, 512)

Emotion path: the unpadded normalised clip -> xlsr-53 wav2vec2 -> mean over time
-> dense -> tanh -> out_proj -> softmax -> w_e (B, 7) in :data:`~float_core.config.EMOTIONS` order.

Everything here is deterministic in eval mode: dropout, LayerDrop and SpecAugment masking are
training-only in ``Wav2Vec2Model``. Works with transformers 4.52 (the reference) and 5.x.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import Wav2Vec2Config, Wav2Vec2Model

from ..config import FloatConfig

__all__ = [
    "AudioEncoder",
    "AudioEncoderOutput",
    "EmotionEncoder",
    "SpeechClassificationHead",
    "SpeechEmotionClassifier",
    "linear_interpolation",
    "min_num_samples",
    "normalize_audio",
    "pad_audio",
]

#: Variance floor of ``Wav2Vec2FeatureExtractor.zero_mean_unit_var_norm``.
NORMALIZE_EPS = 1e-7


# --------------------------------------------------------------------------- pure functions
def _check_audio(audio: object) -> Tensor:
    """Validate a waveform and return it as (B, S); raise ValueError naming ``audio`` otherwise."""
    if not isinstance(audio, Tensor):
        raise ValueError(f"audio must be a torch.Tensor of shape (S,) or (B, S), got {type(audio).__name__}")
    if audio.dim() not in (1, 2):
        raise ValueError(f"audio must have shape (S,) or (B, S), got shape {tuple(audio.shape)}")
    if not audio.is_floating_point():
        raise ValueError(f"audio must be a floating-point tensor, got dtype {audio.dtype}")
    if audio.numel() == 0:
        raise ValueError(f"audio must not be empty, got shape {tuple(audio.shape)}")
    if audio.device.type != "meta" and not bool(torch.isfinite(audio).all()):
        raise ValueError("audio contains NaN or infinite values")
    return audio if audio.dim() == 2 else audio.unsqueeze(0)


def normalize_audio(waveform: Tensor) -> Tensor:
    """Zero mean, unit variance per clip, as ``Wav2Vec2FeatureExtractor(do_normalize=True)``.

    ``(x - mean) / sqrt(var + 1e-7)`` with the population variance, over the last dimension
    (ARCHITECTURE.md: the whole clip is normalised once, before padding). The statistics are
    accumulated in float64 while the samples stay in their own dtype (no float64 copy of a long
    clip: 10 minutes at 16 kHz would cost ~77 MB per temporary); the feature extractor works in
    float32 numpy, so the two agree to float32 rounding.

    Args:
        waveform: (S,) or (B, S) samples.

    Returns:
        A tensor of the input's shape and dtype.
    """
    batched = _check_audio(waveform)
    n = batched.shape[-1]
    mean = batched.sum(dim=-1, keepdim=True, dtype=torch.float64) / n
    centered = batched - mean.to(batched.dtype)
    var = (centered * centered).sum(dim=-1, keepdim=True, dtype=torch.float64) / n
    out = centered.mul_(torch.rsqrt(var + NORMALIZE_EPS).to(batched.dtype))
    return out if waveform.dim() == 2 else out.squeeze(0)


def pad_audio(waveform: Tensor, num_frames: int, samples_per_frame: int = 640) -> Tensor:
    """Right-pad to exactly ``num_frames * samples_per_frame`` samples by repeating the last sample.

    The reference pads so that the conv feature extractor sees a whole number of video frames
    (640 samples = 1/25 s at 16 kHz); ``num_frames`` is normally T = ceil(S * 25 / 16000)
    (:meth:`FloatConfig.num_video_frames`), so the padding is shorter than one frame.

    Args:
        waveform: (S,) or (B, S) samples.
        num_frames: video frames T >= 1.
        samples_per_frame: audio samples per video frame (sample_rate / fps).

    Returns:
        (T * samples_per_frame,) or (B, T * samples_per_frame).
    """
    batched = _check_audio(waveform)
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if samples_per_frame < 1:
        raise ValueError(f"samples_per_frame must be >= 1, got {samples_per_frame}")
    target = num_frames * samples_per_frame
    missing = target - batched.shape[-1]
    if missing < 0:
        raise ValueError(
            f"num_frames={num_frames} x samples_per_frame={samples_per_frame} = {target} samples is shorter "
            f"than the audio ({batched.shape[-1]} samples); use num_frames >= "
            f"{math.ceil(batched.shape[-1] / samples_per_frame)}"
        )
    if missing:
        batched = torch.cat([batched, batched[:, -1:].expand(-1, missing)], dim=-1)
    return batched if waveform.dim() == 2 else batched.squeeze(0)


def linear_interpolation(features: Tensor, num_frames: int) -> Tensor:
    """Resample (B, N, C) features to (B, num_frames, C) linearly along time (align_corners=True).

    This aligns the ~50 Hz wav2vec2 conv frames with the 25 fps video frames (ARCHITECTURE.md:
    done BEFORE the feature projection and the transformer encoder). With align_corners the
    first and last frames are kept exactly.
    """
    if features.dim() != 3:
        raise ValueError(f"features must have shape (B, N, C), got shape {tuple(features.shape)}")
    if features.shape[1] == 0:
        raise ValueError("features must have at least one time step")
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    out = F.interpolate(features.transpose(1, 2), size=num_frames, mode="linear", align_corners=True)
    return out.transpose(1, 2)


def min_num_samples(conv_kernel: Sequence[int], conv_stride: Sequence[int]) -> int:
    """Fewest samples for which a wav2vec2 conv feature extractor yields one frame (400 officially).

    Inverts ``L_out = (L_in - k) // s + 1`` layer by layer from L_out = 1.
    """
    length = 1
    for kernel, stride in zip(reversed(conv_kernel), reversed(conv_stride)):
        length = (length - 1) * stride + kernel
    return length


# --------------------------------------------------------------------------- helpers
def _build_wav2vec2(settings: dict) -> Wav2Vec2Model:
    """A randomly initialised ``Wav2Vec2Model`` from a config dict (weights are loaded later)."""
    return Wav2Vec2Model(Wav2Vec2Config(**settings))


def _as_model_input(audio: Tensor, module: nn.Module) -> Tensor:
    """Move ``audio`` to the module's device and floating dtype (devices are chosen at run time)."""
    param = next(module.parameters())
    return audio.to(device=param.device, dtype=param.dtype)


@contextlib.contextmanager
def _record_layer_outputs(layers: Sequence[nn.Module]) -> Iterator[list[Tensor]]:
    """Collect each encoder layer's output during one forward pass (hooks removed on exit).

    transformers 4.x layers return a tuple ``(hidden_states, ...)``, 5.x a tensor; both are handled.
    """
    outputs: list[Tensor] = []

    def hook(_module: nn.Module, _inputs: object, output: Tensor | tuple[Tensor, ...]) -> None:
        outputs.append(output[0] if isinstance(output, tuple) else output)

    handles = [layer.register_forward_hook(hook) for layer in layers]
    try:
        yield outputs
    finally:
        for handle in handles:
            handle.remove()


# --------------------------------------------------------------------------- audio encoder
class AudioEncoderOutput(NamedTuple):
    """Intermediate and final tensors of :meth:`AudioEncoder.encode`."""

    conv_features: Tensor  #: (B, N, conv_dim[-1]) conv feature extractor output of the padded clip
    stacked: Tensor  #: (B, T, layers * hidden) layer outputs, layer-major (index = layer * hidden + c)
    wa: Tensor  #: (B, T, dim_a) projected audio condition w_a


class AudioEncoder(nn.Module):
    """Frame-aligned speech features w_a (paper Sec. 4.2, "Driving Conditions").

    Children (state-dict keys of ``float.pth`` under ``audio_encoder.``): ``wav2vec2``
    (:class:`~transformers.Wav2Vec2Model`, wav2vec2-base-960h officially) and ``audio_projection``
    = Sequential(Linear(layers * hidden, dim_a), LayerNorm(dim_a), SiLU) -> keys ``audio_projection.0.*``
    and ``audio_projection.1.*`` (official: 12 * 768 = 9216 -> 512).
    """

    def __init__(self, config: FloatConfig):
        super().__init__()
        self.config = config
        self.wav2vec2 = _build_wav2vec2(config.audio_wav2vec2)
        w2v = self.wav2vec2.config
        self.audio_projection = nn.Sequential(
            nn.Linear(w2v.num_hidden_layers * w2v.hidden_size, config.dim_a),
            nn.LayerNorm(config.dim_a),
            nn.SiLU(),
        )

    def _encoder_layer_outputs(self, hidden_states: Tensor) -> list[Tensor]:
        """The reference's ``hidden_states[1:]`` of the transformer encoder (transformers 4.52 semantics).

        The reference ran the HF encoder with ``output_hidden_states=True`` and dropped the
        embedding output. In 4.52 that tuple holds every layer's output except that its last
        entry is the encoder's ``last_hidden_state`` (identical to the last layer's output for the
        post-LN base model; layer-normed for the stable-layer-norm variant). Recording the layer
        outputs with hooks reproduces that without relying on version-specific output plumbing.
        """
        encoder = self.wav2vec2.encoder
        with _record_layer_outputs(encoder.layers) as layer_outputs:
            last = encoder(hidden_states).last_hidden_state
        if len(layer_outputs) != len(encoder.layers):  # LayerDrop (training mode only) skipped a layer
            raise RuntimeError("an encoder layer was skipped (LayerDrop); call .eval() before encoding audio")
        return layer_outputs[:-1] + [last]

    def encode(self, audio: Tensor) -> AudioEncoderOutput:
        """Run the whole audio path and return the intermediate tensors as well.

        Args:
            audio: (B, S) or (S,) normalised (:func:`normalize_audio`), unpadded 16 kHz audio.

        Returns:
            :class:`AudioEncoderOutput` with T = ceil(S * 25 / 16000) frames.
        """
        audio = _as_model_input(_check_audio(audio), self)
        num_frames = self.config.num_video_frames(audio.shape[-1])
        padded = pad_audio(audio, num_frames, self.config.samples_per_frame)
        conv_features = self.wav2vec2.feature_extractor(padded).transpose(1, 2)  # (B, N, 512)
        aligned = linear_interpolation(conv_features, num_frames)  # (B, T, 512)
        hidden_states, _ = self.wav2vec2.feature_projection(aligned)  # (B, T, hidden)
        stacked = torch.cat(self._encoder_layer_outputs(hidden_states), dim=-1)
        return AudioEncoderOutput(conv_features, stacked, self.audio_projection(stacked))

    def forward(self, audio: Tensor) -> Tensor:
        """w_a (B, T, dim_a) for normalised, unpadded audio (B, S) or (S,)."""
        return self.encode(audio).wa


# --------------------------------------------------------------------------- emotion encoder
class SpeechClassificationHead(nn.Module):
    """``classifier`` of the speech-emotion model: dense (H->H) -> tanh -> out_proj (H->labels).

    The dropouts of the original head are inactive at inference and omitted (no parameters).
    """

    def __init__(self, hidden_size: int, num_labels: int):
        super().__init__()
        self.dense = nn.Linear(hidden_size, hidden_size)
        self.out_proj = nn.Linear(hidden_size, num_labels)

    def forward(self, pooled: Tensor) -> Tensor:
        """Logits (B, num_labels) from pooled features (B, H)."""
        return self.out_proj(torch.tanh(self.dense(pooled)))


class SpeechEmotionClassifier(nn.Module):
    """wav2vec2 body + mean pooling + :class:`SpeechClassificationHead` (r-f/wav2vec-english-...).

    Key names match the hub checkpoint (``wav2vec2.*``, ``classifier.dense.*``, ``classifier.out_proj.*``).
    """

    def __init__(self, settings: dict, num_labels: int):
        super().__init__()
        pooling = settings.get("pooling_mode", "mean")
        if pooling != "mean":
            raise ValueError(f"pooling_mode must be 'mean' (the released emotion model), got {pooling!r}")
        self.wav2vec2 = _build_wav2vec2(settings)
        self.classifier = SpeechClassificationHead(self.wav2vec2.config.hidden_size, num_labels)

    def forward(self, audio: Tensor) -> tuple[Tensor, Tensor]:
        """(last_hidden_state (B, N, H), logits (B, num_labels)) for a (B, S) waveform."""
        last_hidden_state = self.wav2vec2(audio).last_hidden_state
        return last_hidden_state, self.classifier(last_hidden_state.mean(dim=1))


class EmotionEncoder(nn.Module):
    """Speech-driven emotion probabilities w_e (paper Sec. 4.2, "Speech-driven Emotional Labels").

    Child ``wav2vec2_for_emotion`` (:class:`SpeechEmotionClassifier`, xlsr-53 large officially).
    The model sees the whole normalised clip once, unpadded (ARCHITECTURE.md). Labels are in
    :data:`~float_core.config.EMOTIONS` order.
    """

    def __init__(self, config: FloatConfig):
        super().__init__()
        self.wav2vec2_for_emotion = SpeechEmotionClassifier(config.emotion_wav2vec2, config.dim_e)
        w2v = self.wav2vec2_for_emotion.wav2vec2.config
        self.min_num_samples = min_num_samples(w2v.conv_kernel, w2v.conv_stride)

    def classify(self, audio: Tensor) -> tuple[Tensor, Tensor]:
        """(last_hidden_state (B, N, H), logits (B, dim_e)) for normalised, unpadded audio."""
        audio = _as_model_input(_check_audio(audio), self)
        if audio.shape[-1] < self.min_num_samples:
            raise ValueError(
                f"audio must have at least {self.min_num_samples} samples for the emotion model, "
                f"got {audio.shape[-1]}"
            )
        return self.wav2vec2_for_emotion(audio)

    def logits(self, audio: Tensor) -> Tensor:
        """Unnormalised emotion scores (B, dim_e)."""
        return self.classify(audio)[1]

    def forward(self, audio: Tensor) -> Tensor:
        """Emotion probabilities w_e (B, dim_e): softmax of :meth:`logits`."""
        return self.logits(audio).softmax(dim=-1)
