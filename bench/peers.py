"""Peers benchmark: raw boto3, djust_resumable, djust 1.2.6's own upload path and
tus-node-server 2.x, uploading the same file to the same moto_server in one run.

One run starts one redis-server and one moto_server (free ports), one bucket, and for every
size (a random file under /tmp/djr-bench/, read in parts, never whole):

* raw boto3 multipart, 8 MiB parts, 1 and 4 concurrent UploadPart calls
  (``bench/throughput.py``'s ``raw_upload``, imported); the faster streaming is the
  ceiling of that size;
* djust_resumable with its own client (``throughput.ours_upload``), PARTS_IN_FLIGHT 1
  (the default) and 4;
* djust 1.2.6's own upload path: its LiveView WebSocket protocol spoken by
  ``bench/peers/djust_client.py`` to a bench-only djust project (``bench/peers/djustpeer``)
  whose upload slot writes through an S3 multipart ``UploadWriter`` (djust ships none for
  S3: ``bench/peers/djustpeer/s3writer.py`` is djust's documented ``BufferedUploadWriter``
  S3 example with 8 MiB parts), with djust's upload rate limit raised (``upload_rate`` and
  ``upload_burst`` 100000) — and, on a smaller file (``--djust-default-size``), with
  djust's defaults (200 frames/s, which this client respects by pacing itself), plus one
  unpaced attempt with the defaults, as djust's browser client sends;
* tus-node-server 2.x (``@tus/server`` + ``@tus/s3-store``, ``bench/peers/node``) pointed
  at the same bucket, driven by tuspy (``bench/peers/.venv``) with ``--tus-chunk``-byte
  PATCH requests.

Per upload: streaming (first payload byte sent by the client -> last byte durable: for
djust_resumable the client's ``durable == size``, for djust and tus the server-side start
of CompleteMultipartUpload, logged by their writer/store on the same clock), completion
(-> the client holds the answer), peak server RSS (psutil, 0.1 s) over a baseline taken
after a 1 MiB warm-up upload on the same fresh server process, CPU seconds, and the load
average. Then, for each system that can resume, one upload through ``dropproxy.py`` that
cuts the connection once half the file's bytes went through, and the bytes re-sent.

Usage:  .venv/bin/python bench/peers.py --sizes 1G,4G        (what ``make bench-peers`` runs)
Results: a table on stdout and bench/out/peers-<timestamp>.json (+ logs in run-<timestamp>/).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH / "peers"))

import throughput as tp  # noqa: E402
from djust_client import DjustUploader, DjustUploadError  # noqa: E402

MiB = tp.MiB
GiB = tp.GiB
ROOT = tp.ROOT
PEERS = BENCH / "peers"
NODE_DIR = PEERS / "node"
TUS_PY = PEERS / ".venv" / "bin" / "python"
DJUST_CHUNK = 63 * 1024  # djust 1.2.6's browser default payload (15-uploads.js)
DJUST_VIEW = "djustpeer.views.PeerUploadView"
RAISED = {"rate_limit": {"upload_rate": 100000, "upload_burst": 100000}}


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def uvicorn_args(app: str, app_dir: Path, port: int) -> list[str]:
    # The same uvicorn flags as bench/throughput.py and the integration tests.
    return [sys.executable, "-m", "uvicorn", app, "--app-dir", str(app_dir), "--host",
            "127.0.0.1", "--port", str(port), "--ws", "websockets-sansio",
            "--ws-per-message-deflate", "false", "--ws-max-size", str(32 * MiB),
            "--lifespan", "off", "--log-level", "warning"]


def start_djust(workdir: Path, label: str, env_extra: dict[str, str]) -> tuple[Any, int]:
    port = tp.free_port()
    env = {**os.environ, **env_extra, "PYTHONUNBUFFERED": "1",
           "DJANGO_SETTINGS_MODULE": "djustpeer.settings"}
    p = tp.spawn(uvicorn_args("djustpeer.asgi:application", PEERS, port),
                 workdir / f"djust-{label}.log", env=env, cwd=PEERS)
    tp.wait_for_port(port, p)
    return p, port


def start_tus(workdir: Path, label: str, moto_url: str, bucket: str,
              marks: Path) -> tuple[Any, int]:
    node = shutil.which("node") or "node"
    port = tp.free_port()
    env = {**os.environ, "PORT": str(port), "S3_ENDPOINT": moto_url, "S3_BUCKET": bucket,
           "PART_SIZE": str(8 * MiB), "MARKS": str(marks)}
    p = tp.spawn([node, "server.mjs"], workdir / f"tus-{label}.log", env=env, cwd=NODE_DIR)
    tp.wait_for_port(port, p)
    return p, port


def last_mark(path: Path) -> dict[str, Any]:
    lines = path.read_text().splitlines() if path.exists() else []
    if not lines:
        raise RuntimeError(f"no server-side timing in {path}")
    return json.loads(lines[-1])


def head_size(admin: Any, bucket: str, key: str) -> int:
    return int(admin.head_object(Bucket=bucket, Key=key)["ContentLength"])


def object_crc32c(admin: Any, bucket: str, key: str) -> int:
    """CRC32C of a stored object, read back in 8 MiB pieces (byte-exactness of resume runs)."""
    import google_crc32c

    body = admin.get_object(Bucket=bucket, Key=key)["Body"]
    crc = 0
    while block := body.read(8 * MiB):
        crc = google_crc32c.extend(crc, block)
    return crc


def get_session_cookie(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/session/", timeout=10) as r:
        cookies = r.headers.get_all("Set-Cookie") or []
    return "; ".join(c.split(";", 1)[0] for c in cookies)


def sampled(server_pid: int, pids: dict[str, int], fn: Any) -> tuple[Any, Any, dict]:
    all_pids = {**pids, "server": server_pid}
    cpu0 = tp.cpu_seconds(all_pids)
    with tp.Sampler({"server": server_pid, "moto": pids["moto"]}) as smp:
        out = fn()
    return out, smp, tp.cpu_delta(cpu0, tp.cpu_seconds(all_pids))


# --------------------------------------------------------------------------- djust 1.2.6


def djust_env(ctx: dict[str, Any], marks: Path, config: dict | None,
              resumable: bool = False, chunk: int = DJUST_CHUNK) -> dict[str, str]:
    return {"DJANGO_SECRET_KEY": ctx["secret"], "PEER_S3_ENDPOINT": ctx["moto_url"],
            "PEER_S3_BUCKET": ctx["bucket"], "PEER_MARKS": str(marks),
            "PEER_CHUNK": str(chunk), "PEER_DJUST_CONFIG": json.dumps(config or {}),
            "PEER_RESUMABLE": "1" if resumable else "0",
            "PEER_DB_PATH": str(ctx["workdir"] / "djustpeer.sqlite3")}


def djust_client(port: int, pace: bool, **kw: Any) -> DjustUploader:
    return DjustUploader(f"ws://127.0.0.1:{port}/ws/live/", view=DJUST_VIEW, page="/peer/",
                         slot="file", chunk=DJUST_CHUNK, pace_fps=195 if pace else None, **kw)


def djust_upload(ctx: dict[str, Any], path: Path, size: int, mode: str) -> tp.Run:
    """mode: "raised" (upload_rate/burst 100000, unpaced client) or "default" (djust's
    defaults, client paced to 195 frames/s under the 200/s bucket)."""
    workdir = ctx["workdir"]
    label = f"{mode}-{tp.fmt_size(size).replace(' ', '')}"
    marks = workdir / f"djust-marks-{label}.jsonl"
    proc, port = start_djust(workdir, label,
                             djust_env(ctx, marks, RAISED if mode == "raised" else None))
    pace = mode == "default"
    try:
        rss_cold = tp.baseline_rss(proc.pid, 0.5)
        asyncio.run(djust_client(port, pace).upload(str(ctx["warm_path"])))
        base = tp.baseline_rss(proc.pid, 1.0)
        ld = load()
        res, smp, cpu = sampled(proc.pid, ctx["pids"],
                                lambda: asyncio.run(djust_client(port, pace).upload(str(path))))
        m = last_mark(marks)
        assert m["size"] == size and head_size(ctx["admin"], ctx["bucket"], m["key"]) == size
        return tp.Run(
            system=("djust 1.2.6 S3 writer, rate limit raised" if mode == "raised"
                    else "djust 1.2.6 S3 writer, defaults (paced 195 fr/s)"),
            size=size,
            streaming_s=m["complete_start"] - res.marks["first_sent"],
            completion_s=res.marks["done"] - m["complete_start"],
            part_size=8 * MiB, rss_cold=rss_cold, rss_baseline=base,
            rss_max=smp.max("server"),
            extra={"load_before": ld, "cpu_s_upload": cpu, "frame_payload": DJUST_CHUNK,
                   "frames": -(-size // DJUST_CHUNK), "parts": m["parts"],
                   "last_sent_to_last_part_s": round(m["last_part_done"]
                                                     - res.marks["last_sent"], 3),
                   "moto_rss_max": smp.max("moto"), "djust_config": RAISED
                   if mode == "raised" else "defaults"},
        )
    finally:
        tp.stop(proc)


def djust_unpaced_default(ctx: dict[str, Any], path: Path, size: int) -> dict[str, Any]:
    """djust's defaults with a client that does not pace itself (djust's browser client
    only waits on bufferedAmount): what happens, not a timing."""
    workdir = ctx["workdir"]
    marks = workdir / "djust-marks-unpaced.jsonl"
    proc, port = start_djust(workdir, "unpaced", djust_env(ctx, marks, None))
    sent = [0]
    try:
        up = djust_client(port, False, on_sent=lambda off: sent.__setitem__(0, off))
        t0 = time.time()
        try:
            asyncio.run(up.upload(str(path)))
            outcome = "completed"
        except DjustUploadError as exc:
            outcome = f"failed: {exc}"
        return {"size": size, "outcome": outcome, "sent_before_end": sent[0],
                "seconds": round(time.time() - t0, 2),
                "server_log_tail": (workdir / "djust-unpaced.log").read_text()[-600:]}
    finally:
        tp.stop(proc)


# --------------------------------------------------------------------------- tus


def tus_run_client(endpoint: str, path: Path, chunk: int, retries: int = 0,
                   count: bool = False) -> dict[str, Any]:
    cp = subprocess.run([str(TUS_PY), str(PEERS / "tus_client.py"), endpoint, str(path),
                         "--chunk", str(chunk), "--retries", str(retries)]
                        + (["--count"] if count else []),
                        capture_output=True, text=True, timeout=3600)
    if cp.returncode != 0:
        raise RuntimeError(f"tus client failed: {cp.stderr[-2000:]}")
    return json.loads(cp.stdout)


def tus_upload(ctx: dict[str, Any], path: Path, size: int, chunk: int) -> tp.Run:
    workdir = ctx["workdir"]
    label = tp.fmt_size(size).replace(" ", "")
    marks = workdir / f"tus-marks-{label}.jsonl"
    proc, port = start_tus(workdir, label, ctx["moto_url"], ctx["bucket"], marks)
    endpoint = f"http://127.0.0.1:{port}/files"
    try:
        rss_cold = tp.baseline_rss(proc.pid, 0.5)
        tus_run_client(endpoint, ctx["warm_path"], chunk)
        base = tp.baseline_rss(proc.pid, 1.0)
        ld = load()
        out, smp, cpu = sampled(proc.pid, ctx["pids"],
                                lambda: tus_run_client(endpoint, path, chunk))
        m = last_mark(marks)
        key = out["url"].rstrip("/").rsplit("/", 1)[-1]
        assert m["id"] == key and head_size(ctx["admin"], ctx["bucket"], key) == size
        start = m["start"] / 1000
        return tp.Run(
            system=f"tus-node-server + s3-store (tuspy {tp.fmt_size(chunk)} PATCHes)",
            size=size,
            streaming_s=start - out["marks"]["first_sent"],
            completion_s=out["marks"]["done"] - start,
            part_size=8 * MiB, rss_cold=rss_cold, rss_baseline=base,
            rss_max=smp.max("server"),
            extra={"load_before": ld, "cpu_s_upload": cpu, "patches": len(out["patches"]),
                   "parts": m["parts"], "server_complete_s": (m["end"] - m["start"]) / 1000,
                   "moto_rss_max": smp.max("moto")},
        )
    finally:
        tp.stop(proc)


# --------------------------------------------------------------------------- resume


def start_proxy(workdir: Path, label: str, target: int, cut: int) -> tuple[Any, int, Path]:
    port = tp.free_port()
    report = workdir / f"proxy-{label}.json"
    p = tp.spawn([sys.executable, str(PEERS / "dropproxy.py"), str(port), str(target),
                  str(cut), str(report)], workdir / f"proxy-{label}.log")
    tp.wait_for_port(port, p)
    return p, port, report


def proxy_cut(report: Path) -> dict[str, Any]:
    conns = json.loads(report.read_text())
    cut = [c for c in conns if c["cut"]]
    return {"connections": len(conns), "cut": cut[0] if cut else None}


def resume_ours(ctx: dict[str, Any], path: Path, size: int, crc: int, pif: int) -> dict:
    workdir = ctx["workdir"]
    proc, port = tp.start_uvicorn(workdir, f"resume-pif{pif}",
                                  {**ctx["ours_env"],
                                   "DJR_SETTINGS_JSON": json.dumps({"PARTS_IN_FLIGHT": pif})})
    px, pport, report = start_proxy(workdir, f"ours-pif{pif}", port, size // 2)
    try:
        t0 = time.time()
        from djust_resumable.conf import DEFAULTS

        url = f"ws://127.0.0.1:{pport}{DEFAULTS['ENDPOINT_PATH']}"
        marks, ready, res = asyncio.run(tp.ours_upload_async(url, ctx["token"], path, size))
        secs = time.time() - t0
        key = _ours_key(ctx, res.etag)
        ok = object_crc32c(ctx["admin"], ctx["bucket"], key) == crc if key else None
        return {"system": f"djust_resumable PARTS_IN_FLIGHT={pif}", "size": size,
                "connections": res.connections, "resume_offsets": res.resume_offsets,
                "bytes_resent": res.bytes_resent, "seconds": round(secs, 2),
                "crc32c_ok": ok, "proxy": proxy_cut(report),
                "how": "client count: payload bytes handed to ws.send, minus the file size"}
    finally:
        tp.stop(px)
        tp.stop(proc)


def _ours_key(ctx: dict[str, Any], etag: str) -> str | None:
    # The object the upload produced: the only object in the bench bucket with this ETag.
    for page in ctx["admin"].get_paginator("list_objects_v2").paginate(Bucket=ctx["bucket"]):
        for obj in page.get("Contents", []) or []:
            if obj["ETag"].strip('"') == etag.strip('"'):
                return obj["Key"]
    return None


def resume_djust(ctx: dict[str, Any], path: Path, size: int, crc: int, chunk: int) -> dict:
    """djust's resumable slot (``ResumableUploadWriter.with_inner(S3 writer)``), rate limit
    raised, frames of ``chunk`` payload bytes. A 64 KiB chunk needs ``max_message_size``
    above djust's default 65536 (frames carry a 21-byte header)."""
    workdir = ctx["workdir"]
    label = f"resume-{chunk}"
    marks = workdir / f"djust-marks-{label}.jsonl"
    config = dict(RAISED)
    if chunk + 21 > 65536:
        config["max_message_size"] = 2 * (chunk + 21)
    proc, port = start_djust(workdir, label,
                             djust_env(ctx, marks, config, resumable=True, chunk=chunk))
    px, pport, report = start_proxy(workdir, f"djust-{chunk}", port, size // 2)
    try:
        cookie = get_session_cookie(port)
        t0 = time.time()
        up = DjustUploader(f"ws://127.0.0.1:{pport}/ws/live/", view=DJUST_VIEW, page="/peer/",
                           slot="file", chunk=chunk, cookie=cookie, reconnect=True)
        try:
            res = asyncio.run(up.upload(str(path)))
            err = None
        except DjustUploadError as exc:
            res, err = None, str(exc)
        secs = time.time() - t0
        out: dict[str, Any] = {
            "system": f"djust 1.2.6 ResumableUploadWriter(S3 writer), {tp.fmt_size(chunk)} "
            "frames", "size": size, "seconds": round(secs, 2), "proxy": proxy_cut(report),
            "djust_config": config,
            "how": "client count: payload bytes handed to ws.send, minus the file size"}
        if res is None:
            out.update(error=err, connections=up.connections,
                       resume_offsets=up.resume_offsets)
            return out
        m = last_mark(marks)
        stored = head_size(ctx["admin"], ctx["bucket"], m["key"])
        out.update(connections=res.connections, resume_offsets=res.resume_offsets,
                   bytes_resent=res.bytes_resent, stored_size=stored, restarts=up.restarts,
                   resume_answers=[{k: v for k, v in a.items() if k != "chunks_received"}
                                   for a in up.resume_answers],
                   crc32c_ok=object_crc32c(ctx["admin"], ctx["bucket"], m["key"]) == crc)
        if stored != size:
            out["error"] = (f"CompleteMultipartUpload succeeded with {stored} of {size} bytes: "
                            f"{size - stored} bytes never sent after the resume")
        return out
    finally:
        tp.stop(px)
        tp.stop(proc)


def resume_tus(ctx: dict[str, Any], path: Path, size: int, crc: int, chunk: int) -> dict:
    workdir = ctx["workdir"]
    marks = workdir / "tus-marks-resume.jsonl"
    proc, port = start_tus(workdir, "resume", ctx["moto_url"], ctx["bucket"], marks)
    px, pport, report = start_proxy(workdir, "tus", port, size // 2)
    try:
        t0 = time.time()
        try:
            out = tus_run_client(f"http://127.0.0.1:{pport}/files", path, chunk, retries=3,
                                 count=True)
            err = None
        except RuntimeError as exc:
            out, err = None, str(exc)
        secs = time.time() - t0
        px_info = proxy_cut(report)
        res: dict[str, Any] = {"system": "tus-node-server + s3-store (tuspy retries=3)",
                               "size": size, "seconds": round(secs, 2), "proxy": px_info,
                               "how": "client count: PATCH body bytes read by the HTTP stack "
                               "(tus_client.py --count), minus the file size"}
        if out is None:
            res["error"] = err
            return res
        key = out["url"].rstrip("/").rsplit("/", 1)[-1]
        res.update(connections=len(out["patches"]), resume_offsets=out["head_offsets"],
                   crc32c_ok=object_crc32c(ctx["admin"], ctx["bucket"], key) == crc)
        res["bytes_resent"] = out["bytes_sent"] - size
        cut = px_info["cut"]
        if cut and out["head_offsets"]:
            # Cross-check from the proxy: the cut PATCH's Upload-Offset plus the body bytes
            # the proxy read on that connection (excludes the client's socket buffer).
            head = cut["head"]
            hdr_end = head.find("\r\n\r\n")
            mo = re.search(r"(?im)^upload-offset:\s*(\d+)", head)
            if hdr_end >= 0 and mo:
                reached = int(mo.group(1)) + cut["read"] - (hdr_end + 4)
                res["proxy_offset_reached_at_drop"] = reached
                res["proxy_resent"] = reached - out["head_offsets"][0]
        return res
    finally:
        tp.stop(px)
        tp.stop(proc)


# --------------------------------------------------------------------------- report


def report(runs: list[tp.Run], sizes: list[int]) -> tuple[str, list[dict[str, Any]]]:
    lines: list[str] = []
    hdr = (f"{'size':>7}  {'system':<58} {'stream s':>8} {'MiB/s':>7} {'/raw':>5} "
           f"{'compl s':>7} {'total s':>7} {'tot MiB/s':>9} {'RSS base':>8} {'RSS max':>8} "
           f"{'growth':>7}  load")
    lines += [hdr, "-" * len(hdr)]
    targets: list[dict[str, Any]] = []
    for s in sizes:
        # Best (shortest streaming) of the repeats of each system: the machine is shared, and
        # a neighbour's burst of CPU slows one sample, never speeds one up.
        best: dict[str, tp.Run] = {}
        for r in runs:
            if r.size == s and (r.system not in best
                                or r.streaming_s < best[r.system].streaming_s):
                best[r.system] = r
        rs = list(best.values())
        for r in rs:
            r.extra["samples"] = sum(1 for x in runs if x.size == s and x.system == r.system)
        raws = [r for r in rs if r.system.startswith("raw")]
        ceiling = max((r.streaming_mibs for r in raws), default=None)
        for r in rs:
            ratio = f"{r.streaming_mibs / ceiling:.2f}" if ceiling else "-"
            lines.append(
                f"{tp.fmt_size(s):>7}  {r.system:<58} {r.streaming_s:8.2f} "
                f"{r.streaming_mibs:7.1f} {ratio:>5} {r.completion_s:7.2f} "
                f"{r.streaming_s + r.completion_s:7.2f} {r.total_mibs:9.1f} "
                f"{tp.mib(r.rss_baseline):>8} {tp.mib(r.rss_max):>8} "
                f"{tp.mib(r.rss_growth):>7}  {r.extra.get('load_before', '')}"
                + (f"  (best of {r.extra['samples']})" if r.extra["samples"] > 1 else ""))
        ours = [r for r in rs if r.system.startswith("ours")]
        peers = {
            "raw boto3 (faster of c=1/c=4)": (ceiling, 0.9),
            "tus-node-server": (next((r.streaming_mibs for r in rs
                                      if r.system.startswith("tus")), None), 1.2),
            "djust S3 writer, rate limit raised": (next(
                (r.streaming_mibs for r in rs if "raised" in r.system), None), 1.0),
        }
        for o in ours:
            for name, (v, need) in peers.items():
                if not v:
                    continue
                ratio = o.streaming_mibs / v
                targets.append({"size": s, "system": o.system, "vs": name,
                                "ratio": round(ratio, 2), "need": need,
                                "pass": ratio >= need})
    lines.append("")
    lines.append("targets (streaming phase, same run):")
    for t in targets:
        lines.append(f"  {'PASS' if t['pass'] else 'MISS'}  {tp.fmt_size(t['size']):>7}  "
                     f"{t['system']:<24} vs {t['vs']:<36} {t['ratio']:.2f} (need >= "
                     f"{t['need']})")
    return "\n".join(lines), targets


def peer_versions() -> dict[str, str]:
    out = tp.versions()
    import djust

    out["djust"] = getattr(djust, "__version__", "?")
    out["node"] = subprocess.run(["node", "--version"], capture_output=True,
                                 text=True).stdout.strip()
    for pkg in ("@tus/server", "@tus/s3-store", "@tus/utils", "@aws-sdk/client-s3"):
        try:
            pj = json.loads((NODE_DIR / "node_modules" / pkg / "package.json").read_text())
            out[pkg] = pj["version"]
        except OSError:
            out[pkg] = "missing"
    cp = subprocess.run([str(TUS_PY), "-c", "import importlib.metadata as m;"
                         "print(m.version('tuspy'), m.version('requests'))"],
                        capture_output=True, text=True)
    if cp.returncode == 0:
        out["tuspy"], out["requests (tuspy)"] = cp.stdout.split()
    return out


# --------------------------------------------------------------------------- main


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="1G", help="comma-separated sizes (default 1G)")
    ap.add_argument("--systems", default="raw,ours,djust,djust-default,tus,resume",
                    help="which parts to run (default all: raw,ours,djust,djust-default,"
                    "tus,resume)")
    ap.add_argument("--parts-in-flight", default="1,4", help="ours: PARTS_IN_FLIGHT values")
    ap.add_argument("--djust-max-size", default="4G",
                    help="largest size for djust with its rate limit raised (default 4G)")
    ap.add_argument("--djust-default-size", default="256M",
                    help="file size for djust with its defaults (~12 MiB/s; default 256M)")
    ap.add_argument("--tus-max-size", default="4G", help="largest size for tus (default 4G)")
    ap.add_argument("--tus-chunk", default="1G",
                    help="tuspy chunk_size: bytes per PATCH (default 1G: one PATCH per GiB; "
                    "tuspy's own default sends the whole file in one PATCH, read into memory)")
    ap.add_argument("--resume-size", default="1G", help="file size of the drop-at-50 %% runs")
    ap.add_argument("--repeat", default="1G:2",
                    help="SIZE:N,... timed uploads per system for files up to SIZE; the table "
                    "keeps the best (default 1G:2: twice up to 1 GiB, once above)")
    ap.add_argument("--data-dir", default="/tmp/djr-bench")
    ap.add_argument("--out-dir", default=str(ROOT / "bench" / "out"))
    args = ap.parse_args()

    systems = {s.strip() for s in args.systems.split(",") if s.strip()}
    sizes = [tp.parse_size(s) for s in args.sizes.split(",") if s.strip()]
    pifs = [int(x) for x in args.parts_in_flight.split(",") if x.strip()]
    djust_max = tp.parse_size(args.djust_max_size)
    djust_default_size = tp.parse_size(args.djust_default_size)
    tus_max = tp.parse_size(args.tus_max_size)
    tus_chunk = tp.parse_size(args.tus_chunk)
    resume_size = tp.parse_size(args.resume_size)
    repeat_rules = sorted((tp.parse_size(a), int(b)) for a, b in
                          (x.split(":") for x in args.repeat.split(",") if x.strip()))

    def repeats(size: int) -> int:
        return next((n for limit, n in repeat_rules if size <= limit), 1)
    for need, what in ((NODE_DIR / "node_modules" / "@tus" / "server", "npm ci"),
                       (TUS_PY, "the tuspy venv")):
        if ({"tus", "resume"} & systems) and not need.exists():
            sys.exit(f"{need} missing: run `make bench-peers` (it installs {what})")

    stamp = time.strftime("%Y%m%d-%H%M%S")
    out_dir = Path(args.out_dir)
    workdir = out_dir / f"run-peers-{stamp}"
    workdir.mkdir(parents=True, exist_ok=True)
    all_sizes = sorted(set(sizes + ([djust_default_size] if "djust-default" in systems
                                    else []) + ([resume_size] if "resume" in systems else [])))
    files = {s: tp.ensure_file(Path(args.data_dir), s) for s in all_sizes}
    warm_path, _ = tp.ensure_file(Path(args.data_dir), 1 * MiB)

    redis_p, redis_url = tp.start_redis(workdir)
    moto_p, moto_url = tp.start_moto(workdir)
    bucket = f"djr-peers-{uuid.uuid4().hex[:12]}"
    admin = tp.s3_client(moto_url)
    admin.create_bucket(Bucket=bucket)
    secret = secrets.token_urlsafe(48)
    token = tp.mint(secret)
    ours_env = {"DJANGO_SETTINGS_MODULE": "project.settings", "DJANGO_SECRET_KEY": secret,
                "DJR_REDIS_URL": redis_url, "AWS_S3_ENDPOINT_URL": moto_url,
                "AWS_STORAGE_BUCKET_NAME": bucket, "DJR_DB_PATH": str(workdir / "db.sqlite3"),
                "DJANGO_DEBUG": "0"}
    pids = {"bench": os.getpid(), "moto": moto_p.pid, "redis": redis_p.pid}
    ctx = {"workdir": workdir, "moto_url": moto_url, "bucket": bucket, "admin": admin,
           "secret": secret, "token": token, "warm_path": warm_path, "pids": pids,
           "ours_env": ours_env}
    from djust_resumable.conf import DEFAULTS

    vers = peer_versions()
    print(f"machine: {tp.machine()}\nversions: {vers}\nlogs: {workdir}\nload: {load()}",
          flush=True)
    runs: list[tp.Run] = []
    notes: dict[str, Any] = {}

    def record(r: tp.Run) -> None:
        print(f"    streaming {r.streaming_s:.2f} s ({r.streaming_mibs:.1f} MiB/s), completion "
              f"{r.completion_s:.2f} s, RSS growth {tp.mib(r.rss_growth)} MiB, load "
              f"{r.extra.get('load_before', load())}", flush=True)
        runs.append(r)
        tp.delete_everything(admin, bucket)

    failures: list[dict[str, Any]] = []
    notes["failures"] = failures

    def attempt(label: str, fn: Any) -> None:
        """Run one timed upload; a failing peer is reported, not fatal to the run."""
        print(label, flush=True)
        try:
            record(fn())
        except Exception as exc:  # noqa: BLE001 - recorded in the results and printed
            print(f"    FAILED: {exc!r}", flush=True)
            failures.append({"what": label, "error": repr(exc)[:2000]})
            tp.delete_everything(admin, bucket)

    def ours_run(path: Path, size: int, pif: int) -> tp.Run:
        ld = load()
        r = tp.ours_upload(workdir, ours_env, pif, token, path, size, warm_path, pids,
                           DEFAULTS["ENDPOINT_PATH"], None)
        r.extra["load_before"] = ld
        # A second connection is recorded, not fatal: see "keepalive during completion" in
        # docs/benchmarks.md (the streaming figure is measured before it).
        assert r.extra["bytes_resent"] == 0, r.extra
        if r.extra["connections"] != 1:
            r.system += f" [{r.extra['connections']} conns]"
        return r

    def raw_run(path: Path, size: int, crc: int, c: int) -> tp.Run:
        ld = load()
        r = tp.raw_upload(moto_url, bucket, path, size, crc, 8 * MiB, c, pids)
        r.extra["load_before"] = ld
        return r

    def raw_pair(size: int) -> None:
        path, crc = files[size]
        for c in (1, 4):
            attempt(f"[{tp.fmt_size(size)}] raw boto3 c={c} ...",
                    lambda n=c: raw_run(path, size, crc, n))

    report_sizes = list(sizes)
    for size in sizes:
        path, crc = files[size]
        for rep in range(repeats(size)):
            if rep:
                print(f"[{tp.fmt_size(size)}] repeat {rep + 1}", flush=True)
            if "raw" in systems:
                raw_pair(size)
            if "ours" in systems:
                for pif in pifs:
                    attempt(f"[{tp.fmt_size(size)}] djust_resumable PARTS_IN_FLIGHT={pif} ...",
                            lambda p=path, z=size, n=pif: ours_run(p, z, n))
            if "djust" in systems and size <= djust_max:
                attempt(f"[{tp.fmt_size(size)}] djust 1.2.6, rate limit raised ...",
                        lambda p=path, z=size: djust_upload(ctx, p, z, "raised"))
            if "tus" in systems and size <= tus_max:
                attempt(f"[{tp.fmt_size(size)}] tus-node-server ...",
                        lambda p=path, z=size: tus_upload(ctx, p, z, tus_chunk))
    if "djust-default" in systems:
        size = djust_default_size
        path, crc = files[size]
        if size not in sizes:
            report_sizes.append(size)
            if "raw" in systems:
                raw_pair(size)
        attempt(f"[{tp.fmt_size(size)}] djust 1.2.6, default settings (paced) ...",
                lambda: djust_upload(ctx, path, size, "default"))
        print(f"[{tp.fmt_size(size)}] djust 1.2.6, default settings, unpaced client ...",
              flush=True)
        notes["djust_default_unpaced"] = djust_unpaced_default(ctx, path, size)
        print(f"    {notes['djust_default_unpaced']['outcome']}", flush=True)
        tp.delete_everything(admin, bucket)

    resumes: list[dict[str, Any]] = []
    if "resume" in systems:
        size = resume_size
        path, crc = files[size]
        for name, fn in (
            ("djust_resumable PARTS_IN_FLIGHT=1", lambda: resume_ours(ctx, path, size, crc, 1)),
            ("djust 1.2.6 resumable, 63 KiB frames (its browser default)",
             lambda: resume_djust(ctx, path, size, crc, DJUST_CHUNK)),
            ("djust 1.2.6 resumable, 64 KiB frames", lambda: resume_djust(
                ctx, path, size, crc, 64 * 1024)),
            ("tus-node-server", lambda: resume_tus(ctx, path, size, crc, tus_chunk)),
        ):
            print(f"[{tp.fmt_size(size)}] drop at 50 %: {name} ...", flush=True)
            try:
                r = fn()
            except Exception as exc:  # noqa: BLE001 - recorded in the results and printed
                r = {"system": name, "size": size, "error": repr(exc)[:2000]}
            print(f"    connections {r.get('connections')}, resume offsets "
                  f"{r.get('resume_offsets')}, bytes re-sent {r.get('bytes_resent')}, "
                  f"crc32c ok {r.get('crc32c_ok')}, {r.get('error', '')}", flush=True)
            resumes.append(r)
            tp.delete_everything(admin, bucket)

    table, targets = report(runs, report_sizes)
    lines = [table, "", "drop at 50 % (bytes re-sent):"]
    for r in resumes:
        # A resume that skipped bytes re-sent nothing meaningful: show the loss instead.
        resent = "n/a" if "stored_size" in r and r["stored_size"] != r["size"] else r.get(
            "bytes_resent")
        lines.append(f"  {tp.fmt_size(r['size']):>7}  {r['system']:<58} conns "
                     f"{r.get('connections')}  resume at {r.get('resume_offsets')}  re-sent "
                     f"{resent}  crc ok {r.get('crc32c_ok')}  {r.get('error', '')}")
    text = "\n".join(lines)
    print()
    print(text)
    out = out_dir / f"peers-{stamp}.json"
    out.write_text(json.dumps({
        "timestamp": stamp, "argv": sys.argv, "machine": tp.machine(), "versions": vers,
        "runs": [r.to_json() for r in runs], "targets": targets, "resume": resumes,
        "notes": notes, "load_end": load(), "table": text}, indent=2, default=str))
    print(f"\nresults: {out}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
