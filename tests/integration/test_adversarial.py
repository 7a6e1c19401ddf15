"""Adversarial tests: hostile or odd clients and broken backends.

The project's rule: bad input gets a clear typed error and loses nothing - never a traceback
to the client, never a dead worker, never a corrupt object. Every test here asserts the
CORRECT behaviour; the ones that fail document a real bug (see the report that added them).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import time
import uuid

import google_crc32c
import pytest
from websockets.asyncio.client import connect

from djust_resumable.conf import MiB
from djust_resumable.protocol import HEADER, encode_data
from djust_resumable.tokens import UploadGrant, mint_token
from tests.helpers import free_port

from .conftest import Worker, object_sha256

pytestmark = pytest.mark.integration
PS = 5 * MiB
FORBIDDEN_IN_MESSAGES = ("Traceback", "File \"", "redis://", "Error 111", "127.0.0.1",
                         "KeyError", "UnicodeEncodeError", "botocore")


class Raw:
    """A hand-driven protocol client: sends exactly what the test says."""

    def __init__(self, ws):
        self.ws = ws
        self.seen: list[dict] = []

    async def send(self, **msg):
        await self.ws.send(json.dumps(msg))

    async def send_text(self, text: str):
        await self.ws.send(text)

    async def recv(self, timeout: float = 60):
        m = json.loads(await asyncio.wait_for(self.ws.recv(), timeout))
        self.seen.append(m)
        return m

    async def call(self, timeout: float = 60, **msg):
        """Send a control message and return the next answer that is not an ack (acks come
        whenever a part is stored, independently of requests)."""
        await self.send(**msg)
        while (m := await self.recv(timeout))["type"] == "ack":
            pass
        return m

    async def frame(self, ref, offset, payload):
        await self.ws.send(encode_data(ref, offset, payload))
        return await self.recv()

    async def until(self, *types: str, timeout: float = 60):
        """Skip progress/ack until a message of one of ``types`` (or an error) arrives."""
        while True:
            m = await self.recv(timeout)
            if m["type"] in types or m["type"] == "error":
                return m
            assert m["type"] in ("progress", "ack"), m

    def assert_no_leaks(self):
        for m in self.seen:
            text = json.dumps(m)
            for bad in FORBIDDEN_IN_MESSAGES:
                assert bad not in text, f"internal detail {bad!r} sent to the client: {m}"


@pytest.fixture
def many(grant) -> str:
    """A token for the same owner and slot allowing 100 files at once (max_entries)."""
    return mint_token(UploadGrant(session=grant.session, user=grant.user, view=grant.view,
                                  slot=grant.slot, max_file_size=grant.max_file_size,
                                  max_entries=100))


def _multipart_uploads(s3_client, bucket: str) -> list[dict]:
    return s3_client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) or []


async def _send_all(ws, ref: str, data: bytes, start: int = 0, step: int = MiB):
    for off in range(start, len(data), step):
        await ws.send(encode_data(ref, off, data[off:off + step]))


# --------------------------------------------------------------------------- real bugs


async def test_cancel_from_another_connection_with_token_cancels(
        workers, token, ledger_reader, s3_client, s3_bucket):
    """protocol.md: `cancel` takes `token` when the ref is not open on this connection.
    parse_control drops `token` for cancel, so the owner can never cancel from a new socket."""
    (w,) = workers(1, PREFERRED_PART_SIZE=PS)
    async with connect(w.url, compression=None, max_size=None) as ws:
        c = Raw(ws)
        ready = await c.call(type="open", token=token, name="a.bin", size=12 * MiB)
        ref = ready["ref"]
        assert (await c.frame(ref, 0, os.urandom(MiB)))["type"] == "progress"
    ledger = ledger_reader()
    # Wait for the first connection's detach (spill + release).
    deadline = time.monotonic() + 20
    while (await ledger.get(ref)).holder:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    async with connect(w.url, compression=None) as ws:
        c = Raw(ws)
        m = await c.call(type="cancel", id="c", token=token, ref=ref)
        assert m["type"] == "cancelled", m
        m = await c.call(type="resume", token=token, ref=ref)
        assert m["code"] == "aborted", m
    rec = await ledger.get(ref)
    assert rec.state == "aborted"
    assert not [u for u in _multipart_uploads(s3_client, s3_bucket) if u["Key"] == rec.key]
    assert w.alive()


async def test_lone_surrogate_in_client_strings_is_a_typed_client_error(workers, token,
                                                                         s3_client, s3_bucket):
    """JSON may carry a lone UTF-16 surrogate ("\\ud800"). In `name` / `fingerprint` it
    reaches redis-py, which cannot encode it: the client hears `internal` (retryable: true),
    so a well-behaved client retries a hopeless request forever. Expected: a non-retryable
    `bad_message` (or the name accepted after replacing the surrogate), and no orphan
    multipart upload."""
    (w,) = workers(1, PREFERRED_PART_SIZE=PS)
    before = len(_multipart_uploads(s3_client, s3_bucket))
    async with connect(w.url, compression=None, max_size=None) as ws:
        c = Raw(ws)
        for field in ("name", "fingerprint"):
            msg = {"type": "open", "id": "s", "token": token, "name": "ok.bin", "size": 10}
            msg[field] = "evil-\ud800-name"
            # json.dumps escapes it as \ud800: exactly what a browser's JSON.stringify sends.
            await c.send_text(json.dumps(msg))
            m = await c.recv()
            assert m["type"] == "ready" or (m["code"], m["retryable"]) == ("bad_message", False), (
                field, m)
            if m["type"] == "ready":
                assert (await c.call(type="cancel", ref=m["ref"]))["type"] == "cancelled"
        # Odd but valid unicode is fine: RTL override, NUL, emoji, 255+ chars.
        m = await c.call(type="open", token=token, name="\u202egnp.exe\x00" + "😀" * 300,
                         size=3, fingerprint="é" * 128)
        assert m["type"] == "ready", m
        # A 3-byte file is complete with this frame: its part's ack may come first.
        assert (await c.frame(m["ref"], 0, b"abc"))["type"] in ("ack", "progress")
        await c.send(type="finish", ref=m["ref"])
        assert (await c.until("done", timeout=30))["type"] == "done"
        c.assert_no_leaks()
    assert len(_multipart_uploads(s3_client, s3_bucket)) == before
    assert w.alive()


async def test_lone_surrogate_in_token_is_bad_token(workers, token):
    """A token with a lone surrogate makes django.core.signing raise UnicodeEncodeError,
    which read_token does not catch: `internal` (retryable) instead of `bad_token`."""
    (w,) = workers(1)
    async with connect(w.url, compression=None) as ws:
        c = Raw(ws)
        await c.send_text(json.dumps({"type": "open", "token": token[:-1] + "\udc80",
                                      "name": "a", "size": 1}))
        m = await c.recv()
        assert (m["code"], m["retryable"]) == ("bad_token", False), m
        await c.send_text(json.dumps({"type": "resume", "token": "\ud800",
                                      "ref": uuid.uuid4().hex}))
        m = await c.recv()
        assert (m["code"], m["retryable"]) == ("bad_token", False), m
        c.assert_no_leaks()
    assert w.alive()


async def test_bad_content_type_is_not_a_retryable_storage_error(workers, token, s3_client,
                                                                 s3_bucket):
    """`content_type` goes unchecked into the S3 ContentType header. A value with CR/LF or
    non-latin-1 characters fails inside botocore, and the client hears `storage_error`
    (retryable) for what is bad input: it retries forever. Expected: `bad_message`, or the
    upload accepted with a sanitised content type."""
    (w,) = workers(1, PREFERRED_PART_SIZE=PS)
    async with connect(w.url, compression=None) as ws:
        c = Raw(ws)
        for ctype in ("text/plain\r\nX-Amz-Meta-Evil: 1", "image/png; name=\u00e9\u4e2d"):
            m = await c.call(type="open", token=token, name="a", size=1, content_type=ctype)
            assert m["type"] == "ready" or (m["code"], m["retryable"]) == ("bad_message", False), (
                ctype, m)
            if m["type"] == "ready":
                assert (await c.frame(m["ref"], 0, b"z"))["type"] == "progress"
                await c.send(type="finish", ref=m["ref"])
                assert (await c.until("done"))["type"] == "done"
        c.assert_no_leaks()
    assert w.alive()


async def test_rejected_opens_leave_no_multipart_uploads_or_records(
        workers, many, ledger_reader, s3_client, s3_bucket):
    """`open` creates the S3 multipart upload and the ledger record BEFORE the per-user limit
    is checked in attach. Every `too_many_uploads` answer leaks one multipart upload (billed
    storage until a lifecycle rule) and one ledger record (24 h), so one client can create
    unbounded S3/Redis state by repeating `open`."""
    (w,) = workers(1, PREFERRED_PART_SIZE=PS, MAX_UPLOADS_PER_USER=2)
    before = len(_multipart_uploads(s3_client, s3_bucket))
    ledger = ledger_reader()
    refs_before = await ledger.r.zcard(ledger.index_key)
    async with connect(w.url, compression=None) as ws:
        c = Raw(ws)
        answers = [await c.call(type="open", token=many, name=f"f{i}", size=PS)
                   for i in range(20)]
        ready = [m for m in answers if m["type"] == "ready"]
        refused = [m for m in answers if m["type"] == "error"]
        assert len(ready) == 2 and {m["code"] for m in refused} == {"too_many_uploads"}
        open_now = len(_multipart_uploads(s3_client, s3_bucket)) - before
        assert open_now == 2, f"{open_now} multipart uploads open for 2 accepted opens"
        new_records = await ledger.r.zcard(ledger.index_key) - refs_before
        assert new_records == 2, f"{new_records} ledger records for 2 accepted opens"
    assert w.alive()


async def test_resume_with_another_slots_token_on_same_socket_is_not_found(workers, grant,
                                                                          token):
    """A record is bound to owner AND slot; a resume by anyone else answers `not_found`.
    On the socket that holds the ref, `_attach` returns the cached writer without checking
    the token's grant, so a token for another slot (or another user) gets `ready`."""
    (w,) = workers(1, PREFERRED_PART_SIZE=PS)
    other_slot = mint_token(UploadGrant(session=grant.session, user=grant.user, view="v",
                                        slot="avatars", max_file_size=1 << 40))
    stranger = mint_token(UploadGrant(session="someone-else", user="8", view="v",
                                      slot=grant.slot, max_file_size=1 << 40))
    async with connect(w.url, compression=None) as ws:
        c = Raw(ws)
        ref = (await c.call(type="open", token=token, name="a", size=PS))["ref"]
        for tok in (other_slot, stranger):
            m = await c.call(type="resume", token=tok, ref=ref)
            assert (m["type"], m.get("code")) == ("error", "not_found"), m
    assert w.alive()


