"""Streaming benchmark: time to first frame, steady fps, RTF, live latency, A/V drift, memory,
and the live schedule (A/V delay, seams, FMT cost, feature difference).

    python benchmarks/streaming.py                       # tiny, fp32 + bf16, all measurements
    python benchmarks/streaming.py --sizes official --seconds 4 --skip-live --drift-minutes 0
    python benchmarks/streaming.py --delay 2 5 10 25 none --live-seconds 10      # A/V delay per chunk size
    python benchmarks/streaming.py --sizes official --schedule 10:3 5:3 --seconds 4   # seams, vs offline
    python benchmarks/streaming.py --sizes official --schedule 10:3 5:3 --cost-only   # FMT GFLOP only
    python benchmarks/streaming.py --features-only --sizes official --chunk-frames 10  # live features

For every (size, dtype), in a fresh subprocess (so peak RSS is its own), with random weights
(``float_core.bench.random_model``: the released weights cannot be downloaded here):

* **file**: ``stream(array)`` of ``--seconds`` of speech: time to first frame (TTFF), steady
  fps (frames after the first chunk over the time after it), real-time factor (wall / media).
* **live**: a real-time paced source (100 ms chunks): TTFF and the latency from the arrival of
  the last sample a chunk depends on (its end + look-ahead) to the chunk being ready
  (median, p90, max); meaningful only where generation keeps up with real time.
* **drift**: ``--drift-minutes`` of live input (as fast as it is consumed: speech and silence)
  through the fragmented MP4 writer: audio seconds minus video seconds in the stream and in the
  file, RSS after the first minute and at the end, peak RSS.
* **features** (``--features`` / ``--features-only``): w_a of the live spans
  (``live_audio_features``, chunks of ``--chunk-frames``) against the whole clip's, for several
  context / look-ahead settings: max / mean absolute difference (and relative to mean |w_a|),
  the wav2vec2 GFLOP per audio second, and with ``--features-motion`` the motion difference.

The live schedule, each mode on its own:

* ``--delay K[:LOOKAHEAD] ...`` (``none``: whole windows): tiny widths with the official window
  (L = 50, L' = 10) so that the schedule shows, a real-time source of 40 ms blocks; the A/V
  delay of every speech frame (its last sample's arrival -> its frames yielded): p50/p90/max.
* ``--schedule K:LA[:LEN[:PAD]] ...``: official size, seeded random weights, the whole clip's
  features and the same noise per frame: the motion-latent step across chunk boundaries
  against the steps inside chunks (p50/p99/max), the difference from offline sampling, and the
  FMT GFLOP per audio second (torch FlopCounterMode); ``--cost-only``: the GFLOP alone.

Timings on a shared machine are noisy: the script prints the medians of what it measured and
asserts nothing about speed.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from float_core.bench import cpu_name, random_model  # noqa: E402
from float_core.config import FPS, StreamOptions  # noqa: E402
from float_core.media.audio import load_audio  # noqa: E402
from float_core.pipeline import FloatPipeline  # noqa: E402
from float_core.sampling import ChunkSchedule  # noqa: E402

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


def bench_features(pipe: FloatPipeline, seconds: float, settings: list[tuple[float, float]],
                   chunk_frames: int | None, motion: bool = False) -> list[dict[str, float]]:
    """Live w_a of the frames a stream commits (chunks of ``chunk_frames``, each on its own
    span of context + chunk + look-ahead) against the whole clip's w_a; with ``motion``, also
    the motion each gives with the same noise (official size: slow)."""
    from float_core.inputs import Prepared
    from float_core.streaming import live_audio_features

    from float_core.bench import count_gflop

    wave = speech_of(seconds)
    whole = pipe.prepare_audio(wave)
    scale = float(whole.audio_features.abs().mean())
    offline = count_gflop(lambda: pipe.encode_audio(torch.zeros(1, wave.size))) / seconds
    print(f"offline (whole clip) wav2vec2: {offline:.0f} GFLOP per audio second", flush=True)
    if motion:
        source = pipe.prepare_image(str(PORTRAIT))
        ref_motion = pipe.sample_motion(Prepared(source, whole), seed=0, emotion="neutral")
    rows = []
    for context, lookahead in settings:
        live = live_audio_features(pipe, wave, context_seconds=context, lookahead_seconds=lookahead,
                                   chunk_frames=chunk_frames)
        diff = (live - whole.audio_features).abs()
        row = {"context_s": context, "lookahead_s": lookahead, "chunk_frames": chunk_frames,
               "wa_max": float(diff.max()), "wa_mean": float(diff.mean()), "wa_mean_rel": float(diff.mean()) / scale,
               "encoder_gflop_per_s": encoder_gflop_per_second(pipe, context, lookahead, chunk_frames)}
        if motion:
            m = pipe.sample_motion(Prepared(source, dataclasses.replace(whole, audio_features=live)),
                                   seed=0, emotion="neutral")
            mdiff = (m - ref_motion).abs()
            row |= {"motion_max": float(mdiff.max()), "motion_mean": float(mdiff.mean()),
                    "motion_mean_rel_std": float(mdiff.mean() / ref_motion.std())}
        rows.append(row)
        print_features(row, pipe.model.fmt.num_frames)
    return rows


def encoder_gflop_per_second(pipe: FloatPipeline, context: float, lookahead: float, chunk_frames: int | None) -> float:
    """wav2vec2 GFLOP per second of audio of a live stream in the steady state: one span of
    context + chunk + look-ahead per chunk (FlopCounterMode)."""
    from float_core.bench import count_gflop

    k = chunk_frames or pipe.model.fmt.num_frames
    samples = int(round((context + lookahead) * RATE)) + k * 640
    span = torch.zeros(1, samples)
    return count_gflop(lambda: pipe.encode_audio(span)) * FPS / k


def print_features(row: dict[str, Any], window: int | None) -> None:
    chunk = row["chunk_frames"]
    what = f"chunks of {chunk}" if chunk else f"windows of {window}"
    text = (f"live w_a ({what}, context {row['context_s']:g} s, look-ahead {row['lookahead_s']:g} s) vs whole "
            f"clip: max {row['wa_max']:.3f}, mean {row['wa_mean']:.4f} ({100 * row['wa_mean_rel']:.1f}% of mean |w_a|); "
            f"wav2vec2 {row['encoder_gflop_per_s']:.0f} GFLOP per audio second")
    if "motion_max" in row:
        text += (f"; motion max {row['motion_max']:.3f}, mean {row['motion_mean']:.4f} "
                 f"({100 * row['motion_mean_rel_std']:.1f}% of its std)")
    print(text, flush=True)


def bench_delay(pipe: FloatPipeline, source: Any, seconds: float, chunk_frames: int | None,
                lookahead: float) -> dict[str, float]:
    """A/V delay of a live stream fed in real time (40 ms blocks, as a microphone): for every
    speech frame, the time from the arrival of its last sample to its chunk being yielded."""
    wave = speech_of(seconds)
    arrived: list[float] = []

    def source_iter() -> Iterator[np.ndarray]:
        t0 = time.perf_counter()
        for i, start in enumerate(range(0, wave.size, 640)):
            time.sleep(max(0.0, t0 + i * 0.04 - time.perf_counter()))
            arrived.append(time.perf_counter())  # frame i's samples, yielded now
            yield wave[start:start + 640]

    delays, latencies = [], []
    for chunk in pipe.stream(source, source_iter(), seed=0, chunk_frames=chunk_frames, lookahead_seconds=lookahead):
        now = time.perf_counter()
        latencies.append(chunk.latency)
        delays += [now - arrived[f] for f, speaking in zip(range(chunk.start_frame, chunk.end_frame), chunk.speaking)
                   if speaking and f < len(arrived)]
    d, lat = np.array(delays), np.array(latencies)
    return {"chunk_frames": chunk_frames, "lookahead_s": lookahead, "frames": len(d),
            "p50": float(np.percentile(d, 50)), "p90": float(np.percentile(d, 90)), "max": float(d.max()),
            "compute_p50": float(np.median(lat)), "compute_max": float(lat.max())}


def print_delay(row: dict[str, Any]) -> None:
    k = row["chunk_frames"]
    print(f"{'whole windows' if k is None else f'k={k}':>13}, look-ahead {row['lookahead_s']:.2f} s: A/V delay over "
          f"{row['frames']} speech frames p50 {row['p50']:.2f} s, p90 {row['p90']:.2f} s, max {row['max']:.2f} s "
          f"(of it, chunk ready after its last sample: median {row['compute_p50']:.2f} s, "
          f"max {row['compute_max']:.2f} s)", flush=True)


# ---------------------------------------------------------------------------- the live schedule
def seam_stats(motion: torch.Tensor, k: int) -> dict[str, float]:
    """Frame-to-frame motion-latent steps ``|m_f - m_{f-1}|`` at chunk starts (f a multiple of
    k, f > 0: the seams) against every other step (inside chunks): p50 / p99 / max of each."""
    steps = (motion[1:] - motion[:-1]).norm(dim=-1).numpy()  # steps[f - 1]: into frame f
    frames = np.arange(1, motion.shape[0])
    seam = frames % k == 0
    out: dict[str, float] = {"seams": int(seam.sum())}
    for name, part in (("inside", steps[~seam]), ("seam", steps[seam])):
        out |= {f"{name}_p50": float(np.percentile(part, 50)), f"{name}_p99": float(np.percentile(part, 99)),
                f"{name}_max": float(part.max())}
    return out


def fmt_gflop_per_second(fmt: torch.nn.Module, pass_frames: int, committed: int, nfe: int = 10) -> float:
    """FMT GFLOP per second of audio (torch FlopCounterMode, guided: a = 2, e = 1, three branches):
    one pass of ``L' + pass_frames`` positions per ``committed`` frames, ``nfe`` Euler evaluations."""
    from float_core.bench import count_gflop

    d, d_a, Lp = fmt.dim_w, fmt.dim_a, fmt.num_prev_frames
    x, wa = torch.randn(1, pass_frames, d), torch.randn(1, pass_frames, d_a)
    args = (torch.rand(1), x, wa, torch.randn(1, d), torch.rand(1, fmt.dim_e), torch.randn(1, Lp, d),
            torch.randn(1, Lp, d_a))
    per_eval = count_gflop(lambda: fmt.guided_velocity(*args, a_cfg=2.0, e_cfg=1.0))
    return per_eval * nfe * FPS / committed


