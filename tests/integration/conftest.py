"""ASGI worker processes of the example project (real uvicorn, real sockets) and helpers to
read the ledger and the bucket from the test process."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from django.conf import settings as dj

from djust_resumable.conf import get_settings
from djust_resumable.ledger import Ledger
from djust_resumable.tokens import UploadGrant, mint_token
from tests.helpers import free_port, wait_for_port

ROOT = Path(__file__).resolve().parents[2]

# Test defaults: short leases so a killed worker's lease expires within seconds.
SERVER_DEFAULTS: dict[str, Any] = {"LEASE_TTL": 3, "HANDOVER_TIMEOUT": 1.5}


@dataclass
class Worker:
    port: int
    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    logs: list[Path] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}{get_settings().ENDPOINT_PATH}"

    def start(self) -> Worker:
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "project.asgi:application", "--app-dir",
             str(ROOT / "example"), "--host", "127.0.0.1", "--port", str(self.port),
             "--ws", "websockets-sansio", "--ws-per-message-deflate", "false",
             "--ws-max-size", str(32 * 1024 * 1024), "--lifespan", "off",
             "--log-level", "warning"],
            cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        wait_for_port(self.port, timeout=30)
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.alive():
            assert self.proc is not None
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")


@pytest.fixture
def workers(redis_server, moto_server, s3_bucket, tmp_path
            ) -> Iterator[Callable[..., list[Worker]]]:
    """``workers(n, redis=None, channel_redis=None, **settings)`` starts ``n`` uvicorn
    processes of the example project sharing one Redis and one bucket; all are killed at
    teardown. ``channel_redis`` gives the channel layer its own Redis (needed when ``redis``
    is a cluster: channels-redis cannot use one)."""
    started: list[Worker] = []

    def start(n: int = 1, redis: Any = None, channel_redis: Any = None,
              **overrides: Any) -> list[Worker]:
        conf = {**SERVER_DEFAULTS, **overrides}
        env = {**os.environ,
               "DJANGO_SETTINGS_MODULE": "project.settings",
               "DJANGO_SECRET_KEY": dj.SECRET_KEY,
               "DJR_REDIS_URL": (redis or redis_server).url,
               "DJR_CHANNEL_REDIS_URL": (channel_redis or redis or redis_server).url,
               "AWS_S3_ENDPOINT_URL": moto_server.url,
               "AWS_STORAGE_BUCKET_NAME": s3_bucket,
               "DJR_DB_PATH": str(tmp_path / "db.sqlite3"),
               "DJR_SETTINGS_JSON": json.dumps(conf),
               "PYTHONUNBUFFERED": "1"}
        out = []
        for _ in range(n):
            w = Worker(port=free_port(), env=env,
                       log_path=tmp_path / f"worker-{len(started)}.log")
            started.append(w.start())
            out.append(w)
        return out

    yield start
    for w in started:
        w.kill()


@pytest.fixture
def grant() -> UploadGrant:
    return UploadGrant(session=os.urandom(8).hex(), user="7", view="tests", slot="files",
                       max_file_size=1 << 40)


@pytest.fixture
def token(grant: UploadGrant) -> str:
    return mint_token(grant)


@pytest.fixture
def ledger_reader(redis_server):
    """``ledger_reader(url=None)`` -> a coroutine-friendly Ledger on the given Redis."""
    made: list[Ledger] = []

    def make(url: str | None = None) -> Ledger:
        lg = Ledger(aioredis.Redis.from_url(url or redis_server.url), get_settings())
        made.append(lg)
        return lg

    yield make
    for lg in made:
        try:
            asyncio.run(lg.close())
        except RuntimeError:
            pass


def object_sha256(s3_client, bucket: str, key: str) -> tuple[str, int]:
    """sha256 and size of a stored object, streamed (never whole in memory)."""
    body = s3_client.get_object(Bucket=bucket, Key=key)["Body"]
    h = hashlib.sha256()
    n = 0
    for chunk in body.iter_chunks(1024 * 1024):
        h.update(chunk)
        n += len(chunk)
    return h.hexdigest(), n


def wait_until(pred: Callable[[], bool], timeout: float = 20.0, step: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        time.sleep(step)
