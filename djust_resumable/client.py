"""Python client of the upload WebSocket: streams a file from disk, resumes after any drop.

    result = asyncio.run(ResumableUploader(url, token).upload("big.iso"))

The file is read in frames of at most the server's ``max_frame`` bytes, never whole. The
client keeps at most ``window`` bytes (announced by the server) beyond the durable offset,
so after a crash it re-sends at most that many bytes. On any drop or retryable error it
reconnects with exponential backoff (to the next URL when given several) and resumes at the
server's durable offset. ``finish`` carries the whole file's CRC32C, which the server checks.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import inspect
import json
import mimetypes
import os
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import google_crc32c
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from .protocol import FRAME_DATA, HEADER, ref_to_bytes

MiB = 1024 * 1024
#: Bytes of the file's head sent with ``resume`` (the server keeps HEAD_BYTES, 4 KiB).
HEAD_CHECK_BYTES = 4096


class UploadFailed(Exception):
    """The server refused the upload for good (a non-retryable typed error), or the client
    gave up after ``give_up_after`` seconds without a working connection."""

    def __init__(self, code: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.details = details or {}


class _Retry(Exception):
    def __init__(self, reason: str, after: float | None = None) -> None:
        super().__init__(reason)
        self.after = after


@dataclass
class UploadResult:
    ref: str
    size: int  # bytes
    crc32c: int
    etag: str
    bytes_sent: int  # payload bytes sent, re-sends included
    connections: int  # successful connections (1 + resumes)
    resume_offsets: list[int] = field(default_factory=list)

    @property
    def bytes_resent(self) -> int:
        """Bytes sent more than once by this client (a resume by ``ref`` in a new process
        starts counting at the first offset the server announced)."""
        first = self.resume_offsets[0] if self.resume_offsets else 0
        return self.bytes_sent - (self.size - first)


ProgressCallback = Callable[[int, int, int], Any]  # (sent offset, durable offset, size)


def fingerprint(path: str) -> str:
    """Size plus sha256 of the first and last MiB: identifies the file across restarts
    without reading it whole."""
    size = os.path.getsize(path)
    h = hashlib.sha256(str(size).encode())
    with open(path, "rb") as f:
        h.update(f.read(MiB))
        if size > MiB:
            f.seek(max(MiB, size - MiB))
            h.update(f.read(MiB))
    return h.hexdigest()[:40]


def _head_b64(path: str) -> str:
    """The file's first 4 KiB, base64: the server compares them with the head bytes it kept
    before it lets a resume continue (docs/protocol.md, ``resume``)."""
    with open(path, "rb") as f:
        return base64.b64encode(f.read(HEAD_CHECK_BYTES)).decode("ascii")


def _crc_prefix(path: str, end: int) -> int:
    crc = 0
    with open(path, "rb") as f:
        left = end
        while left:
            block = f.read(min(8 * MiB, left))
            if not block:
                raise OSError("file shrank during upload")
            crc = google_crc32c.extend(crc, block)
            left -= len(block)
    return crc


class ResumableUploader:
    """Upload one file per ``upload()`` call.

    ``urls``: one endpoint URL or several (tried in turn on reconnect, like a balancer).
    ``give_up_after``: seconds without a successful connection before raising the last error.
    ``on_progress(sent, durable, size)``: called after every frame and ack (may be async).
    """

    def __init__(self, urls: str | list[str], token: str, *, on_progress: ProgressCallback | None
                 = None, backoff_initial: float = 0.2, backoff_max: float = 5.0,
                 give_up_after: float = 300.0, open_timeout: float = 10.0) -> None:
        self.urls = [urls] if isinstance(urls, str) else list(urls)
        self.token = token
        self.on_progress = on_progress
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.give_up_after = give_up_after
        self.open_timeout = open_timeout
        self.ref: str | None = None
        self.bytes_sent = 0
        self.connections = 0
        self.resume_offsets: list[int] = []
        self._ws: ClientConnection | None = None

    async def drop(self) -> None:
        """Close the current connection cleanly (tests and pause); the upload resumes."""
        if self._ws is not None:
            await self._ws.close()

    async def upload(self, path: str, *, name: str | None = None, content_type: str | None = None,
                     ref: str | None = None) -> UploadResult:
        """Upload ``path``; resume ``ref`` if given. Raises UploadFailed, or the last
        connection error after ``give_up_after`` seconds without progress."""
        self.ref = ref
        size = os.path.getsize(path)
        name = name or os.path.basename(path)
        ctype = content_type or mimetypes.guess_type(name)[0] or "application/octet-stream"
        fp = await asyncio.to_thread(fingerprint, path)
        loop = asyncio.get_running_loop()
        attempt = 0  # rotates URLs
        failures = 0  # consecutive failed attempts: drives the backoff
        last_ok = loop.time()
        while True:
            url = self.urls[attempt % len(self.urls)]
            attempt += 1
            before = self.connections
            try:
                return await self._session(url, path, size, name, ctype, fp)
            except UploadFailed:
                raise
            except InvalidURI:
                raise
            except (_Retry, ConnectionClosed, OSError, InvalidHandshake, TimeoutError) as exc:
                if self.connections > before:
                    last_ok, failures = loop.time(), 0
                failures += 1
                if loop.time() - last_ok > self.give_up_after:
                    code = exc.args[0] if isinstance(exc, _Retry) else "unreachable"
                    raise UploadFailed(str(code), f"gave up after {self.give_up_after:.0f} s "
                                       f"without progress: {exc}") from exc
                delay = min(self.backoff_max, self.backoff_initial * 2 ** min(failures - 1, 10))
                if isinstance(exc, _Retry) and exc.after:
                    delay = min(delay, float(exc.after))
                await asyncio.sleep(delay * (0.5 + random.random() / 2))
            finally:
                self._ws = None

    async def _session(self, url: str, path: str, size: int, name: str, ctype: str,
                       fp: str) -> UploadResult:
        async with connect(url, compression=None, max_size=16 * MiB,
                           open_timeout=self.open_timeout, ping_interval=20,
                           ping_timeout=60) as ws:
            self._ws = ws
            if self.ref is None:
                await ws.send(json.dumps({"type": "open", "id": "1", "token": self.token,
                                          "name": name, "size": size, "content_type": ctype,
                                          "fingerprint": fp}))
            else:
                await ws.send(json.dumps({"type": "resume", "id": "1", "token": self.token,
                                          "ref": self.ref, "fingerprint": fp,
                                          "head": await asyncio.to_thread(_head_b64, path)}))
            msg = await self._recv(ws)
            if msg["type"] == "done":
                return self._result(msg, size)
            if msg["type"] != "ready":
                raise _Retry(f"unexpected {msg['type']}")
            self.ref = msg["ref"]
            self.connections += 1
            offset = int(msg["offset"])
            self.resume_offsets.append(offset)
            state = {"durable": offset}
            await self._progress(offset, offset, size)
            acked = asyncio.Event()
            sender = asyncio.create_task(self._send_all(
                ws, path, size, offset, int(msg["window"]), int(msg["max_frame"]), state, acked))
            try:
                while True:
                    msg = await self._recv(ws, sender)
                    if msg["type"] in ("ack", "progress"):
                        if int(msg["durable"]) > state["durable"]:
                            state["durable"] = int(msg["durable"])
                            acked.set()
                            await self._progress(state.get("sent", offset), state["durable"],
                                                 size)
                    elif msg["type"] == "done":
                        return self._result(msg, size)
            finally:
                sender.cancel()
                await asyncio.gather(sender, return_exceptions=True)

    async def _recv(self, ws: ClientConnection, sender: asyncio.Task[None] | None = None
                    ) -> dict[str, Any]:
        raw = await ws.recv()
        if sender is not None and sender.done() and sender.exception():
            raise sender.exception()  # type: ignore[misc]
        msg = json.loads(raw)
        if msg.get("type") == "error":
            if msg.get("retryable"):
                raise _Retry(msg.get("code", "error"), msg.get("retry_after"))
            raise UploadFailed(msg.get("code", "error"), msg.get("message", ""), msg)
        return msg

    async def _send_all(self, ws: ClientConnection, path: str, size: int, offset: int,
                        window: int, max_frame: int, state: dict[str, int],
                        acked: asyncio.Event) -> None:
        crc = await asyncio.to_thread(_crc_prefix, path, offset)
        head = HEADER.pack(FRAME_DATA, ref_to_bytes(self.ref or ""), 0)[:17]
        pos = offset
        with open(path, "rb") as f:
            f.seek(pos)
            while pos < size:
                while pos - state["durable"] >= window:
                    acked.clear()
                    await acked.wait()
                n = min(max_frame, size - pos, window - (pos - state["durable"]))
                data = f.read(n)
                if len(data) != n:
                    raise OSError("file shrank during upload")
                crc = google_crc32c.extend(crc, data)
                await ws.send(head + pos.to_bytes(8, "big") + data)
                pos += n
                self.bytes_sent += n
                state["sent"] = pos
                await self._progress(pos, state["durable"], size)
        await ws.send(json.dumps({"type": "finish", "ref": self.ref, "crc32c": crc}))

    async def _progress(self, sent: int, durable: int, size: int) -> None:
        if self.on_progress is not None:
            r = self.on_progress(sent, durable, size)
            if inspect.isawaitable(r):
                await r

    def _result(self, msg: dict[str, Any], size: int) -> UploadResult:
        return UploadResult(ref=msg["ref"], size=int(msg["size"]), crc32c=int(msg["crc32c"]),
                            etag=msg.get("etag", ""), bytes_sent=self.bytes_sent,
                            connections=self.connections, resume_offsets=self.resume_offsets)
