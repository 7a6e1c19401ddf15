"""S3 multipart sink (boto3), configured from django-storages' ``AWS_*`` settings.

What moto_server 5.2.5 (the test store) does with checksums, checked against a real
moto_server process (tests/integration/test_s3_sink.py keeps these facts honest):

* ``CreateMultipartUpload`` accepts ``ChecksumAlgorithm=CRC32C`` and ``ChecksumType=FULL_OBJECT``
  and echoes both in its answer.
* ``UploadPart`` accepts ``x-amz-checksum-crc32c`` / ``x-amz-checksum-sha256`` but neither
  verifies them (a wrong value is stored happily) nor echoes them in the answer. botocore sends
  the value we pass unchanged and does not need awscrt for it (it needs awscrt only to compute
  CRC32C itself).
* ``CompleteMultipartUpload`` accepts ``ChecksumType=FULL_OBJECT`` + ``ChecksumCRC32C`` but does
  not verify the value and does not return a checksum. It computes its own "CRC32C" for
  HeadObject(ChecksumMode=ENABLED), which without the optional ``crc32c`` package is really a
  zlib CRC32 (moto/s3/utils.py falls back silently) — and botocore, which validates that
  value on GetObject once awscrt is installed, then refuses every read. The test extras
  install ``crc32c``.
* ``ListParts`` reports each part's number, ETag and size but no checksum.
* Completing an already completed upload again answers 200 with the same ETag; completing an
  unknown or aborted UploadId answers HTTP 500 (a KeyError inside moto), not NoSuchUpload.
  ``AbortMultipartUpload`` of an unknown UploadId answers NoSuchUpload (404).
* A non-last part under 5 MiB fails at completion with ``EntityTooSmall``.

A part's body is the ``PartStream`` its frames were fed into, sent with ``Content-Length``, its
checksum in a header and no payload signature.

Stores that reject ``ChecksumType=FULL_OBJECT`` (older S3-compatible servers) are detected on
first use: the sink retries once without it and stops asking for it for the process lifetime.
"""

from __future__ import annotations

import io
import logging
import threading
from datetime import datetime
from typing import Any

from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from ..conf import MiB, ResumableSettings
from ..errors import StorageError
from .base import (
    Buffer,
    CompleteResult,
    PartInfo,
    PartStream,
    Sink,
    compute_checksum,
    crc32c_b64,
)

log = logging.getLogger(__name__)

#: Error codes that mean "this store does not know ChecksumType / FULL_OBJECT".
_UNSUPPORTED_CODES = {"InvalidRequest", "InvalidArgument", "NotImplemented",
                      "UnsupportedArgument", "InvalidParameter"}
_MISSING_CODES = {"NoSuchKey", "404", "NotFound"}


def _code(exc: BaseException) -> str:
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", ""))
    return ""


def _status(exc: BaseException) -> int:
    if isinstance(exc, ClientError):
        return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    return 0


def _fail(what: str, exc: BaseException) -> StorageError:
    code = _code(exc) or type(exc).__name__
    err = StorageError(f"s3 {what} failed: {code}")
    err.__cause__ = exc
    return err


def _client_from_django(settings: ResumableSettings) -> tuple[Any, str, Any]:
    """Two boto3 S3 clients and the bucket name, built exactly as django-storages builds them:
    ``(client, bucket, complete_client)``.

    django-storages owns the meaning of every ``AWS_*`` setting (endpoint, region, credentials,
    addressing style, AWS_S3_CLIENT_CONFIG). We only add standard-mode retries when the user's
    client config has none, and enough HTTP connections for our thread pool.
    ``complete_client`` is the same configuration with ``read_timeout = COMPLETE_TIMEOUT``
    for CompleteMultipartUpload alone (S3 may take minutes to assemble a big object).
    """
    client, bucket = _django_client(settings)
    complete_client, _ = _django_client(
        settings, Config(read_timeout=float(settings.COMPLETE_TIMEOUT)))
    return client, bucket, complete_client


