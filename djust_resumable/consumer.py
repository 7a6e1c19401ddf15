"""The upload WebSocket endpoint: a channels consumer that is transport only.

It authenticates control messages with the signed token, parses frames, applies the
per-connection rate limit, forwards everything to ``UploadService`` and turns every
``ResumableError`` into a typed ``error`` message. A connection may carry several uploads
(multi-file slots). See docs/protocol.md.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
import uuid
from typing import Any

from channels.consumer import get_handler_name
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer
from channels.layers import get_channel_layer
from channels.utils import await_many_dispatch
from redis.exceptions import RedisError

from .conf import get_settings
from .errors import (
    Aborted,
    BadMessage,
    Internal,
    LeaseLost,
    LedgerUnavailable,
    NotFound,
    NotOpen,
    ResumableError,
    Superseded,
)
from .protocol import decode_data, dumps, parse_control
from .service import Done, UploadService, UploadWriter, get_service
from .tokens import UploadGrant, read_token
from .worker import worker_id

log = logging.getLogger("djust_resumable")

# Close codes (4000-4999: application): another connection took the upload over; the
# upload was aborted elsewhere (admin) and nothing else is open on the connection.
CLOSE_SUPERSEDED = 4009
CLOSE_ABORTED = 4010
# Errors after which the writer is dropped from this connection (the client must resume).
_WRITER_FATAL = ("lease_lost", "storage_error", "ledger_unavailable", "checksum_mismatch",
                 "aborted", "failed", "internal", "superseded", "invalid_content")


class UploadConsumer(AsyncWebsocketConsumer):
    """Mount at ``settings.ENDPOINT_PATH`` (``djust_resumable.routing``). Run the ASGI server
    with permessage-deflate off for this route (docs/deploy.md): compression cuts loopback
    throughput from ~1 GiB/s to ~30 MiB/s on incompressible data."""

    service: UploadService
    writers: dict[str, UploadWriter]

    async def connect(self) -> None:
        self.settings = get_settings()
        self.service = get_service()
        self.conn_id = uuid.uuid4().hex
        self.writers = {}
        self._bucket = float(self.settings.RATE_LIMIT_BYTES_PER_SECOND or 0)
        self._bucket_t = time.monotonic()
        await self.accept()
        self._renewer = asyncio.create_task(self._renew_loop())

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        # channels' AsyncConsumer.__call__, with two changes: the channel-layer receive
        # survives Redis outages (it only carries handover requests; uploads must not die
        # with it), and whatever ends the connection (a clean close, a reset, a bug), the
        # writers detach: the lease is released and the partial part spilled.
        self.scope = scope
        self.channel_layer = get_channel_layer(self.channel_layer_alias)
        self.base_send = send
        sources = [receive]
        if self.channel_layer is not None:
            self.channel_name = await self.channel_layer.new_channel()
            sources.append(self._channel_receive)
        try:
            await await_many_dispatch(sources, self.dispatch)
        except StopConsumer:
            pass
        finally:
            await self._cleanup()

    async def _channel_receive(self) -> dict[str, Any]:
        while True:
            inner = asyncio.ensure_future(self.channel_layer.receive(self.channel_name))
            try:
                return await asyncio.shield(inner)
            except asyncio.CancelledError:
                await _cancel_hard(inner)
                raise
            except (RedisError, OSError) as exc:
                log.warning("channel layer unavailable (%s); retrying", exc)
                await asyncio.sleep(1.0)

    async def dispatch(self, message: dict[str, Any]) -> None:
        # channels' dispatch closes stale database connections (a thread round trip) before
        # every message; this consumer never touches the database, and on a 1 MiB-frame
        # stream that round trip cost ~8 % of the worker's CPU (bench/, py-spy).
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"no handler for message type {message['type']}")
        await handler(message)

    async def disconnect(self, code: int) -> None:
        await self._cleanup()

    async def _cleanup(self) -> None:
        renewer = getattr(self, "_renewer", None)
        if renewer:
            renewer.cancel()
        writers, self.writers = getattr(self, "writers", {}), {}
        for w in writers.values():
            await w.detach(spill=True)

    # -- inbound ----------------------------------------------------------------------------
    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        ref: str | None = None
        req_id: str | None = None
        try:
            if bytes_data is not None:
                frame = decode_data(bytes_data, self.settings.MAX_FRAME_BYTES)
                ref = frame.ref
                await self._data(frame.ref, frame.offset, frame.payload)
            elif text_data is not None:
                msg = parse_control(text_data)
                ref, req_id = msg.get("ref"), msg.get("id")
                await getattr(self, "_on_" + msg["type"])(msg)
            else:
                raise BadMessage("empty message")
        except ResumableError as exc:
            await self._error(exc, ref, req_id)
        except RedisError as exc:
            log.warning("ledger error on ref=%s: %s", ref, exc)
            await self._error(LedgerUnavailable(), ref, req_id)
        except Exception:  # never a traceback to the client, never a dead worker
            log.exception("unexpected error on ref=%s", ref)
            await self._error(Internal(), ref, req_id)

    async def _error(self, exc: ResumableError, ref: str | None, req_id: str | None) -> None:
        msg = exc.to_wire(ref)
        if req_id is not None:
            msg["id"] = req_id
        await self._send(msg)
        if ref and exc.code in _WRITER_FATAL:
            w = self.writers.pop(ref, None)
            if w is not None:
                await w.detach(spill=exc.code not in ("lease_lost", "superseded"))

    async def _writer_failed(self, w: UploadWriter, exc: ResumableError) -> None:
        # A part failed in the background: the client may be waiting for acks only.
        if self.writers.get(w.ref) is w:
            await self._error(exc, w.ref, None)

    def _grant(self, token: str) -> UploadGrant:
        # Verified on every use (an HMAC, microseconds): a token that expires while the
        # connection lives stops granting new work.
        return read_token(token, self.settings.TOKEN_MAX_AGE)

    async def _on_open(self, msg: dict[str, Any]) -> None:
        grant = self._grant(msg["token"])
        rec = await self.service.register(grant, msg["name"], msg["size"], msg["content_type"],
                                          msg.get("fingerprint", ""))
        try:
            await self._attach(rec.ref, grant, msg)
        except BaseException:
            # The client never heard of this ref: leave no record or multipart upload behind.
            await self.service.abort_record(rec, reason="open failed")
            raise

    async def _on_resume(self, msg: dict[str, Any]) -> None:
        await self._attach(msg["ref"], self._grant(msg["token"]), msg)

    async def _attach(self, ref: str, grant: UploadGrant, msg: dict[str, Any]) -> None:
        if ref in self.writers:  # a client re-sending resume on the same socket
            w = self.writers[ref]
            if w.rec.owner != grant.owner or w.rec.slot != grant.slot:
                raise NotFound()
        else:
            got = await self.service.attach(
                ref, grant, self.conn_id, self.channel_name or "", self._ack,
                self._request_handover, msg.get("fingerprint"), msg.get("head"))
            if isinstance(got, Done):
                await self._send({**got.to_wire(), **_id(msg)})
                return
            w = self.writers[ref] = got
            w.on_error = functools.partial(self._writer_failed, w)
        await self._send({
            "type": "ready", "ref": ref, "offset": w.durable, "size": w.size,
            "part_size": w.part_size, "window": w.window,
            "max_frame": self.settings.MAX_FRAME_BYTES, **_id(msg)})

    async def _on_finish(self, msg: dict[str, Any]) -> None:
        w = self._writer(msg["ref"])
        done = await w.finish(msg.get("crc32c"))
        self.writers.pop(msg["ref"], None)
        await self._send({**done.to_wire(), **_id(msg)})

    async def _on_cancel(self, msg: dict[str, Any]) -> None:
        ref = msg["ref"]
        w = self.writers.pop(ref, None)
        if w is not None:
            # Ownership was proven when this connection attached; read the record afresh
            # (its tail may have changed since).
            await w.detach(spill=False)
            await self.service.abort_record(await self.service.ledger.require(ref),
                                            reason="cancelled")
        elif msg.get("token"):
            await self.service.cancel(ref, self._grant(msg["token"]))
        else:
            raise NotFound()
        await self._send({"type": "cancelled", "ref": ref, **_id(msg)})

    def _writer(self, ref: str) -> UploadWriter:
        w = self.writers.get(ref)
        if w is None:
            raise NotOpen()
        return w

    async def _data(self, ref: str, offset: int, payload: memoryview) -> None:
        w = self._writer(ref)
        await self._throttle(len(payload))
        await w.write(offset, payload)
        # One answer per frame keeps the protocol deterministic (a client can match answers
        # to frames); at 1 MiB frames it is one small text message per MiB.
        await self._send({"type": "progress", "ref": ref, "received": w.received,
                          "durable": w.durable})

    async def _throttle(self, n: int) -> None:
        rate = self.settings.RATE_LIMIT_BYTES_PER_SECOND
        if not rate:
            return
        now = time.monotonic()
        self._bucket = min(float(rate), self._bucket + (now - self._bucket_t) * rate) - n
        self._bucket_t = now
        if self._bucket < 0:
            await asyncio.sleep(-self._bucket / rate)

    # -- outbound ---------------------------------------------------------------------------
    async def _send(self, msg: dict[str, Any]) -> None:
        try:
            await self.send(text_data=dumps(msg))
        except Exception as exc:
            # The client is gone (uvicorn raises ClientDisconnected): the ledger already has
            # the truth and the client learns it on resume. Never let this kill the consumer.
            log.debug("send to a closed socket dropped: %s", exc)

    async def _ack(self, ref: str, received: int, durable: int) -> None:
        await self._send({"type": "ack", "ref": ref, "received": received, "durable": durable})

    # -- lease upkeep and handover (durability rule 4) --------------------------------------
    async def _renew_loop(self) -> None:
        period = max(0.2, self.settings.LEASE_TTL / 3)
        while True:
            await asyncio.sleep(period)
            for ref, w in list(self.writers.items()):
                try:
                    ok = await w.renew()
                except Exception as exc:
                    log.warning("lease renewal of ref=%s failed: %s", ref, exc)
                    continue
                if not ok and self.writers.get(ref) is w:
                    self.writers.pop(ref, None)
                    await w.detach(spill=False)
                    # Expired and taken by another connection (a lease nobody took is
                    # reclaimed by renew, lua/_lib.lua): retryable, the client resumes.
                    await self._send(LeaseLost("the lease expired and was taken").to_wire(ref))

    async def _request_handover(self, holder_channel: str, ref: str, requester: str) -> None:
        if self.channel_layer is None or not holder_channel:
            return
        try:
            await self.channel_layer.send(holder_channel, {
                "type": "resumable.handover", "ref": ref, "requester": requester})
        except Exception as exc:
            log.warning("handover request for ref=%s failed: %s", ref, exc)

    async def resumable_abort(self, event: dict[str, Any]) -> None:
        """Channel-layer message: the upload was aborted elsewhere (admin). Drop the writer
        without spilling, tell the client ``aborted``, close if nothing else is open."""
        ref = event.get("ref")
        w = self.writers.pop(ref, None) if isinstance(ref, str) else None
        if w is None:
            return
        await w.detach(spill=False)
        log.info("aborted ref=%s user=%s worker=%s: holder told", ref, w.rec.user, worker_id())
        await self._send(Aborted(str(event.get("reason") or "the upload was aborted"),
                                 state="aborted").to_wire(ref))
        if not self.writers:
            await self.close(code=CLOSE_ABORTED)

    async def resumable_handover(self, event: dict[str, Any]) -> None:
        """Channel-layer message: another connection wants ``ref``. Spill, release, tell
        the client ``superseded`` and close if nothing else is open here."""
        ref = event.get("ref")
        w = self.writers.pop(ref, None) if isinstance(ref, str) else None
        if w is None:
            return
        await w.detach(spill=True)
        log.info("handed over ref=%s user=%s worker=%s to conn=%s", ref, w.rec.user,
                 worker_id(), event.get("requester"))
        await self._send(Superseded().to_wire(ref))
        if not self.writers:
            await self.close(code=CLOSE_SUPERSEDED)


async def _cancel_hard(task: asyncio.Future[Any], limit: float = 2.0) -> None:
    """Cancel ``task`` until it ends (at most ``limit`` seconds). A cancellation that lands
    while channels_redis is between Redis commands of its receive loop can be lost (seen on
    connections closed right after an error): the receive then goes back to BZPOPMIN every
    5 s for ever, and uvicorn waits for it on shutdown ("Waiting for background tasks")."""
    loop = asyncio.get_running_loop()
    end = loop.time() + limit
    while not task.done() and loop.time() < end:
        task.cancel()
        await asyncio.wait({task}, timeout=0.05)
    if not task.done():
        log.warning("channel-layer receive ignored cancellation for %.0f s", limit)


def _id(msg: dict[str, Any]) -> dict[str, Any]:
    return {"id": msg["id"]} if "id" in msg else {}
