"""The sweeper against a real redis-server and a real moto_server: real stale ledgers, real
orphan multipart uploads (created with boto3), spilled tails left behind, dry runs, and two
sweepers at once (in one event loop, and as two `manage.py resumable_sweep` processes)."""

from __future__ import annotations

import asyncio
import io
import json
import os
import subprocess
import sys
import time
import uuid

import pytest
from django.core.management import call_command

from djust_resumable.conf import MiB, get_settings
from djust_resumable.ledger import Ledger
from djust_resumable.service import UploadService, UploadWriter
from djust_resumable.sinks import get_sink
from djust_resumable.sinks.s3 import S3Sink
from djust_resumable.sweeper import Sweeper
from djust_resumable.tokens import UploadGrant
from djust_resumable.worker import worker_id

from .conftest import ROOT

pytestmark = pytest.mark.integration
STALE_AFTER = 2.0  # seconds: the sweeps below use older_than=STALE_AFTER


async def _noack(ref: str, received: int, durable: int) -> None:
    return None


@pytest.fixture
async def svc(django_s3_settings, redis_server):
    prefix = "sw" + uuid.uuid4().hex[:10]
    django_s3_settings(REDIS_URL=redis_server.url, KEY_PREFIX=prefix, LEASE_TTL=30)
    s = get_settings()
    ledger = Ledger.from_settings(s)
    service = UploadService(ledger, get_sink(s), s)
    yield service
    await ledger.close()


def _grant() -> UploadGrant:
    return UploadGrant(session=os.urandom(8).hex(), user="42", view="tests", slot="files",
                       max_file_size=1 << 40)


async def _paused(svc: UploadService, nbytes: int, size: int = 20 * MiB,
                  keep: bool = False) -> tuple[str, UploadWriter, UploadGrant]:
    """A real upload interrupted after ``nbytes``: parts stored, the partial part spilled as a
    tail, lease released (``keep``: the writer stays attached and holds the lease)."""
    grant = _grant()
    rec = await svc.register(grant, "paused.bin", size, "application/octet-stream")
    w = await svc.attach(rec.ref, grant, uuid.uuid4().hex, "", _noack)
    assert isinstance(w, UploadWriter)
    await w.write(0, memoryview(os.urandom(nbytes)))
    if not keep:
        await w.detach(spill=True)
    return rec.ref, w, grant


def _mpus(s3, bucket: str) -> set[tuple[str, str]]:
    got = s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) or []
    return {(u["Key"], u["UploadId"]) for u in got}


def _objects(s3, bucket: str, prefix: str = "") -> set[str]:
    got = s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", []) or []
    return {o["Key"] for o in got}


def _orphan_mpu(s3, bucket: str, key: str | None = None) -> tuple[str, str]:
    """A multipart upload made with boto3 directly, one part stored, no ledger record."""
    key = key or f"resumable/2026/01/01/{uuid.uuid4().hex}"
    uid = s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    s3.upload_part(Bucket=bucket, Key=key, UploadId=uid, PartNumber=1, Body=b"x" * 1024)
    return key, uid


async def _redis_state(ledger: Ledger) -> dict:
    keys = sorted(k.decode() for k in await ledger.r.keys(f"{ledger.prefix}:*")
                  if b":sweep:" not in k and not k.endswith(b":metrics"))
    out = {}
    for k in keys:
        t = await ledger.r.type(k)
        t = t.decode() if isinstance(t, bytes) else str(t)
        if t == "hash":
            out[k] = await ledger.r.hgetall(k)
        elif t == "zset":
            out[k] = await ledger.r.zrange(k, 0, -1, withscores=True)
        elif t == "list":
            out[k] = await ledger.r.lrange(k, 0, -1)
        elif t == "set":
            out[k] = await ledger.r.smembers(k)
        elif t == "string":
            out[k] = await ledger.r.get(k)
        else:
            raise AssertionError((k, t))
    return out