async def test_lost_spilled_tail_does_not_wedge_the_upload(workers, token, ledger_reader,
                                                          s3_client, s3_bucket):
    """If the spilled tail object disappears (lifecycle rule, operator cleanup, a bucket
    restore), every `resume` answers `storage_error` (retryable) forever: the client retries
    a resume that can never succeed. The parts below the tail are intact, so the server can
    fall back to the last part boundary and let the client re-send the tail."""
    (w,) = workers(1, PREFERRED_PART_SIZE=PS)
    data = os.urandom(12 * MiB)
    ledger = ledger_reader()
    async with connect(w.url, compression=None, max_size=None) as ws:
        c = Raw(ws)
        ref = (await c.call(type="open", token=token, name="t", size=len(data)))["ref"]
        await _send_all(ws, ref, data[:7 * MiB])
        for _ in range(7):
            await c.until("progress")
    deadline = time.monotonic() + 20
    while (rec := await ledger.get(ref)).tail_len == 0 or rec.holder:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    assert (rec.durable, rec.tail_offset) == (7 * MiB, PS)
    s3_client.delete_object(Bucket=s3_bucket, Key=rec.tail_key)
    async with connect(w.url, compression=None, max_size=None) as ws:
        c = Raw(ws)
        m = await c.call(type="resume", token=token, ref=ref)
        assert m["type"] == "ready", m
        assert m["offset"] == PS  # back to the last stored part
        await _send_all(ws, ref, data, start=m["offset"])
        await c.send(type="finish", ref=ref, crc32c=google_crc32c.value(data))
        assert (await c.until("done"))["type"] == "done"
    rec = await ledger.get(ref)
    assert object_sha256(s3_client, s3_bucket, rec.key)[0] == hashlib.sha256(data).hexdigest()
    assert w.alive()


