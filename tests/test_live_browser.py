"""The Live tab in a real browser (headless Debian Chromium through Playwright, tiny model):
the streamed video starts playing, with its audio track, before the generation has finished.

Browser, app and page fixtures come from ``test_app_browser`` (same Chromium, same rules:
skipped without a browser unless ``FLOAT_REQUIRE_BROWSER=1``).
"""

from __future__ import annotations

import shutil

import pytest

from test_app_browser import EXAMPLES, _shot, browser, page  # noqa: F401 - fixtures

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")

@pytest.fixture(scope="module")
def app_url():
    import app
    from float_core.pipeline import FloatPipeline
    from float_studio.model import PipelineHolder

    pipe = FloatPipeline.from_pretrained("tiny-random", device="cpu")
    demo = app.build_demo(PipelineHolder(lambda: pipe))
    demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", quiet=True, **app.launch_kwargs())
    yield demo.local_url
    demo.close()


LONG_TEXT = ("This portrait is speaking while its video is still being generated. Every second of "
             "speech becomes a short segment, and the browser plays the segments as they arrive, "
             "so you see the first words long before the last ones have been made.")


def start_live(page, url: str, text: str) -> None:
    """Open the Live tab, add the example portrait, type ``text`` and press Start."""
    page.goto(url)
    page.wait_for_selector("#float-status p", timeout=30_000)
    page.get_by_role("tab", name="Live").click()
    page.locator("#live-portrait input[type=file]").set_input_files(str(EXAMPLES / "portrait_astronaut.png"))
    page.wait_for_selector("#live-portrait img", timeout=30_000)
    page.locator("#live-text textarea").fill(text)
    page.click("#live-start")


def test_live_video_plays_before_generation_finishes(page, app_url):  # noqa: F811 - fixtures
    start_live(page, app_url, LONG_TEXT)

    # Poll the player and the stats together: the video must be playing (time advancing) while
    # the stats still say the stream is running.
    seen = page.wait_for_function(
        """() => {
            const v = document.querySelector('#live-video video');
            const stats = document.querySelector('#live-stats')?.innerText || '';
            if (v && v.currentTime > 0.3 && !v.paused) return {t: v.currentTime, stats};
            return null;
        }""", timeout=180_000, polling=100).json_value()
    _shot(page, "live-01-playing.png")
    assert "streaming" in seen["stats"], f"the video only started after the stream ended: {seen}"
    assert "time to first frame" in seen["stats"] and "fps" in seen["stats"] and "real-time factor" in seen["stats"]

    page.wait_for_function("document.querySelector('#live-stats')?.innerText.includes('done')", timeout=300_000)
    final = page.inner_text("#live-stats")
    _shot(page, "live-02-done.png")
    # About 14 s of espeak-ng speech: far more than had been generated when playback began.
    generated = float(final.split(" s generated")[0].split("·")[-1])
    assert generated > seen["t"] + 3
    has_audio = page.evaluate("""() => {
        const v = document.querySelector('#live-video video');
        return v.mozHasAudio || Boolean(v.webkitAudioDecodedByteCount) || (v.audioTracks && v.audioTracks.length > 0);
    }""")
    assert has_audio, "the streamed video carries no audio"
    assert not page.locator(".toast-body.error").count(), page.inner_text("body")
    assert not page.errors  # type: ignore[attr-defined]


def test_live_stop_ends_the_stream(page, app_url):  # noqa: F811 - fixtures
    start_live(page, app_url, LONG_TEXT * 3)
    page.wait_for_function("document.querySelector('#live-stats')?.innerText.includes('streaming')",
                           timeout=180_000)
    page.click("#live-stop")
    page.wait_for_function("document.querySelector('#live-stats')?.innerText.includes('stopped')",
                           timeout=60_000)
    assert not page.errors  # type: ignore[attr-defined]
