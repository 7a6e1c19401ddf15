"""A Python client that speaks djust 1.2.6's upload protocol over its LiveView WebSocket.

Read from djust 1.2.6's own code: ``static/djust/src/15-uploads.js`` (the browser client),
``websocket.py`` (``receive``, ``_handle_upload_register``, ``_handle_upload_resume``,
``_handle_upload_frame``) and ``uploads/__init__.py`` (``parse_upload_frame``). The
exchange, in the order the browser client performs it:

1. connect to the LiveView socket; the server sends ``{"type": "connect", ...}``;
2. ``{"type": "mount", "view": <dotted path>, "params": {}, "url": <path>,
   "has_prerendered": false}``; the server answers with the mount frame;
3. ``{"type": "upload_register", "upload_name", "ref" (uuid4), "client_name",
   "client_type", "client_size", "resumable"}``; the server answers
   ``{"type": "upload_registered", ...}`` (or ``upload_resume`` with the ref after a
   reconnect, answered by ``upload_resumed`` with ``status`` and ``bytes_received``);
4. binary chunk frames ``0x01 | ref (16 bytes) | chunk index (u32 BE) | payload`` of the
   slot's ``chunk_size``; djust sends no acknowledgement, only ``upload_progress`` every
   10 %; the browser throttles on ``bufferedAmount``, here ``await ws.send`` waits for the
   socket to drain;
5. ``0x02 | ref``: the server finalizes the writer (last part + CompleteMultipartUpload)
   synchronously and answers ``upload_progress`` with ``status: complete`` (or ``error``).

djust's per-connection upload bucket (``rate_limit.upload_rate`` 200 frames/s, burst 400,
``max_warnings`` 3) drops frames beyond it and closes the socket with 4429 after three
drops, so with djust's defaults this client paces itself (``pace_fps``) just below the rate.
"""

from __future__ import annotations

import asyncio
import json
import os
import struct
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

FRAME_CHUNK = 0x01
FRAME_COMPLETE = 0x02


class DjustUploadError(Exception):
    """The server refused or failed the upload (message from djust)."""


@dataclass
class DjustResult:
    ref: str
    size: int
    bytes_sent: int  # payload bytes handed to the socket, re-sends included
    connections: int
    resume_offsets: list[int] = field(default_factory=list)
    marks: dict[str, float] = field(default_factory=dict)  # epoch seconds
    writer_result: Any = None

    @property
    def bytes_resent(self) -> int:
        return self.bytes_sent - self.size


