"""Streaming benchmark: time to first frame, steady fps, RTF, live latency, A/V drift, memory.

    python benchmarks/streaming.py                       # tiny, fp32 + bf16, all measurements
    python benchmarks/streaming.py --sizes official --seconds 4 --skip-live --drift-minutes 0
    python benchmarks/streaming.py --features-only       # live sliding-span features vs whole clip

For every (size, dtype), in a fresh subprocess (so peak RSS is its own), with random weights
(``float_core.bench.random_model``: the timings depend only on the model size):

* **file**: ``stream(array)`` of ``--seconds`` of speech: time to first frame (TTFF), steady
  fps (frames after the first chunk over the time after it), real-time factor (wall / media).
* **live**: a real-time paced source (100 ms chunks): TTFF and the latency from the arrival of
  the last sample a chunk depends on (its window's end + look-ahead) to the chunk being ready
  (median, p90, max); meaningful only where generation keeps up with real time.
* **drift**: ``--drift-minutes`` of live input (as fast as it is consumed: speech and silence)
  through the fragmented MP4 writer: audio seconds minus video seconds in the stream and in the
  file, RSS after the first minute and at the end, peak RSS.
* **features** (``--features-only`` or by default once for tiny and official): w_a of the live
  sliding span (``live_audio_features``) against the whole clip's, for several context /
  look-ahead settings: max / mean absolute difference (and relative to mean |w_a|), and the
  resulting motion difference with the same noise (relative to the motion's std).

Timings on a shared machine are noisy: the script prints the medians of what it measured and
asserts nothing about speed.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from float_core.bench import random_model  # noqa: E402
from float_core.media.audio import load_audio  # noqa: E402
from float_core.pipeline import FloatPipeline  # noqa: E402

PORTRAIT = ROOT / "examples" / "portrait_astronaut.png"
SPEECH = ROOT / "examples" / "arctic_a0007.wav"
RATE = 16000


def speech_of(seconds: float) -> np.ndarray:
    """``seconds`` of the example speech, tiled (4 s clip: ~0.45 s lead-in silence, then speech)."""
    wave = load_audio(SPEECH, target_rate=RATE)
    reps = int(np.ceil(seconds * RATE / wave.size))
    return np.tile(wave, reps)[:int(seconds * RATE)].astype(np.float32)


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def build(size: str, dtype: str) -> FloatPipeline:
    return FloatPipeline(random_model(size), device="cpu", dtype=dtype)


def paced(wave: np.ndarray, block: float = 0.1) -> Iterator[np.ndarray]:
    n = int(block * RATE)
    t0 = time.perf_counter()
    for i, start in enumerate(range(0, wave.size, n)):
        time.sleep(max(0.0, t0 + i * block - time.perf_counter()))
        yield wave[start:start + n]


def bench_file(pipe: FloatPipeline, source: Any, seconds: float, batch: int) -> dict[str, float]:
    wave = speech_of(seconds)
    t0 = time.perf_counter()
    firsts, frames, t_first, n_first, parts = None, 0, 0.0, 0, (0.0, 0.0)
    for chunk in pipe.stream(source, wave, seed=0, batch_size=batch):
        if firsts is None:
            firsts, t_first, n_first = time.perf_counter() - t0, time.perf_counter(), chunk.num_frames
            parts = (chunk.sampling_seconds, chunk.decode_seconds)
        frames += chunk.num_frames
    wall = time.perf_counter() - t0
    steady = (frames - n_first) / max(time.perf_counter() - t_first, 1e-9)
    return {"ttff_s": firsts, "steady_fps": steady, "rtf": wall / (frames / 25), "frames": frames,
            "first_window_sampling_s": parts[0], "first_decode_s": parts[1],
            "audio_analysis_s": firsts - parts[0] - parts[1]}


def bench_live(pipe: FloatPipeline, source: Any, seconds: float, batch: int) -> dict[str, float]:
    wave = speech_of(seconds)
    t0 = time.perf_counter()
    latencies, per_frame, first, frames = [], [], None, 0
    for chunk in pipe.stream(source, paced(wave), seed=0, batch_size=batch):
        now = time.perf_counter() - t0
        first = first if first is not None else now
        latencies.append(chunk.latency)
        # Speech in -> frame out: frame f's own samples have all arrived at about (f + 1) / 25 s
        # (the source is paced from the start); the window fill and the look-ahead count too.
        per_frame += [now - (f + 1) / 25 for f in range(chunk.start_frame, chunk.end_frame)]
        frames += chunk.num_frames
    wall = time.perf_counter() - t0
    lat, own = np.array(latencies), np.array(per_frame)
    return {"ttff_s": first, "latency_median_s": float(np.median(lat)), "latency_p90_s": float(np.percentile(lat, 90)),
            "latency_max_s": float(lat.max()), "frame_latency_median_s": float(np.median(own)),
            "frame_latency_max_s": float(own.max()), "rtf": wall / (frames / 25)}


def bench_drift(pipe: FloatPipeline, source: Any, minutes: float, batch: int) -> dict[str, float]:
    from float_core.media.video import VideoWriter, probe_video

    base = np.concatenate([speech_of(4.0), np.zeros(2 * RATE, np.float32)])  # speech, then silence
    total = int(minutes * 60 * RATE)

    def source_iter() -> Iterator[np.ndarray]:
        for start in range(0, total, 4000):
            i = start % base.size
            yield base[i:i + 4000] if i + 4000 <= base.size else np.concatenate(
                [base[i:], base[:4000 - (base.size - i)]])

    out = Path(tempfile.mkdtemp()) / "drift.mp4"
    frames = samples = 0
    rss_1min = None
    t0 = time.perf_counter()
    with VideoWriter(out, fps=25, audio_rate=RATE, container="fmp4", preset="ultrafast") as writer:
        for chunk in pipe.stream(source, source_iter(), seed=0, batch_size=batch, stall_timeout=None):
            writer.write(chunk.frames, audio=chunk.audio)
            frames += chunk.num_frames
            samples += chunk.audio.size
            if rss_1min is None and frames >= min(25 * 60, total / 640 / 5):  # 1 min (or 1/5 of it)
                rss_1min = rss_mb()
    wall = time.perf_counter() - t0
    info = probe_video(out)
    out.unlink()
    return {"minutes": minutes, "wall_s": wall, "stream_drift_ms": 1000 * (samples / RATE - frames / 25),
            "file_drift_ms": 1000 * (info["audio_seconds"] - info["frames"] / 25),
            "file_frames": info["frames"], "rss_after_1min_mb": rss_1min, "rss_end_mb": rss_mb(),
            "peak_rss_mb": peak_rss_mb()}


def bench_features(pipe: FloatPipeline, seconds: float) -> list[dict[str, float]]:
    """Live sliding-span w_a vs whole-clip w_a, and the motion each gives with the same noise."""
    from float_core.inputs import Prepared
    from float_core.streaming import live_audio_features

    wave = speech_of(seconds)
    source = pipe.prepare_image(str(PORTRAIT))
    whole = pipe.prepare_audio(wave)
    prepared = Prepared(source, whole)
    ref_motion = pipe.sample_motion(prepared, seed=0, emotion="neutral")
    scale = float(whole.audio_features.abs().mean())
    rows = []
    for context, lookahead in ((1.0, 0.0), (2.0, 0.2), (4.0, 0.4), (8.0, 0.4), (8.0, 1.0)):
        live = live_audio_features(pipe, wave, context_seconds=context, lookahead_seconds=lookahead)
        diff = (live - whole.audio_features).abs()
        motion = pipe.sample_motion(Prepared(source, type(whole)(whole.waveform, live, whole.emotion_probs)),
                                    seed=0, emotion="neutral")
        mdiff = (motion - ref_motion).abs()
        rows.append({"context_s": context, "lookahead_s": lookahead, "wa_max": float(diff.max()),
                     "wa_mean": float(diff.mean()), "wa_mean_rel": float(diff.mean()) / scale,
                     "motion_max": float(mdiff.max()), "motion_mean": float(mdiff.mean()),
                     "motion_mean_rel_std": float(mdiff.mean() / ref_motion.std())})
    return rows


def run_one(args: argparse.Namespace) -> dict[str, Any]:
    torch.manual_seed(0)
    pipe = build(args.size, args.dtype)
    source = pipe.prepare_image(str(PORTRAIT))
    result: dict[str, Any] = {"size": args.size, "dtype": args.dtype, "threads": torch.get_num_threads()}
    result["file"] = bench_file(pipe, source, args.seconds, args.batch_size)
    if not args.skip_live:
        result["live"] = bench_live(pipe, source, args.live_seconds, args.batch_size)
    if args.drift_minutes > 0:
        result["drift"] = bench_drift(pipe, source, args.drift_minutes, args.batch_size)
    if args.features:
        result["features"] = bench_features(pipe, args.feature_seconds)
    result["peak_rss_mb"] = peak_rss_mb()
    return result


def print_result(r: dict[str, Any]) -> None:
    name = f"{r['size']:>8} {r['dtype']:<8}"
    f = r["file"]
    print(f"{name} file:  TTFF {f['ttff_s']:.2f} s, steady {f['steady_fps']:.2f} fps, RTF {f['rtf']:.2f} "
          f"({f['frames']} frames); TTFF = whole-clip audio analysis {f.get('audio_analysis_s', float('nan')):.2f} s "
          f"+ window 0 sampling {f.get('first_window_sampling_s', float('nan')):.2f} s "
          f"+ first decode batch {f.get('first_decode_s', float('nan')):.2f} s")
    if "live" in r:
        v = r["live"]
        print(f"{name} live:  TTFF {v['ttff_s']:.2f} s, chunk latency median {v['latency_median_s']:.2f} s, "
              f"p90 {v['latency_p90_s']:.2f} s, max {v['latency_max_s']:.2f} s (compute, after the window and its "
              f"look-ahead arrived); speech in -> frame out median {v['frame_latency_median_s']:.2f} s, "
              f"max {v['frame_latency_max_s']:.2f} s; RTF {v['rtf']:.2f}")
    if "drift" in r:
        d = r["drift"]
        print(f"{name} drift: {d['minutes']:g} min in {d['wall_s']:.0f} s: audio - video = {d['stream_drift_ms']:.1f} ms "
              f"(stream), {d['file_drift_ms']:.1f} ms (MP4, AAC padding), RSS {d['rss_after_1min_mb']:.0f} MB "
              f"after min(1 min, 1/5) -> {d['rss_end_mb']:.0f} MB at the end, peak {d['peak_rss_mb']:.0f} MB")
    for row in r.get("features", []):
        print(f"{name} live w_a (context {row['context_s']:g} s, look-ahead {row['lookahead_s']:g} s) vs whole clip: "
              f"max {row['wa_max']:.3f}, mean {row['wa_mean']:.4f} ({100 * row['wa_mean_rel']:.1f}% of mean |w_a|); "
              f"motion max {row['motion_max']:.3f}, mean {row['motion_mean']:.4f} "
              f"({100 * row['motion_mean_rel_std']:.1f}% of its std)")
    print(f"{name} peak RSS {r['peak_rss_mb']:.0f} MB")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", nargs="+", default=["tiny"], choices=("tiny", "official"))
    p.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"], choices=("float32", "bfloat16"))
    p.add_argument("--seconds", type=float, default=10.0, help="file input length (default 10)")
    p.add_argument("--live-seconds", type=float, default=10.0, help="paced live input length (default 10)")
    p.add_argument("--drift-minutes", type=float, default=10.0, help="drift/RSS stream length, 0 = skip")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--skip-live", action="store_true")
    p.add_argument("--features", action="store_true", help="also measure live vs whole-clip features")
    p.add_argument("--features-only", action="store_true", help="only the feature comparison, for each of --sizes")
    p.add_argument("--feature-seconds", type=float, default=20.0)
    p.add_argument("--one", nargs=2, metavar=("SIZE", "DTYPE"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        args.size, args.dtype = args.one
        print("RESULT " + json.dumps(run_one(args)))
        return
    if args.features_only:
        for size in args.sizes:
            pipe = build(size, "float32")
            print_result({"size": size, "dtype": "float32", "file": None, "features": bench_features(
                pipe, args.feature_seconds), "peak_rss_mb": peak_rss_mb()} | {"file": {
                    "ttff_s": float("nan"), "steady_fps": float("nan"), "rtf": float("nan"), "frames": 0}})
        return
    print(f"machine: {os.cpu_count()} CPUs, torch "
          f"{torch.__version__}, {torch.get_num_threads()} threads; random weights")
    for size in args.sizes:
        for dtype in args.dtypes:
            cmd = [sys.executable, __file__, "--one", size, dtype, "--seconds", str(args.seconds),
                   "--live-seconds", str(args.live_seconds), "--drift-minutes", str(args.drift_minutes),
                   "--batch-size", str(args.batch_size), "--feature-seconds", str(args.feature_seconds)]
            cmd += ["--skip-live"] if args.skip_live else []
            cmd += ["--features"] if args.features else []
            proc = subprocess.run(cmd, capture_output=True, text=True)
            lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
            if proc.returncode or not lines:
                print(f"{size} {dtype}: failed\n{proc.stderr[-2000:]}")
                continue
            print_result(json.loads(lines[-1][7:]))
            sys.stdout.flush()


if __name__ == "__main__":
    main()
