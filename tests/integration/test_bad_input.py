"""Bad input gets a typed error, loses nothing, and never kills the worker."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import time
import uuid

import google_crc32c
import pytest
from django.core import signing
from websockets.asyncio.client import connect

from djust_resumable.conf import MiB
from djust_resumable.protocol import encode_data
from djust_resumable.tokens import UploadGrant, mint_token

from .conftest import object_sha256

pytestmark = pytest.mark.integration
PS = 5 * MiB


class Raw:
    """A hand-driven protocol client: sends exactly what the test says."""

    def __init__(self, ws):
        self.ws = ws

    async def send(self, **msg):
        await self.ws.send(json.dumps(msg))

    async def recv(self):
        return json.loads(await self.ws.recv())

    async def call(self, **msg):
        await self.send(**msg)
        return await self.recv()

    async def frame(self, ref, offset, payload):
        await self.ws.send(encode_data(ref, offset, payload))
        return await self.recv()


async def test_bad_input_is_typed_and_harmless(workers, grant, token, s3_client, s3_bucket,
                                               ledger_reader, monkeypatch):
    (w,) = workers(1, PREFERRED_PART_SIZE=PS, MAX_FRAME_BYTES=1 * MiB)
    data = b"\x89PNG\r\n\x1a\n" + os.urandom(12 * MiB - 8)  # declared image/png: real magic
    ledger = ledger_reader()
    async with connect(w.url, compression=None, max_size=None) as ws:
        c = Raw(ws)
        # Tokens: forged, expired, missing.
        forged = token[:-3] + ("AAA" if not token.endswith("AAA") else "BBB")
        m = await c.call(type="open", id="f", token=forged, name="a.bin", size=10)
        assert (m["type"], m["code"], m["id"]) == ("error", "bad_token", "f")
        real_time = time.time
        monkeypatch.setattr(signing.time, "time", lambda: real_time() - 2 * 86400)
        old = mint_token(grant)
        monkeypatch.setattr(signing.time, "time", real_time)
        assert (await c.call(type="open", token=old, name="a", size=1))["code"] == "token_expired"
        assert (await c.call(type="open", name="a", size=1))["code"] == "bad_message"
        # Declared size above the slot's max_file_size.
        small = mint_token(UploadGrant(session=grant.session, user=grant.user, view="v",
                                       slot=grant.slot, max_file_size=MiB))
        m = await c.call(type="open", token=small, name="a", size=MiB + 1)
        assert (m["code"], m["max_file_size"]) == ("too_large", MiB)
        # A real upload.
        ready = await c.call(type="open", id="1", token=token, name="evil.exe.png",
                             size=len(data), content_type="image/png")
        assert ready["type"] == "ready" and ready["offset"] == 0 and ready["part_size"] == PS
        ref = ready["ref"]
        # Gap: a frame past the received offset.
        m = await c.frame(ref, 100, data[100:200])
        assert (m["code"], m["offset"], m["retryable"]) == ("offset_mismatch", 0, True)
        m = await c.frame(ref, 0, data[:MiB])
        assert (m["type"], m["received"]) == ("progress", MiB)
        # Duplicate and overlapping frames: skipped / trimmed.
        assert (await c.frame(ref, 0, data[:MiB]))["received"] == MiB
        assert (await c.frame(ref, MiB // 2, data[MiB // 2: MiB + MiB // 2]))["received"] == (
            MiB + MiB // 2)
        # Bytes past the declared size.
        m = await c.frame(ref, len(data) - 10, data[-10:] + b"0123456789")
        assert (m["code"], m["offset"]) == ("size_exceeded", MiB + MiB // 2)
        # Frame above the limit, truncated, unknown type, garbage text, empty.
        m = await c.frame(ref, MiB + MiB // 2, os.urandom(MiB + 1))
        assert (m["code"], m["max_frame"]) == ("frame_too_large", MiB)
        await ws.send(encode_data(ref, 0, b"x")[:20])
        assert (await c.recv())["code"] == "bad_frame"
        await ws.send(b"\x07" + encode_data(ref, 0, b"xyz")[1:])
        assert (await c.recv())["code"] == "bad_frame"
        await ws.send("{not json")
        assert (await c.recv())["code"] == "bad_message"
        await ws.send(b"")
        assert (await c.recv())["code"] == "bad_frame"
        # Unknown ref: frames answer not_open, resume answers not_found.
        other = uuid.uuid4().hex
        assert (await c.frame(other, 0, b"abc"))["code"] == "not_open"
        missing = await c.call(type="resume", token=token, ref=other)
        assert missing["code"] == "not_found"
        # Finish too early.
        m = await c.call(type="finish", ref=ref)
        assert (m["code"], m["offset"]) == ("incomplete", MiB + MiB // 2)
    # Another session's token on this ref: exactly the answer a missing upload gets.
    stranger = mint_token(UploadGrant(session="someone-else", user="8", view="v",
                                      slot=grant.slot, max_file_size=1 << 40))
    async with connect(w.url, compression=None) as ws:
        c = Raw(ws)
        theirs = await c.call(type="resume", token=stranger, ref=ref)
        not_there = await c.call(type="resume", token=stranger, ref=other)
        assert theirs == {**not_there, "ref": ref}
        assert (await c.call(type="cancel", token=stranger, ref=ref))["code"] == "not_found"
    # Nothing was lost: the owner resumes at the durable offset and finishes byte-exact.
    async with connect(w.url, compression=None, max_size=None) as ws:
        c = Raw(ws)
        ready = await c.call(type="resume", token=token, ref=ref)
        assert ready["type"] == "ready" and ready["offset"] == MiB + MiB // 2  # spilled tail
        off = ready["offset"]
        while off < len(data):
            n = min(MiB, len(data) - off)
            await ws.send(encode_data(ref, off, data[off:off + n]))
            off += n
        crc = google_crc32c.value(data)
        await c.send(type="finish", ref=ref, crc32c=crc)
        while (m := await c.recv())["type"] != "done":
            assert m["type"] in ("progress", "ack"), m
        assert (m["size"], m["crc32c"]) == (len(data), crc)
    rec = await ledger.get(ref)
    assert rec.state == "complete" and rec.head == data[:4096]
    assert object_sha256(s3_client, s3_bucket, rec.key) == (hashlib.sha256(data).hexdigest(),
                                                            len(data))
    assert w.alive()


async def _upload_all(c: Raw, ws, token: str, data: bytes) -> str:
    ready = await c.call(type="open", token=token, name="f.bin", size=len(data))
    ref = ready["ref"]
    for off in range(0, len(data), MiB):
        await ws.send(encode_data(ref, off, data[off:off + MiB]))
    return ref


async def test_checksum_mismatch_fails_the_upload(workers, token, ledger_reader, s3_client,
                                                  s3_bucket):
    (w,) = workers(1, PREFERRED_PART_SIZE=PS)
    data = os.urandom(6 * MiB)
    async with connect(w.url, compression=None, max_size=None) as ws:
        c = Raw(ws)
        ref = await _upload_all(c, ws, token, data)
        await c.send(type="finish", ref=ref, crc32c=(google_crc32c.value(data) + 1) % 2**32)
        while (m := await c.recv())["type"] != "error":
            pass
        assert m["code"] == "checksum_mismatch"
    rec = await ledger_reader().get(ref)
    assert rec.state == "failed" and rec.error == "checksum_mismatch"
    listed = s3_client.list_objects_v2(Bucket=s3_bucket, Prefix=rec.key).get("KeyCount", 0)
    assert listed == 0  # no corrupt object was completed
    assert w.alive()


async def test_finish_is_idempotent_when_done_is_lost(workers, token, ledger_reader, moto_server,
                                                      s3_client, s3_bucket):
    (w,) = workers(1, PREFERRED_PART_SIZE=PS)
    data = os.urandom(11 * MiB)
    ledger = ledger_reader()
    async with connect(w.url, compression=None, max_size=None) as ws:
        c = Raw(ws)
        ref = await _upload_all(c, ws, token, data)
        await c.send(type="finish", ref=ref, crc32c=google_crc32c.value(data))
        # Drop the connection before hearing "done".
    deadline = time.monotonic() + 30
    while (await ledger.get(ref)).state != "complete":
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    async with connect(w.url, compression=None) as ws:
        c = Raw(ws)
        m = await c.call(type="resume", token=token, ref=ref, id="r")
        assert (m["type"], m["ref"], m["size"], m["id"]) == ("done", ref, len(data), "r")
    rec = await ledger.get(ref)
    assert rec.complete_calls == 1
    assert moto_server.count_requests("POST", rf"^/{s3_bucket}/{rec.key}\?uploadId=") == 1
    assert object_sha256(s3_client, s3_bucket, rec.key)[0] == hashlib.sha256(data).hexdigest()