class _Pacer:
    """Client-side token bucket mirroring djust's server bucket (frames/s, burst)."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate, self.burst = rate, burst
        self.tokens, self.t = burst, time.monotonic()

    async def take(self) -> None:
        while True:
            now = time.monotonic()
            self.tokens = min(self.burst, self.tokens + (now - self.t) * self.rate)
            self.t = now
            if self.tokens >= 1:
                self.tokens -= 1
                return
            await asyncio.sleep((1 - self.tokens) / self.rate)


class DjustUploader:
    """Upload one file through djust's LiveView socket at ``url`` (ws://host/ws/live/).

    ``view``/``page``: the LiveView's dotted path and URL path; ``slot``: the upload name;
    ``chunk``: payload bytes per frame (must equal the slot's ``chunk_size``);
    ``pace_fps``: frames per second to stay under djust's upload bucket (None: unpaced);
    ``cookie``: a Cookie header (session) — djust resumes only for the same session;
    ``on_sent(offset)``: called after each frame; ``reconnect``: resume after a dropped
    connection (needs a slot with ``resumable=True`` and djust's ``ResumableUploadWriter``),
    ``reconnect_delay`` seconds later (djust's socket reconnects after 1 s, then backs off).
    djust's browser client resumes only when the page calls
    ``window.djust.uploads.uploadFile(file, name, {resumeRef})`` after the reconnect; this
    does what that call does, including its fallback: a resume answered with anything but
    ``resumed`` starts a fresh upload from byte 0 (``restarts`` counts them).
    """

    def __init__(self, url: str, *, view: str, page: str, slot: str, chunk: int,
                 pace_fps: float | None = None, pace_burst: float = 350,
                 cookie: str | None = None, reconnect: bool = False,
                 reconnect_delay: float = 1.0, on_sent: Any = None) -> None:
        self.url, self.view, self.page, self.slot, self.chunk = url, view, page, slot, chunk
        self.pacer = _Pacer(pace_fps, pace_burst) if pace_fps else None
        self.cookie, self.reconnect, self.on_sent = cookie, reconnect, on_sent
        self.reconnect_delay = reconnect_delay
        self.restarts = 0
        self.resume_answers: list[dict[str, Any]] = []
        self.bytes_sent = 0
        self.connections = 0
        self.resume_offsets: list[int] = []
        self.marks: dict[str, float] = {}
        self.ref: str | None = None

    async def _recv_json(self, ws: Any, want: set[str]) -> dict[str, Any]:
        while True:
            raw = await ws.recv()
            if isinstance(raw, bytes):
                continue  # msgpack/binary patches: not part of the upload exchange
            msg = json.loads(raw)
            t = msg.get("type")
            if t in want:
                return msg
            if t == "error":
                raise DjustUploadError(msg.get("error") or msg.get("message") or str(msg))
            if t == "rate_limit_exceeded":
                raise DjustUploadError(f"rate limited: {msg}")
            if t == "upload_progress" and msg.get("status") == "error":
                raise DjustUploadError(msg.get("error", "upload error"))

    async def upload(self, path: str, content_type: str = "application/octet-stream"
                     ) -> DjustResult:
        size = os.path.getsize(path)
        offset = 0
        while True:
            try:
                return await self._session(path, size, content_type, offset)
            except (ConnectionClosed, OSError) as exc:
                if not self.reconnect:
                    raise DjustUploadError(f"connection lost: {exc!r}") from exc
                self.marks.setdefault("dropped", time.time())
                await asyncio.sleep(self.reconnect_delay)

    async def _session(self, path: str, size: int, ctype: str, offset: int) -> DjustResult:
        headers = {"Cookie": self.cookie} if self.cookie else None
        async with connect(self.url, compression=None, max_size=16 * 1024 * 1024,
                           additional_headers=headers, open_timeout=30,
                           ping_interval=None) as ws:
            await self._recv_json(ws, {"connect"})
            await ws.send(json.dumps({"type": "mount", "view": self.view, "params": {},
                                      "url": self.page, "has_prerendered": False}))
            await self._recv_json(ws, {"mount"})
            if self.ref is not None:
                await ws.send(json.dumps({"type": "upload_resume", "ref": self.ref}))
                msg = await self._recv_json(ws, {"upload_resumed"})
                self.resume_answers.append(msg)
                if msg.get("status") == "resumed":
                    offset = min(size, int(msg.get("bytes_received", 0)))
                else:
                    self.ref = None  # 15-uploads.js: "not_found or locked" -> fresh register
                    self.restarts += 1
            if self.ref is None:
                self.ref = str(uuid.uuid4())
                await ws.send(json.dumps({
                    "type": "upload_register", "upload_name": self.slot, "ref": self.ref,
                    "client_name": os.path.basename(path), "client_type": ctype,
                    "client_size": size, "resumable": self.reconnect}))
                await self._recv_json(ws, {"upload_registered"})
                offset = 0
            self.connections += 1
            self.resume_offsets.append(offset)
            refb = uuid.UUID(self.ref).bytes
            # 15-uploads.js labels the next frame floor(bytes_received / chunk_size) but seeks
            # to bytes_received itself; this client seeks to that chunk's start, which is the
            # same offset whenever bytes_received is a whole number of chunks (it is up to
            # 2,047 bytes earlier with djust's over-estimate for 63 KiB frames: see
            # docs/benchmarks.md, "Peers").
            index = offset // self.chunk
            offset = index * self.chunk
            waiter = asyncio.create_task(self._recv_json(ws, {"__never__"}))
            try:
                with open(path, "rb") as f:
                    f.seek(offset)
                    self.marks.setdefault("first_sent", time.time())
                    while offset < size:
                        data = f.read(self.chunk)
                        if self.pacer is not None:
                            await self.pacer.take()
                        await ws.send(struct.pack(">B16sI", FRAME_CHUNK, refb, index) + data)
                        if waiter.done():
                            waiter.result()  # raises the server's error
                        offset += len(data)
                        index += 1
                        self.bytes_sent += len(data)
                        if self.on_sent is not None:
                            r = self.on_sent(offset)
                            if asyncio.iscoroutine(r):
                                await r
                    self.marks["last_sent"] = time.time()
                    if self.pacer is not None:
                        await self.pacer.take()
                    waiter.cancel()
                    await asyncio.gather(waiter, return_exceptions=True)
                    await ws.send(struct.pack(">B16s", FRAME_COMPLETE, refb))
                    while True:
                        msg = await self._recv_json(ws, {"upload_progress"})
                        if msg.get("status") == "complete":
                            break
                self.marks["done"] = time.time()
            finally:
                waiter.cancel()
        return DjustResult(ref=self.ref, size=size, bytes_sent=self.bytes_sent,
                           connections=self.connections, resume_offsets=self.resume_offsets,
                           marks=self.marks)
