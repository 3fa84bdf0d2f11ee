"""The Call tab in a real browser: headless Debian Chromium with a fake microphone.

Chromium's ``--use-fake-device-for-media-stream`` microphone (a beep) and
``--use-fake-ui-for-media-stream`` (permission granted) let the page's own WebRTC client
(assets/call.js) call the app's ``POST /call/offer``; the test waits for the call's video
element to play, then hangs up. Skips without a system Chromium (see test_app_browser.py).
"""

from __future__ import annotations

import pytest

from test_app_browser import ARTIFACTS, _missing, chromium_path
from test_call import PORTRAIT, manager, served, wait_until  # noqa: F401 - shared fixtures

VIDEO_PLAYS = """() => { const v = document.querySelector('#float-call-video');
  return v && v.readyState >= 2 && v.currentTime > 1.0 && v.videoWidth > 0 && !v.paused; }"""


def launch_chromium(p, *extra: str):
    """Debian's Chromium with a fake microphone that needs no permission prompt."""
    path = chromium_path()
    if path is None:
        _missing("no system Chromium (Debian: apt-get install -y chromium)")
    return p.chromium.launch(executable_path=path, headless=True, args=[
        "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--use-fake-device-for-media-stream",
        "--use-fake-ui-for-media-stream", "--autoplay-policy=no-user-gesture-required",
        # ICE over 127.0.0.1 with plain addresses (no mDNS names, which need multicast look-ups).
        "--allow-loopback-in-peer-connection", "--disable-features=WebRtcHideLocalIpsWithMdns", *extra])


@pytest.fixture(scope="module")
def playwright():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("playwright is not installed (pip install -r requirements-dev.txt)")
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="module")
def browser(playwright):
    b = launch_chromium(playwright)  # the fake microphone beeps
    yield b
    b.close()


def open_call_tab(browser, url: str):
    page = browser.new_page(viewport={"width": 1400, "height": 1200})
    page.errors = []  # type: ignore[attr-defined]
    page.on("pageerror", lambda e: page.errors.append(str(e)))  # type: ignore[attr-defined]
    page.goto(url)
    page.get_by_role("tab", name="Call").click(timeout=60000)
    page.locator("#float-call-start").wait_for(state="visible", timeout=30000)
    return page


@pytest.fixture()
def call_page(browser, served, request):
    url, _ = served
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page = open_call_tab(browser, url)
    yield page
    page.screenshot(path=str(ARTIFACTS / f"{request.node.name}-final.png"), full_page=True)
    page.close()


def test_call_tab_connects_and_its_video_plays(call_page, manager):
    page = call_page
    page.locator("#float-call-portrait input[type=file]").set_input_files(str(PORTRAIT))
    page.locator("#float-call-portrait img").wait_for(timeout=20000)
    page.locator("#float-call-start").click()
    page.wait_for_selector('#float-call-state[data-state="connected"]', timeout=90000)
    page.wait_for_function(VIDEO_PLAYS, timeout=60000)
    size = page.evaluate("() => { const v = document.querySelector('#float-call-video');"
                         " return [v.videoWidth, v.videoHeight]; }")
    assert size == [64, 64]  # the tiny model's frames
    assert len(manager.calls) == 1
    call = next(iter(manager.calls.values()))
    assert call.state == "connected" and call.mic is not None and call.mic.samples > 0
    page.wait_for_function("() => /fps/.test(document.querySelector('#float-call-fps').textContent)",
                           timeout=15000)
    assert wait_until(lambda: call.output.stats.generated > 10, 30)
    page.locator("#float-call-hangup").click()
    page.wait_for_selector('#float-call-state[data-state="closed"]', timeout=10000)
    assert wait_until(lambda: not manager.calls, 15)
    assert page.errors == []


def test_call_tab_says_what_is_wrong(call_page, manager, monkeypatch):
    page = call_page
    page.locator("#float-call-start").click()
    page.wait_for_function("() => /Pick a portrait first/.test("
                           "document.querySelector('#float-call-error').textContent)", timeout=10000)
    for name in ("FLOAT_ASR_URL", "FLOAT_LLM_URL"):
        monkeypatch.delenv(name, raising=False)
    page.locator("#float-call-portrait input[type=file]").set_input_files(str(PORTRAIT))
    page.locator("#float-call-portrait img").wait_for(timeout=20000)
    page.get_by_label("Assistant (talk with it)").check()
    page.locator("#float-call-start").click()
    page.wait_for_function("() => /FLOAT_ASR_URL/.test(document.querySelector('#float-call-error').textContent)",
                           timeout=10000)
    assert page.locator("#float-call-state").get_attribute("data-state") == "failed"
    assert not manager.calls


def test_assistant_call_in_the_page_shows_the_transcript(playwright, served, manager, monkeypatch, tmp_path):
    """The fake microphone plays recorded speech; the local stub services answer; the page
    shows what was heard and what the portrait said."""
    import numpy as np
    import soundfile as sf

    from float_core.media.audio import load_audio
    from float_studio.call.stub_services import StubServices, serve_stub_services
    from test_call import SPEECH

    wav = tmp_path / "question.wav"  # the question, then silence long enough to end the turn
    sf.write(wav, np.concatenate([load_audio(SPEECH), np.zeros(48000, np.float32)]), 16000, subtype="PCM_16")
    stub_url, stub, stop = serve_stub_services(StubServices(transcript=["What is your name?"],
                                                            answer=["I am Zed."]))
    for name in ("FLOAT_ASR_URL", "FLOAT_LLM_URL", "FLOAT_TTS_URL"):
        monkeypatch.setenv(name, stub_url)
    b = launch_chromium(playwright, f"--use-file-for-fake-audio-capture={wav}")
    url, _ = served
    page = open_call_tab(b, url)
    try:
        page.locator("#float-call-portrait input[type=file]").set_input_files(str(PORTRAIT))
        page.locator("#float-call-portrait img").wait_for(timeout=20000)
        page.get_by_label("Assistant (talk with it)").check()
        page.locator("#float-call-view").scroll_into_view_if_needed()
        page.locator("#float-call-settings").get_by_text("Settings", exact=True).click()
        page.locator("#float-call-name textarea, #float-call-name input").first.fill("Zed")
        page.locator("#float-call-start").click()
        page.wait_for_selector('#float-call-transcript li[data-role="assistant"]', timeout=90000)
        lines = page.locator("#float-call-transcript li").all_inner_texts()
        assert lines[:2] == ["You: What is your name?", "Zed: I am Zed."], lines
        page.wait_for_function("() => /first answer frame/.test(document.querySelector('#float-call-latency')"
                               ".textContent)", timeout=60000)
        chat = next(d["body"] for s, d in stub.requests if s == "llm")
        assert "Zed" in chat["messages"][0]["content"]
        page.locator("#float-call-hangup").click()
        assert wait_until(lambda: not manager.calls, 15)
        assert page.errors == []
    finally:
        page.screenshot(path=str(ARTIFACTS / "test_assistant_call_in_the_page-final.png"), full_page=True)
        page.close()
        b.close()
        stop()
