"""Fault matrix through nginx (issue #5 section 4): one upload per trial, one fault each.

Every trial uploads a random file through nginx to the 3-worker cluster (``conftest.py``)
and asserts: the stored object's sha256 equals the source's; after ``resumable_sweep
--grace 0`` no multipart upload and no spilled tail is left in the bucket; the bytes the
client sent twice are within what the fault allows. Each trial adds a row (fault, size,
re-sent bytes, connections, wall time, pass) to ``test-output/faults-<mode>.md``, printed
at the end of the module (``-s``).

Scale: ``make test`` runs one trial per fault at ~128 MiB. ``DJR_FAULTS=long`` (``make
faults``) uses 100-500 MiB files, 10 SIGKILL trials at random offsets and a client stall
beyond uvicorn's ping timeout. ``DJR_FAULT_TRIALS=N`` overrides the SIGKILL trial count,
``DJR_FAULT_MIB=N`` the file size.
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from djust_resumable.conf import MiB
from tests.helpers import make_random_file

from .conftest import (
    CLUSTER_SETTINGS,
    LONG,
    ROOT,
    Cluster,
    RecordingUploader,
    assert_swept_clean,
    check_stored,
    in_sender,
    wait_for,
)
from .tcp_proxy import TcpProxy

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1800 if LONG else 300)]

MODE = "long" if LONG else "ci"
SIGKILL_TRIALS = int(os.environ.get("DJR_FAULT_TRIALS", "10" if LONG else "1"))
FIXED_MIB = int(os.environ.get("DJR_FAULT_MIB", "0"))
LEASE = float(CLUSTER_SETTINGS["LEASE_TTL"])
PART = 8 * MiB  # PREFERRED_PART_SIZE: files below ~78 GiB use it


def trial_size(rng: random.Random) -> int:
    """Bytes for one trial: fixed by DJR_FAULT_MIB, else 100-500 MiB (long) or 128 MiB,
    plus an odd remainder so the last part is short."""
    mib = FIXED_MIB or (rng.randrange(100, 501) if LONG else 128)
    return mib * MiB + rng.randrange(1, MiB)


@dataclass
class Row:
    fault: str
    size: int
    resent: int = -1
    connections: int = 0
    seconds: float = 0.0
    passed: bool = False
    notes: str = ""


ROWS: list[Row] = []


@pytest.fixture(scope="module", autouse=True)
def results_table():
    yield
    if not ROWS:
        return
    command = "make faults" if LONG else "make test (tests/faults/test_matrix.py)"
    lines = [f"Fault matrix, {MODE} run: `{command}`", "",
             "| fault | size | re-sent bytes | connections | wall time | pass | notes |",
             "|---|---|---|---|---|---|---|"]
    for r in ROWS:
        lines.append(f"| {r.fault} | {r.size / MiB:.1f} MiB | {r.resent:,} | {r.connections} "
                     f"| {r.seconds:.1f} s | {'yes' if r.passed else 'NO'} | {r.notes} |")
    text = "\n".join(lines) + "\n"
    out = ROOT / "test-output"
    out.mkdir(exist_ok=True)
    (out / f"faults-{MODE}.md").write_text(text)
    print("\n" + text)


class Trial:
    """One upload with one fault; ``run`` asserts the common invariants and fills a row."""

    def __init__(self, c: Cluster, fault: str, tmp_path: Path, seed: int | None = None) -> None:
        self.c = c
        self.rng = random.Random(seed)
        self.size = trial_size(self.rng)
        self.src = make_random_file(tmp_path / "src.bin", self.size)
        self.row = Row(fault, self.size)
        ROWS.append(self.row)
        self.ledger = c.ledger()
        self.t0 = time.monotonic()

    def offset(self, lo: float = 0.1, hi: float = 0.9) -> int:
        """A random byte offset in [lo, hi) of the file."""
        return self.rng.randrange(int(self.size * lo), int(self.size * hi))

    async def upload(self, on_progress=None, url: str | None = None) -> RecordingUploader:  # noqa: ANN001
        up = RecordingUploader(url or self.c.url, self.c.token(), on_progress=on_progress,
                               backoff_max=1, give_up_after=120)
        self.uploader = up
        self.result = await asyncio.wait_for(up.upload(str(self.src)), 1500 if LONG else 240)
        self.row.resent = self.result.bytes_resent
        self.row.connections = self.result.connections
        return up

    async def finish(self, max_resent: int) -> None:
        """Common checks: byte-exact object, nothing left after the sweep, re-sent bytes
        within ``max_resent``."""
        rec = await check_stored(self.c, self.ledger, self.result.ref, self.src)
        self.row.seconds = time.monotonic() - self.t0
        assert 0 <= self.result.bytes_resent <= max_resent, (self.result.resume_offsets,
                                                            self.uploader.seen)
        assert_swept_clean(self.c)
        self.c.delete_object(rec.key)
        await self.ledger.close()
        self.row.passed = True


@pytest.mark.parametrize("trial", range(SIGKILL_TRIALS))
async def test_sigkill_of_the_holding_worker(trial, fresh: Cluster, tmp_path):
    t = Trial(fresh, "SIGKILL holder", tmp_path)
    kill_at = t.offset()
    st: dict[str, object] = {}

    async def on_progress(sent: int, durable: int, total: int) -> None:
        if "holder" not in st and sent >= kill_at:
            holder = st["holder"] = await fresh.holder(t.ledger, t.uploader.ref or "")
            holder.kill(signal.SIGKILL)

    await t.upload(on_progress)
    assert "holder" in st and not st["holder"].alive()  # type: ignore[attr-defined]
    t.row.notes = f"killed at {kill_at / MiB:.1f} MiB"
    pids = await fresh.attach_workers(t.ledger, t.result.ref)
    assert len(set(pids)) >= 2, pids  # continued on another worker
    # A killed worker spills nothing: at most the client's window (one part) is re-sent.
    await t.finish(max_resent=PART)


async def test_sigterm_of_the_holding_worker_spills_and_releases(fresh: Cluster, tmp_path):
    t = Trial(fresh, "SIGTERM holder", tmp_path)
    term_at = t.offset()
    st: dict[str, object] = {}

    async def on_progress(sent: int, durable: int, total: int) -> None:
        # Mid-part (frames are 1 MiB, parts 8 MiB): the graceful exit must spill. Only from
        # the client's sender task, so that pausing here really pauses the bytes.
        if "holder" not in st and sent >= term_at and sent % PART and in_sender():
            holder = st["holder"] = await fresh.holder(t.ledger, t.uploader.ref or "")
            assert holder.proc is not None
            # Let the frames already sent reach the worker: uvicorn stops reading once it
            # has sent its close, so frames still in socket buffers would be re-sent.
            await asyncio.sleep(1.0)
            st["sent"] = sent
            holder.proc.send_signal(signal.SIGTERM)  # no wait: the exit needs this loop
            # Hold the sender until the worker closes the socket (this task is cancelled
            # then): otherwise it streams on to the window's end, a part boundary, and the
            # worker has nothing partial to spill.
            await asyncio.Event().wait()

    await t.upload(on_progress)
    holder = st["holder"]
    await asyncio.to_thread(holder.proc.wait, 60)  # type: ignore[attr-defined]
    log = holder.log_text()  # type: ignore[attr-defined]
    assert f"detached ref={t.result.ref}" in log
    events = [e["event"] for e in await t.ledger.events(t.result.ref)]
    assert "spilled" in events, events
    assert t.result.resume_offsets[1] == st["sent"]
    t.row.notes = f"SIGTERM at {term_at / MiB:.1f} MiB; client saw {','.join(t.uploader.seen)}"
    # Graceful: uvicorn closes the socket (1012), the consumer spills the partial part and
    # releases the lease before the process exits: nothing is sent twice.
    await t.finish(max_resent=0)


async def test_redis_restart_with_aof(fresh: Cluster, tmp_path):
    t = Trial(fresh, "Redis restart (AOF)", tmp_path)
    at = t.offset()
    st: dict[str, object] = {}

    async def on_progress(sent: int, durable: int, total: int) -> None:
        if "done" not in st and sent >= at:
            st["done"] = True
            # In a thread: the client keeps streaming while Redis is down.
            st["task"] = asyncio.create_task(asyncio.to_thread(fresh.redis.restart))

    await t.upload(on_progress)
    await st["task"]  # type: ignore[misc]
    t.row.notes = (f"restart at {at / MiB:.1f} MiB; client saw "
                   f"{','.join(t.uploader.seen) or '-'}")
    # appendfsync always (fixture): no acknowledged write is lost; a connection that the
    # restart broke mid-part resumes from the durable offset (at most one window).
    await t.finish(max_resent=PART)


async def test_redis_unreachable_for_5_seconds(fresh: Cluster, tmp_path):
    t = Trial(fresh, "Redis unreachable 5 s", tmp_path)
    at = t.offset()
    st: dict[str, object] = {}

    async def freeze() -> None:
        proc = fresh.redis.proc
        assert proc is not None
        # SIGSTOP: connections stay open and nothing answers, like a network partition;
        # keys keep their wall-clock expiry, so leases run out meanwhile.
        proc.send_signal(signal.SIGSTOP)
        try:
            await asyncio.sleep(5)
        finally:
            proc.send_signal(signal.SIGCONT)

    async def on_progress(sent: int, durable: int, total: int) -> None:
        if "task" not in st and sent >= at:
            st["task"] = asyncio.create_task(freeze())

    await t.upload(on_progress)
    await st["task"]  # type: ignore[misc]
    t.row.notes = f"at {at / MiB:.1f} MiB; client saw {','.join(t.uploader.seen) or '-'}"
    # The lease expired during the outage but nobody took the upload: the holder's next
    # ledger write reclaims it (lua/_lib.lua) and the upload goes on on the same socket,
    # nothing re-sent (before the reclaim: lease_lost, a reconnect and one part re-sent).
    await t.finish(max_resent=0)


async def test_s3_500_and_503_slowdown_on_part_uploads(fresh: Cluster, tmp_path):
    t = Trial(fresh, "S3 500/503 on 30 % of UploadPart", tmp_path)
    before = fresh.s3_faults(rate=0.3)
    try:
        await t.upload()
    finally:
        after = fresh.s3_faults(rate=0.0)
    injected = sum(after["injected"].values()) - sum(before["injected"].values())
    t.row.notes = (f"{injected} injected / {after['upload_parts'] - before['upload_parts']} "
                   f"UploadPart requests; client saw {','.join(t.uploader.seen) or '-'}")
    assert injected >= 1
    # boto3's standard retries absorb the errors; a part that fails 5 times in a row
    # becomes storage_error and the client resumes from the durable offset.
    await t.finish(max_resent=PART * max(0, t.result.connections - 1))


async def test_websocket_dropped_every_n_mib(fresh: Cluster, tmp_path):
    t = Trial(fresh, "WebSocket reset every 24 MiB", tmp_path)
    proxy = await TcpProxy("127.0.0.1", fresh.nginx_port).start()
    # Not a multiple of the part size or of the 1 MiB frames: cuts land mid-frame, mid-part.
    proxy.cut_every = 24 * MiB + 12345
    try:
        await t.upload(url=proxy.url(fresh.endpoint_path))
    finally:
        await proxy.close()
    t.row.notes = f"{proxy.cuts} resets"
    assert proxy.cuts >= t.size // proxy.cut_every - 1
    # The server sees each reset and spills; what the client lost in the kernel buffers
    # of the cut connection is re-sent (never more than one window per cut).
    await t.finish(max_resent=PART * proxy.cuts)


async def test_client_stalls_longer_than_the_lease(fresh: Cluster, tmp_path):
    # Long run: past uvicorn's ping interval + timeout (20 s + 20 s), so the server drops
    # the silent client, spills and releases; CI: a few leases long, the socket survives.
    stall = 50.0 if LONG else 3 * LEASE
    t = Trial(fresh, f"client SIGSTOP {stall:.0f} s", tmp_path)
    proc = subprocess.Popen(
        [sys.executable, "-m", "djust_resumable", "upload", str(t.src), "--url", fresh.url,
         "--token", fresh.token(), "--quiet"], cwd=ROOT, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    try:
        async def uploading_ref() -> str | None:
            for ref, _ in (await t.ledger.index_items())[:3]:
                rec = await t.ledger.get(ref)
                if rec and rec.state == "uploading" and rec.durable >= 3 * PART:
                    return ref
            return None

        await wait_for(uploading_ref, timeout=120)
        proc.send_signal(signal.SIGSTOP)
        await asyncio.sleep(stall)
        proc.send_signal(signal.SIGCONT)
        out, err = await asyncio.to_thread(proc.communicate, timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    m = re.search(r"done ref=(\w+) size=(\d+) .* resent=(\d+) connections=(\d+)", out)
    assert m, out
    ref, resent, conns = m.group(1), int(m.group(3)), int(m.group(4))
    t.row.resent, t.row.connections = resent, conns
    t.row.notes = "CLI client process stopped and continued"
    rec = await check_stored(fresh, t.ledger, ref, t.src)
    t.row.seconds = time.monotonic() - t.t0
    # A stalled client loses nothing: its socket survives a short stall; a long one is
    # dropped by the server, which spills what it had received.
    assert resent == 0, (out, err)
    assert_swept_clean(fresh)
    fresh.delete_object(rec.key)
    await t.ledger.close()
    t.row.passed = True
