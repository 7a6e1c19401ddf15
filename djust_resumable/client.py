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
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any

import google_crc32c
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

from .protocol import FRAME_DATA, HEADER, ref_to_bytes

MiB = 1024 * 1024
#: Bytes of the file's head sent with ``resume`` (the server keeps HEAD_BYTES, 4 KiB).
HEAD_CHECK_BYTES = 4096


#: Server error codes this client never retries although the wire may mark them retryable:
#: the client holds one fixed token, so reconnecting with it cannot cure an expired or bad
#: one (a browser page can fetch a fresh token; docs/protocol.md, *Error codes*).
TOKEN_CODES = ("token_expired", "bad_token")


class UploadFailed(Exception):
    """The upload ended for good: the server refused it with a typed error that retrying
    cannot fix (``code`` is the wire code, e.g. ``too_large``; ``token_expired``), the
    server rejected the WebSocket handshake with HTTP 4xx (``code`` ``rejected``, wrong
    URL path or route), the endpoint does not speak this protocol (``not_upload_endpoint``),
    or the client gave up after ``give_up_after`` seconds without a working connection
    (``code`` is the last retry reason's code, e.g. ``unreachable``).

    ``retryable``: True when the same upload may succeed later by resuming its ref with the
    same token (the server or network was unavailable), False when something must change
    first (the token, the URL, the file, the slot's limits)."""

    def __init__(self, code: str, message: str, details: dict[str, Any] | None = None,
                 retryable: bool = False) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.details = details or {}
        self.retryable = retryable


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
RetryCallback = Callable[[str, float], Any]  # (reason, seconds until the next attempt)
ReadyCallback = Callable[[str, int], Any]  # (ref, durable offset the upload resumes at)


