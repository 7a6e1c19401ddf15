"""The big-files page (example/bigfiles/) in real headless Chromium: a multi-part upload
(acks drive the window) whose upload socket the test closes mid-way; the client resumes at
the server's durable offset and the stored object's sha256 equals the source."""

from __future__ import annotations

import pytest

from tests.browser import avatar_support
from tests.browser.avatar_support import prepare
from tests.helpers import MiB, make_random_file, sha256_file
from tests.integration.conftest import object_sha256

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

av_browser = avatar_support.av_browser
av_page = avatar_support.av_page
av_shots = avatar_support.av_shots

CUT_AND_TRACE = """() => {
    window.__cuts = 0; window.__ready = []; window.__acks = 0;
    const Real = window.WebSocket;
    window.WebSocket = function (url, protos) {
        const ws = protos ? new Real(url, protos) : new Real(url);
        if (String(url).includes('djust-resumable')) {
            ws.addEventListener('message', (ev) => {
                const m = JSON.parse(ev.data);
                if (m.type === 'ready') window.__ready.push(m.offset);
                if (m.type === 'ack') window.__acks++;
                if (m.type === 'progress' && m.received > 11 * 1048576 && window.__cuts === 0) {
                    window.__cuts++;
                    ws.close();
                }
            });
        }
        return ws;
    };
    window.WebSocket.prototype = Real.prototype;
    Object.assign(window.WebSocket, {CONNECTING: 0, OPEN: 1, CLOSING: 2, CLOSED: 3});
}"""


def test_multipart_upload_survives_a_cut(workers, av_page, av_shots, s3_client, s3_bucket,
                                         tmp_path):
    page = av_page
    w = prepare(workers(1)[0])
    src = make_random_file(tmp_path / "video.bin", 24 * MiB + 12345)
    page.goto(w.base + "/files/")
    page.wait_for_function(
        "() => window.djust.uploads.resumable"
        " && window.djust.uploads.resumable.isResumable('files')",
        timeout=20_000)
    page.evaluate(CUT_AND_TRACE)
    page.set_input_files("#files-input", str(src))
    page.wait_for_selector("#files-progress .upload-progress-item", timeout=10_000)
    page.screenshot(path=str(av_shots / "01-uploading.png"))
    row = page.wait_for_selector("tr.stored-file", timeout=120_000)
    page.screenshot(path=str(av_shots / "02-stored.png"))
    assert row.query_selector(".name").inner_text() == "video.bin"
    assert int(row.get_attribute("data-bytes")) == src.stat().st_size
    ready = page.evaluate("window.__ready")
    assert page.evaluate("window.__cuts") == 1
    assert page.evaluate("window.__acks") >= 1  # the window was driven by acks
    assert ready[0] == 0 and len(ready) >= 2 and ready[-1] > 8 * MiB, ready
    assert page.inner_text("#files-progress .upload-progress-text") == "100%"
    digest, size = object_sha256(s3_client, s3_bucket, row.get_attribute("data-key"))
    assert (digest, size) == (sha256_file(src), src.stat().st_size)


def test_pause_resume_speed_eta_and_stored_list(workers, av_browser, av_shots, s3_client,
                                                s3_bucket, tmp_path):
    """Two files side by side (rate-limited worker, so they take a few seconds): each row
    shows bytes, speed and ETA; Pause stops the bytes of one file (nothing more is sent while
    paused), Resume continues at the server's offset; both land byte-exact and are listed
    with size and CRC32C."""
    from tests.browser.upload_support import TRACE, open_slot, random_file, trace

    w = prepare(workers(1, RATE_LIMIT_BYTES_PER_SECOND=12 * MiB)[0])
    one = random_file(tmp_path / "camera-roll.tar", 48 * MiB + 3)
    two = random_file(tmp_path / "dataset.parquet", 20 * MiB + 7)
    ctx = av_browser.new_context(viewport={"width": 1100, "height": 700})
    ctx.add_init_script(TRACE)
    page = ctx.new_page()
    try:
        open_slot(page, w.base + "/files/", "files")
        page.set_input_files("#files-input", [str(one), str(two)])
        item = '#files-progress .upload-progress-item:has-text("camera-roll.tar")'
        page.wait_for_function("""(name) => [...document.querySelectorAll(
                '#files-progress .upload-progress-item')].some(i =>
                i.querySelector('.upload-progress-name').textContent === name
                && /\\/s .* left$/.test(i.querySelector('.upload-progress-meta').textContent))""",
                               arg=one.name, timeout=60_000)
        page.wait_for_function(
            "() => window.djust.uploads.resumable.list().some("
            "u => u.name === 'camera-roll.tar' && u.durable >= 8 * 1048576)", timeout=60_000)
        page.screenshot(path=str(av_shots / "01-uploading.png"))
        page.click(item + " .upload-pause")
        page.wait_for_selector(item + '[data-status="paused"]', timeout=10_000)
        assert page.inner_text(item + " .upload-pause") == "Resume"
        assert page.inner_text(item + " .upload-progress-meta") == "paused"
        # The other file goes on; this one sends nothing while paused.
        page.wait_for_selector('tr.stored-file[data-name="dataset.parquet"]', timeout=60_000)
        paused_at = page.evaluate(
            "window.djust.uploads.resumable.list().find(u => u.name === 'camera-roll.tar')")
        sent = trace(page)["sent"]
        page.wait_for_timeout(1500)
        assert trace(page)["sent"] == sent
        assert paused_at["received"] < one.stat().st_size
        page.screenshot(path=str(av_shots / "02-paused.png"))

        page.click(item + " .upload-pause")
        row = page.wait_for_selector('tr.stored-file[data-name="camera-roll.tar"]',
                                     timeout=120_000)
        page.screenshot(path=str(av_shots / "03-stored.png"))
        t = trace(page)
        assert t["opens"] == 2 and t["resumes"] == 1, t
        assert max(t["ready"]) >= paused_at["durable"] > 0, (t, paused_at)
        assert page.get_attribute(item, "data-status") == "complete"
        for src in (one, two):
            r = page.query_selector(f'tr.stored-file[data-name="{src.name}"]')
            assert int(r.get_attribute("data-bytes")) == src.stat().st_size
            assert len(r.query_selector("code.crc").inner_text()) == 8
            digest, size = object_sha256(s3_client, s3_bucket, r.get_attribute("data-key"))
            assert (digest, size) == (sha256_file(src), src.stat().st_size)
        assert row is not None
    finally:
        ctx.close()
