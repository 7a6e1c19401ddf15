"""Parts a dead writer sent in full are adopted by the next writer (ListParts), so a kill -9
right after a part's last byte costs the client nothing for that part (durability rule 2,
docs/durability.md "Adopting parts"). Real Redis + moto_server; the crash is a writer whose
ledger never records the part (its commit hangs forever, as if the process died between the
store's answer and the ledger write) and whose lease then expires."""

from __future__ import annotations

import asyncio
import hashlib
import os
import uuid

import pytest

from djust_resumable.conf import MiB

pytestmark = pytest.mark.integration

PS = 5 * MiB


async def _noack(*_: object) -> None:
    return None


async def _hang(*_: object, **__: object) -> None:
    await asyncio.Event().wait()  # the process "died" before the ledger write


def _service(settings):  # type: ignore[no-untyped-def]
    from djust_resumable.ledger import Ledger
    from djust_resumable.service import UploadService
    from djust_resumable.sinks import get_sink

    return UploadService(Ledger.from_settings(settings), get_sink(settings), settings)


@pytest.fixture
def grant():
    from djust_resumable.tokens import UploadGrant

    return UploadGrant(session=os.urandom(8).hex(), user="5", view="t", slot="files",
                       max_file_size=1 << 30)


async def _dead_writer_with_part_sent(svc, grant, data: bytes, sent: int):  # type: ignore[no-untyped-def]
    """A writer that received ``sent`` bytes (part 1 whole, part 2 partly), had part 1
    stored by S3, and died before recording it."""
    rec = await svc.register(grant, "a.bin", len(data), "application/octet-stream")
    w = await svc.attach(rec.ref, grant, "dead", "", _noack)
    w.ledger.commit_part = _hang  # this writer's ledger never records a part
    await w.write(0, memoryview(data[:sent]))
    for _ in range(600):  # the part is noted as sent and stored at S3 (its commit hangs)
        pending = await svc.ledger.pending_parts(rec.ref)
        if 1 in pending and 1 in await svc.sink.list_parts(rec.key, rec.upload_id, [1]):
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError("part 1 never reached the store")
    assert w.inflight and not w.inflight[0].done()  # never recorded by this writer
    return rec, w


@pytest.fixture
async def services(django_s3_settings, redis_server):
    """Two services on one ledger and bucket: the writer that dies, and the next one. Two
    parts may be open (so the dead writer receives part 2 while part 1 is being stored); a
    1 s lease, so the next one takes over quickly."""
    from djust_resumable.conf import get_settings

    django_s3_settings(REDIS_URL=redis_server.url, KEY_PREFIX="ad" + uuid.uuid4().hex[:8],
                       PREFERRED_PART_SIZE=PS, PARTS_IN_FLIGHT=2, LEASE_TTL=1,
                       HANDOVER_TIMEOUT=4)
    s = get_settings()
    dead, alive = _service(s), _service(s)
    try:
        yield dead, alive
    finally:
        await dead.ledger.close()
        await alive.ledger.close()


async def test_killed_writer_part_is_adopted_and_the_object_is_byte_exact(
        services, s3_client, s3_bucket, grant):
    dead, alive = services
    data = os.urandom(2 * PS + 12345)
    rec, _ = await _dead_writer_with_part_sent(dead, grant, data, PS + MiB)
    assert (await alive.ledger.require(rec.ref)).durable == 0  # never recorded
    listed = s3_client.list_parts(Bucket=s3_bucket, Key=rec.key, UploadId=rec.upload_id)
    assert [p["PartNumber"] for p in listed.get("Parts", [])] == [1]

    w2 = await alive.attach(rec.ref, grant, "next", "", _noack)  # after the lease expired
    assert w2.durable == PS, "part 1 must be adopted, not re-sent"
    events = [e["event"] for e in await alive.ledger.events(rec.ref)]
    assert "parts_adopted" in events
    await w2.write(PS, memoryview(data[PS:]))
    done = await w2.finish(None)
    await w2.release()
    body = s3_client.get_object(Bucket=s3_bucket, Key=rec.key)["Body"].read()
    assert hashlib.sha256(body).digest() == hashlib.sha256(data).digest()
    assert done.size == len(data)
    final = await alive.ledger.require(rec.ref)
    assert final.state == "complete" and final.crc == done.crc32c
    assert not await alive.ledger.pending_parts(rec.ref)  # recorded: no longer pending


async def test_a_noted_part_the_store_never_got_is_not_adopted(
        services, s3_client, s3_bucket, grant):
    dead, alive = services
    data = os.urandom(2 * PS)
    rec, _ = await _dead_writer_with_part_sent(dead, grant, data, PS + MiB)
    # The store lost the part (or never got its last bytes): gone from ListParts.
    s3_client.abort_multipart_upload(Bucket=s3_bucket, Key=rec.key, UploadId=rec.upload_id)
    new_id = s3_client.create_multipart_upload(Bucket=s3_bucket, Key=rec.key)["UploadId"]
    await alive.ledger.r.hset(alive.ledger._k(rec.ref, "meta"), "upload_id", new_id)
    # A part of the wrong size under the noted number is not adopted either.
    s3_client.upload_part(Bucket=s3_bucket, Key=rec.key, UploadId=new_id, PartNumber=1,
                          Body=data[:PS - 1])
    w2 = await alive.attach(rec.ref, grant, "next", "", _noack)
    assert w2.durable == 0, "the client must re-send the part"
    await w2.write(0, memoryview(data))
    await w2.finish(None)
    await w2.release()
    body = s3_client.get_object(Bucket=s3_bucket, Key=rec.key)["Body"].read()
    assert hashlib.sha256(body).digest() == hashlib.sha256(data).digest()
