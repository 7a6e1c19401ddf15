"""The uploads service: register, attach (resume), write, finish, cancel, detach.

Pure async logic over the ledger and a sink; the WebSocket consumer is only transport. The
durability rules (docs/durability.md) live here:

1. a byte is acknowledged only after it is in storage (a part or a spilled tail) *and* in the
   ledger: storage write, then ledger, then ack;
2. the resume point is the ledger's durable offset; a clean detach spills the partial part;
3. part N always covers bytes [(N-1) * part_size, N * part_size) — fixed at registration;
4. one writer per upload (lease with epoch; every ledger write is fenced).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import google_crc32c
from redis.exceptions import RedisError

from . import history, metrics
from .conf import ResumableSettings, get_settings
from .errors import (
    Aborted,
    Busy,
    ChecksumMismatch,
    Failed,
    Incomplete,
    Internal,
    InvalidState,
    LedgerUnavailable,
    NotFound,
    OffsetMismatch,
    ResumableError,
    SizeExceeded,
    StorageError,
    TooLarge,
    TooManyUploads,
)
from .ledger import Ledger, UploadRecord, now_ms
from .sinks.base import (
    CompleteResult,
    PartInfo,
    PartStream,
    Sink,
    choose_part_size,
    crc32c_b64,
)
from .tokens import UploadGrant
from .validation import enforce_content, validate_open
from .worker import worker_id

log = logging.getLogger("djust_resumable")

AckCallback = Callable[[str, int, int], Awaitable[None]]  # (ref, received, durable)
HandoverCallback = Callable[[str, str, str], Awaitable[None]]  # (holder channel, ref, me)


@dataclass(frozen=True)
class Done:
    """What the client hears when an upload is complete (also on a late resume)."""

    ref: str
    size: int
    crc32c: int
    etag: str

    def to_wire(self) -> dict[str, object]:
        return {"type": "done", "ref": self.ref, "size": self.size, "crc32c": self.crc32c,
                "etag": self.etag}


def _done(rec: UploadRecord) -> Done:
    return Done(rec.ref, rec.size, rec.crc, rec.etag)


class UploadService:
    """One per process; shared by every connection."""

    def __init__(self, ledger: Ledger, sink: Sink, settings: ResumableSettings) -> None:
        self.ledger = ledger
        self.sink = sink
        self.settings = settings

    # -- register -----------------------------------------------------------------------------
    async def register(self, grant: UploadGrant, name: str, size: int, content_type: str,
                       fingerprint: str = "") -> UploadRecord:
        """Validate the declaration, create the multipart upload and the ledger record.

        Raises TooLarge (size above the slot's ``max_file_size`` or the store's limits),
        StorageError, LedgerUnavailable.
        """
        if size > grant.max_file_size:
            raise TooLarge(f"{size} bytes is above this slot's limit of {grant.max_file_size}",
                           max_file_size=grant.max_file_size)
        await self._check_owner_limit(grant.owner)
        policy = await validate_open(self.ledger, grant, name, content_type)
        part_size = choose_part_size(size, self.settings)
        ref = uuid.uuid4().hex
        # The key never derives from the client's file name (it is metadata in the ledger).
        key = f"{self.settings.STORAGE_PREFIX}{dt.datetime.now(dt.UTC):%Y/%m/%d}/{ref}"
        upload_id = await self.sink.create(key, content_type)
        t = now_ms()
        rec = UploadRecord(
            ref=ref, state="registered", owner=grant.owner, user=grant.user, slot=grant.slot,
            view=grant.view, max_file_size=grant.max_file_size, client_name=name[:255],
            client_type=content_type, size=size, key=key, upload_id=upload_id,
            part_size=part_size, fingerprint=fingerprint, created=t, updated=t)
        try:
            await self.ledger.register(rec)
        except BaseException:
            await self.sink.abort(key, upload_id)
            raise
        await self.ledger.index_owner(rec, **policy)
        history.note(self.ledger, ref)
        log.info("registered ref=%s user=%s worker=%s size=%d part_size=%d", ref, grant.user,
                 worker_id(), size, part_size)
        metrics.record_started(self.ledger)
        return rec

    async def lookup(self, ref: str, grant: UploadGrant) -> UploadRecord:
        """The record, if ``grant`` owns it; anyone else gets NotFound, exactly like a
        missing upload (no oracle for other sessions' refs)."""
        rec = await self.ledger.get(ref)
        if rec is None or rec.owner != grant.owner or rec.slot != grant.slot:
            raise NotFound()
        return rec

    # -- attach -------------------------------------------------------------------------------
    async def attach(self, ref: str, grant: UploadGrant, conn_id: str, channel: str,
                     on_ack: AckCallback, request_handover: HandoverCallback | None = None,
                     fingerprint: str | None = None,
                     head: bytes | None = None) -> UploadWriter | Done:
        """Become the writer of ``ref`` (a fresh upload or a resume on any worker).

        ``fingerprint`` (the client's) and ``head`` (the file's first bytes, as the client
        reads them now) must agree with what the ledger recorded: the fingerprint as sent at
        ``open``, the head bytes as they arrived. A different file that merely shares name and
        size is refused instead of completing a mixed object (tus/tus.io#93).

        Returns ``Done`` when the upload is already complete (a client that missed ``done``),
        else a writer positioned at the durable offset with any spilled tail restored.
        Raises NotFound (missing, or not this grant's), Busy (another live writer did not hand
        over within HANDOVER_TIMEOUT), Aborted/Failed, TooManyUploads, LedgerUnavailable.
        """
        rec = await self.lookup(ref, grant)
        if fingerprint and rec.fingerprint and fingerprint != rec.fingerprint:
            raise NotFound("this upload belongs to another file")
        if head is not None:  # compared over the length both have
            n = min(len(head), len(rec.head))
            if head[:n] != rec.head[:n]:
                raise NotFound("this upload belongs to another file (head bytes differ)")
        if rec.state in ("complete", "consumed"):
            return _done(rec)
        if rec.state in ("failed", "aborted", "expired"):
            raise (Aborted if rec.state == "aborted" else Failed)(f"upload is {rec.state}",
                                                                  state=rec.state)
        await self._check_owner_limit(rec.owner)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.HANDOVER_TIMEOUT
        asked = False
        while True:
            got = await self.ledger.acquire(ref, conn_id, channel)
            if got.status == "ok":
                break
            if got.status == "state":
                rec = await self.ledger.require(ref)
                if rec.state in ("complete", "consumed"):
                    return _done(rec)
                raise Failed(f"upload is {rec.state}", state=rec.state)
            # Busy: ask the holder to hand over (durability rule 4); a dead holder never
            # answers and loses the lease when it expires, so the client retries.
            if not asked and request_handover is not None and got.holder_channel:
                asked = True
                await request_handover(got.holder_channel, ref, conn_id)
            if loop.time() >= deadline:
                raise Busy(retry_after=self.settings.LEASE_TTL)
            await asyncio.sleep(0.1)
        await self.ledger.mark_active(rec.owner, ref, True)
        rec = await self.ledger.require(ref)
        try:
            rec = await self._adopt_sent_parts(rec, got.epoch)
        except BaseException:
            await self.ledger.release(ref, got.epoch)
            await self.ledger.mark_active(rec.owner, ref, False)
            raise
        writer = UploadWriter(self, rec, got.epoch, on_ack)
        try:
            await writer.restore_tail()
        except BaseException:
            await writer.release()
            raise
        await self.ledger.event(ref, "attached", conn=conn_id, epoch=got.epoch,
                                durable=rec.durable, worker=worker_id())
        log.info("attached ref=%s user=%s worker=%s epoch=%d durable=%d", ref, rec.user,
                 worker_id(), got.epoch, rec.durable)
        metrics.record_attach(self.ledger, rec)
        return writer

    async def _adopt_sent_parts(self, rec: UploadRecord, epoch: int) -> UploadRecord:
        """Record the parts a previous writer sent in full but died before recording.

        The store finishes a request whose body it received even when the sender is gone
        (kill -9 right after the last byte), so such a part is durable but unknown to the
        ledger. Each one the ledger noted as sent (``part_sent``) is looked up with ListParts
        and adopted when the store holds it with the noted size (and checksum, when the store
        reports one); the client then re-sends at most the part that was still receiving.
        Returns the record afresh. Raises StorageError, LeaseLost.
        """
        pending = await self.ledger.pending_parts(rec.ref)
        todo = sorted(n for n in pending if n > rec.parts_done)
        if not todo or rec.state != "uploading":
            return rec
        try:
            stored = await self.sink.list_parts(rec.key, rec.upload_id, todo)
        except StorageError as exc:
            # Adoption only saves re-sending: without ListParts (a policy without
            # s3:ListMultipartUploadParts, a store that lacks it) the client re-sends.
            log.warning("ref=%s: cannot list parts to adopt (%s); the client re-sends them",
                        rec.ref, exc)
            return rec
        adopted = []
        for n in todo:
            size, crc_end, checksum = pending[n]
            got = stored.get(n)
            if got is None or got.size != size:
                continue
            if checksum and got.checksum and got.checksum != checksum:
                continue  # another attempt's bytes: the client re-sends the part
            info = PartInfo(number=n, etag=got.etag, size=size,
                            checksum=checksum or got.checksum)
            _, _, old_tail = await self.ledger.commit_part(rec.ref, epoch, info, crc_end)
            if old_tail:
                await self.sink.delete_tail(old_tail)
            adopted.append(n)
        if adopted:
            await self.ledger.event(rec.ref, "parts_adopted", parts=adopted)
            log.info("adopted ref=%s parts=%s worker=%s", rec.ref, adopted, worker_id())
            rec = await self.ledger.require(rec.ref)
        return rec

    async def _check_owner_limit(self, owner: str) -> None:
        """Raises TooManyUploads when ``owner`` has MAX_UPLOADS_PER_USER writers attached.
        Checked before anything is created, so a refused open leaves nothing behind."""
        limit = self.settings.MAX_UPLOADS_PER_USER
        if limit and await self.ledger.count_active(owner) >= limit:
            raise TooManyUploads(f"at most {limit} uploads at once")

    # -- cancel -------------------------------------------------------------------------------
    async def cancel(self, ref: str, grant: UploadGrant) -> None:
        """Abort the multipart upload and mark the ledger ``aborted`` (idempotent). A live
        writer elsewhere fails its next ledger write. Raises NotFound, InvalidState (already
        complete)."""
        rec = await self.lookup(ref, grant)
        await self.abort_record(rec, reason="cancelled")

    async def abort_record(self, rec: UploadRecord, reason: str) -> None:
        status, _ = await self.ledger.transition(
            rec.ref, "aborted", ("registered", "uploading", "completing", "failed"),
            error=reason)
        if status == "ok":
            await self.sink.abort(rec.key, rec.upload_id)
            if rec.tail_key:
                await self.sink.delete_tail(rec.tail_key)
            await self.ledger.event(rec.ref, "aborted", reason=reason)
            history.note(self.ledger, rec.ref)
            log.info("aborted ref=%s user=%s worker=%s reason=%s", rec.ref, rec.user,
                     worker_id(), reason)
            metrics.record_aborted(self.ledger)


class _Part:
    """One part of the upload: receiving bytes, then being stored."""

    def __init__(self, number: int, start: int, stream: PartStream) -> None:
        self.number = number
        self.start = start  # file offset of the part's first byte (a part boundary)
        self.stream = stream
        self.crc_end = 0  # CRC32C of the file's bytes [0, end of part), set when sealed
        self.task: asyncio.Task[None] | None = None
        self.sent: asyncio.Task[None] | None = None

    @property
    def length(self) -> int:
        return self.stream.length

    @property
    def fed(self) -> int:
        return self.stream.fed


class UploadWriter:
    """The live writer of one upload on one connection.

    Frames go into a ``PartStream`` per part, kept as they came (boundaries are fixed, so
    every part's length is known); the store request starts when the part's last byte arrives
    and the part's bytes are released when the store has answered. At most
    ``PARTS_IN_FLIGHT`` parts are open at once: the one receiving plus those being stored, so
    memory per upload is at most ``part_size x PARTS_IN_FLIGHT`` whatever the file size.
    """

    def __init__(self, service: UploadService, rec: UploadRecord, epoch: int,
                 on_ack: AckCallback) -> None:
        self.svc = service
        self.ledger = service.ledger
        self.sink = service.sink
        self.rec = rec
        self.ref = rec.ref
        self.epoch = epoch
        self.on_ack = on_ack
        self.size = rec.size
        self.part_size = rec.part_size
        self.received = rec.durable  # bytes [0, received) were fed to parts or are stored
        self.durable = rec.durable
        self.crc = rec.crc  # CRC32C of bytes [0, received)
        self.cur: _Part | None = None
        self.head = bytearray(rec.head)
        self.head_saved = len(rec.head) >= min(service.settings.HEAD_BYTES, rec.size)
        self.inflight: list[asyncio.Task[None]] = []  # sealed parts awaiting the store
        self.error: ResumableError | None = None
        self.closed = False
        self.window = rec.part_size * max(1, service.settings.PARTS_IN_FLIGHT)
        #: Told (once) when a part fails in the background, so the client hears of it even
        #: while it waits for acks and sends nothing that would meet the error.
        self.on_error: Callable[[ResumableError], Awaitable[None]] | None = None
        self._notify: asyncio.Task[None] | None = None

    def _fail(self, exc: ResumableError, notify: bool = True) -> None:
        if self.error is not None:
            return
        self.error = exc
        if notify and self.on_error is not None and not self.closed:
            self._notify = asyncio.create_task(self.on_error(exc))

    async def restore_tail(self) -> None:
        """Load a spilled tail so this worker continues without the client re-sending it."""
        rec = self.rec
        if rec.tail_len > 0 and await self.sink.stat(rec.tail_key) != rec.tail_len:
            # The tail object is gone or damaged: fall back to the last stored part (the
            # client re-sends those bytes) rather than wedge the upload on a missing object.
            durable, crc = await self.ledger.drop_tail(self.ref, self.epoch)
            log.warning("ref=%s: spilled tail %s missing; resuming at %d", self.ref,
                        rec.tail_key, durable)
            await self.ledger.event(self.ref, "tail_lost", offset=rec.tail_offset,
                                    resume_at=durable)
            self.received = self.durable = durable
            self.crc = crc
        elif rec.tail_len > 0:
            data = await self.sink.read_tail(rec.tail_key)
            if len(data) != rec.tail_len:
                raise StorageError("spilled tail has the wrong length")
            part = self._open_part(rec.tail_offset)
            part.stream.feed(data)
            await self.ledger.event(self.ref, "tail_restored", offset=rec.tail_offset,
                                    length=rec.tail_len)
            if part.fed == part.length:  # a tail is shorter than its part; never sealed here
                raise StorageError("spilled tail fills its whole part")
        elif rec.durable != min(rec.parts_done * rec.part_size, rec.size):
            raise StorageError("ledger durable offset is not a part boundary")

    # -- writing ----------------------------------------------------------------------------
    async def write(self, offset: int, payload: memoryview) -> None:
        """Accept a data frame at ``offset`` (bytes).

        Bytes below the received offset are skipped (duplicates and overlaps are harmless);
        a frame that would leave a gap raises OffsetMismatch carrying the offset to continue
        at; bytes past the declared size raise SizeExceeded and are not stored.
        """
        self._check()
        end = offset + len(payload)
        if end > self.size:
            raise SizeExceeded(f"frame ends at {end}, past the declared size {self.size}",
                               offset=self.received)
        if offset > self.received:
            raise OffsetMismatch(f"expected offset {self.received}, got {offset}",
                                 offset=self.received)
        if end <= self.received:
            return
        if offset < self.received:
            payload = payload[self.received - offset:]
        while payload:
            part = self.cur
            if part is None:
                await self._wait_for_room()
                part = self._open_part(self.received)
            room = part.length - part.fed
            # One read-only copy: google_crc32c refuses memoryviews, and the part keeps the
            # bytes until the store has read them.
            chunk, payload = bytes(payload[:room]), payload[room:]
            n = len(chunk)
            part.stream.feed(chunk)
            self.crc = google_crc32c.extend(self.crc, chunk)
            # The head is the file's first HEAD_BYTES, kept for magic-byte checks.
            if len(self.head) < self.svc.settings.HEAD_BYTES and self.received == len(self.head):
                self.head += chunk[: self.svc.settings.HEAD_BYTES - len(self.head)]
            self.received += n
            metrics.record_received(self.ledger, n)  # in-memory sum, flushed once a second
            if part.fed == part.length:
                self._seal(part)
        if not self.head_saved and len(self.head) >= min(self.svc.settings.HEAD_BYTES, self.size):
            self.head_saved = True
            await self._ledger_call(self.ledger.set_fields(self.ref, self.epoch,
                                                          head=bytes(self.head)))
            # Refuse a disguised file (magic bytes vs declared type) as soon as its head is
            # here, not after gigabytes; finish checks again (resumes, late heads).
            await enforce_content(self, self.rec)

    def _check(self) -> None:
        if self.error is not None:
            raise self.error
        if self.closed:
            raise InvalidState("writer is closed")

    async def _wait_for_room(self) -> None:
        # At most PARTS_IN_FLIGHT parts open: this new one plus those awaiting the store.
        limit = max(1, self.svc.settings.PARTS_IN_FLIGHT)
        self.inflight = [t for t in self.inflight if not t.done()]
        while len(self.inflight) >= limit:
            await asyncio.wait(self.inflight, return_when=asyncio.FIRST_COMPLETED)
            self.inflight = [t for t in self.inflight if not t.done()]
            self._check()
        self._check()

    def _open_part(self, start: int) -> _Part:
        if start % self.part_size:
            raise StorageError("a part must start at a part boundary")
        length = min(self.part_size, self.size - start)
        part = _Part(start // self.part_size + 1, start, self.sink.part_stream(length))
        self.cur = part
        return part

    def _seal(self, part: _Part) -> None:
        """The part's last byte is here: from now on only the store's answer is awaited.
        Synchronous on purpose: crc_end must be set before the part's task can finish."""
        part.crc_end = self.crc
        self.cur = None
        checksum = (crc32c_b64(part.stream.crc32c)
                    if (self.svc.settings.CHECKSUM or "").upper() == "CRC32C" else None)
        part.sent = asyncio.create_task(self.ledger.part_sent(
            self.ref, self.epoch, part.number, part.length, part.crc_end, checksum))
        # Only a crash-recovery hint: its failure is never an error of the upload.
        part.sent.add_done_callback(lambda t: t.cancelled() or t.exception())
        part.task = asyncio.create_task(self._run_part(part))
        self.inflight.append(part.task)

    async def _run_part(self, part: _Part) -> None:
        number = part.number
        try:
            t0 = asyncio.get_running_loop().time()
            info = await self.sink.write_part_stream(self.rec.key, self.rec.upload_id,
                                                     part.number, part.stream)
            part.stream.release()  # the store has the part: its bytes are no longer needed
            assert part.sent is not None
            try:
                await part.sent
            except RedisError:
                pass  # only a crash-recovery hint; commit_part below is the durable record
            durable, _, old_tail = await self._ledger_call(
                self.ledger.commit_part(self.ref, self.epoch, info, part.crc_end))
            elapsed = asyncio.get_running_loop().time() - t0
            metrics.record_part(self.ledger, info.size, elapsed)
            await self.ledger.event(self.ref, "part_stored", part=number, size=info.size,
                                    seconds=round(elapsed, 3))
            if old_tail:
                await self.sink.delete_tail(old_tail)
            if durable > self.durable:
                self.durable = durable
                await self.on_ack(self.ref, self.received, durable)
        except asyncio.CancelledError:
            raise
        except InvalidState as exc:
            # The record left 'uploading' under us (cancel, admin abort, sweeper): say so.
            # Whoever moved it (this writer's content check, the client's cancel, an admin
            # abort) tells the client, with the precise reason: no notice from here.
            state = exc.details.get("state", "")
            self._fail(
                Aborted(f"upload is {state}", state=state) if state in ("aborted", "expired")
                else Failed(f"upload is {state}", state=state) if state == "failed" else exc,
                notify=False)
        except ResumableError as exc:
            self._fail(exc)
        except Exception:  # never let a task die silently, never leak its text to the client
            log.exception("part %d of ref=%s failed", number, self.ref)
            self._fail(Internal())

    def _abandon_current(self) -> bytes | None:
        """Give up the part still receiving (it has no store request yet); returns its
        bytes, for a spill."""
        part, self.cur = self.cur, None
        if part is None:
            return None
        data = part.stream.retained()
        part.stream.release()
        return data

    async def _ledger_call(self, coro):  # type: ignore[no-untyped-def]
        try:
            return await coro
        except RedisError as exc:
            raise LedgerUnavailable() from exc

    async def drain(self) -> None:
        """Wait for every sealed part in flight; raises the first error any of them hit."""
        if self.inflight:
            await asyncio.gather(*self.inflight, return_exceptions=True)
            self.inflight = []
        self._check()

    # -- finish -----------------------------------------------------------------------------
    async def finish(self, client_crc: int | None) -> Done:
        """Complete the object once every byte is durable.

        Raises Incomplete (bytes missing; carries the offset), ChecksumMismatch (the
        client's whole-file CRC32C differs from the bytes stored: the upload is failed and
        its parts discarded), StorageError, LeaseLost.
        """
        self._check()
        if self.received < self.size:
            raise Incomplete(f"{self.size - self.received} bytes missing",
                             offset=self.received)
        await self.drain()
        rec = await self.ledger.require(self.ref)
        if rec.state in ("complete", "consumed"):
            return _done(rec)
        if rec.durable != self.size:
            raise Incomplete("not every byte is durable yet", offset=rec.durable)
        if client_crc is not None and client_crc != rec.crc:
            await self.ledger.transition(self.ref, "failed", ("uploading",), self.epoch,
                                         error="checksum_mismatch", client_crc=client_crc)
            await self.sink.abort(rec.key, rec.upload_id)
            await self.ledger.event(self.ref, "failed", reason="checksum_mismatch")
            log.info("failed ref=%s user=%s worker=%s reason=checksum_mismatch", self.ref,
                     rec.user, worker_id())
            metrics.record_failed(self.ledger)
            raise ChecksumMismatch(f"client CRC32C {client_crc:08x}, stored {rec.crc:08x}")
        await enforce_content(self, rec)
        # received is otherwise refreshed only at lease renewal: every byte is here now.
        await self.ledger.transition(self.ref, "completing", ("uploading",), self.epoch,
                                     received=self.size,
                                     **({"client_crc": client_crc} if client_crc else {}))
        return await self.complete(rec)

    async def complete(self, rec: UploadRecord | None = None) -> Done:
        """Run CompleteMultipartUpload (also to recover a record stuck in ``completing``).
        ``rec``: the record the caller just read (key, UploadId, CRC, size, tail are not
        changed by the move to ``completing``); read afresh when not given."""
        rec = rec or await self.ledger.require(self.ref)
        parts: list[PartInfo] = await self.ledger.parts(self.ref)
        await self.ledger.incr(self.ref, "complete_calls")
        await self.ledger.event(self.ref, "completing", parts=len(parts))
        result: CompleteResult = await self.sink.complete(rec.key, rec.upload_id, parts,
                                                          rec.crc, rec.size)
        await self.ledger.transition(self.ref, "complete", ("completing",), self.epoch,
                                     etag=result.etag, checksum=result.checksum or "",
                                     completed=now_ms())
        if rec.tail_key:
            await self.sink.delete_tail(rec.tail_key)
        await self.ledger.event(self.ref, "complete", etag=result.etag)
        history.note(self.ledger, self.ref)
        log.info("complete ref=%s user=%s worker=%s size=%d", self.ref, rec.user, worker_id(),
                 rec.size)
        metrics.record_completed(self.ledger)
        await self.release()
        return Done(self.ref, rec.size, rec.crc, result.etag)

    # -- detach -----------------------------------------------------------------------------
    async def detach(self, spill: bool = True) -> None:
        """Leave the upload resumable: wait for sealed parts, give up the receiving part's
        store request and spill its bytes as a temporary object (so nothing is re-sent),
        release the lease. Never raises."""
        if self.closed:
            return
        try:
            try:
                await self.drain()
            finally:
                start = self.cur.start if self.cur is not None else 0
                data = self._abandon_current()
            if spill and data and self.error is None:
                await self._spill(start, data)
        except Exception as exc:  # the ledger still holds the last durable state
            log.warning("detach of ref=%s could not spill: %s", self.ref, exc)
        finally:
            await self.release()
            log.info("detached ref=%s user=%s worker=%s durable=%d received=%d", self.ref,
                     self.rec.user, worker_id(), self.durable, self.received)

    async def _spill(self, start: int, data: bytes) -> None:
        tail_key = self.sink.tail_key(self.rec.key, self.ref, self.epoch, start)
        await self.sink.spill_tail(tail_key, data)
        durable, old = await self.ledger.spill(self.ref, self.epoch, tail_key, start,
                                               len(data), self.crc)
        self.durable = durable
        if old:
            await self.sink.delete_tail(old)
        await self.ledger.event(self.ref, "spilled", offset=start, length=len(data))

    async def release(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.cur is not None:
            self._abandon_current()
        for t in self.inflight:
            t.cancel()
        try:
            await self.ledger.release(self.ref, self.epoch)
            await self.ledger.mark_active(self.rec.owner, self.ref, False)
        except Exception as exc:  # the lease expires by itself
            log.warning("release of ref=%s failed: %s", self.ref, exc)

    async def renew(self) -> bool:
        """Extend the lease; False when it was lost (another writer took over)."""
        ok = await self.ledger.renew(self.ref, self.epoch)
        if ok:
            await self.ledger.mark_active(self.rec.owner, self.ref, True)
            await self.ledger.touch_index(self.ref)
            # Bytes received but not yet durable, for progress shown by other processes
            # (admin); informational, never a resume point.
            await self.ledger.set_fields(self.ref, self.epoch, received=self.received)
        return ok


_service: UploadService | None = None


def get_service() -> UploadService:
    """The process-wide service built from settings (ledger + sink)."""
    global _service
    if _service is None:
        from .sinks import get_sink

        settings = get_settings()
        _service = UploadService(Ledger.from_settings(settings), get_sink(settings), settings)
    return _service
