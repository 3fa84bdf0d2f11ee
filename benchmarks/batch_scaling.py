"""Batch throughput: jobs per minute locally and with 1 and 2 Ray actors, and ray.init -> first result.

    python benchmarks/batch_scaling.py                          # tiny and official size
    python benchmarks/batch_scaling.py --sizes tiny --jobs 12 --seconds 2

For every model size (random weights, ``float_core.bench.random_model``: the timing depends
only on the sizes), the same job file (``--jobs`` jobs of ``--seconds`` of the example
speech, the example portrait, a different seed each, the default settings) is run:

* **local**: ``float_core.batch.run_batch`` in this process, one thread;
* **ray 1 / ray 2**: a fresh local Ray (``ray.init(num_cpus=2)``, no dashboard) and a pool of
  1 or 2 CPU actors of 1 thread each (``cpus_per_worker=1``).

For each run it prints the wall time of ``ray.init``, the time from ``ray.init`` (local: from
the start) to the first worker ready and to the first finished job, the whole wall time, jobs
per minute over the whole run and once the first worker was ready, the median job's wall and
CPU time (the CPU time is the steadier figure: wall time includes any wait for a core), and
the load average. ``--encode`` also
measures H.264 encoding (libx264, the engine's settings) of 512x512 frames, the CPU part of a
job that a GPU does not speed up. It prints numbers and asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from float_core.batch import ModelSpec, run_batch  # noqa: E402
from float_core.bench import cpu_name  # noqa: E402
from float_core.config import SAMPLE_RATE  # noqa: E402
from float_core.media.audio import load_audio  # noqa: E402

PORTRAIT = ROOT / "examples" / "portrait_astronaut.png"
SPEECH = ROOT / "examples" / "arctic_a0007.wav"


def tiny_pipeline():
    """The tiny model with random weights, float32 on the CPU (built in each worker)."""
    from float_core.bench import random_model
    from float_core.pipeline import FloatPipeline

    return FloatPipeline(random_model("tiny"), device="cpu", dtype="float32")


def official_pipeline():
    """The official-size model with random weights, float32 on the CPU (built in each worker)."""
    from float_core.bench import random_model
    from float_core.pipeline import FloatPipeline

    return FloatPipeline(random_model("official"), device="cpu", dtype="float32")


FACTORIES = {"tiny": tiny_pipeline, "official": official_pipeline}


def job_file(folder: Path, jobs: int, seconds: float) -> Path:
    wave = load_audio(SPEECH, target_rate=SAMPLE_RATE)
    speech = np.tile(wave, int(np.ceil(seconds * SAMPLE_RATE / wave.size)))[:int(seconds * SAMPLE_RATE)]
    sf.write(folder / "speech.wav", speech.astype(np.float32), SAMPLE_RATE)
    path = folder / "jobs.jsonl"
    path.write_text("".join(json.dumps({"id": f"job{i:03d}", "image": str(PORTRAIT),
                                        "audio": str(folder / "speech.wav"), "seed": i}) + "\n"
                            for i in range(jobs)))
    return path


def measure(size: str, mode: str, jobs_path: Path, out: Path) -> dict:
    """One run; mode "local", "ray1" or "ray2"."""
    load = os.getloadavg()[0]
    factory = FACTORIES[size]
    t0 = time.perf_counter()
    init = 0.0
    if mode == "local":
        summary = run_batch(jobs_path, out, ModelSpec(factory=factory, threads=1), retries=0)
    else:
        import ray

        temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # Ray's socket paths must stay short
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        ray.init(num_cpus=2, include_dashboard=False, _temp_dir=temp, log_to_driver=False, configure_logging=False,
                 runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}})
        init = time.perf_counter() - t0
        try:
            summary = run_batch(jobs_path, out, ModelSpec(factory=factory), ray=True, workers=int(mode[3:]),
                                cpus_per_worker=1, retries=0)
        finally:
            ray.shutdown()
            shutil.rmtree(temp, ignore_errors=True)
    wall = time.perf_counter() - t0
    ran = [r for r in summary.results if r.attempts]
    assert summary.ok == len(ran) == summary.total, [r.error for r in summary.results if r.error]
    ready = init + (summary.startup_seconds or 0.0)
    first = init + (summary.first_result_seconds or 0.0)
    return {
        "size": size, "mode": mode, "jobs": summary.total, "ray_init_s": init, "first_worker_ready_s": ready,
        "first_result_s": first, "wall_s": wall, "jobs_per_min": 60 * summary.total / wall,
        "jobs_per_min_after_ready": 60 * summary.total / max(wall - ready, 1e-9),
        "median_job_s": statistics.median(r.seconds for r in ran),
        "median_job_cpu_s": statistics.median(r.cpu_seconds for r in ran), "load_before": load,
        "load_after": os.getloadavg()[0],
    }


def encode_cost(frames: int = 50, size: int = 512) -> dict:
    """CPU seconds per 512x512 frame of the engine's H.264 writer (moving crops of the portrait)."""
    from PIL import Image

    from float_core.media.video import write_video

    photo = np.asarray(Image.open(PORTRAIT).convert("RGB").resize((size + 64, size + 64)))
    batch = np.stack([photo[i % 64:i % 64 + size, (2 * i) % 64:(2 * i) % 64 + size] for i in range(frames)])
    speech = load_audio(SPEECH, target_rate=SAMPLE_RATE)[:frames * SAMPLE_RATE // 25]
    with tempfile.TemporaryDirectory() as folder:
        c0, t0 = time.process_time(), time.perf_counter()
        write_video(Path(folder) / "enc.mp4", [batch], fps=25, audio=(speech, SAMPLE_RATE))
        cpu, wall = time.process_time() - c0, time.perf_counter() - t0
    return {"frames": frames, "cpu_s_per_frame": cpu / frames, "wall_s_per_frame": wall / frames}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", nargs="+", default=["tiny", "official"], choices=sorted(FACTORIES))
    parser.add_argument("--modes", nargs="+", default=["local", "ray1", "ray2"], choices=["local", "ray1", "ray2"])
    parser.add_argument("--jobs", type=int, default=None, help="jobs per run (default: 12 tiny, 4 official)")
    parser.add_argument("--seconds", type=float, default=None, help="speech per job (default: 2 tiny, 1 official)")
    parser.add_argument("--encode", action="store_true", help="also measure H.264 encoding of 512x512 frames")
    parser.add_argument("--json", default=None, help="write the rows to this file")
    args = parser.parse_args(argv)
    print(f"CPU: {cpu_name()}, {os.cpu_count()} cores; torch threads 1 per worker")
    rows = []
    for size in args.sizes:
        jobs = args.jobs or (12 if size == "tiny" else 4)
        seconds = args.seconds or (2.0 if size == "tiny" else 1.0)
        with tempfile.TemporaryDirectory() as folder:
            path = job_file(Path(folder), jobs, seconds)
            for mode in args.modes:
                row = measure(size, mode, path, Path(folder) / f"out_{mode}")
                row["speech_s"] = seconds
                rows.append(row)
                print(f"{size:8s} {mode:5s} {jobs} jobs of {seconds:g} s: ray.init {row['ray_init_s']:.1f} s, "
                      f"first worker ready {row['first_worker_ready_s']:.1f} s, first result "
                      f"{row['first_result_s']:.1f} s, wall {row['wall_s']:.1f} s -> "
                      f"{row['jobs_per_min']:.2f} jobs/min ({row['jobs_per_min_after_ready']:.2f} after the first "
                      f"worker was ready), median job {row['median_job_s']:.2f} s "
                      f"({row['median_job_cpu_s']:.2f} s CPU), load "
                      f"{row['load_before']:.1f}->{row['load_after']:.1f}", flush=True)
    if args.encode:
        enc = encode_cost()
        rows.append({"encode": enc})
        print(f"H.264 512x512: {enc['cpu_s_per_frame'] * 1e3:.1f} ms CPU per frame "
              f"({enc['wall_s_per_frame'] * 1e3:.1f} ms wall)")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
