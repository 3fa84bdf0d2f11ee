"""Stage 2: training the flow matching transformer (paper Sec. 4.2 "Training", Eqs. 10-12, Sec. 5.2).

The motion auto-encoder of stage 1 is frozen; its motion latents ``w_{r->D}`` of the driving
frames are the targets (precomputed by ``prepare --motion``). Per sample, a window of ``L' + L``
consecutive frames is drawn; the first ``L'`` are the "previous" frames whose clean latents and
audio features are the context, exactly what the sampler feeds at inference
(:func:`float_core.sampling.iter_motion_windows`).

Objective (optimal-transport conditional flow matching, Lipman et al. [42]):

* ``x_0 ~ N(0, I)``, ``t ~ U[0, 1]``, ``x_t = (1 - t) x_0 + t x_1`` and the target vector field
  ``u_t = x_1 - x_0`` (paper Sec. 4.2);
* ``L_OT = ||v_t - u_t||_1`` over the previous and the current frames (Eq. 10: ``u_t`` of
  ``w_{r->D^{-L':L}}``; the previous frames' targets use their own noise draw, their inputs stay
  clean as at inference);
* ``L_vel = ||Δv_t - Δu_t||_1`` with Δ the one-frame difference along time (Eq. 11);
* ``L = λ_OT L_OT + λ_vel L_vel`` with λ_OT = λ_vel = 1 (Eq. 12, Sec. 5.2).

Condition dropout (Sec. 4.2): the source motion ``w_r``, the emotion ``w_e`` and the current
audio ``a^{1:L}`` are each zeroed per sample with probability 0.1, which trains the
unconditional branches of the incremental classifier-free guidance (Eq. 13, which zeroes audio
and emotion); the previous latents and audio together with probability 0.5, which is what the
first window sees at inference (zeros). Trained: the FMT and the audio projection
(``audio_encoder.audio_projection``, Linear-LayerNorm-SiLU on top of the frozen wav2vec2, whose
layer outputs are precomputed).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..config import FloatConfig, SamplingConfig
from .loop import (
    RunConfig,
    StageTrainer,
    autocast,
    export_weights,
    host_scalars,
    inference_view,
    load_base_model,
    step_generator,
    unwrap,
    wrap_ddp,
)

log = logging.getLogger("float_core.train")

#: Default portrait and speech of the periodic sample videos (shipped in examples/).
SAMPLE_IMAGE = "examples/portrait_astronaut.png"
SAMPLE_AUDIO = "examples/arctic_a0007.wav"


@dataclass
class Stage2Config(RunConfig):
    """Options of stage 2 (defaults: paper Sec. 5.2).

    Attributes:
        motion_autoencoder: the stage-1 export (``float.pth``) whose ``motion_autoencoder.*``
            weights replace the base's; empty = keep the base's auto-encoder. It must be the
            auto-encoder that made the dataset's ``motion.npy``.
        cond_dropout: probability of zeroing each of w_r, w_e and the current audio (CFV).
        prev_dropout: probability of zeroing the previous latents and audio (first window).
        lambda_ot, lambda_vel: weights of Eq. 12.
        grad_clip: maximum gradient norm (0 = no clipping).
        sample_image, sample_audio: portrait and speech of the periodic sample videos.
        sample_seconds: length of the sample videos (the speech is cut).
        sample_nfe: vector-field evaluations per window for the sample videos.
    """

    lr: float = 1e-5
    steps: int = 2_000_000
    motion_autoencoder: str = ""
    cond_dropout: float = 0.1
    prev_dropout: float = 0.5
    lambda_ot: float = 1.0
    lambda_vel: float = 1.0
    grad_clip: float = 1.0
    sample_image: str = SAMPLE_IMAGE
    sample_audio: str = SAMPLE_AUDIO
    sample_seconds: float = 4.0
    sample_nfe: int = 10

    @property
    def sample_sampling(self) -> SamplingConfig:
        """The sample videos' sampling settings: SamplingConfig's defaults with ``sample_nfe``
        and seed 0 (the same noise every time, so successive samples show what training changed)."""
        return SamplingConfig(nfe=self.sample_nfe, seed=0)

    def validate(self) -> None:
        super().validate()
        for name in ("cond_dropout", "prev_dropout"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1], got {getattr(self, name)}")
        if self.grad_clip < 0:
            raise ValueError(f"grad_clip must be >= 0, got {self.grad_clip}")


# --------------------------------------------------------------------------- pure functions
def flow_matching_pair(x1: Tensor, x0: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
    """``(x_t, u_t)`` of the OT path: ``x_t = (1 - t) x_0 + t x_1``, ``u_t = x_1 - x_0`` (Sec. 4.2).

    ``t`` has shape (B,) and broadcasts over the remaining dimensions.
    """
    tb = t.reshape(-1, *([1] * (x1.dim() - 1)))
    return (1 - tb) * x0 + tb * x1, x1 - x0


def fmt_losses(v: Tensor, u: Tensor) -> tuple[Tensor, Tensor]:
    """``(L_OT, L_vel)``: mean L1 of ``v - u`` (Eq. 10) and of their one-frame differences (Eq. 11).

    ``v`` and ``u`` are (B, N, d) over the ``N = L' + L`` frames.
    """
    ot = (v - u).abs().mean()
    vel = ((v[:, 1:] - v[:, :-1]) - (u[:, 1:] - u[:, :-1])).abs().mean()
    return ot, vel


def keep_mask(batch: int, p_drop: float, generator: torch.Generator) -> Tensor:
    """(B,) float mask, 0 with probability ``p_drop`` (per sample), else 1."""
    return (torch.rand(batch, generator=generator) >= p_drop).float()


@dataclass(frozen=True)
class StepDraws:
    """Every random quantity of one stage-2 step (drawn from :func:`step_generator`)."""

    t: Tensor  # (B,)
    x0: Tensor  # (B, L' + L, d): noise of the previous and current frames
    keep_wr: Tensor  # (B,)
    keep_we: Tensor
    keep_audio: Tensor
    keep_prev: Tensor

    @classmethod
    def draw(cls, batch: int, frames: int, dim: int, config: Stage2Config, generator: torch.Generator) -> "StepDraws":
        return cls(
            t=torch.rand(batch, generator=generator),
            x0=torch.randn(batch, frames, dim, generator=generator),
            keep_wr=keep_mask(batch, config.cond_dropout, generator),
            keep_we=keep_mask(batch, config.cond_dropout, generator),
            keep_audio=keep_mask(batch, config.cond_dropout, generator),
            keep_prev=keep_mask(batch, config.prev_dropout, generator),
        )

    def slice(self, start: int, stop: int) -> "StepDraws":
        """The draws of samples ``start .. stop - 1``."""
        return StepDraws(**{f.name: getattr(self, f.name)[start:stop] for f in dataclasses.fields(self)})

    def to(self, device: torch.device) -> "StepDraws":
        return StepDraws(**{f.name: getattr(self, f.name).to(device) for f in dataclasses.fields(self)})


class FlowMatchingObjective(nn.Module):
    """The trained networks of stage 2 (FMT + audio projection) and the loss of Eqs. 10-12.

    One module so that DDP sees every trained parameter in one forward pass.
    """

    def __init__(self, fmt: nn.Module, audio_projection: nn.Module, num_prev_frames: int):
        super().__init__()
        self.fmt = fmt
        self.audio_projection = audio_projection
        self.num_prev_frames = num_prev_frames

    def forward(self, batch: Mapping[str, Tensor], draws: StepDraws) -> tuple[Tensor, Tensor]:
        """``(L_OT, L_vel)`` for a batch of windows (keys: motion, audio, emotion, source_motion)."""
        lp = self.num_prev_frames
        motion = batch["motion"].float()  # (B, L' + L, d) clean latents
        wa = self.audio_projection(batch["audio"].float())  # (B, L' + L, d_a)
        x_t, u_t = flow_matching_pair(motion, draws.x0, draws.t)
        prev_keep = draws.keep_prev[:, None, None]
        v = self.fmt(
            draws.t,
            x_t[:, lp:],  # noisy current frames
            wa[:, lp:] * draws.keep_audio[:, None, None],
            batch["source_motion"].float() * draws.keep_wr[:, None],
            batch["emotion"].float() * draws.keep_we[:, None],
            motion[:, :lp] * prev_keep,  # clean previous latents, as the sampler feeds them
            wa[:, :lp] * prev_keep,
        )
        return fmt_losses(v.float(), u_t)


def initialize_trained(fmt: nn.Module, audio_projection: nn.Module, seed: int) -> None:
    """Fresh weights for the stage-2 networks, DiT's initialisation (Peebles & Xie; the FMT is a
    DiT, paper Sec. 4.2): Xavier-uniform linear layers with zero biases, N(0, 0.02) for the
    flow-time MLP, and zero for every adaLN modulation and the output layer, so that each block
    starts as the identity and the initial vector field is zero. The fixed sinusoid table is kept.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for module in fmt.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        for layer in (fmt.t_embedder.mlp[0], fmt.t_embedder.mlp[2]):
            nn.init.normal_(layer.weight, std=0.02)
        for block in fmt.blocks:
            nn.init.zeros_(block.adaLN_modulation[-1].weight)
            nn.init.zeros_(block.adaLN_modulation[-1].bias)
        for layer in (fmt.decoder.adaLN_modulation[-1], fmt.decoder.linear):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)
        for module in audio_projection.modules():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()


