"""Ledger scripts on fakeredis (with lupa running the real Lua files)."""

from __future__ import annotations

import asyncio

import fakeredis
import pytest

from djust_resumable.conf import MiB, get_settings
from djust_resumable.errors import InvalidState, LeaseLost, NotFound
from djust_resumable.ledger import Ledger, UploadRecord, now_ms
from djust_resumable.sinks.base import PartInfo

PS = 5 * MiB


@pytest.fixture
def ledger():
    settings = get_settings({"LEASE_TTL": 2, "LEDGER_TTL": 600})
    lg = Ledger(fakeredis.FakeAsyncRedis(), settings)
    yield lg


def rec(ref: str = "a" * 32, size: int = 12 * MiB) -> UploadRecord:
    t = now_ms()
    return UploadRecord(ref=ref, state="registered", owner="u:s", user="u", slot="files",
                        size=size, key=f"k/{ref}", upload_id="UID", part_size=PS, created=t,
                        updated=t, client_name="x.bin")


def part(n: int, size: int = PS) -> PartInfo:
    return PartInfo(number=n, etag=f'"etag{n}"', size=size, checksum=None)


async def test_register_is_unique_and_hash_tagged(ledger):
    r = rec()
    await ledger.register(r)
    with pytest.raises(InvalidState):
        await ledger.register(r)
    keys = sorted(k.decode() for k in await ledger.r.keys("*"))
    tagged = [k for k in keys if "{" in k]
    assert tagged and all(f"{{{r.ref}}}" in k for k in tagged)
    got = await ledger.get(r.ref)
    assert got.state == "registered" and got.size == 12 * MiB and got.part_size == PS
    assert 0 < await ledger.r.ttl(f"djr:{{{r.ref}}}:meta") <= 600


async def test_acquire_busy_then_epoch_fences_old_holder(ledger):
    r = rec()
    await ledger.register(r)
    a = await ledger.acquire(r.ref, "connA", "chanA")
    assert a.status == "ok" and a.epoch == 1
    assert (await ledger.get(r.ref)).state == "uploading"
    b = await ledger.acquire(r.ref, "connB", "chanB")
    assert b.status == "busy" and b.holder_channel == "chanA"
    # A's lease disappears (expiry); B takes over with a higher epoch.
    await ledger.r.delete(f"djr:{{{r.ref}}}:lease")
    b = await ledger.acquire(r.ref, "connB", "chanB")
    assert b.status == "ok" and b.epoch == 2
    # A wakes up late: every write is refused.
    with pytest.raises(LeaseLost):
        await ledger.commit_part(r.ref, a.epoch, part(1), 123)
    with pytest.raises(LeaseLost):
        await ledger.spill(r.ref, a.epoch, "t", 0, 10, 1)
    with pytest.raises(LeaseLost):
        await ledger.transition(r.ref, "completing", ("uploading",), a.epoch)
    assert not await ledger.renew(r.ref, a.epoch)
    assert not await ledger.release(r.ref, a.epoch)
    assert (await ledger.get(r.ref)).durable == 0
    assert await ledger.renew(r.ref, b.epoch)


