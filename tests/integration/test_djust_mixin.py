"""The djust face against real workers, a real redis-server and a real moto_server: bytes go
through a worker with the Python client; this process plays the LiveView (settings aimed at the
same Redis and bucket) and consumes, reads and copies the stored objects."""

from __future__ import annotations

import asyncio
import os
import threading
from collections import Counter

import pytest
from django.contrib.auth.models import AnonymousUser
from django.contrib.sessions.backends.cache import SessionStore
from django.test import RequestFactory
from django.test.utils import override_settings

from djust_resumable.client import ResumableUploader, UploadFailed
from djust_resumable.conf import MiB
from djust_resumable.entries import DataTooLarge
from djust_resumable.mixin import UploadMixin
from tests.helpers import make_random_file, sha256_file

from .conftest import SERVER_DEFAULTS, object_sha256

pytestmark = pytest.mark.integration

PS = 5 * MiB
PNG_HEAD = (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06"
            b"\x00\x00\x00\x1f\x15\xc4\x89")


class FilesView(UploadMixin):
    def __init__(self, request):
        self.request = request


@pytest.fixture
def live(django_s3_settings, redis_server):
    """This process configured like the workers (same Redis, bucket and part size)."""
    with override_settings(SESSION_ENGINE="django.contrib.sessions.backends.cache"):
        django_s3_settings(REDIS_URL=redis_server.url, PREFERRED_PART_SIZE=PS,
                           MAX_DATA_BYTES=2 * MiB, **SERVER_DEFAULTS)
        yield django_s3_settings


def view_for(session: SessionStore, **slots) -> FilesView:
    req = RequestFactory().get("/")
    req.session, req.user = session, AnonymousUser()
    v = FilesView(req)
    for name, kw in slots.items():
        v.allow_upload(name, resumable=True, max_file_size=1 << 40, **kw)
    return v


def config(view: FilesView, slot: str) -> dict:
    return view._upload_manager.get_upload_state()[slot]["config"]


async def test_upload_consume_once_read_and_copy(workers, live, tmp_path, s3_client, s3_bucket,
                                                 moto_server):
    (w,) = workers(1, PREFERRED_PART_SIZE=PS)
    session = SessionStore()
    views = await asyncio.to_thread(
        lambda: [view_for(session, files={"max_entries": 3}) for _ in range(6)])
    cfg = config(views[0], "files")
    url = f"ws://127.0.0.1:{w.port}{cfg['endpoint']}"
    src = make_random_file(tmp_path / "movie.bin", 12 * MiB + 123)
    small = make_random_file(tmp_path / "small.bin", 1000)
    big = await ResumableUploader(url, cfg["token"]).upload(str(src))
    tiny = await ResumableUploader(url, cfg["token"]).upload(str(small))

    # Six handlers (six views of the same session, as on six workers) consume at once.
    got: list = []
    lock = threading.Lock()
    barrier = threading.Barrier(len(views))

    def consume(v: FilesView) -> None:
        barrier.wait()
        for e in v.consume_uploaded_entries("files"):
            with lock:
                got.append(e)

    threads = [threading.Thread(target=consume, args=(v,)) for v in views]
    for t in threads:
        t.start()
    for t in threads:
        await asyncio.to_thread(t.join, 60)
    assert Counter(e.ref for e in got) == Counter([big.ref, tiny.ref])
    assert await asyncio.to_thread(lambda: list(views[0].consume_uploaded_entries("files"))) \
        == []
    entry = next(e for e in got if e.ref == big.ref)
    assert (entry.size, entry.client_name, entry.complete, entry.progress) == (
        12 * MiB + 123, "movie.bin", True, 100)
    assert entry.checksum == f"{big.crc32c:08x}"
    raw = src.read_bytes()

    def reads() -> None:
        # Seek + ranged reads match the source.
        f = entry.file
        assert f.size == len(raw)
        f.seek(7 * MiB + 5)
        assert f.read(4096) == raw[7 * MiB + 5: 7 * MiB + 5 + 4096]
        f.seek(-10, os.SEEK_END)
        assert f.read() == raw[-10:]
        with pytest.raises(DataTooLarge):
            _ = entry.data
        assert next(e for e in got if e.ref == tiny.ref).data == small.read_bytes()

    await asyncio.to_thread(reads)

    # save(): server-side copy, the source is never downloaded through Django.
    from storages.backends.s3 import S3Storage

    gets_before = moto_server.count_requests("GET", entry.storage_name)
    name = await asyncio.to_thread(entry.save, "copies/movie.bin", S3Storage())
    assert moto_server.count_requests("GET", entry.storage_name) == gets_before
    assert object_sha256(s3_client, s3_bucket, name) == (sha256_file(src), len(raw))

    # The seed tutorial's line keeps working (streams through django-storages).
    with override_settings(STORAGES={"default": {"BACKEND": "storages.backends.s3.S3Storage"},
                                     "staticfiles": {"BACKEND": "django.contrib.staticfiles."
                                                     "storage.StaticFilesStorage"}}):
        from django.core.files.storage import default_storage

        saved = await asyncio.to_thread(
            lambda: default_storage.save(f"avatars/{entry.safe_client_name}", entry.file))
    assert object_sha256(s3_client, s3_bucket, saved) == (sha256_file(src), len(raw))


