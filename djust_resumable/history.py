"""``UploadHistory`` rows from ledger records (best effort; never breaks an upload).

The service calls :func:`arecord` at milestones (registered, complete, aborted); the admin
calls :func:`upsert` for every record it reads, which also catches the states no hook sees
(failed, expired by the sweeper, consumed). A project without the table (not migrated, or
``django.contrib.admin`` unused) only pays one failed query per minute.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time

from .ledger import UploadRecord

log = logging.getLogger("djust_resumable")

_RETRY_AFTER = 60.0
_disabled_until = 0.0


def _ts(ms: int) -> dt.datetime | None:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC) if ms else None


def upsert(rec: UploadRecord) -> None:
    """Write ``rec`` to its history row (sync; call from a thread, never from a loop)."""
    global _disabled_until
    if time.monotonic() < _disabled_until:
        return
    try:
        from .models import UploadHistory

        UploadHistory.objects.update_or_create(ref=rec.ref, defaults={
            "state": rec.state, "user": rec.user[:150], "owner": rec.owner[:255],
            "slot": rec.slot[:100], "view": rec.view[:255], "file_name": rec.client_name[:255],
            "content_type": rec.client_type[:255], "size": rec.size, "durable": rec.durable,
            "key": rec.key[:1024], "upload_id": rec.upload_id[:1024], "etag": rec.etag[:255],
            "error": rec.error[:255], "attaches": rec.attaches, "spills": rec.spills,
            "created": _ts(rec.created), "updated": _ts(rec.updated),
            "completed": _ts(rec.completed)})
    except Exception as exc:  # no table, no database, locked sqlite: history is optional
        _disabled_until = time.monotonic() + _RETRY_AFTER
        log.debug("upload history not written (ref=%s): %s", rec.ref, exc)


async def arecord(ledger, ref: str) -> None:  # type: ignore[no-untyped-def]
    """Re-read ``ref`` from the ledger and write its history row (a milestone hook)."""
    if time.monotonic() < _disabled_until:
        return
    try:
        rec = await ledger.get(ref)
        if rec is not None:
            await asyncio.to_thread(_upsert_closing, rec)
    except Exception as exc:
        log.debug("upload history of ref=%s not written: %s", ref, exc)


def _upsert_closing(rec: UploadRecord) -> None:
    from django.db import close_old_connections

    try:
        upsert(rec)
    finally:
        close_old_connections()


_pending: set[asyncio.Task[None]] = set()


def note(ledger, ref: str) -> None:  # type: ignore[no-untyped-def]
    """Milestone hook for the service: record ``ref`` in the background (never waits for
    the database, never raises)."""
    try:
        task = asyncio.get_running_loop().create_task(arecord(ledger, ref))
    except Exception:  # no running loop: nothing to do
        return
    _pending.add(task)
    task.add_done_callback(_pending.discard)