def retry_reason(exc: BaseException) -> tuple[str, str]:
    """``(code, human reason)`` of a failed attempt that will be retried, e.g.
    ``("unreachable", "connection refused")``; ``code`` ends up in UploadFailed when the
    client gives up."""
    if isinstance(exc, _Retry):
        return str(exc.args[0]), f"server answered {exc.args[0]}"
    if isinstance(exc, ConnectionRefusedError):
        return "unreachable", "connection refused"
    if isinstance(exc, ConnectionResetError):
        return "unreachable", "connection reset"
    if isinstance(exc, InvalidStatus):
        return "unreachable", f"server answered HTTP {exc.response.status_code}"
    if isinstance(exc, InvalidHandshake):
        return "unreachable", f"WebSocket handshake failed ({exc})"
    if isinstance(exc, ConnectionClosed):
        rc = exc.rcvd
        return "unreachable", ("connection closed" if rc is None
                               else f"connection closed (code {rc.code})")
    if isinstance(exc, TimeoutError):
        return "unreachable", "timed out"
    if isinstance(exc, OSError):
        return "unreachable", exc.strerror or str(exc) or type(exc).__name__
    return "unreachable", str(exc) or type(exc).__name__


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
    ``give_up_after``: seconds without a successful connection before UploadFailed; only
    faults a retry can cure wait that long (refused/reset connections, HTTP 5xx, retryable
    server errors). HTTP 4xx handshake rejections, non-retryable server errors and the
    ``fatal_codes`` end the upload at once.
    ``fatal_codes``: server error codes never retried (default: the token errors, which
    this client cannot cure since it holds one fixed token).
    ``on_progress(sent, durable, size)``: called after every frame and ack (may be async).
    ``on_retry(reason, delay)``: called before each backoff sleep of ``delay`` seconds with a
    short reason such as ``"connection refused"`` (may be async).
    ``on_ready(ref, offset)``: called when the server answers ``ready`` (may be async):
    from then on the upload can be resumed by ``ref``, even by another process.
    """

    def __init__(self, urls: str | list[str], token: str, *, on_progress: ProgressCallback | None
                 = None, backoff_initial: float = 0.2, backoff_max: float = 5.0,
                 give_up_after: float = 300.0, open_timeout: float = 10.0,
                 on_retry: RetryCallback | None = None, on_ready: ReadyCallback | None = None,
                 fatal_codes: Collection[str] = TOKEN_CODES) -> None:
        self.urls = [urls] if isinstance(urls, str) else list(urls)
        self.token = token
        self.on_progress = on_progress
        self.on_retry = on_retry
        self.on_ready = on_ready
        self.fatal_codes = frozenset(fatal_codes)
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
        """Upload ``path``; resume ``ref`` if given. Raises UploadFailed (see its doc; also
        after ``give_up_after`` seconds without a working connection), InvalidURI for a URL
        that is not ``ws://`` or ``wss://``, OSError when the file cannot be read."""
        self.ref = ref
        size = os.path.getsize(path)
        name = name or os.path.basename(path)
        ctype = content_type or mimetypes.guess_type(name)[0] or "application/octet-stream"
        fp = await asyncio.to_thread(fingerprint, path)
        head = await asyncio.to_thread(_head_b64, path)  # read once, sent with every resume
        loop = asyncio.get_running_loop()
        attempt = 0  # rotates URLs
        failures = 0  # consecutive failed attempts: drives the backoff
        last_ok = loop.time()
        while True:
            url = self.urls[attempt % len(self.urls)]
            attempt += 1
            before = self.connections
            try:
                return await self._session(url, path, size, name, ctype, fp, head)
            except (UploadFailed, InvalidURI):
                raise
            except (_Retry, ConnectionClosed, OSError, InvalidHandshake, TimeoutError) as exc:
                if (isinstance(exc, InvalidStatus) and 400 <= exc.response.status_code < 500
                        and exc.response.status_code not in (408, 429)):
                    # A wrong path (no route), a refused origin, a plain HTTP route: the same
                    # request gets the same answer, so do not wait give_up_after for it.
                    status = exc.response.status_code
                    raise UploadFailed(
                        "rejected", f"the server refused the WebSocket connection to {url} "
                        f"with HTTP {status}; is the URL the upload endpoint (the server's "
                        "DJUST_RESUMABLE ENDPOINT_PATH)?", {"status": status}) from exc
                if self.connections > before:
                    last_ok, failures = loop.time(), 0
                failures += 1
                code, reason = retry_reason(exc)
                if loop.time() - last_ok > self.give_up_after:
                    raise UploadFailed(code, f"gave up after {self.give_up_after:.0f} s "
                                       f"without progress: {reason}", retryable=True) from exc
                delay = min(self.backoff_max, self.backoff_initial * 2 ** min(failures - 1, 10))
                if isinstance(exc, _Retry) and exc.after:
                    delay = min(delay, float(exc.after))
                delay *= 0.5 + random.random() / 2
                await _call(self.on_retry, reason, delay)
                await asyncio.sleep(delay)
            finally:
                self._ws = None

    async def _session(self, url: str, path: str, size: int, name: str, ctype: str,
                       fp: str, head: str) -> UploadResult:
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
                                          "head": head}))
            try:
                msg = await self._recv(ws)
                kind = msg.get("type") if isinstance(msg, dict) else None
            except ValueError:  # not JSON
                kind = None
            if kind == "done":
                return self._result(msg, size)
            if kind != "ready":
                # Another WebSocket route (djust's LiveView socket answers "connect"): it
                # will answer the same way on every reconnect.
                raise UploadFailed(
                    "not_upload_endpoint", f"{url} does not speak the upload protocol (first "
                    f"answer: {str(kind or 'not JSON')[:40]!r}); is the URL the upload "
                    "endpoint (the server's DJUST_RESUMABLE ENDPOINT_PATH)?")
            self.ref = msg["ref"]
            self.connections += 1
            offset = int(msg["offset"])
            self.resume_offsets.append(offset)
            await _call(self.on_ready, self.ref, offset)
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
        if isinstance(msg, dict) and msg.get("type") == "error":
            code = str(msg.get("code", "error"))
            if msg.get("retryable") and code not in self.fatal_codes:
                raise _Retry(code, msg.get("retry_after"))
            raise UploadFailed(code, str(msg.get("message", "")), msg)
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
        await _call(self.on_progress, sent, durable, size)

    def _result(self, msg: dict[str, Any], size: int) -> UploadResult:
        return UploadResult(ref=msg["ref"], size=int(msg["size"]), crc32c=int(msg["crc32c"]),
                            etag=msg.get("etag", ""), bytes_sent=self.bytes_sent,
                            connections=self.connections, resume_offsets=self.resume_offsets)


async def _call(callback: Callable[..., Any] | None, *args: Any) -> None:
    if callback is not None:
        r = callback(*args)
        if inspect.isawaitable(r):
            await r
