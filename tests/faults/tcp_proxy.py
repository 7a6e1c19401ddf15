"""An in-process TCP proxy between a client and nginx that breaks connections on demand.

* ``cut_every``: reset a connection (RST both ways) once ``n`` client bytes went through it;
  the client reconnects through the proxy and gets a fresh connection.
* ``go_silent()``: every current connection stops forwarding in both directions without
  closing towards the server (a half-open socket, as after a network change), while the
  client side is reset so the client reconnects. What the server sends afterwards on the
  silent connection is kept in ``Link.after_silence`` (tests read the ``superseded`` error
  and the 4009 close frame there).

Runs on the test's event loop (asyncio streams); stop it with ``await proxy.close()``.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field


@dataclass
class Link:
    """One proxied connection."""

    client_w: asyncio.StreamWriter
    server_r: asyncio.StreamReader
    server_w: asyncio.StreamWriter
    up_bytes: int = 0  # client -> server bytes forwarded
    silent: bool = False
    closed: bool = False
    after_silence: bytearray = field(default_factory=bytearray)
    server_eof: asyncio.Event = field(default_factory=asyncio.Event)


class TcpProxy:
    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.cut_every: int | None = None
        self.links: list[Link] = []
        self.cuts = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.port = 0

    async def start(self) -> TcpProxy:
        self._server = await asyncio.start_server(self._on_client, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def url(self, path: str) -> str:
        return f"ws://127.0.0.1:{self.port}{path}"

    async def _on_client(self, cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
        try:
            sr, sw = await asyncio.open_connection(*self.upstream)
        except OSError:
            cw.transport.abort()
            return
        link = Link(cw, sr, sw)
        self.links.append(link)
        up = asyncio.create_task(self._up(link, cr))
        down = asyncio.create_task(self._down(link))
        for t in (up, down):
            self._tasks.add(t)
            t.add_done_callback(self._tasks.discard)

    async def _up(self, link: Link, cr: asyncio.StreamReader) -> None:
        try:
            while not link.silent:
                data = await cr.read(256 * 1024)
                if not data or link.silent:
                    break
                if self.cut_every is not None and link.up_bytes + len(data) >= self.cut_every:
                    # Forward up to the cut point, then reset both sides mid-stream.
                    keep = self.cut_every - link.up_bytes
                    link.server_w.write(data[:keep])
                    await link.server_w.drain()
                    self.cuts += 1
                    self._reset(link)
                    return
                link.up_bytes += len(data)
                link.server_w.write(data)
                await link.server_w.drain()
        except (OSError, ConnectionError):
            pass
        if not link.silent:
            self._reset(link)

    async def _down(self, link: Link) -> None:
        try:
            while True:
                data = await link.server_r.read(256 * 1024)
                if not data:
                    break
                if link.silent:
                    link.after_silence += data
                    continue
                link.client_w.write(data)
                await link.client_w.drain()
        except (OSError, ConnectionError):
            pass
        link.server_eof.set()
        if not link.silent:
            self._reset(link)

    def _reset(self, link: Link) -> None:
        if link.closed:
            return
        link.closed = True
        link.client_w.transport.abort()
        link.server_w.transport.abort()

    def go_silent(self) -> list[Link]:
        """Make every open connection half-open (see module doc); returns them."""
        silenced = []
        for link in self.links:
            if link.closed or link.silent:
                continue
            link.silent = True
            link.client_w.transport.abort()  # the client notices and reconnects
            silenced.append(link)
        return silenced

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for link in self.links:
            link.closed = True
            link.client_w.transport.abort()
            link.server_w.transport.abort()
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