async def test_sweep_expires_aborts_and_deletes_only_what_nobody_owns(svc, s3_client, s3_bucket):
    ledger, bucket = svc.ledger, s3_bucket
    # -- before the stale cutoff: uploads that will be stale when the sweep runs ------------
    stale_tail, _, _ = await _paused(svc, 9 * MiB + 5)  # part 1 stored + a 1 MiB tail spilled
    stale_reg = (await svc.register(_grant(), "never.bin", 10 * MiB, "text/plain")).ref
    held, held_writer, _ = await _paused(svc, 3 * MiB, keep=True)  # writer still connected
    gone, _, _ = await _paused(svc, 2 * MiB)
    gone_rec = await ledger.get(gone)
    stale_rec = await ledger.get(stale_tail)
    assert stale_rec.tail_key and gone_rec.tail_key and stale_rec.parts_done == 1
    # The record's TTL runs out (only its index entry is left behind).
    await ledger.r.pexpire(f"{ledger.prefix}:{{{gone}}}:meta", 1)
    await asyncio.sleep(STALE_AFTER + 0.5)
    # -- recent: must survive every sweep ------------------------------------------------------
    live, _, live_grant = await _paused(svc, 1 * MiB + 7)
    live_rec = await ledger.get(live)
    held_rec = await ledger.get(held)
    orphan = _orphan_mpu(s3_client, bucket)
    foreign = _orphan_mpu(s3_client, bucket, key=live_rec.key)  # right key, wrong UploadId
    stray_tail = f"resumable/.tails/{uuid.uuid4().hex}/3-0"  # record never existed
    live_old_tail = f"resumable/.tails/{live}/{live_rec.epoch}-999"  # not current, no lease
    held_tail = f"resumable/.tails/{held}/{held_rec.epoch}-777"  # holder may be mid-spill
    for k in (stray_tail, live_old_tail, held_tail):
        s3_client.put_object(Bucket=bucket, Key=k, Body=b"tail")

    async def run(**kw):
        return await Sweeper(ledger, svc.sink, svc.settings, older_than=STALE_AFTER, **kw).run()

    # -- dry run: reports everything, changes nothing ---------------------------------------
    mpus0, objs0 = _mpus(s3_client, bucket), _objects(s3_client, bucket)
    redis0 = await _redis_state(ledger)
    dry = await run(dry_run=True, grace=0)
    assert sorted(dry.expired) == sorted([stale_tail, stale_reg])
    assert dry.index_dropped == [gone]
    assert {tuple(x.split()) for x in dry.uploads_aborted} == {
        orphan, foreign, (gone_rec.key, gone_rec.upload_id)}
    assert set(dry.tails_deleted) == {stray_tail, live_old_tail, gone_rec.tail_key}
    assert not dry.errors
    assert (_mpus(s3_client, bucket), _objects(s3_client, bucket)) == (mpus0, objs0)
    assert await _redis_state(ledger) == redis0

    # -- real run with the default grace: fresh multipart uploads are never touched ---------
    rep = await run()
    assert not rep.errors, rep.errors
    assert sorted(rep.expired) == sorted([stale_tail, stale_reg])
    assert rep.index_dropped == [gone] and rep.uploads_aborted == []
    for ref in (stale_tail, stale_reg):
        rec = await ledger.get(ref)
        assert rec.state == "expired" and rec.error == "expired"
        assert "expired" in [e["event"] for e in await ledger.events(ref)]
    left = _mpus(s3_client, bucket)
    assert (stale_rec.key, stale_rec.upload_id) not in left  # aborted with its ledger
    assert {orphan, foreign, (gone_rec.key, gone_rec.upload_id),
            (live_rec.key, live_rec.upload_id), (held_rec.key, held_rec.upload_id)} <= left
    tails = _objects(s3_client, bucket, "resumable/.tails/")
    assert tails == {live_rec.tail_key, held_tail}
    assert (await ledger.get(held)).state == "uploading"
    assert (await ledger.get(live)).state == "uploading"
    assert gone not in dict(await ledger.index_items())

    # -- with no grace the orphans go; live uploads keep theirs -------------------------------
    rep = await run(grace=0)
    assert not rep.errors
    assert {tuple(x.split()) for x in rep.uploads_aborted} == {
        orphan, foreign, (gone_rec.key, gone_rec.upload_id)}
    assert _mpus(s3_client, bucket) == {(live_rec.key, live_rec.upload_id),
                                        (held_rec.key, held_rec.upload_id)}

    # -- idempotent: a third sweep finds nothing to do -----------------------------------------
    rep = await run(grace=0)
    assert (rep.expired, rep.index_dropped, rep.uploads_aborted, rep.tails_deleted,
            rep.errors) == ([], [], [], [], [])

    # The live uploads are intact: the paused one resumes from its spilled tail and completes.
    live_rec = await ledger.get(live)
    w = await svc.attach(live, live_grant, "c2", "", _noack)
    assert w.received == live_rec.tail_offset + live_rec.tail_len
    await w.write(w.received, memoryview(os.urandom(live_rec.size - w.received)))
    done = await w.finish(None)
    assert done.size == live_rec.size and (await ledger.get(live)).state == "complete"

    # resumable_sessions shows the live holder (worker id) and the states.
    out = io.StringIO()
    await asyncio.to_thread(call_command, "resumable_sessions", stdout=out)
    text = out.getvalue()
    row = next(line for line in text.splitlines() if line.startswith(held))
    assert "uploading" in row and worker_id() in row
    assert "expired" in next(line for line in text.splitlines() if line.startswith(stale_tail))
    assert text.strip().endswith("4 session(s)")
    await held_writer.detach()