async def test_done_after_finish_echoes_the_request_id(workers, token):
    """protocol.md: `id` is echoed in the answer (`done` lists `id?`). `_on_finish` sends
    `done` without it, so a client matching answers by id never sees its finish answered."""
    (w,) = workers(1, PREFERRED_PART_SIZE=PS)
    async with connect(w.url, compression=None) as ws:
        c = Raw(ws)
        ref = (await c.call(type="open", token=token, name="a", size=2))["ref"]
        await c.frame(ref, 0, b"hi")
        await c.send(type="finish", id="fin-1", ref=ref)
        m = await c.until("done")
        assert (m["type"], m.get("id")) == ("done", "fin-1"), m
        m = await c.call(type="cancel", id="can-1", ref=(await c.call(
            type="open", token=token, name="b", size=2))["ref"])
        assert (m["type"], m.get("id")) == ("cancelled", "can-1"), m
    assert w.alive()


async def test_redis_down_at_open_answers_ledger_unavailable_and_worker_survives(
        workers, redis_factory, token):
    """With Redis down, `open` must answer a typed, retryable `ledger_unavailable` and the
    worker must stay up; when Redis is back, uploads work again on the same worker."""
    r = redis_factory(aof=True)
    (w,) = workers(1, redis=r, PREFERRED_PART_SIZE=PS)
    r.stop()
    t0 = time.monotonic()
    async with connect(w.url, compression=None) as ws:
        c = Raw(ws)
        m = await c.call(type="open", id="o", token=token, name="a", size=3, timeout=120)
        assert (m["type"], m.get("code"), m.get("retryable")) == (
            "error", "ledger_unavailable", True), m
        c.assert_no_leaks()
    assert time.monotonic() - t0 < 90
    assert w.alive()
    r.start()
    async with connect(w.url, compression=None) as ws:
        c = Raw(ws)
        m = await c.call(type="open", token=token, name="a", size=3)
        assert m["type"] == "ready", m


