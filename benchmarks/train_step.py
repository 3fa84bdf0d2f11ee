"""Seconds per optimisation step and peak memory of both training stages, on random data.

Stage 1: the motion auto-encoder with the full Eq. 16 loss (random VGG-19 weights: the cost is
the same as with ImageNet weights), one generator and one discriminator update. Stage 2: the
FMT + audio projection with the Eqs. 10-12 loss on random windows. No dataset or weights needed.

    python benchmarks/train_step.py [--model official|tiny] [--batch 8] [--steps 3] [--device auto]
        [--stage 1 2] [--mixed-precision auto|bf16|no]
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from float_core.config import FloatConfig  # noqa: E402
from float_core.train.loop import Distributed, autocast, init_distributed  # noqa: E402


def _peak_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _time(step, steps: int, device: torch.device) -> float:
    step()  # warm-up (allocations, kernel selection)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - start) / steps


def bench_stage1(config: FloatConfig, batch: int, steps: int, ctx: Distributed, precision: str) -> dict:
    from float_core.models.motion_autoencoder import MotionAutoEncoder
    from float_core.train.losses import Stage1Losses
    from float_core.train.vgg import load_vgg19

    ae = MotionAutoEncoder(config).to(ctx.device).train()
    ae.dec.to_rgb1.requires_grad_(False)
    losses = Stage1Losses(load_vgg19("random"), config.image_size).to(ctx.device)
    opt_g = torch.optim.Adam([p for p in ae.parameters() if p.requires_grad], lr=2e-4, betas=(0.0, 0.99))
    d_params = list(losses.discriminator_parameters())
    opt_d = torch.optim.Adam(d_params, lr=2e-4, betas=(0.0, 0.99))
    size = config.image_size
    source = torch.rand(batch, 3, size, size, device=ctx.device) * 2 - 1
    driving = torch.rand(batch, 3, size, size, device=ctx.device) * 2 - 1

    def step() -> None:
        with autocast(ctx, precision):
            fake = ae(source, driving)
            g = losses.generator_step(fake.float(), driving)
        opt_g.zero_grad(set_to_none=True)
        g["total"].backward()
        opt_g.step()
        with autocast(ctx, precision):
            d = losses.discriminator_step(fake.detach().float(), driving)
        opt_d.zero_grad(set_to_none=True)
        sum(d.values()).backward()
        opt_d.step()

    return {"stage": 1, "s_per_step": _time(step, steps, ctx.device)}


def bench_stage2(config: FloatConfig, batch: int, steps: int, ctx: Distributed, precision: str) -> dict:
    from float_core.models.conditions import AudioEncoder
    from float_core.models.fmt import FlowMatchingTransformer
    from float_core.train.stage2 import FlowMatchingObjective, Stage2Config, StepDraws

    projection = AudioEncoder(config).audio_projection
    objective = FlowMatchingObjective(FlowMatchingTransformer.from_config(config), projection,
                                      config.num_prev_frames).to(ctx.device).train()
    objective.fmt.pos_embed.requires_grad_(False)
    trained = [p for p in objective.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(trained, lr=1e-5)
    w2v = config.audio_wav2vec2
    n, d = config.sequence_length, config.style_dim
    data = {"motion": torch.randn(batch, n, d), "audio": torch.randn(batch, n, w2v["num_hidden_layers"] * w2v["hidden_size"]),
            "emotion": torch.rand(batch, config.dim_e).softmax(-1), "source_motion": torch.randn(batch, d)}
    data = {k: v.to(ctx.device) for k, v in data.items()}
    draws = StepDraws.draw(batch, n, d, Stage2Config(data="-"), torch.Generator().manual_seed(0)).to(ctx.device)

    def step() -> None:
        with autocast(ctx, precision):
            ot, vel = objective(data, draws)
        optimizer.zero_grad(set_to_none=True)
        (ot + vel).backward()
        torch.nn.utils.clip_grad_norm_(trained, 1.0)
        optimizer.step()

    return {"stage": 2, "s_per_step": _time(step, steps, ctx.device)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="official", choices=["official", "tiny"])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--stage", type=int, nargs="+", default=[1, 2], choices=[1, 2])
    parser.add_argument("--mixed-precision", default="auto", choices=["auto", "bf16", "no"])
    args = parser.parse_args()
    config = FloatConfig.preset(args.model)
    ctx = init_distributed(args.device)
    torch.manual_seed(0)
    for stage in args.stage:
        bench = bench_stage1 if stage == 1 else bench_stage2
        result = bench(config, args.batch, args.steps, ctx, args.mixed_precision)
        result.update(model=args.model, batch=args.batch, device=str(ctx.device),
                      mixed_precision=args.mixed_precision, peak_mb=round(_peak_mb(ctx.device)))
        print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
