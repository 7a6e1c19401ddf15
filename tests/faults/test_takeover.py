"""Takeover through nginx: a half-open holder hands over over the channel layer; a dead
holder's lease expires. Issue #5 section 3; durability rule 4 (docs/durability.md)."""

from __future__ import annotations

import asyncio
import signal

import pytest

from djust_resumable.conf import MiB
from tests.helpers import make_random_file

from .conftest import (
    Cluster,
    RecordingUploader,
    assert_swept_clean,
    check_stored,
    in_sender,
    wait_for,
)
from .tcp_proxy import TcpProxy

pytestmark = pytest.mark.integration


async def test_half_open_holder_hands_over_and_nothing_is_resent(fresh: Cluster, tmp_path):
    c = fresh
    ledger = c.ledger()
    proxy = await TcpProxy("127.0.0.1", c.nginx_port).start()
    size = 48 * MiB
    src = make_random_file(tmp_path / "src.bin", size)
    st: dict[str, object] = {}
    up: RecordingUploader

    async def on_progress(sent: int, durable: int, total: int) -> None:
        # 20 MiB: mid-part (parts are 8 MiB), so the holder has a partial part to spill.
        if "links" not in st and sent >= 20 * MiB and in_sender():
            st["sent"] = sent
            await asyncio.sleep(1.5)  # every byte sent reaches the worker through nginx
            st["holder"] = await c.holder(ledger, up.ref or "")
            # The socket to the holder stays open but silent; the client's side breaks,
            # as after a network change, and it reconnects through nginx.
            st["links"] = proxy.go_silent()
            # Send nothing more on the broken socket: this sender is cancelled when the
            # client notices the drop (bytes pushed into a dead socket would count as
            # re-sent although the holder never saw them).
            await asyncio.Event().wait()

    try:
        up = RecordingUploader(proxy.url(c.endpoint_path), c.token(), on_progress=on_progress,
                               backoff_max=1)
        result = await asyncio.wait_for(up.upload(str(src)), 180)
        holder = st["holder"]
        (link,) = st["links"]  # type: ignore[misc]
        # The holder's last words on the silent socket: the typed error, then close 4009.
        await wait_for(lambda: b"\x88\x02\x0f\xa9" in link.after_silence, timeout=20)
        assert b'"superseded"' in link.after_silence
    finally:
        await proxy.close()
    rec = await check_stored(c, ledger, result.ref, src)
    pids = await c.attach_workers(ledger, result.ref)
    # The reconnect landed on another worker (least_conn counts the half-open socket), which
    # got the upload from the live holder over the channel layer.
    assert pids[0] == holder.proc.pid and pids[1] != pids[0], pids
    assert holder.alive()
    assert f"handed over ref={result.ref}" in holder.log_text()
    events = [e["event"] for e in await ledger.events(result.ref)]
    assert "spilled" in events and "tail_restored" in events, events
    # Everything the client had sent was spilled by the holder: nothing is sent twice.
    assert result.resume_offsets[:2] == [0, st["sent"]]
    assert result.bytes_resent == 0
    assert rec.attaches == 2
    assert_swept_clean(c)
    c.delete_object(rec.key)
    await ledger.close()


async def test_dead_holder_lease_expires_and_upload_continues(fresh: Cluster, tmp_path):
    c = fresh
    ledger = c.ledger()
    size = 40 * MiB
    src = make_random_file(tmp_path / "src.bin", size)
    st: dict[str, object] = {}
    up: RecordingUploader

    async def on_progress(sent: int, durable: int, total: int) -> None:
        if "holder" not in st and sent >= 20 * MiB:
            holder = st["holder"] = await c.holder(ledger, up.ref or "")
            holder.kill(signal.SIGKILL)

    up = RecordingUploader(c.url, c.token(), on_progress=on_progress, backoff_max=1)
    result = await asyncio.wait_for(up.upload(str(src)), 180)
    holder = st["holder"]
    assert not holder.alive()
    rec = await check_stored(c, ledger, result.ref, src)
    pids = await c.attach_workers(ledger, result.ref)
    assert pids[0] == holder.proc.pid and pids[-1] != pids[0], pids
    # Nothing was spilled by a dead worker: the client re-sent at most its window.
    assert 0 <= result.bytes_resent <= rec.part_size, result.resume_offsets
    assert result.resume_offsets[-1] % rec.part_size == 0
    assert_swept_clean(c)
    c.delete_object(rec.key)
    await ledger.close()
