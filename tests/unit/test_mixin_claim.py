"""The djust face on fakeredis (real Lua) and the local sink: the exactly-once claim from many
threads, the mount config, get_uploads, cancel, entries over the local sink."""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
from collections import Counter
from pathlib import Path

import fakeredis
import pytest
from django.contrib.auth.models import AnonymousUser
from django.contrib.sessions.backends.cache import SessionStore
from django.core.files.storage import FileSystemStorage
from django.test import RequestFactory
from django.test.utils import override_settings

from djust_resumable import bridge
from djust_resumable.conf import MiB, get_settings
from djust_resumable.entries import DataTooLarge, ResumableUploadEntry
from djust_resumable.ledger import Ledger, UploadRecord, now_ms
from djust_resumable.mixin import ResumableUploadManager, UploadMixin
from djust_resumable.service import UploadService
from djust_resumable.sinks import clear_sink_cache, get_sink
from djust_resumable.tokens import read_token


class AvatarView(UploadMixin):
    def __init__(self, request):
        self.request = request


def make_request(session: SessionStore | None = None):
    req = RequestFactory().get("/")
    req.session = session or SessionStore()
    req.user = AnonymousUser()
    return req


@pytest.fixture
def env(tmp_path: Path):
    root = tmp_path / "store"
    conf = {"SINK": "local", "LOCAL_ROOT": str(root), "REDIS_URL": "redis://unused:1/0",
            "MAX_DATA_BYTES": MiB}
    with override_settings(DJUST_RESUMABLE=conf,
                           SESSION_ENGINE="django.contrib.sessions.backends.cache"):
        clear_sink_cache()
        settings = get_settings()
        server = fakeredis.FakeServer()
        bridge._ensure_loop()
        bridge._services[settings] = UploadService(
            Ledger(fakeredis.FakeAsyncRedis(server=server), settings), get_sink(settings),
            settings)
        try:
            yield settings, Ledger(fakeredis.FakeAsyncRedis(server=server), settings), root
        finally:
            bridge._services.pop(settings, None)
            clear_sink_cache()


