"""The sweeper: expire stale ledgers, abort orphan multipart uploads, delete stray tails.

Run it from cron on every host (``manage.py resumable_sweep``); several sweepers at once never
do the same work twice and never fail because of each other:

* **Stale ledgers** go to ``expired`` through one Lua script (``lua/expire.lua``) that checks
  and writes atomically — registered/uploading, last write older than the cutoff, no live
  lease — so of N sweepers exactly one wins each record; only the winner aborts its multipart
  upload and deletes its tail.
* **Orphan multipart uploads and stray tails** are claimed one by one with ``SET NX PX`` on
  ``<prefix>:sweep:<kind>:<sha1>`` before any storage call; a sweeper that finds an item
  claimed skips it. Claims are left to expire (``lock_ms``), so a sweeper that listed the
  item before another one finished it still skips it. Every storage call is idempotent anyway
  (abort of a gone upload, delete of a missing object), so even an expired claim costs one
  harmless request, never an error.

Nothing here is ever unsafe for a live upload:

* a record that a writer holds (live lease) or that moved within ``older_than`` seconds is
  not expired;
* a multipart upload is aborted only when no live record owns it (same ``UploadId`` as the
  record named by the key's last segment) *and* both its ``Initiated`` time and the first
  time a sweeper listed it (``<prefix>:sweep:seen``) are more than ``grace`` seconds ago —
  the service creates the upload before it writes the record, so an upload being registered
  right now is never touched, even by a store whose clock or ``Initiated`` is wrong;
* a tail is deleted only when the ledger can never point at it: its record is gone or not
  active, or it is not the record's current ``tail_key`` and its epoch is older than the
  record's, or equal with no live lease (spill writes are fenced by the lease epoch, so no
  later write can make such a tail current). Record and lease are read in one MULTI/EXEC.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from . import metrics
from .conf import ResumableSettings
from .ledger import ACTIVE_STATES, Ledger, now_ms
from .sinks.base import Sink
from .worker import worker_id

log = logging.getLogger("djust_resumable")

#: Default seconds a multipart upload must have existed before the sweeper may abort it.
DEFAULT_GRACE = 3600
_REF_RE = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}")
_TAIL_RE = re.compile(r"(\d+)-(\d+)")
#: States whose multipart upload is still needed (complete: already assembled, keep hands off).
_OWNING_STATES = (*ACTIVE_STATES, "complete")


@dataclass
class SweepReport:
    """What one sweep did (or, with ``dry_run``, would do)."""

    dry_run: bool = False
    expired: list[str] = field(default_factory=list)
    index_dropped: list[str] = field(default_factory=list)
    uploads_aborted: list[str] = field(default_factory=list)  # "<key> <upload_id>"
    tails_deleted: list[str] = field(default_factory=list)
    skipped: int = 0  # items another sweeper had claimed or already done
    errors: list[str] = field(default_factory=list)

    def summary(self) -> str:
        verb = "would " if self.dry_run else ""
        return (f"{'dry run: ' if self.dry_run else ''}"
                f"{verb}expire {len(self.expired)} stale upload(s), "
                f"{verb}drop {len(self.index_dropped)} index entr(y/ies) of gone records, "
                f"{verb}abort {len(self.uploads_aborted)} orphan multipart upload(s), "
                f"{verb}delete {len(self.tails_deleted)} spilled tail(s); "
                f"{self.skipped} skipped (claimed by another sweeper), "
                f"{len(self.errors)} error(s)")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Sweeper:
    """One sweep over the ledger of ``ledger`` and the bucket of ``sink``.

    ``older_than``: seconds without a ledger write after which a registered/uploading record
    is stale (default ``LEDGER_TTL``). ``grace``: seconds a multipart upload must have existed
    before it may be aborted as an orphan. ``lock_ms``: lifetime of a per-item claim.
    """

    def __init__(self, ledger: Ledger, sink: Sink, settings: ResumableSettings, *,
                 older_than: float | None = None, grace: float = DEFAULT_GRACE,
                 dry_run: bool = False, lock_ms: int = 300_000) -> None:
        self.ledger = ledger
        self.sink = sink
        self.settings = settings
        self.older_than = float(settings.LEDGER_TTL if older_than is None else older_than)
        self.grace = float(grace)
        self.dry_run = dry_run
        self.lock_ms = lock_ms
        self.me = worker_id()
        self.report = SweepReport(dry_run=dry_run)

    async def run(self) -> SweepReport:
        for step in (self.expire_stale, self.abort_orphan_uploads, self.delete_stray_tails):
            try:
                await step()
            except Exception as exc:  # a step that cannot run (Redis, bucket) is reported
                log.warning("sweep step %s failed: %s", step.__name__, exc)
                self.report.errors.append(f"{step.__name__}: {exc}")
        if not self.dry_run:
            await metrics.flush(self.ledger)
        log.info("sweep worker=%s %s", self.me, self.report.summary())
        return self.report

    # -- (a) stale ledgers --------------------------------------------------------------------
    async def expire_stale(self) -> None:
        cutoff = now_ms() - int(self.older_than * 1000)
        for ref, last_activity in await self.ledger.index_items():
            rec, lease_epoch = await self.ledger.snapshot(ref)
            if rec is None:  # the record's TTL ran out: only the index entry is left
                if self.dry_run or await self.ledger.drop_from_index(ref):
                    self.report.index_dropped.append(ref)
                    if not self.dry_run:
                        metrics.record_sweep(self.ledger, "index_dropped")
                continue
            if rec.state not in ("registered", "uploading") or lease_epoch is not None:
                continue
            if max(rec.updated, last_activity) >= cutoff:
                continue
            if self.dry_run:
                self.report.expired.append(ref)
                continue
            res = await self.ledger.expire_if_stale(ref, cutoff, "expired")
            if res[0] != "ok":  # another sweeper won, or the upload moved meanwhile
                self.report.skipped += 1
                continue
            _, previous, key, upload_id, tail_key = res
            self.report.expired.append(ref)
            metrics.record_sweep(self.ledger, "expired")
            await self.ledger.event(ref, "expired", worker=self.me, previous=previous)
            log.info("expired ref=%s user=%s worker=%s previous=%s", ref, rec.user, self.me,
                     previous)
            if key and upload_id:
                await self._abort(key, upload_id, count=False)
            if tail_key:
                await self._delete_tail(tail_key, count=False)

    # -- (b) orphan multipart uploads ---------------------------------------------------------
    async def abort_orphan_uploads(self) -> None:
        prefix = self.settings.STORAGE_PREFIX
        uploads = await self.sink.list_multipart_uploads(prefix)
        # Age = time since the later of the store's Initiated and the first time a sweeper
        # listed the upload: a store clock that is off (moto answers 2010-11-10 for every
        # upload) can never make a fresh upload look old.
        seen = await self.ledger.first_seen([u for _, u, _ in uploads], record=not self.dry_run)
        now = now_ms()
        for key, upload_id, initiated in uploads:
            if initiated.tzinfo is None:
                initiated = initiated.replace(tzinfo=dt.UTC)
            born = max(int(initiated.timestamp() * 1000), seen[upload_id])
            if now - born < self.grace * 1000:
                continue  # maybe being registered right now
            ref = key.rsplit("/", 1)[-1]
            rec = await self.ledger.get(ref) if _REF_RE.fullmatch(ref) else None
            if rec is not None and rec.upload_id == upload_id and rec.state in _OWNING_STATES:
                continue
            if self.dry_run:
                self.report.uploads_aborted.append(f"{key} {upload_id}")
                continue
            await self._abort(key, upload_id, count=True)

    async def _abort(self, key: str, upload_id: str, count: bool) -> None:
        if not await self.ledger.claim("mpu", upload_id, self.me, self.lock_ms):
            self.report.skipped += 1
            return
        try:
            await self.sink.abort(key, upload_id)
        except Exception as exc:
            await self.ledger.unclaim("mpu", upload_id, self.me)
            log.warning("sweep: abort of %s %s failed: %s", key, upload_id, exc)
            self.report.errors.append(f"abort {key}: {exc}")
            return
        if count:
            self.report.uploads_aborted.append(f"{key} {upload_id}")
            metrics.record_sweep(self.ledger, "orphan_upload_aborted")
            log.info("aborted orphan multipart upload key=%s upload_id=%s worker=%s", key,
                     upload_id, self.me)

    # -- (c) spilled tails --------------------------------------------------------------------
    async def delete_stray_tails(self) -> None:
        tails_prefix = f"{self.settings.STORAGE_PREFIX}.tails/"
        for key in await self.sink.list_keys(tails_prefix):
            ref, _, name = key[len(tails_prefix):].partition("/")
            m = _TAIL_RE.fullmatch(name)
            if not m or not _REF_RE.fullmatch(ref):
                continue  # not a tail this library wrote: leave it alone
            epoch = int(m.group(1))
            rec, lease_epoch = await self.ledger.snapshot(ref)
            if rec is not None and rec.state in ACTIVE_STATES:
                if key == rec.tail_key or epoch > rec.epoch:
                    continue
                if epoch == rec.epoch and lease_epoch is not None:
                    continue  # the holder may be between PutObject and the ledger write
            if self.dry_run:
                self.report.tails_deleted.append(key)
                continue
            await self._delete_tail(key, count=True)

    async def _delete_tail(self, key: str, count: bool) -> None:
        if not await self.ledger.claim("tail", key, self.me, self.lock_ms):
            self.report.skipped += 1
            return
        try:
            await self.sink.delete_tail(key)
        except Exception as exc:
            await self.ledger.unclaim("tail", key, self.me)
            log.warning("sweep: delete of tail %s failed: %s", key, exc)
            self.report.errors.append(f"delete {key}: {exc}")
            return
        if count:
            self.report.tails_deleted.append(key)
            metrics.record_sweep(self.ledger, "tail_deleted")
            log.info("deleted stray tail key=%s worker=%s", key, self.me)


async def sweep(settings: ResumableSettings, **options: Any) -> SweepReport:
    """Run one sweep with a fresh ledger connection and the process's sink."""
    from .sinks import get_sink

    ledger = Ledger.from_settings(settings)
    try:
        return await Sweeper(ledger, get_sink(settings), settings, **options).run()
    finally:
        await ledger.close()
