"""Benchmark: per-stage cost of the FLOAT engine with random weights, against this machine's peak.

``python -m float_core.bench [--sizes tiny official] [--dtypes float32 bfloat16] [--seconds 4] [--quick]``

For every (size, dtype) and stage -- image encode (per portrait), audio features and speech
emotion (per clip), flow matching per window (NFE 10, guided: a batch of three branches per
evaluation), decode per frame (the renderer's batches) and end to end (per second of audio)
-- it prints the work in GFLOP (``torch.utils.flop_counter.FlopCounterMode``: matmuls,
convolutions, attention; elementwise glue counts zero), the time, the achieved GFLOP/s and
the fraction of this machine's measured peak for that dtype (:func:`peak_gflops`: a short
matmul and 3x3-convolution probe), plus the process CPU time of the timed call and the
load average (on a shared machine wall time includes waiting for a core). Each (size, dtype)
runs in a fresh subprocess so that its peak resident memory is its own.

Weights are random and non-degenerate (every parameter perturbed, as in the reference
fixtures) with the decoder's flow offsets scaled by :data:`FLOW_SCALE` (see
:func:`scale_flow_offsets_`): fully random flow heads warp by half the image and make any
precision comparison meaningless. ``bfloat16`` is benchmarked by default only where the
device has native bf16 (:func:`float_core.precision.native_bf16`); name it in ``--dtypes``
to force it. ``--quick`` (tiny model, 1 s of audio, small probes) is what the test suite runs.
This prints numbers; it asserts nothing about speed.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

if TYPE_CHECKING:
    from .config import FloatConfig

#: Flow-offset scale of the benchmark decoder: offsets of median ~9 px at 512 px, as a trained
#: decoder predicts (benchmarks/decoder_speed.py's docstring has the measurements).
FLOW_SCALE = 0.03
EXAMPLE_PORTRAIT = Path(__file__).resolve().parents[1] / "examples" / "portrait_astronaut.png"
#: decoder precisions the bench compares
BENCH_DTYPES = ("float32", "bfloat16")


# --------------------------------------------------------------------------- building blocks
def scale_flow_offsets_(synthesis: torch.nn.Module, scale: float) -> None:
    """Multiply the flow-offset rows (channels 0-1) of every ToFlow conv weight and bias of a
    ``Synthesis`` by ``scale`` (the mask channel is left as is): small warps, as a trained
    decoder predicts."""
    with torch.no_grad():
        for to_flow in synthesis.to_flows:
            to_flow.conv.weight[:, :2].mul_(scale)
            to_flow.bias[:, :2].mul_(scale)


def cpu_name() -> str:
    """The processor's model name (Linux ``/proc/cpuinfo``), for printed results."""
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        import platform

        return platform.processor() or "unknown CPU"


def window_shaped_tiny() -> "FloatConfig":
    """Tiny widths with the official window shape (L = 50, L' = 10): the compute is negligible,
    so a live measurement shows the schedule's delay (``random_model("tiny-window")``)."""
    import dataclasses

    from .config import FloatConfig

    return dataclasses.replace(FloatConfig.tiny(), num_frames=50, num_prev_frames=10)


#: Model sizes the benchmarks take by name: the two presets and the official-shaped tiny model.
BENCH_SIZES = ("tiny", "tiny-window", "official")


def random_model(size: "str | FloatConfig", seed: int = 0, flow_scale: float = FLOW_SCALE):
    """A :class:`~float_core.models.float_model.FloatModel` of ``size`` (one of
    :data:`BENCH_SIZES` or a :class:`~float_core.config.FloatConfig`) with seeded random,
    non-degenerate weights and flow offsets scaled by ``flow_scale``."""
    from .config import FloatConfig
    from .models.float_model import FloatModel

    if size == "tiny-window":
        size = window_shaped_tiny()
    config = size if isinstance(size, FloatConfig) else FloatConfig.preset(size)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = FloatModel(config)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p) * (0.1 if p.ndim <= 1 else 0.02))
    scale_flow_offsets_(model.motion_autoencoder.dec, flow_scale)
    return model


