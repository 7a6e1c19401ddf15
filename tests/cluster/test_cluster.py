"""The ledger on a real 3-master Redis Cluster (``REDIS_CLUSTER: True``): uploads through real
uvicorn workers, a resume after a clean drop and after a SIGKILL, ``resumable_sweep``, the
metrics endpoint and the admin's session list. The channel layer stays on a plain
redis-server (channels-redis does not speak Cluster), as docs/deploy.md prescribes.

A CROSSSLOT error anywhere (a script naming keys of two slots, a MULTI across slots, a
multi-key command over global keys) fails these tests: the cluster answers it, nothing is
simulated."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from typing import Any

import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.cluster import RedisCluster as SyncRedisCluster
from redis.exceptions import RedisClusterException, ResponseError
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from djust_resumable import metrics
from djust_resumable.client import ResumableUploader
from djust_resumable.conf import MiB, get_settings
from djust_resumable.ledger import Ledger
from djust_resumable.redis_client import sync_client
from djust_resumable.service import UploadService, UploadWriter
from djust_resumable.sinks import get_sink
from djust_resumable.tokens import UploadGrant
from tests.helpers import free_port, make_random_file, sha256_file
from tests.integration.conftest import ROOT, object_sha256

from .conftest import RedisCluster

pytestmark = pytest.mark.integration


def _prefix() -> str:
    return "cl" + uuid.uuid4().hex[:10]


def _node_keys(cluster: RedisCluster, prefix: str) -> list[set[str]]:
    """The keys under ``prefix`` that each master holds (redis-cli --scan on each node)."""
    out = []
    for node in cluster.nodes:
        text = cluster.cli(node, "--scan", "--pattern", f"{prefix}:*")
        out.append({k for k in text.splitlines() if k})
    return out


@pytest.fixture
def cluster_ledger(redis_cluster: RedisCluster):
    """``cluster_ledger(prefix, url=None)`` -> a Ledger on the session's cluster (or the one
    at ``url``) through redis-py's asyncio RedisCluster, closed at the end of the test."""
    made: list[Ledger] = []

    def make(prefix: str, url: str | None = None) -> Ledger:
        from django.test.utils import override_settings

        with override_settings(DJUST_RESUMABLE={"KEY_PREFIX": prefix}):
            s = get_settings()
        lg = Ledger(AsyncRedisCluster.from_url(url or redis_cluster.url), s)
        made.append(lg)
        return lg

    yield make
    for lg in made:
        try:
            asyncio.run(lg.close())
        except RuntimeError:
            pass


async def _check_stored(ledger: Ledger, ref: str, src: Any, s3_client: Any, bucket: str):
    rec = await ledger.get(ref)
    assert rec is not None and rec.state == "complete"
    assert object_sha256(s3_client, bucket, rec.key) == (sha256_file(src), rec.size)
    parts = await ledger.parts(ref)
    assert [p.number for p in parts] == list(range(1, len(parts) + 1))
    return rec


