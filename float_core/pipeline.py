"""FLOAT inference pipeline: portrait + speech -> motion latents -> frames -> video.

Data flows one way: ``prepare`` (image and audio analysis, cached by callers)
-> ``sample_motion`` (flow matching in the motion latent space, paper Sec. 4.2) ->
``render`` (motion auto-encoder decoder, Sec. 4.1, optionally with lambda edits) -> video.
Every step is a function of its inputs and settings; the pipeline object holds only the
read-only networks, so one instance can serve many app sessions at once.
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import numpy as np
import torch
from torch import Tensor

from . import sampling as sampling_mod
from .config import DEFAULT_DRIVE_GROUPS, DEFAULT_DUB_GROUPS, FloatConfig, SamplingConfig, canonical_preset
from .editing import apply_lambda_offsets, as_lambda_offsets, lambda_to_motion, motion_to_lambda
from .emotion import resolve_emotion
from .inputs import (AudioInput, DrivingAudio, EmotionInput, ImageInput, Prepared, SourceImage, validate_motion,
                     validate_waveform)
from .models.conditions import normalize_audio
from .models.decoder_inference import InferenceDecoder
from .models.float_model import FloatModel
from .precision import Precision, auto_reason, autocast, native_bf16, native_fp16, select_device, select_dtype
from .progress import ProgressLike, as_progress

if TYPE_CHECKING:
    from .conversation import ConversationResult, Script
    from .directions import DirectionInfo
    from .streaming import StreamIterator
    from .video_in import VideoInput, VideoMotion

__all__ = ["FloatPipeline", "GenerationResult", "frames_to_uint8", "uint8_frames"]

#: Environment variable that makes ``from_pretrained`` build a tiny random model (tests, app test mode).
TEST_MODEL_ENV = "FLOAT_TEST_MODEL"
TEST_MODEL_NAME = "tiny-random"
#: Shortest waveform the emotion classifier accepts (wav2vec2's convolutional receptive field).
MIN_EMOTION_SAMPLES = 400


# ---------------------------------------------------------------------------- helpers
def uint8_frames(frames: Tensor) -> Tensor:
    """(K,3,H,W) images in [-1,1] -> (K,H,W,3) uint8 on their device, by truncation as the
    reference writes video bytes (converted before the host copy: 4x fewer bytes to move).
    The one float-to-uint8 rule of every frame the engine delivers."""
    x = ((frames.clamp(-1, 1) + 1) / 2 * 255).to(torch.uint8)  # .to(uint8) truncates like the reference
    return x.permute(0, 2, 3, 1).contiguous()


def frames_to_uint8(frames: Tensor) -> np.ndarray:
    """:func:`uint8_frames` copied explicitly to the host as a numpy array."""
    return uint8_frames(frames).cpu().numpy()


@dataclass
class GenerationResult:
    """What :meth:`FloatPipeline.generate` produced."""

    path: Path
    num_frames: int
    seconds: float  #: duration of the video
    wall_seconds: float  #: time taken
    timings: dict[str, float] = field(default_factory=dict)
    emotion: Tensor | None = None  #: the emotion used: (7,), or (W, 7) per window for "dynamic"
    motion: Tensor | None = None  #: sampled motion latents (T, d)
    message: str | None = None
    sampling: SamplingConfig | None = None  #: the settings used
    speaking: np.ndarray | None = None  #: with ``idle``: bool (T,), the frames voice activity marks speech

    @property
    def fps(self) -> float:
        """Rendered frames per wall-clock second."""
        return self.num_frames / max(self.wall_seconds, 1e-9)

    def summary(self) -> str:
        return (f"{self.path}: {self.num_frames} frames, {self.seconds:.2f} s of video in "
                f"{self.wall_seconds:.1f} s ({self.fps:.2f} frames/s)")


# ---------------------------------------------------------------------------- pipeline
class FloatPipeline:
    """The FLOAT engine. Holds read-only networks; all per-request state lives in :class:`Prepared`.

    Build with :meth:`from_pretrained`. ``dtype`` selects the compute precision ("auto" by
    default, see :func:`select_dtype`); :attr:`precision` says which stage runs in which dtype
    (:class:`~float_core.precision.Precision`: bfloat16 runs the decoder low and the FMT and
    wav2vec2 encoders float32, float16 every stage; ``precision=`` sets another mix).
    :attr:`device`, :attr:`dtype` and :meth:`describe` say what runs.
    """

    def __init__(self, model: FloatModel, device: str | torch.device | None = None,
                 dtype: str | torch.dtype | None = None, cuda_graphs: bool = False, *,
                 precision: Precision | None = None):
        self.device = select_device(device)
        if cuda_graphs and self.device.type != "cuda":
            raise ValueError(f"cuda_graphs=True needs a CUDA device, got {self.device}")
        #: replay each sampler's FMT field from a CUDA graph (float_core.cuda_graphs); opt-in
        #: until benchmarks/gpu_check.py has measured it on a GPU
        self.cuda_graphs = cuda_graphs
        if precision is not None and dtype is not None:
            raise ValueError("give dtype or precision, not both (precision sets every stage's dtype)")
        #: the pipeline dtype (the decoder's): what select_dtype chose, or precision.decoder
        self.dtype = select_dtype(dtype, self.device) if precision is None else precision.decoder
        #: per-stage compute dtypes (float_core.precision)
        self.precision = Precision.for_dtype(self.dtype) if precision is None else precision
        #: how the dtype was chosen, for :meth:`describe` ("auto" or the requested name)
        self.dtype_request = ("auto" if precision is None and (dtype is None or str(dtype).lower() == "auto")
                              else str(dtype))
        self.model = model.eval().requires_grad_(False).to(self.device)
        self.config: FloatConfig = model.config
        # CUDA batches every level over the frames of a call (batched decoding); the CPU goes
        # frame by frame above the decoder's cheap levels (BATCH_MAX_FRAME_MACS): as fast a
        # render there, and a preview that decodes one frame, not its whole batch.
        batching = {"batch_max_resolution": self.config.image_size} if self.device.type == "cuda" else {}
        self.decoder = InferenceDecoder(self.model.motion_autoencoder.dec, dtype=self.precision.decoder, **batching)
        with torch.no_grad():
            self.basis = self.model.motion_autoencoder.basis().detach()  # (d, M), fixed after loading

    def describe(self) -> str:
        """Which device and precisions run, for the app and CLI, e.g.
        ``"cpu, float32 (auto: no native bf16 on cpu)"`` or
        ``"cuda, bfloat16 decoder, float32 FMT and encoders (auto: native bf16 on cuda)"``."""
        text = f"{self.device}, {self.precision.describe()}"
        if self.dtype_request != "auto":
            stages = {self.precision.decoder, self.precision.fmt, self.precision.encoders}
            native = {torch.bfloat16: native_bf16, torch.float16: native_fp16}
            if any(d in native and not native[d](self.device) for d in stages):
                text += f" (emulated on this {self.device.type}: slower than float32)"
            return text
        return f"{text} (auto: {auto_reason(self.device)})"

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_pretrained(
        cls,
        checkpoint: str | os.PathLike[str] | None = None,
        audio_model: str | os.PathLike[str] | None = None,
        emotion_model: str | os.PathLike[str] | None = None,
        *,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        cuda_graphs: bool = False,
    ) -> "FloatPipeline":
        """Load the released weights.

        Args:
            checkpoint: a folder in the authors' layout (``float.pth``, ``wav2vec2-base-960h/``,
                ``wav2vec-english-speech-emotion-recognition/``), a single ``.pth``/``.safetensors``
                file (a ``float_config.json`` beside it, as training writes, selects a non-official
                model size), or None for ``$FLOAT_CHECKPOINT_DIR`` or ``./checkpoints``. The name
                ``"tiny-random"`` (or ``FLOAT_TEST_MODEL=tiny-random`` in the environment) builds
                a tiny random model with no files, for tests.
            audio_model, emotion_model: local folders or Hugging Face ids of the two wav2vec2
                models when they are not inside ``checkpoint``.
            device: "auto" (default: CUDA if available), "cpu", "cuda", ...
            dtype: precision: "auto" (default: bfloat16 where the device has native
                bf16, else float32, see :func:`select_dtype`), "float32" (reference numbers),
                "bfloat16" (the decoder; :mod:`float_core.precision`) or "float16" (every stage).
            cuda_graphs: replay the FMT's vector field from CUDA graphs (CUDA only; opt-in,
                :mod:`float_core.cuda_graphs`).
        """
        if str(checkpoint) == TEST_MODEL_NAME or (
                checkpoint is None and os.environ.get(TEST_MODEL_ENV, "") == TEST_MODEL_NAME):
            return cls.tiny_random(device=device, dtype=dtype, cuda_graphs=cuda_graphs)
        if checkpoint is None and os.environ.get(TEST_MODEL_ENV):
            raise ValueError(f"{TEST_MODEL_ENV}: the only test model is {TEST_MODEL_NAME!r}, "
                             f"got {os.environ[TEST_MODEL_ENV]!r}")
        from .weights import load_model, resolve_sources

        sources = resolve_sources(checkpoint, audio_model, emotion_model)
        # Trained models of other sizes carry a float_config.json next to the weights.
        config = FloatConfig.for_checkpoint(sources.checkpoint)
        model = load_model(config, sources, device="cpu")
        return cls(model, device=device, dtype=dtype, cuda_graphs=cuda_graphs)

    def save_pretrained(self, folder: str | os.PathLike[str], safetensors: bool = True) -> Path:
        """Write the model so that :meth:`from_pretrained` ``(folder)`` loads it back unchanged.

        One file with every tensor in the released checkpoint's key names (``float.safetensors``,
        or ``float.pth`` with ``safetensors=False``), the two wav2vec2 encoders included, plus
        ``float_config.json`` for a non-official size (e.g. a model trained at another size).
        Written atomically; a folder that already holds the other format's file is refused
        (``from_pretrained`` would not know which one to read). Returns the weights file.
        """
        from .weights import FLOAT_CHECKPOINT_NAME, save_weights

        folder = Path(folder)
        if folder.exists() and not folder.is_dir():
            raise ValueError(f"save_pretrained: {folder} is a file; give a folder")
        name = "float.safetensors" if safetensors else FLOAT_CHECKPOINT_NAME
        other = folder / (FLOAT_CHECKPOINT_NAME if safetensors else "float.safetensors")
        if other.exists():
            raise ValueError(f"save_pretrained: {folder} already holds {other.name}; save to another folder "
                             f"or remove it first")
        return save_weights(self.model.state_dict(), self.config, folder / name)

    @classmethod
    def tiny_random(cls, seed: int = 0, device: str | torch.device | None = None,
                    dtype: str | torch.dtype | None = None, cuda_graphs: bool = False) -> "FloatPipeline":
        """A tiny model (``FloatConfig.tiny()``) with seeded random weights and no files.

        Like the reference fixtures, every parameter gets small noise on top of its
        initialisation so that no constant-initialised term (zero biases, unit LayerNorm
        gains, zero-initialised output layers) vanishes and every input matters.
        """
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = FloatModel(FloatConfig.tiny())
            with torch.no_grad():
                for p in model.parameters():
                    p.add_(torch.randn_like(p) * (0.1 if p.ndim <= 1 else 0.02))
        return cls(model, device=device, dtype=dtype, cuda_graphs=cuda_graphs)

    # ------------------------------------------------------------------ analysis
    @torch.no_grad()
    def prepare_image(self, image: ImageInput, crop: bool = True, *, face: int = 0,
                      crop_scale: float | None = None) -> SourceImage:
        """Decode, (optionally) face-crop and encode a portrait (paper Eq. 8).

        Args:
            image: a file path or an RGB uint8 array (H, W, 3).
            crop: detect the faces and crop around one with the reference rule; when
                False the whole image is resized to the model's input size.
            face: which detected face, 0 = the largest (ordered by area).
            crop_scale: crop side in units of the face box (None: the reference's 1.6,
                :data:`float_core.media.face.CROP_SCALE`).
        """
        from .media.face import CROP_SCALE, crop_portrait
        from .media.image import load_image

        photo = load_image(image)
        result = crop_portrait(photo, crop=crop, size=self.config.image_size, face=face,
                               scale=CROP_SCALE if crop_scale is None else crop_scale)
        return self.encode_crop(result.image, crop_box=result.box, original=photo if crop else None,
                                message=result.message)

    @torch.no_grad()
    def encode_crop(self, crop: np.ndarray, *, crop_box: Any = None, original: np.ndarray | None = None,
                    message: str | None = None) -> SourceImage:
        """Encode one model-size face crop (S, S, 3) uint8 RGB (paper Eq. 8): identity latent,
        lambda, motion and feature pyramid.

        The one encoder path: :meth:`prepare_image` (a portrait) and :meth:`encode_motion` (every
        frame of a video) both go through it, so a video frame and the same image given as a
        portrait get the same motion latent bit for bit. ``crop_box``, ``original`` and
        ``message`` are stored as they are (see :class:`~float_core.inputs.SourceImage`).
        """
        size = self.config.image_size
        if not isinstance(crop, np.ndarray) or crop.shape != (size, size, 3) or crop.dtype != np.uint8:
            got = f"{crop.shape} {crop.dtype}" if isinstance(crop, np.ndarray) else type(crop).__name__
            raise ValueError(f"crop: expected a ({size}, {size}, 3) uint8 RGB array (the model's input size), "
                             f"got {got}")
        x = torch.tensor(crop, device=self.device)  # a copy: the crop may be read-only
        x = x.permute(2, 0, 1)[None].float() / 127.5 - 1.0
        identity, lam, feats = self.model.motion_autoencoder.encode(x)
        return SourceImage(
            image=x, crop_box=crop_box, original=original,
            identity_latent=identity[0], source_lambda=lam[0],
            source_motion=lambda_to_motion(lam[0], self.basis), features=tuple(feats),
            message=message,
        )

    @torch.no_grad()
    def prepare_audio(self, audio: AudioInput, *, max_seconds: float | None = None) -> DrivingAudio:
        """Decode speech and compute wav2vec2 features and speech-emotion probabilities.

        Args:
            audio: a file path (any format ffmpeg reads) or a float32 16 kHz mono array.
            max_seconds: reject longer audio with a clear message (None: no limit).
        """
        from .media.audio import load_audio

        if isinstance(audio, np.ndarray) or torch.is_tensor(audio):
            wave = validate_waveform(audio)
            if max_seconds is not None and wave.shape[0] > max_seconds * self.config.sample_rate:
                raise ValueError(f"audio: {wave.shape[0] / self.config.sample_rate:.1f} s is longer "
                                 f"than the limit of {max_seconds:g} s; trim it or raise max_seconds")
        else:
            wave = load_audio(audio, target_rate=self.config.sample_rate, max_seconds=max_seconds)
        # normalize_audio only reads its input: share the samples with torch instead of copying
        # them (10 minutes at 16 kHz: 38 MB); read-only or strided arrays, which torch cannot
        # share, are copied.
        shareable = wave.flags.writeable and wave.flags.c_contiguous
        samples = torch.from_numpy(wave if shareable else np.array(wave))
        x = normalize_audio(samples.to(self.device)[None])
        return DrivingAudio(waveform=wave, audio_features=self.encode_audio(x)[0],
                            emotion_probs=self.classify_emotion(x)[0])

    @torch.no_grad()
    def encode_audio(self, normalized: Tensor) -> Tensor:
        """wav2vec2 audio features w_a (B, T, dim_a) float32 of normalised 16 kHz speech (B, S)
        (:func:`~float_core.models.conditions.normalize_audio`), in :attr:`precision` ``.encoders``."""
        with autocast(self.device, self.precision.encoders):
            return self.model.audio_encoder(normalized).float()

    @torch.no_grad()
    def classify_emotion(self, normalized: Tensor) -> Tensor:
        """Speech-emotion probabilities (B, 7) float32 of normalised 16 kHz speech (B, S), in
        :attr:`precision` ``.encoders``."""
        with autocast(self.device, self.precision.encoders):
            return self.model.emotion_encoder(normalized).float()

    def prepare(self, image: ImageInput, audio: AudioInput, crop: bool = True, *,
                max_seconds: float | None = None) -> Prepared:
        """Analyse a portrait and a speech clip once; the result feeds sampling and rendering."""
        return Prepared(self.prepare_image(image, crop=crop),
                        self.prepare_audio(audio, max_seconds=max_seconds))

    # ------------------------------------------------------------------ emotion
    @torch.no_grad()
    def emotion_of(self, waveform: np.ndarray) -> Tensor:
        """Speech-emotion probabilities (7,) of one 16 kHz mono segment, on the device.

        The segment is normalised on its own (zero mean, unit variance) and classified by the
        emotion encoder, as :meth:`prepare_audio` does for a whole clip.
        """
        wave = validate_waveform(waveform)
        if wave.shape[0] < MIN_EMOTION_SAMPLES:
            raise ValueError(f"audio: the emotion classifier needs at least {MIN_EMOTION_SAMPLES} samples "
                             f"({MIN_EMOTION_SAMPLES / self.config.sample_rate * 1000:.0f} ms), got {wave.shape[0]}")
        samples = torch.from_numpy(np.ascontiguousarray(wave)).to(self.device)  # explicit host -> device
        return self.classify_emotion(normalize_audio(samples[None]))[0]

    def emotion_timeline(self, speech: DrivingAudio | Prepared, progress: ProgressLike = None) -> Tensor:
        """Per-window speech-emotion probabilities (W, 7) on the device, W = ceil(T / L).

        Window k (frames [kL, (k+1)L), official 2 s) is classified from its own speech plus
        context (:func:`float_core.emotion.window_spans`: 0.5 s on both sides, at least 1 s)
        with :meth:`emotion_of`. ``SamplingConfig(emotion="dynamic")`` samples window k with
        row k. Returns ``speech.emotion_windows`` when already computed. ``progress`` is
        reported as ``("emotion", windows_done, W)``.
        """
        from .emotion import window_spans

        speech = speech.speech if isinstance(speech, Prepared) else speech
        if speech.emotion_windows is not None:
            return speech.emotion_windows
        cfg = self.config
        spans = window_spans(speech.waveform.shape[0], speech.num_frames, cfg.num_frames,
                             cfg.samples_per_frame, cfg.sample_rate)
        report = as_progress(progress)
        rows = []
        for a, b in spans:
            rows.append(self.emotion_of(speech.waveform[a:b]))
            report("emotion", len(rows), len(spans))
        return torch.stack(rows)

    def with_emotion_timeline(self, prepared: Prepared | DrivingAudio,
                              progress: ProgressLike = None) -> Prepared | DrivingAudio:
        """A copy whose speech carries its :meth:`emotion_timeline` (computed once, reused)."""
        speech = prepared.speech if isinstance(prepared, Prepared) else prepared
        if speech.emotion_windows is None:
            speech = dataclasses.replace(speech, emotion_windows=self.emotion_timeline(speech, progress))
        return dataclasses.replace(prepared, speech=speech) if isinstance(prepared, Prepared) else speech

    # ------------------------------------------------------------------ sampling
    def resolve_emotion(self, prepared: Prepared | DrivingAudio, emotion: EmotionInput = None) -> Tensor:
        """The emotion w_e used for sampling: (7,), or (W, 7) per window for ``"dynamic"``.

        ``None`` or ``"auto"``: the speech-emotion probabilities; one of :data:`EMOTIONS`:
        redirection to that emotion as a one-hot vector (paper Sec. 4.2); 7 numbers: a
        given probability vector (non-negative, normalised to sum 1); ``"dynamic"``: the
        :meth:`emotion_timeline` (computed here unless the speech already carries it, see
        :meth:`with_emotion_timeline`).
        """
        speech = prepared.speech if isinstance(prepared, Prepared) else prepared
        dynamic = isinstance(emotion, str) and emotion.lower() == "dynamic"
        return resolve_emotion(speech.emotion_probs, emotion, self.emotion_timeline(speech) if dynamic else None)

    def iter_motion(self, prepared: Prepared, sampling: SamplingConfig | None = None, *,
                    noise: Tensor | None = None, progress: ProgressLike = None,
                    chunk: sampling_mod.ChunkSchedule | None = None, **overrides: Any) -> Iterator[Tensor]:
        """Yield motion latents (n_k, d) window by window, as soon as each is solved.

        See :meth:`sample_motion` for the arguments.
        """
        cfg = (sampling or SamplingConfig()).with_overrides(**overrides)
        we = self.resolve_emotion(prepared, cfg.emotion)  # (7,) or (W, 7): we[None] is per window
        for window in sampling_mod.iter_motion_windows(
            self.model.fmt, prepared.audio_features[None], prepared.source_motion[None], we[None],
            a_cfg=cfg.a_cfg, e_cfg=cfg.e_cfg, nfe=cfg.nfe, solver=cfg.solver, seed=cfg.seed,
            noise=None if noise is None else torch.as_tensor(noise).to(self.device),
            progress=as_progress(progress), dtype=self.precision.fmt, cuda_graphs=self.cuda_graphs, chunk=chunk,
        ):
            yield window[0]

    def sample_motion(self, prepared: Prepared, sampling: SamplingConfig | None = None, *,
                      noise: Tensor | None = None, progress: ProgressLike = None,
                      chunk: sampling_mod.ChunkSchedule | None = None, **overrides: Any) -> Tensor:
        """Generate the motion latents w_{r->D} (T, d) for the whole clip (paper Sec. 4.2).

        Args:
            sampling: a :class:`~float_core.config.SamplingConfig` (default: its defaults,
                a_cfg 2, e_cfg 1, nfe 10, euler, emotion from the speech, random seed).
            noise: explicit noise (windows, 1, L, d), e.g. to compare with the reference.
            progress: ``True`` (tqdm), ``None`` or a ``progress(stage, done, total)`` callback
                (:mod:`float_core.progress`), called with stage "sampling" after every
                vector-field evaluation.
            chunk: sample with a live :class:`~float_core.sampling.ChunkSchedule` (k frames
                per pass) instead of whole windows, from the whole clip's features (to measure
                the live schedule alone; streams of live speech use it by default).
            overrides: fields of ``SamplingConfig`` to change, e.g. ``nfe=5, seed=0,
                emotion="happy"``: a_cfg / e_cfg (guidance scales gamma_a, gamma_e of Eq. 13;
                both 1 means one conditional evaluation per step), nfe (evaluations per window;
                the reference's ``nfe = n`` is ``nfe = n - 1`` with Euler), solver ("euler",
                "midpoint", "rk4"), emotion (None/"auto", "dynamic", a name, or 7
                probabilities), seed (None: random).
        """
        with torch.no_grad():
            return torch.cat(list(self.iter_motion(prepared, sampling, noise=noise, progress=progress,
                                                   chunk=chunk, **overrides)), dim=0)

    # ------------------------------------------------------------------ directions
    def describe_directions(self, source: SourceImage | Prepared, *, landmarks: np.ndarray | None = None,
                            step: float | None = None, batch_size: int = 8,
                            progress: ProgressLike = None) -> list["DirectionInfo"]:
        """What each motion direction moves in this portrait: M :class:`~float_core.directions.DirectionInfo`.

        Decodes the source's own motion and +/- ``step`` along every direction (2M + 1 frames)
        and splits each change into head (global affine motion), mouth, eyes and other
        (:mod:`float_core.directions`). A pure function of the portrait: cache it per source.

        Args:
            landmarks: 68-point landmarks (68, 2) of the aligned crop in crop pixels, for
                component boxes; None: the fixed boxes of the aligned crop.
            step: probe step in lambda units (None: :data:`float_core.directions.DEFAULT_STEP`).
            batch_size: frames per decoder call.
            progress: reported as ``("directions", frames_done, 2M + 1)``.
        """
        from .directions import DEFAULT_STEP, measure_directions

        source = source.source if isinstance(source, Prepared) else source
        return measure_directions(lambda motion: self.decode_frames(source, motion), source.source_motion,
                                  self.basis, landmarks=landmarks, step=DEFAULT_STEP if step is None else step,
                                  batch_size=batch_size, progress=progress)

    # ------------------------------------------------------------------ rendering
    def motion_lambda(self, motion: Tensor) -> Tensor:
        """lambda coefficients (T, M) of motion latents (T, d) in the orthonormal basis (for plots)."""
        return motion_to_lambda(motion, self.basis.to(motion))

    @torch.no_grad()
    def decode_frames(self, prepared: Prepared | SourceImage, motion: Tensor) -> Tensor:
        """Decode motion latents (K, d) to float images (K, 3, H, W) in about [-1, 1], unclamped.

        Frame k is dec(w_{S->r} + motion[k]) with the source feature pyramid (paper Fig. 2).
        """
        return self._decode(prepared, validate_motion(motion, self.config.style_dim))

    def _decode(self, prepared: Prepared | SourceImage, motion: Tensor, keep: int | None = None) -> Tensor:
        """:meth:`decode_frames` of already validated motion (no device sync: render's loop)."""
        source = prepared.source if isinstance(prepared, Prepared) else prepared
        latents = source.identity_latent[None] + motion.to(source.identity_latent)
        return self.decoder(latents, list(source.features), keep=keep)

    def _render_batch(self, prepared: Prepared | SourceImage, motion: Tensor, offsets: Tensor | None,
                      start: int, batch_size: int, keep: int | None = None) -> Tensor:
        """uint8 frames (k, H, W, 3) on the device of the render batch starting at ``start``
        (only its frame ``keep`` when given), the one batch rule of :meth:`render` and
        :meth:`preview_frame`."""
        chunk = motion[start:start + batch_size]
        delta = offsets if offsets is None or offsets.ndim == 1 else offsets[start:start + batch_size]
        return uint8_frames(self._decode(prepared, apply_lambda_offsets(chunk, self.basis, delta), keep=keep))

    @torch.no_grad()
    def preview_frame(self, prepared: Prepared | SourceImage, motion: Tensor, index: int,
                      edits: Tensor | Sequence[float] | None = None, batch_size: int = 8) -> np.ndarray:
        """Frame ``index`` (H, W, 3) uint8 exactly as :meth:`render` with the same ``edits`` and
        ``batch_size`` delivers it, bit for bit in every precision, decoding only what that
        frame needs (its batch's low levels, then the frame alone; see
        :class:`~float_core.models.decoder_inference.InferenceDecoder`)."""
        motion = validate_motion(motion, self.config.style_dim)
        total = int(motion.shape[0])
        if not 0 <= index < total:
            raise ValueError(f"index: the motion has frames 0..{total - 1}, got {index}")
        if batch_size < 1:
            raise ValueError(f"batch_size: must be >= 1, got {batch_size}")
        offsets = as_lambda_offsets(edits, self.config.motion_dim, total)
        start = index // batch_size * batch_size
        return self._render_batch(prepared, motion, offsets, start, batch_size, keep=index - start).cpu().numpy()[0]

    def render(self, prepared: Prepared | SourceImage, motion: Tensor,
               edits: Tensor | Sequence[float] | None = None, batch_size: int = 8,
               progress: ProgressLike = None) -> Iterator[np.ndarray]:
        """Yield uint8 frames (k, H, W, 3) in batches of ``batch_size``.

        Args:
            edits: lambda offsets, (M,) for every frame or (T, M) per frame, added in the
                orthonormal motion basis (see :mod:`float_core.editing`).

        Only one batch of decoded frames exists at a time, so memory does not grow with length.
        The motion is validated once (one device sync), never per batch. On CUDA one batch is
        kept in flight: batch k+1 is queued for decoding and batch k's copy to pinned host
        memory (:class:`~float_core.transfer.HostCopies`) is under way before batch k is
        yielded, so the GPU works while the caller encodes; elsewhere each batch is yielded as
        soon as it is decoded (the CPU path is unchanged).
        """
        from .transfer import HostCopies

        if batch_size < 1:
            raise ValueError(f"batch_size: must be >= 1, got {batch_size}")
        motion = validate_motion(motion, self.config.style_dim)
        offsets = as_lambda_offsets(edits, self.config.motion_dim, motion.shape[0])
        report = as_progress(progress)
        total = int(motion.shape[0])
        copies = HostCopies(self.device)
        in_flight = 1 if copies.asynchronous else 0
        pending: list[tuple[Any, int]] = []
        for start in range(0, total, batch_size):
            frames = self._render_batch(prepared, motion, offsets, start, batch_size)
            pending.append((copies.start(frames), start + frames.shape[0]))
            while len(pending) > in_flight or (pending and pending[-1][1] == total):
                copy, done = pending.pop(0)
                yield copy.result()
                report("decoding", done, total)

    def stream(
        self, source: SourceImage | ImageInput, audio: Any, sampling: SamplingConfig | None = None, *,
        a_cfg: float | None = None, e_cfg: float | None = None, nfe: int | None = None,
        solver: str | None = None, emotion: EmotionInput = None, seed: int | None = None,
        idle: bool = True, **options: Any,
    ) -> "StreamIterator":
        """Stream frames while the speech is generated or still arriving (:mod:`float_core.streaming`).

        Args:
            source: a :class:`SourceImage` from :meth:`prepare_image`, or an image path/array
                (prepared here, with ``crop``).
            audio: a path, a float32 16 kHz mono array or a :class:`DrivingAudio` (the whole
                speech is known: conditions exactly as offline), or any iterable of float32
                16 kHz mono chunks of any length (live; ``(samples, rate)`` tuples are
                resampled; ``None`` items are keep-alives), ending when the iterable ends.
            sampling, a_cfg, e_cfg, nfe, solver, emotion, seed: as in :meth:`sample_motion`
                (defaults a_cfg 2, e_cfg 1, nfe 10, "euler", emotion from the speech: for a
                live source re-estimated per window, random seed).
            idle: silence mode: silent frames (voice activity) use the null audio condition and
                a stalled live source is padded with idle frames; False: as offline.
            options: fields of :class:`~float_core.streaming.StreamOptions` (crop, batch_size,
                context_seconds, lookahead_seconds, stall_timeout, max_buffer_seconds, ...).

        Returns:
            A :class:`~float_core.streaming.StreamIterator` of
            :class:`~float_core.streaming.StreamChunk` (frames, their audio, start_frame,
            speaking flags, timings); its ``close()`` (from any thread) stops all work.
        """
        from .streaming import StreamOptions, stream

        cfg = (sampling or SamplingConfig()).with_overrides(a_cfg=a_cfg, e_cfg=e_cfg, nfe=nfe, solver=solver,
                                                            emotion=emotion, seed=seed)
        return stream(self, source, audio, cfg, StreamOptions(idle=idle, **options))

    def generate(
        self, image: ImageInput, audio: AudioInput, out_path: str | os.PathLike[str],
        sampling: SamplingConfig | None = None, *, crop: bool = True, paste_back: bool = False,
        edits: Tensor | Sequence[float] | None = None, batch_size: int = 8,
        max_seconds: float | None = None, progress: ProgressLike = True,
        prepared: Prepared | None = None, face: int = 0, crop_scale: float | None = None,
        preset: str | None = None, idle: bool = False, drive: "VideoInput | VideoMotion | None" = None,
        drive_groups: str | Sequence[str] = DEFAULT_DRIVE_GROUPS, directions: Sequence["DirectionInfo"] | None = None,
        **overrides: Any,
    ) -> GenerationResult:
        """The whole path: portrait + speech -> MP4 (H.264 + AAC) at ``out_path``.

        ``sampling`` and ``overrides`` are as in :meth:`sample_motion`. The video is written to
        a temporary file and moved into place only when complete. ``paste_back`` puts the
        generated face back into the original photo (needs ``crop``). ``face`` and
        ``crop_scale`` are as in :meth:`prepare_image`. Pass ``prepared`` to reuse an earlier
        analysis of the same inputs. ``preset`` (one of
        :data:`~float_core.config.PRESET_NAMES`, e.g. "lips only") applies that motion preset
        on top of ``edits`` (:func:`~float_core.directions.preset_offsets`, with the portrait's
        :meth:`describe_directions`: 2M + 1 extra frames decoded). ``idle``: silence mode, as
        :meth:`stream`'s (frames that voice activity marks silent get the null audio condition,
        :func:`float_core.vad.silence_mode`; the flags are the result's ``speaking``).

        ``drive``: a video (or its :meth:`analyse_video`) whose face gives the coefficients of the
        directions in the groups ``drive_groups`` (names of :data:`~float_core.directions.GROUPS`,
        e.g. ``("head",)``: the lips from the speech, the head from the video), relative to its first frame
        (:mod:`float_core.video_in`); played back and forth when shorter than the speech, cut
        when longer. Sampling is unchanged (the speech motion is the same as without ``drive``
        for the same seed); the groups are the portrait's :meth:`describe_directions`
        (``directions`` reuses an earlier result). ``crop`` applies to the video's frames too.
        """
        if paste_back and not crop:
            raise ValueError("paste_back: needs crop=True (the crop box says where the face goes)")
        preset = canonical_preset(preset)
        if drive is not None:
            from .video_in import parse_groups

            drive_groups = parse_groups(drive_groups)  # a bad name fails before any work
        cfg = (sampling or SamplingConfig()).with_overrides(**overrides)
        report = as_progress(progress)
        start = time.perf_counter()
        timings: dict[str, float] = {}
        if prepared is None:
            t0 = time.perf_counter()
            source = self.prepare_image(image, crop=crop, face=face, crop_scale=crop_scale)
            timings["image"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            speech = self.prepare_audio(audio, max_seconds=max_seconds)
            timings["audio"] = time.perf_counter() - t0
            prepared = Prepared(source, speech)
        t0 = time.perf_counter()
        if cfg.dynamic_emotion:  # computed once, used by the result and the sampler
            prepared = self.with_emotion_timeline(prepared)
        speaking = None
        if idle:
            from .vad import silence_mode

            speech, speaking = silence_mode(prepared.speech)
            prepared = Prepared(prepared.source, speech)
        emotion_vec = self.resolve_emotion(prepared, cfg.emotion)
        motion = self.sample_motion(prepared, cfg, progress=report)
        timings["sampling"] = time.perf_counter() - t0
        notes = [prepared.source.message]
        if drive is not None:
            from .video_in import group_note, transfer_groups

            t0 = time.perf_counter()
            video = self._video_motion(drive, crop=crop, crop_scale=crop_scale, progress=report)
            directions = directions or self.describe_directions(prepared, progress=report)
            motion = transfer_groups(motion, video, drive_groups, directions, self.basis,
                                     source_lambda=prepared.source_lambda)  # relative, as LIA
            timings["video"] = time.perf_counter() - t0
            notes += [video.message, group_note(directions, drive_groups)]
        if preset is not None:  # on top of the final motion, speech-sampled or driven
            from .directions import preset_offsets

            t0 = time.perf_counter()
            directions = directions or self.describe_directions(prepared, batch_size=batch_size)
            offsets = torch.from_numpy(preset_offsets(preset, self.motion_lambda(motion),
                                                      prepared.source.source_lambda, directions))
            edits = offsets if edits is None else offsets + torch.as_tensor(edits, dtype=torch.float32).cpu()
            timings["directions"] = time.perf_counter() - t0
        timings["render"] = self.render_video(out_path, prepared.source, motion, audio=prepared.speech.waveform,
                                              edits=edits, batch_size=batch_size, progress=report,
                                              paste_back=paste_back)
        return self._result(out_path, motion, start, timings, notes, emotion=emotion_vec, sampling=cfg,
                            speaking=speaking)

    # ------------------------------------------------------------------ video in
    def analyse_video(self, video: "VideoInput", *, crop: bool = True, face: int = 0,
                      crop_scale: float | None = None, reference_frame: int | str | None = None,
                      detect_every: int | None = None, progress: ProgressLike = None) -> "VideoMotion":
        """A video's face motion at 25 fps, its face track and what is needed to read its frames
        again (:func:`float_core.video_in.analyse_video`: two streaming passes, memory bounded
        by one frame). ``reference_frame``: also encode a reference frame (an index or
        ``"auto"``: the first frontal, sharp face) as a :class:`SourceImage`."""
        from .video_in import DETECT_EVERY, analyse_video

        return analyse_video(self, video, crop=crop, face=face, crop_scale=crop_scale, reference_frame=reference_frame,
                             detect_every=DETECT_EVERY if detect_every is None else detect_every, progress=progress)

    def encode_motion(self, video: "VideoInput", *, crop: bool = True, face: int = 0,
                      progress: ProgressLike = None, **options: Any) -> Tensor:
        """The per-frame motion latents (T, d) of a video's face at 25 fps (paper Eq. 1, the
        encoder LIA and FLOAT share).

        Frames are decoded and resampled to 25 fps by PyAV (variable frame rates and rotation
        metadata handled), the face is tracked and its box smoothed over time, and every crop
        goes through :meth:`encode_crop`, the portrait's encoder path. ``crop``: track and crop
        the face (False: the whole frame, for a video that is already a face crop); ``face``:
        which face, 0 = the largest; ``options``: ``crop_scale``, ``detect_every`` (see
        :meth:`analyse_video`). Raises a ValueError naming the problem for a file that is not a
        video, has no frames, or shows no face.
        """
        return self.analyse_video(video, crop=crop, face=face, progress=progress, **options).motion

    def drive(
        self, image: ImageInput | SourceImage, video: "VideoInput | VideoMotion", out_path: str | os.PathLike[str],
        *, relative: bool = True,
        crop: bool = True, face: int = 0, video_face: int = 0, crop_scale: float | None = None,
        paste_back: bool = False, edits: Tensor | Sequence[float] | None = None, batch_size: int = 8,
        progress: ProgressLike = True,
    ) -> GenerationResult:
        """Reenactment: animate the portrait with the video's face motion (LIA's transfer).

        With ``relative`` (default) frame t is the portrait's own motion plus (the video's
        motion at t minus at frame 0), so a still video leaves the portrait still; otherwise
        the video's motion itself (the portrait takes the video's pose). The MP4 has the
        video's length (at 25 fps) and its audio, if it has any. ``face`` picks the portrait's
        face, ``video_face`` the video's (0 = the largest); ``crop`` applies to both. ``edits``
        (lambda offsets, e.g. a preset or curves on :meth:`motion_lambda` of the result's
        motion) apply as in :meth:`generate`. ``image`` may be a :meth:`prepare_image` result
        and ``video`` an :meth:`analyse_video` result, to reuse earlier analyses.
        """
        from .video_in import drive_motion, video_audio

        if paste_back and not crop:
            raise ValueError("paste_back: needs crop=True (the crop box says where the face goes)")
        report = as_progress(progress)
        start = time.perf_counter()
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        source = image if isinstance(image, SourceImage) else self.prepare_image(image, crop=crop, face=face,
                                                                                   crop_scale=crop_scale)
        timings["image"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        motion_video = self._video_motion(video, crop=crop, face=video_face, crop_scale=crop_scale, progress=report)
        motion = drive_motion(source.source_motion, motion_video.motion, relative)
        sound = video_audio(motion_video.path, self.config.sample_rate, motion_video.num_frames)
        timings["video"] = time.perf_counter() - t0
        timings["render"] = self.render_video(out_path, source, motion, audio=sound, edits=edits,
                                              batch_size=batch_size, progress=report, paste_back=paste_back)
        return self._result(out_path, motion, start, timings, [source.message, motion_video.message])

    def dub(
        self, video: "VideoInput | VideoMotion", audio: AudioInput, out_path: str | os.PathLike[str],
        sampling: SamplingConfig | None = None, *, groups_from_video: str | Sequence[str] = DEFAULT_DUB_GROUPS,
        reference_frame: int | None = None, face: int = 0, crop_scale: float | None = None,
        edits: Tensor | Sequence[float] | None = None, directions: Sequence["DirectionInfo"] | None = None,
        batch_size: int = 8, max_seconds: float | None = None, progress: ProgressLike = True, **overrides: Any,
    ) -> GenerationResult:
        """Dubbing: the talking-head ``video`` with its lips following the new speech ``audio``.

        The identity comes from one frame of the video (``reference_frame``; default: the first
        with a frontal, sharp face). Each output frame takes the coefficients of the groups
        ``groups_from_video`` (default head, eyes and other: all but the mouth) from its video
        frame and the rest from motion sampled for the speech (``sampling``/``overrides`` as in
        :meth:`sample_motion`); the decoded face is pasted back into that video frame through its
        tracked crop square, feathered and colour matched, so pixels outside the square are the
        input frame's. The MP4 follows the speech's length (the video played back and forth when
        shorter, cut when longer), at the video's resolution, with the new audio. ``video`` may
        be an :meth:`analyse_video` result with a reference frame, to reuse it (its face, crop
        scale and reference are the analysis').
        """
        from .video_in import DubCompositor, group_note, parse_groups, ping_pong, transfer_groups

        groups = parse_groups(groups_from_video)
        cfg = (sampling or SamplingConfig()).with_overrides(**overrides)
        report = as_progress(progress)
        start = time.perf_counter()
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        motion_video = self._video_motion(video, face=face, crop_scale=crop_scale, progress=report,
                                          reference_frame="auto" if reference_frame is None else reference_frame)
        if motion_video.reference_source is None or motion_video.crop_boxes is None:
            raise ValueError("dub: the video analysis needs the face track and a reference frame "
                             "(analyse_video(video, reference_frame='auto'))")
        if reference_frame is not None and reference_frame != motion_video.reference:
            raise ValueError(f"reference_frame: the analysed video's reference is frame {motion_video.reference}; "
                             f"analyse it with reference_frame={reference_frame}")
        timings["video"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        prepared = Prepared(motion_video.reference_source, self.prepare_audio(audio, max_seconds=max_seconds))
        timings["audio"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        if cfg.dynamic_emotion:
            prepared = self.with_emotion_timeline(prepared)
        emotion_vec = self.resolve_emotion(prepared, cfg.emotion)
        speech_motion = self.sample_motion(prepared, cfg, progress=report)
        timings["sampling"] = time.perf_counter() - t0
        directions = directions or self.describe_directions(prepared, progress=report)
        motion = transfer_groups(speech_motion, motion_video, groups, directions, self.basis)  # each frame's own
        compositor = DubCompositor(motion_video, ping_pong(motion_video.num_frames, int(motion.shape[0])),
                                   self.config.image_size)
        timings["render"] = self.render_video(out_path, prepared.source, motion, audio=prepared.speech.waveform,
                                              edits=edits, batch_size=batch_size, progress=report,
                                              composite=compositor.frames)
        return self._result(out_path, motion, start, timings, [motion_video.message, group_note(directions, groups)],
                            emotion=emotion_vec, sampling=cfg)

    def render_video(self, out_path: str | os.PathLike[str], source: SourceImage | Prepared, motion: Tensor, *,
                     audio: np.ndarray | None = None, edits: Tensor | Sequence[float] | None = None,
                     batch_size: int = 8, progress: ProgressLike = None, paste_back: bool = False,
                     composite: Any = None) -> float:
        """Render ``motion`` (T, d) with ``source`` into an MP4 at ``out_path``, ``audio`` (float32
        16 kHz mono) muxed in: the one writing path of :meth:`generate`, :meth:`drive` and
        :meth:`dub` (written to a temporary file, moved into place when complete).

        ``edits`` are as in :meth:`render`; ``paste_back`` pastes every frame into the source's
        photo; ``composite`` maps the iterator of frame batches to the batches written (e.g.
        :meth:`float_core.video_in.DubCompositor.frames`). Returns the seconds taken.
        """
        from .media.video import write_video

        source = source.source if isinstance(source, Prepared) else source
        paste = None
        if paste_back:
            from .media.face import PasteBack

            if source.crop_box is None or source.original is None:
                raise ValueError("paste_back: needs a portrait prepared with crop=True")
            paste = PasteBack(source.original, source.crop_box, size=self.config.image_size)
        t0 = time.perf_counter()
        frames = self.render(source, motion, edits=edits, batch_size=batch_size)
        write_video(out_path, frames if composite is None else composite(frames), fps=int(self.config.fps),
                    audio=None if audio is None else (audio, self.config.sample_rate), transform=paste,
                    progress=as_progress(progress), total=int(motion.shape[0]))
        return time.perf_counter() - t0

    def _video_motion(self, video: "VideoInput | VideoMotion", **options: Any) -> "VideoMotion":
        """``video`` when it is already analysed, else :meth:`analyse_video` of it."""
        from .video_in import VideoMotion

        return video if isinstance(video, VideoMotion) else self.analyse_video(video, **options)

    def _result(self, out_path: str | os.PathLike[str], motion: Tensor, start: float, timings: dict[str, float],
                notes: Sequence[str | None], **fields: Any) -> GenerationResult:
        return GenerationResult(path=Path(out_path), num_frames=int(motion.shape[0]),
                                seconds=motion.shape[0] / self.config.fps, wall_seconds=time.perf_counter() - start,
                                timings=timings, motion=motion, message="; ".join(n for n in notes if n) or None,
                                **fields)

    def converse(
        self, portraits: Sequence[ImageInput | SourceImage], speech: "Script | Sequence[Any] | str | os.PathLike[str]",
        out_path: str | os.PathLike[str], *, names: Sequence[str] | str | None = None, layout: str = "row",
        sampling: SamplingConfig | None = None, progress: ProgressLike = None, **options: Any,
    ) -> "ConversationResult":
        """Several portraits in one video: each speaks its own speech and, in silence mode,
        listens while the others talk (:mod:`float_core.conversation`).

        Every character is animated exactly as ``generate(portrait, its track, idle=True)``
        with its own seed, derived from the one seed (:func:`~float_core.conversation.character_seed`):
        frames where its track is silent (voice activity) use the null audio condition, so it
        never mouths another character's voice, and its frames depend only on its own track.

        Args:
            portraits: N images (paths, RGB arrays, or :class:`SourceImage` from :meth:`prepare_image`).
            speech: N tracks (paths, float32 16 kHz arrays, ``None`` for a character who only
                listens; shorter ones are padded with silence), one multi-channel file (channel
                i is character i), or a :class:`~float_core.conversation.Script` (spoken by
                ``voices``).
            out_path: the MP4 (H.264 + AAC), written to a temporary file and moved into place
                when complete.
            names: the characters' names in portrait order (a list or "Ana,Ben"); default the
                script's speakers in order of appearance, else "Character 1", ...
            layout: "row" (side by side), "grid", or "speaker" (the current speaker large, the
                others small; it switches with hysteresis, see
                :func:`~float_core.conversation.speaker_timeline`).
            sampling: the :class:`SamplingConfig` of every character (its seed is the
                conversation's; None: random, reported in the result).
            progress: ``True`` (tqdm), None, or ``progress(stage, done, total)`` with stages
                "portraits", "voices" (script lines spoken), "speech", "sampling", "rendering".
            options: ``voices`` ({name: voice spec}, :mod:`float_core.tts`), ``captions``
                (True: name captions, lit while speaking), ``crop`` (True), ``tile_size``
                (pixels; default the model's frame size), ``gap`` (seconds between script
                lines, 0.3), ``batch_size`` (8), ``max_seconds``, and sampling overrides
                (``seed=``, ``nfe=``, ...).

        Returns:
            A :class:`~float_core.conversation.ConversationResult`: the speaking flags (N, T),
            the layout used, the seeds, the motion, timings.
        """
        from .conversation import converse

        return converse(self, portraits, speech, out_path, names=names, layout=layout, sampling=sampling,
                        progress=progress, **options)