async def test_s3_unreachable_is_a_typed_retryable_error(workers, token, tmp_path):
    """A worker whose AWS_S3_ENDPOINT_URL points at a closed port: `open` answers
    `storage_error` (retryable) without internal details, and the worker stays alive."""
    (ref_w,) = workers(1)
    closed = free_port()
    env = {**ref_w.env, "AWS_S3_ENDPOINT_URL": f"http://127.0.0.1:{closed}"}
    w = Worker(port=free_port(), env=env, log_path=tmp_path / "noS3.log").start()
    try:
        async with connect(w.url, compression=None) as ws:
            c = Raw(ws)
            for i in range(3):
                m = await c.call(type="open", id=str(i), token=token, name="a", size=10,
                                 timeout=120)
                assert (m["type"], m["code"], m["retryable"], m["id"]) == (
                    "error", "storage_error", True, str(i)), m
            c.assert_no_leaks()
        assert w.alive()
    finally:
        w.kill()


# --------------------------------------------------------------------------- attacks that held


async def test_zero_size_upload_edges(workers, token, ledger_reader, s3_client, s3_bucket):
    (w,) = workers(1, PREFERRED_PART_SIZE=PS)
    ledger = ledger_reader()
    async with connect(w.url, compression=None) as ws:
        c = Raw(ws)
        ref = (await c.call(type="open", token=token, name="empty", size=0))["ref"]
        m = await c.frame(ref, 0, b"x")
        assert (m["code"], m["offset"]) == ("size_exceeded", 0)
        m = await c.call(type="finish", ref=ref, crc32c=0)
        assert (m["type"], m["size"], m["crc32c"]) == ("done", 0, 0), m
        m = await c.call(type="finish", ref=ref)  # second finish: writer gone
        assert m["type"] == "done" or m["code"] == "not_open", m
        assert (await c.frame(ref, 0, b"x"))["code"] == "not_open"
        m = await c.call(type="resume", token=token, ref=ref)
        assert (m["type"], m["size"]) == ("done", 0)
        # Empty file with a wrong CRC: failed, nothing stored.
        ref2 = (await c.call(type="open", token=token, name="e2", size=0))["ref"]
        assert (await c.call(type="finish", ref=ref2, crc32c=1))["code"] == "checksum_mismatch"
        c.assert_no_leaks()
    rec = await ledger.get(ref)
    assert rec.state == "complete" and rec.complete_calls == 1
    assert s3_client.head_object(Bucket=s3_bucket, Key=rec.key)["ContentLength"] == 0
    rec2 = await ledger.get(ref2)
    assert rec2.state == "failed"
    assert s3_client.list_objects_v2(Bucket=s3_bucket, Prefix=rec2.key).get("KeyCount") == 0
    assert w.alive()


