"""The big-files page in real headless Chromium, through a TCP proxy the test can sever
(tests/tcp_proxy.py): the page, djust's LiveView socket and the upload socket all pass
through it, as through a network path or a load balancer.

* a 300 MiB upload whose connections are all cut mid-way finishes by itself;
* SIGKILL of the worker holding a 300 MiB upload (found through the ledger's lease and its
  ``attached`` event) while two workers sit behind the proxy: the browser resumes on the
  other worker.

Each time the stored object's sha256 equals the source's.
"""

from __future__ import annotations

import signal

import pytest

from tests.browser import avatar_support
from tests.browser.avatar_support import prepare
from tests.browser.upload_support import (
    TRACE,
    MiB,
    events,
    holder_pid,
    open_slot,
    random_file,
    trace,
    wait_received,
)
from tests.helpers import sha256_file
from tests.integration.conftest import object_sha256
from tests.tcp_proxy import SeverableProxy

pytestmark = [pytest.mark.integration, pytest.mark.timeout(420)]

av_browser = avatar_support.av_browser
av_shots = avatar_support.av_shots


@pytest.fixture
def traced_page(av_browser):
    ctx = av_browser.new_context(viewport={"width": 1100, "height": 800})
    ctx.add_init_script(TRACE)
    page = ctx.new_page()
    try:
        yield page
    finally:
        ctx.close()


def _stored_row(page, name: str, timeout_ms: int):
    return page.wait_for_selector(f'tr.stored-file[data-name="{name}"]', timeout=timeout_ms)


def test_300mib_upload_survives_severed_connections(workers, traced_page, av_shots,
                                                     redis_server, s3_client, s3_bucket,
                                                     tmp_path):
    page = traced_page
    # Rate limit: the cut always lands mid-upload, however fast the machine.
    (w,) = workers(1, RATE_LIMIT_BYTES_PER_SECOND=64 * MiB)
    prepare(w)
    src = random_file(tmp_path / "disk-image.bin", 300 * MiB + 4321)
    size = src.stat().st_size
    with SeverableProxy([w.port]) as proxy:
        open_slot(page, f"http://127.0.0.1:{proxy.port}/files/", "files")
        page.set_input_files("#files-input", str(src))
        before = wait_received(page, 100 * MiB, timeout_ms=180_000)
        cut = proxy.sever()  # the upload socket (and djust's, and any HTTP) are cut
        assert cut >= 1
        page.screenshot(path=str(av_shots / "01-after-cut.png"))
        row = _stored_row(page, "disk-image.bin", 300_000)
        page.screenshot(path=str(av_shots / "02-stored.png"))
        bytes_up = proxy.bytes_up
    # From the ledger: attached at 0, cut, attached again past what was durable at the cut
    # (resumed, not restarted), then complete.
    timeline = events(redis_server.url, before["ref"])
    attaches = [e for e in timeline if e["event"] == "attached"]
    assert len(attaches) >= 2 and attaches[0]["durable"] == 0, timeline
    assert attaches[1]["durable"] >= before["durable"] > 0, (attaches, before)
    # Bytes through the proxy: the file once, plus at most one window re-sent per cut (and
    # a little HTTP/LiveView traffic).
    assert size <= bytes_up <= size + 16 * MiB, bytes_up - size
    print(f"300 MiB through a severed proxy: cut {cut} connection(s) at "
          f"{before['received']} B; {bytes_up - size} B beyond the file went up; "
          f"page trace {trace(page)}")
    digest, got = object_sha256(s3_client, s3_bucket, row.get_attribute("data-key"))
    assert (digest, got) == (sha256_file(src), size)


def test_sigkill_of_the_holding_worker_resumes_on_the_other(workers, traced_page, av_shots,
                                                           redis_server, s3_client, s3_bucket,
                                                           tmp_path):
    page = traced_page
    ws = workers(2, RATE_LIMIT_BYTES_PER_SECOND=64 * MiB)
    for w in ws:
        prepare(w)
    src = random_file(tmp_path / "footage.bin", 300 * MiB + 99)  # the size
    with SeverableProxy([w.port for w in ws]) as proxy:
        open_slot(page, f"http://127.0.0.1:{proxy.port}/files/", "files")
        page.set_input_files("#files-input", str(src))
        up = wait_received(page, 100 * MiB, timeout_ms=180_000)
        pid = holder_pid(redis_server.url, up["ref"])
        victim = next(w for w in ws if w.proc is not None and w.proc.pid == pid)
        survivor = next(w for w in ws if w is not victim)
        victim.kill(signal.SIGKILL)
        assert not victim.alive()
        page.screenshot(path=str(av_shots / "01-after-kill.png"))
        row = _stored_row(page, "footage.bin", 300_000)
        page.screenshot(path=str(av_shots / "02-stored.png"))
        assert survivor.alive()
        bytes_up = proxy.bytes_up
    # The victim held the upload, then the survivor attached it (past what was durable
    # before the kill: resumed, not restarted) and finished it.
    attaches = [e for e in events(redis_server.url, up["ref"]) if e["event"] == "attached"]
    pids = [int(str(e["worker"]).rsplit(":", 1)[1]) for e in attaches]
    assert pid in pids and pids[-1] == survivor.proc.pid, (pids, pid)
    assert attaches[-1]["durable"] >= up["durable"] > 0, (attaches, up)
    size = src.stat().st_size
    assert size <= bytes_up <= size + 16 * MiB, bytes_up - size  # at most a window again
    print(f"SIGKILL of the holder: {bytes_up - size} B beyond the file went up; "
          f"attaches {[(p, e['durable']) for p, e in zip(pids, attaches, strict=True)]}")
    digest, got = object_sha256(s3_client, s3_bucket, row.get_attribute("data-key"))
    assert (digest, got) == (sha256_file(src), size)
