"""End to end through real uvicorn workers, a real redis-server and a real moto_server."""

from __future__ import annotations

import pytest
from websockets.asyncio.client import connect

from djust_resumable.client import ResumableUploader
from djust_resumable.conf import MiB
from tests.helpers import make_random_file, sha256_file

from .conftest import object_sha256

pytestmark = pytest.mark.integration


async def test_200mib_upload_is_byte_exact(workers, token, tmp_path, s3_client, s3_bucket,
                                           ledger_reader):
    (w,) = workers(1)
    src = make_random_file(tmp_path / "src.bin", 200 * MiB)
    result = await ResumableUploader(w.url, token).upload(str(src))
    rec = await ledger_reader().get(result.ref)
    assert rec.state == "complete" and rec.size == 200 * MiB
    assert rec.received == rec.durable == rec.size  # the admin shows 100 % received
    assert object_sha256(s3_client, s3_bucket, rec.key) == (sha256_file(src), 200 * MiB)
    assert result.crc32c == rec.crc
    assert result.bytes_resent == 0 and result.connections == 1
    assert src.name not in rec.key  # keys never derive from the client's file name
    parts = await ledger_reader().parts(result.ref)
    assert [p.size for p in parts[:-1]] == [rec.part_size] * (len(parts) - 1)
    assert all(p.checksum for p in parts)
    assert w.alive()


PS = 5 * MiB


@pytest.mark.parametrize("size", [0, 1, PS - 1, PS, PS + 1, 2 * PS],
                         ids=["0B", "1B", "part-1", "part", "part+1", "two-parts"])
async def test_edge_sizes(size, workers, token, tmp_path, s3_client, s3_bucket, ledger_reader):
    (w,) = workers(1, PREFERRED_PART_SIZE=PS)
    src = make_random_file(tmp_path / "edge.bin", size)
    result = await ResumableUploader(w.url, token).upload(str(src))
    rec = await ledger_reader().get(result.ref)
    assert rec.state == "complete" and rec.part_size == PS
    assert object_sha256(s3_client, s3_bucket, rec.key) == (sha256_file(src), size)
    parts = await ledger_reader().parts(result.ref)
    assert len(parts) == -(-size // PS)


async def test_permessage_deflate_is_refused(workers):
    (w,) = workers(1)
    async with connect(w.url, compression="deflate") as ws:
        assert ws.response.headers.get("Sec-WebSocket-Extensions") is None
