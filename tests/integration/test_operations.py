"""Metrics endpoint and resumable_sessions after real uploads through real workers."""

from __future__ import annotations

import asyncio
import io
import json
import random
import urllib.request
import uuid

import pytest
from django.core.management import call_command
from django.test.utils import override_settings
from prometheus_client.parser import text_string_to_metric_families

from djust_resumable.client import ResumableUploader
from djust_resumable.conf import MiB
from tests.helpers import make_random_file

pytestmark = pytest.mark.integration


def _scrape(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics/", timeout=10) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain")
        text = resp.read().decode()
    out: dict[str, float] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
            out[s.name + (f"{{{labels}}}" if labels else "")] = s.value
    return out


async def _wait_metrics(port: int, want: dict[str, float], timeout: float = 15) -> dict:
    """Scrape until every metric in ``want`` has its value (workers flush once a second)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        m = await asyncio.to_thread(_scrape, port)
        if all(m.get(k) == v for k, v in want.items()) or loop.time() > deadline:
            return m
        await asyncio.sleep(0.2)


async def test_metrics_and_sessions_after_real_uploads(workers, token, tmp_path, redis_server):
    prefix = "ops" + uuid.uuid4().hex[:8]
    a, b = workers(2, KEY_PREFIX=prefix)
    # Nothing uploaded yet: every counter is there, at zero.
    m = await asyncio.to_thread(_scrape, a.port)
    assert m["djust_resumable_uploads_completed_total"] == 0
    assert m["djust_resumable_part_store_seconds_count"] == 0

    # 1) a plain upload on worker a
    size1 = 20 * MiB + 3
    src1 = make_random_file(tmp_path / "one.bin", size1)
    r1 = await ResumableUploader(a.url, token).upload(str(src1))

    # 2) an upload dropped cleanly mid-part and resumed on worker b (spilled tail: 0 re-sent)
    size2 = 24 * MiB
    src2 = make_random_file(tmp_path / "two.bin", size2)
    drop_at = random.choice([9, 10, 11, 12, 13]) * MiB
    up: ResumableUploader
    dropped: list[int] = []

    async def on_progress(sent: int, durable: int, total: int) -> None:
        if not dropped and sent >= drop_at:
            dropped.append(sent)
            await up.drop()

    up = ResumableUploader([a.url, b.url], token, on_progress=on_progress, backoff_max=1)
    r2 = await up.upload(str(src2))
    assert dropped and r2.connections == 2 and r2.bytes_resent == 0

    # Counters are shared by both processes (Redis): either worker serves the same totals.
    parts = 3 + 3  # 8 MiB parts
    m = await _wait_metrics(b.port, {
        "djust_resumable_received_bytes_total": size1 + size2,
        "djust_resumable_durable_bytes_total": size1 + size2,
        "djust_resumable_uploads_completed_total": 2,
        "djust_resumable_uploads_started_total": 2,
        "djust_resumable_uploads_resumed_total": 1,
        "djust_resumable_part_store_seconds_count": parts})
    assert m["djust_resumable_uploads_started_total"] == 2
    assert m["djust_resumable_uploads_completed_total"] == 2
    assert m["djust_resumable_uploads_resumed_total"] == 1
    assert m["djust_resumable_uploads_failed_total"] == 0
    assert m["djust_resumable_received_bytes_total"] == size1 + size2
    assert m["djust_resumable_durable_bytes_total"] == size1 + size2
    assert m["djust_resumable_resent_bytes_total"] == 0
    assert m["djust_resumable_part_store_seconds_count"] == parts
    assert m['djust_resumable_part_store_seconds_bucket{le=+Inf}'] == parts
    assert m["djust_resumable_part_store_seconds_sum"] > 0
    assert m["djust_resumable_ledger_records"] == 2
    assert await asyncio.to_thread(_scrape, a.port) == m

    # resumable_sessions reads the same ledger (the workers' key prefix).
    with override_settings(DJUST_RESUMABLE={"REDIS_URL": redis_server.url,
                                            "KEY_PREFIX": prefix}):
        def run(*args: str) -> str:
            out = io.StringIO()
            call_command("resumable_sessions", *args, stdout=out)
            return out.getvalue()

        listing = await asyncio.to_thread(run)
        assert listing.strip().endswith("2 session(s)")
        for ref in (r1.ref, r2.ref):
            row = next(line for line in listing.splitlines() if line.startswith(ref))
            assert "complete" in row and "100.0" in row and "20.0 MiB" in listing
        assert "0 session(s)" in await asyncio.to_thread(run, "--state", "uploading")
        rows = json.loads(await asyncio.to_thread(run, "--json"))
        assert {r["ref"]: (r["size"], r["durable"], r["state"]) for r in rows} == {
            r1.ref: (size1, size1, "complete"), r2.ref: (size2, size2, "complete")}
        detail = await asyncio.to_thread(run, r2.ref)
        assert "parts (3)" in detail and "upload_id" in detail and "client_name" in detail
        for event in ("registered", "attached", "spilled", "tail_restored", "part_stored",
                      "complete"):
            assert f"  {event}" in detail, event
        d = json.loads(await asyncio.to_thread(run, r2.ref, "--json"))
        workers_seen = {e.get("worker") for e in d["events"] if e["event"] == "attached"}
        assert len(workers_seen) == 2  # resumed on the other worker process
        assert [p["size"] for p in d["parts"]] == [8 * MiB] * 3

    # Structured logs: every state change names ref, user and worker.
    logs = a.log_text() + b.log_text()
    for what in ("registered", "attached", "detached", "complete"):
        line = next(x for x in logs.splitlines() if f" {what} ref={r2.ref}" in x)
        assert " user=7 " in line and " worker=" in line, line


async def test_resent_bytes_and_recording_never_breaks_an_upload(django_s3_settings,
                                                                 redis_server):
    """Service level, real Redis + moto: a writer that dies without spilling (no detach
    spill, as after SIGKILL) leaves ``received > durable``; the next attach counts the
    difference as re-sent. And a metrics Redis that is down never breaks an upload."""
    import os

    import redis.asyncio as aioredis

    from djust_resumable import metrics
    from djust_resumable.conf import get_settings
    from djust_resumable.ledger import Ledger
    from djust_resumable.service import UploadService
    from djust_resumable.sinks import get_sink
    from djust_resumable.tokens import UploadGrant
    from tests.helpers import free_port

    async def noack(*_: object) -> None:
        return None

    django_s3_settings(REDIS_URL=redis_server.url, KEY_PREFIX="rs" + uuid.uuid4().hex[:8])
    s = get_settings()
    ledger = Ledger.from_settings(s)
    svc = UploadService(ledger, get_sink(s), s)
    grant = UploadGrant(session=os.urandom(8).hex(), user="3", view="t", slot="files",
                        max_file_size=1 << 40)
    try:
        rec = await svc.register(grant, "x.bin", 12 * MiB, "application/octet-stream")
        w = await svc.attach(rec.ref, grant, "c1", "", noack)
        await w.write(0, memoryview(os.urandom(3 * MiB)))
        assert await w.renew()  # the ledger learns received = 3 MiB
        await w.detach(spill=False)  # nothing durable: the client must send it again
        w = await svc.attach(rec.ref, grant, "c2", "", noack)
        assert w.durable == 0
        await w.write(0, memoryview(os.urandom(12 * MiB)))
        await w.finish(None)
        await metrics.flush(ledger)
        vals = {k.decode(): float(v) for k, v in (await ledger.r.hgetall(ledger.metrics_key)
                                                  ).items()}
        assert vals["uploads_resumed"] == 1 and vals["resent_bytes"] == 3 * MiB
        assert vals["received_bytes"] == 15 * MiB and vals["durable_bytes"] == 12 * MiB
        assert vals["uploads_completed"] == 1 and vals["part_seconds_count"] == 2

        # Metrics pointed at a dead Redis: recording and flushing are silent no-ops.
        dead = Ledger(aioredis.Redis.from_url(f"redis://127.0.0.1:{free_port()}/0",
                                              socket_connect_timeout=0.2), s)
        metrics.record_started(dead)
        metrics.record_part(dead, 5, 0.3)
        metrics.record_attach(dead, None)  # type: ignore[arg-type]  # even bad input
        await metrics.flush(dead)
        await dead.close()
    finally:
        await ledger.close()
