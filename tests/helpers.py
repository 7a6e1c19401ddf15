"""Generic test helpers (no fixtures here; see conftest.py)."""

from __future__ import annotations

import hashlib
import os
import random
import socket
import time
from pathlib import Path

MiB = 1024 * 1024


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_for_port(port: int, host: str = "127.0.0.1", timeout: float = 20.0) -> None:
    """Block until something accepts TCP connections on ``host:port``.
    Raises TimeoutError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listening on {host}:{port} after {timeout}s") from None
            time.sleep(0.05)


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(MiB):
            h.update(block)
    return h.hexdigest()


def sha256_bytes(data: bytes | bytearray | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()


def make_random_file(path: str | os.PathLike[str], size: int, seed: int | None = None) -> Path:
    """Write ``size`` random bytes to ``path`` in 1 MiB blocks (never the whole file in memory).
    With ``seed`` the content is reproducible. Returns the path."""
    rng = random.Random(seed) if seed is not None else None
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with open(p, "wb") as f:
        left = size
        while left > 0:
            n = min(MiB, left)
            f.write(rng.randbytes(n) if rng else os.urandom(n))
            left -= n
    return p
