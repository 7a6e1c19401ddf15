"""The Sink contract, run against every sink (S3 on moto_server, local filesystem).

Subclass ``SinkContract`` in a test module and provide a ``sink`` fixture; the class name does
not start with ``Test`` so pytest collects it only through the subclasses.
"""

from __future__ import annotations

import asyncio
import io
import os
import random

import pytest

from djust_resumable.conf import MiB
from djust_resumable.errors import StorageError
from djust_resumable.sinks.base import (
    CompleteResult,
    PartInfo,
    Sink,
    compute_checksum,
    crc32c_value,
)
from tests.helpers import make_random_file, sha256_bytes, sha256_file


def read_all(sink: Sink, key: str) -> bytes:
    with sink.open_reader(key) as r:
        return r.read()


async def upload(sink: Sink, key: str, data: bytes, part_size: int = 5 * MiB,
                 crc: bool = True) -> tuple[str, list[PartInfo], CompleteResult]:
    upload_id = await sink.create(key, "application/octet-stream")
    parts = []
    for i, start in enumerate(range(0, len(data), part_size), start=1):
        parts.append(await sink.write_part(key, upload_id, i, data[start:start + part_size]))
    full = crc32c_value(data) if crc else None
    result = await sink.complete(key, upload_id, parts, full, len(data))
    return upload_id, parts, result


