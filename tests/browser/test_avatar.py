"""The avatar page (example/avatar/) in real headless Chromium: djust's LiveView socket plus
djust_resumable's upload endpoint, uploads.js in the page."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import pytest

from tests.browser import avatar_support
from tests.browser.avatar_support import prepare

# Fixtures of this module (the shared conftest.py belongs to all browser tests).
av_browser = avatar_support.av_browser
av_page = avatar_support.av_page
av_site = avatar_support.av_site
av_shots = avatar_support.av_shots

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

MAX_AVATAR_BYTES = 2 * 1024 * 1024


def png_bytes(width: int = 64, height: int = 64) -> bytes:
    """A real PNG (a gradient), built with zlib: no image library needed."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    raw = b"".join(
        b"\x00" + b"".join(bytes((x * 4 % 256, y * 4 % 256, 160)) for x in range(width))
        for y in range(height))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw))
            + chunk(b"IEND", b""))


def open_avatar(page, site) -> None:
    page.goto(site.base + "/avatar/")
    # djust's client mounted the view and our client took over the resumable slot.
    page.wait_for_function(
        "() => window.djust && window.djust.uploads && window.djust.uploads.resumable"
        " && window.djust.uploads.resumable.isResumable('avatar')", timeout=20_000)


def pick(page, path: Path) -> None:
    page.set_input_files("#avatar-input", str(path))


def test_png_preview_progress_card_replace(av_site, av_page, av_shots, tmp_path):
    site, page, shots = av_site, av_page, av_shots
    src = tmp_path / "me.png"
    data = png_bytes()
    src.write_bytes(data)
    open_avatar(page, site)
    page.screenshot(path=str(shots / "01-empty.png"))

    pick(page, src)
    page.wait_for_selector("#avatar-preview img", timeout=10_000)
    page.wait_for_function(
        "() => document.querySelector('#avatar-progress').value === 100", timeout=30_000)
    page.screenshot(path=str(shots / "02-uploaded.png"))

    page.click("#save")
    page.wait_for_selector("#avatar-card", timeout=20_000)
    assert page.inner_text("#avatar-name") == "me.png"
    assert page.inner_text("#avatar-size") == f"{len(data) / 1024:.1f} KB"
    assert page.query_selector("#avatar-error") is None
    page.screenshot(path=str(shots / "03-card.png"))

    page.click("#replace")
    page.wait_for_selector("#drop-zone", timeout=10_000)
    assert page.query_selector("#avatar-card") is None
    page.screenshot(path=str(shots / "04-replaced.png"))


def test_exe_renamed_png_is_refused(av_site, av_page, av_shots, tmp_path):
    site, page, shots = av_site, av_page, av_shots
    src = tmp_path / "totally-an-image.png"
    src.write_bytes(b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff\x00\x00"
                    + b"\x00" * 48 + b"This program cannot be run in DOS mode." + b"\x00" * 4000)
    open_avatar(page, site)
    pick(page, src)
    page.wait_for_selector("#avatar-error", timeout=30_000)
    assert "not a valid image" in page.inner_text("#avatar-error")
    assert page.query_selector("#avatar-card") is None
    page.screenshot(path=str(shots / "refused-magic.png"))


def test_oversize_is_refused(av_site, av_page, av_shots, tmp_path):
    site, page, shots = av_site, av_page, av_shots
    src = tmp_path / "huge.png"
    src.write_bytes(png_bytes() + b"\x00" * (MAX_AVATAR_BYTES + 1))
    open_avatar(page, site)
    pick(page, src)
    page.wait_for_selector("#avatar-error", timeout=30_000)
    assert "too large" in page.inner_text("#avatar-error")
    assert page.query_selector("#avatar-card") is None
    page.screenshot(path=str(shots / "refused-size.png"))


