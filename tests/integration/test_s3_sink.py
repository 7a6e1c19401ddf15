"""S3 sink against a REAL moto_server process (see conftest.moto_server)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import os

import boto3
import pytest
from botocore.awsrequest import AWSResponse
from botocore.config import Config

from djust_resumable.conf import MiB, get_settings
from djust_resumable.errors import StorageError
from djust_resumable.sinks import get_sink
from djust_resumable.sinks.base import crc32c_b64, crc32c_value
from djust_resumable.sinks.s3 import S3Sink
from tests.helpers import make_random_file, sha256_file
from tests.integration.sink_contract import SinkContract, upload

pytestmark = pytest.mark.integration


@pytest.fixture
def sink(django_s3_settings):
    s = get_sink()
    assert isinstance(s, S3Sink)
    yield s


def capture_headers(client, operation: str) -> list[dict]:
    """Record the HTTP headers botocore really sends for ``operation`` (observation only)."""
    seen: list[dict] = []

    def record(request, **kw):
        seen.append({k.lower(): (v.decode() if isinstance(v, bytes) else v)
                     for k, v in request.headers.items()})

    client.meta.events.register(f"before-send.s3.{operation}", record)
    return seen


class TestS3Contract(SinkContract):
    pass


def test_get_sink_builds_one_s3_sink_from_django_storages_settings(django_s3_settings):
    s = get_sink()
    assert isinstance(s, S3Sink)
    assert get_sink() is s
    assert s.bucket == django_s3_settings.bucket
    assert s.client.meta.endpoint_url == django_s3_settings.endpoint_url
    # standard retries were merged into django-storages' client config
    assert s.client.meta.config.retries["mode"] == "standard"
    assert s.client.meta.config.retries["total_max_attempts"] == 5
    assert s.client.meta.config.max_pool_connections >= s.settings.STORAGE_THREADS


def test_user_retry_config_is_kept(django_s3_settings):
    from django.test.utils import override_settings

    from djust_resumable.sinks import clear_sink_cache

    with override_settings(AWS_S3_CLIENT_CONFIG=Config(retries={"mode": "adaptive",
                                                                "max_attempts": 2})):
        clear_sink_cache()
        s = get_sink()
        assert s.client.meta.config.retries["mode"] == "adaptive"
        assert s.client.meta.config.retries["total_max_attempts"] == 3
    clear_sink_cache()


async def test_object_read_back_with_boto3_matches_the_source(sink, s3_client, tmp_path):
    src = make_random_file(tmp_path / "f.bin", 2 * 5 * MiB + 777, seed=11)
    key = f"resumable/{os.urandom(6).hex()}"
    await upload(sink, key, src.read_bytes())
    body = s3_client.get_object(Bucket=sink.bucket, Key=key)["Body"].read()
    assert hashlib.sha256(body).hexdigest() == sha256_file(src)


async def test_entity_too_small_is_a_storage_error(sink):
    key = f"resumable/{os.urandom(6).hex()}"
    upload_id = await sink.create(key, "application/octet-stream")
    a = await sink.write_part(key, upload_id, 1, os.urandom(5 * MiB - 1))
    b = await sink.write_part(key, upload_id, 2, b"x")
    with pytest.raises(StorageError) as ei:
        await sink.complete(key, upload_id, [a, b], None, 5 * MiB)
    assert "5 MiB" in ei.value.message
    assert ei.value.__cause__ is not None
    assert "EntityTooSmall" in str(ei.value.__cause__)


@pytest.mark.parametrize("algorithm", ["CRC32C", "SHA256", None])
async def test_per_part_checksum_is_computed_and_sent(django_s3_settings, algorithm):
    django_s3_settings(CHECKSUM=algorithm)
    sink = get_sink()
    sent = capture_headers(sink.client, "UploadPart")
    key = f"resumable/{os.urandom(6).hex()}"
    data = os.urandom(1000)
    upload_id = await sink.create(key, "application/octet-stream")
    part = await sink.write_part(key, upload_id, 1, data)
    headers = sent[-1]
    if algorithm == "CRC32C":
        expected = crc32c_b64(crc32c_value(data))
        assert part.checksum == expected
        assert headers["x-amz-checksum-crc32c"] == expected
    elif algorithm == "SHA256":
        expected = base64.b64encode(hashlib.sha256(data).digest()).decode()
        assert part.checksum == expected
        assert headers["x-amz-checksum-sha256"] == expected
    else:
        assert part.checksum is None
        assert "x-amz-checksum-crc32c" not in headers
    result = await sink.complete(key, upload_id, [part], None, len(data))
    assert result.size == len(data)


async def test_full_object_crc32c_on_moto(sink, s3_client):
    assert sink.full_object  # CHECKSUM=CRC32C and FULL_OBJECT_CHECKSUM=True by default
    key = f"resumable/{os.urandom(6).hex()}"
    data = os.urandom(5 * MiB + 4321)
    created = capture_headers(sink.client, "CreateMultipartUpload")
    completed = capture_headers(sink.complete_client, "CompleteMultipartUpload")
    _, _, result = await upload(sink, key, data)
    assert created[-1]["x-amz-checksum-type"] == "FULL_OBJECT"
    assert created[-1]["x-amz-checksum-algorithm"] == "CRC32C"
    assert completed[-1]["x-amz-checksum-type"] == "FULL_OBJECT"
    assert completed[-1]["x-amz-checksum-crc32c"] == crc32c_b64(crc32c_value(data))
    # moto 5.2 confirms no checksum in its CompleteMultipartUpload answer, so neither do we.
    assert result.checksum in (None, crc32c_b64(crc32c_value(data)))
    head = s3_client.head_object(Bucket=sink.bucket, Key=key, ChecksumMode="ENABLED")
    assert head["ChecksumType"] == "FULL_OBJECT"
    assert head["ContentLength"] == len(data)


async def test_moto_facts_documented_in_the_s3_module(sink, s3_client):
    """Keeps the module docstring of sinks/s3.py honest when moto is upgraded."""
    key = f"resumable/{os.urandom(6).hex()}"
    data = os.urandom(2048)
    c = s3_client
    up = c.create_multipart_upload(Bucket=sink.bucket, Key=key, ChecksumAlgorithm="CRC32C",
                                   ChecksumType="FULL_OBJECT")
    assert up["ChecksumType"] == "FULL_OBJECT"
    wrong = crc32c_b64(crc32c_value(b"not the data"))
    part = c.upload_part(Bucket=sink.bucket, Key=key, UploadId=up["UploadId"], PartNumber=1,
                         Body=data, ChecksumCRC32C=wrong)  # not verified
    assert "ChecksumCRC32C" not in part  # not echoed
    done = c.complete_multipart_upload(
        Bucket=sink.bucket, Key=key, UploadId=up["UploadId"], ChecksumType="FULL_OBJECT",
        ChecksumCRC32C=wrong,  # not verified either
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]})
    assert "ChecksumCRC32C" not in done
    head = c.head_object(Bucket=sink.bucket, Key=key, ChecksumMode="ENABLED")
    # moto computes its own CRC32C of the object (a true one: the test extras install the
    # crc32c package; without it moto silently returns zlib's CRC32 under that name)
    assert head["ChecksumCRC32C"] == crc32c_b64(crc32c_value(data))
    assert head["ChecksumCRC32C"] != base64.b64encode(
        binascii.crc32(data).to_bytes(4, "big")).decode()
    # completing again is idempotent on moto
    again = c.complete_multipart_upload(
        Bucket=sink.bucket, Key=key, UploadId=up["UploadId"],
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]})
    assert again["ETag"] == done["ETag"]


async def test_whole_part_goes_out_with_its_checksum_in_a_header(sink, s3_client):
    """A part is a plain request: Content-Length, CRC32C header, no payload signature to
    compute; ListParts finds it (adoption)."""
    from djust_resumable.sinks.base import PartStream

    key = f"resumable/{os.urandom(6).hex()}"
    upload_id = await sink.create(key, "application/octet-stream")
    data = os.urandom(5 * MiB + 3)
    sent = capture_headers(sink.client, "UploadPart")
    stream = PartStream(len(data), algorithm="CRC32C")
    for i in range(0, len(data), MiB):
        stream.feed(data[i:i + MiB])
    part = await sink.write_part_stream(key, upload_id, 1, stream)
    h = sent[-1]
    assert h["x-amz-checksum-crc32c"] == crc32c_b64(crc32c_value(data)) == part.checksum
    assert h["x-amz-content-sha256"] == "UNSIGNED-PAYLOAD"
    assert int(h["content-length"]) == len(data) and "transfer-encoding" not in h
    assert part.etag.strip('"') == hashlib.md5(data).hexdigest()
    listed = await sink.list_parts(key, upload_id, [1, 2])
    assert list(listed) == [1] and listed[1].size == len(data) and listed[1].etag == part.etag
    assert listed[1].checksum is None  # moto 5.2 does not report part checksums
    await sink.abort(key, upload_id)


@pytest.fixture
def one_shot_sink(moto_server, s3_bucket):
    """An S3 sink whose client does not retry: moto answers an unknown UploadId at
    completion with HTTP 500, which the standard retry mode would retry 5 times."""
    client = boto3.client("s3", endpoint_url=moto_server.url, region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing",
                          config=Config(retries={"mode": "standard", "total_max_attempts": 1}))
    s = S3Sink(get_settings({}), client=client, bucket=s3_bucket)
    yield s
    s.close()


async def test_complete_after_the_upload_vanished_finds_the_object(one_shot_sink, moto_server):
    # A crash after CompleteMultipartUpload but before the ledger write: the retry meets an
    # upload the store no longer knows. The object of the right size is the proof it finished.
    sink = one_shot_sink
    key = f"resumable/{os.urandom(6).hex()}"
    data = os.urandom(5 * MiB + 10)
    upload_id, parts, first = await upload(sink, key, data)
    # Make the UploadId unknown to moto (as after AWS's NoSuchUpload) without touching the
    # object: start + abort another upload and reuse *its* id.
    other = await sink.create(key, "application/octet-stream")
    await sink.abort(key, other)
    before = moto_server.count_complete_multipart(sink.bucket)
    result = await sink.complete(key, other, parts, crc32c_value(data), len(data))
    assert moto_server.count_complete_multipart(sink.bucket) == before + 1
    assert result.size == len(data)
    assert result.etag == first.etag


async def test_complete_of_a_vanished_upload_without_object_fails(one_shot_sink):
    sink = one_shot_sink
    key = f"resumable/{os.urandom(6).hex()}"
    upload_id = await sink.create(key, "application/octet-stream")
    part = await sink.write_part(key, upload_id, 1, b"x" * 100)
    await sink.abort(key, upload_id)
    with pytest.raises(StorageError):
        await sink.complete(key, upload_id, [part], None, 100)


async def test_store_rejecting_full_object_falls_back_to_composite(one_shot_sink, s3_client):
    """Fault injection on a real client: moto accepts FULL_OBJECT, so botocore's documented
    ``before-call`` hook answers CreateMultipartUpload-with-ChecksumType the way stores without
    FULL_OBJECT support do. Every other request reaches moto."""
    sink = one_shot_sink
    rejected: list[str] = []

    def reject_full_object(params, model, **kw):
        if model.name == "CreateMultipartUpload" and "x-amz-checksum-type" in params["headers"]:
            rejected.append(model.name)
            return (AWSResponse(params["url"], 400, {}, None),
                    {"Error": {"Code": "InvalidRequest",
                               "Message": "ChecksumType is not supported"},
                     "ResponseMetadata": {"HTTPStatusCode": 400}})
        return None

    sink.client.meta.events.register("before-call.s3.CreateMultipartUpload", reject_full_object)
    key = f"resumable/{os.urandom(6).hex()}"
    data = os.urandom(1000)
    _, _, result = await upload(sink, key, data)
    assert rejected == ["CreateMultipartUpload"]
    assert sink.full_object is False  # remembered for the process
    assert result.size == len(data)
    head = s3_client.head_object(Bucket=sink.bucket, Key=key, ChecksumMode="ENABLED")
    assert head.get("ChecksumType") in (None, "COMPOSITE")
    await upload(sink, f"{key}-2", data)
    assert rejected == ["CreateMultipartUpload"]  # not asked again


async def test_reader_issues_ranged_gets_not_a_whole_object_get(sink, moto_server):
    key = f"resumable/{os.urandom(6).hex()}"
    data = os.urandom(6 * MiB)
    await upload(sink, key, data)
    ranges = capture_headers(sink.client, "GetObject")
    with sink.open_reader(key) as r:
        r.seek(3 * MiB)
        assert r.read(100) == data[3 * MiB:3 * MiB + 100]
    assert ranges and all("range" in h for h in ranges)
    assert ranges[0]["range"] == f"bytes={3 * MiB}-{4 * MiB - 1}"  # 1 MiB read-ahead


def test_moto_log_records_request_lines(moto_server, s3_client, s3_bucket):
    s3_client.put_object(Bucket=s3_bucket, Key="probe", Body=b"1")
    assert moto_server.count_requests("PUT", rf"^/{s3_bucket}/probe$") == 1


async def test_slow_completion_is_sent_once(django_s3_settings, moto_server, s3_bucket):
    """CompleteMultipartUpload gets its own read timeout (COMPLETE_TIMEOUT): moto assembles
    512 MiB in seconds, longer than this client's 0.5 s read timeout for every other call,
    and the completion still goes out exactly once (botocore used to time it out and send it
    again while the first one was still running)."""
    import asyncio

    from django.test.utils import override_settings

    settings = django_s3_settings.settings()
    writer = S3Sink(settings)
    key = "slow/complete"
    upload_id = await writer.create(key, "application/octet-stream")
    chunk = os.urandom(16 * MiB)  # the same bytes in every part: content is not the point
    parts = []
    for first in range(1, 33, 4):
        parts += await asyncio.gather(*(writer.write_part(key, upload_id, n, chunk)
                                         for n in range(first, first + 4)))
    with override_settings(AWS_S3_CLIENT_CONFIG=Config(
            read_timeout=0.5, retries={"mode": "standard", "total_max_attempts": 5})):
        sink = S3Sink(settings)
    assert sink.client.meta.config.read_timeout == 0.5
    assert sink.complete_client.meta.config.read_timeout == settings.COMPLETE_TIMEOUT
    before = moto_server.count_complete_multipart(s3_bucket)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    done = await sink.complete(key, upload_id, sorted(parts, key=lambda p: p.number), None,
                               32 * 16 * MiB)
    elapsed = loop.time() - t0
    assert done.size == 512 * MiB
    assert elapsed > 0.5, "moto completed faster than the short timeout: the test proves nothing"
    assert moto_server.count_complete_multipart(s3_bucket) - before == 1
