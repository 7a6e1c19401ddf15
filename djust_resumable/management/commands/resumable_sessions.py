"""List and inspect upload sessions from a shell (reads the ledger; never writes).

    manage.py resumable_sessions                  # newest first
    manage.py resumable_sessions --state uploading --state registered
    manage.py resumable_sessions --json
    manage.py resumable_sessions <ref>            # every field, parts, lease, timeline
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from dataclasses import asdict
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from djust_resumable.conf import get_settings
from djust_resumable.ledger import STATES, Ledger, UploadRecord


def _when(ms: int) -> str:
    if not ms:
        return "-"
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _percent(rec: UploadRecord) -> float:
    if rec.state in ("complete", "consumed") or not rec.size:
        return 100.0 if rec.state in ("complete", "consumed") else 0.0
    return round(100.0 * rec.durable / rec.size, 1)


def _row(rec: UploadRecord, last: int, holder: str) -> dict[str, Any]:
    return {"ref": rec.ref, "state": rec.state, "user": rec.user, "slot": rec.slot,
            "file": rec.client_name, "size": rec.size, "received": max(rec.received, rec.durable),
            "durable": rec.durable, "percent": _percent(rec),
            "last_activity": _when(max(last, rec.updated)), "holder": holder}


async def _holder(ledger: Ledger, rec: UploadRecord) -> str:
    """``<worker> conn=<id>`` of the live lease, "" when no writer holds the upload."""
    lease = await ledger.lease_info(rec.ref)
    if lease is None:
        return ""
    epoch, conn, _ = lease
    worker = ""
    for e in reversed(await ledger.events(rec.ref)):
        if e.get("event") == "attached" and e.get("epoch") == epoch:
            worker = str(e.get("worker", ""))
            break
    return f"{worker or '?'} conn={conn[:8]} epoch={epoch}"


async def _list(states: set[str], limit: int) -> list[dict[str, Any]]:
    ledger = Ledger.from_settings(get_settings())
    try:
        rows = []
        for ref, last in await ledger.index_items():
            rec = await ledger.get(ref)
            if rec is None or (states and rec.state not in states):
                continue
            rows.append(_row(rec, last, await _holder(ledger, rec)))
            if limit and len(rows) >= limit:
                break
        return rows
    finally:
        await ledger.close()


async def _detail(ref: str) -> dict[str, Any] | None:
    ledger = Ledger.from_settings(get_settings())
    try:
        rec = await ledger.get(ref)
        if rec is None:
            return None
        fields = asdict(rec)
        fields["head"] = f"{len(rec.head)} bytes: {rec.head[:16].hex()}"
        fields.update(rec.extra)
        del fields["extra"]
        lease = await ledger.lease_info(ref)
        return {
            "record": fields,
            "percent": _percent(rec),
            "holder": await _holder(ledger, rec),
            "lease": None if lease is None else {"epoch": lease[0], "conn": lease[1],
                                                 "channel": lease[2]},
            "parts": [{"number": p.number, "size": p.size, "etag": p.etag,
                       "checksum": p.checksum} for p in await ledger.parts(ref)],
            "events": await ledger.events(ref),
        }
    finally:
        await ledger.close()


class Command(BaseCommand):
    help = "List upload sessions from the ledger, or show one session (REF) in full."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("ref", nargs="?", help="show this session in full")
        parser.add_argument("--state", action="append", default=[], choices=STATES,
                            help="only sessions in this state (repeatable)")
        parser.add_argument("--limit", type=int, default=0, help="at most this many rows")
        parser.add_argument("--json", action="store_true", help="machine-readable output")

    def handle(self, *args: Any, **opts: Any) -> None:
        if opts["ref"]:
            detail = asyncio.run(_detail(opts["ref"]))
            if detail is None:
                raise CommandError(f"no session {opts['ref']} in the ledger")
            if opts["json"]:
                self.stdout.write(json.dumps(detail, indent=2, default=str))
            else:
                self._print_detail(detail)
            return
        rows = asyncio.run(_list(set(opts["state"]), opts["limit"]))
        if opts["json"]:
            self.stdout.write(json.dumps(rows, indent=2))
            return
        self._print_table(rows)

    def _print_table(self, rows: list[dict[str, Any]]) -> None:
        head = ("REF", "STATE", "USER", "FILE", "SIZE", "DURABLE", "%", "LAST ACTIVITY (UTC)",
                "HOLDER")
        table = [head] + [(r["ref"], r["state"], r["user"] or "-", r["file"][:40],
                           _size(r["size"]), _size(r["durable"]), f"{r['percent']:.1f}",
                           r["last_activity"], r["holder"] or "-") for r in rows]
        widths = [max(len(str(row[i])) for row in table) for i in range(len(head))]
        for row in table:
            self.stdout.write("  ".join(str(c).ljust(w) for c, w in zip(row, widths,
                                                                        strict=True)).rstrip())
        self.stdout.write(f"{len(rows)} session(s)")

    def _print_detail(self, d: dict[str, Any]) -> None:
        rec = d["record"]
        w = max(len(k) for k in rec)
        for k, v in rec.items():
            if k in ("created", "updated", "completed") and v:
                v = f"{v} ({_when(int(v))} UTC)"
            self.stdout.write(f"{k.ljust(w)}  {v}")
        self.stdout.write(f"{'percent'.ljust(w)}  {d['percent']:.1f}")
        self.stdout.write(f"{'lease'.ljust(w)}  {d['holder'] or '(none)'}")
        self.stdout.write("")
        self.stdout.write(f"parts ({len(d['parts'])})")
        self.stdout.write(f"  {'#':>5}  {'SIZE':>12}  {'ETAG':<36}  CHECKSUM")
        for p in d["parts"]:
            self.stdout.write(f"  {p['number']:>5}  {p['size']:>12}  {p['etag']:<36}  "
                              f"{p['checksum'] or '-'}")
        self.stdout.write("")
        self.stdout.write(f"events ({len(d['events'])})")
        for e in d["events"]:
            data = {k: v for k, v in e.items() if k not in ("t", "event")}
            extra = " ".join(f"{k}={v}" for k, v in data.items())
            self.stdout.write(f"  {_when(int(e.get('t', 0)))}  {e.get('event', '?'):<14} {extra}")
