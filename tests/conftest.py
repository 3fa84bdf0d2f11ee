"""Shared test set-up: offline, no telemetry; puts tests/ on sys.path for `helpers`."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import pytest
import torch


@pytest.fixture(autouse=True)
def _float32_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """``dtype="auto"`` resolves to float32 in tests on every machine (an AMX/AVX512-BF16 CPU
    would pick bfloat16): the suite compares against float32 references, and the bf16 paths are
    tested explicitly. Tests of the auto rule monkeypatch these checks themselves."""
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
