"""torch.compile (inductor) vs eager for the fast decoder: compile time, warm-cache start-up, speed.

    python benchmarks/compile_decoder.py [--frames 2] [--threads 1] [--size 512] [--cache-dir DIR]

Builds the benchmark decoder (random weights, flow offsets scaled by 0.03, the example
portrait; as benchmarks/decoder_speed.py), then prints: eager time per frame, the first
compiled call (compile + run), compiled time per frame, and the max abs difference of the
compiled frames from eager. Wall and process CPU time are both printed (on a shared machine
the CPU time is the steadier one). Run it twice with the same ``--cache-dir``
(TORCHINDUCTOR_CACHE_DIR, with the FX graph cache on) to see the warm-cache start-up.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing


def _clock(fn):
    c0, t0 = time.process_time(), time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, time.process_time() - c0, out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--cache-dir", default=None, help="TORCHINDUCTOR_CACHE_DIR (default: inductor's)")
    args = parser.parse_args(argv)
    if args.cache_dir:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = args.cache_dir
    os.environ.setdefault("TORCHINDUCTOR_FX_GRAPH_CACHE", "1")
    import torch

    from float_core.bench import EXAMPLE_PORTRAIT, scale_flow_offsets_
    from float_core.config import FloatConfig
    from float_core.models.decoder_inference import InferenceDecoder
    from float_core.models.motion_autoencoder import MotionAutoEncoder
    from float_core.models.stylegan import perturb_constant_init_
    from decoder_speed import source_image

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = FloatConfig.official().replace(image_size=args.size)
    with torch.no_grad():
        model = perturb_constant_init_(MotionAutoEncoder(config)).eval()
        scale_flow_offsets_(model.dec, 0.03)
        identity, lam, feats = model.encode(source_image(str(EXAMPLE_PORTRAIT), args.size))
        latents = identity + model.lambda_to_motion(lam + 0.5 * torch.randn(args.frames, config.motion_dim))
    decoder = InferenceDecoder(model.dec)
    per = 1000 / args.frames
    eager = decoder(latents, feats)
    wall, cpu, eager = _clock(lambda: decoder(latents, feats))
    print(f"threads {torch.get_num_threads()}, size {args.size}, {args.frames} frames, load {os.getloadavg()[0]:.1f}")
    print(f"eager                 {wall * per:8.1f} ms/frame wall  {cpu * per:8.1f} ms/frame CPU")
    compiled = torch.compile(InferenceDecoder.__call__.__wrapped__)  # the undecorated method

    def run():
        with torch.no_grad():
            return compiled(decoder, latents, feats)

    wall, cpu, out = _clock(run)
    print(f"first compiled call   {wall:8.1f} s wall  {cpu:8.1f} s CPU (compile + run)")
    wall, cpu, out = _clock(run)
    print(f"compiled              {wall * per:8.1f} ms/frame wall  {cpu * per:8.1f} ms/frame CPU  "
          f"max abs vs eager {(out - eager).abs().max().item():.2e}")
    wall, cpu, eager = _clock(lambda: decoder(latents, feats))
    print(f"eager again           {wall * per:8.1f} ms/frame wall  {cpu * per:8.1f} ms/frame CPU")


if __name__ == "__main__":
    main()
