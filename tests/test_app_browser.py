"""FLOAT Studio in a real browser: Debian's headless Chromium driven by Playwright.

Uses the system Chromium through ``executable_path`` (Debian package ``chromium``, at
/usr/bin/chromium; ``FLOAT_CHROMIUM`` overrides the path) and never downloads a browser.
Without one the test skips, unless ``FLOAT_REQUIRE_BROWSER=1`` (CI), where it fails.
Screenshots are kept under ``test-artifacts/browser/`` (git-ignored).

The app runs on the tiny random model (``FLOAT_TEST_MODEL=tiny-random``, 64x64 frames).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("FLOAT_TEST_MODEL", "tiny-random")

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
ARTIFACTS = ROOT / "test-artifacts" / "browser"
REQUIRED = os.environ.get("FLOAT_REQUIRE_BROWSER", "") == "1"


def _missing(reason: str) -> None:
    """Skip, or fail where the browser test is required (CI)."""
    if REQUIRED:
        pytest.fail(f"{reason} (FLOAT_REQUIRE_BROWSER=1)")
    pytest.skip(reason)


def chromium_path() -> str | None:
    """The system Chromium: ``$FLOAT_CHROMIUM``, else ``chromium`` / ``chromium-browser`` on PATH."""
    explicit = os.environ.get("FLOAT_CHROMIUM")
    if explicit:
        return explicit if os.access(explicit, os.X_OK) else None
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("playwright is not installed (pip install -r requirements-dev.txt)")
    path = chromium_path()
    if path is None:
        _missing("no system Chromium (Debian: apt-get install -y chromium)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=path, headless=True,
                              args=["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"])
        yield b
        b.close()


@pytest.fixture(scope="module")
def app_url():
    import app
    from float_studio import state as st
    from float_core.pipeline import FloatPipeline

    pipe = FloatPipeline.from_pretrained("tiny-random", device="cpu")
    demo = app.build_demo(st.PipelineHolder(lambda: pipe))
    demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", quiet=True, **app.launch_kwargs())
    yield demo.local_url
    demo.close()


@pytest.fixture()
def page(browser, request):
    """A page that records JS errors and always leaves a final screenshot behind."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    pg = browser.new_page(viewport={"width": 1400, "height": 1600})
    pg.errors = []  # type: ignore[attr-defined]
    pg.on("pageerror", lambda e: pg.errors.append(str(e)))  # type: ignore[attr-defined]
    yield pg
    pg.screenshot(path=str(ARTIFACTS / f"{request.node.name}-final.png"), full_page=True)
    pg.close()


def _shot(page, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / name), full_page=True)


def test_upload_examples_generate_and_drag_a_lambda_slider(page, app_url):
    page.goto(app_url)
    page.wait_for_selector("#float-status p", timeout=30_000)
    assert "tiny random test model" in page.inner_text("#float-status")

    # upload the shipped example portrait and speech
    page.locator("#float-portrait input[type=file]").set_input_files(str(EXAMPLES / "portrait_astronaut.png"))
    page.wait_for_selector("#float-crop img", timeout=60_000)  # the detected 512 crop
    page.wait_for_selector("#float-crop-box img", timeout=10_000)  # the photo with the box
    page.locator("#float-speech input[type=file]").set_input_files(str(EXAMPLES / "arctic_a0007.wav"))
    # the emotion plot appears as soon as the speech is analysed, before any sampling
    page.wait_for_selector("#float-emotion-plot .js-plotly-plot", timeout=60_000)
    assert page.locator("#float-emotion-plot .js-plotly-plot .bars .point").count() == 7
    assert "from the speech" in page.inner_text("#float-emotion-plot")
    _shot(page, "01-inputs-analysed.png")

    page.click("#float-generate")
    page.wait_for_selector("#float-video video[src*='.mp4']", timeout=120_000)
    page.wait_for_selector("#float-lambda-plot .js-plotly-plot", timeout=30_000)
    page.wait_for_function("document.querySelector('#float-preview img')?.src?.length > 0", timeout=30_000)
    assert "100 frames" in page.inner_text("#float-summary")  # 4.0 s at 25 fps
    assert page.locator("#float-lambda-plot .js-plotly-plot .scatterlayer .trace").count() >= 5
    assert page.locator("#float-emotion-plot .js-plotly-plot").count() == 1
    _shot(page, "02-generated.png")
    before = page.locator("#float-preview img").get_attribute("src")

    # drag λ1 with the mouse to the right end of its track: the preview re-decodes the frame
    slider = page.locator("#float-lambda-1 input[type=range]")
    assert float(slider.get_attribute("max")) > 0, "slider ranges are set from the motion"
    slider.scroll_into_view_if_needed()
    box = slider.bounding_box()
    assert box is not None
    y = box["y"] + box["height"] / 2
    page.mouse.move(box["x"] + box["width"] / 2, y)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] - 1, y, steps=8)
    page.mouse.up()
    page.wait_for_function("prev => document.querySelector('#float-preview img')?.src !== prev",
                           arg=before, timeout=30_000)
    assert float(slider.input_value()) > 0
    page.wait_for_timeout(500)  # let the λ plot redraw with the dashed edited trace
    _shot(page, "03-lambda-edited.png")
    assert not page.locator(".toast-body.error").count(), page.inner_text("body")
    assert not page.errors  # type: ignore[attr-defined]
