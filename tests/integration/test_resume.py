"""Resume across workers: SIGKILL, clean drop, Redis restart, a second connection.

``DJR_LOOP=N`` repeats the SIGKILL and clean-drop trials N times (``make test-resume-loop``).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from djust_resumable.client import ResumableUploader
from djust_resumable.conf import MiB
from tests.helpers import make_random_file, sha256_file

from .conftest import object_sha256

pytestmark = pytest.mark.integration
TRIALS = range(int(os.environ.get("DJR_LOOP", "1")))
PART = 8 * MiB


async def _check_stored(ledger, ref, src, s3_client, bucket):
    rec = await ledger.get(ref)
    assert rec.state == "complete"
    assert object_sha256(s3_client, bucket, rec.key) == (sha256_file(src), rec.size)
    parts = await ledger.parts(ref)
    # Part boundaries are fixed: every part but the last is exactly the part size.
    assert [p.size for p in parts[:-1]] == [rec.part_size] * (len(parts) - 1)
    assert [p.number for p in parts] == list(range(1, len(parts) + 1))
    return rec


@pytest.mark.parametrize("trial", TRIALS)
async def test_sigkill_mid_upload_resumes_on_other_worker(trial, workers, token, tmp_path,
                                                          s3_client, s3_bucket, ledger_reader):
    a, b = workers(2)
    size = 64 * MiB
    src = make_random_file(tmp_path / "src.bin", size)
    kill_at = random.randrange(size // 10, size * 9 // 10)
    killed: list[int] = []

    def on_progress(sent: int, durable: int, total: int) -> None:
        if not killed and sent >= kill_at:
            killed.append(sent)
            a.kill(signal.SIGKILL)

    up = ResumableUploader([a.url, b.url], token, on_progress=on_progress, backoff_max=1)
    result = await up.upload(str(src))
    assert killed and not a.alive() and b.alive()
    rec = await _check_stored(ledger_reader(), result.ref, src, s3_client, s3_bucket)
    assert result.connections >= 2 and rec.attaches >= 2
    # At most one part's worth of bytes (the window) is sent twice after a SIGKILL.
    assert 0 <= result.bytes_resent <= rec.part_size, (kill_at, result.resume_offsets)


@pytest.mark.parametrize("trial", TRIALS)
async def test_clean_drop_mid_part_resends_nothing(trial, workers, token, tmp_path, s3_client,
                                                   s3_bucket, ledger_reader):
    a, b = workers(2)
    size = 40 * MiB
    src = make_random_file(tmp_path / "src.bin", size)
    # Frames are 1 MiB, so the client's sent offset moves in MiB steps: pick a step that
    # is not a part boundary.
    drop_at = random.choice([m for m in range(9, 32) if m % 8]) * MiB
    dropped: list[int] = []
    up: ResumableUploader

    async def on_progress(sent: int, durable: int, total: int) -> None:
        if not dropped and sent >= drop_at:
            dropped.append(sent)
            await up.drop()

    up = ResumableUploader([a.url, b.url], token, on_progress=on_progress, backoff_max=1)
    result = await up.upload(str(src))
    rec = await _check_stored(ledger_reader(), result.ref, src, s3_client, s3_bucket)
    assert dropped and result.connections == 2
    # The second connection went to the other worker and started where the first stopped.
    assert result.resume_offsets[1] == dropped[0]
    assert result.bytes_resent == 0
    assert dropped[0] % rec.part_size and rec.spills >= 1
    events = [e["event"] for e in await ledger_reader().events(result.ref)]
    assert "spilled" in events and "tail_restored" in events


async def test_redis_restart_with_aof_mid_upload(redis_factory, workers, token, tmp_path,
                                                 s3_client, s3_bucket, ledger_reader):
    redis = redis_factory(aof=True)
    (w,) = workers(1, redis=redis)
    size = 64 * MiB
    src = make_random_file(tmp_path / "src.bin", size)
    restarted: list[int] = []

    def on_progress(sent: int, durable: int, total: int) -> None:
        if not restarted and durable >= 2 * PART:
            restarted.append(durable)
            redis.restart()

    up = ResumableUploader(w.url, token, on_progress=on_progress, backoff_max=1)
    result = await up.upload(str(src))
    assert restarted
    await _check_stored(ledger_reader(redis.url), result.ref, src, s3_client, s3_bucket)
    assert w.alive()


async def test_second_connection_takes_over_one_writer_at_a_time(
        workers, token, tmp_path, s3_client, s3_bucket, ledger_reader):
    a, b = workers(2)
    size = 48 * MiB
    src = make_random_file(tmp_path / "src.bin", size)
    seen: dict[str, object] = {}
    up: ResumableUploader

    intruder_ready = asyncio.Event()

    async def intruder(ref: str) -> None:
        async with connect(b.url, compression=None) as ws:
            await ws.send(json.dumps({"type": "resume", "token": token, "ref": ref}))
            seen["intruder_first"] = json.loads(await ws.recv())
            intruder_ready.set()
            # The first client comes back and asks us to hand over in turn.
            try:
                async for raw in ws:
                    msg = json.loads(raw)
                    if msg["type"] == "error":
                        seen["intruder_then"] = msg
            except ConnectionClosed:
                pass  # 4009 is not a "normal" close for websockets: it raises
            seen["intruder_close"] = ws.close_code

    async def on_progress(sent: int, durable: int, total: int) -> None:
        if "task" not in seen and sent >= 20 * MiB + 4321:
            seen["task"] = asyncio.create_task(intruder(up.ref))
            # Hold this client's sender until the intruder owns the upload; its receive
            # loop still runs and hears "superseded".
            await asyncio.wait_for(intruder_ready.wait(), 20)

    up = ResumableUploader([a.url, b.url], token, on_progress=on_progress, backoff_max=1)
    result = await up.upload(str(src))
    await asyncio.wait_for(seen["task"], 30)
    first = seen["intruder_first"]
    assert first["type"] == "ready" and first["offset"] >= 20 * MiB
    assert seen["intruder_then"]["code"] == "superseded"
    assert seen["intruder_close"] == 4009
    rec = await _check_stored(ledger_reader(), result.ref, src, s3_client, s3_bucket)
    assert rec.attaches >= 3
    # Both handovers spilled the partial part: nothing was sent twice.
    assert result.bytes_resent == 0


async def test_local_sink_resumes_across_workers(workers, token, tmp_path, ledger_reader):
    """The development sink keeps the same durability story on one machine."""
    store = tmp_path / "store"
    a, b = workers(2, SINK="local", LOCAL_ROOT=str(store))
    size = 30 * MiB
    src = make_random_file(tmp_path / "src.bin", size)
    events: list[str] = []
    up: ResumableUploader

    async def on_progress(sent: int, durable: int, total: int) -> None:
        if not events and sent >= 9 * MiB + 777:
            events.append("drop")
            await up.drop()
        elif events == ["drop"] and sent >= 20 * MiB:
            events.append("kill")
            b.kill(signal.SIGKILL)  # the second connection went to b: kill the holder

    up = ResumableUploader([a.url, b.url], token, on_progress=on_progress, backoff_max=1)
    result = await up.upload(str(src))
    assert events == ["drop", "kill"] and result.connections >= 3
    rec = await ledger_reader().get(result.ref)
    assert rec.state == "complete" and sha256_file(store / rec.key) == sha256_file(src)
    assert result.bytes_resent <= rec.part_size
