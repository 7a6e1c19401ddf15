"""An S3 multipart ``UploadWriter`` for djust 1.2.6, written the way djust documents it.

djust 1.2.6 ships no S3 writer (``djust.contrib.uploads`` has Azure and GCS writers, S3
presigned URLs and S3 event hooks only); its ``BufferedUploadWriter`` docstring shows an S3
writer calling boto3 from ``on_part``. This is that example with two changes for a fair
comparison: 8 MiB parts (the part size of every other system in the bench) and the same
per-part CRC32C checksums our S3 sink and the raw boto3 runs send. djust calls writers
synchronously on the event loop, so each ``upload_part`` blocks the connection's loop.

``PEER_MARKS`` (settings) names a file that receives one JSON line per upload with epoch
times of the last part's end and of CompleteMultipartUpload, so the bench splits the
streaming phase from the completion on the server's clock.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from typing import Any

import boto3
import google_crc32c
from botocore.config import Config
from django.conf import settings
from djust.uploads import BufferedUploadWriter

_client: Any = None


def _s3() -> Any:
    global _client
    if _client is None:
        _client = boto3.client(
            "s3",
            endpoint_url=settings.PEER_S3_ENDPOINT,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            config=Config(s3={"addressing_style": "path"},
                          retries={"mode": "standard", "total_max_attempts": 5}),
        )
    return _client


def _b64(crc: int) -> str:
    return base64.b64encode(crc.to_bytes(4, "big")).decode()


class S3MultipartWriter(BufferedUploadWriter):
    buffer_threshold = settings.PEER_PART_SIZE

    def open(self) -> None:
        # Server-generated key: never the client's file name.
        self._key = f"djust-peer/{uuid.uuid4().hex}"
        self._bucket = settings.PEER_S3_BUCKET
        self._mpu = _s3().create_multipart_upload(
            Bucket=self._bucket, Key=self._key, ChecksumAlgorithm="CRC32C",
            ChecksumType="FULL_OBJECT")["UploadId"]
        self._parts: list[dict[str, Any]] = []
        self._crc = 0
        self._size = 0
        self._t_parts_done = 0.0

    def on_part(self, part: bytes, part_num: int) -> None:
        crc = google_crc32c.value(part)
        self._crc = google_crc32c.extend(self._crc, part)
        self._size += len(part)
        resp = _s3().upload_part(Bucket=self._bucket, Key=self._key, UploadId=self._mpu,
                                 PartNumber=part_num, Body=part, ChecksumCRC32C=_b64(crc))
        self._parts.append({"PartNumber": part_num, "ETag": resp["ETag"],
                            "ChecksumCRC32C": _b64(crc)})
        self._t_parts_done = time.time()

    def on_complete(self) -> Any:
        if getattr(self, "_done", None) is not None:
            return self._done
        t0 = time.time()
        resp = _s3().complete_multipart_upload(
            Bucket=self._bucket, Key=self._key, UploadId=self._mpu,
            MultipartUpload={"Parts": self._parts}, ChecksumType="FULL_OBJECT",
            ChecksumCRC32C=_b64(self._crc))
        t1 = time.time()
        if settings.PEER_MARKS:
            with open(settings.PEER_MARKS, "a") as f:
                f.write(json.dumps({"id": self.upload_id, "key": self._key,
                                    "last_part_done": self._t_parts_done,
                                    "complete_start": t0, "complete_end": t1,
                                    "size": self._size, "parts": len(self._parts)}) + "\n")
        self._done = {"key": self._key, "etag": resp["ETag"], "size": self._size}
        return self._done

    def abort(self, error: BaseException) -> None:
        if getattr(self, "_mpu", None):
            try:
                _s3().abort_multipart_upload(Bucket=self._bucket, Key=self._key,
                                             UploadId=self._mpu)
            except Exception:  # noqa: BLE001 - abort() must not raise (UploadWriter contract)
                pass
