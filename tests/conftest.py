"""Shared fixtures: REAL redis-server and moto_server processes on free ports.

Never mock boto3 or redis-py: these fixtures start the real servers (project rule, "Test
servers"). Django is configured here (pytest-django is not used) before any test module
imports project code.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")

import django  # noqa: E402

django.setup()

import pytest  # noqa: E402

from tests.helpers import free_port, wait_for_port  # noqa: E402

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
VENV_BIN = Path(sys.executable).parent
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


# --------------------------------------------------------------------------- redis


class RedisServer:
    """A redis-server subprocess. ``aof=True`` turns on ``appendonly yes`` with
    ``appendfsync always`` so data survives ``restart()`` (and ``kill()`` + ``start()``)."""

    host = "127.0.0.1"

    def __init__(self, directory: Path, port: int | None = None, aof: bool = False) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.aof = aof
        self.log_path = self.dir / "redis.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def start(self, timeout: float = 20.0) -> RedisServer:
        if not os.path.exists(REDIS_SERVER):
            pytest.fail("redis-server not installed: run `make setup` (installs it with apt)")
        args = [REDIS_SERVER, "--port", str(self.port), "--bind", self.host, "--dir",
                str(self.dir), "--save", "", "--protected-mode", "no", "--daemonize", "no"]
        if self.aof:
            args += ["--appendonly", "yes", "--appendfsync", "always"]
        else:
            args += ["--appendonly", "no"]
        self._spawn(args, timeout)
        return self

    def _spawn(self, args: list[str], timeout: float) -> None:
        """Start ``args`` (a redis-server command line) logging to ``log_path``; wait until
        it answers PING. Subclasses (cluster nodes, configured servers) build other args."""
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        try:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL)
        finally:
            log.close()
        self._wait_ping(timeout)

    def _wait_ping(self, timeout: float) -> None:
        import socket

        deadline = time.monotonic() + timeout
        while True:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited; see {self.log_path}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(64).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"redis-server on {self.port} did not answer PING")
            time.sleep(0.05)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
        """Stop the server (SIGTERM: clean shutdown; pass SIGKILL to simulate a crash)."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def restart(self, sig: int = signal.SIGTERM) -> RedisServer:
        """Stop, then start again on the same port and directory (AOF data is reloaded)."""
        self.stop(sig)
        return self.start()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One throwaway redis-server (no persistence) for the session: ``.url``, ``.host``,
    ``.port``. Tests share it: use unique key prefixes or flush in your own fixture."""
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_factory(tmp_path: Path) -> Iterator[Callable[..., RedisServer]]:
    """``redis_factory(aof=True)`` starts a private redis-server (AOF, ``appendfsync always``
    when ``aof``) that supports ``.restart()``, ``.kill()``, ``.stop()``; all are stopped at
    the end of the test."""
    started: list[RedisServer] = []

    def make(aof: bool = True, port: int | None = None) -> RedisServer:
        server = RedisServer(tmp_path / f"redis-{len(started)}", port=port, aof=aof)
        started.append(server)
        return server.start()

    try:
        yield make
    finally:
        for s in started:
            s.stop()


# --------------------------------------------------------------------------- moto (S3)


@dataclass
class MotoServer:
    url: str
    port: int
    log_path: Path
    proc: subprocess.Popen[bytes]
    host: str = "127.0.0.1"

    def log_lines(self) -> list[str]:
        """werkzeug's access log, one line per request, colour codes removed. Lines look like
        ``127.0.0.1 - - [date] "POST /bucket/key?uploadId=... HTTP/1.1" 200 -``."""
        text = self.log_path.read_text(errors="replace")
        return [_ANSI.sub("", line) for line in text.splitlines()]

    def count_requests(self, method: str, pattern: str = "") -> int:
        """Requests with HTTP ``method`` whose request line matches regex ``pattern``."""
        rx = re.compile(rf'"{re.escape(method)} (\S*) HTTP/')
        n = 0
        for line in self.log_lines():
            m = rx.search(line)
            if m and re.search(pattern, m.group(1)):
                n += 1
        return n

    def count_complete_multipart(self, bucket: str | None = None) -> int:
        """CompleteMultipartUpload requests so far (``POST /<bucket>/<key>?uploadId=...``).
        CreateMultipartUpload is ``POST ...?uploads`` and is not counted."""
        prefix = f"/{re.escape(bucket)}/" if bucket else "/"
        return self.count_requests("POST", rf"^{prefix}.*[?&]uploadId=")


def _moto_binary() -> str:
    exe = VENV_BIN / "moto_server"
    if exe.exists():
        return str(exe)
    found = shutil.which("moto_server")
    if not found:
        pytest.fail("moto_server not installed: run `make setup`")
    return found


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    """A real ``moto_server`` process (S3 API over HTTP) for the session: ``.url``, ``.port``,
    ``.log_path`` (its access log: every request line is written, unbuffered),
    ``.count_requests(method, pattern)``, ``.count_complete_multipart(bucket)``."""
    port = free_port()
    log_path = tmp_path_factory.mktemp("moto") / "moto_server.log"
    env = dict(os.environ, PYTHONUNBUFFERED="1", AWS_ACCESS_KEY_ID="testing",
               AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1")
    log = open(log_path, "ab")  # noqa: SIM115 - handed to the child
    try:
        proc = subprocess.Popen([_moto_binary(), "-H", "127.0.0.1", "-p", str(port)],
                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=env)
    finally:
        log.close()
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_port(port, timeout=30)
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(url + "/", timeout=2).close()
                break
            except urllib.error.HTTPError:
                break  # any HTTP answer means it serves
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto_server did not start; see {log_path}") from None
                time.sleep(0.1)
        yield MotoServer(url=url, port=port, log_path=log_path, proc=proc)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


@pytest.fixture(scope="session")
def s3_client(moto_server: MotoServer) -> Any:
    """A real boto3 S3 client talking to the session's moto_server."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3", endpoint_url=moto_server.url, region_name="us-east-1",
        aws_access_key_id="testing", aws_secret_access_key="testing",
        config=Config(retries={"mode": "standard", "max_attempts": 3}))