async def test_get_uploads_live_progress_and_cancel(workers, live, tmp_path, ledger_reader,
                                                    s3_client, s3_bucket):
    (w,) = workers(1, PREFERRED_PART_SIZE=PS)
    view = await asyncio.to_thread(view_for, SessionStore(), files={})
    cfg = config(view, "files")
    url = f"ws://127.0.0.1:{w.port}{cfg['endpoint']}"
    # Larger than the window (PARTS_IN_FLIGHT parts), so the upload can be held mid-way.
    src = make_random_file(tmp_path / "half.bin", 10 * PS)
    seen, release = asyncio.Event(), asyncio.Event()

    async def on_progress(sent, durable, size):
        if durable >= 2 * PS:
            seen.set()
            await release.wait()  # hold the upload in flight

    up = ResumableUploader(url, cfg["token"], on_progress=on_progress, give_up_after=5)
    task = asyncio.create_task(up.upload(str(src)))
    await asyncio.wait_for(seen.wait(), 60)
    entries = await asyncio.to_thread(view.get_uploads, "files")
    assert len(entries) == 1 and not entries[0].complete
    assert 20 <= entries[0].progress < 100 and entries[0].ref == up.ref
    await asyncio.to_thread(view.cancel_upload, "files", up.ref)
    release.set()
    with pytest.raises(UploadFailed):
        await asyncio.wait_for(task, 60)
    rec = await ledger_reader().get(up.ref)
    assert rec.state == "aborted"
    assert not s3_client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads")
    assert await asyncio.to_thread(view.get_uploads, "files") == []


async def test_renamed_exe_fails_with_invalid_content(workers, live, tmp_path, ledger_reader,
                                                      s3_client, s3_bucket):
    (w,) = workers(1, PREFERRED_PART_SIZE=PS)
    view = await asyncio.to_thread(view_for, SessionStore(), pics={"accept": "image/*"})
    cfg = config(view, "pics")
    url = f"ws://127.0.0.1:{w.port}{cfg['endpoint']}"
    exe = tmp_path / "holiday.png"
    exe.write_bytes(b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff" + os.urandom(15 * MiB))
    up = ResumableUploader(url, cfg["token"])
    with pytest.raises(UploadFailed) as e:
        await up.upload(str(exe), content_type="image/png")
    assert e.value.code == "invalid_content"
    rec = await ledger_reader().get(up.ref)
    assert (rec.state, rec.error) == ("failed", "invalid_content")
    # Refused when its head arrived, not after the whole file: no part was ever stored and
    # the client sent at most one window (PARTS_IN_FLIGHT x part size).
    assert rec.parts_done == 0 and up.bytes_sent <= rec.part_size < exe.stat().st_size
    assert not s3_client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads")
    assert s3_client.list_objects_v2(Bucket=s3_bucket).get("KeyCount", 0) == 0
    # A real PNG passes the same slot; a PDF is not accepted at all.
    png = tmp_path / "real.png"
    png.write_bytes(PNG_HEAD + os.urandom(1000))
    ok = await ResumableUploader(url, cfg["token"]).upload(str(png))
    assert (await ledger_reader().get(ok.ref)).state == "complete"
    pdf = tmp_path / "doc.pdf"
    pdf.write_bytes(b"%PDF-1.4\n" + os.urandom(100))
    with pytest.raises(UploadFailed) as e:
        await ResumableUploader(url, cfg["token"]).upload(str(pdf))
    assert e.value.code == "not_accepted"
    entries = await asyncio.to_thread(lambda: list(view.consume_uploaded_entries("pics")))
    assert [x.ref for x in entries] == [ok.ref]


async def test_svg_refused_unless_allow_active_content(workers, live, tmp_path, ledger_reader):
    (w,) = workers(1, PREFERRED_PART_SIZE=PS)
    view = await asyncio.to_thread(
        view_for, SessionStore(), strict={"accept": "image/*"},
        lenient={"accept": "image/*", "allow_active_content": True})
    svg = tmp_path / "logo.svg"
    svg.write_bytes(b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>')
    strict = config(view, "strict")
    url = f"ws://127.0.0.1:{w.port}{strict['endpoint']}"
    with pytest.raises(UploadFailed) as e:
        await ResumableUploader(url, strict["token"]).upload(str(svg))
    assert e.value.code == "active_content"
    # Renamed to .png, the bytes still give it away at finish.
    disguised = tmp_path / "logo.png"
    disguised.write_bytes(svg.read_bytes())
    with pytest.raises(UploadFailed) as e:
        await ResumableUploader(url, strict["token"]).upload(str(disguised))
    assert e.value.code == "invalid_content"
    ok = await ResumableUploader(url, config(view, "lenient")["token"]).upload(str(svg))
    assert (await ledger_reader().get(ok.ref)).state == "complete"


async def test_max_entries_at_open(workers, live, tmp_path):
    (w,) = workers(1, PREFERRED_PART_SIZE=PS)
    view = await asyncio.to_thread(view_for, SessionStore(), one={"max_entries": 1})
    cfg = config(view, "one")
    url = f"ws://127.0.0.1:{w.port}{cfg['endpoint']}"
    src = make_random_file(tmp_path / "a.bin", 4 * PS)
    gate, release = asyncio.Event(), asyncio.Event()

    async def on_progress(sent, durable, size):
        gate.set()
        await release.wait()

    first = ResumableUploader(url, cfg["token"], on_progress=on_progress)
    task = asyncio.create_task(first.upload(str(src)))
    await asyncio.wait_for(gate.wait(), 30)
    with pytest.raises(UploadFailed) as e:
        await ResumableUploader(url, cfg["token"], give_up_after=0.5).upload(str(src))
    assert e.value.code == "too_many_entries"
    release.set()
    await asyncio.wait_for(task, 60)
    # Once the first is complete the slot takes another.
    await ResumableUploader(url, cfg["token"]).upload(str(src))
