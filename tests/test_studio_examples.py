"""The example gallery: at least 3 portraits and 3 voices, each with provenance and licence in
examples/README.md, usable as inputs, and their analyses shared by all sessions."""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("FLOAT_TEST_MODEL", "tiny-random")

from float_core.config import SamplingConfig  # noqa: E402
from float_studio import handlers as h  # noqa: E402
from float_studio import state as st  # noqa: E402
from float_studio.model import PipelineHolder  # noqa: E402

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
README = (EXAMPLES / "README.md").read_text(encoding="utf-8")


def _gallery():
    pytest.importorskip("gradio")
    from float_studio.ui import gallery

    return gallery()


def test_gallery_has_three_portraits_and_three_voices_each_documented():
    portraits, voices = _gallery()
    assert len(portraits) >= 3 and len(voices) >= 3
    rows = {m.group(1): m.group(2) for m in re.finditer(r"^\| `([^`]+)` \|(.*)\|$", README, flags=re.M)}
    for (path,) in portraits + voices:
        name = Path(path).name
        assert name in rows, f"{name} is not in examples/README.md"
        licence = rows[name].split("|")[-1].strip()
        assert re.search(r"public domain|CC0|CMU ARCTIC", licence), (name, licence)
        digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
        assert f"{digest}  {name}" in README, f"{name}: the SHA-256 in examples/README.md does not match"


def test_every_portrait_has_a_face_and_every_voice_is_speech_length():
    from float_core.media.audio import load_audio
    from float_core.media.image import load_image

    portraits, voices = _gallery()
    for (path,) in portraits:
        out = h.crop_preview(load_image(path), True, 256)
        assert out.crop is not None and out.faces, f"{path}: {out.note}"
    for (path,) in voices:
        wave = load_audio(path)
        assert 3.0 < wave.shape[0] / 16000 < 10.0 and np.abs(wave).max() > 0.05, path


def test_example_analyses_are_computed_once_for_all_sessions(monkeypatch):
    from float_core.media.image import load_image
    from float_core.pipeline import FloatPipeline

    _gallery()  # registers the examples
    pipe = FloatPipeline.from_pretrained("tiny-random", device="cpu")
    calls = []
    for name in ("prepare_image", "prepare_audio"):
        method = getattr(pipe, name)
        monkeypatch.setattr(pipe, name, lambda *a, _m=method, _n=name, **k: calls.append(_n) or _m(*a, **k))
    monkeypatch.setattr(st, "EXAMPLES", st.SharedExamples())
    _gallery()
    holder = PipelineHolder(lambda: pipe)
    photo, voice = load_image(EXAMPLES / "portrait_astronaut.png"), str(EXAMPLES / "arctic_a0007.wav")
    first, second = st.Session(), st.Session()
    *_, a = h.generate(holder, first, photo, voice, True, SamplingConfig(nfe=1, seed=0))
    *_, b = h.generate(holder, second, photo.copy(), voice, True, SamplingConfig(nfe=1, seed=0))
    assert calls == ["prepare_image", "prepare_audio"]  # the second session re-used both
    assert b.source is a.source and b.speech is a.speech  # one shared, read-only analysis
    other = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    list(h.generate(holder, first, other, voice, False, SamplingConfig(nfe=1, seed=0)))
    assert st.image_key(other) not in st.EXAMPLES.contents and calls[-1] == "prepare_image"
    assert len(st.EXAMPLES.cache) == 2  # an upload is never put into the shared cache
