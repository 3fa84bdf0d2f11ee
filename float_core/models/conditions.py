"""Driving conditions: wav2vec2 audio features w_a and speech-emotion probabilities w_e.

Paper Sec. 4.2 ("Driving Conditions", "Speech-driven Emotional Labels"), as the reference
implementation computes them. Both encoders are built on Hugging Face's
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

Both models see the whole clip (the reference runs them once on the whole normalised clip), but
their conv feature extractors run :data:`CONV_CHUNK_FRAMES` output frames at a time
(:func:`chunked_conv_features`, exact up to float rounding): their first layers' activations
are sized by the sample rate, so a whole long clip would dominate memory (the aim: a
10-minute clip within 1.5x the peak memory of a 10-second one, benchmarks/long_audio_memory.py).
The transformers still see every frame at once.

Everything here is deterministic in eval mode: dropout, LayerDrop and SpecAugment masking are
training-only in ``Wav2Vec2Model``. Works with transformers 4.52 (the reference) and 5.x.
"""

from __future__ import annotations

import contextlib
import math
import threading
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
    "chunked_conv_features",
    "conv_frame_geometry",
    "linear_interpolation",
    "min_num_samples",
    "normalize_audio",
    "pad_audio",
]

#: Variance floor of ``Wav2Vec2FeatureExtractor.zero_mean_unit_var_norm``.
NORMALIZE_EPS = 1e-7

#: Samples per block of :func:`normalize_audio`'s float64 sums and of the finiteness check of
#: input audio (2^20: ~65 s at 16 kHz, 8 MB as float64), so neither makes a clip-sized temporary.
STATS_BLOCK_SAMPLES = 1 << 20

#: Conv feature frames (~50 per second of audio) computed per chunk by :func:`chunked_conv_features`:
#: 1500 frames = 30 s. The first conv layers' activations are sized by the sample rate (layer 0
#: of the official 512-channel extractors holds 512 x 3200 floats per second: ~3.9 GB per
#: temporary for a 10-minute clip), while the features themselves are 320x shorter. A 30-s chunk
#: bounds each temporary to ~200 MB (official) at the cost of 80 re-read samples and one Python
#: iteration per chunk; clips of at most one chunk are computed whole, bit-identical to Hugging Face.
CONV_CHUNK_FRAMES = 1500


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
    # Block by block: torch.isfinite of a float tensor makes a full-size float copy (|x|) first.
    if audio.device.type != "meta" and not all(
            bool(torch.isfinite(block).all()) for block in audio.split(STATS_BLOCK_SAMPLES, dim=-1)):
        raise ValueError("audio contains NaN or infinite values")
    return audio if audio.dim() == 2 else audio.unsqueeze(0)


def normalize_audio(waveform: Tensor) -> Tensor:
    """Zero mean, unit variance per clip, as ``Wav2Vec2FeatureExtractor(do_normalize=True)``.

    ``(x - mean) / sqrt(var + 1e-7)`` with the population variance, over the last dimension
    (as in the reference: the whole clip is normalised once, before padding). The statistics are
    accumulated in float64 while the samples stay in their own dtype: the sums run over blocks
    of :data:`STATS_BLOCK_SAMPLES` (:func:`_blockwise_sum`), because ``sum(dtype=float64)`` of a
    whole long clip first makes a float64 copy of it (10 minutes at 16 kHz: ~77 MB per sum). The
    only full-length temporary is the output. The feature extractor works in float32 numpy, so
    the two agree to float32 rounding.

    Args:
        waveform: (S,) or (B, S) samples.

    Returns:
        A tensor of the input's shape and dtype.
    """
    batched = _check_audio(waveform)
    n = batched.shape[-1]
    mean = _blockwise_sum(batched) / n
    centered = batched - mean.to(batched.dtype)
    var = _blockwise_sum(centered, square=True) / n
    out = centered.mul_(torch.rsqrt(var + NORMALIZE_EPS).to(batched.dtype))
    return out if waveform.dim() == 2 else out.squeeze(0)