async def test_expired_lease_is_reclaimed_only_when_nobody_else_came(ledger):
    """A Redis outage (or a stall) longer than the lease: the holder's next write re-creates
    its lease when no acquire happened since (same epoch), nobody released it and the upload
    is writable; otherwise it stays fenced."""
    lease_key = lambda r: f"djr:{{{r.ref}}}:lease"  # noqa: E731
    r = rec()
    await ledger.register(r)
    a = await ledger.acquire(r.ref, "connA", "chanA")
    await ledger.r.delete(lease_key(r))  # expired, nobody came
    durable, *_ = await ledger.commit_part(r.ref, a.epoch, part(1), 123)
    assert durable == PS
    assert (await ledger.r.get(lease_key(r))).decode() == f"{a.epoch}|connA|chanA"
    assert 0 < await ledger.r.pttl(lease_key(r)) <= ledger.lease_ms
    assert (await ledger.r.hget(f"djr:{{{r.ref}}}:meta", "reclaims")) == b"1"
    # The reclaimed lease is a real lease: another connection finds it busy.
    assert (await ledger.acquire(r.ref, "connB", "chanB")).status == "busy"
    await ledger.r.delete(lease_key(r))
    assert await ledger.renew(r.ref, a.epoch)  # renew reclaims too
    # Expired and then taken by B: A stays fenced even after B's lease expires in turn.
    await ledger.r.delete(lease_key(r))
    b = await ledger.acquire(r.ref, "connB", "chanB")
    await ledger.r.delete(lease_key(r))
    with pytest.raises(LeaseLost):
        await ledger.commit_part(r.ref, a.epoch, part(2), 456)
    # B released: its lease is gone on purpose, a late write of B's is not a reclaim.
    b2 = await ledger.acquire(r.ref, "connB", "chanB")
    assert await ledger.release(r.ref, b2.epoch)
    assert not await ledger.renew(r.ref, b2.epoch)
    # Aborted while the lease was expired: no reclaim.
    c = await ledger.acquire(r.ref, "connC", "chanC")
    await ledger.r.delete(lease_key(r))
    await ledger.r.hset(f"djr:{{{r.ref}}}:meta", "state", "aborted")
    assert not await ledger.renew(r.ref, c.epoch)
    assert b.epoch < b2.epoch < c.epoch


async def test_acquire_missing_and_terminal(ledger):
    with pytest.raises(NotFound):
        await ledger.acquire("b" * 32, "c", "ch")
    r = rec()
    await ledger.register(r)
    await ledger.transition(r.ref, "aborted", ("registered",))
    got = await ledger.acquire(r.ref, "c", "ch")
    assert got.status == "state" and got.state == "aborted"


async def test_parts_out_of_order_advance_contiguous_prefix(ledger):
    r = rec(size=12 * MiB)  # parts of 5, 5, 2 MiB
    await ledger.register(r)
    e = (await ledger.acquire(r.ref, "c", "ch")).epoch
    durable, crc, _ = await ledger.commit_part(r.ref, e, part(2), 222)
    assert (durable, crc) == (0, 0)  # part 1 missing: nothing durable yet
    durable, crc, _ = await ledger.commit_part(r.ref, e, part(1), 111)
    assert (durable, crc) == (10 * MiB, 222)
    durable, crc, _ = await ledger.commit_part(r.ref, e, part(3, 2 * MiB), 333)
    assert (durable, crc) == (12 * MiB, 333)
    parts = await ledger.parts(r.ref)
    assert [p.number for p in parts] == [1, 2, 3] and parts[2].size == 2 * MiB


async def test_spill_then_part_supersedes_tail(ledger):
    r = rec()
    await ledger.register(r)
    e = (await ledger.acquire(r.ref, "c", "ch")).epoch
    await ledger.commit_part(r.ref, e, part(1), 11)
    with pytest.raises(ValueError):  # a tail must start at the end of the stored parts
        await ledger.spill(r.ref, e, "tails/x", 3, 10, 5)
    durable, old = await ledger.spill(r.ref, e, "tails/1", PS, 1000, 77)
    assert (durable, old) == (PS + 1000, "")
    got = await ledger.get(r.ref)
    assert (got.tail_key, got.tail_offset, got.tail_len, got.crc) == ("tails/1", PS, 1000, 77)
    # A bigger spill replaces the first and names it for deletion.
    durable, old = await ledger.spill(r.ref, e, "tails/2", PS, 3000, 78)
    assert (durable, old) == (PS + 3000, "tails/1")
    # A shorter spill would move the durable offset backwards: refused.
    with pytest.raises(ValueError):
        await ledger.spill(r.ref, e, "tails/3", PS, 10, 79)
    durable, crc, old = await ledger.commit_part(r.ref, e, part(2), 99)
    assert (durable, crc, old) == (2 * PS, 99, "tails/2")
    got = await ledger.get(r.ref)
    assert got.tail_len == 0 and got.tail_key == ""


