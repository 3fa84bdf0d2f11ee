"""GPU check: is FLOAT correct and fast on this accelerator? One command, a few minutes.

    python benchmarks/gpu_check.py                  # CUDA: tiny + official random checkpoints
    python benchmarks/gpu_check.py --device cpu --quick   # what the test suite runs (seconds)

For every model size (``tiny`` and ``official``: seeded random weights with the decoder's flow
offsets scaled as in ``benchmarks/decoder_speed.py``, :func:`float_core.bench.random_model`)
it prints:

* **parity** of the device in float32 against the CPU in float32: the same portrait + speech
  analysed on both, the same seeded sampling (motion max abs difference), and the same motion
  decoded on both (float frames max / mean abs difference, and the uint8 frames that
  ``render`` delivers through the device's host-copy path: max level difference and the
  fraction of differing bytes). On CUDA the check runs with IEEE float32 convolutions and
  matmuls; "TF32 (torch default)" repeats the frames with cuDNN's default TF32 convolutions.
* **precision**: per-frame PSNR (min and mean, dB) against the device's float32 frames of
  bfloat16 / float16 decoder frames (the float32 motion decoded), and of the whole pipeline in
  that dtype (its own analysis, sampling and decoding: :mod:`float_core.precision` says which
  stage runs low); a dtype the pipeline refuses is reported unsupported.
* **speed** per decoder dtype on the device: decode frames/s (``render``), flow-matching seconds
  per window (NFE 10, guided), end-to-end real-time factor of ``generate()`` (wall seconds per
  second of speech, MP4 written, the emotion passed as a device tensor: the path that crashed on
  CUDA), time to first frame (analysis + first window + first decoded batch), and peak memory
  (CUDA: ``max_memory_allocated``; CPU: peak resident set).
* **CUDA graphs** (CUDA only): flow-matching seconds per window eager against replayed from
  CUDA graphs (``FloatPipeline(cuda_graphs=True)``, the capture counted), and the motion's
  max abs difference.

The core is :func:`run_checks`, which returns everything as a dict (tests check its values);
``--json FILE`` writes it. Every section catches its own failure, records it under
``errors`` and carries on, so one bad stage does not hide the others' numbers.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import resource
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from float_core.bench import EXAMPLE_PORTRAIT, frame_psnr, random_model  # noqa: E402
from float_core.media import load_audio  # noqa: E402
from float_core.pipeline import FloatPipeline  # noqa: E402
from float_core.precision import select_device  # noqa: E402
from float_core.precision import Precision  # noqa: E402

EXAMPLE_SPEECH = Path(__file__).resolve().parents[1] / "examples" / "arctic_a0007.wav"
#: The precisions compared with float32: the two pipeline dtypes, and bf16 with the FMT in bf16
#: too (what float_core.precision measured to miss the bar; kept to re-measure on new hardware).
LOW_PRECISIONS = {
    "bfloat16": Precision.for_dtype(torch.bfloat16),
    "float16": Precision.for_dtype(torch.float16),
    "bfloat16+fmt": Precision(decoder=torch.bfloat16, fmt=torch.bfloat16),
}


# --------------------------------------------------------------------------- helpers
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def ieee_float32(device: torch.device) -> Iterator[None]:
    """On CUDA: IEEE float32 convolutions and matmuls (no TF32) inside the block; else nothing."""
    if device.type != "cuda":
        yield
        return
    conv, mm = torch.backends.cudnn.conv.fp32_precision, torch.backends.cuda.matmul.fp32_precision
    torch.backends.cudnn.conv.fp32_precision = torch.backends.cuda.matmul.fp32_precision = "ieee"
    try:
        yield
    finally:
        torch.backends.cudnn.conv.fp32_precision, torch.backends.cuda.matmul.fp32_precision = conv, mm


def _peak_memory_gb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def _timed(fn: Callable[[], Any], device: torch.device) -> tuple[float, Any]:
    _sync(device)
    t0 = time.perf_counter()
    out = fn()
    _sync(device)
    return time.perf_counter() - t0, out


class _Section:
    """Runs one section of the check; a failure is recorded, printed and does not stop the rest."""

    def __init__(self, errors: dict[str, str], verbose: bool):
        self.errors, self.verbose = errors, verbose

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        except Exception as exc:  # noqa: BLE001 - every failure becomes a reported number
            self.errors[name] = f"{type(exc).__name__}: {exc}"
            if self.verbose:
                traceback.print_exc()
        if self.verbose:
            print(f"  [{time.perf_counter() - t0:6.1f} s] {name}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- checks
def check_size(size: str, device: torch.device, wave: np.ndarray, *, frames: int, speed_dtypes: tuple[str, ...],
               section: _Section) -> dict[str, Any]:
    """Parity, precision and speed of one model size on ``device`` (see the module docstring)."""
    out: dict[str, Any] = {"parity": {}, "precision": {}, "speed": {}}
    model = random_model(size)
    cpu = FloatPipeline(copy.deepcopy(model), device="cpu", dtype="float32")
    dev = FloatPipeline(model, device=device, dtype="float32")
    seconds = wave.shape[0] / cpu.config.sample_rate
    state: dict[str, Any] = {}

    with section(f"{size}: parity float32 {device} vs cpu"), torch.no_grad(), ieee_float32(device):
        ref = cpu.prepare(EXAMPLE_PORTRAIT, wave, crop=False)
        got = dev.prepare(EXAMPLE_PORTRAIT, wave, crop=False)
        ref_motion = cpu.sample_motion(ref, nfe=10, seed=0)
        got_motion = dev.sample_motion(got, nfe=10, seed=0)
        motion = ref_motion[:frames]
        ref_frames = cpu.decode_frames(ref, motion)
        got_frames = dev.decode_frames(got, motion.to(device))
        diff = (got_frames.cpu() - ref_frames).abs()
        ref_u8 = np.concatenate(list(cpu.render(ref, motion, batch_size=4)))
        got_u8 = np.concatenate(list(dev.render(got, motion.to(device), batch_size=4)))
        u8 = np.abs(got_u8.astype(np.int16) - ref_u8.astype(np.int16))
        out["parity"] = {
            "audio_features_max_abs": (got.audio_features.cpu() - ref.audio_features).abs().max().item(),
            "motion_max_abs": (got_motion.cpu() - ref_motion).abs().max().item(),
            "frames_max_abs": diff.max().item(), "frames_mean_abs": diff.mean().item(),
            "uint8_max_diff": int(u8.max()), "uint8_fraction_differing": float((u8 > 0).mean()),
        }
        state.update(prepared=got, motion=motion.to(device), frames32=got_frames)
    if device.type == "cuda" and "frames32" in state:
        with section(f"{size}: parity with TF32 convolutions"), torch.no_grad():
            tf32 = dev.decode_frames(state["prepared"], state["motion"])
            out["parity"]["frames_max_abs_tf32"] = (tf32.cpu() - ref_frames).abs().max().item()

    for name, precision in LOW_PRECISIONS.items():
        with section(f"{size}: {name} PSNR vs float32"), torch.no_grad():
            if "frames32" not in state:
                raise RuntimeError("no float32 frames (the parity section failed)")
            try:
                low = FloatPipeline(model, device=device, precision=precision)
            except ValueError as exc:  # a precision this pipeline refuses
                out["precision"][name] = {"unsupported": str(exc)}
                continue
            psnr = frame_psnr(low.decode_frames(state["prepared"], state["motion"]), state["frames32"]).cpu()
            # The whole pipeline in its precision (float_core.precision): its own analysis,
            # sampling and decoding of the same frames, against the float32 pipeline's.
            mine = low.prepare(EXAMPLE_PORTRAIT, wave, crop=False)
            whole = frame_psnr(low.decode_frames(mine, low.sample_motion(mine, nfe=10, seed=0)[:frames]),
                               state["frames32"]).cpu()
            out["precision"][name] = {"psnr_min_db": psnr.min().item(), "psnr_mean_db": psnr.mean().item(),
                                      "pipeline_psnr_min_db": whole.min().item(),
                                      "pipeline_psnr_mean_db": whole.mean().item(),
                                      "stages": low.precision.describe()}

    for name in speed_dtypes:
        with section(f"{size}: speed {name}"), torch.no_grad():
            out["speed"][name] = measure_speed(FloatPipeline(model, device=device, dtype=name), wave, seconds)
        if device.type == "cuda":
            with section(f"{size}: CUDA graphs {name}"), torch.no_grad():
                out.setdefault("cuda_graphs", {})[name] = measure_cuda_graphs(model, device, name, wave)
    return out


def measure_cuda_graphs(model: torch.nn.Module, device: torch.device, dtype: str, wave: np.ndarray) -> dict[str, float]:
    """FMT seconds per window eager vs replayed from CUDA graphs (float_core.cuda_graphs), and
    the motion's max abs difference between the two (the same kernels: ~0 expected)."""
    eager = FloatPipeline(model, device=device, dtype=dtype)
    graphed = FloatPipeline(model, device=device, dtype=dtype, cuda_graphs=True)
    prepared = eager.prepare(EXAMPLE_PORTRAIT, wave, crop=False)
    windows = -(-prepared.num_frames // eager.config.num_frames)
    result: dict[str, float] = {}
    motions = {}
    for label, pipe in (("eager", eager), ("graphed", graphed)):
        pipe.sample_motion(prepared, nfe=10, seed=0)  # warm-up (and, graphed, the capture per sampler)
        seconds, motions[label] = _timed(lambda: pipe.sample_motion(prepared, nfe=10, seed=0), device)
        result[f"fmt_s_per_window_{label}"] = seconds / windows
    result["motion_max_abs"] = (motions["graphed"] - motions["eager"]).abs().max().item()
    return result


def measure_speed(pipe: FloatPipeline, wave: np.ndarray, seconds: float) -> dict[str, float]:
    """Decode fps, FMT seconds per window, end-to-end RTF, time to first frame, peak memory."""
    device = pipe.device
    batch = 8
    with tempfile.TemporaryDirectory() as tmp:
        out_path = Path(tmp) / "check.mp4"
        # Warm-up: kernels, cuDNN autotuning, the host allocator, the video encoder.
        prepared = pipe.prepare(EXAMPLE_PORTRAIT, wave, crop=False)
        window = next(pipe.iter_motion(prepared, nfe=10, seed=0))
        next(pipe.render(prepared, window[:batch], batch_size=batch))
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)

        def first_frame() -> np.ndarray:
            p = pipe.prepare(EXAMPLE_PORTRAIT, wave, crop=False)
            first = next(pipe.iter_motion(p, nfe=10, seed=0))
            return next(pipe.render(p, first[:batch], batch_size=batch))

        ttff, _ = _timed(first_frame, device)
        sample_s, motion = _timed(lambda: pipe.sample_motion(prepared, nfe=10, seed=0), device)
        windows = -(-prepared.num_frames // pipe.config.num_frames)
        decode_s, _ = _timed(lambda: sum(f.shape[0] for f in pipe.render(prepared, motion, batch_size=batch)),
                             device)
        emotion = pipe.resolve_emotion(prepared, "happy")  # a device tensor (once crashed on CUDA)
        e2e_s, result = _timed(lambda: pipe.generate(EXAMPLE_PORTRAIT, wave, out_path, crop=False, nfe=10,
                                                     seed=0, emotion=emotion, progress=False), device)
        if not out_path.is_file() or result.num_frames != prepared.num_frames:
            raise RuntimeError(f"generate wrote {result.num_frames} frames, expected {prepared.num_frames}")
    return {"decode_fps": motion.shape[0] / decode_s, "fmt_s_per_window": sample_s / windows,
            "rtf": e2e_s / seconds, "first_frame_s": ttff, "peak_memory_gb": _peak_memory_gb(device)}


def run_checks(device: str = "auto", sizes: tuple[str, ...] = ("tiny", "official"), seconds: float = 4.0,
               frames: int = 8, speed_dtypes: tuple[str, ...] | None = None, verbose: bool = True) -> dict[str, Any]:
    """Every number of the GPU check, as a dict (see the module docstring).

    Args:
        device: the device to check against the CPU ("auto": CUDA when available).
        sizes: model sizes, "tiny" and/or "official".
        seconds: length of the speech (the example recording, cut; zero-padded when longer).
        frames: frames decoded for the parity and precision comparisons.
        speed_dtypes: pipeline dtypes timed (default: float32, bfloat16 and float16 on CUDA, float32 elsewhere).
    """
    dev = select_device(device)
    if speed_dtypes is None:
        speed_dtypes = ("float32", "bfloat16", "float16") if dev.type == "cuda" else ("float32",)
    wave = load_audio(EXAMPLE_SPEECH)
    n = int(seconds * 16000)
    wave = np.pad(wave[:n], (0, max(0, n - wave.shape[0])))
    result: dict[str, Any] = {
        "device": str(dev), "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
        "torch": torch.__version__, "threads": torch.get_num_threads(), "seconds": seconds, "frames": frames,
        "sizes": {}, "errors": {},
    }
    section = _Section(result["errors"], verbose)
    for size in sizes:
        result["sizes"][size] = check_size(size, dev, wave, frames=frames, speed_dtypes=tuple(speed_dtypes),
                                           section=section)
    return result


# --------------------------------------------------------------------------- report
def format_report(result: dict[str, Any]) -> str:
    """A readable table of :func:`run_checks`' numbers."""
    def num(value: Any, fmt: str) -> str:
        return "-" if value is None else format(value, fmt)

    lines = [f"FLOAT GPU check on {result['device']} ({result['device_name']}), torch {result['torch']}, "
             f"{result['threads']} CPU threads, {result['seconds']:g} s of speech, {result['frames']} frames compared"]
    for size, r in result["sizes"].items():
        p = r["parity"]
        lines.append(f"\n[{size}] parity float32 {result['device']} vs cpu")
        if p:
            lines.append(f"  frames max abs {p['frames_max_abs']:.3g}, mean abs {p['frames_mean_abs']:.3g}; "
                         f"motion max abs {p['motion_max_abs']:.3g}; audio features max abs "
                         f"{p['audio_features_max_abs']:.3g}")
            lines.append(f"  rendered uint8: max level difference {p['uint8_max_diff']}, "
                         f"{p['uint8_fraction_differing']:.2%} of bytes differ")
            if "frames_max_abs_tf32" in p:
                lines.append(f"  TF32 convolutions (torch default): frames max abs {p['frames_max_abs_tf32']:.3g}")
        lines.append(f"[{size}] precision vs float32 frames on {result['device']}")
        for name, v in r["precision"].items():
            lines.append(f"  {name:>9}: " + (
                f"unsupported ({v['unsupported']})" if "unsupported" in v else
                f"PSNR min {v['psnr_min_db']:.1f} dB, mean {v['psnr_mean_db']:.1f} dB (decoder); whole pipeline "
                f"({v['stages']}) min {v['pipeline_psnr_min_db']:.1f} dB, mean {v['pipeline_psnr_mean_db']:.1f} dB"))
        lines.append(f"[{size}] speed on {result['device']}: {'dtype':>9} {'decode fps':>11} {'FMT s/window':>13} "
                     f"{'RTF':>7} {'first frame s':>14} {'peak mem GB':>12}")
        for name, v in r["speed"].items():
            lines.append(f"  {'':>{len(size) + 12 + len(result['device'])}}{name:>9} {num(v['decode_fps'], '11.2f')} "
                         f"{num(v['fmt_s_per_window'], '13.3f')} {num(v['rtf'], '7.3f')} "
                         f"{num(v['first_frame_s'], '14.3f')} {num(v['peak_memory_gb'], '12.2f')}")
        for name, v in r.get("cuda_graphs", {}).items():
            lines.append(f"[{size}] CUDA graphs {name}: FMT {v['fmt_s_per_window_eager']:.4f} s/window eager, "
                         f"{v['fmt_s_per_window_graphed']:.4f} graphed (capture included, one per call); "
                         f"motion max abs {v['motion_max_abs']:.3g}")
    if result["errors"]:
        lines.append("\nFAILED sections:")
        lines.extend(f"  {name}: {err}" for name, err in result["errors"].items())
    else:
        lines.append("\nall sections ran")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto", help="device to check against the CPU (default: CUDA if any)")
    parser.add_argument("--sizes", nargs="+", choices=["tiny", "official"], default=None,
                        help="model sizes (default: tiny official; --quick: tiny)")
    parser.add_argument("--seconds", type=float, default=None, help="speech length (default 4; --quick 1)")
    parser.add_argument("--frames", type=int, default=None, help="frames compared (default 8; --quick 4)")
    parser.add_argument("--quick", action="store_true", help="tiny model, 1 s, 4 frames (the test suite's run)")
    parser.add_argument("--json", metavar="FILE", help="also write the numbers as JSON")
    args = parser.parse_args(argv)
    result = run_checks(args.device, tuple(args.sizes or (["tiny"] if args.quick else ["tiny", "official"])),
                        args.seconds or (1.0 if args.quick else 4.0), args.frames or (4 if args.quick else 8))
    print(format_report(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2), encoding="utf-8")
    return 1 if result["errors"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
