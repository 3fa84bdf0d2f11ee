"""Packaging: the wheel builds, its ``float-studio`` command lists every sub-command, the
dependency lists agree with requirements*.txt, and the engine imports no UI code."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SUBCOMMANDS = ("generate", "batch", "drive", "dub", "stream", "converse", "download", "convert", "bench", "train")


def _requirements(path: Path) -> set[str]:
    """Requirement lines of a requirements file (comments, blanks and -r includes dropped)."""
    out = set()
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line and not line.startswith("-r"):
            out.add(line.replace(" ", ""))
    return out


def test_pyproject_lists_the_requirements_files_dependencies():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = meta["optional-dependencies"]
    runtime = set(meta["dependencies"]) | set(extras["app"])
    assert runtime == _requirements(ROOT / "requirements.txt")
    dev = (set(extras["train"]) | set(extras["scale"]) | set(extras["agents"])
           | {d for d in extras["dev"] if not d.startswith("float-studio")})
    assert dev == _requirements(ROOT / "requirements-dev.txt")
    assert "float-studio[app,train,scale,agents]" in extras["dev"]
    assert meta["scripts"]["float-studio"] == "float_core.cli:main"
    ui = {"gradio", "plotly", "aiortc", "spaces"}
    assert not {re.split(r"[=<>]", d)[0] for d in meta["dependencies"]} & ui  # the UI is the app extra


def test_cli_help_lists_every_subcommand():
    out = subprocess.run([sys.executable, "-m", "float_core", "--help"], capture_output=True, text=True,
                         cwd=ROOT, timeout=60)
    assert out.returncode == 0 and out.stdout.startswith("usage: float-studio")
    listed = re.findall(r"^    (\w+)\s", out.stdout, flags=re.M)
    assert listed == list(SUBCOMMANDS), out.stdout
    for command in ("bench", "train"):  # delegated: their own parser's help
        sub = subprocess.run([sys.executable, "-m", "float_core", command, "--help"], capture_output=True,
                             text=True, cwd=ROOT, timeout=120)
        assert sub.returncode == 0 and "usage:" in sub.stdout, sub.stderr


def test_the_engine_imports_no_ui_code():
    """Every float_core module imports in a fresh interpreter without gradio or plotly (or Ray:
    only the batch command's Ray runner imports it, when it runs)."""
    modules = sorted(".".join(p.relative_to(ROOT).with_suffix("").parts)
                     for p in (ROOT / "float_core").rglob("*.py") if p.name != "__main__.py")
    code = ("import importlib, sys\n"
            f"for name in {modules!r}:\n"
            "    importlib.import_module(name)\n"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('gradio', 'plotly', 'float_studio', 'ray'))\n"
            "print(len(sys.modules)); assert not bad, bad\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert len(modules) > 30


@pytest.mark.slow
def test_the_wheel_builds_and_its_console_script_lists_every_subcommand(tmp_path):
    """``pip wheel . --no-deps`` on a copy of the sources; the wheel installed into a fresh
    virtual environment (sharing this interpreter's packages) runs ``float-studio --help``."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, src / name)
    for package in ("float_core", "float_studio"):
        shutil.copytree(ROOT / package, src / package, ignore=shutil.ignore_patterns("__pycache__"))
    wheels = tmp_path / "wheels"
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation",
                            "-w", str(wheels), "-q"], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr[-3000:]
    (wheel,) = wheels.glob("float_studio-*.whl")
    import zipfile

    names = zipfile.ZipFile(wheel).namelist()
    assert "float_core/data/float_manifest.json" in names and "float_studio/handlers.py" in names
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True, timeout=120)
    bin_dir = venv / ("Scripts" if sys.platform == "win32" else "bin")
    install = subprocess.run([str(bin_dir / "python"), "-m", "pip", "install", "--no-deps", "-q", str(wheel)],
                             capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr[-3000:]
    out = subprocess.run([str(bin_dir / "float-studio"), "--help"], capture_output=True, text=True,
                         cwd=tmp_path, timeout=60)
    assert out.returncode == 0, out.stderr
    assert re.findall(r"^    (\w+)\s", out.stdout, flags=re.M) == list(SUBCOMMANDS)
