"""Measuring what stage 2 learned: the audio-to-mouth relation on held-out speech.

Used by the tests (``test_stage2_learns_audio_to_mouth``) and ``python -m float_core.train demo``
on the synthetic data of :mod:`float_core.train.synthetic`, whose drawn mouth follows the audio
envelope by construction.
"""

from __future__ import annotations

import numpy as np
import torch

from ..pipeline import FloatPipeline
from ..sampling import sample_motion
from .data import ClipStore
from .synthetic import envelope


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


def audio_mouth_correlation(pipe: FloatPipeline, store: ClipStore, audio: np.ndarray, *, seeds: int = 3,
                            a_cfg: float = 2.0, nfe: int = 10) -> float:
    """Correlation between held-out ``audio``'s envelope and the mouth read from generated motion.

    Motion is sampled from ``audio`` (16 kHz mono) with the pipeline's FMT, the source motion
    being the first frame of the store's first clip; :func:`fit_envelope_readout` turns each
    generated latent into a mouth opening; the Pearson correlation with the envelope is averaged
    over ``seeds`` noise draws. About 0.1 for an untrained model; docs/performance.md lists trained
    values.
    """
    mean, weights = fit_envelope_readout(store)
    speech = pipe.prepare_audio(audio)
    source = torch.as_tensor(np.array(store.motion(store.clips[0])[0]), device=pipe.device)[None]
    truth = envelope(audio)
    values = []
    for seed in range(seeds):
        generated = sample_motion(pipe.model.fmt, speech.audio_features[None], source, speech.emotion_probs[None],
                                  a_cfg=a_cfg, nfe=nfe, seed=seed)[0].cpu().numpy()
        n = min(len(generated), len(truth))
        values.append(np.corrcoef((generated[:n] - mean) @ weights, truth[:n])[0, 1])
    return float(np.mean(values))
