"""`python -m float_core.bench --quick`: the roofline table has every stage with positive numbers."""

from __future__ import annotations

import json

import torch

from float_core import bench

STAGES = ["image_encode", "audio_features", "emotion", "fmt_window", "decode_frame", "end_to_end"]


def test_quick_bench_reports_every_stage(tmp_path, capsys):
    threads = torch.get_num_threads()
    out = tmp_path / "bench.json"
    assert bench.main(["--quick", "--json", str(out)]) == 0
    assert torch.get_num_threads() == threads  # the in-process run restores the thread count
    rows = json.loads(out.read_text())
    assert [(r["size"], r["dtype"]) for r in rows] == [("tiny", "float32")]
    row = rows[0]
    assert row["peak_gflops"]["peak"] == max(row["peak_gflops"]["matmul"], row["peak_gflops"]["conv3x3"]) > 0
    assert [s["stage"] for s in row["stages"]] == STAGES
    for s in row["stages"]:
        for key in ("gflop", "seconds", "cpu_seconds", "gflops", "fraction_of_peak"):
            assert s[key] > 0, (s["stage"], key)
        assert abs(s["gflops"] - s["gflop"] / s["seconds"]) <= 1e-9 * s["gflops"]
        assert abs(s["fraction_of_peak"] - s["gflops"] / row["peak_gflops"]["peak"]) <= 1e-12
    by = {s["stage"]: s for s in row["stages"]}
    # End to end per audio second is the sum of its parts: 1 s of audio = 25 frames = three
    # windows of the tiny model's 10 frames.
    expected = (by["image_encode"]["gflop"] + by["audio_features"]["gflop"] + by["emotion"]["gflop"]
                + row["windows"] * by["fmt_window"]["gflop"] + row["frames"] * by["decode_frame"]["gflop"])
    assert row["frames"] == 25 and row["windows"] == 3
    assert abs(by["end_to_end"]["gflop"] - expected) <= 1e-9 * expected
    table = capsys.readouterr().out
    assert all(name in table for name in STAGES) and "of peak" in table


def test_flop_counter_counts_a_known_matmul():
    a, b = torch.randn(64, 32), torch.randn(32, 16)
    assert bench.count_gflop(lambda: a @ b) == 2 * 64 * 32 * 16 / 1e9
