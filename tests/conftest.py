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