async def test_huge_and_odd_numbers(workers, token, grant):
    (w,) = workers(1, PREFERRED_PART_SIZE=PS)
    async with connect(w.url, compression=None) as ws:
        c = Raw(ws)
        for size in (2**64 - 1, 2**64, 10**4000, -1, 1.5, True, "10"):
            m = await c.call(type="open", token=token, name="a", size=size)
            assert m["type"] == "error" and m["code"] in ("too_large", "bad_message"), (size, m)
            assert m["retryable"] is False
        ref = (await c.call(type="open", token=token, name="a", size=10))["ref"]
        for off in (2**64 - 1, 2**63, 11, 10):
            m = await c.frame(ref, off, b"x")
            assert m["code"] in ("size_exceeded", "offset_mismatch"), (off, m)
        raw = HEADER.pack(1, uuid.UUID(ref).bytes, 0) + b"0123456789"
        await ws.send(encode_data(ref, 0, b"0123456789"))
        # The part's ack may come before or after this progress: the part is stored while
        # frames are answered.
        assert (await c.until("progress"))["received"] == 10
        await ws.send(raw)  # duplicate: ignored
        assert (await c.until("progress"))["received"] == 10
        for crc in (-1, 2**32, 2**64, "x", 1.0):
            m = await c.call(type="finish", ref=ref, crc32c=crc)
            assert m["code"] == "bad_message", (crc, m)
        for bad_ref in ("", "zz" * 16, "0" * 31, None, 5, "{" + "0" * 32 + "}"):
            m = await c.call(type="finish", ref=bad_ref)
            assert m["code"] in ("bad_message", "not_open"), (bad_ref, m)
        for bad_id in ({"a": 1}, [1], 1.5):
            m = await c.call(type="finish", id=bad_id, ref=ref)
            assert m["code"] == "bad_message", m
        await c.send_text("[" * 10000)
        assert (await c.recv())["code"] == "bad_message"
        await c.send_text("x" * (64 * 1024))
        assert (await c.recv())["code"] == "bad_message"
        m = await c.call(type="finish", ref=ref, crc32c=google_crc32c.value(b"0123456789"))
        assert m["type"] == "done"
        c.assert_no_leaks()
    assert w.alive()