def _django_client(settings: ResumableSettings, override: Config | None = None
                   ) -> tuple[Any, str]:
    from storages.backends.s3 import S3Storage

    storage = S3Storage()
    cfg: Config = storage.client_config
    extra: dict[str, Any] = {}
    if not getattr(cfg, "retries", None):
        # "total" counts the first try too: 1 request + 4 retries.
        extra["retries"] = {"mode": "standard", "total_max_attempts": 5}
    threads = int(settings.STORAGE_THREADS)
    if (getattr(cfg, "max_pool_connections", None) or 10) < threads + 2:
        extra["max_pool_connections"] = threads + 2
    s3 = dict(getattr(cfg, "s3", None) or {})
    if s3.get("payload_signing_enabled") is not False:
        # Over plain HTTP botocore signs each body's SHA-256, which means reading every part
        # twice; the per-part checksum already guards the bytes (over HTTPS botocore does not
        # sign bodies that carry a checksum anyway).
        s3["payload_signing_enabled"] = False
        extra["s3"] = s3
    if extra:
        cfg = cfg.merge(Config(**extra))
    if override is not None:
        cfg = cfg.merge(override)
    storage.client_config = cfg
    # boto3 clients are thread-safe (resources are not): keep only the client.
    return storage.connection.meta.client, storage.bucket_name


def _part_request_options(params: dict[str, Any], **_: Any) -> None:
    """A part body is read once per attempt and its checksum travels in a header: never let
    the signer hash it first. Our clients are built without payload signing
    (``_django_client``); this covers a client handed to ``S3Sink`` that signs payloads (over
    plain HTTP botocore would read every part a second time, and its CRT signer would need to
    rewind a body being fed)."""
    if not isinstance(params.get("body"), PartStream):
        return
    context = params.get("context", {})
    config = context.get("client_config")
    if config is not None and (getattr(config, "s3", None) or {}).get(
            "payload_signing_enabled") is not False:
        context["client_config"] = config.merge(
            Config(s3={**(config.s3 or {}), "payload_signing_enabled": False}))


