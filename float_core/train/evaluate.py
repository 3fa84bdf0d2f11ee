"""Measuring what stage 2 learned: the audio-to-mouth relation on held-out speech.

Used by the tests (``test_stage2_learns_audio_to_mouth``) and ``python -m float_core.train demo``
on the synthetic data of :mod:`float_core.train.synthetic`, whose drawn mouth follows the audio
envelope by construction.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..config import SAMPLE_RATE
from ..pipeline import FloatPipeline
from ..sampling import num_windows, sample_motion
from .data import ClipStore
from .synthetic import envelope, speech_like_audio

#: Seeds of :func:`held_out_speech`: no synthetic training clip is drawn with them
#: (``make_synthetic_dataset`` uses ``seed + i`` for its clips and ``seed + 1000`` and above only
#: for its broken files).
HELD_OUT_SEEDS = (1234, 1235, 1236)


def held_out_speech(seeds: Sequence[int] = HELD_OUT_SEEDS, seconds: float = 6.0) -> list[np.ndarray]:
    """Speech-like clips (:func:`~float_core.train.synthetic.speech_like_audio`, 16 kHz float32),
    one per seed: the audio of ``make_synthetic_clip(seed=s, seconds=seconds)`` before encoding.

    Several clips, because the correlation of one model differs from one 6-s clip to another by up
    to 0.08.
    """
    return [speech_like_audio(int(round(seconds * SAMPLE_RATE)), np.random.default_rng(s)) for s in seeds]


def fit_envelope_readout(store: ClipStore, ridge: float = 1e-3) -> tuple[np.ndarray, np.ndarray]:
    """(mean, weights) of a ridge regression from real motion latents to the audio envelope.

    Fitted on every clip's precomputed ``motion.npy`` and ``audio.wav``: on synthetic data the
    envelope drives the mouth, so this read-out recovers the mouth opening from a latent.
    """
    store.require("motion")
    motion = np.concatenate([np.asarray(store.motion(c), np.float64) for c in store.clips])
    target = np.concatenate([envelope(store.audio(c)) for c in store.clips]).astype(np.float64)
    mean = motion.mean(0)
    centred = motion - mean
    weights = np.linalg.solve(centred.T @ centred + ridge * np.eye(motion.shape[1]),
                              centred.T @ (target - target.mean()))
    return mean, weights


def audio_mouth_correlation(pipe: FloatPipeline, store: ClipStore, audio: np.ndarray | Sequence[np.ndarray], *,
                            seeds: int = 3, a_cfg: float = 2.0, nfe: int = 10) -> float:
    """Correlation between held-out ``audio``'s envelope and the mouth read from generated motion.

    Motion is sampled from ``audio`` (16 kHz mono; one clip or a sequence of clips) with the
    pipeline's FMT, the source motion being the first frame of the store's first clip;
    :func:`fit_envelope_readout` turns each generated latent into a mouth opening; the Pearson
    correlation with the envelope is averaged over the clips and ``seeds`` noise draws.

    On :func:`held_out_speech` with the tiny model of ``test_stage2_learns_audio_to_mouth``
    (stage 2 trained 1200 steps at batch 32, lr 4e-3, cosine schedule): 0.70-0.77 over training
    seeds and CPU kernels, about 0.02 untrained.
    """
    clips = [audio] if isinstance(audio, np.ndarray) else list(audio)
    if not clips:
        raise ValueError("audio: pass at least one held-out clip")
    if seeds < 1:
        raise ValueError(f"seeds must be >= 1, got {seeds}")
    mean, weights = fit_envelope_readout(store)
    fmt = pipe.model.fmt
    source = torch.as_tensor(np.array(store.motion(store.clips[0])[0]), device=pipe.device)[None]
    values = []
    # Clips of one length are sampled together, every (clip, seed) one row of a batch: the tiny
    # FMT's cost is per call, so a batch of 9 rows costs about as much as one row.
    by_length: dict[int, list[np.ndarray]] = {}
    for clip in clips:
        by_length.setdefault(len(clip), []).append(clip)
    for group in by_length.values():
        speech = [pipe.prepare_audio(clip) for clip in group]
        frames = speech[0].audio_features.shape[0]
        rows = len(group) * seeds
        noise = torch.cat([_seed_noise(seed, num_windows(frames, fmt.num_frames), fmt.num_frames, fmt.dim_w)
                           for _ in group for seed in range(seeds)], dim=1)
        generated = sample_motion(
            fmt, torch.stack([s.audio_features for s in speech]).repeat_interleave(seeds, 0),
            source.expand(rows, -1), torch.stack([s.emotion_probs for s in speech]).repeat_interleave(seeds, 0),
            a_cfg=a_cfg, nfe=nfe, noise=noise).cpu().numpy()
        for row, motion in enumerate(generated):
            truth = envelope(group[row // seeds])
            n = min(len(motion), len(truth))
            values.append(np.corrcoef((motion[:n] - mean) @ weights, truth[:n])[0, 1])
    return float(np.mean(values))


def _seed_noise(seed: int, windows: int, frames: int, dim: int) -> torch.Tensor:
    """(windows, 1, frames, dim): the starting noise that ``sample_motion(..., seed=seed)`` draws
    for one row (one CPU generator, one draw per window in turn), so that a batch of seeds
    samples what one call per seed samples."""
    generator = torch.Generator().manual_seed(seed)
    return torch.stack([torch.randn(1, frames, dim, generator=generator) for _ in range(windows)])