async def test_transitions_atomic_idempotent_and_claim_once(ledger):
    r = rec()
    await ledger.register(r)
    e = (await ledger.acquire(r.ref, "c", "ch")).epoch
    assert await ledger.transition(r.ref, "completing", ("uploading",), e) == ("ok", "uploading")
    assert await ledger.transition(r.ref, "completing", ("uploading",), e) == (
        "already", "completing")
    with pytest.raises(InvalidState):
        await ledger.transition(r.ref, "consumed", ("complete",))
    await ledger.transition(r.ref, "complete", ("completing",), e, etag='"x-2"')
    claims = await asyncio.gather(*[ledger.transition(r.ref, "consumed", ("complete",))
                                    for _ in range(10)])
    assert sorted(c[0] for c in claims) == ["already"] * 9 + ["ok"]
    got = await ledger.get(r.ref)
    assert got.state == "consumed" and got.etag == '"x-2"'


async def test_commit_refused_outside_uploading(ledger):
    r = rec()
    await ledger.register(r)
    e = (await ledger.acquire(r.ref, "c", "ch")).epoch
    await ledger.transition(r.ref, "aborted", ("uploading",))
    with pytest.raises(InvalidState):
        await ledger.commit_part(r.ref, e, part(1), 1)


async def test_events_and_index(ledger):
    r = rec()
    await ledger.register(r)
    await ledger.event(r.ref, "hello", n=1)
    kinds = [e["event"] for e in await ledger.events(r.ref)]
    assert kinds == ["registered", "hello"]
    assert await ledger.r.zscore(ledger.index_key, r.ref) is not None


async def test_timeline_keeps_milestones_over_thousands_of_parts(ledger):
    from djust_resumable.ledger import EVENTS_KEPT

    r = rec()
    await ledger.register(r)
    await ledger.event(r.ref, "attached", worker="w1")
    for n in range(1, EVENTS_KEPT + 150):
        await ledger.event(r.ref, "part_stored", part=n)
        if n == 120:
            await ledger.event(r.ref, "attached", worker="w2")
    ev = await ledger.events(r.ref)
    assert len(ev) == EVENTS_KEPT
    kinds = [e["event"] for e in ev]
    # Every milestone survived, in order; the newest part entries are there.
    assert [e.get("worker") for e in ev if e["event"] == "attached"] == ["w1", "w2"]
    assert kinds[0] == "registered"
    parts = [e["part"] for e in ev if e["event"] == "part_stored"]
    assert parts == list(range(EVENTS_KEPT + 150 - len(parts), EVENTS_KEPT + 150))
    assert 0 < await ledger.r.ttl(f"djr:{{{r.ref}}}:events") <= ledger.ttl
    # Only milestones: the oldest go, as plain trimming would.
    r2 = rec("b" * 32)
    await ledger.register(r2)
    for n in range(EVENTS_KEPT + 5):
        await ledger.event(r2.ref, "attached", n=n)
    ev = await ledger.events(r2.ref)
    assert len(ev) == EVENTS_KEPT and ev[-1]["n"] == EVENTS_KEPT + 4 and ev[0]["n"] == 5


async def test_set_fields_is_fenced(ledger):
    r = rec()
    await ledger.register(r)
    e = (await ledger.acquire(r.ref, "c", "ch")).epoch
    await ledger.set_fields(r.ref, e, received=1234, head=b"\x89PNG")
    got = await ledger.get(r.ref)
    assert (got.received, got.head) == (1234, b"\x89PNG")
    await ledger.release(r.ref, e)
    with pytest.raises(LeaseLost):
        await ledger.set_fields(r.ref, e, received=99)
    assert (await ledger.get(r.ref)).received == 1234
