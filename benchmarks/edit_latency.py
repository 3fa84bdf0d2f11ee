"""Benchmark: how long a lambda-slider edit takes to show (the app's live preview path).

    python benchmarks/edit_latency.py                 # tiny + official sizes, engine + app round trip
    python benchmarks/edit_latency.py --no-server     # engine only

Engine path (what ``/preview`` runs): apply the lambda offsets to one motion latent, decode that
one frame with the cached source features, convert to uint8 (``float_studio.handlers.preview``),
then the PNG encode that Gradio does for the preview image. Random weights: the timing
depends only on the sizes. The server path times what a slider release costs the user:
``/preview`` through ``gradio_client`` against the real app (queue, HTTP, decode, PNG and
download included), after one ``/generate`` on a short clip. Prints a table and one JSON
line per configuration. This prints numbers; it is not a test.
"""

from __future__ import annotations

import argparse
import functools
import io
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def _stats(samples: list[float]) -> dict[str, float]:
    ms = sorted(1000 * s for s in samples)
    return {"median_ms": round(statistics.median(ms), 2), "p90_ms": round(ms[int(0.9 * (len(ms) - 1))], 2),
            "min_ms": round(ms[0], 2)}


def _time(fn: Callable[[], Any], repeats: int, warmup: int = 2) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


@functools.lru_cache(maxsize=None)
def build_pipeline(size: str, dtype: str):
    """A pipeline with random weights at the given size (no files needed; built once per size)."""
    import torch

    from float_core.config import FloatConfig
    from float_core.models.float_model import FloatModel
    from float_core.pipeline import FloatPipeline

    if size == "tiny":
        return FloatPipeline.tiny_random(device="cpu", dtype=dtype)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = FloatModel(FloatConfig.official())
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p) * (0.1 if p.ndim <= 1 else 0.02))
    return FloatPipeline(model, device="cpu", dtype=dtype)


def engine_latency(size: str, dtype: str, repeats: int, frames: int) -> dict[str, Any]:
    """Time the preview path of one slider edit on a pipeline of ``size``."""
    import torch
    from PIL import Image

    from float_core.config import SamplingConfig
    from float_studio import handlers as h
    from float_studio import state as st
    from float_studio.model import PipelineHolder

    t0 = time.perf_counter()
    pipe = build_pipeline(size, dtype)
    build_s = time.perf_counter() - t0
    cfg = pipe.config
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (cfg.image_size, cfg.image_size, 3), dtype=np.uint8)
    sess = st.Session()
    t0 = time.perf_counter()
    source = pipe.prepare_image(image, crop=False)
    encode_s = time.perf_counter() - t0
    speech = pipe.prepare_audio(np.zeros(frames * cfg.samples_per_frame, np.float32))
    gen = torch.Generator().manual_seed(0)
    motion = source.source_motion[None] + 0.1 * torch.randn(frames, cfg.style_dim, generator=gen)
    sess.install(st.Generation(1, "s", "a", source, speech, motion, pipe.motion_lambda(motion).numpy(),
                               speech.emotion_probs.numpy(), SamplingConfig(seed=0)))
    holder = PipelineHolder(lambda: pipe)
    offsets = [rng.uniform(-1, 1, cfg.motion_dim).astype(np.float32) for _ in range(repeats + 2)]
    it = iter(range(10**9))

    def edit() -> np.ndarray:
        i = next(it)
        return h.preview(holder, sess, i % frames, h.Edits(offsets[i % len(offsets)]))

    preview = _stats(_time(edit, repeats))
    frame = edit()

    def png() -> None:
        Image.fromarray(frame).save(io.BytesIO(), format="png")

    return {"size": size, "dtype": dtype, "image_size": cfg.image_size, "threads": torch.get_num_threads(),
            "build_s": round(build_s, 2), "encode_image_s": round(encode_s, 3),
            "preview": preview, "png_encode": _stats(_time(png, repeats))}


def server_latency(size: str, dtype: str, repeats: int, seconds: float = 0.4) -> dict[str, Any]:
    """Slider release to image: ``/preview`` through gradio_client against the real app."""
    import tempfile

    import soundfile as sf
    from gradio_client import Client, handle_file
    from PIL import Image

    import app
    from float_studio.model import PipelineHolder

    pipe = build_pipeline(size, dtype)
    demo = app.build_demo(PipelineHolder(lambda: pipe))
    demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", quiet=True, **app.launch_kwargs())
    try:
        with tempfile.TemporaryDirectory() as tmp:
            rng = np.random.default_rng(0)
            side = pipe.config.image_size
            Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(f"{tmp}/p.png")
            t = np.arange(int(seconds * 16000)) / 16000
            sf.write(f"{tmp}/s.wav", (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), 16000)
            client = Client(demo.local_url, verbose=False)
            t0 = time.perf_counter()
            client.predict(handle_file(f"{tmp}/p.png"), handle_file(f"{tmp}/s.wav"), False, False, 2.0, 1.0,
                           1, "euler", "auto", 0, api_name="/generate")
            generate_s = time.perf_counter() - t0
            frames = int(round(seconds * pipe.config.fps))
            m = pipe.config.motion_dim
            vals = [rng.uniform(-1, 1, m).tolist() for _ in range(repeats + 2)]
            it = iter(range(10**9))

            def edit() -> Any:
                i = next(it)
                return client.predict(i % frames, False, *vals[i % len(vals)], api_name="/preview")

            samples = _time(edit, repeats)
            return {"size": size, "dtype": dtype, "image_size": side, "path": "app /preview round trip",
                    "generate_s": round(generate_s, 2), "preview": _stats(samples)}
    finally:
        demo.close()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", nargs="+", default=["tiny", "official"], choices=["tiny", "official"])
    ap.add_argument("--dtypes", nargs="+", default=["float32"], choices=["float32", "bfloat16"])
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--frames", type=int, default=25)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--no-server", action="store_true", help="skip the /preview round trip through the app")
    args = ap.parse_args(argv)
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    rows = [engine_latency(s, d, args.repeats, args.frames) for s in args.sizes for d in args.dtypes]
    if not args.no_server:
        rows += [server_latency(s, d, args.repeats) for s in args.sizes for d in args.dtypes]
    print(f"{'config':<48}{'median ms':>10}{'p90 ms':>10}{'png ms':>9}")
    for r in rows:
        name = f"{r['size']} {r['dtype']} {r['image_size']}px {r.get('path', 'engine preview_frame')}"
        png = f"{r['png_encode']['median_ms']:>9.1f}" if "png_encode" in r else f"{'-':>9}"
        print(f"{name:<48}{r['preview']['median_ms']:>10.1f}{r['preview']['p90_ms']:>10.1f}{png}")
    for r in rows:
        print(json.dumps(r))


if __name__ == "__main__":
    main()