def _scrape(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics/", timeout=10) as resp:
        assert resp.status == 200
        text = resp.read().decode()
    return {s.name: s.value for fam in text_string_to_metric_families(text)
            for s in fam.samples if not s.labels}


async def test_ledger_api_on_cluster(django_s3_settings, redis_cluster):
    """Every ledger call (scripts, the snapshot MULTI, owner index, sweeper claims, metrics
    flush and scrape) against the cluster, with records spread over all three masters."""
    prefix = _prefix()
    django_s3_settings(REDIS_URL=redis_cluster.url, REDIS_CLUSTER=True, KEY_PREFIX=prefix,
                       LEASE_TTL=30)
    s = get_settings()
    ledger = Ledger.from_settings(s)
    assert isinstance(ledger.r, AsyncRedisCluster)
    svc = UploadService(ledger, get_sink(s), s)
    try:
        grant = UploadGrant(session=os.urandom(8).hex(), user="5", view="tests", slot="files",
                            max_file_size=1 << 40, max_entries=0)
        refs = []
        for i in range(12):
            rec = await svc.register(grant, f"f{i}.bin", 20 * MiB, "application/octet-stream")
            refs.append(rec.ref)
        # One upload with a stored part and a spilled tail (commit_part, spill, release).
        w = await svc.attach(refs[0], grant, uuid.uuid4().hex, "", _noack)
        assert isinstance(w, UploadWriter)
        assert rec.part_size == 8 * MiB
        await w.write(0, memoryview(os.urandom(8 * MiB + 123)))
        await w.detach(spill=True)

        per_node = _node_keys(redis_cluster, prefix)
        # The records really are spread over the masters (else this proves little).
        assert sum(1 for keys in per_node if any(":{" in k for k in keys)) >= 2, per_node
        for ref in refs:  # ...and each upload's keys sit together on one node
            holders = [i for i, keys in enumerate(per_node)
                       if any(k.startswith(f"{prefix}:{{{ref}}}:") for k in keys)]
            assert len(holders) == 1, (ref, holders)

        # Commands across slots are refused (by redis-py before sending, and by the server):
        # the snapshot below (MULTI/EXEC) passes only because one upload's keys share a slot.
        cross = ("MGET", ledger.index_key, ledger._k(refs[0], "meta"))
        with pytest.raises(RedisClusterException, match="same key slot"):
            await ledger.r.execute_command(*cross)
        with redis.Redis.from_url(redis_cluster.url) as node:
            with pytest.raises(ResponseError, match="same slot"):  # CROSSSLOT
                node.execute_command(*cross)
        rec, epoch = await ledger.snapshot(refs[0])
        assert rec is not None and epoch is None
        assert (rec.parts_done, rec.durable, rec.tail_len) == (1, 8 * MiB + 123, 123)
        owned = await ledger.owner_records(rec.owner, "files")
        assert {r.ref for r in owned} == set(refs)
        assert {r for r, _ in await ledger.index_items()} == set(refs)
        assert await ledger.claim("mpu", "u1", "me", 60_000)
        assert not await ledger.claim("mpu", "u1", "other", 60_000)
        seen = await ledger.first_seen(["a", "b"])
        assert set(seen) == {"a", "b"}

        metrics.record_completed(ledger)
        await metrics.flush(ledger)
        sync = sync_client(s)
        assert isinstance(sync, SyncRedisCluster)
        coll = metrics.LedgerMetricsCollector(sync, prefix)
        got = {m.name: m for m in coll.collect()}
        assert got["djust_resumable_uploads_completed"].samples[0].value == 1
        assert got["djust_resumable_ledger_records"].samples[0].value == len(refs)
    finally:
        await ledger.close()


async def _noack(ref: str, received: int, durable: int) -> None:
    return None


async def test_upload_and_resume_through_workers_on_cluster(
        workers, redis_cluster, redis_server, token, tmp_path, s3_client, s3_bucket,
        cluster_ledger):
    """Two byte-exact uploads through three workers whose ledger is the cluster: one plain,
    one with a clean drop (resumed on another worker, nothing re-sent) followed by a SIGKILL
    of the worker then holding it (resumed on a third)."""
    prefix = _prefix()
    ws = workers(3, redis=redis_cluster, channel_redis=redis_server, REDIS_CLUSTER=True,
                 KEY_PREFIX=prefix)
    a, b, c = ws
    ledger = cluster_ledger(prefix)

    plain = make_random_file(tmp_path / "plain.bin", 20 * MiB + 7)
    r1 = await ResumableUploader(a.url, token).upload(str(plain))
    await _check_stored(ledger, r1.ref, plain, s3_client, s3_bucket)
    assert r1.connections == 1 and r1.bytes_resent == 0

    src = make_random_file(tmp_path / "src.bin", 40 * MiB)
    events: list[str] = []
    dropped_at: list[int] = []
    up: ResumableUploader

    async def on_progress(sent: int, durable: int, total: int) -> None:
        if not events and sent >= 9 * MiB + 777:
            events.append("drop")
            dropped_at.append(sent)
            await up.drop()
        elif events == ["drop"] and sent >= 24 * MiB:
            events.append("kill")
            b.kill(signal.SIGKILL)  # the second connection went to b: kill the holder

    up = ResumableUploader([a.url, b.url, c.url], token, on_progress=on_progress,
                           backoff_max=1)
    result = await up.upload(str(src))
    assert events == ["drop", "kill"] and not b.alive()
    rec = await _check_stored(ledger, result.ref, src, s3_client, s3_bucket)
    assert result.connections >= 3 and rec.attaches >= 3
    # The second connection (worker b) started exactly where the dropped one stopped.
    assert result.resume_offsets[1] == dropped_at[0]
    # The clean drop re-sent nothing; the SIGKILL at most one part (the window).
    assert 0 <= result.bytes_resent <= rec.part_size, result.resume_offsets
    evs = [e["event"] for e in await ledger.events(result.ref)]
    assert "spilled" in evs and "tail_restored" in evs

    # The workers' metrics endpoint reads the cluster through the sync cluster client.
    m: dict[str, float] = {}
    for _ in range(100):
        m = await asyncio.to_thread(_scrape, a.port)
        if m.get("djust_resumable_uploads_completed_total") == 2:
            break
        await asyncio.sleep(0.2)
    assert m["djust_resumable_uploads_completed_total"] == 2
    assert m["djust_resumable_ledger_records"] == 2


async def test_sweep_and_admin_list_on_cluster(django_s3_settings, redis_cluster, redis_server,
                                               moto_server, s3_client, tmp_path):
    """`manage.py resumable_sweep` (a real process, cluster ledger) expires a stale upload,
    aborts its multipart upload and an orphan one, deletes its tail; the admin's list reads
    the cluster."""
    from djust_resumable import admin_views

    prefix = _prefix()
    helper = django_s3_settings(REDIS_URL=redis_cluster.url, REDIS_CLUSTER=True,
                                KEY_PREFIX=prefix, LEASE_TTL=30)
    bucket = helper.bucket
    s = get_settings()
    ledger = Ledger.from_settings(s)
    svc = UploadService(ledger, get_sink(s), s)
    try:
        grant = UploadGrant(session=os.urandom(8).hex(), user="9", view="tests", slot="files",
                            max_file_size=1 << 40, max_entries=0)
        stale = []
        for i in range(3):
            rec = await svc.register(grant, f"s{i}.bin", 20 * MiB, "application/octet-stream")
            w = await svc.attach(rec.ref, grant, uuid.uuid4().hex, "", _noack)
            assert isinstance(w, UploadWriter)
            await w.write(0, memoryview(os.urandom(6 * MiB + i)))
            await w.detach(spill=True)
            stale.append(rec.ref)
        tails = {(await ledger.get(r)).tail_key for r in stale}
        assert all(tails) and len(tails) == 3
        key = f"resumable/2026/01/01/{uuid.uuid4().hex}"
        orphan = s3_client.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]

        rows = await asyncio.to_thread(admin_views.list_sessions, {})
        assert {r["ref"] for r in rows} == set(stale)
        assert all(r["state"] == "uploading" and r["durable"] > 0 for r in rows)

        await asyncio.sleep(2.5)
        env = {**os.environ, "DJANGO_SETTINGS_MODULE": "project.settings",
               "DJR_REDIS_URL": redis_cluster.url, "DJR_CHANNEL_REDIS_URL": redis_server.url,
               "AWS_S3_ENDPOINT_URL": moto_server.url, "AWS_STORAGE_BUCKET_NAME": bucket,
               "DJR_DB_PATH": str(tmp_path / "db.sqlite3"),
               "DJR_SETTINGS_JSON": json.dumps({"KEY_PREFIX": prefix, "REDIS_CLUSTER": True})}
        cmd = [sys.executable, str(ROOT / "example" / "manage.py"), "resumable_sweep",
               "--grace", "0", "--older-than", "2", "--json"]
        t0 = time.monotonic()
        out = await asyncio.to_thread(subprocess.run, cmd, cwd=ROOT, env=env,
                                      capture_output=True, text=True, timeout=180)
        assert out.returncode == 0, out.stderr
        assert time.monotonic() - t0 < 180
        report = json.loads(out.stdout)
        assert report["errors"] == [], report
        assert sorted(report["expired"]) == sorted(stale)
        assert f"{key} {orphan}" in report["uploads_aborted"]
        for r in stale:
            assert (await ledger.get(r)).state == "expired"
        assert s3_client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
        left = s3_client.list_objects_v2(Bucket=bucket, Prefix="resumable/.tails/")
        assert left.get("Contents", []) == []
        rows = await asyncio.to_thread(admin_views.list_sessions, {"state": "expired"})
        assert {r["ref"] for r in rows} == set(stale)
        # `manage.py resumable_sessions` reads the cluster too.
        cmd = [sys.executable, str(ROOT / "example" / "manage.py"), "resumable_sessions",
               "--json"]
        out = await asyncio.to_thread(subprocess.run, cmd, cwd=ROOT, env=env,
                                      capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        listed = json.loads(out.stdout)
        assert {r["ref"]: r["state"] for r in listed} == dict.fromkeys(stale, "expired")
    finally:
        await ledger.close()


async def test_whole_cluster_restart_mid_upload(workers, redis_cluster_aof, redis_server, token,
                                                tmp_path, s3_client, s3_bucket, cluster_ledger):
    """Every master stopped and started again (AOF) while an upload runs: the worker's
    cluster client rides it out (``ResilientRedisCluster``) and the object is byte-exact.
    Without it redis-py raises ``RedisClusterException`` at once, which is no RedisError."""
    cluster = redis_cluster_aof
    prefix = _prefix()
    (w,) = workers(1, redis=cluster, channel_redis=redis_server, REDIS_CLUSTER=True,
                   KEY_PREFIX=prefix)
    src = make_random_file(tmp_path / "src.bin", 48 * MiB)
    bounced: list[int] = []
    task: list[asyncio.Task[None]] = []

    def bounce() -> None:
        cluster.stop()
        time.sleep(2)
        cluster.start()

    def on_progress(sent: int, durable: int, total: int) -> None:
        if not bounced and durable >= 16 * MiB:
            bounced.append(durable)
            task.append(asyncio.ensure_future(asyncio.to_thread(bounce)))

    result = await ResumableUploader(w.url, token, on_progress=on_progress,
                                     backoff_max=1).upload(str(src))
    assert bounced
    await asyncio.wait_for(task[0], 120)
    rec = await _check_stored(cluster_ledger(prefix, cluster.url), result.ref, src, s3_client,
                              s3_bucket)
    assert rec.durable == rec.size and w.alive()
    # No traceback at all: redis-py's writer-close race (redis/redis-py#3546), seen here
    # under load, is a retried ConnectionError (redis_client.RaceSafeConnection).
    assert "Traceback" not in w.log_text()


async def test_takeover_through_channel_layer_with_cluster_ledger(
        workers, redis_cluster, redis_server, token, tmp_path, s3_client, s3_bucket,
        cluster_ledger):
    """A second connection on another worker while the first still holds the upload: the
    new worker asks the holder to hand over through the channel layer (plain Redis) while
    the lease and the record live in the cluster. Nothing is sent twice."""
    prefix = _prefix()
    a, b = workers(2, redis=redis_cluster, channel_redis=redis_server, REDIS_CLUSTER=True,
                   KEY_PREFIX=prefix)
    ledger = cluster_ledger(prefix)
    src = make_random_file(tmp_path / "src.bin", 32 * MiB)
    seen: dict[str, Any] = {}
    ready = asyncio.Event()
    up: ResumableUploader

    async def intruder(ref: str) -> None:
        async with connect(b.url, compression=None) as ws:
            await ws.send(json.dumps({"type": "resume", "token": token, "ref": ref}))
            seen["first"] = json.loads(await ws.recv())
            ready.set()
            try:
                async for raw in ws:
                    msg = json.loads(raw)
                    if msg["type"] == "error":
                        seen["then"] = msg
            except ConnectionClosed:
                pass
            seen["close"] = ws.close_code

    async def on_progress(sent: int, durable: int, total: int) -> None:
        if "task" not in seen and sent >= 12 * MiB + 4321:
            seen["task"] = asyncio.create_task(intruder(up.ref))
            await asyncio.wait_for(ready.wait(), 30)

    up = ResumableUploader([a.url, b.url], token, on_progress=on_progress, backoff_max=1)
    result = await up.upload(str(src))
    await asyncio.wait_for(seen["task"], 30)
    # The intruder got the upload from the live holder on worker a (a handover, not a
    # lease expiry), then handed it back when the first client returned.
    assert seen["first"]["type"] == "ready" and seen["first"]["offset"] >= 12 * MiB
    assert seen["then"]["code"] == "superseded" and seen["close"] == 4009
    rec = await _check_stored(ledger, result.ref, src, s3_client, s3_bucket)
    assert rec.attaches >= 3 and result.bytes_resent == 0


def test_metrics_view_answers_503_when_no_cluster_node_answers():
    """redis-py's cluster client raises RedisClusterException (not a RedisError) when no
    node answers; the metrics view still answers 503, not a server error."""
    from django.test import RequestFactory
    from django.test.utils import override_settings

    port = free_port()  # nothing listens there
    with override_settings(DJUST_RESUMABLE={"REDIS_URL": f"redis://127.0.0.1:{port}/0",
                                            "REDIS_CLUSTER": True, "KEY_PREFIX": _prefix()}):
        resp = metrics.metrics_view(RequestFactory().get("/metrics/"))
    assert resp.status_code == 503 and b"ledger unavailable" in resp.content
