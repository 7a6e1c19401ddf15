"""The production topology on free ports, for takeover and fault tests through nginx.

``cluster`` (module scope) starts: a private redis-server with AOF, the session's moto_server
behind the fault-injecting S3 proxy (``s3_fault_proxy.py``), three uvicorn processes of the
example project (one process each) and nginx running ``deploy/nginx/djust_resumable.conf``
rendered with these ports by ``deploy/local_cluster.py``. Every client talks to nginx.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import os
import re
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import redis.asyncio as aioredis
from django.conf import settings as dj

from djust_resumable.client import ResumableUploader, _Retry
from djust_resumable.conf import get_settings
from djust_resumable.ledger import Ledger
from djust_resumable.tokens import UploadGrant, mint_token
from tests.conftest import MotoServer, RedisServer
from tests.helpers import free_port, wait_for_port
from tests.integration.conftest import Worker

ROOT = Path(__file__).resolve().parents[2]
FAULTS = Path(__file__).resolve().parent
#: Short leases so a killed worker's uploads move on within seconds; a generous handover
#: wait because the holder's spill goes through the S3 proxy on a busy 2-core machine.
CLUSTER_SETTINGS: dict[str, Any] = {"LEASE_TTL": 3, "HANDOVER_TIMEOUT": 5}
LONG = os.environ.get("DJR_FAULTS", "") == "long"


def load_local_cluster() -> ModuleType:
    """deploy/local_cluster.py (a script) as a module: the nginx rendering is shared."""
    name = "djr_local_cluster"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROOT / "deploy" / "local_cluster.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


class RecordingUploader(ResumableUploader):
    """The real client, also noting every typed error and close code it met (for reports)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.seen: list[str] = []

    async def _recv(self, ws: Any, sender: Any = None) -> dict[str, Any]:
        from websockets.exceptions import ConnectionClosed

        try:
            return await super()._recv(ws, sender)
        except _Retry as exc:
            self.seen.append(str(exc.args[0]))
            raise
        except ConnectionClosed as exc:
            self.seen.append(f"close:{exc.rcvd.code if exc.rcvd else 'none'}")
            raise


