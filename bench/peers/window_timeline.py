"""Where a djust_resumable upload's streaming phase goes, seen from the client.

    .venv/bin/python bench/peers/window_timeline.py SIZE PARTS_IN_FLIGHT

Starts its own redis-server, moto_server and one uvicorn worker (bench/throughput.py's
helpers), uploads a SIZE file with ``ResumableUploader`` and splits the streaming phase
(first frame sent -> durable == size) into: time with the window full (the client has
``part_size x PARTS_IN_FLIGHT`` bytes beyond the durable offset and may send nothing: the
server is storing parts), time sending, and the tail after the last frame. Prints one JSON
line. Used for the "Peers" section of docs/benchmarks.md (why PARTS_IN_FLIGHT=1 runs at raw
boto3 c=1 speed).
"""

import asyncio
import json
import os
import secrets
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import throughput as tp  # noqa: E402


def main() -> int:
    from djust_resumable.client import ResumableUploader

    size, pif = tp.parse_size(sys.argv[1]), int(sys.argv[2])
    workdir = tp.ROOT / "bench" / "out" / f"timeline-{time.strftime('%Y%m%d-%H%M%S')}"
    workdir.mkdir(parents=True)
    path, _ = tp.ensure_file(Path("/tmp/djr-bench"), size)
    _, redis_url = tp.start_redis(workdir)
    _, moto_url = tp.start_moto(workdir)
    bucket = "timeline-" + uuid.uuid4().hex[:8]
    tp.s3_client(moto_url).create_bucket(Bucket=bucket)
    secret = secrets.token_urlsafe(48)
    token = tp.mint(secret)
    env = {"DJANGO_SETTINGS_MODULE": "project.settings", "DJANGO_SECRET_KEY": secret,
           "DJR_REDIS_URL": redis_url, "AWS_S3_ENDPOINT_URL": moto_url,
           "AWS_STORAGE_BUCKET_NAME": bucket, "DJR_DB_PATH": str(workdir / "db.sqlite3"),
           "DJANGO_DEBUG": "0", "DJR_SETTINGS_JSON": json.dumps({"PARTS_IN_FLIGHT": pif})}
    proc, port = tp.start_uvicorn(workdir, "timeline", env)
    from djust_resumable.conf import DEFAULTS

    events: list[tuple[float, int, int]] = []
    window = [0]

    class Uploader(ResumableUploader):
        async def _recv(self, ws, sender=None):  # type: ignore[no-untyped-def]
            msg = await super()._recv(ws, sender)
            if msg.get("type") == "ready":
                window[0] = int(msg["window"])
            return msg

    up = Uploader(f"ws://127.0.0.1:{port}{DEFAULTS['ENDPOINT_PATH']}", token,
                  on_progress=lambda s, d, t: events.append((time.perf_counter(), s, d)))
    load = os.getloadavg()
    asyncio.run(up.upload(str(path)))
    first = next(t for t, s, _ in events if s > 0)
    last_sent = next(t for t, s, _ in events if s >= size)
    end = next(t for t, _, d in events if d >= size)
    full = sum(t - pt for (pt, ps, pd), (t, _, _) in zip(events, events[1:], strict=False)
               if pt >= first and ps < size and ps - pd >= window[0])
    print(json.dumps({"size": size, "parts_in_flight": pif, "window": window[0],
                      "streaming_s": round(end - first, 3), "window_full_s": round(full, 3),
                      "sending_s": round(last_sent - first - full, 3),
                      "last_sent_to_durable_s": round(end - last_sent, 3),
                      "load_before": [round(x, 2) for x in load]}))
    tp.stop(proc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