def _blockwise_sum(x: Tensor, square: bool = False) -> Tensor:
    """(B, 1) float64 sum of (B, S) ``x`` (or of ``x * x``) over the last dimension, block by block.

    Each block is widened to float64 on its own (see :func:`normalize_audio`), so the
    temporaries are bounded by :data:`STATS_BLOCK_SAMPLES` whatever the clip length.
    """
    total = x.new_zeros(x.shape[0], 1, dtype=torch.float64)
    for start in range(0, x.shape[-1], STATS_BLOCK_SAMPLES):
        block = x[:, start:start + STATS_BLOCK_SAMPLES]
        total += (block * block if square else block).sum(dim=-1, keepdim=True, dtype=torch.float64)
    return total


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

    This aligns the ~50 Hz wav2vec2 conv frames with the 25 fps video frames (as in the reference:
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


def conv_frame_geometry(conv_kernel: Sequence[int], conv_stride: Sequence[int]) -> tuple[int, int]:
    """(hop, receptive field) in samples of a stack of unpadded convs: (320, 400) for wav2vec2.

    Output frame j of the stack depends on exactly the input samples [hop * j, hop * j + field),
    so S >= field samples give (S - field) // hop + 1 frames.
    """
    return math.prod(conv_stride), min_num_samples(conv_kernel, conv_stride)


def _conv_geometry(conv_layers: Sequence[nn.Module]) -> tuple[int, int]:
    """:func:`conv_frame_geometry` of a ``Wav2Vec2FeatureEncoder``'s layers, read from the modules.

    Chunking is exact only for plain valid convs; anything else (padding, dilation) is refused
    rather than silently computed wrongly.
    """
    for conv in (layer.conv for layer in conv_layers):
        if conv.padding != (0,) or conv.dilation != (1,):
            raise ValueError(f"chunked conv features need unpadded, undilated convs, got {conv}")
    return conv_frame_geometry([layer.conv.kernel_size[0] for layer in conv_layers],
                               [layer.conv.stride[0] for layer in conv_layers])


def _whole_clip_norm(conv_layers: Sequence[nn.Module]) -> nn.GroupNorm | None:
    """The GroupNorm of the first layer (``feat_extract_norm="group"``), or None if no layer has one.

    That GroupNorm has one group per channel, i.e. per-channel statistics over the whole time
    axis, which a chunk cannot see; the LayerNorm of ``feat_extract_norm="layer"`` normalises each
    time step over channels and chunks exactly. Hugging Face builds the GroupNorm only in layer 0.
    """
    norms = [getattr(layer, "layer_norm", None) for layer in conv_layers]
    if any(isinstance(norm, nn.GroupNorm) for norm in norms[1:]):
        raise ValueError("chunked conv features support a GroupNorm only in the first conv layer")
    norm = norms[0]
    if not isinstance(norm, nn.GroupNorm):
        return None
    if norm.num_groups != norm.num_channels:
        raise ValueError(f"chunked conv features need one GroupNorm group per channel, got {norm}")
    return norm


def _per_channel_moments(conv: nn.Conv1d, audio: Tensor, chunk_positions: int) -> tuple[Tensor, Tensor]:
    """Mean and biased variance (B, C), float64, of ``conv(audio[:, None])`` over all its positions.

    The conv runs on non-overlapping ranges of ``chunk_positions`` output positions; the chunks'
    moments are merged with Chan et al.'s parallel update (no E[x^2] - E[x]^2 cancellation).
    """
    kernel, stride = conv.kernel_size[0], conv.stride[0]
    positions = (audio.shape[-1] - kernel) // stride + 1
    count = 0
    mean = m2 = audio.new_zeros(audio.shape[0], conv.out_channels, dtype=torch.float64)
    for start in range(0, positions, chunk_positions):
        stop = min(start + chunk_positions, positions)
        y = conv(audio[:, None, stride * start:stride * (stop - 1) + kernel]).double()
        n = stop - start
        chunk_mean = y.mean(dim=-1)
        chunk_m2 = (y - chunk_mean[..., None]).square().sum(dim=-1)
        delta = chunk_mean - mean
        mean = mean + delta * (n / (count + n))
        m2 = m2 + chunk_m2 + delta.square() * (count * n / (count + n))
        count += n
    return mean, m2 / count


def _apply_group_norm(x: Tensor, norm: nn.GroupNorm, mean: Tensor, var: Tensor) -> Tensor:
    """``norm(x)`` for (B, C, L) ``x`` with given per-channel (B, C) statistics instead of x's own."""
    scale = torch.rsqrt(var + norm.eps)
    shift = -mean * scale
    if norm.affine:
        scale = scale * norm.weight.double()
        shift = shift * norm.weight.double() + norm.bias.double()
    return torch.addcmul(shift.to(x.dtype)[..., None], x, scale.to(x.dtype)[..., None])


def chunked_conv_features(feature_extractor: nn.Module, audio: Tensor,
                          chunk_frames: int = CONV_CHUNK_FRAMES) -> Tensor:
    """``feature_extractor(audio)`` (B, C, N), computed ``chunk_frames`` output frames at a time.

    Memory of the wav2vec2 conv feature extractor (``Wav2Vec2FeatureEncoder``) then no longer grows
    with the clip beyond the (B, C, N) output (see :data:`CONV_CHUNK_FRAMES`), and the result is
    the whole-clip one up to float rounding (~1e-6):

    * the convs are unpadded, so output frames [a, b) are exactly the output of the stack run on
      the samples [hop * a, hop * (b - 1) + field) (:func:`conv_frame_geometry`); chunks overlap
      by field - hop = 80 samples and nothing else;
    * LayerNorm layers (``feat_extract_norm="layer"``, the emotion model) normalise each time step
      on its own and chunk as they are;
    * the first layer's GroupNorm (``"group"``, wav2vec2-base-960h, the audio model) uses
      per-channel statistics of the whole clip: a first pass over layer 0's conv output
      accumulates them in float64, the second pass normalises every chunk with them.

    Clips of at most ``chunk_frames`` frames are computed whole by ``feature_extractor`` itself
    (bit-identical; this is also where too-short clips raise).

    Args:
        feature_extractor: a ``Wav2Vec2FeatureEncoder`` (``Wav2Vec2Model.feature_extractor``).
        audio: (B, S) samples in the extractor's dtype and device.
        chunk_frames: output frames per chunk, >= 1.

    Returns:
        (B, conv_dim[-1], N) with N = (S - field) // hop + 1 (N = 49 per second at 16 kHz).
    """
    if chunk_frames < 1:
        raise ValueError(f"chunk_frames must be >= 1, got {chunk_frames}")
    layers = list(feature_extractor.conv_layers)
    hop, field = _conv_geometry(layers)
    num_frames = (audio.shape[-1] - field) // hop + 1
    if num_frames <= chunk_frames:
        return feature_extractor(audio)
    norm = _whole_clip_norm(layers)
    moments = None
    if norm is not None:  # pass 1: whole-clip statistics, as many layer-0 positions per chunk as pass 2
        first = layers[0].conv
        moments = _per_channel_moments(first, audio, chunk_frames * hop // first.stride[0])
    out = audio.new_empty(audio.shape[0], layers[-1].conv.out_channels, num_frames)
    for start in range(0, num_frames, chunk_frames):
        stop = min(start + chunk_frames, num_frames)
        x = audio[:, None, hop * start:hop * (stop - 1) + field]
        for index, layer in enumerate(layers):
            if index == 0 and moments is not None:
                x = layer.activation(_apply_group_norm(layer.conv(x), norm, *moments))
            else:
                x = layer(x)
        out[:, :, start:stop] = x
    return out


# --------------------------------------------------------------------------- helpers
def _build_wav2vec2(settings: dict) -> Wav2Vec2Model:
    """A randomly initialised ``Wav2Vec2Model`` from a config dict (weights are loaded later)."""
    return Wav2Vec2Model(Wav2Vec2Config(**settings))


def _as_model_input(audio: Tensor, module: nn.Module) -> Tensor:
    """Move ``audio`` to the module's device and floating dtype (devices are chosen at run time)."""
    param = next(module.parameters())
    return audio.to(device=param.device, dtype=param.dtype)


#: Where the encoder-layer hooks put their outputs: one list per thread, set only while that
#: thread runs :func:`_record_layer_outputs`.
_LAYER_SINK = threading.local()
_HOOK_LOCK = threading.Lock()


def _layer_output_hook(_module: nn.Module, _inputs: object, output: Tensor | tuple[Tensor, ...]) -> None:
    sink = getattr(_LAYER_SINK, "outputs", None)
    if sink is not None:
        sink.append(output[0] if isinstance(output, tuple) else output)


@contextlib.contextmanager
def _record_layer_outputs(layers: Sequence[nn.Module]) -> Iterator[list[Tensor]]:
    """Collect each encoder layer's output during one forward pass of this thread.

    transformers 4.x layers return a tuple ``(hidden_states, ...)``, 5.x a tensor; both are handled.
    The layers are shared by every thread that uses the model (app sessions, streams, calls),
    so the hooks are registered once, permanently (adding and removing hooks per call would
    mutate a hook table that another thread's forward pass may be iterating), and write into a
    thread-local list: each thread records only its own pass.
    """
    with _HOOK_LOCK:
        for layer in layers:
            if not getattr(layer, "_float_records_outputs", False):
                layer.register_forward_hook(_layer_output_hook)
                layer._float_records_outputs = True
    outputs: list[Tensor] = []
    previous = getattr(_LAYER_SINK, "outputs", None)
    _LAYER_SINK.outputs = outputs
    try:
        yield outputs
    finally:
        _LAYER_SINK.outputs = previous


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
        #: Conv frames per chunk of the feature extractor (:func:`chunked_conv_features`).
        self.conv_chunk_frames = CONV_CHUNK_FRAMES
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
        conv_features = chunked_conv_features(self.wav2vec2.feature_extractor, padded,
                                              self.conv_chunk_frames).transpose(1, 2)  # (B, N, 512)
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
        #: Conv frames per chunk of the feature extractor (:func:`chunked_conv_features`).
        self.conv_chunk_frames = CONV_CHUNK_FRAMES

    def _last_hidden_state(self, audio: Tensor) -> Tensor:
        """``self.wav2vec2(audio).last_hidden_state``, with the conv features computed in chunks.

        In eval mode without an attention mask, ``Wav2Vec2Model.forward`` is: feature extractor ->
        transpose -> feature projection -> SpecAugment masking (a no-op outside training) ->
        encoder -> adapter (if configured); the same calls are made here, only the first through
        :func:`chunked_conv_features`. In training mode the masking is live, so the model's own
        forward runs instead (whole clip).
        """
        w2v = self.wav2vec2
        if self.training:
            return w2v(audio).last_hidden_state
        features = chunked_conv_features(w2v.feature_extractor, audio, self.conv_chunk_frames)
        hidden_states, _ = w2v.feature_projection(features.transpose(1, 2))
        hidden_states = w2v.encoder(hidden_states).last_hidden_state
        return hidden_states if w2v.adapter is None else w2v.adapter(hidden_states)

    def forward(self, audio: Tensor) -> tuple[Tensor, Tensor]:
        """(last_hidden_state (B, N, H), logits (B, num_labels)) for a (B, S) waveform."""
        last_hidden_state = self._last_hidden_state(audio)
        return last_hidden_state, self.classifier(last_hidden_state.mean(dim=1))


class EmotionEncoder(nn.Module):
    """Speech-driven emotion probabilities w_e (paper Sec. 4.2, "Speech-driven Emotional Labels").

    Child ``wav2vec2_for_emotion`` (:class:`SpeechEmotionClassifier`, xlsr-53 large officially).
    The model sees the whole normalised clip once, unpadded (as in the reference implementation).
    Labels are in :data:`~float_core.config.EMOTIONS` order.
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
