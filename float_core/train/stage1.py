"""Stage 1: training the motion latent auto-encoder (paper Sec. 4.1, A.1-A.4).

A source frame S and a driving frame D are drawn from the same clip; the auto-encoder
reconstructs D from S's identity latent and feature pyramid plus D's motion latent
(``MotionAutoEncoder.forward``, paper Eq. 14). The objective is Eq. 16 with the A.4 weights
(:mod:`float_core.train.losses`): L1, the multi-scale VGG-19 perceptual loss, the facial
component perceptual loss (Eq. 15), the non-saturating loss of a 2-scale StyleGAN2
discriminator (Eq. 17), and eye/lip component discriminators with Gram feature-style matching
(Eqs. 18-19). Generator and discriminators alternate every step; Adam at 2e-4, batch 8 (A.4).

Eye and mouth regions (L_comp-lp, the component discriminators and FSM): boxes around the
driving frame's 68-point landmarks when the data set has them for every clip (``python -m
float_core.train prepare --out DATA --landmarks``; the batch then carries ``boxes``), else
fixed fractions (x0, y0, x1, y1) of the aligned crop: left eye (0.28, 0.30, 0.48, 0.50), right
eye (0.52, 0.30, 0.72, 0.50), mouth (0.32, 0.55, 0.68, 0.79) (:class:`float_core.train.losses.ComponentBoxes`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .loop import (
    RunConfig,
    StageTrainer,
    autocast,
    average_gradients,
    export_weights,
    fresh_init,
    host_scalars,
    inference_view,
    load_base_model,
    unwrap,
    wrap_ddp,
)

from .losses import AutoEncoderLossWeights

log = logging.getLogger("float_core.train")
_A4 = AutoEncoderLossWeights()  # the paper's A.4 values


@dataclass
class Stage1Config(RunConfig):
    """Options of stage 1 (defaults: paper A.4).

    Attributes:
        vgg: VGG-19 weights of the perceptual losses: a .pth/.safetensors file, a Hugging Face id
            (``timm/vgg19.tv_in1k``), or ``random`` (tests only: the perceptual terms are then
            meaningless).
        d_lr: Adam learning rate of the discriminators.
        beta1, beta2: Adam betas of both optimisers (StyleGAN2/LIA's (0, 0.99); the paper gives
            only the learning rate).
        lambda_lp, lambda_comp_lp, lambda_full_adv: weights of Eq. 16 (A.4: 10, 100, 1).
        lambda_eye_adv, lambda_eye_fsm, lambda_lip_adv, lambda_lip_fsm: weights of Eq. 16 (A.4: 1, 100, 1, 100).
        sample_frames: frames of the periodic reconstruction video (a clip driven by itself).
    """

    lr: float = 2e-4
    steps: int = 460_000
    base: str = "none"
    vgg: str = "timm/vgg19.tv_in1k"
    d_lr: float = 2e-4
    beta1: float = 0.0
    beta2: float = 0.99
    # Flat copies of AutoEncoderLossWeights (one option each on the command line / in YAML).
    lambda_lp: float = _A4.lp
    lambda_comp_lp: float = _A4.comp_lp
    lambda_full_adv: float = _A4.full_adv
    lambda_eye_adv: float = _A4.eye_adv
    lambda_eye_fsm: float = _A4.eye_fsm
    lambda_lip_adv: float = _A4.lip_adv
    lambda_lip_fsm: float = _A4.lip_fsm
    sample_frames: int = 50

    def validate(self) -> None:
        super().validate()
        if not (self.d_lr > 0):
            raise ValueError(f"d_lr must be positive, got {self.d_lr}")
        for name in ("beta1", "beta2"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")

    def loss_weights(self) -> AutoEncoderLossWeights:
        """The Eq. 16 coefficients of this run (L1's weight is 1 by definition)."""
        return AutoEncoderLossWeights(l1=1.0, **{name: getattr(self, f"lambda_{name}")
                                                 for name in _A4.as_dict() if name != "l1"})


class Stage1Trainer(StageTrainer):
    """Trains the motion auto-encoder against the losses of Eq. 16."""

    name = "stage1"
    config: Stage1Config

    def build(self) -> None:
        from ..models.motion_autoencoder import MotionAutoEncoder
        from .losses import Stage1Losses
        from .vgg import load_vgg19

        cfg, mc, device = self.config, self.model_config, self.ctx.device
        model = load_base_model(cfg.base, mc, seed=cfg.seed, audio_model=cfg.audio_model,
                                emotion_model=cfg.emotion_model)
        if not cfg.finetune and cfg.base != "none":
            fresh_init(model.motion_autoencoder, lambda: MotionAutoEncoder(mc), cfg.seed)
        model.requires_grad_(False).eval()
        ae = model.motion_autoencoder.requires_grad_(True).train()
        # Kept only for the checkpoint's keys (never used): frozen, or DDP would wait for its gradients.
        ae.dec.to_rgb1.requires_grad_(False)
        self.model = model.to(device)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed + 1)
            self.losses = Stage1Losses(load_vgg19(cfg.vgg), mc.image_size, weights=cfg.loss_weights()).to(device)
        self.ae = wrap_ddp(ae, self.ctx)
        self.d_params = list(self.losses.discriminator_parameters())
        betas = (cfg.beta1, cfg.beta2)
        self.opt_g = torch.optim.Adam([p for p in ae.parameters() if p.requires_grad], lr=cfg.lr, betas=betas)
        self.opt_d = torch.optim.Adam(self.d_params, lr=cfg.d_lr, betas=betas)

    def dataset(self) -> torch.utils.data.Dataset:
        from .data import ClipStore, Stage1Dataset

        return Stage1Dataset(ClipStore(self.config.data), self.model_config.image_size, seed=self.config.seed)

    def _discriminators_trainable(self, flag: bool) -> None:
        for p in self.d_params:
            p.requires_grad_(flag)

    def train_step(self, batch: dict[str, Tensor], step: int) -> dict[str, float]:
        cfg, ctx = self.config, self.ctx
        source, driving = batch["source"], batch["driving"]
        boxes = batch.get("boxes")  # (B, 3, 4) landmark boxes, or None: the fixed crop regions
        # Generator step: discriminators frozen (their gradients are not needed here).
        self._discriminators_trainable(False)
        with autocast(ctx, cfg.mixed_precision):
            fake = self.ae(source, driving)
            g_terms = self.losses.generator_step(fake.float(), driving, boxes=boxes)
        self.opt_g.zero_grad(set_to_none=True)
        g_terms["total"].backward()
        self.opt_g.step()
        # Discriminator step on the same reconstruction, detached.
        self._discriminators_trainable(True)
        with autocast(ctx, cfg.mixed_precision):
            d_terms = self.losses.discriminator_step(fake.detach().float(), driving, boxes=boxes)
        d_total = sum(d_terms.values())
        self.opt_d.zero_grad(set_to_none=True)
        d_total.backward()
        average_gradients(self.d_params, ctx)
        self.opt_d.step()
        logs = {"loss": g_terms["total"], "loss_d": d_total}
        logs.update({f"g/{k}": v for k, v in g_terms.items() if k != "total"})
        logs.update({f"d/{k}": v for k, v in d_terms.items()})
        return host_scalars(logs)

    def state_dict(self) -> dict[str, Any]:
        return {
            "motion_autoencoder": unwrap(self.ae).state_dict(),
            "discriminators": self.losses.discriminators_state_dict(),
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        unwrap(self.ae).load_state_dict(state["motion_autoencoder"])
        self.losses.load_discriminators_state_dict(state["discriminators"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])

    def optimizers(self) -> list[torch.optim.Optimizer]:
        return [self.opt_g, self.opt_d]

    def export(self) -> Path:
        return export_weights(self.model.state_dict(), self.model_config, self.out)

    def sample(self, step: int) -> Path | None:
        return reconstruction_video(unwrap(self.ae), self.config, self.out / "samples" / f"step_{step:08d}.mp4",
                                    self.ctx.device)


@torch.no_grad()
def reconstruction_video(ae: torch.nn.Module, config: Stage1Config, path: Path, device: torch.device) -> Path:
    """Driving frames | reconstructions of the dataset's first clip, driven by itself from its
    first frame, side by side with the clip's audio (a self-reenactment check, paper A.3)."""
    from ..media.video import VideoWriter
    from ..pipeline import frames_to_uint8
    from .data import ClipStore, frames_to_tensor

    store = ClipStore(config.data)
    clip = store.clips[0]
    count = min(config.sample_frames, clip.num_frames)
    frames = store.frames(clip, np.arange(count))
    images = frames_to_tensor(frames, ae.config.image_size).to(device)
    audio = store.audio(clip)[: count * ae.config.samples_per_frame]
    path.parent.mkdir(parents=True, exist_ok=True)
    with inference_view(ae), VideoWriter(path, fps=ae.config.fps, audio=(audio, ae.config.sample_rate)) as writer:
        for start in range(0, count, 8):
            driving = images[start:start + 8]
            recon = ae(images[:1].expand_as(driving), driving)
            writer.write(np.concatenate([frames_to_uint8(driving), frames_to_uint8(recon)], axis=2))
    return path


def train_stage1(config: Stage1Config) -> Path:
    """Run stage 1 and return the exported ``float.pth`` (its ``motion_autoencoder.*`` keys are
    the trained auto-encoder; the other keys are the base's)."""
    return Stage1Trainer(config).run()
