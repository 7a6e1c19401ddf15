"""The storage interface every sink implements, plus part sizing.

A sink stores bytes; it knows nothing about the ledger, clients or offsets. Its public methods
are ``async`` and run the blocking ``_xxx`` implementations in a bounded thread pool, so the event
loop never waits on object storage (durability rule 6, docs/durability.md).

S3 multipart limits (https://docs.aws.amazon.com/AmazonS3/latest/userguide/qfacts.html), which
the defaults in ``conf.DEFAULTS`` mirror:

* a part is 5 MiB to 5 GiB, except the last part, which may be smaller;
* part numbers are 1 to 10,000;
* an object is at most 5 TiB.
"""

from __future__ import annotations

import abc
import asyncio
import base64
import functools
import hashlib
import io
import json
import re
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import google_crc32c

from ..conf import MiB, ResumableSettings, get_settings
from ..errors import ResumableError, StorageError, TooLarge

T = TypeVar("T")

Buffer = bytes | bytearray | memoryview


# --------------------------------------------------------------------------- value types


@dataclass(frozen=True)
class PartInfo:
    """One stored part of a multipart upload.

    ``number`` is the 1-based S3 PartNumber, ``etag`` the ETag exactly as the store returned it
    (with its quotes), ``size`` the part length in bytes, ``checksum`` the base64 per-part
    checksum sent with the part (CRC32C or SHA256 per ``settings.CHECKSUM``) or None.
    """

    number: int
    etag: str
    size: int
    checksum: str | None = None

    def to_json(self) -> str:
        """Compact JSON (short keys: the ledger stores one per part, up to 10,000 per upload)."""
        return json.dumps({"n": self.number, "e": self.etag, "s": self.size, "c": self.checksum},
                          separators=(",", ":"))

    @classmethod
    def from_json(cls, s: str | bytes) -> PartInfo:
        d = json.loads(s)
        return cls(number=int(d["n"]), etag=str(d["e"]), size=int(d["s"]), checksum=d.get("c"))


@dataclass(frozen=True)
class CompleteResult:
    """The finished object: its ETag, size in bytes, and the full-object CRC32C (base64) when
    the store itself confirmed one, else None."""

    etag: str
    size: int
    checksum: str | None = None


# --------------------------------------------------------------------------- part bodies


