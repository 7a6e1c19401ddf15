"""Local filesystem sink, for development and single-machine deployments.

Same contract and the same durability story as S3, on one disk: every write is fsynced (file
and directory) before it returns, so an acknowledged byte survives a crash of the process or
the machine.

Layout under ``LOCAL_ROOT`` (default ``<MEDIA_ROOT>/djust_resumable``)::

    .mpu/<upload_id>/meta.json       key, content type, start time of an open upload
    .mpu/<upload_id>/<number>        one file per part
    <key>                            finished objects and spilled tails (keys are relative paths)
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

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
    crc32c_value,
    multipart_etag,
)

_MPU = ".mpu"


def _fsync_dir(path: Path) -> None:
    # A rename or a new file is durable only once its directory entry is.
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _atomic_write(path: Path, fill: Callable[[BinaryIO], object]) -> None:
    """Let ``fill`` write ``path`` atomically: temp file, fsync, rename, fsync directory."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            fill(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def _write_durably(path: Path, chunks: list[Buffer] | tuple[Buffer, ...]) -> None:
    """Write ``chunks`` to ``path`` atomically (see ``_atomic_write``)."""
    _atomic_write(path, lambda f: [f.write(c) for c in chunks])


def _default_root(settings: ResumableSettings) -> Path:
    if settings.LOCAL_ROOT:
        return Path(settings.LOCAL_ROOT)
    from django.conf import settings as dj

    media = getattr(dj, "MEDIA_ROOT", "") or ""
    if not media:
        raise StorageError("local sink needs DJUST_RESUMABLE['LOCAL_ROOT'] or MEDIA_ROOT")
    return Path(media) / "djust_resumable"


