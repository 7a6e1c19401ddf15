"""The big-files page in real headless Chromium, through a TCP proxy the test can sever
(tests/tcp_proxy.py): the page, djust's LiveView socket and the upload socket all pass
through it, as through a network path or a load balancer.

* a 300 MiB upload whose connections are all cut mid-way finishes by itself;
* SIGKILL of the worker holding the upload (found through the ledger's lease and its
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
    attached_pids,
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
                                                     s3_client, s3_bucket, tmp_path):
    page = traced_page
    (w,) = workers(1)
    prepare(w)
    src = random_file(tmp_path / "disk-image.bin", 300 * MiB + 4321)
    with SeverableProxy([w.port]) as proxy:
        open_slot(page, f"http://127.0.0.1:{proxy.port}/files/", "files")
        page.set_input_files("#files-input", str(src))
        before = wait_received(page, 100 * MiB, timeout_ms=180_000)
        page.screenshot(path=str(av_shots / "01-uploading.png"))
        assert proxy.sever() >= 1  # the upload socket (and djust's) are cut
        row = _stored_row(page, "disk-image.bin", 300_000)
        page.screenshot(path=str(av_shots / "02-stored.png"))
    t = trace(page)
    assert t["ready"][0] == 0 and len(t["ready"]) >= 2, t["ready"]
    # Resumed, not restarted: the second `ready` is past what was durable at the cut.
    assert t["ready"][1] >= before["durable"] > 0, (t["ready"], before)
    assert t["opens"] == 1 and t["resumes"] >= 1, t
    # Re-sent bytes are bounded by what was in flight (one window) per cut.
    assert t["sent"] - src.stat().st_size <= 16 * MiB, t
    digest, size = object_sha256(s3_client, s3_bucket, row.get_attribute("data-key"))
    assert (digest, size) == (sha256_file(src), src.stat().st_size)


def test_sigkill_of_the_holding_worker_resumes_on_the_other(workers, traced_page, av_shots,
                                                           redis_server, s3_client, s3_bucket,
                                                           tmp_path):
    page = traced_page
    ws = workers(2)
    for w in ws:
        prepare(w)
    src = random_file(tmp_path / "footage.bin", 160 * MiB + 99)
    with SeverableProxy([w.port for w in ws]) as proxy:
        open_slot(page, f"http://127.0.0.1:{proxy.port}/files/", "files")
        page.set_input_files("#files-input", str(src))
        up = wait_received(page, 40 * MiB, timeout_ms=180_000)
        pid = holder_pid(redis_server.url, up["ref"])
        victim = next(w for w in ws if w.proc is not None and w.proc.pid == pid)
        survivor = next(w for w in ws if w is not victim)
        victim.kill(signal.SIGKILL)
        assert not victim.alive()
        page.screenshot(path=str(av_shots / "01-after-kill.png"))
        row = _stored_row(page, "footage.bin", 300_000)
        page.screenshot(path=str(av_shots / "02-stored.png"))
        assert survivor.alive()
    # The victim held the upload, then the survivor attached it and finished it.
    pids = attached_pids(redis_server.url, up["ref"])
    assert pid in pids and pids[-1] == survivor.proc.pid, (pids, pid)
    t = trace(page)
    assert len(t["ready"]) >= 2 and t["ready"][-1] > 0, t["ready"]
    assert t["opens"] == 1, t
    assert t["sent"] - src.stat().st_size <= 16 * MiB, t
    digest, size = object_sha256(s3_client, s3_bucket, row.get_attribute("data-key"))
    assert (digest, size) == (sha256_file(src), src.stat().st_size)
    assert proxy.severed == 0
