"""Throughput benchmark: raw boto3 multipart vs. our upload endpoint, against moto_server.

One run starts its own redis-server and moto_server (free ports), then for every size:

(a) raw boto3 multipart upload of the test file, 8 MiB parts, at 1 and at 4 concurrent
    UploadPart calls (ThreadPoolExecutor), with per-part CRC32C and a FULL_OBJECT checksum at
    completion like our sink; boto3's defaults sign every part's SHA-256 over plain HTTP, so
    c=4 also runs with payload signing off (our streamed parts are unsigned, CRC32C in a
    trailer).
    streaming = first UploadPart start -> last UploadPart done; completion =
    CompleteMultipartUpload. The fastest raw streaming of the run is the ceiling.
(b) the same file through our endpoint (a fresh uvicorn process of example/project per
    upload, ``--ws websockets-sansio --ws-per-message-deflate false``) with ``ResumableUploader``,
    once per PARTS_IN_FLIGHT value (default 1 and 2, passed via DJR_SETTINGS_JSON).
    streaming = first frame sent -> durable == size (on_progress); completion = durable == size
    -> ``done`` received (the client has sent ``finish`` by then: it sends it right after the
    last frame, and the server completes once the last part is durable).
(c) the uvicorn process RSS, sampled with psutil every 0.1 s: baseline right before the upload
    (after a 1 MiB warm-up upload, so imports, the boto3 client and Redis pools exist), max
    during the upload, growth = max - baseline.

Usage:  .venv/bin/python bench/throughput.py --sizes 1G,4G
Results: a table on stdout and bench/out/throughput-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import json
import os
import platform
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB

# --------------------------------------------------------------------------- processes

_children: list[subprocess.Popen[bytes]] = []
WS_IMPL = ["websockets-sansio"]  # uvicorn --ws value, set from --ws


def _cleanup() -> None:
    for p in reversed(_children):
        if p.poll() is None:
            p.terminate()
    for p in reversed(_children):
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(10)
    _children.clear()


def _on_signal(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


atexit.register(_cleanup)
signal.signal(signal.SIGTERM, _on_signal)


def spawn(
    args: list[str], log_path: Path, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.Popen[bytes]:
    log = open(log_path, "ab")  # noqa: SIM115 - handed to the child
    try:
        p = subprocess.Popen(
            args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, cwd=cwd
        )
    finally:
        log.close()
    _children.append(p)
    return p


def stop(p: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    if p.poll() is None:
        p.terminate()
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout)
    if p in _children:
        _children.remove(p)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(f"process {proc.args[0]} exited early") from None
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listening on port {port}") from None
            time.sleep(0.05)


def start_redis(workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    exe = shutil.which("redis-server") or "/usr/bin/redis-server"
    port = free_port()
    d = workdir / "redis"
    d.mkdir(parents=True, exist_ok=True)
    p = spawn(
        [
            exe,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(d),
            "--save",
            "",
            "--appendonly",
            "no",
            "--protected-mode",
            "no",
            "--daemonize",
            "no",
        ],
        workdir / "redis.log",
    )
    wait_for_port(port, p)
    return p, f"redis://127.0.0.1:{port}/0"


def start_moto(workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    exe = VENV_BIN / "moto_server"
    port = free_port()
    env = dict(
        os.environ,
        PYTHONUNBUFFERED="1",
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
    )
    p = spawn(
        [str(exe) if exe.exists() else "moto_server", "-H", "127.0.0.1", "-p", str(port)],
        workdir / "moto_server.log",
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    wait_for_port(port, p)
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(url + "/", timeout=2).close()
            break
        except urllib.error.HTTPError:
            break
        except OSError:
            if p.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("moto_server did not start") from None
            time.sleep(0.1)
    return p, url


def start_uvicorn(
    workdir: Path, label: str, env_extra: dict[str, str]
) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    env = {**os.environ, **env_extra, "PYTHONUNBUFFERED": "1"}
    p = spawn(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "project.asgi:application",
            "--app-dir",
            str(ROOT / "example"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--ws",
            WS_IMPL[0],
            "--ws-per-message-deflate",
            "false",
            "--ws-max-size",
            str(32 * MiB),
            "--lifespan",
            "off",
            "--log-level",
            "warning",
        ],
        workdir / f"uvicorn-{label}.log",
        env=env,
        cwd=ROOT,
    )
    wait_for_port(port, p)
    return p, port


# --------------------------------------------------------------------------- sampling


class Sampler:
    """Samples RSS (bytes) of some processes every ``interval`` seconds in a thread."""

    def __init__(self, procs: dict[str, int], interval: float = 0.1) -> None:
        self.procs = {k: psutil.Process(pid) for k, pid in procs.items()}
        self.interval = interval
        self.samples: dict[str, list[tuple[float, int]]] = {k: [] for k in procs}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            t = time.monotonic()
            for k, p in self.procs.items():
                try:
                    self.samples[k].append((t, p.memory_info().rss))
                except psutil.Error:
                    pass
            self._stop.wait(self.interval)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()

    def max(self, k: str) -> int:
        return max((v for _, v in self.samples[k]), default=0)


def cpu_seconds(pids: dict[str, int]) -> dict[str, float]:
    """user+sys CPU seconds so far, per process (threads included)."""
    out = {}
    for k, pid in pids.items():
        try:
            t = psutil.Process(pid).cpu_times()
            out[k] = t.user + t.system
        except psutil.Error:
            out[k] = float("nan")
    return out


def cpu_delta(a: dict[str, float], b: dict[str, float]) -> dict[str, float]:
    return {k: round(b[k] - a[k], 2) for k in a}


def baseline_rss(pid: int, seconds: float = 1.0, interval: float = 0.1) -> int:
    p = psutil.Process(pid)
    vals = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        vals.append(p.memory_info().rss)
        time.sleep(interval)
    return int(statistics.median(vals))


# --------------------------------------------------------------------------- test data


def parse_size(s: str) -> int:
    s = s.strip().upper().removesuffix("B").removesuffix("I")
    mult = {"K": KiB, "M": MiB, "G": GiB, "T": 1024 * GiB}
    if s and s[-1] in mult:
        return int(float(s[:-1]) * mult[s[-1]])
    return int(s)


def fmt_size(n: int) -> str:
    for unit, m in (("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if n >= m and n % m == 0:
            return f"{n // m} {unit}"
    return f"{n} B"


def ensure_file(data_dir: Path, size: int) -> tuple[Path, int]:
    """A random file of ``size`` bytes (generated once, 1 MiB at a time) and its CRC32C
    (cached next to it)."""
    import google_crc32c

    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / f"random-{size}.bin"
    crc_path = path.with_suffix(".crc32c")
    if not path.exists() or path.stat().st_size != size:
        print(f"generating {path} ({fmt_size(size)}) ...", flush=True)
        tmp = path.with_suffix(".tmp")
        with open(tmp, "wb") as f:
            left = size
            while left:
                n = min(MiB, left)
                f.write(os.urandom(n))
                left -= n
        tmp.replace(path)
        crc_path.unlink(missing_ok=True)
    if crc_path.exists():
        return path, int(crc_path.read_text())
    crc = 0
    with open(path, "rb") as f:
        while block := f.read(8 * MiB):
            crc = google_crc32c.extend(crc, block)
    crc_path.write_text(str(crc))
    return path, crc


# --------------------------------------------------------------------------- results


@dataclass
class Run:
    system: str  # "raw c=1", "ours PIF=4", ...
    size: int
    streaming_s: float
    completion_s: float
    part_size: int
    extra: dict[str, Any] = field(default_factory=dict)
    rss_baseline: int | None = None
    rss_max: int | None = None
    rss_cold: int | None = None

    @property
    def streaming_mibs(self) -> float:
        return self.size / MiB / self.streaming_s

    @property
    def total_mibs(self) -> float:
        return self.size / MiB / (self.streaming_s + self.completion_s)

    @property
    def rss_growth(self) -> int | None:
        if self.rss_max is None or self.rss_baseline is None:
            return None
        return self.rss_max - self.rss_baseline

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(
            streaming_mib_s=round(self.streaming_mibs, 1),
            total_mib_s=round(self.total_mibs, 1),
            rss_growth=self.rss_growth,
        )
        return d


def s3_client(endpoint: str, pool: int = 10, unsigned: bool = False) -> Any:
    import boto3
    from botocore.config import Config

    s3: dict[str, Any] = {"addressing_style": "path"}
    if unsigned:
        # Over plain HTTP botocore signs the payload (a SHA-256 of every part) unless told
        # not to; over HTTPS, or with our streamed parts, it does not.
        s3["payload_signing_enabled"] = False

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(
            retries={"mode": "standard", "total_max_attempts": 5},
            max_pool_connections=pool,
            s3=s3,
        ),
    )


def delete_everything(client: Any, bucket: str) -> None:
    for u in client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) or []:
        client.abort_multipart_upload(Bucket=bucket, Key=u["Key"], UploadId=u["UploadId"])
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for obj in page.get("Contents", []) or []:
            client.delete_object(Bucket=bucket, Key=obj["Key"])


# --------------------------------------------------------------------------- (a) raw boto3


def raw_upload(
    endpoint: str,
    bucket: str,
    path: Path,
    size: int,
    file_crc: int,
    part_size: int,
    concurrency: int,
    pids: dict[str, int],
    unsigned: bool = False,
) -> Run:
    import base64

    import google_crc32c

    def b64(crc: int) -> str:
        return base64.b64encode(crc.to_bytes(4, "big")).decode()

    client = s3_client(endpoint, pool=concurrency + 2, unsigned=unsigned)
    key = f"bench/raw-{uuid.uuid4().hex}"
    upload_id = client.create_multipart_upload(
        Bucket=bucket,
        Key=key,
        ContentType="application/octet-stream",
        ChecksumAlgorithm="CRC32C",
        ChecksumType="FULL_OBJECT",
    )["UploadId"]
    ranges = [
        (i + 1, off, min(part_size, size - off)) for i, off in enumerate(range(0, size, part_size))
    ]
    fd = os.open(path, os.O_RDONLY)
    times: list[tuple[float, float]] = []

    def one(num: int, off: int, n: int) -> dict[str, Any]:
        t0 = time.perf_counter()
        body = os.pread(fd, n, off)
        checksum = b64(google_crc32c.value(body))
        resp = client.upload_part(
            Bucket=bucket,
            Key=key,
            UploadId=upload_id,
            PartNumber=num,
            Body=body,
            ChecksumCRC32C=checksum,
        )
        times.append((t0, time.perf_counter()))
        return {"PartNumber": num, "ETag": resp["ETag"], "ChecksumCRC32C": checksum}

    cpu0 = cpu_seconds(pids)
    with Sampler({k: v for k, v in pids.items() if k != "bench"}) as smp:
        try:
            with ThreadPoolExecutor(max_workers=concurrency) as pool:
                parts = list(pool.map(lambda r: one(*r), ranges))
        finally:
            os.close(fd)
        cpu1 = cpu_seconds(pids)
        t_c = time.perf_counter()
        resp = client.complete_multipart_upload(
            Bucket=bucket,
            Key=key,
            UploadId=upload_id,
            MultipartUpload={"Parts": parts},
            ChecksumType="FULL_OBJECT",
            ChecksumCRC32C=b64(file_crc),
        )
        t_done = time.perf_counter()
    cpu2 = cpu_seconds(pids)
    head = client.head_object(Bucket=bucket, Key=key)
    assert head["ContentLength"] == size, head
    start = min(t for t, _ in times)
    end = max(t for _, t in times)
    run = Run(
        system=f"raw boto3 c={concurrency}" + (" unsigned" if unsigned else ""),
        size=size,
        streaming_s=end - start,
        completion_s=t_done - t_c,
        part_size=part_size,
        extra={
            "etag": resp["ETag"],
            "parts": len(parts),
            "cpu_s_streaming": cpu_delta(cpu0, cpu1),
            "cpu_s_completion": cpu_delta(cpu1, cpu2),
            "moto_rss_max": smp.max("moto"),
        },
    )
    client.delete_object(Bucket=bucket, Key=key)
    return run


# --------------------------------------------------------------------------- (b) ours


def mint(secret: str) -> str:
    from django.conf import settings

    if not settings.configured:
        settings.configure(SECRET_KEY=secret, USE_TZ=True)
    from djust_resumable.tokens import UploadGrant, mint_token

    return mint_token(
        UploadGrant(
            session=os.urandom(8).hex(),
            user="bench",
            view="bench",
            slot="files",
            max_file_size=1 << 42,
        )
    )


async def ours_upload_async(
    url: str, token: str, path: Path, size: int
) -> tuple[dict[str, float], dict[str, Any], Any]:
    from djust_resumable.client import ResumableUploader

    marks: dict[str, float] = {}
    ready: dict[str, Any] = {}

    class Uploader(ResumableUploader):
        async def _recv(self, ws, sender=None):  # type: ignore[no-untyped-def]
            msg = await super()._recv(ws, sender)
            if msg.get("type") == "ready":
                ready.update(msg)
                marks.setdefault("ready", time.perf_counter())
            return msg

    def progress(sent: int, durable: int, total: int) -> None:
        t = time.perf_counter()
        if sent > 0:
            marks.setdefault("first_sent", t)
        if sent >= total:
            marks.setdefault("last_sent", t)
        if durable >= total:
            marks.setdefault("durable", t)

    up = Uploader(url, token, on_progress=progress, give_up_after=120)
    marks["call"] = time.perf_counter()
    result = await up.upload(str(path), name=path.name, content_type="application/octet-stream")
    marks["done"] = time.perf_counter()
    return marks, ready, result


#: DJUST_RESUMABLE settings for our server besides PARTS_IN_FLIGHT (--setting KEY=JSON).
EXTRA_SETTINGS: dict[str, Any] = {}


def ours_upload(
    workdir: Path,
    env: dict[str, str],
    pif: int,
    token: str,
    path: Path,
    size: int,
    warm_path: Path,
    pids: dict[str, int],
    endpoint_path: str,
    profile: str | None,
) -> Run:
    label = f"pif{pif}-{fmt_size(size).replace(' ', '')}"
    conf = {**EXTRA_SETTINGS, "PARTS_IN_FLIGHT": pif}
    proc, port = start_uvicorn(workdir, label, {**env, "DJR_SETTINGS_JSON": json.dumps(conf)})
    url = f"ws://127.0.0.1:{port}{endpoint_path}"
    try:
        rss_cold = baseline_rss(proc.pid, 0.5)
        asyncio.run(ours_upload_async(url, token, warm_path, warm_path.stat().st_size))
        base = baseline_rss(proc.pid, 1.0)
        spy = None
        if profile:
            spy = subprocess.Popen(
                [
                    profile,
                    "record",
                    "-p",
                    str(proc.pid),
                    "-r",
                    "100",
                    "--format",
                    "raw",
                    "-o",
                    str(workdir / f"py-spy-{label}.txt"),
                    "--threads",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            _children.append(spy)
            time.sleep(1.0)
        all_pids = {**pids, "uvicorn": proc.pid}
        cpu0 = cpu_seconds(all_pids)
        with Sampler({"uvicorn": proc.pid, "moto": pids["moto"]}) as smp:
            marks, ready, result = asyncio.run(ours_upload_async(url, token, path, size))
        cpu1 = cpu_seconds(all_pids)
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            try:
                spy.wait(30)
            except subprocess.TimeoutExpired:
                spy.kill()
            _children.remove(spy)
        # split CPU into streaming and completion by the sample timestamps is not possible
        # with cumulative counters; report the whole upload.
        return Run(
            system=f"ours PARTS_IN_FLIGHT={pif}"
            + "".join(f" {k}={v}" for k, v in EXTRA_SETTINGS.items()),
            size=size,
            streaming_s=marks["durable"] - marks["first_sent"],
            completion_s=marks["done"] - marks["durable"],
            part_size=int(ready.get("part_size", 0)),
            rss_cold=rss_cold,
            rss_baseline=base,
            rss_max=smp.max("uvicorn"),
            extra={
                "window": ready.get("window"),
                "max_frame": ready.get("max_frame"),
                "open_s": round(marks["first_sent"] - marks["call"], 3),
                "last_sent_to_durable_s": round(marks["durable"] - marks["last_sent"], 3),
                "etag": result.etag,
                "cpu_s_upload": cpu_delta(cpu0, cpu1),
                "connections": result.connections,
                "resume_offsets": result.resume_offsets,
                "bytes_resent": result.bytes_resent,
                "moto_rss_max": smp.max("moto"),
                "rss_samples": len(smp.samples["uvicorn"]),
            },
        )
    finally:
        stop(proc)


# --------------------------------------------------------------------------- report


def mib(n: int | None) -> str:
    return "-" if n is None else f"{n / MiB:.1f}"


def report(runs: list[Run], sizes: list[int]) -> tuple[str, list[dict[str, Any]]]:
    lines = []
    hdr = (
        f"{'size':>7}  {'system':<24} {'stream s':>8} {'stream MiB/s':>12} {'/ceiling':>8} "
        f"{'compl s':>8} {'total MiB/s':>11} {'RSS base':>8} {'RSS max':>8} {'growth':>8}"
    )
    lines += [hdr, "-" * len(hdr)]
    targets: list[dict[str, Any]] = []
    by_size = {s: [r for r in runs if r.size == s] for s in sizes}
    for s, rs in by_size.items():
        raws = [r for r in rs if r.system.startswith("raw")]
        ceiling = max((r.streaming_mibs for r in raws), default=None)
        for r in rs:
            ratio = f"{r.streaming_mibs / ceiling:.2f}" if ceiling else "-"
            name = r.system
            if r.extra.get("connections", 1) != 1:
                name += f" [{r.extra['connections']} conns]"
            lines.append(
                f"{fmt_size(s):>7}  {name:<24} {r.streaming_s:8.2f} "
                f"{r.streaming_mibs:12.1f} {ratio:>8} {r.completion_s:8.2f} "
                f"{r.total_mibs:11.1f} {mib(r.rss_baseline):>8} {mib(r.rss_max):>8} "
                f"{mib(r.rss_growth):>8}"
            )
        if not raws:
            continue
        raw_compl = statistics.mean(r.completion_s for r in raws)
        for r in rs:
            if r.system.startswith("raw"):
                continue
            ratio = r.streaming_mibs / ceiling
            targets.append(
                {
                    "size": s,
                    "system": r.system,
                    "target": "streaming >= 0.9 x ceiling",
                    "value": f"{ratio:.2f}",
                    "pass": ratio >= 0.9,
                }
            )
            targets.append(
                {
                    "size": s,
                    "system": r.system,
                    "target": "completion <= raw completion (mean) + 1 s",
                    "value": f"{r.completion_s:.2f} s vs {raw_compl:.2f} + 1 s",
                    "pass": r.completion_s <= raw_compl + 1.0,
                }
            )
            g = r.rss_growth or 0
            targets.append(
                {
                    "size": s,
                    "system": r.system,
                    "target": "RSS growth <= 2 x part size",
                    "value": f"{g / MiB:.1f} MiB vs {2 * r.part_size / MiB:.0f} MiB",
                    "pass": g <= 2 * r.part_size,
                }
            )
    # growth equal within 10 % across sizes, per configuration
    systems = sorted({r.system for r in runs if not r.system.startswith("raw")})
    if len(sizes) > 1:
        for sysname in systems:
            gs = {r.size: r.rss_growth or 0 for r in runs if r.system == sysname}
            if len(gs) < 2:
                continue
            lo, hi = min(gs.values()), max(gs.values())
            spread = (hi - lo) / hi if hi else 0.0
            targets.append(
                {
                    "size": "all",
                    "system": sysname,
                    "target": "RSS growth equal within 10 % across sizes",
                    "value": ", ".join(
                        f"{fmt_size(k)}: {v / MiB:.1f} MiB" for k, v in sorted(gs.items())
                    )
                    + f" (spread {spread:.0%})",
                    "pass": spread <= 0.10,
                }
            )
    lines.append("")
    lines.append("targets:")
    for t in targets:
        size = t["size"] if isinstance(t["size"], str) else fmt_size(t["size"])
        lines.append(
            f"  {'PASS' if t['pass'] else 'MISS'}  {size:>7}  {t['system']:<24} "
            f"{t['target']:<44} {t['value']}"
        )
    return "\n".join(lines), targets


def versions() -> dict[str, str]:
    import boto3
    import botocore
    import moto
    import uvicorn
    import websockets

    out = {
        "python": platform.python_version(),
        "boto3": boto3.__version__,
        "botocore": botocore.__version__,
        "moto": moto.__version__,
        "uvicorn": uvicorn.__version__,
        "websockets": websockets.__version__,
        "psutil": psutil.__version__,
    }
    try:
        out["redis-server"] = (
            subprocess.run(
                [shutil.which("redis-server") or "redis-server", "--version"],
                capture_output=True,
                text=True,
            )
            .stdout.split()[2]
            .removeprefix("v=")
        )
    except Exception:
        pass
    return out


def machine() -> dict[str, Any]:
    return {
        "nproc": os.cpu_count(),
        "ram_gib": round(psutil.virtual_memory().total / GiB, 1),
        "platform": platform.platform(),
        "cpu": platform.processor() or platform.machine(),
    }


# --------------------------------------------------------------------------- main


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--sizes", default="1G", help="comma-separated file sizes (default 1G)")
    ap.add_argument(
        "--concurrency",
        default="1,4",
        help="raw boto3 concurrent UploadPart calls to try (default 1,4)",
    )
    ap.add_argument(
        "--setting",
        action="append",
        default=[],
        metavar="KEY=JSON",
        help="a DJUST_RESUMABLE setting for our server, e.g. STREAM_PARTS=true (repeatable)",
    )
    ap.add_argument(
        "--unsigned",
        default="4",
        help="raw boto3 concurrencies also run without payload signing (botocore signs "
        "every part's SHA-256 over plain HTTP by default; our streamed parts are unsigned "
        "with a CRC32C trailer): the strictest ceiling (default 4; '' for none)",
    )
    ap.add_argument(
        "--parts-in-flight",
        default="1,2",
        help="PARTS_IN_FLIGHT values for our server (default 1,2; 2 is the default setting)",
    )
    ap.add_argument("--part-size", default="8M", help="raw boto3 part size (default 8M, ours)")
    ap.add_argument(
        "--data-dir",
        default="/tmp/djr-bench",
        help="where the random test files are kept (default /tmp/djr-bench)",
    )
    ap.add_argument("--out-dir", default=str(ROOT / "bench" / "out"))
    ap.add_argument("--only", choices=["raw", "ours"], help="run only one side")
    ap.add_argument(
        "--ws",
        default="websockets-sansio",
        help="uvicorn --ws implementation (default: websockets-sansio, as everywhere else)",
    )
    ap.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment variable for the uvicorn processes (repeatable), e.g. "
        "MALLOC_MMAP_THRESHOLD_=1048576 to study RSS",
    )
    ap.add_argument(
        "--py-spy",
        metavar="PATH",
        help="record a py-spy profile of the server during each of our uploads "
        "(adds CPU load: do not use for the reported figures)",
    )
    args = ap.parse_args()

    sizes = [parse_size(s) for s in args.sizes.split(",") if s.strip()]
    concs = [int(c) for c in args.concurrency.split(",") if c.strip()]
    unsigned = [int(c) for c in args.unsigned.split(",") if c.strip()]
    for kv in args.setting:
        k, _, v = kv.partition("=")
        EXTRA_SETTINGS[k.strip()] = json.loads(v)
    pifs = [int(c) for c in args.parts_in_flight.split(",") if c.strip()]
    part_size = parse_size(args.part_size)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out_dir = Path(args.out_dir)
    workdir = out_dir / f"run-{stamp}"
    workdir.mkdir(parents=True, exist_ok=True)

    files = {s: ensure_file(Path(args.data_dir), s) for s in sizes}
    warm_path, _ = ensure_file(Path(args.data_dir), 1 * MiB)

    redis_p, redis_url = start_redis(workdir)
    moto_p, moto_url = start_moto(workdir)
    bucket = f"djr-bench-{uuid.uuid4().hex[:12]}"
    admin = s3_client(moto_url)
    admin.create_bucket(Bucket=bucket)
    secret = secrets.token_urlsafe(48)
    token = mint(secret)
    from djust_resumable.conf import DEFAULTS

    settings_module = "project.settings"
    env = {
        "DJANGO_SETTINGS_MODULE": settings_module,
        "DJANGO_SECRET_KEY": secret,
        "DJR_REDIS_URL": redis_url,
        "AWS_S3_ENDPOINT_URL": moto_url,
        "AWS_STORAGE_BUCKET_NAME": bucket,
        "DJR_DB_PATH": str(workdir / "db.sqlite3"),
        "DJANGO_DEBUG": "0",
    }
    env.update(kv.split("=", 1) for kv in args.server_env)
    WS_IMPL[0] = args.ws
    pids = {"bench": os.getpid(), "moto": moto_p.pid, "redis": redis_p.pid}

    print(
        f"machine: {machine()}\nversions: {versions()}\nserver settings: {settings_module}"
        f"\nlogs: {workdir}",
        flush=True,
    )
    runs: list[Run] = []
    for size in sizes:
        path, crc = files[size]
        if args.only != "ours":
            for c, uns in [(c, False) for c in concs] + [(c, True) for c in unsigned]:
                print(f"[{fmt_size(size)}] raw boto3 c={c}{' unsigned' if uns else ''} ...",
                      flush=True)
                r = raw_upload(moto_url, bucket, path, size, crc, part_size, c, pids, uns)
                print(
                    f"    streaming {r.streaming_s:.2f} s ({r.streaming_mibs:.1f} MiB/s), "
                    f"completion {r.completion_s:.2f} s",
                    flush=True,
                )
                runs.append(r)
                delete_everything(admin, bucket)
        if args.only != "raw":
            for pif in pifs:
                print(f"[{fmt_size(size)}] ours PARTS_IN_FLIGHT={pif} ...", flush=True)
                r = ours_upload(
                    workdir,
                    env,
                    pif,
                    token,
                    path,
                    size,
                    warm_path,
                    pids,
                    DEFAULTS["ENDPOINT_PATH"],
                    args.py_spy,
                )
                print(
                    f"    streaming {r.streaming_s:.2f} s ({r.streaming_mibs:.1f} MiB/s), "
                    f"completion {r.completion_s:.2f} s, RSS growth {mib(r.rss_growth)} MiB",
                    flush=True,
                )
                runs.append(r)
                delete_everything(admin, bucket)

    table, targets = report(runs, sizes)
    print()
    print(table)
    out = out_dir / f"throughput-{stamp}.json"
    out.write_text(
        json.dumps(
            {
                "timestamp": stamp,
                "argv": sys.argv,
                "machine": machine(),
                "versions": versions(),
                "definitions": {
                    "raw streaming": "first UploadPart start -> last UploadPart done",
                    "raw completion": "CompleteMultipartUpload call",
                    "ours streaming": "first frame sent -> on_progress durable == size",
                    "ours completion": "durable == size -> done received",
                    "ceiling": "faster raw streaming of this size in this run",
                    "rss": "uvicorn process RSS; baseline = median over 1 s after a 1 MiB warm-up "
                    "upload, right before the measured upload; max over 0.1 s samples",
                },
                "server_settings": settings_module,
                "server_env_extra": args.server_env,
                "uvicorn_ws": args.ws,
                "runs": [r.to_json() for r in runs],
                "targets": targets,
                "table": table,
            },
            indent=2,
            default=str,
        )
    )
    print(f"\nresults: {out}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