@dataclass
class Cluster:
    redis: RedisServer
    moto: MotoServer
    s3: Any  # boto3 client talking to moto directly (not through the fault proxy)
    bucket: str
    s3_proxy_url: str
    workers: list[Worker]
    nginx_port: int
    nginx_proc: subprocess.Popen[bytes]
    nginx_prefix: Path
    env: dict[str, str]
    grant: UploadGrant = field(default_factory=lambda: UploadGrant(
        session=os.urandom(8).hex(), user="7", view="faults", slot="files",
        max_file_size=1 << 40))

    @property
    def endpoint_path(self) -> str:
        return get_settings().ENDPOINT_PATH

    @property
    def url(self) -> str:
        """The upload WebSocket through nginx."""
        return f"ws://127.0.0.1:{self.nginx_port}{self.endpoint_path}"

    def token(self) -> str:
        return mint_token(self.grant)

    def ledger(self) -> Ledger:
        return Ledger(aioredis.Redis.from_url(self.redis.url), get_settings())

    def ensure_workers(self) -> None:
        """Restart any worker a previous trial killed (same port, so nginx finds it)."""
        for w in self.workers:
            if not w.alive():
                w.start()

    def worker_by_pid(self, pid: int) -> Worker:
        for w in self.workers:
            if w.proc is not None and w.proc.pid == pid:
                return w
        raise LookupError(f"no worker with pid {pid}")

    async def holder(self, ledger: Ledger, ref: str) -> Worker:
        """The worker of the latest ``attached`` event of ``ref`` (its ``worker`` field is
        ``host:pid``)."""
        for e in reversed(await ledger.events(ref)):
            if e["event"] == "attached":
                return self.worker_by_pid(int(str(e["worker"]).rsplit(":", 1)[1]))
        # The timeline keeps its last 200 events: on a big upload part_stored events push
        # the attach out. The workers' own log lines (timestamped, with the pid) remain.
        latest: tuple[str, int] | None = None
        for w in self.workers:
            for m in re.finditer(rf"^(\S+ \S+) \d+ djust_resumable INFO attached ref={ref} "
                                 r".*? worker=\S+:(\d+) ", w.log_text(), re.M):
                if latest is None or m.group(1) > latest[0]:
                    latest = (m.group(1), int(m.group(2)))
        if latest is None:
            raise LookupError(f"{ref} never attached")
        return self.worker_by_pid(latest[1])

    async def attach_workers(self, ledger: Ledger, ref: str) -> list[int]:
        """pids of the workers of every ``attached`` event, in order."""
        return [int(str(e["worker"]).rsplit(":", 1)[1]) for e in await ledger.events(ref)
                if e["event"] == "attached"]

    def s3_faults(self, rate: float | None = None) -> dict[str, Any]:
        """Set (when ``rate`` is given) and read the S3 proxy's fault counters."""
        url = f"{self.s3_proxy_url}/__faults__"
        req = (urllib.request.Request(f"{url}?rate={rate}", data=b"", method="POST")
               if rate is not None else urllib.request.Request(url))
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read())

    def sweep(self) -> dict[str, Any]:
        """``manage.py resumable_sweep --grace 0 --json`` as an operator runs it, with the
        workers' settings; returns its report."""
        done = subprocess.run(
            [sys.executable, str(ROOT / "example" / "manage.py"), "resumable_sweep",
             "--grace", "0", "--json"], cwd=ROOT, env=self.env, capture_output=True,
            text=True, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
        return json.loads(done.stdout[done.stdout.index("{"):])

    def leftovers(self) -> tuple[list[str], list[str]]:
        """(multipart uploads still open, spilled tail objects) in the bucket."""
        uploads = [f"{u['Key']} {u['UploadId']}" for u in
                   self.s3.list_multipart_uploads(Bucket=self.bucket).get("Uploads", []) or []]
        tails = [o["Key"] for p in self.s3.get_paginator("list_objects_v2").paginate(
                 Bucket=self.bucket, Prefix="resumable/.tails/") for o in p.get("Contents", [])]
        return uploads, tails

    def delete_object(self, key: str) -> None:
        """Free moto's memory between trials."""
        self.s3.delete_object(Bucket=self.bucket, Key=key)


def _start_nginx(prefix: Path, port: int, upstream_ports: list[int]) -> subprocess.Popen[bytes]:
    lc = load_local_cluster()
    try:
        lc.nginx_binary()
    except RuntimeError as exc:
        pytest.fail(str(exc))
    conf = lc.render_nginx(prefix, port, upstream_ports)
    check = subprocess.run([*lc.nginx_command(prefix, conf), "-t", "-q"], capture_output=True,
                           text=True)
    assert check.returncode == 0, check.stderr
    log = open(prefix / "logs" / "stdout.log", "ab")  # noqa: SIM115 - handed to the child
    try:
        proc = subprocess.Popen(lc.nginx_command(prefix, conf), stdout=log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    finally:
        log.close()
    wait_for_port(port, timeout=20)
    return proc


@contextlib.contextmanager
def topology(base: Path, moto_server: MotoServer, s3_client: Any,
             **settings: Any) -> Iterator[Cluster]:
    """Start the whole topology under ``base``; ``settings`` are added to the workers'
    ``DJUST_RESUMABLE`` (over ``CLUSTER_SETTINGS``). Everything is stopped on exit."""
    redis = RedisServer(base / "redis", aof=True).start()
    bucket = f"djr-faults-{uuid.uuid4().hex[:12]}"
    s3_client.create_bucket(Bucket=bucket)
    procs: list[subprocess.Popen[bytes]] = []
    workers: list[Worker] = []
    try:
        proxy_port = free_port()
        log = open(base / "s3_proxy.log", "ab")  # noqa: SIM115
        try:
            procs.append(subprocess.Popen(
                [sys.executable, str(FAULTS / "s3_fault_proxy.py"), "--upstream",
                 moto_server.url, "--port", str(proxy_port), "--seed", "5"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL))
        finally:
            log.close()
        wait_for_port(proxy_port, timeout=20)
        s3_proxy_url = f"http://127.0.0.1:{proxy_port}"
        env = {**os.environ,
               "DJANGO_SETTINGS_MODULE": "project.settings",
               "DJANGO_SECRET_KEY": dj.SECRET_KEY,
               "DJR_REDIS_URL": redis.url,
               "AWS_S3_ENDPOINT_URL": s3_proxy_url,
               "AWS_STORAGE_BUCKET_NAME": bucket,
               "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
               "DJR_DB_PATH": str(base / "db.sqlite3"),
               "DJR_SETTINGS_JSON": json.dumps({**CLUSTER_SETTINGS, **settings}),
               "PYTHONUNBUFFERED": "1"}
        for i in range(3):
            workers.append(Worker(port=free_port(), env=env,
                                  log_path=base / f"worker-{i + 1}.log").start())
        nginx_port = free_port()
        nginx = _start_nginx(base / "nginx", nginx_port, [w.port for w in workers])
        procs.append(nginx)
        yield Cluster(redis=redis, moto=moto_server, s3=s3_client, bucket=bucket,
                      s3_proxy_url=s3_proxy_url, workers=workers, nginx_port=nginx_port,
                      nginx_proc=nginx, nginx_prefix=base / "nginx", env=env)
    finally:
        for w in workers:
            w.kill()
        for p in reversed(procs):
            p.terminate()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(10)
        redis.stop()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, moto_server: MotoServer,
            s3_client: Any) -> Iterator[Cluster]:
    with topology(tmp_path_factory.mktemp("cluster"), moto_server, s3_client) as c:
        yield c


@pytest.fixture
def fresh(cluster: Cluster) -> Cluster:
    """The cluster with every worker running and S3 faults off."""
    cluster.ensure_workers()
    cluster.s3_faults(rate=0.0)
    if cluster.redis.proc is None:
        cluster.redis.start()
    return cluster


def in_sender() -> bool:
    """True when called from the client's frame-sending task (``on_progress`` also runs
    from its receive loop, on acks): pausing there really pauses the bytes."""
    task = asyncio.current_task()
    return task is not None and task.get_coro().__qualname__.endswith("._send_all")


async def wait_for(pred: Any, timeout: float = 30.0, step: float = 0.1) -> None:
    """Await until ``pred()`` (sync or async) is truthy; TimeoutError after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        r = pred()
        if asyncio.iscoroutine(r):
            r = await r
        if r:
            return
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        await asyncio.sleep(step)


async def check_stored(c: Cluster, ledger: Ledger, ref: str, src: Path) -> Any:
    """The record is complete, the stored object's sha256 and size equal the source's and
    every part but the last has exactly the part size; returns the record."""
    from tests.helpers import sha256_file
    from tests.integration.conftest import object_sha256

    rec = await ledger.get(ref)
    assert rec is not None and rec.state == "complete", rec
    assert object_sha256(c.s3, c.bucket, rec.key) == (sha256_file(src), rec.size)
    parts = await ledger.parts(ref)
    assert [p.size for p in parts[:-1]] == [rec.part_size] * (len(parts) - 1)
    return rec


def assert_swept_clean(c: Cluster) -> dict[str, Any]:
    """Run the sweeper (grace 0); then no multipart upload and no spilled tail may remain."""
    report = c.sweep()
    assert not report["errors"], report
    uploads, tails = c.leftovers()
    assert uploads == [] and tails == [], (uploads, tails, report)
    return report
