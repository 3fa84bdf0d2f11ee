"""Shared test set-up: offline, no telemetry, float32; puts tests/ on sys.path for `helpers`."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
# dtype="auto" (the default everywhere) resolves to float32 for this whole process and every
# process it starts (the app servers, the CLI): an AMX or AVX512-BF16 CPU, or a recent GPU,
# would otherwise pick bfloat16, and the suite compares against float32 references. Set
# before any pipeline exists; the tests of bf16 and of the auto rule set their own.
os.environ["FLOAT_DTYPE"] = "float32"

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
