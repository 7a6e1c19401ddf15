"""Resume after a page reload, in real headless Chromium (example/bigfiles/).

The client remembers an in-flight upload in IndexedDB under its fingerprint (name, size,
lastModified, SHA-256 of the first and last MiB). After a reload, picking the same file
`resume`s at the server's offset; the server re-checks the fingerprint it recorded, so a
remembered ref presented with another file's fingerprint is refused and that file starts
over, leaving the first upload untouched.
"""

from __future__ import annotations

import os
import shutil

import pytest

from tests.browser import avatar_support
from tests.browser.avatar_support import prepare
from tests.browser.upload_support import (
    TRACE,
    MiB,
    open_slot,
    random_file,
    record,
    trace,
    wait_received,
)
from tests.helpers import sha256_file
from tests.integration.conftest import object_sha256

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

av_browser = avatar_support.av_browser
av_shots = avatar_support.av_shots

#: Per-connection rate limit of the workers: the reload always lands mid-upload, however
#: fast the machine.
RATE = 16 * MiB
PART = 8 * MiB  # the server's part size (DEFAULTS["PART_SIZE"]) = the client's window

#: In the page: fingerprint the file of a throwaway (non-djust) input and remember `ref`
#: under that fingerprint, as if this file had been uploading before the reload.
SEED = """async ([ref]) => {
    const input = document.getElementById('probe');
    const f = await window.djust.uploads.resumable.fingerprint(input.files[0]);
    const key = location.pathname + '\\n' + 'files' + '\\n' + f.fp;
    await window.djust.uploads.resumable.memory.put(key, {ref: ref, slot: 'files',
        name: input.files[0].name, size: input.files[0].size, crcOffset: 0, crc: 0});
    return f.fp;
}"""


def _rows(page, n: int, timeout_ms: int = 180_000):
    page.wait_for_function("(n) => document.querySelectorAll('tr.stored-file').length >= n",
                           arg=n, timeout=timeout_ms)
    return page.query_selector_all("tr.stored-file")


def test_reload_then_pick_again_resumes_and_another_file_starts_over(
        workers, av_browser, av_shots, redis_server, s3_client, s3_bucket, tmp_path):
    site = prepare(workers(1, RATE_LIMIT_BYTES_PER_SECOND=RATE)[0])
    size = 80 * MiB + 777
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = random_file(tmp_path / "a" / "clip.bin", size)
    other = random_file(tmp_path / "b" / "clip.bin", size)  # same name and size
    stamp = first.stat().st_mtime
    os.utime(other, (stamp, stamp))  # and same mtime: only the content differs

    ctx = av_browser.new_context(viewport={"width": 1100, "height": 800})
    ctx.add_init_script(TRACE)
    page = ctx.new_page()
    try:
        url = site.base + "/files/"
        open_slot(page, url, "files")
        page.set_input_files("#files-input", str(first))
        before = wait_received(page, 40 * MiB)
        ref = before["ref"]
        page.screenshot(path=str(av_shots / "01-before-reload.png"))
        sent_before = trace(page)["sent"]
        page.reload()
        open_slot(page, url, "files")
        remembered = page.evaluate("window.djust.uploads.resumable.memory.all()")
        assert [r["ref"] for r in remembered] == [ref]
        durable_at_reload = record(redis_server.url, ref).durable
        assert durable_at_reload >= before["durable"]

        # Another file with the same name, size and mtime, presented with the remembered
        # ref (as a client-side fingerprint collision would): the server compares the
        # fingerprint it recorded, refuses, and this file starts over under a new ref.
        page.evaluate("""() => { const i = document.createElement('input');
            i.type = 'file'; i.id = 'probe'; document.body.appendChild(i); }""")
        page.set_input_files("#probe", str(other))
        page.evaluate(SEED, [ref])
        page.set_input_files("#files-input", str(other))
        (row_other,) = _rows(page, 1)
        t = trace(page)
        assert t["resumes"] == 1 and "not_found" in t["errors"], t
        assert t["opens"] == 1 and t["ready"] == [0], t
        assert t["sent"] == size, t
        rec = record(redis_server.url, ref)  # the first upload was not touched
        assert (rec.state, rec.durable) == ("uploading", durable_at_reload)
        assert row_other.get_attribute("data-key")
        page.screenshot(path=str(av_shots / "02-other-file-stored.png"))

        # The first file again: it resumes at the server's offset.
        page.evaluate("window.__djr.sent = 0; window.__djr.ready = []")
        page.set_input_files("#files-input", str(first))
        rows = _rows(page, 2)
        page.screenshot(path=str(av_shots / "03-resumed-stored.png"))
        t = trace(page)
        assert t["resumes"] == 2 and t["opens"] == 1, t
        assert t["ready"] == [durable_at_reload], t
        assert t["sent"] == size - durable_at_reload, t
        # Bytes sent twice (before the reload and again after it): at most one part, far
        # less than the file (the server spilled its partial part when the page went away).
        resent = max(0, sent_before - durable_at_reload)
        assert resent <= PART, (sent_before, durable_at_reload)
        print(f"reload: {sent_before} B sent before, resumed at {durable_at_reload}, "
              f"re-sent {resent} B of {size}")
        assert page.evaluate("window.djust.uploads.resumable.memory.all()") == []

        by_key = {r.get_attribute("data-key"): r for r in rows}
        assert len(by_key) == 2
        got = {object_sha256(s3_client, s3_bucket, k) for k in by_key}
        assert got == {(sha256_file(first), size), (sha256_file(other), size)}
    finally:
        ctx.close()


def test_same_fingerprint_other_content_fails_the_check_and_starts_over(
        workers, av_browser, av_shots, redis_server, s3_client, s3_bucket, tmp_path):
    """The fingerprint's blind spot: a file edited in place between its first and last MiB,
    same size and mtime. The client resumes the remembered ref, but its `finish` CRC is of
    the file it has (the prefix CRC is recomputed from the local file, never trusted from
    IndexedDB), so the server's whole-object check fails, the mixed object is discarded, and
    the client sends this file again from byte 0."""
    site = prepare(workers(1, RATE_LIMIT_BYTES_PER_SECOND=RATE)[0])
    size = 48 * MiB + 5
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = random_file(tmp_path / "a" / "notes.bin", size)
    edited = tmp_path / "b" / "notes.bin"
    shutil.copyfile(first, edited)
    with open(edited, "r+b") as f:
        f.seek(2 * MiB)
        f.write(os.urandom(4 * MiB))  # inside what the server will have stored
    stamp = first.stat().st_mtime
    os.utime(edited, (stamp, stamp))

    ctx = av_browser.new_context()
    ctx.add_init_script(TRACE)
    page = ctx.new_page()
    try:
        url = site.base + "/files/"
        open_slot(page, url, "files")
        page.set_input_files("#files-input", str(first))
        ref = wait_received(page, 24 * MiB)["ref"]
        page.reload()
        open_slot(page, url, "files")
        page.set_input_files("#files-input", str(edited))
        (row,) = _rows(page, 1)
        t = trace(page)
        assert t["resumes"] == 1 and "checksum_mismatch" in t["errors"], t
        assert t["opens"] == 1 and t["ready"][0] >= 16 * MiB and t["ready"][-1] == 0, t
        assert record(redis_server.url, ref).state == "failed"  # the mix was discarded
        digest, got = object_sha256(s3_client, s3_bucket, row.get_attribute("data-key"))
        assert (digest, got) == (sha256_file(edited), size)
        assert page.evaluate("window.djust.uploads.resumable.memory.all()") == []
        page.screenshot(path=str(av_shots / "stored.png"))
    finally:
        ctx.close()
