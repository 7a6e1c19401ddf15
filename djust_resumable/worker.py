"""The identity of this worker process in log lines, ledger events and the sweeper's claims:
``<hostname>:<pid>``."""

from __future__ import annotations

import os
import socket

_cached: tuple[int, str] | None = None


def worker_id() -> str:
    """``<hostname>:<pid>`` of the current process (recomputed after a fork)."""
    global _cached
    pid = os.getpid()
    if _cached is None or _cached[0] != pid:
        _cached = (pid, f"{socket.gethostname()}:{pid}")
    return _cached[1]
