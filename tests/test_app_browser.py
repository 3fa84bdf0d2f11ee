"""FLOAT Studio in a real browser: Debian's headless Chromium driven by Playwright.

Uses the system Chromium through ``executable_path`` (Debian package ``chromium``, at
/usr/bin/chromium; ``FLOAT_CHROMIUM`` overrides the path) and never downloads a browser.
Without one the test skips, unless ``FLOAT_REQUIRE_BROWSER=1`` (CI), where it fails.
Screenshots are kept under ``test-artifacts/browser/`` (git-ignored); ``FLOAT_SCREENSHOT=path.png``
also saves the Studio tab after a generation with grouped sliders there (the README's image).

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


class RenderCounter:
    """Counts FloatPipeline.render calls (a stopped generation must not reach rendering)."""

    def __init__(self, pipe):
        self.calls = 0
        render = pipe.render

        def counted(*args, **kwargs):
            self.calls += 1
            return render(*args, **kwargs)

        pipe.render = counted


@pytest.fixture(scope="module")
def served():
    import app
    from float_core.pipeline import FloatPipeline
    from float_studio.model import PipelineHolder

    pipe = FloatPipeline.from_pretrained("tiny-random", device="cpu")
    renders = RenderCounter(pipe)
    demo = app.build_demo(PipelineHolder(lambda: pipe))
    demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", quiet=True, **app.launch_kwargs())
    yield demo.local_url, renders
    demo.close()


@pytest.fixture(scope="module")
def app_url(served):
    return served[0]


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
    # two bars per emotion: heard in the speech, used for sampling (the same mixture for "auto")
    assert page.locator("#float-emotion-plot .js-plotly-plot .bars .point").count() == 14
    assert "auto, soft probabilities" in page.inner_text("#float-emotion-plot")
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


def _upload_and_generate(page, app_url: str) -> None:
    page.goto(app_url)
    page.wait_for_selector("#float-status p", timeout=30_000)
    page.locator("#float-portrait input[type=file]").set_input_files(str(EXAMPLES / "portrait_astronaut.png"))
    page.wait_for_selector("#float-crop img", timeout=60_000)
    page.locator("#float-speech input[type=file]").set_input_files(str(EXAMPLES / "arctic_a0007.wav"))
    page.wait_for_selector("#float-emotion-timeline .js-plotly-plot", timeout=60_000)
    page.click("#float-generate")
    page.wait_for_selector("#float-video video[src*='.mp4']", timeout=120_000)


def _tops(page, selector: str) -> list[float]:
    return page.eval_on_selector_all(selector, "els => els.map(e => e.getBoundingClientRect().top)")


def test_emotion_timeline_grouped_sliders_and_a_preset(page, app_url):
    _upload_and_generate(page, app_url)
    # the emotion timeline: one line per emotion, labelled as reference for "auto" ...
    timeline = "#float-emotion-timeline .js-plotly-plot"
    assert page.locator(f"{timeline} .scatterlayer .trace").count() == 7
    assert "for reference" in page.inner_text("#float-emotion-timeline")
    # ... and as what is used for "Dynamic (per window)"
    page.click("#float-emotion input")
    page.get_by_role("option", name="Dynamic (per window)").click()
    page.wait_for_function("document.querySelector('#float-emotion-timeline').innerText.includes('own estimate')",
                           timeout=30_000)
    assert "dynamic: per window" in page.inner_text("#float-emotion-plot")

    # after the generation the directions are measured: headings appear and every slider sits
    # under its group's heading, labelled with its group
    page.wait_for_selector("#float-lambda-sliders .float-group-title:not(.hidden) h4", timeout=120_000)
    page.wait_for_function("document.querySelector('#float-lambda-1').innerText.includes('·')", timeout=30_000)
    groups = [g for g in ("mouth", "eyes", "head", "other")
              if page.locator(f"#float-group-{g}").is_visible()]
    assert groups, "no direction group heading is shown"
    headings = {g: page.locator(f"#float-group-{g}").bounding_box()["y"] for g in groups}
    assert list(headings.values()) == sorted(headings.values())  # mouth, eyes, head, other
    cells = 0
    for i, g in enumerate(groups):
        below = headings[groups[i + 1]] if i + 1 < len(groups) else float("inf")
        for top in _tops(page, f"#float-lambda-sliders > .float-group-{g}.float-lambda-cell"):
            assert headings[g] < top < below, g
            cells += 1
        count = int(page.inner_text(f"#float-group-{g}").split("(")[1].split(")")[0])
        assert count == page.locator(f"#float-lambda-sliders > .float-group-{g}.float-lambda-cell").count()
    assert cells == 20
    info = page.inner_text("#float-cell-1")
    assert "Moves:" in info and "%" in info  # the shares as the slider's note
    _shot(page, "04-grouped-sliders.png")
    shot = os.environ.get("FLOAT_SCREENSHOT")
    if shot:
        page.screenshot(path=shot, full_page=True)

    # a preset edits over time: the λ plot shows generated vs edited, the preview re-decodes
    before = page.locator("#float-preview img").get_attribute("src")
    traces_before = page.locator("#float-lambda-plot .scatterlayer .trace").count()
    page.click("#float-preset-lips-only")
    page.wait_for_function("document.querySelector('#float-preset-note').innerText.includes('lips only')",
                           timeout=30_000)
    page.wait_for_function("document.querySelector('#float-lambda-plot').innerText.includes('edited')",
                           timeout=30_000)
    page.wait_for_function("prev => document.querySelector('#float-preview img')?.src !== prev",
                           arg=before, timeout=30_000)
    # the held directions are drawn, each with a dashed "edited" trace next to its generated one
    assert page.locator("#float-lambda-plot .scatterlayer .trace").count() > traces_before
    _shot(page, "05-preset.png")
    assert not page.locator(".toast-body.error").count(), page.inner_text("body")
    assert not page.errors  # type: ignore[attr-defined]


def test_stop_cancels_a_generation(page, served):
    app_url, renders = served
    _upload_and_generate(page, app_url)
    first_video = page.locator("#float-video video").get_attribute("src")
    summary = page.inner_text("#float-summary")
    done = renders.calls
    # a slow setting: 50 evaluations per step, 4 per rk4 step, two windows
    page.fill("#float-nfe input[type=number]", "50")
    page.keyboard.press("Enter")
    page.locator("#float-solver").get_by_label("rk4").check()
    page.click("#float-generate")
    page.wait_for_timeout(300)
    page.click("#float-stop")
    page.wait_for_timeout(3000)
    assert renders.calls == done, "a stopped generation must not go on to render"
    assert page.locator("#float-video video").get_attribute("src") == first_video
    assert page.inner_text("#float-summary") == summary or "sampling" in page.inner_text("#float-summary")
    _shot(page, "06-stopped.png")
    # the app still works after a Stop (back to a quick setting)
    page.fill("#float-nfe input[type=number]", "2")
    page.keyboard.press("Enter")
    page.locator("#float-solver").get_by_label("euler").check()
    page.click("#float-generate")
    page.wait_for_function("prev => document.querySelector('#float-video video')?.src !== prev",
                           arg=first_video, timeout=120_000)
    assert renders.calls == done + 1
    assert not page.errors  # type: ignore[attr-defined]


def test_video_tab_dubs_the_example_and_the_video_plays(page, app_url):
    page.goto(app_url)
    page.wait_for_selector("#float-status p", timeout=30_000)
    page.get_by_role("tab", name="Video").click()
    page.locator("#video-mode").get_by_label("Dub (new speech on the video)").check()
    page.wait_for_selector("#video-run-dub", state="visible", timeout=10_000)
    # the example clip and an example voice, from the tab's galleries
    page.locator("#video-examples .gallery-item").first.click()
    page.wait_for_selector("#video-input video", timeout=30_000)
    page.locator("#video-voice-examples").get_by_text("arctic_a0007.wav").click()
    page.wait_for_function("document.querySelector('#video-speech').innerText.includes('0:04')",  # its 4 s
                           timeout=30_000)
    page.get_by_text("Sampling (speech)").click()
    page.fill("#video-nfe input[type=number]", "2")
    page.keyboard.press("Enter")
    _shot(page, "07-video-inputs.png")
    from helpers import one_torch_thread

    with one_torch_thread():  # the server's frame-by-frame tiny ops (see helpers.one_thread_module)
        page.click("#video-run-dub")
        page.wait_for_selector("#video-output video[src*='.mp4']", timeout=180_000)
    assert "100 frames" in page.inner_text("#video-summary")  # the speech's 4.0 s, at 25 fps
    # the video element really plays: its clock advances
    played = page.evaluate("""async () => {
        const v = document.querySelector('#video-output video');
        v.muted = true;
        await v.play();
        const t0 = v.currentTime;
        await new Promise(r => setTimeout(r, 1500));
        return [t0, v.currentTime, v.duration, v.videoWidth, v.videoHeight];
    }""")
    assert played[1] > played[0] + 0.3, played
    assert abs(played[2] - 4.0) < 0.1 and (played[3], played[4]) == (256, 256), played  # the clip's resolution
    # the side-by-side preview (input | output) of the dubbed frame
    page.wait_for_function("document.querySelector('#float-video-preview img')?.src?.length > 0", timeout=30_000)
    _shot(page, "08-video-dubbed.png")
    assert not page.locator(".toast-body.error").count(), page.inner_text("body")
    assert not page.errors  # type: ignore[attr-defined]


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")
def test_conversation_of_two_example_portraits_plays(page, app_url):
    """Conversation tab: one click on an example pair, a two-line script, and the video plays."""
    page.goto(app_url)
    page.wait_for_selector("#float-status p", timeout=30_000)
    page.get_by_role("tab", name="Conversation").click()
    page.locator("#conv-examples [data-testid='dataset-cell-0-0']").click()  # two example portraits at once
    page.wait_for_selector("#conv-portrait-1 img", timeout=30_000)
    page.wait_for_selector("#conv-portrait-2 img", timeout=30_000)
    page.locator("#conv-script textarea").fill("Ana: Hello Ben.\nBen: Hi Ana.")
    page.fill("#conv-nfe input[type=number]", "2")
    page.keyboard.press("Enter")
    page.click("#conv-generate")
    page.wait_for_selector("#conv-video video[src*='.mp4']", timeout=180_000)
    playing = page.wait_for_function(
        """() => {
            const v = document.querySelector('#conv-video video');
            if (v && v.paused && v.readyState >= 2) v.play();
            return v && v.currentTime > 0.3 && !v.paused ? {t: v.currentTime, w: v.videoWidth, h: v.videoHeight} : null;
        }""", timeout=60_000, polling=100).json_value()
    assert (playing["w"], playing["h"]) == (128, 78)  # two 64 px tiles side by side, name captions below
    page.wait_for_selector("#conv-timeline .js-plotly-plot", timeout=30_000)
    assert page.locator("#conv-timeline .js-plotly-plot .bars .point").count() >= 2  # Ana's and Ben's lines
    summary = page.inner_text("#conv-summary")
    assert "2 characters" in summary and "Ana" in summary and "Ben" in summary
    _shot(page, "conversation-01-playing.png")
    assert not page.locator(".toast-body.error").count(), page.inner_text("body")
    assert not page.errors  # type: ignore[attr-defined]