# --------------------------------------------------------------------------- trainer
class Stage2Trainer(StageTrainer):
    """Trains the FMT and the audio projection on precomputed latents and audio features."""

    name = "stage2"
    config: Stage2Config

    def build(self) -> None:
        cfg, mc = self.config, self.model_config
        model = load_base_model(cfg.base, mc, seed=cfg.seed, audio_model=cfg.audio_model,
                                emotion_model=cfg.emotion_model)
        if cfg.motion_autoencoder:
            model.motion_autoencoder.load_state_dict(_motion_autoencoder_weights(cfg.motion_autoencoder, mc))
        if not cfg.finetune:  # a fresh FMT and audio projection (the base only provides the rest)
            initialize_trained(model.fmt, model.audio_encoder.audio_projection, cfg.seed)
        model.requires_grad_(False).eval()
        objective = FlowMatchingObjective(model.fmt, model.audio_encoder.audio_projection, mc.num_prev_frames)
        objective.requires_grad_(True).train()
        model.fmt.pos_embed.requires_grad_(False)  # a fixed sinusoid table stored as a parameter
        self.model = model.to(self.ctx.device)
        self.objective = wrap_ddp(objective, self.ctx)
        self.trained = [p for p in objective.parameters() if p.requires_grad]
        self.optimizer = torch.optim.Adam(self.trained, lr=cfg.lr)

    def dataset(self) -> torch.utils.data.Dataset:
        from .data import ClipStore, Stage2Dataset

        mc = self.model_config
        return Stage2Dataset(ClipStore(self.config.data), mc.num_frames, mc.num_prev_frames, seed=self.config.seed)

    def train_step(self, batch: dict[str, Tensor], step: int) -> dict[str, float]:
        cfg = self.config
        b, frames, dim = batch["motion"].shape
        # Drawn for the global batch and sliced, so that N processes see exactly the draws of one
        # process with the whole batch (a DDP run reproduces a single-device run).
        ctx = self.ctx
        draws = StepDraws.draw(b * ctx.world_size, frames, dim, cfg, step_generator(cfg.seed, step, 0))
        draws = draws.slice(ctx.rank * b, (ctx.rank + 1) * b).to(ctx.device)
        with autocast(self.ctx, cfg.mixed_precision):
            ot, vel = self.objective(batch, draws)
        loss = cfg.lambda_ot * ot + cfg.lambda_vel * vel
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.trained, cfg.grad_clip if cfg.grad_clip > 0 else float("inf"))
        self.optimizer.step()
        return host_scalars({"loss": loss, "loss_ot": ot, "loss_vel": vel, "grad_norm": grad_norm})

    def state_dict(self) -> dict[str, Any]:
        return {"objective": unwrap(self.objective).state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        unwrap(self.objective).load_state_dict(state["objective"])
        self.optimizer.load_state_dict(state["optimizer"])

    def export(self) -> Path:
        return export_weights(self.model.state_dict(), self.model_config, self.out)

    def sample(self, step: int) -> Path | None:
        return sample_video(self.model, self.config, self.out / "samples" / f"step_{step:08d}.mp4", self.ctx.device)


def _motion_autoencoder_weights(path: str, config: FloatConfig) -> dict[str, Tensor]:
    """The ``motion_autoencoder.*`` tensors of a stage-1 export, prefix removed."""
    from ..weights import resolve_sources, read_tensors  # noqa: PLC2701 - same package family

    tensors = read_tensors(resolve_sources(path).checkpoint)
    prefix = "motion_autoencoder."
    weights = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
    if not weights:
        raise ValueError(f"motion_autoencoder: {path} holds no motion_autoencoder.* weights "
                         "(pass the float.pth written by stage 1)")
    return weights


def sample_video(model: nn.Module, config: Stage2Config, path: Path, device: torch.device) -> Path | None:
    """A talking-head video of the fixed sample portrait and speech with the current weights."""
    from ..media import load_audio
    from ..pipeline import FloatPipeline

    image, audio = Path(config.sample_image), Path(config.sample_audio)
    if not (image.is_file() and audio.is_file()):
        log.warning("sample video skipped: %s or %s not found", image, audio)
        return None
    wave = load_audio(audio)[: int(config.sample_seconds * model.config.sample_rate)]
    path.parent.mkdir(parents=True, exist_ok=True)
    with inference_view(model):
        pipe = FloatPipeline(model, device=device)
        pipe.generate(str(image), wave, path, config.sample_sampling, progress=False)
    return path


def train_stage2(config: Stage2Config) -> Path:
    """Run stage 2 and return the exported ``float.pth`` (loadable by ``FloatPipeline.from_pretrained``)."""
    return Stage2Trainer(config).run()