class PartStream(io.RawIOBase):
    """The bytes of one part: fed by the event loop as frames arrive, read by a storage thread
    as the body of the part's store request.

    The fed frames are kept as they came (no copy into a part buffer) until ``release()``,
    which the writer calls once the store has answered: until then the store's client can
    rewind and retry the request (botocore seeks to 0) and the writer can spill an unfinished
    part. A read waits for bytes not fed yet, so a reader may start before the part is whole.

    ``crc32c`` is the CRC32C of the bytes fed, extended as they are fed (the writer needs it
    anyway); ``checksum()`` is the part's checksum per ``algorithm`` ("CRC32C", "SHA256" or
    None) for the request header and the ledger.
    """

    def __init__(self, length: int, *, algorithm: str | None = None) -> None:
        super().__init__()
        if length < 0:
            raise ValueError("length must be >= 0")
        self.length = length
        self.algorithm = (algorithm or "").upper() or None
        self._cond = threading.Condition()
        self._chunks: list[bytes] | None = []
        self._fed = 0
        self._pos = 0
        self._ci = 0  # chunk index and offset inside it of _pos
        self._co = 0
        self.crc32c = 0

    # -- writer side (event loop thread)

    @property
    def fed(self) -> int:
        """Bytes fed so far."""
        return self._fed

    def feed(self, chunk: bytes) -> None:
        """Append ``chunk`` (bytes; kept, not copied). Raises ValueError past ``length``."""
        if not chunk:
            return
        with self._cond:
            if self._chunks is None or self._fed + len(chunk) > self.length:
                raise ValueError("fed past the part's length")
            self._chunks.append(chunk)
            self._fed += len(chunk)
            self.crc32c = google_crc32c.extend(self.crc32c, chunk)
            self._cond.notify_all()

    def release(self) -> None:
        """Drop the kept bytes (the store has the part). A later read or rewind raises
        io.UnsupportedOperation."""
        with self._cond:
            self._chunks = None
            self._cond.notify_all()

    def retained(self) -> bytes:
        """The bytes fed so far (for spilling an unfinished part).
        Raises io.UnsupportedOperation when they were already dropped."""
        with self._cond:
            if self._chunks is None:
                raise io.UnsupportedOperation("part bytes already dropped")
            return b"".join(self._chunks)

    def checksum(self) -> str | None:
        """Base64 checksum of the bytes fed, or None without an algorithm. SHA256 is computed
        from the kept frames (in the caller's thread); raises io.UnsupportedOperation when
        they were released."""
        if self.algorithm == "CRC32C":
            return crc32c_b64(self.crc32c)
        if self.algorithm != "SHA256":
            return None
        with self._cond:
            if self._chunks is None:
                raise io.UnsupportedOperation("part bytes already released")
            chunks = list(self._chunks)
        sha = hashlib.sha256()
        for c in chunks:
            sha.update(c)
        return base64.b64encode(sha.digest()).decode("ascii")

    # -- reader side (storage thread)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def __len__(self) -> int:
        # botocore sizes the request from len() instead of seeking to the end.
        return self.length

    def _rewind(self, pos: int) -> None:
        if self._chunks is None:
            raise io.UnsupportedOperation("part bytes already released")
        if pos > self._fed:
            raise io.UnsupportedOperation("cannot seek past the bytes fed")
        self._pos, self._ci, self._co = 0, 0, 0
        while self._pos < pos:  # at most part_size / frame size steps, only on a retry
            take = min(len(self._chunks[self._ci]) - self._co, pos - self._pos)
            self._pos += take
            self._co += take
            if self._co == len(self._chunks[self._ci]):
                self._ci, self._co = self._ci + 1, 0

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence != io.SEEK_SET:
            raise io.UnsupportedOperation("only absolute seeks")
        with self._cond:
            if offset != self._pos:
                self._rewind(offset)
            return self._pos

    def read(self, size: int | None = -1) -> bytes:
        """``min(size, bytes left in the part)`` bytes, waiting for them to be fed if need be.
        Raises io.UnsupportedOperation after ``release()``."""
        with self._cond:
            want = self.length - self._pos
            if size is not None and 0 <= size < want:
                want = size
            while True:
                if want <= 0:
                    return b""
                if self._chunks is None:
                    raise io.UnsupportedOperation("part bytes already released")
                if self._fed - self._pos >= want:
                    break
                self._cond.wait()
            pieces = []
            while want:
                chunk = self._chunks[self._ci]
                n = min(len(chunk) - self._co, want)
                # A whole frame goes out as is, without a copy.
                pieces.append(chunk if (self._co == 0 and n == len(chunk))
                              else chunk[self._co:self._co + n])
                self._co += n
                if self._co == len(chunk):
                    self._ci, self._co = self._ci + 1, 0
                self._pos += n
                want -= n
            return pieces[0] if len(pieces) == 1 else b"".join(pieces)

    def readinto(self, b: Any) -> int:
        data = self.read(len(b))
        memoryview(b).cast("B")[: len(data)] = data
        return len(data)


# --------------------------------------------------------------------------- checksums


def _readonly(data: Buffer) -> bytes | memoryview:
    # google_crc32c only accepts read-only buffers; a bytes() copy is the portable way.
    return data if isinstance(data, bytes) else bytes(data)


def crc32c_value(data: Buffer, crc: int = 0) -> int:
    """CRC32C of ``data`` continuing from ``crc`` (0 for a fresh checksum)."""
    return google_crc32c.extend(crc, _readonly(data))


def crc32c_b64(crc: int) -> str:
    """S3's encoding of a CRC32C: base64 of the 4 bytes, big-endian."""
    return base64.b64encode(crc.to_bytes(4, "big")).decode("ascii")


def compute_checksum(data: Buffer, algorithm: str | None, crc32c: int | None = None
                     ) -> str | None:
    """The base64 checksum S3 expects in ``x-amz-checksum-<algorithm>``, or None.

    ``algorithm`` is ``settings.CHECKSUM``: "CRC32C", "SHA256" or None.
    Raises ValueError for any other algorithm.
    """
    if not algorithm:
        return None
    alg = algorithm.upper()
    if alg == "CRC32C":
        return crc32c_b64(crc32c if crc32c is not None else crc32c_value(data))
    if alg == "SHA256":
        return base64.b64encode(hashlib.sha256(data).digest()).decode("ascii")
    raise ValueError(f"unsupported checksum algorithm {algorithm!r}")