def parse_schedule(text: str) -> ChunkSchedule:
    """``k:lookahead[:length[:padding]]`` (frames; length "full" = L, "short" = k + lookahead)."""
    parts = text.split(":")
    k, la = int(parts[0]), int(parts[1])
    length = None if len(parts) < 3 or parts[2] == "short" else (10**6 if parts[2] == "full" else int(parts[2]))
    return ChunkSchedule(frames=k, lookahead=la, length=length, padding=parts[3] if len(parts) > 3 else "repeat")


def schedule_name(chunk: ChunkSchedule, window: int) -> str:
    length = "short" if chunk.length is None else ("full" if chunk.length >= window else str(chunk.length))
    return f"k={chunk.frames} look-ahead={chunk.lookahead} pass={length} pad={chunk.padding}"


def bench_cost(schedules: list[ChunkSchedule], size: str = "official") -> None:
    """FMT GFLOP per second of audio of every schedule against whole windows (no sampling)."""
    fmt = random_model(size).fmt
    L = fmt.num_frames
    offline = fmt_gflop_per_second(fmt, L, L)
    print(f"offline (whole windows): FMT {offline:.4g} GFLOP per audio second")
    lengths: dict[int, float] = {}
    for chunk in schedules:
        n = chunk.pass_length(L)
        if n not in lengths:
            lengths[n] = fmt_gflop_per_second(fmt, n, 1)
        cost = lengths[n] / chunk.frames
        print(f"{schedule_name(chunk, L)}: FMT {cost:.4g} GFLOP per audio second ({cost / offline:.2f}x offline)",
              flush=True)