@pytest.mark.integration
class SinkContract:
    prefix = "resumable/"

    def key(self) -> str:
        return f"{self.prefix}{os.urandom(8).hex()}"

    async def test_two_parts_and_a_short_last_part_round_trip(self, sink: Sink, tmp_path):
        src = make_random_file(tmp_path / "src.bin", 10 * MiB + 1234, seed=7)
        data = src.read_bytes()
        key = self.key()
        upload_id = await sink.create(key, "application/octet-stream")
        # The three buffer types callers hand over: bytes, bytearray, memoryview.
        p1 = await sink.write_part(key, upload_id, 1, data[:5 * MiB])
        p2 = await sink.write_part(key, upload_id, 2, bytearray(data[5 * MiB:10 * MiB]))
        p3 = await sink.write_part(key, upload_id, 3, memoryview(data)[10 * MiB:])
        assert [p.number for p in (p1, p2, p3)] == [1, 2, 3]
        assert [p.size for p in (p1, p2, p3)] == [5 * MiB, 5 * MiB, 1234]
        for p, chunk in ((p1, data[:5 * MiB]), (p3, data[10 * MiB:])):
            assert p.etag.startswith('"') and p.etag.endswith('"')
            assert p.checksum == compute_checksum(chunk, sink.settings.CHECKSUM)
            assert PartInfo.from_json(p.to_json()) == p
        # Parts may arrive in any order at completion; the sink sorts them.
        result = await sink.complete(key, upload_id, [p3, p1, p2], crc32c_value(data), len(data))
        assert result.size == len(data)
        assert result.etag
        assert await sink.stat(key) == len(data)
        assert sha256_bytes(read_all(sink, key)) == sha256_file(src)
        assert (key, upload_id) not in {(k, u) for k, u, _ in
                                        await sink.list_multipart_uploads(self.prefix)}

    async def test_non_last_part_below_5_mib_is_rejected(self, sink: Sink):
        key = self.key()
        upload_id = await sink.create(key, "application/octet-stream")
        a = await sink.write_part(key, upload_id, 1, b"a" * MiB)
        b = await sink.write_part(key, upload_id, 2, b"b" * 10)
        with pytest.raises(StorageError) as ei:
            await sink.complete(key, upload_id, [a, b], None, MiB + 10)
        assert ei.value.code == "storage_error"
        assert "Traceback" not in ei.value.message
        assert await sink.stat(key) is None
        await sink.abort(key, upload_id)

    async def test_spill_read_delete_tail(self, sink: Sink):
        key = self.key()
        tail_key = sink.tail_key(key, "ref123", 3, 16 * MiB)
        data = os.urandom(300_000)
        await sink.spill_tail(tail_key, bytearray(data))
        assert await sink.read_tail(tail_key) == data
        await sink.delete_tail(tail_key)
        await sink.delete_tail(tail_key)  # missing is not an error
        with pytest.raises(StorageError):
            await sink.read_tail(tail_key)

    def test_tail_key_comes_from_server_values_only(self, sink: Sink):
        tk = sink.tail_key("resumable/obj", "ref123", 3, 16 * MiB)
        assert tk == f"{sink.settings.STORAGE_PREFIX}.tails/ref123/3-{16 * MiB}"
        assert sink.tail_key("k", "ref123", 4, 16 * MiB) != tk  # new epoch, new object
        for bad in ("../x", "a/b", "", ".hidden", "x" * 200):
            with pytest.raises(ValueError):
                sink.tail_key("k", bad, 1, 0)

    async def test_abort_is_idempotent(self, sink: Sink):
        key = self.key()
        upload_id = await sink.create(key, "application/octet-stream")
        await sink.write_part(key, upload_id, 1, b"x" * 1000)
        assert (key, upload_id) in {(k, u) for k, u, _ in
                                    await sink.list_multipart_uploads(self.prefix)}
        await sink.abort(key, upload_id)
        await sink.abort(key, upload_id)
        assert (key, upload_id) not in {(k, u) for k, u, _ in
                                        await sink.list_multipart_uploads(self.prefix)}
        with pytest.raises(StorageError):
            await sink.write_part(key, upload_id, 2, b"y" * 10)
        assert await sink.stat(key) is None

    async def test_complete_twice_returns_the_same_object(self, sink: Sink):
        key = self.key()
        data = os.urandom(5 * MiB + 99)
        upload_id, parts, first = await upload(sink, key, data)
        again = await sink.complete(key, upload_id, parts, crc32c_value(data), len(data))
        assert again.size == first.size == len(data)
        assert again.etag == first.etag
        assert read_all(sink, key) == data

    async def test_zero_byte_object(self, sink: Sink):
        key = self.key()
        upload_id = await sink.create(key, "text/plain")
        result = await sink.complete(key, upload_id, [], 0, 0)
        assert result.size == 0
        assert await sink.stat(key) == 0
        assert read_all(sink, key) == b""
        assert upload_id not in {u for _, u, _ in await sink.list_multipart_uploads(self.prefix)}
        # and the retry after a crash is harmless
        assert (await sink.complete(key, upload_id, [], 0, 0)).size == 0

    async def test_complete_checks_the_sizes_add_up(self, sink: Sink):
        key = self.key()
        upload_id = await sink.create(key, "application/octet-stream")
        p = await sink.write_part(key, upload_id, 1, b"z" * 10)
        with pytest.raises(ValueError):
            await sink.complete(key, upload_id, [p], None, 11)
        await sink.abort(key, upload_id)

    async def test_open_reader_seeks_and_reads_ranges(self, sink: Sink):
        key = self.key()
        data = random.Random(3).randbytes(6 * MiB + 321)
        await upload(sink, key, data)
        rng = random.Random(5)
        with sink.open_reader(key) as r:
            assert r.seekable() and r.readable()
            assert r.seek(0, io.SEEK_END) == len(data)
            assert r.read(10) == b""
            for _ in range(25):
                pos = rng.randrange(0, len(data))
                n = rng.choice([1, 17, 4096, MiB + 5, 3 * MiB])
                assert r.seek(pos) == pos
                assert r.read(n) == data[pos:pos + n]
                assert r.tell() == min(pos + n, len(data))
            r.seek(-100, io.SEEK_END)
            assert r.read() == data[-100:]
            r.seek(10)
            r.seek(5, io.SEEK_CUR)
            assert r.read(5) == data[15:20]

    async def test_missing_objects(self, sink: Sink):
        key = self.key()
        assert await sink.stat(key) is None
        await sink.delete(key)  # missing is not an error
        with pytest.raises(StorageError):
            sink.open_reader(key)

    async def test_delete_removes_the_object(self, sink: Sink):
        key = self.key()
        await upload(sink, key, b"q" * 100)
        assert await sink.stat(key) == 100
        await sink.delete(key)
        assert await sink.stat(key) is None

    async def test_list_multipart_uploads_filters_by_prefix(self, sink: Sink):
        run = os.urandom(4).hex()
        k1, k2 = f"{self.prefix}{run}/a", f"{self.prefix}{run}/b"
        other = f"{self.prefix}other-{run}"
        u1 = await sink.create(k1, "application/octet-stream")
        u2 = await sink.create(k2, "application/octet-stream")
        u3 = await sink.create(other, "application/octet-stream")
        found = await sink.list_multipart_uploads(f"{self.prefix}{run}/")
        assert sorted((k, u) for k, u, _ in found) == sorted([(k1, u1), (k2, u2)])
        assert all(hasattr(t, "year") for _, _, t in found)
        for k, u in ((k1, u1), (k2, u2), (other, u3)):
            await sink.abort(k, u)

    async def test_parallel_parts_do_not_block_the_loop(self, sink: Sink):
        key = self.key()
        upload_id = await sink.create(key, "application/octet-stream")
        chunk = os.urandom(8 * MiB)
        ticks: list[float] = []
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()

        async def ticker() -> None:
            while not stop.is_set():
                ticks.append(loop.time())
                await asyncio.sleep(0)  # tick whenever the loop is free

        t = asyncio.create_task(ticker())
        await asyncio.sleep(0.02)
        start = loop.time()
        parts = await asyncio.gather(*(sink.write_part(key, upload_id, n, chunk)
                                       for n in (1, 2, 3)))
        elapsed = loop.time() - start
        stop.set()
        await t
        during = [x for x in ticks if start <= x <= start + elapsed]
        assert [p.size for p in parts] == [8 * MiB] * 3
        # The loop kept running while 24 MiB went to storage. Were the writes done on the
        # loop thread, the ticker could only run between two of them (<= 3 ticks); counts,
        # not durations, so a loaded machine does not make this flaky.
        assert len(during) >= 8, (len(during), elapsed)
        thirds = {min(2, int((x - start) / elapsed * 3)) for x in during}
        assert thirds == {0, 1, 2}, "the loop stalled for a third of the upload"
        await sink.abort(key, upload_id)