def test_crc32c_matches_reference(av_site, av_page):
    """The page's CRC32C (table-driven, incremental) against known values and
    google_crc32c, split at an arbitrary point as the uploader does."""
    site, page = av_site, av_page
    import google_crc32c

    open_avatar(page, site)
    # djust's own uploads object was kept (accessor property) for non-resumable slots.
    assert page.evaluate("""() => {
        const o = window.djust.uploads.resumable.original();
        return !!o && typeof o.bindHandlers === 'function' && o !== window.djust.uploads;
    }""")
    assert page.evaluate(
        "() => window.djust.uploads.resumable.crc32c(0, new TextEncoder().encode('123456789'))"
    ) == 0xE3069283
    data = bytes(range(256)) * 40
    got = page.evaluate("""(arr) => {
        const b = new Uint8Array(arr), c = window.djust.uploads.resumable.crc32c;
        return c(c(0, b.subarray(0, 777)), b.subarray(777));
    }""", list(data))
    assert got == google_crc32c.value(data)
    # crc32cCombine (used when a resumed upload's prefix CRC is read from the local file
    # while the rest is sent): pieces of any size, including past 2^32 bytes.
    a, b = data[:1000], data[1000:]
    assert page.evaluate("""([a, b, n]) => {
        const r = window.djust.uploads.resumable;
        return r.crc32cCombine(r.crc32c(0, new Uint8Array(a)), r.crc32c(0, new Uint8Array(b)), n);
    }""", [list(a), list(b), len(b)]) == google_crc32c.value(data)
    # A + 4 GiB of zeros, computed both ways (google_crc32c extends in C, 64 MiB at a time).
    zeros, chunk = 4 * 1024 ** 3 + 3, bytes(64 * 1024 * 1024)
    crc_zeros, crc_a_zeros = 0, google_crc32c.value(a)
    for off in range(0, zeros, len(chunk)):
        piece = chunk[: min(len(chunk), zeros - off)]
        crc_zeros = google_crc32c.extend(crc_zeros, piece)
        crc_a_zeros = google_crc32c.extend(crc_a_zeros, piece)
    assert page.evaluate("""([a, cz, n]) => {
        const r = window.djust.uploads.resumable;
        return r.crc32cCombine(r.crc32c(0, new Uint8Array(a)), cz, n);
    }""", [list(a), crc_zeros, zeros]) == crc_a_zeros


def test_connection_cut_mid_upload_resumes(workers, av_page, av_shots, tmp_path):
    """Small frames (64 KiB) so the upload takes many frames; the test closes the upload
    socket after ~300 KB: the client reconnects, resumes at the server's offset, finishes
    with the whole-file CRC32C (checked by the server), and Save finds the entry."""
    page, shots = av_page, av_shots
    # The file is smaller than the window, so the client may send all of it (and `finish`)
    # at once: the server's rate limit keeps most of it unread when the cut comes (without
    # it, on a busy machine the upload sometimes completed before the cut).
    w = prepare(workers(1, MAX_FRAME_BYTES=64 * 1024, RATE_LIMIT_BYTES_PER_SECOND=512 * 1024)[0])
    src = tmp_path / "big.png"
    data = png_bytes(256, 256) + bytes(range(256)) * 6000  # ~1.7 MB, still a PNG
    src.write_bytes(data)
    assert len(data) < MAX_AVATAR_BYTES
    open_avatar(page, w)
    page.evaluate("""() => {
        window.__cuts = 0; window.__sockets = 0; window.__ready = [];
        const Real = window.WebSocket;
        window.WebSocket = function (url, protos) {
            const ws = protos ? new Real(url, protos) : new Real(url);
            if (String(url).includes('djust-resumable')) {
                window.__sockets++;
                ws.addEventListener('message', (ev) => {
                    const m = JSON.parse(ev.data);
                    if (m.type === 'ready') window.__ready.push(m.offset);
                    if (m.type === 'progress' && m.received > 300000 && window.__cuts === 0) {
                        window.__cuts++;
                        ws.close();
                    }
                });
            }
            return ws;
        };
        window.WebSocket.prototype = Real.prototype;
        Object.assign(window.WebSocket, {CONNECTING: 0, OPEN: 1, CLOSING: 2, CLOSED: 3});
    }""")
    pick(page, src)
    page.wait_for_function(
        "() => document.querySelector('#avatar-progress').value === 100", timeout=60_000)
    assert page.evaluate("window.__cuts") == 1
    assert page.evaluate("window.__sockets") >= 2
    ready = page.evaluate("window.__ready")
    assert ready[0] == 0 and len(ready) >= 2 and ready[-1] > 0, ready  # resumed, not restarted
    page.click("#save")
    page.wait_for_selector("#avatar-card", timeout=20_000)
    assert page.inner_text("#avatar-name") == "big.png"
    assert page.inner_text("#avatar-size") == f"{len(data) / (1024 * 1024):.1f} MB"
    page.screenshot(path=str(shots / "resumed-card.png"))