async def test_cancel_during_upload_then_frames_and_resume(workers, token, ledger_reader,
                                                           s3_client, s3_bucket):
    (w,) = workers(1, PREFERRED_PART_SIZE=PS)
    data = os.urandom(12 * MiB)
    async with connect(w.url, compression=None, max_size=None) as ws:
        c = Raw(ws)
        ref = (await c.call(type="open", token=token, name="a", size=len(data)))["ref"]
        await _send_all(ws, ref, data[:7 * MiB])
        m = await c.call(type="cancel", ref=ref)
        while m["type"] in ("progress", "ack"):
            m = await c.recv()
        assert m["type"] == "cancelled"
        assert (await c.frame(ref, 7 * MiB, data[7 * MiB: 8 * MiB]))["code"] == "not_open"
        assert (await c.call(type="finish", ref=ref))["code"] == "not_open"
        assert (await c.call(type="resume", token=token, ref=ref))["code"] == "aborted"
        assert (await c.call(type="cancel", ref=ref))["code"] in ("not_found",)
        c.assert_no_leaks()
    rec = await ledger_reader().get(ref)
    assert rec.state == "aborted"
    assert not [u for u in _multipart_uploads(s3_client, s3_bucket) if u["Key"] == rec.key]
    assert w.alive()


async def test_interleaved_refs_and_duplicate_resume_on_one_socket(workers, many,
                                                                   ledger_reader, s3_client,
                                                                   s3_bucket):
    (w,) = workers(1, PREFERRED_PART_SIZE=PS)
    a, b = os.urandom(11 * MiB + 7), os.urandom(6 * MiB + 3)
    ledger = ledger_reader()
    async with connect(w.url, compression=None, max_size=None) as ws:
        c = Raw(ws)
        ra = (await c.call(type="open", token=many, name="a", size=len(a)))["ref"]
        rb = (await c.call(type="open", token=many, name="b", size=len(b)))["ref"]
        # Resume of a ref already open on this socket, twice: same writer, no second lease.
        for _ in range(2):
            m = await c.call(type="resume", token=many, ref=ra)
            assert (m["type"], m["offset"]) == ("ready", 0)
        offs = {ra: 0, rb: 0}
        datas = {ra: a, rb: b}
        while any(offs[r] < len(datas[r]) for r in offs):
            for r in (ra, rb):
                if offs[r] < len(datas[r]):
                    n = min(700_001, len(datas[r]) - offs[r])
                    await ws.send(encode_data(r, offs[r], datas[r][offs[r]:offs[r] + n]))
                    offs[r] += n
            m = await c.call(type="resume", token=many, ref=ra)
            while m["type"] != "ready":
                m = await c.recv()
        for r, d in ((ra, a), (rb, b)):
            await c.send(type="finish", ref=r, crc32c=google_crc32c.value(d))
            assert (await c.until("done"))["type"] == "done"
    for r, d in ((ra, a), (rb, b)):
        rec = await ledger.get(r)
        assert object_sha256(s3_client, s3_bucket, rec.key) == (hashlib.sha256(d).hexdigest(),
                                                                len(d))
        assert rec.attaches == 1
    assert w.alive()


