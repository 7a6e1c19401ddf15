"""`make test-big`: one 10 GiB upload through nginx, two SIGKILLs of the holding worker and
one Redis restart along the way (issue #5 section 5).

Not collected by ``make test`` (the file name does not start with ``test_``); run it with
``pytest tests/faults/big_upload.py`` (``DJR_BIG_GIB=N`` changes the size). The topology is
the fault tests' (nginx, 3 uvicorn processes, redis-server with AOF) with the **local sink**:
moto_server assembles a completed multipart upload in memory twice over (a 10 GiB object
would need ~20 GiB of RAM on this 24 GiB machine), the local sink streams parts into the
final file. Asserts: the stored file's sha256 equals the source's; every part but the last
has the part size; the re-sent bytes stay within one window per kill; the workers' RSS,
sampled every 0.5 s, never grows by more than 256 MiB over its value after a warm-up
(it must not follow the file size). Prints (and writes to ``test-output/big.md``) the wall
time of each phase, the maximum RSS and the re-sent bytes.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from djust_resumable.conf import MiB
from tests.helpers import make_random_file, sha256_file

from .conftest import RecordingUploader, topology

GIB = int(os.environ.get("DJR_BIG_GIB", "10"))
pytestmark = [pytest.mark.integration, pytest.mark.timeout(3 * 3600)]


class RssSampler:
    """Max RSS (bytes) over the cluster's current worker processes, every ``period`` s."""

    def __init__(self, workers: list[Any], period: float = 0.5) -> None:
        self.workers = workers
        self.period = period
        self.max = 0
        self.samples = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for w in self.workers:
                if w.proc is not None and w.proc.poll() is None:
                    try:
                        self.max = max(self.max, psutil.Process(w.proc.pid).memory_info().rss)
                    except psutil.Error:
                        pass
            self.samples += 1
            self._stop.wait(self.period)

    def __enter__(self) -> RssSampler:
        self._t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._t.join(5)


@pytest.fixture
def big_cluster(tmp_path_factory, moto_server, s3_client):
    base = tmp_path_factory.mktemp("big")
    store = base / "store"
    with topology(base, moto_server, s3_client, SINK="local", LOCAL_ROOT=str(store)) as c:
        c.store = store  # type: ignore[attr-defined]
        yield c


async def test_10_gib_through_nginx_with_two_kills_and_a_redis_restart(big_cluster, tmp_path):
    c = big_cluster
    size = GIB * 1024 * MiB + 12345
    phases: dict[str, float] = {}
    t0 = time.monotonic()
    src = await asyncio.to_thread(make_random_file, tmp_path / "big.bin", size)
    src_sha = await asyncio.to_thread(sha256_file, src)
    phases["make + hash source"] = time.monotonic() - t0

    # Warm-up: imports, pools and the first part buffers exist in every worker.
    warm = make_random_file(tmp_path / "warm.bin", 20 * MiB)
    for _ in range(3):
        await RecordingUploader(c.url, c.token(), backoff_max=1).upload(str(warm))
    baseline = RssSampler(c.workers, 0.1)
    with baseline:
        await asyncio.sleep(1.0)

    marks = {"kill 1": size // 4, "redis restart": size // 2, "kill 2": size * 3 // 4}
    done_marks: dict[str, float] = {}
    tasks: list[asyncio.Task[Any]] = []
    up: RecordingUploader

    async def on_progress(sent: int, durable: int, total: int) -> None:
        for name, at in marks.items():
            if name not in done_marks and durable >= at:
                done_marks[name] = time.monotonic()
                if name == "redis restart":
                    tasks.append(asyncio.create_task(asyncio.to_thread(c.redis.restart)))
                else:
                    # A fresh connection each time: the restart breaks earlier ones.
                    lg = c.ledger()
                    holder = await c.holder(lg, up.ref or "")
                    await lg.close()
                    holder.kill(signal.SIGKILL)
                    # Bring it back meanwhile (nginx skips it until it answers again).
                    tasks.append(asyncio.create_task(asyncio.to_thread(c.ensure_workers)))

    up = RecordingUploader(c.url, c.token(), on_progress=on_progress, backoff_max=1,
                           give_up_after=600)
    t_up = time.monotonic()
    with RssSampler(c.workers) as rss:
        result = await up.upload(str(src))
    t_done = time.monotonic()
    await asyncio.gather(*tasks)
    assert set(done_marks) == set(marks)
    order = sorted(done_marks.items(), key=lambda kv: kv[1])
    prev, prev_name = t_up, "start"
    for name, t in order:
        phases[f"upload {prev_name} -> {name}"] = t - prev
        prev, prev_name = t, name
    phases[f"upload {prev_name} -> done"] = t_done - prev

    t1 = time.monotonic()
    ledger = c.ledger()
    rec = await ledger.get(result.ref)
    assert rec is not None and rec.state == "complete"
    stored = Path(c.store) / rec.key
    assert stored.stat().st_size == size
    assert await asyncio.to_thread(sha256_file, stored) == src_sha
    parts = await ledger.parts(result.ref)
    assert [p.size for p in parts[:-1]] == [rec.part_size] * (len(parts) - 1)
    phases["verify sha256 of the stored file"] = time.monotonic() - t1
    await ledger.close()

    growth = rss.max - baseline.max
    lines = [f"10 GiB-class upload through nginx (`make test-big`, {GIB} GiB + 12345 B, "
             "local sink)", "",
             "| phase | wall time |", "|---|---|"]
    lines += [f"| {k} | {v:.1f} s |" for k, v in phases.items()]
    upload_s = t_done - t_up
    lines += ["", f"upload: {upload_s:.0f} s, {size / MiB / upload_s:.0f} MiB/s including "
              f"the faults; connections {result.connections}; re-sent "
              f"{result.bytes_resent:,} B; client saw {','.join(up.seen) or '-'}",
              f"worker RSS: max {rss.max / MiB:.0f} MiB over {rss.samples} samples "
              f"(after warm-up: {baseline.max / MiB:.0f} MiB; growth {growth / MiB:.0f} MiB)"]
    text = "\n".join(lines) + "\n"
    out = Path(__file__).resolve().parents[2] / "test-output"
    out.mkdir(exist_ok=True)
    (out / "big.md").write_text(text)
    print("\n" + text)
    os.unlink(stored)  # 10 GiB of disk back

    # Two kills re-send at most one window each; the restart (appendfsync always) none.
    assert 0 <= result.bytes_resent <= 2 * rec.part_size, result.resume_offsets
    assert result.connections >= 3
    # Flat: bounded by part buffers, not by the 10 GiB that went through.
    assert growth < 256 * MiB, (rss.max, baseline.max)