async def test_two_sweepers_at_once_split_the_work(svc, s3_client, s3_bucket):
    ledger, bucket = svc.ledger, s3_bucket
    stale = [(await _paused(svc, 9 * MiB + i + 1))[0] for i in range(3)]
    stale_recs = {r: await ledger.get(r) for r in stale}
    gone, _, _ = await _paused(svc, 1 * MiB)
    gone_rec = await ledger.get(gone)
    await ledger.r.pexpire(f"{ledger.prefix}:{{{gone}}}:meta", 1)
    await asyncio.sleep(STALE_AFTER + 0.5)
    orphans = {_orphan_mpu(s3_client, bucket) for _ in range(4)}
    strays = {f"resumable/.tails/{uuid.uuid4().hex}/1-{i}" for i in range(4)}
    for k in strays:
        s3_client.put_object(Bucket=bucket, Key=k, Body=b"t")

    def sweeper() -> Sweeper:
        s = svc.settings
        # Each "host" has its own Redis connection and its own S3 client.
        return Sweeper(Ledger.from_settings(s), S3Sink(s), s, older_than=STALE_AFTER, grace=0)

    a, b = sweeper(), sweeper()
    ra, rb = await asyncio.gather(a.run(), b.run())
    for sw in (a, b):
        await sw.ledger.close()
        sw.sink.close()
    assert ra.errors == [] and rb.errors == []
    # No double work: every item was done by exactly one of them ...
    for field in ("expired", "index_dropped", "uploads_aborted", "tails_deleted"):
        got_a, got_b = getattr(ra, field), getattr(rb, field)
        assert not set(got_a) & set(got_b), field
    # ... and together they did all of it.
    assert sorted(ra.expired + rb.expired) == sorted(stale)
    assert ra.index_dropped + rb.index_dropped == [gone]
    assert {tuple(x.split()) for x in ra.uploads_aborted + rb.uploads_aborted} == (
        orphans | {(gone_rec.key, gone_rec.upload_id)})
    assert set(ra.tails_deleted + rb.tails_deleted) == strays | {gone_rec.tail_key}
    # Final state: nothing left in the bucket but nothing a live upload needs.
    assert _mpus(s3_client, bucket) == set()
    assert _objects(s3_client, bucket, "resumable/.tails/") == set()
    for r, rec in stale_recs.items():
        assert (await ledger.get(r)).state == "expired", r
        assert rec.tail_key


async def test_two_sweep_commands_from_cron_at_once(svc, s3_client, s3_bucket, moto_server,
                                                    redis_server, tmp_path):
    """Two `manage.py resumable_sweep` processes started together, as cron on two hosts."""
    ledger, bucket = svc.ledger, s3_bucket
    stale = [(await _paused(svc, 2 * MiB + i))[0] for i in range(2)]
    await asyncio.sleep(STALE_AFTER + 0.5)
    orphans = {_orphan_mpu(s3_client, bucket) for _ in range(3)}
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "project.settings",
           "DJR_REDIS_URL": redis_server.url, "AWS_S3_ENDPOINT_URL": moto_server.url,
           "AWS_STORAGE_BUCKET_NAME": bucket, "DJR_DB_PATH": str(tmp_path / "db.sqlite3"),
           "DJR_SETTINGS_JSON": json.dumps({"KEY_PREFIX": ledger.prefix})}
    cmd = [sys.executable, str(ROOT / "example" / "manage.py"), "resumable_sweep", "--grace",
           "0", "--older-than", str(STALE_AFTER), "--json"]
    t0 = time.monotonic()
    procs = [subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert time.monotonic() - t0 < 120
    reports = [json.loads(o) for o, _ in outs]
    assert all(r["errors"] == [] for r in reports)
    assert sorted(reports[0]["expired"] + reports[1]["expired"]) == sorted(stale)
    aborted = reports[0]["uploads_aborted"] + reports[1]["uploads_aborted"]
    assert len(aborted) == len(set(aborted)) and {tuple(x.split()) for x in aborted} == orphans
    assert _mpus(s3_client, bucket) == set()
    assert _objects(s3_client, bucket, "resumable/.tails/") == set()
    # --dry-run on a clean ledger and bucket: nothing to do, and it says so.
    out = subprocess.run(cmd[:-1] + ["--dry-run"], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("dry run: would expire 0 stale upload(s)")