class LocalSink(Sink):
    """Multipart uploads as files under ``root`` (see the module docstring for the layout)."""

    name = "local"

    def __init__(self, settings: ResumableSettings | None = None, *,
                 root: str | os.PathLike[str] | None = None) -> None:
        super().__init__(settings)
        self.root = Path(root) if root is not None else _default_root(self.settings)
        self.root = self.root.resolve()
        alg = (self.settings.CHECKSUM or "").upper() or None
        if alg not in (None, "CRC32C", "SHA256"):
            raise ValueError(f"unsupported CHECKSUM {self.settings.CHECKSUM!r}")
        self.algorithm: str | None = alg

    # -- paths

    def _path(self, key: str) -> Path:
        """The file for ``key``; refuses keys escaping the root or reaching into ``.mpu``."""
        if not key or key.startswith("/") or "\\" in key or "\x00" in key:
            raise ValueError(f"invalid storage key {key!r}")
        parts = key.split("/")
        if any(p in ("", ".", "..") for p in parts) or parts[0] == _MPU:
            raise ValueError(f"invalid storage key {key!r}")
        return self.root.joinpath(*parts)

    def _mpu_dir(self, upload_id: str) -> Path:
        if not upload_id or not upload_id.isalnum():
            raise ValueError("invalid upload id")
        return self.root / _MPU / upload_id

    # -- multipart

    def _create(self, key: str, content_type: str) -> str:
        self._path(key)  # validate now rather than at completion
        upload_id = uuid.uuid4().hex
        d = self._mpu_dir(upload_id)
        d.mkdir(parents=True)
        meta = {"key": key, "content_type": content_type,
                "initiated": datetime.now(UTC).isoformat()}
        _write_durably(d / "meta.json", [json.dumps(meta).encode()])
        _fsync_dir(d.parent)
        return upload_id

    def _write_part(self, key: str, upload_id: str, number: int, data: Buffer,
                    crc32c: int | None = None) -> PartInfo:
        d = self._mpu_dir(upload_id)
        if not d.is_dir():
            raise StorageError("local upload_part failed: NoSuchUpload")
        _write_durably(d / str(number), [data])
        etag = f'"{hashlib.md5(data, usedforsecurity=False).hexdigest()}"'
        return PartInfo(number=number, etag=etag, size=len(data),
                        checksum=compute_checksum(data, self.algorithm, crc32c))

    def _write_part_stream(self, key: str, upload_id: str, number: int,
                           stream: PartStream) -> PartInfo:
        d = self._mpu_dir(upload_id)
        if not d.is_dir():
            raise StorageError("local upload_part failed: NoSuchUpload")
        md5 = hashlib.md5(usedforsecurity=False)

        def fill(f: BinaryIO) -> None:
            while chunk := stream.read(MiB):
                md5.update(chunk)
                f.write(chunk)

        # Written to a temporary file and renamed at the end: a part is either whole or absent.
        _atomic_write(d / str(number), fill)
        return PartInfo(number=number, etag=f'"{md5.hexdigest()}"', size=stream.length,
                        checksum=stream.checksum())

    def _list_parts(self, key: str, upload_id: str, numbers: list[int]
                    ) -> dict[int, PartInfo]:
        d = self._mpu_dir(upload_id)
        out: dict[int, PartInfo] = {}
        for n in numbers:
            try:
                f = open(d / str(n), "rb")  # noqa: SIM115
            except FileNotFoundError:
                continue
            md5 = hashlib.md5(usedforsecurity=False)
            checksum = hashlib.sha256() if self.algorithm == "SHA256" else None
            crc = size = 0
            with f:
                while chunk := f.read(MiB):
                    md5.update(chunk)
                    crc = crc32c_value(chunk, crc)
                    if checksum is not None:
                        checksum.update(chunk)
                    size += len(chunk)
            value = (crc32c_b64(crc) if self.algorithm == "CRC32C" else
                     base64.b64encode(checksum.digest()).decode() if checksum else None)
            out[n] = PartInfo(number=n, etag=f'"{md5.hexdigest()}"', size=size, checksum=value)
        return out

    def _complete(self, key: str, upload_id: str, parts: list[PartInfo],
                  full_crc32c: int | None, total_size: int) -> CompleteResult:
        d = self._mpu_dir(upload_id)
        dest = self._path(key)
        if not d.is_dir():
            # Retry after a crash between completion and the ledger write.
            if dest.is_file() and dest.stat().st_size == total_size:
                return CompleteResult(etag=multipart_etag(parts) or "", size=total_size)
            raise StorageError("local complete failed: NoSuchUpload")
        for p in parts[:-1]:
            if p.size < self.settings.MIN_PART_SIZE:
                # Same rule as S3 (EntityTooSmall), so development catches what S3 would reject.
                raise StorageError("local complete failed: a part other than the last is "
                                   "below MIN_PART_SIZE")
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".tmp-")
        crc = 0
        try:
            with os.fdopen(fd, "wb") as out:
                for p in parts:
                    md5 = hashlib.md5(usedforsecurity=False)
                    size = 0
                    try:
                        src = open(d / str(p.number), "rb")  # noqa: SIM115
                    except FileNotFoundError as exc:
                        raise StorageError(f"local complete failed: part {p.number} missing"
                                           ) from exc
                    with src:
                        while chunk := src.read(MiB):
                            md5.update(chunk)
                            crc = crc32c_value(chunk, crc)
                            out.write(chunk)
                            size += len(chunk)
                    if f'"{md5.hexdigest()}"' != p.etag or size != p.size:
                        raise StorageError(f"local complete failed: part {p.number} differs "
                                           "(InvalidPart)")
                out.flush()
                os.fsync(out.fileno())
            if full_crc32c is not None and crc != full_crc32c:
                raise StorageError("local complete failed: full-object CRC32C differs")
            os.replace(tmp, dest)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        _fsync_dir(dest.parent)
        shutil.rmtree(d, ignore_errors=True)
        return CompleteResult(etag=multipart_etag(parts) or "", size=total_size,
                              checksum=crc32c_b64(crc))

    def _abort(self, key: str, upload_id: str) -> None:
        d = self._mpu_dir(upload_id)
        shutil.rmtree(d, ignore_errors=True)

    def _list_multipart_uploads(self, prefix: str) -> list[tuple[str, str, datetime]]:
        out: list[tuple[str, str, datetime]] = []
        base = self.root / _MPU
        if not base.is_dir():
            return out
        for d in base.iterdir():
            try:
                meta = json.loads((d / "meta.json").read_text())
            except (OSError, ValueError):
                continue  # half-created or being aborted
            if meta["key"].startswith(prefix):
                out.append((meta["key"], d.name, datetime.fromisoformat(meta["initiated"])))
        return sorted(out, key=lambda t: t[2])

    def _list_keys(self, prefix: str) -> list[str]:
        # Walk only the deepest directory the prefix names whole; skip open uploads (.mpu)
        # and temporary files of writes in progress.
        base = self.root.joinpath(*[p for p in prefix.split("/")[:-1] if p])
        if not base.is_dir():
            return []
        out: list[str] = []
        for dirpath, dirnames, filenames in os.walk(base):
            here = Path(dirpath)
            if here == self.root:
                dirnames[:] = [d for d in dirnames if d != _MPU]
            for name in filenames:
                if name.startswith(".tmp-"):
                    continue
                key = (here / name).relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    out.append(key)
        return sorted(out)

    # -- plain objects

    def _put_object(self, key: str, data: Buffer) -> str:
        _write_durably(self._path(key), [data])
        return f'"{hashlib.md5(data, usedforsecurity=False).hexdigest()}"'

    def _get_object(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError as exc:
            raise StorageError("local object not found") from exc

    def _delete(self, key: str) -> None:
        p = self._path(key)
        try:
            p.unlink()
        except FileNotFoundError:
            return
        _fsync_dir(p.parent)

    def _stat(self, key: str) -> int | None:
        p = self._path(key)
        return p.stat().st_size if p.is_file() else None

    def _copy(self, src_key: str, dest_key: str) -> None:
        """Durable file copy (temp file, fsync, rename, fsync directory)."""
        src, dest = self._path(src_key), self._path(dest_key)
        try:
            f = open(src, "rb")  # noqa: SIM115
        except FileNotFoundError as exc:
            raise StorageError("local copy failed: source object not found") from exc
        with f:
            _atomic_write(dest, lambda out: shutil.copyfileobj(f, out, MiB))

    def open_reader(self, key: str) -> io.BufferedReader:
        """Blocking, seekable reader over the file. Raises StorageError when it is missing."""
        try:
            return open(self._path(key), "rb", buffering=MiB)  # noqa: SIM115
        except (FileNotFoundError, IsADirectoryError) as exc:
            raise StorageError("local object not found") from exc