def bench_schedule(schedules: list[ChunkSchedule], seconds: float, size: str = "official") -> list[dict[str, Any]]:
    """Official size, seeded random weights: every schedule's motion (whole-clip features, the
    offline noise of each frame) against offline sampling: seams, difference, FMT cost."""
    from float_core.inputs import Prepared

    pipe = build(size, "float32")
    fmt = pipe.model.fmt
    L = fmt.num_frames
    source = pipe.prepare_image(str(PORTRAIT))
    speech = pipe.prepare_audio(speech_of(seconds))
    prepared = Prepared(source, speech)
    emotion = pipe.resolve_emotion(prepared)
    t0 = time.perf_counter()
    offline = pipe.sample_motion(prepared, seed=0, emotion=emotion.tolist())
    rows = [{"schedule": "offline (whole windows)", "gflop_per_s": fmt_gflop_per_second(fmt, L, L),
             "wall_s": time.perf_counter() - t0, **seam_stats(offline, L)}]
    print_schedule(rows[-1])
    scale = float(offline.std())
    lengths: dict[int, float] = {}
    for chunk in schedules:
        t0 = time.perf_counter()
        motion = pipe.sample_motion(prepared, seed=0, emotion=emotion.tolist(), chunk=chunk)
        wall = time.perf_counter() - t0
        n = chunk.pass_length(L)
        if n not in lengths:
            lengths[n] = fmt_gflop_per_second(fmt, n, 1)
        diff = (motion - offline).abs()
        rows.append({"schedule": schedule_name(chunk, L), "gflop_per_s": lengths[n] / chunk.frames, "wall_s": wall,
                     "motion_mean_rel_std": float(diff.mean()) / scale, "motion_max": float(diff.max()),
                     **seam_stats(motion, chunk.frames)})
        print_schedule(rows[-1], rows[0]["gflop_per_s"])
    return rows


