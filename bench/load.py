"""Load through nginx: many concurrent uploads across the 3 workers of `make cluster`.

    .venv/bin/python bench/load.py                      # 50 uploads of 50 MiB, all at once
    .venv/bin/python bench/load.py --uploads 20 --mib 100

Uses the cluster of `make cluster` when one is running (``.run/cluster/cluster.json``), else
starts one with ``deploy/local_cluster.py start`` and stops it at the end.

1. Baseline, same run: one upload of the same file alone through nginx (MiB/s).
2. Load: ``--uploads`` uploads at once, each with its own user (``MAX_UPLOADS_PER_USER``
   counts per user) and its own ref. Each upload is dropped once, cleanly, at a random
   offset between 20 % and 80 % (``--no-drop`` to skip): the worker spills its partial part
   and the client reconnects through nginx (``least_conn``), usually to another worker.
   *Resume latency* = from the client closing its socket to the ``ready`` of the next
   connection: the close handshake, the old worker's drain + spill + release, nginx, the
   new worker's attach (ledger scripts + tail restore from S3). The client's reconnect
   backoff is set to ~1 ms so it does not dominate.
3. Report: failures (an upload that raised, or a ``done`` whose size differs), aggregate
   MiB/s (total bytes / wall time of the whole batch) and its ratio to the baseline,
   p50 / p99 / max resume latency (and the same for one upload alone, measured before the
   load), bytes re-sent, how many resumes changed worker, the 1-minute load average before
   and after (other processes on the machine skew every figure); the sha256 of a sample
   of stored objects is checked against the source.

Results: a table on stdout and ``bench/out/load-<timestamp>.json``. Not a test: numbers
depend on the machine (docs/benchmarks.md records them with the command).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CLUSTER_JSON = ROOT / ".run" / "cluster" / "cluster.json"
MiB = 1024 * 1024


def setup_django(state: dict[str, Any]) -> None:
    """The example project's settings in this process, to mint tokens with the workers'
    SECRET_KEY (same defaults and environment as `make cluster`)."""
    sys.path[:0] = [str(ROOT), str(ROOT / "example")]
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
    os.environ.setdefault("DJR_REDIS_URL", state["redis"])
    import django

    django.setup()


def start_cluster() -> bool:
    """True when this run started the cluster (and so must stop it)."""
    if CLUSTER_JSON.exists():
        return False
    done = subprocess.run([sys.executable, str(ROOT / "deploy" / "local_cluster.py"), "start"],
                          cwd=ROOT, capture_output=True, text=True)
    if done.returncode:
        sys.stderr.write(done.stdout + done.stderr)
        raise SystemExit("could not start the cluster")
    return True


def stop_cluster() -> None:
    subprocess.run([sys.executable, str(ROOT / "deploy" / "local_cluster.py"), "stop"],
                   cwd=ROOT, capture_output=True, text=True)


def make_file(path: Path, size: int) -> str:
    h = hashlib.sha256()
    with open(path, "wb") as f:
        left = size
        while left:
            block = os.urandom(min(MiB, left))
            f.write(block)
            h.update(block)
            left -= len(block)
    return h.hexdigest()


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


async def one_upload(url: str, token: str, path: Path, size: int, drop: bool,
                     rng: random.Random) -> dict[str, Any]:
    from djust_resumable.client import ResumableUploader

    drop_at = rng.randrange(size // 5, size * 4 // 5) if drop else None
    st: dict[str, Any] = {}
    up: ResumableUploader

    async def on_progress(sent: int, durable: int, total: int) -> None:
        if drop_at is not None and "t_drop" not in st and sent >= drop_at:
            st["t_drop"] = time.perf_counter()
            await up.drop()
        elif "t_drop" in st and "latency" not in st and up.connections >= 2:
            st["latency"] = time.perf_counter() - st["t_drop"]

    up = ResumableUploader(url, token, on_progress=on_progress, backoff_initial=0.001,
                           backoff_max=1.0, give_up_after=300)
    t0 = time.perf_counter()
    try:
        result = await up.upload(str(path))
    except Exception as exc:  # noqa: BLE001 - counted as a failure, reported
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    return {"ok": result.size == size, "ref": result.ref, "seconds": time.perf_counter() - t0,
            "resent": result.bytes_resent, "connections": result.connections,
            "latency": st.get("latency")}


async def run(args: argparse.Namespace, state: dict[str, Any]) -> dict[str, Any]:
    from djust_resumable.tokens import UploadGrant, mint_token

    rng = random.Random(args.seed)
    size = args.mib * MiB
    work = ROOT / "bench" / "out"
    work.mkdir(parents=True, exist_ok=True)
    src = work / "load-src.bin"
    sha = make_file(src, size)

    def token(user: str) -> str:
        return mint_token(UploadGrant(session=os.urandom(8).hex(), user=user, view="bench",
                                      slot="files", max_file_size=size))

    url = state["ws"]
    # Warm-up (imports, boto3 clients and Redis pools in every worker), then the baselines:
    # one upload alone without a drop (MiB/s), one alone with a drop (resume latency).
    for i in range(3):
        await one_upload(url, token(f"warmup-{i}"), src, size, drop=False, rng=rng)
    base = await one_upload(url, token("baseline"), src, size, drop=False, rng=rng)
    base_drop = await one_upload(url, token("baseline-drop"), src, size, drop=True, rng=rng)
    if not (base["ok"] and base_drop["ok"]):
        raise SystemExit(f"baseline upload failed: {base} {base_drop}")
    baseline = size / MiB / base["seconds"]
    load_before = os.getloadavg()[0]

    t0 = time.perf_counter()
    results = await asyncio.gather(*(
        one_upload(url, token(f"load-{i}"), src, size, not args.no_drop, rng)
        for i in range(args.uploads)))
    wall = time.perf_counter() - t0
    ok = [r for r in results if r["ok"]]
    lat = [r["latency"] for r in ok if r.get("latency") is not None]
    aggregate = len(ok) * size / MiB / wall

    # Byte-exactness of a sample (the server already checked every whole-file CRC32C).
    import boto3

    s3 = boto3.client("s3", endpoint_url=state["s3"], region_name="us-east-1",
                      aws_access_key_id="testing", aws_secret_access_key="testing")
    from djust_resumable.conf import get_settings
    from djust_resumable.ledger import Ledger

    ledger = Ledger.from_settings(get_settings())
    moved = 0
    sample_ok = 0
    sample = ok[: args.verify]
    for r in ok:
        workers = [e.get("worker") for e in await ledger.events(r["ref"])
                   if e["event"] == "attached"]
        moved += len(set(workers)) > 1
    for r in sample:
        rec = await ledger.get(r["ref"])
        h = hashlib.sha256()
        for chunk in s3.get_object(Bucket=state["bucket"], Key=rec.key)["Body"].iter_chunks(MiB):
            h.update(chunk)
        sample_ok += h.hexdigest() == sha
    for r in ok:  # free moto's memory
        rec = await ledger.get(r["ref"])
        s3.delete_object(Bucket=state["bucket"], Key=rec.key)
    await ledger.close()
    src.unlink()
    return {
        "uploads": args.uploads, "mib_each": args.mib, "drop": not args.no_drop,
        "failures": len(results) - len(ok),
        "errors": [r["error"] for r in results if not r["ok"] and "error" in r],
        "wall_s": round(wall, 2), "aggregate_mib_s": round(aggregate, 1),
        "baseline_single_mib_s": round(baseline, 1),
        "ratio_vs_single": round(aggregate / baseline, 2),
        "resume_latency_ms": {"n": len(lat), "p50": round(pct(lat, 0.5) * 1000, 1),
                              "p99": round(pct(lat, 0.99) * 1000, 1),
                              "max": round(max(lat) * 1000, 1) if lat else None,
                              "mean": round(statistics.fmean(lat) * 1000, 1) if lat else None},
        "baseline_single_resume_latency_ms": round((base_drop["latency"] or 0) * 1000, 1),
        "resumed_on_another_worker": moved,
        "loadavg_1min_before_after": [round(load_before, 1), round(os.getloadavg()[0], 1)],
        "bytes_resent_total": sum(r["resent"] for r in ok),
        "sha256_sample": f"{sample_ok}/{len(sample)}",
        "upload_seconds_p50": round(pct([r["seconds"] for r in ok], 0.5), 2),
        "upload_seconds_max": round(max((r["seconds"] for r in ok), default=0), 2),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python "
                   f"{platform.python_version()}",
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--uploads", type=int, default=50)
    p.add_argument("--mib", type=int, default=50, help="size of each upload in MiB")
    p.add_argument("--no-drop", action="store_true", help="no mid-upload drop (no latency)")
    p.add_argument("--verify", type=int, default=5, help="objects whose sha256 is checked")
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args()
    started = start_cluster()
    try:
        state = json.loads(CLUSTER_JSON.read_text())
        setup_django(state)
        report = asyncio.run(run(args, state))
    finally:
        if started:
            stop_cluster()
    out = ROOT / "bench" / "out" / f"load-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(report, indent=2))
    lat = report["resume_latency_ms"]
    print(f"{report['uploads']} uploads x {report['mib_each']} MiB through nginx "
          f"({report['machine']}): failures {report['failures']}, wall {report['wall_s']} s, "
          f"aggregate {report['aggregate_mib_s']} MiB/s = {report['ratio_vs_single']}x one "
          f"upload alone ({report['baseline_single_mib_s']} MiB/s); resume latency p50 "
          f"{lat['p50']} ms, p99 {lat['p99']} ms, max {lat['max']} ms (n={lat['n']}; alone: "
          f"{report['baseline_single_resume_latency_ms']} ms); "
          f"resumed on another worker {report['resumed_on_another_worker']}; re-sent "
          f"{report['bytes_resent_total']} B; sha256 sample {report['sha256_sample']}; "
          f"load average {report['loadavg_1min_before_after']}")
    print(f"results: {out.relative_to(ROOT)}")
    return 0 if report["failures"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