def multipart_etag(parts: list[PartInfo]) -> str | None:
    """The ETag S3 gives a multipart object: MD5 of the concatenated binary part MD5s, then
    ``-<count>``. None when a part ETag is not an MD5 (SSE-KMS, some S3-compatible stores)."""
    md5s = bytearray()
    for p in parts:
        hexd = p.etag.strip('"')
        if not re.fullmatch(r"[0-9a-fA-F]{32}", hexd):
            return None
        md5s += bytes.fromhex(hexd)
    return f'"{hashlib.md5(bytes(md5s), usedforsecurity=False).hexdigest()}-{len(parts)}"'


# --------------------------------------------------------------------------- part sizing


def choose_part_size(declared_size: int, settings: ResumableSettings) -> int:
    """The fixed part size (bytes) for an upload of ``declared_size`` bytes.

    Part boundaries never change after creation (docs/durability.md rule 8), so the size must
    already satisfy the store's limits for the whole file: the result is at least
    ``PREFERRED_PART_SIZE`` and ``MIN_PART_SIZE`` (S3: 5 MiB), at most ``MAX_PART_SIZE``
    (S3: 5 GiB), a multiple of 1 MiB when that still fits, and large enough that
    ``ceil(declared_size / part) <= MAX_PARTS`` (S3: 10,000).

    Raises ``TooLarge`` when ``declared_size > MAX_OBJECT_SIZE`` (S3: 5 TiB) or when no part size
    within the limits can hold the file; ``ValueError`` for a negative size.
    """
    if declared_size < 0:
        raise ValueError("declared_size must be >= 0")
    s = settings
    if declared_size > s.MAX_OBJECT_SIZE:
        raise TooLarge("file larger than the storage allows", max_size=s.MAX_OBJECT_SIZE)
    needed = -(-declared_size // s.MAX_PARTS)  # ceil: smallest part keeping count <= MAX_PARTS
    part = max(s.PREFERRED_PART_SIZE, s.MIN_PART_SIZE, needed, 1)
    rounded = -(-part // MiB) * MiB
    # A store whose MAX_PART_SIZE is not a MiB multiple can still take the unrounded size.
    part = rounded if rounded <= s.MAX_PART_SIZE else part
    if part > s.MAX_PART_SIZE:
        raise TooLarge("file needs more parts than the storage allows",
                       max_size=s.MAX_PART_SIZE * s.MAX_PARTS)
    return part


def part_count(total: int, part_size: int) -> int:
    """Number of parts (0 for an empty file)."""
    return -(-total // part_size)


def part_range(number: int, part_size: int, total: int) -> tuple[int, int]:
    """Byte range ``[start, end)`` of 1-based part ``number`` in a file of ``total`` bytes.

    Every part is ``part_size`` bytes except the last, which ends at ``total``.
    Raises ValueError for a part number outside ``1..part_count(total, part_size)``.
    """
    if part_size <= 0:
        raise ValueError("part_size must be > 0")
    if number < 1 or number > part_count(total, part_size):
        raise ValueError(f"part {number} outside a {total}-byte file of {part_size}-byte parts")
    start = (number - 1) * part_size
    return start, min(start + part_size, total)


_REF_RE = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}")


# --------------------------------------------------------------------------- the interface


class Sink(abc.ABC):
    """Object storage behind one small interface.

    Subclasses implement the blocking ``_xxx`` methods; the public ``async`` methods run them in
    a ``ThreadPoolExecutor`` of ``settings.STORAGE_THREADS`` workers shared by every upload using
    this Sink instance, via ``loop.run_in_executor``, so the event loop never waits on storage.
    Every storage failure surfaces as ``errors.StorageError`` (short message, original exception
    kept as ``__cause__``); programming errors (bad arguments) raise ValueError.
    """

    #: name used in messages and metrics
    name = "abstract"

    def __init__(self, settings: ResumableSettings | None = None) -> None:
        self.settings = settings or get_settings()
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()

    # -- plumbing

    @property
    def executor(self) -> ThreadPoolExecutor:
        if self._pool is None:
            with self._pool_lock:
                if self._pool is None:
                    self._pool = ThreadPoolExecutor(
                        max_workers=max(1, int(self.settings.STORAGE_THREADS)),
                        thread_name_prefix=f"djr-{self.name}")
        return self._pool

    async def _run(self, what: str, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self.executor, functools.partial(fn, *args))
        except ResumableError:
            raise
        except Exception as exc:  # anything else from the store: one typed error for callers
            raise StorageError(f"{self.name} {what} failed: {type(exc).__name__}") from exc

    def close(self) -> None:
        """Shut the thread pool down (running calls finish; nothing new is accepted)."""
        with self._pool_lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False)

    # -- key layout

    def tail_key(self, key: str, ref: str, epoch: int, offset: int) -> str:
        """Where a spilled tail lives: ``<STORAGE_PREFIX>.tails/<ref>/<epoch>-<offset>``.

        Built from server-side values only (never a client file name, docs/durability.md
        rule 7); the epoch and offset make every spill a new object, so a late writer with an
        old epoch cannot overwrite the tail the ledger points at. ``key`` is accepted for sinks that
        want to co-locate tails with their object; this layout does not use it.
        Raises ValueError for a ``ref`` that is not a plain token.
        """
        if not _REF_RE.fullmatch(ref) or ".." in ref:
            raise ValueError("ref must be a plain token")
        return f"{self.settings.STORAGE_PREFIX}.tails/{ref}/{int(epoch)}-{int(offset)}"

    # -- public async API

    async def create(self, key: str, content_type: str) -> str:
        """Start a multipart upload at ``key``; returns its UploadId."""
        return await self._run("create", self._create, key, content_type)

    async def write_part(self, key: str, upload_id: str, number: int, data: Buffer,
                         crc32c: int | None = None) -> PartInfo:
        """Store part ``number`` (1-based) durably; returns what the ledger must record.
        ``data`` must not be mutated until this returns. ``crc32c``: the part's CRC32C when
        the caller already computed it (the writer does, frame by frame), so the sink needs
        no second pass and no read-only copy of the part."""
        if number < 1 or number > self.settings.MAX_PARTS:
            raise ValueError(f"part number {number} outside 1..{self.settings.MAX_PARTS}")
        return await self._run("write_part", self._write_part, key, upload_id, number, data,
                               crc32c)

    def part_stream(self, length: int) -> PartStream:
        """A part of ``length`` bytes for ``write_part_stream``, checksummed per
        ``settings.CHECKSUM``."""
        return PartStream(length, algorithm=self.settings.CHECKSUM)

    async def write_part_stream(self, key: str, upload_id: str, number: int,
                                stream: PartStream) -> PartInfo:
        """Store part ``number`` from ``stream`` (every byte fed: the writer calls this when
        the part's last byte arrived); returns once the store has the part durably. Raises
        StorageError."""
        if number < 1 or number > self.settings.MAX_PARTS:
            raise ValueError(f"part number {number} outside 1..{self.settings.MAX_PARTS}")
        return await self._run("write_part", self._write_part_stream, key, upload_id, number,
                               stream)

    def _write_part_stream(self, key: str, upload_id: str, number: int,
                           stream: PartStream) -> PartInfo:
        # Sinks that cannot stream a request body read the part first (memory: one part).
        chunks = []
        while chunk := stream.read(8 * MiB):
            chunks.append(chunk)
        return self._write_part(key, upload_id, number, b"".join(chunks), stream.crc32c)

    async def list_parts(self, key: str, upload_id: str, numbers: list[int]
                         ) -> dict[int, PartInfo]:
        """Those of the parts ``numbers`` the store holds for the open multipart upload, by
        PartNumber (``checksum`` None when the store does not report one). Used to adopt
        parts a killed worker had sent in full but not yet recorded."""
        return await self._run("list_parts", self._list_parts, key, upload_id, numbers)

    def _list_parts(self, key: str, upload_id: str, numbers: list[int]
                    ) -> dict[int, PartInfo]:
        return {}  # a sink that cannot list parts adopts none: the client re-sends them

    async def spill_tail(self, tail_key: str, data: Buffer) -> None:
        """Store a partial part (< part size) as a temporary object, so another worker can
        continue the upload without the client re-sending it."""
        await self._run("spill_tail", self._put_object, tail_key, data)

    async def read_tail(self, tail_key: str) -> bytes:
        """Return a spilled tail's bytes. Raises StorageError when it is missing."""
        return await self._run("read_tail", self._get_object, tail_key)

    async def delete_tail(self, tail_key: str) -> None:
        """Delete a spilled tail; a missing one is not an error."""
        await self._run("delete_tail", self._delete, tail_key)

    async def complete(self, key: str, upload_id: str, parts: list[PartInfo],
                       full_crc32c: int | None, total_size: int) -> CompleteResult:
        """Assemble ``parts`` into the object at ``key``.

        ``full_crc32c`` is the CRC32C of the whole file (the ledger's running value) or None;
        ``total_size`` the object size in bytes, which must equal the sum of the part sizes.

        The empty file is special: S3 multipart needs at least one part, so with ``parts == []``
        the multipart upload is aborted and an empty object is written with PutObject.
        Retrying a completion that already happened (crash between the store's answer and the
        ledger write) returns the same result instead of failing.
        """
        parts = sorted(parts, key=lambda p: p.number)
        if sum(p.size for p in parts) != total_size:
            raise ValueError("total_size differs from the sum of the part sizes")
        if not parts:
            return await self._run("complete", self._complete_empty, key, upload_id)
        return await self._run("complete", self._complete, key, upload_id, parts, full_crc32c,
                               total_size)

    async def abort(self, key: str, upload_id: str) -> None:
        """Abort a multipart upload and free its parts; a missing upload is not an error."""
        await self._run("abort", self._abort, key, upload_id)

    async def stat(self, key: str) -> int | None:
        """Object size in bytes, or None when there is no object at ``key``."""
        return await self._run("stat", self._stat, key)

    async def delete(self, key: str) -> None:
        """Delete the object at ``key``; a missing object is not an error."""
        await self._run("delete", self._delete, key)

    async def list_multipart_uploads(self, prefix: str) -> list[tuple[str, str, datetime]]:
        """Open multipart uploads under ``prefix`` as ``(key, upload_id, initiated)``."""
        return await self._run("list_multipart_uploads", self._list_multipart_uploads, prefix)

    async def list_keys(self, prefix: str) -> list[str]:
        """Keys of the stored objects (not open multipart uploads) under ``prefix``, sorted.
        Used by the sweeper to find spilled tails left behind."""
        return await self._run("list_keys", self._list_keys, prefix)

    def _list_keys(self, prefix: str) -> list[str]:
        # Not abstract, so third-party sinks written before it keep working (the sweeper then
        # reports that it cannot list tails).
        raise NotImplementedError(f"{type(self).__name__} cannot list keys")

    async def copy(self, src_key: str, dest_key: str) -> None:
        """Copy the object at ``src_key`` to ``dest_key`` inside the store, without the bytes
        passing through this process (S3: CopyObject, or UploadPartCopy above 5 GiB).
        Raises StorageError when the source is missing or the store fails."""
        await self._run("copy", self._copy, src_key, dest_key)

    def _copy(self, src_key: str, dest_key: str) -> None:
        # Abstract in spirit; not an abc.abstractmethod so sinks written before it still
        # instantiate (``UploadEntry.save`` then falls back to streaming through Django).
        raise NotImplementedError(f"{type(self).__name__} cannot copy objects")

    @abc.abstractmethod
    def open_reader(self, key: str) -> io.BufferedIOBase:
        """A blocking, seekable binary reader over the object (never loads it whole).
        Raises StorageError when the object does not exist."""

    # -- blocking implementations

    def _complete_empty(self, key: str, upload_id: str) -> CompleteResult:
        # Put first: if the abort then fails, a retry finds the object and aborts again
        # (abort is idempotent), so no order of crashes leaves the upload half-finished.
        etag = self._put_object(key, b"")
        self._abort(key, upload_id)
        return CompleteResult(etag=etag, size=0, checksum=None)

    @abc.abstractmethod
    def _create(self, key: str, content_type: str) -> str: ...

    @abc.abstractmethod
    def _write_part(self, key: str, upload_id: str, number: int, data: Buffer,
                    crc32c: int | None = None) -> PartInfo: ...

    @abc.abstractmethod
    def _complete(self, key: str, upload_id: str, parts: list[PartInfo],
                  full_crc32c: int | None, total_size: int) -> CompleteResult: ...

    @abc.abstractmethod
    def _abort(self, key: str, upload_id: str) -> None: ...

    @abc.abstractmethod
    def _put_object(self, key: str, data: Buffer) -> str:
        """Write a whole (small) object durably; returns its ETag."""

    @abc.abstractmethod
    def _get_object(self, key: str) -> bytes: ...

    @abc.abstractmethod
    def _delete(self, key: str) -> None: ...

    @abc.abstractmethod
    def _stat(self, key: str) -> int | None: ...

    @abc.abstractmethod
    def _list_multipart_uploads(self, prefix: str) -> list[tuple[str, str, datetime]]: ...