def print_schedule(row: dict[str, Any], offline_gflop: float | None = None) -> None:
    cost = f"FMT {row['gflop_per_s']:.4g} GFLOP per audio second"
    if offline_gflop:
        cost += f" ({row['gflop_per_s'] / offline_gflop:.2f}x offline)"
    diff = (f"; motion vs offline: mean |diff| {100 * row['motion_mean_rel_std']:.1f}% of its std, "
            f"max {row['motion_max']:.3f}") if "motion_max" in row else ""
    print(f"{row['schedule']}: {cost}; steps inside chunks p50 {row['inside_p50']:.3f} p99 {row['inside_p99']:.3f} "
          f"max {row['inside_max']:.3f}; across {row['seams']} seams p50 {row['seam_p50']:.3f} "
          f"p99 {row['seam_p99']:.3f} max {row['seam_max']:.3f}{diff} [{row['wall_s']:.0f} s]", flush=True)


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
        settings = [tuple(float(v) for v in text.split(":")) for text in args.feature_settings]
        result["features"] = bench_features(pipe, args.feature_seconds, settings, args.chunk_frames)
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
        print(name, end=" ")
        print_features(row, None)
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
    p.add_argument("--feature-settings", nargs="+", default=["0.5:0.2", "1:0.1", "1:0.2", "1:0.3", "1:0.4", "2:0.2", "4:0.2", "4:0.12"],
                   metavar="CONTEXT:LOOKAHEAD", help="seconds of left context and look-ahead to compare")
    p.add_argument("--chunk-frames", type=lambda v: None if v == "none" else int(v), default=10,
                   help="live chunk size for --features-only (none: whole windows)")
    p.add_argument("--features-motion", action="store_true", help="also sample motion with each feature setting")
    p.add_argument("--delay", nargs="*", metavar="K[:LOOKAHEAD]",
                   help="A/V delay of a real-time 40 ms-block source on tiny widths with the official window "
                        "(L = 50, L' = 10) for each chunk size (none: whole windows) and look-ahead, and exit")
    p.add_argument("--schedule", nargs="*", metavar="K:LA[:LEN[:PAD]]",
                   help="official size: seams, difference from offline and FMT cost of chunk schedules "
                        "(frames; LEN short|full|n, PAD repeat|null) and exit")
    p.add_argument("--cost-only", action="store_true", help="with --schedule: only the FMT GFLOP (no sampling)")
    p.add_argument("--one", nargs=2, metavar=("SIZE", "DTYPE"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.schedule is not None and args.cost_only:
        print(f"{args.sizes[0]} size; FlopCounterMode, NFE 10 Euler, a_cfg 2, e_cfg 1 (three branches)")
        bench_cost([parse_schedule(text) for text in args.schedule], args.sizes[0])
        return
    if args.schedule is not None:
        print(f"machine: {os.cpu_count()} CPUs, torch {torch.__version__}, {torch.get_num_threads()} threads; "
              f"{args.sizes[0]} size, random weights, {args.seconds:g} s of speech, seed 0, NFE 10, a_cfg 2, e_cfg 1")
        bench_schedule([parse_schedule(text) for text in args.schedule], args.seconds, args.sizes[0])
        return
    if args.one:
        args.size, args.dtype = args.one
        print("RESULT " + json.dumps(run_one(args)))
        return
    if args.delay is not None:
        print(f"machine: {os.cpu_count()} CPUs ({cpu_name()}), torch {torch.__version__}, {torch.get_num_threads()} "
              f"threads; tiny widths, L = 50, L' = 10, random weights; {args.live_seconds:g} s of speech in "
              f"40 ms blocks at real time; load average {os.getloadavg()[0]:.1f}")
        pipe = FloatPipeline(random_model("tiny-window"), device="cpu", dtype="float32")
        source = pipe.prepare_image(str(PORTRAIT))
        for text in args.delay or ["none", "10"]:
            k, _, la = text.partition(":")
            print_delay(bench_delay(pipe, source, args.live_seconds, None if k == "none" else int(k),
                                    float(la) if la else StreamOptions().lookahead_seconds))
        return
    if args.features_only:
        settings = [tuple(float(v) for v in text.split(":")) for text in args.feature_settings]
        for size in args.sizes:
            print(f"machine: {os.cpu_count()} CPUs ({cpu_name()}); {size} size, random weights, "
                  f"{args.feature_seconds:g} s of speech")
            bench_features(build(size, "float32"), args.feature_seconds, settings, args.chunk_frames,
                           args.features_motion)
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