def count_gflop(fn: Callable[[], Any]) -> float:
    """GFLOP of one call of ``fn`` as torch's FlopCounterMode counts them (2 per multiply-add)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        fn()
    return counter.get_total_flops() / 1e9


def _best_time(fn: Callable[[], Any], repeat: int) -> tuple[float, float, Any]:
    """Best wall time of ``repeat`` calls (after the caller's warm-up), the process CPU time
    (all threads, user + system) of that call, and the last result. On a shared machine the
    CPU time is the steadier figure: waiting for a core counts in wall time only."""
    best, cpu, out = float("inf"), float("nan"), None
    for _ in range(repeat):
        c0, t0 = time.process_time(), time.perf_counter()
        out = fn()
        wall = time.perf_counter() - t0
        if wall < best:
            best, cpu = wall, time.process_time() - c0
    return best, cpu, out


def peak_gflops(dtype: torch.dtype, device: torch.device, quick: bool = False) -> dict[str, float]:
    """This machine's attainable GFLOP/s in ``dtype``: the best of a square matmul and a 3x3
    channels_last convolution probe (``peak`` is the larger), a few repeats each."""
    n, channels, res = (256, 32, 32) if quick else (1024, 128, 64)
    with torch.no_grad():
        a = torch.randn(n, n, device=device).to(dtype)
        b = torch.randn(n, n, device=device).to(dtype)
        x = torch.randn(1, channels, res, res, device=device).to(dtype).contiguous(memory_format=torch.channels_last)
        w = torch.randn(channels, channels, 3, 3, device=device).to(dtype).contiguous(
            memory_format=torch.channels_last)

        def matmul() -> Tensor:
            return _synced(device, a @ b)

        def conv() -> Tensor:
            return _synced(device, torch.nn.functional.conv2d(x, w, padding=1))

        results = {}
        for name, fn, flop in (("matmul", matmul, 2 * n ** 3), ("conv3x3", conv, 2 * 9 * channels ** 2 * res ** 2)):
            fn()
            seconds, _, _ = _best_time(fn, 3)
            results[name] = flop / seconds / 1e9
    results["peak"] = max(results.values())
    return results



def _synced(device: torch.device, out: Any) -> Any:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return out


# --------------------------------------------------------------------------- one configuration
def measure(size: str, dtype: str, seconds: float, frames: int, device: str, threads: int | None,
            quick: bool = False) -> dict:
    """Time and count every stage for one configuration in this process."""
    from .models.conditions import normalize_audio
    from .models.decoder_inference import InferenceDecoder
    from .inputs import DrivingAudio, Prepared
    from .pipeline import FloatPipeline

    if threads:
        torch.set_num_threads(threads)
    t_build = time.perf_counter()
    model = random_model(size)
    pipe = FloatPipeline(model, device=device, dtype=dtype)
    config = pipe.config
    build_s = time.perf_counter() - t_build
    dev = pipe.device
    repeat = 1 if quick else 2

    rng = np.random.default_rng(0)
    wave = (0.1 * rng.standard_normal(int(seconds * config.sample_rate))).astype(np.float32)
    x = normalize_audio(torch.from_numpy(wave).to(dev)[None])

    def sync(fn: Callable[[], Any]) -> Callable[[], Any]:
        return lambda: _synced(dev, fn())

    with torch.no_grad():
        encode = sync(lambda: pipe.prepare_image(EXAMPLE_PORTRAIT, crop=False))
        audio = sync(lambda: pipe.encode_audio(x)[0])
        emotion = sync(lambda: pipe.classify_emotion(x)[0])
        source, feats, probs = encode(), audio(), emotion()  # warm-up
        image_s, image_cpu, _ = _best_time(encode, repeat)
        audio_s, audio_cpu, _ = _best_time(audio, repeat)
        emotion_s, emotion_cpu, _ = _best_time(emotion, repeat)
    prepared = Prepared(source, DrivingAudio(wave, feats, probs))
    windows = int(np.ceil(prepared.num_frames / config.num_frames))
    sample = sync(lambda: pipe.sample_motion(prepared, nfe=10, seed=0))
    sample_s, sample_cpu, motion = _best_time(sample, 1)
    one_window = Prepared(source, DrivingAudio(wave, feats[:config.num_frames], probs))

    n = min(frames, motion.shape[0])
    batch = min(8, n)
    next(pipe.render(prepared, motion[:batch], batch_size=batch))  # warm-up (allocator, weight folding)
    decode_s, decode_cpu, _ = _best_time(lambda: [None for _ in pipe.render(prepared, motion[:n], batch_size=batch)], 1)
    per_frame = decode_s / n
    latents = source.identity_latent[None] + motion[:batch]

    gflop = {
        "image_encode": count_gflop(encode),
        "audio_features": count_gflop(audio),
        "emotion": count_gflop(emotion),
        "fmt_window": count_gflop(lambda: pipe.sample_motion(one_window, nfe=10, seed=0)),
        "decode_frame": count_gflop(lambda: pipe.decoder(latents[:1], list(source.features))),
    }
    times = {"image_encode": image_s, "audio_features": audio_s, "emotion": emotion_s,
             "fmt_window": sample_s / windows, "decode_frame": per_frame}
    cpu = {"image_encode": image_cpu, "audio_features": audio_cpu, "emotion": emotion_cpu,
           "fmt_window": sample_cpu / windows, "decode_frame": decode_cpu / n}
    num_frames = prepared.num_frames
    # End to end per second of audio: one portrait, this clip's features, windows and frames.
    total_gflop = (gflop["image_encode"] + gflop["audio_features"] + gflop["emotion"]
                   + windows * gflop["fmt_window"] + num_frames * gflop["decode_frame"])
    total_s = image_s + audio_s + emotion_s + sample_s + per_frame * num_frames
    gflop["end_to_end"], times["end_to_end"] = total_gflop / seconds, total_s / seconds
    cpu["end_to_end"] = (image_cpu + audio_cpu + emotion_cpu + sample_cpu + cpu["decode_frame"] * num_frames) / seconds
    units = {"image_encode": "portrait", "audio_features": f"{seconds:g} s clip", "emotion": f"{seconds:g} s clip",
             "fmt_window": "window", "decode_frame": "frame", "end_to_end": "audio second"}

    peak = peak_gflops(pipe.dtype, dev, quick=quick)
    stages = []
    for name in ("image_encode", "audio_features", "emotion", "fmt_window", "decode_frame", "end_to_end"):
        rate = gflop[name] / times[name]
        stages.append({"stage": name, "unit": units[name], "gflop": gflop[name], "seconds": times[name],
                       "cpu_seconds": cpu[name], "gflops": rate, "fraction_of_peak": rate / peak["peak"]})

    error = {}
    if pipe.dtype != torch.float32:  # the low precision's image error against the fp32 decoder
        with torch.no_grad():
            exact = InferenceDecoder(pipe.model.motion_autoencoder.dec, dtype=torch.float32)(
                latents, list(source.features))
            frames_low = pipe.decoder(latents, list(source.features))
        error = {"frame_max_abs_err": (frames_low - exact).abs().max().item(),
                 "frame_psnr_min_db": frame_psnr(frames_low, exact).min().item()}
    return {
        "size": size, "dtype": str(pipe.dtype).replace("torch.", ""), "device": str(dev),
        "threads": torch.get_num_threads(), "audio_seconds": seconds, "frames": num_frames,
        "windows": windows, "build_s": build_s, "peak_gflops": peak, "stages": stages,
        "load_average": os.getloadavg()[0],  # other processes' demand on the cores (shared machines)
        "decode_fps": 1.0 / per_frame, "total_s_per_audio_s": total_s / seconds,
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, **error,
    }


def frame_psnr(frames: Tensor, reference: Tensor) -> Tensor:
    """Per-frame PSNR in dB of images in [-1, 1] (both clamped, peak-to-peak 2), shape (K,)."""
    mse = (frames.clamp(-1, 1).float() - reference.clamp(-1, 1).float()).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(4.0 / mse.clamp_min(1e-20))


# --------------------------------------------------------------------------- report
def format_table(rows: list[dict]) -> str:
    """The stage table: one line per (size, dtype, stage), speed next to its fraction of peak."""
    head = (f"{'size':>8} {'dtype':>9} {'stage':>15} {'per':>13} {'GFLOP':>9} {'seconds':>9} "
            f"{'GFLOP/s':>9} {'of peak':>8} {'CPU s':>9}")
    lines = [head]
    for row in rows:
        for s in row["stages"]:
            lines.append(f"{row['size']:>8} {row['dtype']:>9} {s['stage']:>15} {s['unit']:>13} {s['gflop']:9.2f} "
                         f"{s['seconds']:9.4f} {s['gflops']:9.1f} {s['fraction_of_peak']:8.1%} "
                         f"{s['cpu_seconds']:9.4f}")
    for row in rows:
        p = row["peak_gflops"]
        lines.append(f"{row['size']}/{row['dtype']} on {row['device']} ({row['threads']} threads): peak probe "
                     f"matmul {p['matmul']:.1f}, conv3x3 {p['conv3x3']:.1f} GFLOP/s; decode {row['decode_fps']:.2f} "
                     f"frames/s; {row['total_s_per_audio_s']:.2f} s of compute per audio second; "
                     f"peak RSS {row['peak_rss_gb']:.2f} GB; load average {row['load_average']:.1f}")
        if "frame_psnr_min_db" in row:
            lines.append(f"{row['size']}/{row['dtype']} frames vs float32 decoder: min PSNR "
                         f"{row['frame_psnr_min_db']:.1f} dB, max abs {row['frame_max_abs_err']:.3g}")
    return "\n".join(lines)


def _default_dtypes(device: str) -> list[str]:
    from .precision import native_bf16, select_device

    return ["float32", "bfloat16"] if native_bf16(select_device(device)) else ["float32"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m float_core.bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", default=None, choices=["tiny", "official"],
                        help="model sizes (default: tiny official; --quick: tiny)")
    parser.add_argument("--dtypes", nargs="+", default=None, choices=BENCH_DTYPES,
                        help="decoder precisions (default: float32, plus bfloat16 where the device has native bf16)")
    parser.add_argument("--seconds", type=float, default=None, help="audio length (default: 4 s = 2 windows)")
    parser.add_argument("--frames", type=int, default=None, help="frames decoded for the per-frame time (16)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--quick", action="store_true",
                        help="tiny model, 1 s of audio, small probes, in this process, 1 thread unless "
                             "--threads (for tests: tiny ops on 2 threads of a busy machine measure waiting)")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    parser.add_argument("--_one", nargs=2, help=argparse.SUPPRESS)  # internal: run one config, print JSON
    args = parser.parse_args(argv)
    seconds = args.seconds or (1.0 if args.quick else 4.0)
    frames = args.frames or (2 if args.quick else 16)
    if args._one:
        print(json.dumps(measure(*args._one, seconds, frames, args.device, args.threads)))
        return 0
    sizes = args.sizes or (["tiny"] if args.quick else ["tiny", "official"])
    dtypes = args.dtypes or _default_dtypes(args.device)
    rows = []
    for size in sizes:
        for dtype in dtypes:
            if args.quick:  # in this process: no second interpreter start-up, RSS is not the point
                threads = torch.get_num_threads()
                try:
                    rows.append(measure(size, dtype, seconds, frames, args.device, args.threads or 1, quick=True))
                finally:
                    torch.set_num_threads(threads)
                continue
            cmd = [sys.executable, "-m", "float_core.bench", "--_one", size, dtype, "--seconds", str(seconds),
                   "--frames", str(frames), "--device", args.device]
            if args.threads:
                cmd += ["--threads", str(args.threads)]
            proc = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
            if proc.returncode:
                print(f"{size}/{dtype} failed:\n{proc.stderr[-3000:]}", file=sys.stderr)
                return 1
            rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
            print(f"done {size}/{dtype}", file=sys.stderr)
    print(format_table(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
