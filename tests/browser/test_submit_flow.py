"""dj-submit and uploads in real headless Chromium (example/avatar/).

The worker's per-connection rate limit makes a ~1.9 MB avatar take a few seconds, so "Save"
is pressed while bytes are still on the way. Had the submit reached the view early,
``save_avatar`` would find no entry and show "Choose an image first": the card (and no
error) proves the handler ran once every byte was stored.
"""

from __future__ import annotations

import pytest

from tests.browser import avatar_support
from tests.browser.avatar_support import prepare
from tests.browser.test_avatar import png_bytes
from tests.browser.upload_support import TRACE, open_slot, trace

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

av_browser = avatar_support.av_browser
av_shots = avatar_support.av_shots

RATE = 512 * 1024  # bytes/s per upload connection: ~3.5 s for the avatar below


@pytest.fixture
def traced_page(av_browser):
    ctx = av_browser.new_context()
    ctx.add_init_script(TRACE)
    page = ctx.new_page()
    try:
        yield page
    finally:
        ctx.close()


@pytest.fixture
def slow_site(workers):
    return prepare(workers(1, RATE_LIMIT_BYTES_PER_SECOND=RATE, MAX_FRAME_BYTES=64 * 1024)[0])


@pytest.fixture
def avatar_file(tmp_path):
    src = tmp_path / "portrait.png"
    data = png_bytes(256, 256) + bytes(range(256)) * 6000  # ~1.7 MB, still a PNG
    src.write_bytes(data)
    return src, len(data)


def _saved_card(page, size: int) -> None:
    page.wait_for_selector("#avatar-card", timeout=60_000)
    assert page.inner_text("#avatar-name") == "portrait.png"
    assert page.inner_text("#avatar-size") == f"{size / (1024 * 1024):.1f} MB"
    assert page.query_selector("#avatar-error") is None


def test_auto_upload_false_uploads_on_submit_then_runs_handler(slow_site, traced_page, av_shots,
                                                               avatar_file):
    page, (src, size) = traced_page, avatar_file
    open_slot(page, slow_site.base + "/avatar/on-save/", "avatar")
    assert page.evaluate("window.djust.uploads.resumable.configs().avatar.auto_upload") is False
    page.set_input_files("#avatar-input", str(src))
    page.wait_for_selector("#avatar-preview img", timeout=10_000)
    page.wait_for_timeout(1000)
    # Picked, previewed, not sent: no upload socket yet.
    assert trace(page)["sockets"] == 0
    assert page.evaluate("document.querySelector('#avatar-progress').value") == 0
    page.screenshot(path=str(av_shots / "01-picked.png"))

    page.click("#save")
    # Held: djust's pending state shows while the bytes go.
    page.wait_for_selector("form[data-djust-form-pending] #saving:not([hidden])", timeout=10_000)
    assert page.evaluate("document.querySelector('#avatar-progress').value") < 100
    page.screenshot(path=str(av_shots / "02-uploading-on-save.png"))
    _saved_card(page, size)
    page.screenshot(path=str(av_shots / "03-card.png"))
    t = trace(page)
    assert t["opens"] == 1 and t["sent"] == size, t


def test_submit_during_auto_upload_is_held_until_stored(slow_site, traced_page, av_shots,
                                                        avatar_file):
    page, (src, size) = traced_page, avatar_file
    open_slot(page, slow_site.base + "/avatar/", "avatar")
    page.set_input_files("#avatar-input", str(src))
    page.wait_for_function("() => window.__djr.sent > 0", timeout=20_000)
    page.click("#save")
    page.wait_for_selector("form[data-djust-form-pending] #saving:not([hidden])", timeout=10_000)
    assert page.evaluate("document.querySelector('#avatar-progress').value") < 100
    page.screenshot(path=str(av_shots / "01-held.png"))
    _saved_card(page, size)
    page.screenshot(path=str(av_shots / "02-card.png"))
    t = trace(page)
    assert t["opens"] == 1 and t["sent"] == size, t


def test_submit_without_uploads_passes_straight_to_djust(av_browser, workers):
    """Nothing picked: the submit is not held, djust sends it and the view answers."""
    site = prepare(workers(1)[0])
    ctx = av_browser.new_context()
    page = ctx.new_page()
    try:
        open_slot(page, site.base + "/avatar/", "avatar")
        page.click("#save")
        page.wait_for_selector("#avatar-error", timeout=20_000)
        assert "Choose an image first" in page.inner_text("#avatar-error")
    finally:
        ctx.close()


def test_held_submit_is_dropped_when_the_upload_fails(slow_site, traced_page, av_shots,
                                                      tmp_path):
    """auto_upload=False, an .exe renamed .png: Save starts the upload, the server refuses
    it (magic bytes), and the held submit is dropped: the view shows the typed refusal from
    ``dj-upload-error``, not the "choose an image first" a premature ``save_avatar`` would."""
    page = traced_page
    src = tmp_path / "totally-an-image.png"
    src.write_bytes(b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff\x00\x00"
                    + b"\x00" * 48 + b"This program cannot be run in DOS mode." + b"\x00" * 9000)
    open_slot(page, slow_site.base + "/avatar/on-save/", "avatar")
    page.set_input_files("#avatar-input", str(src))
    page.click("#save")
    page.wait_for_selector("#avatar-error", timeout=30_000)
    page.wait_for_function(
        "() => !document.querySelector('form[data-djust-form-pending]')", timeout=10_000)
    page.wait_for_timeout(1000)  # a wrongly released submit would replace the message
    assert "not a valid image" in page.inner_text("#avatar-error")
    assert page.query_selector("#avatar-card") is None
    assert "invalid_content" in trace(page)["errors"]
    page.screenshot(path=str(av_shots / "refused.png"))
