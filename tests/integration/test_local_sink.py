"""Local filesystem sink: the shared Sink contract on a tmp dir, plus its own layout rules."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from django.test.utils import override_settings

from djust_resumable.conf import MiB, get_settings
from djust_resumable.errors import StorageError
from djust_resumable.sinks import clear_sink_cache, get_sink
from djust_resumable.sinks.base import crc32c_b64, crc32c_value
from djust_resumable.sinks.local import LocalSink
from tests.integration.sink_contract import SinkContract, upload

pytestmark = pytest.mark.integration


@pytest.fixture
def sink(tmp_path):
    s = LocalSink(get_settings({"SINK": "local", "LOCAL_ROOT": str(tmp_path / "store")}))
    yield s
    s.close()


class TestLocalContract(SinkContract):
    pass


async def test_parts_are_files_and_completion_cleans_up(sink: LocalSink):
    key = "resumable/obj1"
    upload_id = await sink.create(key, "application/octet-stream")
    data = os.urandom(5 * MiB)
    part = await sink.write_part(key, upload_id, 1, data)
    part_file = sink.root / ".mpu" / upload_id / "1"
    assert part_file.read_bytes() == data
    assert part.etag == f'"{hashlib.md5(data).hexdigest()}"'
    last = await sink.write_part(key, upload_id, 2, b"end")
    result = await sink.complete(key, upload_id, [part, last], crc32c_value(data + b"end"),
                                 len(data) + 3)
    assert (sink.root / key).read_bytes() == data + b"end"
    assert not (sink.root / ".mpu" / upload_id).exists()
    assert result.checksum == crc32c_b64(crc32c_value(data + b"end"))
    assert result.etag.endswith('-2"')
    leftovers = [p.name for p in (sink.root / "resumable").iterdir() if p.name.startswith(".tmp")]
    assert leftovers == []


async def test_full_object_crc_mismatch_is_refused(sink: LocalSink):
    key = "resumable/obj2"
    upload_id = await sink.create(key, "application/octet-stream")
    part = await sink.write_part(key, upload_id, 1, b"abc")
    with pytest.raises(StorageError):
        await sink.complete(key, upload_id, [part], crc32c_value(b"abd"), 3)
    assert await sink.stat(key) is None
    # the upload is still open: the right CRC completes it
    assert (await sink.complete(key, upload_id, [part], crc32c_value(b"abc"), 3)).size == 3


async def test_wrong_part_etag_is_refused(sink: LocalSink):
    key = "resumable/obj3"
    upload_id = await sink.create(key, "application/octet-stream")
    part = await sink.write_part(key, upload_id, 1, b"abc")
    await sink.write_part(key, upload_id, 1, b"xyz")  # overwritten since
    with pytest.raises(StorageError):
        await sink.complete(key, upload_id, [part], None, 3)


@pytest.mark.parametrize("key", ["../escape", "/abs", "a/../../b", ".mpu/x", "a//b", ""])
async def test_keys_cannot_escape_the_root(sink: LocalSink, key):
    with pytest.raises(StorageError):
        await sink.create(key, "application/octet-stream")
    with pytest.raises(StorageError):
        await sink.spill_tail(key, b"x")


async def test_unknown_upload_id_is_a_storage_error(sink: LocalSink):
    with pytest.raises(StorageError):
        await sink.write_part("resumable/k", "0" * 32, 1, b"x")
    with pytest.raises(StorageError):
        await sink.write_part("resumable/k", "../../etc", 1, b"x")


async def test_tails_live_under_the_storage_prefix(sink: LocalSink):
    tk = sink.tail_key("resumable/k", "r1", 1, 0)
    await sink.spill_tail(tk, b"tail")
    assert (sink.root / "resumable" / ".tails" / "r1" / "1-0").read_bytes() == b"tail"


def test_local_root_defaults_to_media_root(tmp_path):
    with override_settings(MEDIA_ROOT=str(tmp_path / "media"),
                           DJUST_RESUMABLE={"SINK": "local"}):
        clear_sink_cache()
        try:
            s = get_sink()
            assert isinstance(s, LocalSink)
            assert s.root == (tmp_path / "media" / "djust_resumable").resolve()
            assert get_sink() is s
        finally:
            clear_sink_cache()


def test_local_root_setting_wins(tmp_path):
    s = LocalSink(get_settings({"LOCAL_ROOT": str(tmp_path / "x")}))
    assert s.root == Path(tmp_path / "x").resolve()


def test_get_sink_accepts_a_dotted_path_and_rejects_non_sinks(tmp_path):
    settings = get_settings({"SINK": "djust_resumable.sinks.local.LocalSink",
                             "LOCAL_ROOT": str(tmp_path)})
    try:
        assert isinstance(get_sink(settings), LocalSink)
        with pytest.raises(TypeError):
            get_sink(get_settings({"SINK": "djust_resumable.conf.get_settings"}))
        with pytest.raises(ImportError):
            get_sink(get_settings({"SINK": "no.such.Sink"}))
    finally:
        clear_sink_cache()


async def test_data_survives_a_new_sink_instance(tmp_path):
    # Another process (another worker) continues an upload from what is on disk.
    settings = get_settings({"LOCAL_ROOT": str(tmp_path)})
    a, b = LocalSink(settings), LocalSink(settings)
    key = "resumable/shared"
    upload_id = await a.create(key, "application/octet-stream")
    p1 = await a.write_part(key, upload_id, 1, b"1" * (5 * MiB))
    p2 = await b.write_part(key, upload_id, 2, b"2" * 10)
    assert (await b.complete(key, upload_id, [p1, p2], None, 5 * MiB + 10)).size == 5 * MiB + 10
    a.close()
    b.close()


async def test_upload_helper_roundtrip(sink: LocalSink):
    _, parts, result = await upload(sink, "resumable/h", b"abc" * 10)
    assert [p.size for p in parts] == [30]
    assert result.size == 30
