"""Sync and async access to the ledger from djust view code, on a dedicated event loop.

djust runs sync event handlers (and ``mount``) in a worker thread through ``sync_to_async``
and async handlers directly on the server's event loop. The ledger is ``redis.asyncio``,
whose connections belong to the loop that opened them, so the view side never uses the
server's loop for it: every ledger/storage call of the mixin runs on one background loop per
process (a daemon thread), which owns its own ``Ledger``.

* :func:`run` — for sync code (a handler thread, a management command, a test): submits the
  coroutine to the bridge loop and waits. Refuses to run on a thread whose event loop is
  running (it would block that loop): async code must use :func:`arun`.
* :func:`arun` — for async code: awaits the result without blocking the caller's loop.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from .conf import ResumableSettings, get_settings

T = TypeVar("T")


class BlockingCallInAsyncContext(RuntimeError):
    """A sync API (``consume_uploaded_entries``, ``get_uploads``, ``entry.save`` ...) was
    called on a thread running an event loop; use the ``a``-prefixed async variant."""


_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None
_thread: threading.Thread | None = None
_pid: int | None = None
_services: dict[ResumableSettings, Any] = {}


def _ensure_loop() -> asyncio.AbstractEventLoop:
    global _loop, _thread, _pid
    with _lock:
        if _loop is None or _pid != os.getpid() or _thread is None or not _thread.is_alive():
            loop = asyncio.new_event_loop()
            ready = threading.Event()

            def main() -> None:
                asyncio.set_event_loop(loop)
                loop.call_soon(ready.set)
                loop.run_forever()

            t = threading.Thread(target=main, name="djust-resumable-bridge", daemon=True)
            t.start()
            ready.wait()
            _loop, _thread, _pid = loop, t, os.getpid()
            _services.clear()
        return _loop


def run(fn: Callable[..., Awaitable[T]], *args: Any, what: str = "this call") -> T:
    """Run ``fn(*args)`` on the bridge loop and wait for its result (sync callers only)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        raise BlockingCallInAsyncContext(
            f"{what} blocks and was called from a running event loop (an async handler?); "
            f"use its async variant (prefixed with 'a'), e.g. "
            f"`async for entry in self.aconsume_uploaded_entries(name)`")
    loop = _ensure_loop()
    return asyncio.run_coroutine_threadsafe(_call(fn, *args), loop).result()


async def arun(fn: Callable[..., Awaitable[T]], *args: Any) -> T:
    """Run ``fn(*args)`` on the bridge loop; await it from any other loop."""
    loop = _ensure_loop()
    if asyncio.get_running_loop() is loop:
        return await fn(*args)
    return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(_call(fn, *args), loop))


async def _call(fn: Callable[..., Awaitable[T]], *args: Any) -> T:
    return await fn(*args)


def service(settings: ResumableSettings | None = None) -> Any:
    """The ``UploadService`` of the bridge loop for ``settings`` (call on the bridge loop)."""
    from .ledger import Ledger
    from .service import UploadService
    from .sinks import get_sink

    settings = settings or get_settings()
    svc = _services.get(settings)
    if svc is None:
        svc = UploadService(Ledger.from_settings(settings), get_sink(settings), settings)
        _services[settings] = svc
    else:
        # The sink cache may have been cleared (settings change, tests): follow it.
        svc.sink = get_sink(settings)
    return svc