@pytest.fixture
def s3_bucket(s3_client: Any) -> Iterator[str]:
    """A fresh, uniquely named bucket on moto; yields its name. Emptied and deleted afterwards
    (moto keeps objects in memory)."""
    name = f"djr-test-{uuid.uuid4().hex[:16]}"
    s3_client.create_bucket(Bucket=name)
    try:
        yield name
    finally:
        try:
            for u in s3_client.list_multipart_uploads(Bucket=name).get("Uploads", []) or []:
                s3_client.abort_multipart_upload(Bucket=name, Key=u["Key"],
                                                 UploadId=u["UploadId"])
            for page in s3_client.get_paginator("list_objects_v2").paginate(Bucket=name):
                for obj in page.get("Contents", []) or []:
                    s3_client.delete_object(Bucket=name, Key=obj["Key"])
            s3_client.delete_bucket(Bucket=name)
        except Exception:  # cleanup only; the server dies with the session anyway
            pass


class DjangoS3Settings:
    """Applied Django settings pointing django-storages (and so the S3 sink) at moto.

    ``.bucket``, ``.endpoint_url``; call ``configure(**djust_resumable_overrides)`` to change
    ``DJUST_RESUMABLE`` (the sink cache is cleared each time); ``.settings()`` returns the
    effective ``ResumableSettings``."""

    def __init__(self, endpoint_url: str, bucket: str) -> None:
        self.endpoint_url = endpoint_url
        self.bucket = bucket
        self._override: Any = None

    def configure(self, **djust_resumable: Any) -> DjangoS3Settings:
        from django.test.utils import override_settings

        from djust_resumable.sinks import clear_sink_cache

        self.undo()
        self._override = override_settings(
            AWS_S3_ENDPOINT_URL=self.endpoint_url,
            AWS_STORAGE_BUCKET_NAME=self.bucket,
            AWS_ACCESS_KEY_ID="testing",
            AWS_SECRET_ACCESS_KEY="testing",
            AWS_S3_REGION_NAME="us-east-1",
            DJUST_RESUMABLE={"SINK": "s3", **djust_resumable},
        )
        self._override.enable()
        clear_sink_cache()
        return self

    __call__ = configure

    def settings(self) -> Any:
        from djust_resumable.conf import get_settings

        return get_settings()

    def undo(self) -> None:
        from djust_resumable.sinks import clear_sink_cache

        if self._override is not None:
            self._override.disable()
            self._override = None
            clear_sink_cache()


@pytest.fixture
def django_s3_settings(moto_server: MotoServer, s3_bucket: str) -> Iterator[DjangoS3Settings]:
    """Django settings aimed at moto and a fresh bucket (AWS_* + ``DJUST_RESUMABLE={"SINK":
    "s3"}``), already applied; ``django_s3_settings(**overrides)`` re-applies with
    ``DJUST_RESUMABLE`` overrides. Restored (and the get_sink cache cleared) afterwards."""
    helper = DjangoS3Settings(moto_server.url, s3_bucket).configure()
    try:
        yield helper
    finally:
        helper.undo()