async def test_fingerprint_binds_resume_to_the_file(workers, token):
    (w,) = workers(1, PREFERRED_PART_SIZE=PS)
    async with connect(w.url, compression=None) as ws:
        c = Raw(ws)
        ref = (await c.call(type="open", token=token, name="a", size=PS, fingerprint="fp-A")
               )["ref"]
    async with connect(w.url, compression=None) as ws:
        c = Raw(ws)
        m = await c.call(type="resume", token=token, ref=ref, fingerprint="fp-B")
        assert m["code"] == "not_found"
        m = await c.call(type="resume", token=token, ref=ref, fingerprint="x" * 129)
        assert m["code"] == "bad_message"
        m = await c.call(type="resume", token=token, ref=ref, fingerprint="fp-A")
        assert (m["type"], m["offset"]) == ("ready", 0)
    assert w.alive()


async def test_head_bytes_bind_resume_to_the_file(workers, token, ledger_reader):
    """A resume carrying the file's first bytes is refused when they differ from the head
    bytes the ledger kept, even with the same fingerprint (a client whose fingerprint
    cannot tell two files apart): nothing of the other file is written."""
    import base64

    (w,) = workers(1, PREFERRED_PART_SIZE=PS)
    data = os.urandom(10_000)
    async with connect(w.url, compression=None) as ws:
        c = Raw(ws)
        ref = (await c.call(type="open", token=token, name="a", size=PS, fingerprint="fp")
               )["ref"]
        await ws.send(encode_data(ref, 0, data))
        assert (await c.until("progress"))["received"] == len(data)
    ledger = ledger_reader()
    for _ in range(100):  # the closed connection spills its tail
        rec = await ledger.get(ref)
        if rec.durable == len(data):
            break
        await asyncio.sleep(0.1)
    assert rec.head == data[:4096] and rec.durable == len(data)
    other = bytearray(data[:4096])
    other[4000] ^= 1
    async with connect(w.url, compression=None) as ws:
        c = Raw(ws)
        m = await c.call(type="resume", token=token, ref=ref, fingerprint="fp",
                         head=base64.b64encode(bytes(other)).decode())
        assert m["code"] == "not_found"
        m = await c.call(type="resume", token=token, ref=ref, fingerprint="fp", head="%%%")
        assert m["code"] == "bad_message"
        m = await c.call(type="resume", token=token, ref=ref, fingerprint="fp",
                         head=base64.b64encode(b"x" * 9000).decode())
        assert m["code"] == "bad_message"
        # A shorter head (a file smaller than 4 KiB, or a client sending less) is compared
        # over what both have.
        m = await c.call(type="resume", token=token, ref=ref, fingerprint="fp",
                         head=base64.b64encode(data[:100]).decode())
        assert (m["type"], m["offset"]) == ("ready", len(data))
    rec = await ledger.get(ref)
    assert rec.head == data[:4096] and rec.state == "uploading"
    assert w.alive()


async def test_window_ignoring_client_keeps_worker_memory_bounded(workers, token):
    """A client that blasts 60 MiB without waiting for acks: TCP backpressure, bounded RSS."""
    (w,) = workers(1, PREFERRED_PART_SIZE=PS, RATE_LIMIT_BYTES_PER_SECOND=0)

    def rss() -> int:
        with open(f"/proc/{w.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        return 0

    data = os.urandom(MiB)
    size = 60 * MiB
    async with connect(w.url, compression=None, max_size=None) as ws:
        c = Raw(ws)
        ref = (await c.call(type="open", token=token, name="a", size=size))["ref"]
        base = rss()
        peak = base

        async def sample():
            nonlocal peak
            while True:
                peak = max(peak, rss())
                await asyncio.sleep(0.02)

        sampler = asyncio.create_task(sample())
        for off in range(0, size, MiB):
            await ws.send(encode_data(ref, off, data))
        await c.send(type="finish", ref=ref)
        m = await c.until("done", timeout=120)
        sampler.cancel()
        assert m["type"] == "done", m
    # part_size x (PARTS_IN_FLIGHT + 1) = 10 MiB, plus boto3/websocket buffers.
    assert peak - base < 48 * MiB, f"RSS grew by {(peak - base) / MiB:.0f} MiB"
    assert w.alive()