async def add_upload(ledger: Ledger, root: Path, grant, data: bytes, name: str = "a.bin",
                     complete: bool = True) -> UploadRecord:
    ref = os.urandom(16).hex()
    key = f"resumable/{ref}"
    t = now_ms()
    rec = UploadRecord(ref=ref, state="registered", owner=grant.owner, user=grant.user,
                       slot=grant.slot, view=grant.view, size=len(data), key=key,
                       upload_id="U", part_size=5 * MiB, client_name=name,
                       client_type="application/octet-stream", created=t, updated=t)
    await ledger.register(rec)
    await ledger.index_owner(rec, allow_active=0)
    epoch = (await ledger.acquire(ref, "c", "ch")).epoch
    if complete:
        (root / "resumable").mkdir(parents=True, exist_ok=True)
        (root / key).write_bytes(data)
        await ledger.transition(ref, "completing", ("uploading",), epoch)
        await ledger.transition(ref, "complete", ("completing",), epoch, crc=123)
    else:
        await ledger.set_fields(ref, epoch, durable=len(data) // 2)
    return await ledger.require(ref)


async def test_mount_config_carries_endpoint_and_token(env):
    settings, _, _ = env
    req = make_request()
    view = AvatarView(req)
    await asyncio.to_thread(view.allow_upload, "avatar", accept=".png,.jpg", max_entries=2,
                            max_file_size=5 * MiB, resumable=True)
    await asyncio.to_thread(view.allow_upload, "plain", accept=".txt")
    assert isinstance(view._upload_manager, ResumableUploadManager)
    assert req.session.session_key  # created because there was none
    state = view._upload_manager.get_upload_state()
    cfg = state["avatar"]["config"]
    assert cfg["resumable"] is True and cfg["endpoint"] == settings.ENDPOINT_PATH
    grant = read_token(cfg["token"], 60)
    assert (grant.slot, grant.max_file_size, grant.max_entries, grant.accept) == (
        "avatar", 5 * MiB, 2, ".png,.jpg")
    assert grant.view.endswith("AvatarView") and grant.user == ""
    assert "token" not in state["plain"]["config"]  # djust's own slot, untouched
    # djust's own upload path refuses the resumable slot, keeps the other.
    mgr = view._upload_manager
    assert mgr.register_entry("avatar", "r1", "a.png", "image/png", 10) is None
    assert mgr.register_entry("plain", "r2", "a.txt", "text/plain", 10) is not None


async def test_consume_is_exactly_once_across_threads_and_views(env):
    settings, ledger, root = env
    session = SessionStore()
    views = [AvatarView(make_request(session)) for _ in range(8)]
    for v in views:
        await asyncio.to_thread(v.allow_upload, "files", max_entries=10, resumable=True)
    grant = views[0]._upload_manager.grants["files"]
    assert all(v._upload_manager.grants["files"].owner == grant.owner for v in views)
    datas = [os.urandom(1000 + i) for i in range(5)]
    refs = {(await add_upload(ledger, root, grant, d)).ref for d in datas}
    pending = await add_upload(ledger, root, grant, os.urandom(4 * MiB), complete=False)

    got: list[ResumableUploadEntry] = []
    lock = threading.Lock()
    barrier = threading.Barrier(len(views))

    def consume(v: AvatarView) -> None:
        barrier.wait()
        for entry in v.consume_uploaded_entries("files"):
            with lock:
                got.append(entry)

    threads = [threading.Thread(target=consume, args=(v,)) for v in views]
    for t in threads:
        t.start()
    for t in threads:
        await asyncio.to_thread(t.join, 30)
    assert Counter(e.ref for e in got) == Counter(refs)  # each exactly once
    assert await asyncio.to_thread(lambda: list(views[0].consume_uploaded_entries("files"))) \
        == []
    for e in got:
        assert (await ledger.get(e.ref)).state == "consumed"
        assert e.complete and e.progress == 100 and e.checksum == f"{123:08x}"
    # The upload still in progress is listed with its live progress, and not consumed.
    listed = await asyncio.to_thread(views[1].get_uploads, "files")
    assert [(e.ref, e.complete, e.progress) for e in listed] == [(pending.ref, False, 50)]


async def test_sync_api_refuses_a_running_loop_async_api_works(env):
    _, ledger, root = env
    view = AvatarView(make_request())
    await asyncio.to_thread(view.allow_upload, "files", resumable=True)
    grant = view._upload_manager.grants["files"]
    rec = await add_upload(ledger, root, grant, b"hello")
    with pytest.raises(bridge.BlockingCallInAsyncContext):
        list(view.consume_uploaded_entries("files"))
    assert [e.ref for e in await view.aget_uploads("files")] == [rec.ref]
    got = [e async for e in view.aconsume_uploaded_entries("files")]
    assert [e.ref for e in got] == [rec.ref]
    assert [e async for e in view.aconsume_uploaded_entries("files")] == []


async def test_cancel_checks_the_owner(env):
    _, ledger, root = env
    mine, other = AvatarView(make_request()), AvatarView(make_request())
    for v in (mine, other):
        await asyncio.to_thread(v.allow_upload, "files", resumable=True, max_entries=5)
    rec = await add_upload(ledger, root, mine._upload_manager.grants["files"], os.urandom(10),
                           complete=False)
    done = await add_upload(ledger, root, mine._upload_manager.grants["files"], b"x")
    await asyncio.to_thread(other.cancel_upload, "files", rec.ref)  # not theirs: ignored
    assert (await ledger.get(rec.ref)).state == "uploading"
    await asyncio.to_thread(mine.cancel_upload, "files", rec.ref)
    assert (await ledger.get(rec.ref)).state == "aborted"
    await asyncio.to_thread(mine.cancel_upload, "files", done.ref)  # complete: discarded
    assert (await ledger.get(done.ref)).state == "aborted"
    assert not (root / done.key).exists()
    assert await asyncio.to_thread(mine.get_uploads, "files") == []


async def test_entry_file_data_and_save_on_the_local_sink(env, tmp_path):
    settings, ledger, root = env
    view = AvatarView(make_request())
    await asyncio.to_thread(view.allow_upload, "files", resumable=True, max_entries=5)
    grant = view._upload_manager.grants["files"]
    small = os.urandom(3000)
    big = os.urandom(2 * MiB)
    await add_upload(ledger, root, grant, small, name="../../etc/small.bin")
    await add_upload(ledger, root, grant, big, name="big.bin")

    def work() -> None:
        entries = {e.size: e for e in view.consume_uploaded_entries("files")}
        e = entries[3000]
        assert e.safe_client_name == "small.bin" and e.upload_name == "files"
        assert e.data == small and e.writer_result is None and e.error is None
        f = e.file
        assert f.size == 3000
        f.seek(1000)
        assert f.read(10) == small[1000:1010]
        b = entries[2 * MiB]
        with pytest.raises(DataTooLarge):
            _ = b.data
        # Inside the sink's root: a server-side file copy; outside: streamed by Django.
        inside = FileSystemStorage(location=str(root / "media"))
        name = b.save("avatars/big.bin", storage=inside)
        assert (root / "media" / name).read_bytes() == big
        outside = FileSystemStorage(location=str(tmp_path / "elsewhere"))
        name2 = b.save("avatars/big.bin", storage=outside)
        digest = hashlib.sha256((tmp_path / "elsewhere" / name2).read_bytes()).hexdigest()
        assert digest == hashlib.sha256(big).hexdigest()

    await asyncio.to_thread(work)


def test_non_resumable_slots_are_djusts_own(env):
    view = AvatarView(make_request())
    view.allow_upload("doc", accept=".txt")
    mgr = view._upload_manager
    entry = mgr.register_entry("doc", "ref1", "a.txt", "text/plain", 5)
    mgr.add_chunk("ref1", 0, b"hello")
    assert mgr.complete_upload("ref1") is not None
    assert [e.ref for e in view.get_uploads("doc")] == ["ref1"]
    got = [(e, e.data) for e in view.consume_uploaded_entries("doc")]
    assert got == [(entry, b"hello")]
    assert view.get_uploads("doc") == []
