"""Helpers of the big-file browser tests: a page-level trace of the upload sockets, files
written to disk in blocks, and the ledger look-ups that find an upload's holder."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from djust_resumable.conf import get_settings
from djust_resumable.ledger import Ledger, UploadRecord

MiB = 1024 * 1024

#: Installed with ``context.add_init_script`` (so it survives reloads): counts what the page
#: sends on djust_resumable's sockets (payload bytes of data frames, ``open``/``resume``
#: messages) and records each ``ready`` offset and ``error`` code. Measures the client from
#: outside, without trusting its own counters.
TRACE = """(() => {
    if (window.__djr) return;  // once per document
    const T = window.__djr = {ready: [], sent: 0, sockets: 0, opens: 0, resumes: 0, errors: [],
                              loaded: Date.now()};
    const Real = window.WebSocket;
    const send = Real.prototype.send;
    Real.prototype.send = function (data) {
        if (this.__djr) {
            if (typeof data === 'string') {
                try {
                    const m = JSON.parse(data);
                    if (m.type === 'open') T.opens++;
                    if (m.type === 'resume') T.resumes++;
                } catch (e) { /* not ours */ }
            } else {
                T.sent += (data.byteLength || 0) - 25;
            }
        }
        return send.call(this, data);
    };
    window.WebSocket = function (url, protos) {
        const ws = protos ? new Real(url, protos) : new Real(url);
        if (String(url).includes('djust-resumable')) {
            ws.__djr = true;
            T.sockets++;
            ws.addEventListener('message', (ev) => {
                if (typeof ev.data !== 'string') return;
                const m = JSON.parse(ev.data);
                if (m.type === 'ready') T.ready.push(m.offset);
                if (m.type === 'error') T.errors.push(m.code);
            });
        }
        return ws;
    };
    window.WebSocket.prototype = Real.prototype;
    Object.assign(window.WebSocket, {CONNECTING: 0, OPEN: 1, CLOSING: 2, CLOSED: 3});
})();"""


def open_slot(page: Any, url: str, slot: str) -> None:
    """Load ``url`` and wait until djust mounted the view and our client owns ``slot``."""
    page.goto(url)
    page.wait_for_function(
        "(s) => window.djust && window.djust.uploads && window.djust.uploads.resumable"
        " && window.djust.uploads.resumable.isResumable(s)", arg=slot, timeout=30_000)


def wait_received(page: Any, at_least: int, timeout_ms: int = 120_000) -> dict[str, Any]:
    """Wait until the page's first upload has ``received >= at_least``; return its row."""
    page.wait_for_function(
        "(n) => window.djust.uploads.resumable.list().some(u => u.ref && u.received >= n)",
        arg=at_least, timeout=timeout_ms)
    return page.evaluate("window.djust.uploads.resumable.list()")[0]


def trace(page: Any) -> dict[str, Any]:
    return page.evaluate("window.__djr")


def random_file(path: Path, size: int) -> Path:
    """``size`` random bytes written in 4 MiB blocks (never whole in memory)."""
    block = 4 * MiB
    with open(path, "wb") as f:
        left = size
        while left > 0:
            n = min(block, left)
            f.write(os.urandom(n))
            left -= n
    return path


def _run(coro: Any) -> Any:
    """Run ``coro`` to completion on a fresh loop in another thread (playwright's sync API
    keeps an event loop running in this one, so ``asyncio.run`` refuses here)."""
    with concurrent.futures.ThreadPoolExecutor(1) as ex:
        return ex.submit(asyncio.run, coro).result(timeout=60)


def _ledger(redis_url: str) -> Ledger:
    return Ledger(aioredis.Redis.from_url(redis_url), get_settings())


async def _holder(redis_url: str, ref: str) -> tuple[int | None, str]:
    lg = _ledger(redis_url)
    try:
        if await lg.lease_info(ref) is None:
            return None, ""
        attached = [e for e in await lg.events(ref) if e["event"] == "attached"]
        if not attached:
            return None, ""
        worker = str(attached[-1].get("worker", ""))
        return int(worker.rsplit(":", 1)[1]), worker
    finally:
        await lg.close()


async def _attached(redis_url: str, ref: str) -> list[int]:
    lg = _ledger(redis_url)
    try:
        return [int(str(e.get("worker", "")).rsplit(":", 1)[1]) for e in await lg.events(ref)
                if e["event"] == "attached"]
    finally:
        await lg.close()


async def _events(redis_url: str, ref: str) -> list[dict[str, Any]]:
    lg = _ledger(redis_url)
    try:
        return await lg.events(ref)
    finally:
        await lg.close()


def events(redis_url: str, ref: str) -> list[dict[str, Any]]:
    """The upload's ledger timeline (``{"event": ..., ...}``), oldest first."""
    return _run(_events(redis_url, ref))


def attached_pids(redis_url: str, ref: str) -> list[int]:
    """pids of the workers that attached ``ref``, oldest first (the ledger's events)."""
    return _run(_attached(redis_url, ref))


def holder_pid(redis_url: str, ref: str) -> int | None:
    """pid of the worker holding ``ref``'s writer lease: the ``worker`` (``host:pid``) of
    the latest ``attached`` event, if a lease is live (sync wrapper, own event loop)."""
    return _run(_holder(redis_url, ref))[0]


async def _record(redis_url: str, ref: str) -> UploadRecord | None:
    lg = _ledger(redis_url)
    try:
        return await lg.get(ref)
    finally:
        await lg.close()


def record(redis_url: str, ref: str) -> UploadRecord | None:
    return _run(_record(redis_url, ref))