class S3Sink(Sink):
    """Multipart uploads to S3 (or any S3 API: MinIO, R2, moto).

    ``client``/``bucket`` default to django-storages' configuration; pass them to use another
    client (tests do, to change retry settings).
    """

    name = "s3"

    def __init__(self, settings: ResumableSettings | None = None, *, client: Any = None,
                 bucket: str | None = None) -> None:
        super().__init__(settings)
        complete_client = client
        if client is None:
            client, default_bucket, complete_client = _client_from_django(self.settings)
            bucket = bucket or default_bucket
        if not bucket:
            raise StorageError("s3 sink needs AWS_STORAGE_BUCKET_NAME")
        self.client = client
        # CompleteMultipartUpload only: the same settings with a long read timeout.
        self.complete_client = complete_client
        self.bucket = bucket
        alg = (self.settings.CHECKSUM or "").upper() or None
        if alg not in (None, "CRC32C", "SHA256"):
            raise ValueError(f"unsupported CHECKSUM {self.settings.CHECKSUM!r}")
        self.algorithm: str | None = alg
        # Flipped to False (once per process) when the store rejects ChecksumType=FULL_OBJECT.
        self.full_object = bool(self.settings.FULL_OBJECT_CHECKSUM) and alg == "CRC32C"
        self._lock = threading.Lock()
        self.client.meta.events.register("before-call.s3.UploadPart", _part_request_options,
                                         unique_id="djust-resumable-part-options")

    # -- multipart

    def _create(self, key: str, content_type: str) -> str:
        kw: dict[str, Any] = {"Bucket": self.bucket, "Key": key,
                              "ContentType": content_type or "application/octet-stream"}
        if self.algorithm:
            kw["ChecksumAlgorithm"] = self.algorithm
        if self.full_object:
            try:
                return self.client.create_multipart_upload(
                    **kw, ChecksumType="FULL_OBJECT")["UploadId"]
            except ClientError as exc:
                if _code(exc) not in _UNSUPPORTED_CODES:
                    raise _fail("create", exc) from exc
                self._disable_full_object(exc)
        try:
            return self.client.create_multipart_upload(**kw)["UploadId"]
        except (ClientError, BotoCoreError) as exc:
            raise _fail("create", exc) from exc

    def _disable_full_object(self, exc: BaseException) -> None:
        with self._lock:
            if self.full_object:
                self.full_object = False
                log.warning("object store rejected ChecksumType=FULL_OBJECT (%s); "
                            "using composite checksums from now on", _code(exc))

    def _write_part(self, key: str, upload_id: str, number: int, data: Buffer,
                    crc32c: int | None = None) -> PartInfo:
        # botocore takes bytes and bytearray bodies but refuses memoryview; google_crc32c
        # needs a read-only buffer. With the CRC32C given, a bytearray part is sent as is:
        # no copy of up to 5 GiB per part.
        body = data if isinstance(data, (bytes, bytearray)) else bytes(data)
        if self.algorithm == "CRC32C" and crc32c is None and not isinstance(body, bytes):
            body = bytes(body)
        checksum = compute_checksum(body, self.algorithm, crc32c)
        kw: dict[str, Any] = {"Bucket": self.bucket, "Key": key, "UploadId": upload_id,
                              "PartNumber": number, "Body": body}
        if checksum is not None:
            # Passing the value stops botocore from computing one (CRC32C would need awscrt).
            kw[f"Checksum{self.algorithm}"] = checksum
        try:
            resp = self.client.upload_part(**kw)
        except (ClientError, BotoCoreError) as exc:
            raise _fail(f"upload_part {number}", exc) from exc
        echoed = resp.get(f"Checksum{self.algorithm}") if self.algorithm else None
        if echoed is not None and echoed != checksum:
            raise StorageError(f"s3 upload_part {number}: store checksum differs")
        return PartInfo(number=number, etag=resp["ETag"], size=len(body), checksum=checksum)

    def _write_part_stream(self, key: str, upload_id: str, number: int,
                           stream: PartStream) -> PartInfo:
        if stream.fed != stream.length:
            raise ValueError("a part is stored once all its bytes are here")
        kw: dict[str, Any] = {"Bucket": self.bucket, "Key": key, "UploadId": upload_id,
                              "PartNumber": number, "Body": stream,
                              "ContentLength": stream.length}
        checksum = stream.checksum()
        if checksum is not None:
            # In a header, so botocore computes nothing (CRC32C would need awscrt).
            kw[f"Checksum{self.algorithm}"] = checksum
        try:
            resp = self.client.upload_part(**kw)
        except (ClientError, BotoCoreError) as exc:
            raise _fail(f"upload_part {number}", exc) from exc
        echoed = resp.get(f"Checksum{self.algorithm}") if self.algorithm else None
        if echoed is not None and echoed != checksum:
            raise StorageError(f"s3 upload_part {number}: store checksum differs")
        return PartInfo(number=number, etag=resp["ETag"], size=stream.length,
                        checksum=checksum)

    def _list_parts(self, key: str, upload_id: str, numbers: list[int]
                    ) -> dict[int, PartInfo]:
        wanted = set(numbers)
        out: dict[int, PartInfo] = {}
        try:
            pages = self.client.get_paginator("list_parts").paginate(
                Bucket=self.bucket, Key=key, UploadId=upload_id)
            for page in pages:
                for p in page.get("Parts", []) or []:
                    if int(p["PartNumber"]) not in wanted:
                        continue
                    checksum = p.get(f"Checksum{self.algorithm}") if self.algorithm else None
                    out[int(p["PartNumber"])] = PartInfo(
                        number=int(p["PartNumber"]), etag=p["ETag"], size=int(p["Size"]),
                        checksum=checksum)
        except (ClientError, BotoCoreError) as exc:
            raise _fail("list_parts", exc) from exc
        return out

    def _complete(self, key: str, upload_id: str, parts: list[PartInfo],
                  full_crc32c: int | None, total_size: int) -> CompleteResult:
        listed = []
        for p in parts:
            item: dict[str, Any] = {"PartNumber": p.number, "ETag": p.etag}
            if p.checksum and self.algorithm:
                item[f"Checksum{self.algorithm}"] = p.checksum
            listed.append(item)
        kw: dict[str, Any] = {"Bucket": self.bucket, "Key": key, "UploadId": upload_id,
                              "MultipartUpload": {"Parts": listed}}
        want_full = self.full_object and full_crc32c is not None
        try:
            if want_full:
                try:
                    resp = self.complete_client.complete_multipart_upload(
                        **kw, ChecksumType="FULL_OBJECT", ChecksumCRC32C=crc32c_b64(full_crc32c))
                except ClientError as exc:
                    if _code(exc) not in _UNSUPPORTED_CODES or "checksum" not in str(exc).lower():
                        raise
                    # Created before the store was found not to support FULL_OBJECT (or by a
                    # worker with other settings): complete it as a composite upload.
                    self._disable_full_object(exc)
                    resp = self.complete_client.complete_multipart_upload(**kw)
            else:
                resp = self.complete_client.complete_multipart_upload(**kw)
        except (ClientError, BotoCoreError) as exc:
            done = self._already_completed(key, total_size, exc)
            if done is not None:
                return done
            if _code(exc) == "EntityTooSmall":
                raise StorageError("s3 complete failed: a part other than the last is < 5 MiB"
                                   ) from exc
            raise _fail("complete", exc) from exc
        checksum = None
        if resp.get("ChecksumType") == "FULL_OBJECT" and resp.get("ChecksumCRC32C"):
            checksum = resp["ChecksumCRC32C"]
        return CompleteResult(etag=resp["ETag"], size=total_size, checksum=checksum)

    def _already_completed(self, key: str, total_size: int,
                           exc: BaseException) -> CompleteResult | None:
        """After a crash between CompleteMultipartUpload and the ledger write, the retry finds
        the upload gone (AWS: NoSuchUpload; moto: HTTP 500). Object keys are unique per upload,
        so an object of the declared size at ``key`` is this upload's result."""
        if _code(exc) != "NoSuchUpload" and _status(exc) < 500:
            return None
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=key)
        except (ClientError, BotoCoreError):
            return None
        if int(head.get("ContentLength", -1)) != total_size:
            return None
        log.info("s3 complete: upload already completed at %s (%s)", key, _code(exc))
        return CompleteResult(etag=head["ETag"], size=total_size, checksum=None)

    def _abort(self, key: str, upload_id: str) -> None:
        try:
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
        except ClientError as exc:
            if _code(exc) == "NoSuchUpload" or _status(exc) == 404:
                return
            raise _fail("abort", exc) from exc
        except BotoCoreError as exc:
            raise _fail("abort", exc) from exc

    def _list_multipart_uploads(self, prefix: str) -> list[tuple[str, str, datetime]]:
        out: list[tuple[str, str, datetime]] = []
        try:
            pages = self.client.get_paginator("list_multipart_uploads").paginate(
                Bucket=self.bucket, Prefix=prefix)
            for page in pages:
                for u in page.get("Uploads", []) or []:
                    out.append((u["Key"], u["UploadId"], u["Initiated"]))
        except (ClientError, BotoCoreError) as exc:
            raise _fail("list_multipart_uploads", exc) from exc
        return out

    def _list_keys(self, prefix: str) -> list[str]:
        out: list[str] = []
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=prefix)
            for page in pages:
                out.extend(o["Key"] for o in page.get("Contents", []) or [])
        except (ClientError, BotoCoreError) as exc:
            raise _fail("list_objects", exc) from exc
        return sorted(out)

    # -- plain objects

    def _put_object(self, key: str, data: Buffer) -> str:
        body = data if isinstance(data, bytes) else bytes(data)
        kw: dict[str, Any] = {"Bucket": self.bucket, "Key": key, "Body": body}
        checksum = compute_checksum(body, self.algorithm)
        if checksum is not None:
            kw[f"Checksum{self.algorithm}"] = checksum
        try:
            return self.client.put_object(**kw)["ETag"]
        except (ClientError, BotoCoreError) as exc:
            raise _fail("put_object", exc) from exc

    def _get_object(self, key: str) -> bytes:
        try:
            return self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except (ClientError, BotoCoreError) as exc:
            if _code(exc) in _MISSING_CODES:
                raise StorageError("s3 object not found") from exc
            raise _fail("get_object", exc) from exc

    def _delete(self, key: str) -> None:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if _code(exc) in _MISSING_CODES:
                return
            raise _fail("delete", exc) from exc
        except BotoCoreError as exc:
            raise _fail("delete", exc) from exc

    def _head(self, key: str) -> dict[str, Any] | None:
        try:
            return self.client.head_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if _code(exc) in _MISSING_CODES or _status(exc) == 404:
                return None
            raise _fail("head_object", exc) from exc
        except BotoCoreError as exc:
            raise _fail("head_object", exc) from exc

    def _stat(self, key: str) -> int | None:
        head = self._head(key)
        return None if head is None else int(head["ContentLength"])

    def _copy(self, src_key: str, dest_key: str) -> None:
        """Server-side copy: one CopyObject up to 5 GiB (S3's limit for it), above that a
        multipart copy (UploadPartCopy) by boto3's managed transfer."""
        from boto3.s3.transfer import TransferConfig

        cfg = TransferConfig(multipart_threshold=5 * 1024 * MiB, multipart_chunksize=512 * MiB,
                             max_concurrency=4, use_threads=True)
        try:
            self.client.copy({"Bucket": self.bucket, "Key": src_key}, self.bucket, dest_key,
                             Config=cfg)
        except (ClientError, BotoCoreError) as exc:
            if _code(exc) in _MISSING_CODES or _status(exc) == 404:
                raise StorageError("s3 copy failed: source object not found") from exc
            raise _fail("copy", exc) from exc

    def open_reader(self, key: str, buffer_size: int = 1 * MiB) -> io.BufferedReader:
        """Blocking, seekable reader over ranged GETs; ``buffer_size`` (bytes) is the read-ahead
        of each GET for small reads. Raises StorageError when the object does not exist."""
        head = self._head(key)
        if head is None:
            raise StorageError("s3 object not found")
        raw = S3RangeReader(self.client, self.bucket, key, int(head["ContentLength"]),
                            head.get("ETag"), max_request=max(buffer_size, 8 * MiB))
        return io.BufferedReader(raw, buffer_size=buffer_size)


