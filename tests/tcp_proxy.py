"""A TCP proxy the tests can sever: every connection it carries is cut on demand.

Browser tests put it between Chromium and the workers (page, djust's LiveView socket and the
upload socket all go through it): ``sever()`` aborts every live connection at once, as a
network drop would (``context.set_offline`` may leave an open WebSocket alone). With several
backends each new connection goes to the next one that accepts (round robin), so a browser
reaches the surviving worker after one is killed, like behind a load balancer.

It runs its own asyncio loop in a daemon thread, so sync tests (playwright's sync API) use it
directly.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from typing import Any

CHUNK = 256 * 1024


class SeverableProxy:
    """``127.0.0.1:<port>`` forwarding to ``127.0.0.1:<backend port>``.

    ``bytes_up`` counts bytes from clients to backends (all connections, since start).
    Use as a context manager, or ``start()`` / ``stop()``.
    """

    def __init__(self, backends: Sequence[int], host: str = "127.0.0.1") -> None:
        if not backends:
            raise ValueError("at least one backend port")
        self.host = host
        self.backends = list(backends)
        self.port = 0
        self.bytes_up = 0
        self.severed = 0
        self._next = 0
        self._conns: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True,
                                        name="severable-proxy")
        self._server: asyncio.base_events.Server | None = None

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> SeverableProxy:
        self._thread.start()
        self._server = self._call(asyncio.start_server(self._handle, self.host, 0))
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        if not self._thread.is_alive():
            return

        async def close() -> None:
            assert self._server is not None
            self._server.close()
            self._abort_all()
            await self._server.wait_closed()

        try:
            self._call(close(), timeout=10)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
            self._loop.close()

    def __enter__(self) -> SeverableProxy:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # -- control ---------------------------------------------------------------------------
    def sever(self) -> int:
        """Abort every live connection (both sides get a reset); returns how many were cut.
        New connections are accepted again at once."""

        async def cut() -> int:
            return self._abort_all()

        n = self._call(cut())
        self.severed += n
        return n

    def connections(self) -> int:
        async def count() -> int:
            return len(self._conns)

        return self._call(count())

    # -- internals -------------------------------------------------------------------------
    def _call(self, coro: Any, timeout: float = 30) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def _abort_all(self) -> int:
        conns = list(self._conns)
        self._conns.clear()
        for a, b in conns:
            a.transport.abort()
            b.transport.abort()
        return len(conns)

    async def _connect_backend(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        for _ in range(len(self.backends)):
            port = self.backends[self._next % len(self.backends)]
            self._next += 1
            try:
                return await asyncio.open_connection(self.host, port)
            except OSError:
                continue  # a dead backend: try the next one
        return None

    async def _handle(self, creader: asyncio.StreamReader, cwriter: asyncio.StreamWriter) -> None:
        upstream = await self._connect_backend()
        if upstream is None:
            cwriter.transport.abort()
            return
        ureader, uwriter = upstream
        pair = (cwriter, uwriter)
        self._conns.add(pair)
        try:
            await asyncio.gather(self._pipe(creader, uwriter, count=True),
                                 self._pipe(ureader, cwriter, count=False))
        finally:
            self._conns.discard(pair)
            for w in pair:
                w.transport.abort()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    count: bool) -> None:
        try:
            while data := await reader.read(CHUNK):
                if count:
                    self.bytes_up += len(data)
                writer.write(data)
                await writer.drain()
            if writer.can_write_eof():
                writer.write_eof()  # pass the half-close on; the other direction ends itself
        except (ConnectionError, OSError, RuntimeError):
            # One side is gone: cut the other too, which ends the opposite pipe.
            writer.transport.abort()
