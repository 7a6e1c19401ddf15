"""Service level, real Redis + moto: memory follows the bytes received, not the declared size
(a client declaring a huge file gets a huge part size, docs/durability.md)."""

from __future__ import annotations

import hashlib
import os
import uuid

import pytest

from djust_resumable.conf import MiB

pytestmark = pytest.mark.integration


async def _noack(*_: object) -> None:
    return None


async def test_declared_size_does_not_allocate_a_part_buffer(django_s3_settings, redis_server,
                                                             s3_client, s3_bucket):
    from djust_resumable.conf import get_settings
    from djust_resumable.ledger import Ledger
    from djust_resumable.service import UploadService
    from djust_resumable.sinks import get_sink
    from djust_resumable.tokens import UploadGrant

    django_s3_settings(REDIS_URL=redis_server.url, KEY_PREFIX="wb" + uuid.uuid4().hex[:8])
    s = get_settings()
    ledger = Ledger.from_settings(s)
    svc = UploadService(ledger, get_sink(s), s)
    grant = UploadGrant(session=os.urandom(8).hex(), user="3", view="t", slot="files",
                        max_file_size=1 << 41)
    try:
        huge = 1 << 40  # 1 TiB declared: S3's 10,000-part limit forces ~105 MiB parts
        rec = await svc.register(grant, "x.bin", huge, "application/octet-stream")
        assert rec.part_size > 100 * MiB
        w = await svc.attach(rec.ref, grant, "c1", "", _noack)
        await w.write(0, memoryview(os.urandom(MiB)))
        assert w.cur is not None and w.cur.fed == MiB and w.cur.length == rec.part_size
        assert len(w.cur.stream.retained()) == MiB, "the part holds what arrived, no more"
        await svc.cancel(rec.ref, grant)
        await w.release()

        # Frames that straddle part boundaries land byte-exact: each part stream gets exactly
        # its own bytes, the short last part included.
        data = os.urandom(2 * 5 * MiB + 12345)
        rec = await svc.register(grant, "y.bin", len(data), "application/octet-stream")
        w = await svc.attach(rec.ref, grant, "c2", "", _noack)
        for off in range(0, len(data), 777_777):  # odd frame size: crosses part boundaries
            await w.write(off, memoryview(data[off: off + 777_777]))
        done = await w.finish(None)
        await w.release()
        key = (await ledger.require(done.ref)).key
        body = s3_client.get_object(Bucket=s3_bucket, Key=key)["Body"].read()
        assert hashlib.sha256(body).hexdigest() == hashlib.sha256(data).hexdigest()
    finally:
        await ledger.close()