class S3RangeReader(io.RawIOBase):
    """A seekable raw stream over one S3 object: each ``readinto`` is one ranged GET of at most
    ``max_request`` bytes. GETs carry ``If-Match: <etag>`` so a replaced object fails loudly
    instead of mixing bytes of two versions."""

    def __init__(self, client: Any, bucket: str, key: str, size: int, etag: str | None,
                 max_request: int = 8 * MiB) -> None:
        super().__init__()
        self._client, self._bucket, self._key = client, bucket, key
        self.size, self._etag, self._max = size, etag, max_request
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            pos = offset
        elif whence == io.SEEK_CUR:
            pos = self._pos + offset
        elif whence == io.SEEK_END:
            pos = self.size + offset
        else:
            raise ValueError(f"invalid whence {whence}")
        if pos < 0:
            raise ValueError("negative seek position")
        self._pos = pos
        return pos

    def readinto(self, b: Any) -> int:
        if self.closed:
            raise ValueError("I/O operation on closed file")
        view = memoryview(b).cast("B")
        n = min(len(view), self.size - self._pos, self._max)
        if n <= 0:
            return 0
        kw: dict[str, Any] = {"Bucket": self._bucket, "Key": self._key,
                              "Range": f"bytes={self._pos}-{self._pos + n - 1}"}
        if self._etag:
            kw["IfMatch"] = self._etag
        try:
            body = self._client.get_object(**kw)["Body"]
            got = 0
            while got < n:
                chunk = body.read(n - got)
                if not chunk:
                    break
                view[got:got + len(chunk)] = chunk
                got += len(chunk)
            body.close()
        except (ClientError, BotoCoreError) as exc:
            raise _fail("ranged get", exc) from exc
        if got == 0:
            raise StorageError("s3 ranged get returned no bytes")
        self._pos += got
        return got
