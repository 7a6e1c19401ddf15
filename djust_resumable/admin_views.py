"""Data and actions behind the admin pages of upload sessions (``djust_resumable.admin``).

Everything here reads the Redis ledger (and, for the actions, the bucket) on the bridge loop
(``djust_resumable.bridge``): the admin's views are plain sync Django views and call
:func:`run`. Nothing here writes upload bytes.

Actions:

* **abort** — ``UploadService.abort_record`` (ledger ``aborted``, multipart upload aborted,
  spilled tail deleted, history row), then, when a writer holds the lease, a channel-layer
  ``resumable.handover`` to its connection: the holder detaches and tells its client
  ``superseded``; the client resumes at once and is answered the typed ``aborted`` error
  (``UploadService.attach`` refuses an aborted record). Without a channel layer the holder
  learns it at its next ledger write (``commit_part`` answers ``invalid_state``).
* **expire now** — ``lua/expire.lua`` with a cutoff of now: only a registered/uploading
  record that no writer holds (a held one must be aborted instead); then, like the sweeper,
  its multipart upload is aborted and its tail deleted.
* **retry completion** — for a record stuck in ``completing`` (its writer died between
  ``completing`` and ``complete``): take the lease as an admin connection and run
  ``UploadWriter.complete`` (CompleteMultipartUpload, then ``complete``).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import uuid
from dataclasses import asdict
from typing import Any

from . import bridge, history
from .ledger import Ledger, UploadRecord, now_ms
from .worker import worker_id

log = logging.getLogger("djust_resumable")

#: Most sessions the list reads (newest activity first).
LIST_LIMIT = 500
#: Window (ms) over which the list's throughput is computed from ``part_stored`` events.
RATE_WINDOW_MS = 30_000
AGE_CHOICES = (("1h", "last hour", 3600), ("24h", "last 24 hours", 86400),
               ("7d", "last 7 days", 7 * 86400), ("old", "older than 24 hours", -86400))
ACTIONS = ("abort", "expire", "retry_completion")


class ActionRefused(Exception):
    """An admin action that does not apply to the session in its current state."""


def run(fn: Any, *args: Any) -> Any:
    return bridge.run(fn, *args, what="the upload admin")


def _svc() -> Any:
    return bridge.service()


def percent(rec: UploadRecord) -> float:
    if rec.state in ("complete", "consumed"):
        return 100.0
    return round(100.0 * rec.durable / rec.size, 1) if rec.size else 0.0


def when(ms: int) -> str:
    if not ms:
        return ""
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def throughput(events: list[dict[str, Any]], now: int) -> float:
    """Durable bytes per second over the last ``RATE_WINDOW_MS`` (``part_stored`` events)."""
    stored = sum(int(e.get("size", 0)) for e in events
                 if e.get("event") == "part_stored" and int(e.get("t", 0)) >= now - RATE_WINDOW_MS)
    return stored * 1000.0 / RATE_WINDOW_MS


def _holder_worker(events: list[dict[str, Any]], epoch: int) -> str:
    for e in reversed(events):
        if e.get("event") == "attached" and int(e.get("epoch", -1)) == epoch:
            return str(e.get("worker", ""))
    return ""


def _row(rec: UploadRecord, last: int, lease: bytes | None, events: list[dict[str, Any]],
         now: int) -> dict[str, Any]:
    holder = worker = ""
    if lease:
        epoch_s, conn, _ = lease.decode().split("|", 2)
        worker = _holder_worker(events, int(epoch_s)) or "?"
        holder = f"{worker} conn={conn[:8]} epoch={epoch_s}"
    last_activity = max(last, rec.updated)
    return {
        "ref": rec.ref, "state": rec.state, "user": rec.user, "owner": rec.owner,
        "slot": rec.slot, "file": rec.client_name, "size": rec.size,
        "received": max(rec.received, rec.durable), "durable": rec.durable,
        "percent": percent(rec), "throughput": round(throughput(events, now)),
        "holder": holder, "worker": worker, "last_activity": last_activity,
        "last_activity_text": when(last_activity), "created": rec.created,
        "created_text": when(rec.created), "error": rec.error,
    }


def matches(row: dict[str, Any], f: dict[str, str], now: int) -> bool:
    if f.get("state") and row["state"] != f["state"]:
        return False
    if f.get("slot") and row["slot"] != f["slot"]:
        return False
    if f.get("user") and row["user"] != f["user"]:
        return False
    age = f.get("age")
    if age:
        for key, _, seconds in AGE_CHOICES:
            if key == age:
                born = row["created"] or row["last_activity"]
                if seconds > 0 and born < now - seconds * 1000:
                    return False
                if seconds < 0 and born >= now + seconds * 1000:
                    return False
    q = (f.get("q") or "").strip().lower()
    if q and not any(q in str(row[k]).lower() for k in ("file", "ref", "user")):
        return False
    return True


async def _list(filters: dict[str, str]) -> tuple[list[dict[str, Any]], list[UploadRecord]]:
    ledger: Ledger = _svc().ledger
    items = (await ledger.index_items())[:LIST_LIMIT]
    now = now_ms()
    rows: list[dict[str, Any]] = []
    recs: list[UploadRecord] = []
    # One round trip per 100 sessions (each session's keys share one hash slot; the
    # pipeline is not a transaction).
    for i in range(0, len(items), 100):
        chunk = items[i:i + 100]
        async with ledger.r.pipeline(transaction=False) as p:
            for ref, _ in chunk:
                p.hgetall(ledger._k(ref, "meta"))
                p.get(ledger._k(ref, "lease"))
                p.lrange(ledger._k(ref, "events"), -60, -1)
            res = await p.execute()
        for j, (ref, last) in enumerate(chunk):
            raw, lease, evs = res[3 * j: 3 * j + 3]
            if not raw:
                continue
            rec = UploadRecord.from_hash(ref, raw)
            events = [_json(e) for e in evs]
            row = _row(rec, last, lease, events, now)
            recs.append(rec)
            if matches(row, filters, now):
                rows.append(row)
    return rows, recs


def _json(raw: bytes) -> dict[str, Any]:
    try:
        out = json.loads(raw)
        return out if isinstance(out, dict) else {}
    except ValueError:
        return {}


_known_states: dict[str, str] = {}


def sync_history(recs: list[UploadRecord]) -> None:
    """Refresh the history row of every record whose state changed since this process last
    wrote it (catches failed/expired/consumed, which no service hook records)."""
    for rec in recs:
        if _known_states.get(rec.ref) != rec.state:
            history.upsert(rec)
            _known_states[rec.ref] = rec.state


def list_sessions(filters: dict[str, str]) -> list[dict[str, Any]]:
    rows, recs = run(_list, filters)
    sync_history(recs)
    return rows


# -- detail ---------------------------------------------------------------------------------
def _event_text(e: dict[str, Any]) -> str:
    kind = e.get("event", "?")
    data = {k: v for k, v in e.items() if k not in ("t", "event")}
    if kind == "attached":
        how = "resumed" if int(data.get("durable", 0) or 0) > 0 or int(data.get("epoch", 1)) > 1 \
            else "attached"
        return (f"{how} on worker {data.get('worker', '?')} (epoch {data.get('epoch')}, "
                f"durable {data.get('durable')} B)")
    if kind == "part_stored":
        return f"part {data.get('part')} stored ({data.get('size')} B in {data.get('seconds')} s)"
    if kind == "spilled":
        return f"spilled tail at {data.get('offset')} ({data.get('length')} B)"
    extra = " ".join(f"{k}={v}" for k, v in data.items())
    return f"{kind} {extra}".strip()


def durable_ranges(rec: UploadRecord, numbers: list[int]) -> list[dict[str, Any]]:
    """Contiguous byte ranges covered by stored parts, plus the spilled tail."""
    out: list[dict[str, Any]] = []
    for n in sorted(numbers):
        start, end = (n - 1) * rec.part_size, min(n * rec.part_size, rec.size)
        if out and out[-1]["kind"] == "parts" and out[-1]["end"] == start:
            out[-1]["end"] = end
            out[-1]["parts"] = f"{out[-1]['parts'].split('-')[0]}-{n}"
        else:
            out.append({"kind": "parts", "start": start, "end": end, "parts": str(n)})
    if rec.tail_len:
        out.append({"kind": "spilled tail", "start": rec.tail_offset,
                    "end": rec.tail_offset + rec.tail_len, "parts": rec.tail_key})
    for r in out:
        r["length"] = r["end"] - r["start"]
    return out


async def _detail(ref: str) -> dict[str, Any] | None:
    ledger: Ledger = _svc().ledger
    rec = await ledger.get(ref)
    if rec is None:
        return None
    lease = await ledger.lease_info(ref)
    parts = await ledger.parts(ref)
    events = await ledger.events(ref)
    fields = asdict(rec)
    fields["head"] = f"{len(rec.head)} bytes: {rec.head[:32].hex()}"
    fields.update({f"extra.{k}": v for k, v in rec.extra.items()})
    del fields["extra"]
    for k in ("created", "updated", "completed"):
        if fields[k]:
            fields[k] = f"{fields[k]} ({when(fields[k])} UTC)"
    now = now_ms()
    return {
        "rec": rec,
        "fields": sorted(fields.items()),
        "percent": percent(rec),
        "received": max(rec.received, rec.durable),
        "throughput": round(throughput(events, now)),
        "lease": None if lease is None else {
            "epoch": lease[0], "conn": lease[1], "channel": lease[2],
            "worker": _holder_worker(events, lease[0]) or "?"},
        "parts": [{"number": p.number, "size": p.size, "etag": p.etag,
                   "checksum": p.checksum or "", "start": (p.number - 1) * rec.part_size,
                   "end": (p.number - 1) * rec.part_size + p.size} for p in parts],
        "ranges": durable_ranges(rec, [p.number for p in parts]),
        "events": [{"when": when(int(e.get("t", 0))), "event": e.get("event", "?"),
                    "text": _event_text(e)} for e in events],
        "can_abort": rec.state in ("registered", "uploading", "completing", "failed"),
        "can_expire": rec.state in ("registered", "uploading") and lease is None,
        "can_retry": rec.state == "completing",
    }


def detail(ref: str) -> dict[str, Any] | None:
    d = run(_detail, ref)
    if d is not None:
        sync_history([d["rec"]])
    return d


# -- actions --------------------------------------------------------------------------------
async def _abort(ref: str, who: str) -> str:
    svc = _svc()
    rec = await svc.ledger.get(ref)
    if rec is None:
        raise ActionRefused("no such session in the ledger")
    if rec.state not in ("registered", "uploading", "completing", "failed"):
        raise ActionRefused(f"cannot abort a session that is {rec.state}")
    lease = await svc.ledger.lease_info(ref)
    await svc.abort_record(rec, reason=f"aborted by admin {who}"[:120])
    told = await _tell_holder(ref, lease[2] if lease else "")
    log.info("admin abort ref=%s user=%s worker=%s by=%s holder_told=%s", ref, rec.user,
             worker_id(), who, told)
    return "aborted" + ("; the connected client was told" if told else "")


async def _tell_holder(ref: str, channel: str) -> bool:
    """Tell the holder's connection (channel layer): it drops the writer without spilling
    and sends its client a typed ``aborted`` error (``UploadConsumer.resumable_abort``)."""
    if not channel:
        return False
    try:
        from channels.layers import get_channel_layer

        layer = get_channel_layer()
        if layer is None:
            return False
        await layer.send(channel, {"type": "resumable.abort", "ref": ref,
                                   "reason": "aborted by an administrator"})
        return True
    except Exception as exc:
        log.warning("admin abort of ref=%s could not reach the holder: %s", ref, exc)
        return False


async def _expire(ref: str, who: str) -> str:
    svc = _svc()
    res = await svc.ledger.expire_if_stale(ref, now_ms() + 1, f"expired by admin {who}"[:120])
    if res[0] != "ok":
        why = res[1] if len(res) > 1 else "?"
        if why == "leased":
            raise ActionRefused("a writer holds this session; abort it instead")
        raise ActionRefused(f"cannot expire a session that is {why}")
    _, previous, key, upload_id, tail_key = res
    await svc.ledger.event(ref, "expired", worker=worker_id(), previous=previous, by=who)
    if key and upload_id:
        await svc.sink.abort(key, upload_id)
    if tail_key:
        await svc.sink.delete_tail(tail_key)
    await history.arecord(svc.ledger, ref)
    log.info("expired ref=%s worker=%s previous=%s by=admin %s", ref, worker_id(), previous, who)
    return "expired"


async def _retry_completion(ref: str, who: str) -> str:
    from .service import UploadWriter

    svc = _svc()
    rec = await svc.ledger.get(ref)
    if rec is None:
        raise ActionRefused("no such session in the ledger")
    if rec.state != "completing":
        raise ActionRefused(f"only a session stuck in completing can be retried ({rec.state})")
    conn = f"admin-{uuid.uuid4().hex[:12]}"
    got = await svc.ledger.acquire(ref, conn, "")
    if got.status == "busy":
        raise ActionRefused("a writer still holds this session; retry when its lease expired")
    if got.status != "ok":
        raise ActionRefused(f"session is {got.state}")

    async def no_ack(*_: Any) -> None:
        return None

    writer = UploadWriter(svc, await svc.ledger.require(ref), got.epoch, no_ack)
    try:
        await svc.ledger.event(ref, "attached", conn=conn, epoch=got.epoch, durable=rec.durable,
                               worker=worker_id(), by=f"admin {who}")
        done = await writer.complete()
    finally:
        await writer.release()
    return f"complete (etag {done.etag})"


def act(action: str, ref: str, who: str) -> str:
    fn = {"abort": _abort, "expire": _expire, "retry_completion": _retry_completion}[action]
    return run(fn, ref, who)


__all__ = ["ACTIONS", "AGE_CHOICES", "ActionRefused", "act", "detail", "list_sessions",
           "matches", "now_ms"]
