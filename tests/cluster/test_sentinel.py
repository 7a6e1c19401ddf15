"""The ledger behind Redis Sentinel (``REDIS_SENTINELS``): an upload through real uvicorn
workers survives a forced failover (``SENTINEL FAILOVER``: the replica becomes master, the
old master a replica that answers writes with READONLY) and the object is byte-exact. The
master, replica and sentinel run deploy/redis/redis.conf and deploy/redis/sentinel.conf."""

from __future__ import annotations

import asyncio
import uuid

import pytest
import redis.asyncio as aioredis

from djust_resumable.client import ResumableUploader
from djust_resumable.conf import MiB, get_settings
from djust_resumable.ledger import Ledger
from djust_resumable.redis_client import async_client
from tests.helpers import make_random_file, sha256_file
from tests.integration.conftest import object_sha256

from .conftest import SentinelSet

pytestmark = pytest.mark.integration


async def test_upload_survives_sentinel_failover(workers, redis_sentinel: SentinelSet,
                                                 redis_server, token, tmp_path, s3_client,
                                                 s3_bucket):
    sset = redis_sentinel
    prefix = "sn" + uuid.uuid4().hex[:10]
    (w,) = workers(1, redis=sset, channel_redis=redis_server, KEY_PREFIX=prefix,
                   REDIS_SENTINELS=sset.sentinels, REDIS_SENTINEL_MASTER=sset.name)
    src = make_random_file(tmp_path / "src.bin", 48 * MiB)
    failed_over: list[int] = []
    task: list[asyncio.Future[None]] = []

    def on_progress(sent: int, durable: int, total: int) -> None:
        if not failed_over and durable >= 16 * MiB:
            failed_over.append(durable)
            task.append(asyncio.ensure_future(asyncio.to_thread(sset.failover)))

    result = await ResumableUploader(w.url, token, on_progress=on_progress,
                                     backoff_max=1).upload(str(src))
    assert failed_over
    await asyncio.wait_for(task[0], 90)
    assert sset.master_port() == sset.replica.port  # the failover really happened

    # The record is complete on the new master (read through the sentinel, and directly).
    from django.test.utils import override_settings

    with override_settings(DJUST_RESUMABLE={"KEY_PREFIX": prefix, "REDIS_URL": sset.url,
                                            "REDIS_SENTINELS": sset.sentinels,
                                            "REDIS_SENTINEL_MASTER": sset.name}):
        s = get_settings()
    ledger = Ledger(async_client(s), s)
    direct = Ledger(aioredis.Redis.from_url(sset.replica.url), s)
    try:
        for lg in (ledger, direct):
            rec = await lg.get(result.ref)
            assert rec is not None and rec.state == "complete"
        assert object_sha256(s3_client, s3_bucket, rec.key) == (sha256_file(src), rec.size)
    finally:
        await ledger.close()
        await direct.close()
    assert w.alive() and "Traceback" not in w.log_text()
