"""The chunk ledger: one Redis record per upload, the single source of truth for resuming.

Keys (hash-tagged per upload so a Redis Cluster keeps one upload in one slot)::

    <prefix>:{<ref>}:meta    hash   every field of ``UploadRecord``
    <prefix>:{<ref>}:parts   hash   "<PartNumber>" -> PartInfo JSON, "c<PartNumber>" -> CRC32C
                                    of the file's bytes up to the end of that part
    <prefix>:{<ref>}:lease   string "<epoch>|<connection id>|<channel name>", expires (PX)
    <prefix>:{<ref>}:events  list   JSON timeline, newest last, capped
    <prefix>:index           zset   ref -> last activity (ms); for the admin page and sweeper
    <prefix>:active:<owner>  zset   ref -> lease expiry (ms); concurrent uploads per owner

Every transition runs as one Lua script (``lua/*.lua``, each prefixed with ``lua/_lib.lua``)
and checks the caller's lease epoch (fencing). The two global sorted sets are advisory and
updated beside the scripts, not inside them, because they live in other cluster slots.

Redis Cluster (``REDIS_CLUSTER``): scripts and the one MULTI/EXEC (``snapshot``) only name
keys of one upload (one slot); a pipeline that mixes slots is never a transaction. Keep it
so: a new multi-key command, script key or ``transaction=True`` pipeline across uploads or
global keys fails with CROSSSLOT on a cluster (tests/cluster/ runs against one).
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from .conf import ResumableSettings
from .errors import InvalidState, LeaseLost, NotFound
from .redis_client import AsyncClient, async_client
from .sinks.base import PartInfo

STATES = ("registered", "uploading", "completing", "complete", "consumed", "failed", "aborted",
          "expired")
ACTIVE_STATES = ("registered", "uploading", "completing")
TERMINAL_STATES = ("consumed", "failed", "aborted", "expired")
EVENTS_KEPT = 200

_INT_FIELDS = ("size", "max_file_size", "part_size", "parts_done", "durable", "received", "epoch",
               "tail_offset", "tail_len", "created", "updated", "completed", "spills",
               "attaches", "complete_calls", "crc", "tail_crc", "client_crc")


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class UploadRecord:
    """A ledger record. Sizes and offsets in bytes, times in ms since the epoch, CRCs as
    unsigned 32-bit integers (CRC32C)."""

    ref: str
    state: str
    owner: str = ""
    user: str = ""
    slot: str = ""
    view: str = ""
    max_file_size: int = 0
    client_name: str = ""
    client_type: str = ""
    size: int = 0
    key: str = ""
    upload_id: str = ""
    part_size: int = 0
    parts_done: int = 0
    durable: int = 0
    received: int = 0
    crc: int = 0
    epoch: int = 0
    tail_key: str = ""
    tail_offset: int = 0
    tail_len: int = 0
    tail_crc: int = 0
    head: bytes = b""
    fingerprint: str = ""
    holder: str = ""
    holder_channel: str = ""
    created: int = 0
    updated: int = 0
    completed: int = 0
    etag: str = ""
    checksum: str = ""
    client_crc: int = 0
    error: str = ""
    spills: int = 0
    attaches: int = 0
    complete_calls: int = 0
    extra: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_hash(cls, ref: str, raw: dict[bytes, bytes]) -> UploadRecord:
        known = {f for f in cls.__dataclass_fields__}
        kw: dict[str, Any] = {"ref": ref, "extra": {}}
        for k, v in raw.items():
            name = k.decode()
            if name == "head":
                kw["head"] = bytes(v)
            elif name in _INT_FIELDS:
                kw[name] = int(v) if v not in (b"", None) else 0
            elif name in known and name not in ("ref", "extra"):
                kw[name] = v.decode(errors="replace")
            else:
                kw["extra"][name] = v.decode(errors="replace")
        kw.setdefault("state", "registered")
        return cls(**kw)

    @property
    def part_count(self) -> int:
        """Number of parts the object will have (0 for an empty file)."""
        return -(-self.size // self.part_size) if self.part_size else 0


@dataclass(frozen=True)
class Acquired:
    status: str  # "ok" | "busy" | "state"
    epoch: int = 0
    holder_channel: str = ""
    state: str = ""


class Ledger:
    """Async access to the ledger. Every method may raise redis-py connection errors after
    its retries are exhausted (the service maps them to ``ledger_unavailable``)."""

    def __init__(self, client: AsyncClient, settings: ResumableSettings) -> None:
        self.r = client
        self.prefix = settings.KEY_PREFIX
        self.ttl = int(settings.LEDGER_TTL)
        self.lease_ms = int(settings.LEASE_TTL * 1000)
        self._scripts = {name: self.r.register_script(_load_script(name)) for name in (
            "register", "acquire", "renew", "release", "commit_part", "part_sent", "spill",
            "transition",
            "set_fields", "expire", "drop_tail", "event")}

    @classmethod
    def from_settings(cls, settings: ResumableSettings) -> Ledger:
        """A ledger on ``REDIS_URL``, through redis-py's cluster client when
        ``REDIS_CLUSTER`` is set (``redis_client.async_client``: retries, timeouts)."""
        return cls(async_client(settings), settings)

    async def close(self) -> None:
        await self.r.aclose()

    # -- keys -------------------------------------------------------------------------------
    def _k(self, ref: str, kind: str) -> str:
        return f"{self.prefix}:{{{ref}}}:{kind}"

    def _keys(self, ref: str, *kinds: str) -> list[str]:
        return [self._k(ref, k) for k in kinds]

    @property
    def index_key(self) -> str:
        return f"{self.prefix}:index"

    def _active_key(self, owner: str) -> str:
        return f"{self.prefix}:active:{owner}"

    async def _run(self, name: str, keys: list[str], args: list[Any]) -> Any:
        return await self._scripts[name](keys=keys, args=args)

    # -- records ----------------------------------------------------------------------------
    async def register(self, rec: UploadRecord) -> None:
        """Create the record (state ``registered``). Raises InvalidState if the ref exists."""
        fields_: list[Any] = []
        for name in ("owner", "user", "slot", "view", "max_file_size", "client_name",
                     "client_type", "size", "key", "upload_id", "part_size", "fingerprint",
                     "created", "updated"):
            fields_ += [name, getattr(rec, name)]
        ok = await self._run("register", self._keys(rec.ref, "meta", "parts", "events"),
                             [self.ttl, *fields_])
        if not ok:
            raise InvalidState("ref already registered")
        await self.r.zadd(self.index_key, {rec.ref: rec.updated or now_ms()})
        await self.event(rec.ref, "registered", size=rec.size, part_size=rec.part_size)

    async def get(self, ref: str) -> UploadRecord | None:
        raw = await self.r.hgetall(self._k(ref, "meta"))
        return UploadRecord.from_hash(ref, raw) if raw else None

    async def require(self, ref: str) -> UploadRecord:
        rec = await self.get(ref)
        if rec is None:
            raise NotFound()
        return rec

    async def parts(self, ref: str) -> list[PartInfo]:
        """Every stored part, ordered by PartNumber."""
        raw = await self.r.hgetall(self._k(ref, "parts"))
        out = [PartInfo.from_json(v.decode()) for k, v in raw.items() if k.isdigit()]
        return sorted(out, key=lambda p: p.number)

    async def events(self, ref: str) -> list[dict[str, Any]]:
        return [json.loads(e) for e in await self.r.lrange(self._k(ref, "events"), 0, -1)]

    async def event(self, ref: str, kind: str, **data: Any) -> None:
        """Append to the upload's timeline (for the admin page); best effort."""
        item = json.dumps({"t": now_ms(), "event": kind, **data}, separators=(",", ":"))
        # lua/event.lua: when full, the oldest part_stored entry goes first, so milestones
        # (attached on worker X, spilled, ...) survive uploads of thousands of parts.
        await self._run("event", [self._k(ref, "events")], [item, EVENTS_KEPT, self.ttl])

    async def touch_index(self, ref: str) -> None:
        await self.r.zadd(self.index_key, {ref: now_ms()})

    # -- lease ------------------------------------------------------------------------------
    async def acquire(self, ref: str, conn_id: str, channel: str) -> Acquired:
        """Try to take the writer lease. Raises NotFound for a missing record."""
        res = await self._run("acquire", self._keys(ref, "meta", "lease", "parts"),
                              [conn_id, channel, self.lease_ms, self.ttl, now_ms()])
        status = res[0].decode()
        if status == "not_found":
            raise NotFound()
        if status == "ok":
            return Acquired("ok", epoch=int(res[1]))
        if status == "busy":
            return Acquired("busy", holder_channel=res[1].decode(), epoch=int(res[2]))
        return Acquired("state", state=res[1].decode())

    async def renew(self, ref: str, epoch: int) -> bool:
        res = await self._run("renew", self._keys(ref, "meta", "lease", "parts"),
                              [epoch, self.lease_ms, self.ttl])
        return res == 1

    async def release(self, ref: str, epoch: int) -> bool:
        return await self._run("release", self._keys(ref, "meta", "lease"), [epoch, now_ms()]) == 1

    async def count_active(self, owner: str) -> int:
        """Uploads of ``owner`` whose writer lease is live (per-user concurrency limit)."""
        key = self._active_key(owner)
        async with self.r.pipeline(transaction=False) as p:
            p.zremrangebyscore(key, 0, now_ms())
            p.zcard(key)
            _, n = await p.execute()
        return int(n)

    async def mark_active(self, owner: str, ref: str, active: bool) -> None:
        key = self._active_key(owner)
        if active:
            async with self.r.pipeline(transaction=False) as p:
                p.zadd(key, {ref: now_ms() + self.lease_ms})
                p.expire(key, max(60, self.lease_ms // 1000 * 4))
                await p.execute()
        else:
            await self.r.zrem(key, ref)

    # -- writes (all fenced) ----------------------------------------------------------------
    @staticmethod
    def _fenced(res: list[Any]) -> None:
        status = res[0].decode() if isinstance(res[0], bytes) else str(res[0])
        if status == "lease_lost":
            raise LeaseLost()
        if status == "invalid_state":
            raise InvalidState(f"upload is {res[1].decode()}", state=res[1].decode())
        if status == "not_found":
            raise NotFound()

    async def commit_part(self, ref: str, epoch: int, part: PartInfo,
                          crc_end: int) -> tuple[int, int, str]:
        """Record a stored part. Returns (durable offset, CRC32C of the durable prefix,
        key of a spilled tail this part supersedes or ""). Raises LeaseLost, InvalidState."""
        res = await self._run("commit_part", self._keys(ref, "meta", "parts", "lease"),
                              [epoch, part.number, part.to_json(), crc_end, self.ttl, now_ms()])
        self._fenced(res)
        return int(res[1]), int(res[2]), res[3].decode()

    async def part_sent(self, ref: str, epoch: int, number: int, size: int, crc_end: int,
                        checksum: str | None) -> None:
        """Note that every byte of part ``number`` (``size`` bytes) is here and its store
        request starts; ``crc_end`` is the CRC32C of the file's bytes [0, end of the part).
        Not durable: lets the next writer adopt the part after a crash (``pending_parts``).
        Raises LeaseLost, InvalidState."""
        res = await self._run("part_sent", self._keys(ref, "meta", "parts", "lease"),
                              [epoch, number, size, crc_end, checksum or "-", self.ttl])
        self._fenced(res)

    async def pending_parts(self, ref: str) -> dict[int, tuple[int, int, str | None]]:
        """Parts sent in full but not recorded: ``{number: (size, crc_end, checksum)}``."""
        raw = await self.r.hgetall(self._k(ref, "parts"))
        out: dict[int, tuple[int, int, str | None]] = {}
        for k, v in raw.items():
            if k.startswith(b"p") and k[1:].isdigit():
                size, crc_end, checksum = v.decode().split(" ")
                out[int(k[1:])] = (int(size), int(crc_end),
                                   None if checksum == "-" else checksum)
        return out

    async def spill(self, ref: str, epoch: int, tail_key: str, offset: int, length: int,
                    crc_end: int) -> tuple[int, str]:
        """Record a spilled tail covering [offset, offset+length). Returns (durable, key of
        the tail it replaces or ""). Raises LeaseLost, InvalidState, or ValueError for a tail
        that does not start at the end of the stored parts."""
        res = await self._run("spill", self._keys(ref, "meta", "lease", "parts"),
                              [epoch, tail_key, offset, length, crc_end, self.ttl, now_ms()])
        if res[0] == b"bad_tail":
            raise ValueError(f"tail at {offset} does not continue the durable prefix")
        self._fenced(res)
        return int(res[1]), res[2].decode()

    async def drop_tail(self, ref: str, epoch: int) -> tuple[int, int]:
        """Forget a spilled tail whose object is gone. Returns (durable, crc) at the end of
        the stored parts. Raises LeaseLost."""
        res = await self._run("drop_tail", self._keys(ref, "meta", "lease", "parts"),
                              [epoch, self.ttl, now_ms()])
        self._fenced(res)
        return int(res[1]), int(res[2])

    async def transition(self, ref: str, to: str, from_states: tuple[str, ...],
                         epoch: int | None = None, **fields_: Any) -> tuple[str, str]:
        """Atomically move ``ref`` to ``to`` if it is in ``from_states``. Returns
        ("ok", previous) or ("already", to). Raises InvalidState, LeaseLost, NotFound."""
        flat: list[Any] = []
        for k, v in fields_.items():
            flat += [k, v]
        res = await self._run("transition", self._keys(ref, "meta", "lease", "parts"),
                              ["" if epoch is None else epoch, ",".join(from_states), to,
                               self.ttl, now_ms(), *flat])
        self._fenced(res)
        await self.touch_index(ref)
        return res[0].decode(), res[1].decode()

    async def set_fields(self, ref: str, epoch: int, **fields_: Any) -> None:
        """Fenced write of informational fields. Raises LeaseLost."""
        flat: list[Any] = []
        for k, v in fields_.items():
            flat += [k, v]
        res = await self._run("set_fields", self._keys(ref, "meta", "lease"),
                              [epoch, self.ttl, *flat])
        if res != 1:
            raise LeaseLost()

    async def incr(self, ref: str, name: str) -> int:
        return int(await self.r.hincrby(self._k(ref, "meta"), name, 1))

    # -- operations (sweeper, sessions command, metrics) ------------------------------------
    @property
    def metrics_key(self) -> str:
        """Hash of the process-shared counters (``djust_resumable.metrics``)."""
        return f"{self.prefix}:metrics"

    async def index_items(self) -> list[tuple[str, int]]:
        """Every ``(ref, last activity in ms)`` of the index, newest first."""
        raw = await self.r.zrevrange(self.index_key, 0, -1, withscores=True)
        return [(k.decode(), int(score)) for k, score in raw]

    async def drop_from_index(self, ref: str) -> bool:
        """Remove ``ref`` from the index; True if this call removed it."""
        return bool(await self.r.zrem(self.index_key, ref))

    async def snapshot(self, ref: str) -> tuple[UploadRecord | None, int | None]:
        """The record and the epoch of its live lease (None: no writer holds it), read in one
        MULTI/EXEC, so both describe the same instant (the keys share one hash slot)."""
        async with self.r.pipeline(transaction=True) as p:
            p.hgetall(self._k(ref, "meta"))
            p.get(self._k(ref, "lease"))
            raw, lease = await p.execute()
        rec = UploadRecord.from_hash(ref, raw) if raw else None
        epoch = int(lease.split(b"|", 1)[0]) if lease else None
        return rec, epoch

    async def lease_info(self, ref: str) -> tuple[int, str, str] | None:
        """``(epoch, connection id, channel)`` of the live lease, or None."""
        raw = await self.r.get(self._k(ref, "lease"))
        if not raw:
            return None
        e, conn, channel = raw.decode().split("|", 2)
        return int(e), conn, channel

    async def expire_if_stale(self, ref: str, cutoff_ms: int,
                              reason: str = "expired") -> tuple[str, ...]:
        """Mark ``ref`` ``expired`` if it is registered/uploading, unleased and its last write
        is older than ``cutoff_ms`` — atomically (``lua/expire.lua``). Returns
        ``("ok", previous_state, key, upload_id, tail_key)`` to exactly one caller, else
        ``("skip", why)``."""
        res = await self._run("expire", self._keys(ref, "meta", "lease"),
                              [cutoff_ms, now_ms(), self.ttl, reason])
        out = tuple(x.decode() if isinstance(x, bytes) else str(x) for x in res)
        if out[0] == "ok":
            await self.r.zadd(self.index_key, {ref: now_ms()})
        return out

    async def claim(self, kind: str, item: str, owner: str, ttl_ms: int) -> bool:
        """A short exclusive claim (``SET NX PX``) on one piece of sweeper work, so sweepers
        on several hosts never do it twice. The claim is left to expire, not released: a
        sweeper that listed the item before it was done still finds it claimed."""
        digest = hashlib.sha1(item.encode(), usedforsecurity=False).hexdigest()
        key = f"{self.prefix}:sweep:{kind}:{digest}"
        return bool(await self.r.set(key, owner, nx=True, px=int(ttl_ms)))

    async def first_seen(self, items: list[str], record: bool = True) -> dict[str, int]:
        """When (ms) a sweeper first listed each of ``items`` (multipart UploadIds), kept in
        the hash ``<prefix>:sweep:seen``. With ``record`` the unseen ones are stamped now
        (HSETNX: the earliest sweeper wins) and entries not in ``items`` are dropped; without
        it (dry run) nothing is written and unseen items read as now."""
        key = f"{self.prefix}:sweep:seen"
        t = now_ms()
        if not record:
            vals = await self.r.hmget(key, items) if items else []
            return {i: int(v) if v else t for i, v in zip(items, vals, strict=True)}
        async with self.r.pipeline(transaction=False) as p:
            for i in items:
                p.hsetnx(key, i, t)
            p.hgetall(key)
            res = await p.execute()
        seen = {k.decode(): int(v) for k, v in res[-1].items()}
        gone = [k for k in seen if k not in set(items)]
        if gone:
            await self.r.hdel(key, *gone)
        return {i: seen.get(i, t) for i in items}

    async def unclaim(self, kind: str, item: str, owner: str) -> None:
        """Give a claim back after a failure (only if ``owner`` still holds it), so the next
        run retries at once instead of after the claim's expiry."""
        digest = hashlib.sha1(item.encode(), usedforsecurity=False).hexdigest()
        key = f"{self.prefix}:sweep:{kind}:{digest}"
        if await self.r.get(key) == owner.encode():
            await self.r.delete(key)

    # -- per-owner slot index (djust face: consume_uploaded_entries, get_uploads, max_entries)
    def _owner_key(self, owner: str, slot: str) -> str:
        return f"{self.prefix}:owner:{owner}:{slot}"

    async def index_owner(self, rec: UploadRecord, **meta: Any) -> None:
        """Add ``rec`` to its owner's index for its slot (set ``<prefix>:owner:<owner>:<slot>``)
        and store ``meta`` (validation policy, e.g. ``allow_active``) on the record. Called once
        by ``UploadService.register`` right after the record exists."""
        key = self._owner_key(rec.owner, rec.slot)
        async with self.r.pipeline(transaction=False) as p:
            p.sadd(key, rec.ref)
            p.expire(key, self.ttl)
            if meta:
                p.hset(self._k(rec.ref, "meta"), mapping={k: str(v) for k, v in meta.items()})
            await p.execute()

    async def owner_records(self, owner: str, slot: str) -> list[UploadRecord]:
        """Every record in the owner's index for ``slot``, oldest first. Refs whose record
        expired or that were consumed are dropped from the index on the way."""
        key = self._owner_key(owner, slot)
        refs = sorted(m.decode() for m in await self.r.smembers(key))
        if not refs:
            return []
        async with self.r.pipeline(transaction=False) as p:
            for ref in refs:
                p.hgetall(self._k(ref, "meta"))
            raws = await p.execute()
        out: list[UploadRecord] = []
        stale: list[str] = []
        for ref, raw in zip(refs, raws, strict=True):
            if not raw:
                stale.append(ref)
                continue
            rec = UploadRecord.from_hash(ref, raw)
            if rec.state in ("consumed", "expired"):
                stale.append(ref)
            else:
                out.append(rec)
        if stale:
            await self.r.srem(key, *stale)
        return sorted(out, key=lambda r: (r.created, r.ref))

    async def claim_consumed(self, ref: str) -> bool:
        """The exactly-once claim of a completed upload: atomically ``complete`` ->
        ``consumed`` (``lua/transition.lua``). True for exactly one caller, whichever
        process or thread; False for every other (already consumed, not complete, gone)."""
        try:
            status, _ = await self.transition(ref, "consumed", ("complete",))
        except (InvalidState, NotFound):
            return False
        return status == "ok"

    async def unindex_owner(self, owner: str, slot: str, ref: str) -> None:
        await self.r.srem(self._owner_key(owner, slot), ref)

    async def live_leases(self, owner: str) -> set[str]:
        """Refs of ``owner`` whose writer lease is live (see ``mark_active``)."""
        members = await self.r.zrangebyscore(self._active_key(owner), now_ms(), "+inf")
        return {m.decode() for m in members}


def _load_script(name: str) -> str:
    pkg = resources.files("djust_resumable") / "lua"
    return (pkg / "_lib.lua").read_text() + "\n" + (pkg / f"{name}.lua").read_text()
