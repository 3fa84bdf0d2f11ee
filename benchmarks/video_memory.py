"""Peak memory of motion from a video (``FloatPipeline.encode_motion``) versus the video's length
and resolution: a 10-minute video should stay within 1.5x the RSS of a 1-minute one, and a 4K
video should cost about one decoded frame more than a small one.

The videos are the example portrait moving by the known motion of float_core.media.head_motion
(written once, H.264 ultrafast, into a temporary folder). Each measurement runs in a fresh
subprocess with the tiny random model (one thread: the numbers are memory, and one thread is
faster on a shared machine) and reports its own peak resident memory (``ru_maxrss``) and the
resident memory after loading the model and the face detector.

    python benchmarks/video_memory.py [--seconds 60 600] [--side 256] [--uhd-seconds 10]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _rss_mb() -> float:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _make_video(path: Path, seconds: float, width: int, height: int) -> None:
    import numpy as np

    sys.path.insert(0, str(ROOT))
    from float_core.media.head_motion import head_motion_frames
    from float_core.media.image import load_image
    from float_core.media.video import VideoWriter

    side = min(width, height)
    portrait = load_image(ROOT / "examples" / "portrait_astronaut.png")
    frames = int(seconds * 25)
    with VideoWriter(path, preset="ultrafast", crf=28) as writer:
        canvas = np.zeros((height, width, 3), np.uint8)
        # one second of motion, repeated: the video's content does not change what is measured
        cycle = list(head_motion_frames(portrait, 25, side=side))
        for k in range(frames):
            canvas[:, (width - side) // 2:(width - side) // 2 + side] = cycle[k % 25][:height]
            writer.write(canvas)


def _child(path: str) -> None:
    sys.path.insert(0, str(ROOT))
    import torch

    torch.set_num_threads(1)
    from float_core import FloatPipeline
    from float_core.media.face import default_detector

    pipe = FloatPipeline.from_pretrained("tiny-random", device="cpu")
    default_detector()
    base = _rss_mb()
    start = time.perf_counter()
    motion = pipe.encode_motion(path)
    print(json.dumps({"frames": int(motion.shape[0]), "wall_s": time.perf_counter() - start, "base_rss_mb": base,
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def _measure(path: Path) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, __file__, "--_child", str(path)], capture_output=True, text=True, env=env)
    if proc.returncode:
        raise SystemExit(proc.stderr[-3000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, nargs="+", default=[60.0, 600.0], help="video lengths")
    parser.add_argument("--side", type=int, default=256, help="frame size of those videos (square)")
    parser.add_argument("--uhd-seconds", type=float, default=10.0, help="length of the 3840x2160 video (0: none)")
    parser.add_argument("--_child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._child:
        _child(args._child)
        return 0
    print(f"cpu: {_cpu_name()}, {os.cpu_count()} cores")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        jobs = [(s, args.side, args.side) for s in args.seconds]
        if args.uhd_seconds > 0:
            jobs.append((args.uhd_seconds, 3840, 2160))
        for seconds, width, height in jobs:
            path = Path(tmp) / f"video_{int(seconds)}s_{width}x{height}.mp4"
            t0 = time.perf_counter()
            _make_video(path, seconds, width, height)
            made = time.perf_counter() - t0
            row = {"seconds": seconds, "size": f"{width}x{height}", "mp4_mb": path.stat().st_size / 2**20,
                   **_measure(path)}
            path.unlink()
            rows.append(row)
            print(f"{seconds:6.0f} s {row['size']:>9}: {row['frames']:6d} frames, "
                  f"peak RSS {row['peak_rss_mb']:7.1f} MB "
                  f"(after loading {row['base_rss_mb']:6.1f} MB), encode_motion {row['wall_s']:6.1f} s "
                  f"(video written in {made:.0f} s, {row['mp4_mb']:.1f} MB)", flush=True)
    small = [r for r in rows if r["size"] == f"{args.side}x{args.side}"]
    if len(small) > 1:
        print(f"peak RSS ratio {small[-1]['seconds']:.0f} s / {small[0]['seconds']:.0f} s: "
              f"{small[-1]['peak_rss_mb'] / small[0]['peak_rss_mb']:.2f}")
    return 0


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


if __name__ == "__main__":
    raise SystemExit(main())
