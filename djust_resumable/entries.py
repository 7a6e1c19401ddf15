"""``ResumableUploadEntry``: djust's ``UploadEntry`` over an object in storage.

It keeps every field of ``djust.uploads.UploadEntry`` (``ref``, ``upload_name``,
``client_name``, ``client_type``, ``client_size``, ``progress``, ``complete``, ``error``,
``file``, ``data``, ``writer_result``, ``safe_client_name``) and adds ``size``,
``storage_name`` (the object key), ``checksum`` (CRC32C, 8 hex digits) and
``save(name, storage=None)``, a server-side copy.

The bytes never pass through Django unless asked: ``file`` is a Django ``File`` over a
seekable reader of ranged GETs; ``data`` loads the object only up to ``MAX_DATA_BYTES``.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import Any

from django.core.files import File
from djust.uploads import _safe_basename

from . import bridge
from .conf import ResumableSettings, get_settings
from .errors import ResumableError
from .ledger import UploadRecord
from .sinks import Sink, get_sink

log = logging.getLogger("djust_resumable")


class DataTooLarge(ResumableError):
    """``entry.data`` on an object above ``MAX_DATA_BYTES`` (never sent to a client)."""

    code = "data_too_large"
    default_message = "file too large to load into memory; use entry.file or entry.save()"


class StoredObjectFile(File):
    """A Django ``File`` over a stored object: reads are ranged GETs (S3) or file reads
    (local); ``seek`` works; ``size`` is known without reading."""

    def __init__(self, reader: io.BufferedIOBase, name: str, size: int) -> None:
        super().__init__(reader, name)
        self._known_size = size

    @property
    def size(self) -> int:  # type: ignore[override]
        return self._known_size

    def __repr__(self) -> str:
        return f"<StoredObjectFile: {self.name} ({self._known_size} bytes)>"


class ResumableUploadEntry:
    """One resumable upload as djust's view code sees it (see the module docstring)."""

    def __init__(self, rec: UploadRecord, settings: ResumableSettings | None = None) -> None:
        self.ref = rec.ref
        self.upload_name = rec.slot
        self.client_name = rec.client_name
        self.client_type = rec.client_type
        self.client_size = rec.size
        #: Object size in bytes (the declared size; the ledger verified every byte of it).
        self.size = rec.size
        #: Key of the object in the sink's store (never derived from the client's name).
        self.storage_name = rec.key
        #: CRC32C of the whole file as 8 lower-case hex digits ("" while in progress).
        self.checksum = f"{rec.crc:08x}" if rec.state in ("complete", "consumed") else ""
        #: Bytes stored durably so far.
        self.durable = rec.durable
        #: Ledger state: registered, uploading, completing, complete, consumed, failed, ...
        self.state = rec.state
        #: djust's writer result; resumable slots have no writer, so always None.
        self.writer_result: Any = None
        self._error = rec.error or (f"upload {rec.state}" if rec.state in
                                    ("failed", "aborted", "expired") else "") or None
        self._settings = settings or get_settings()

    # -- djust's fields ------------------------------------------------------------------------
    @property
    def progress(self) -> int:
        """0-100, from the durable offset (bytes in storage and in the ledger)."""
        if self.complete or self.size == 0:
            return 100
        return min(100, int(self.durable * 100 / self.size))

    @property
    def complete(self) -> bool:
        return self.state in ("complete", "consumed")

    @property
    def error(self) -> str | None:
        return self._error

    @property
    def safe_client_name(self) -> str:
        """djust's path-safe basename of ``client_name`` (same function)."""
        return _safe_basename(self.client_name or "")

    @property
    def sink(self) -> Sink:
        return get_sink(self._settings)

    @property
    def file(self) -> StoredObjectFile:
        """A fresh Django ``File`` positioned at 0 (like djust's, a new one per access).
        Blocking (one HEAD on S3): from async code use ``await asyncio.to_thread(...)``."""
        self._require_complete()
        reader = self.sink.open_reader(self.storage_name)
        return StoredObjectFile(reader, self.safe_client_name, self.size)

    @property
    def data(self) -> bytes:
        """The whole object as bytes, up to ``MAX_DATA_BYTES``; above it raises
        DataTooLarge."""
        self._require_complete()
        limit = self._settings.MAX_DATA_BYTES
        if self.size > limit:
            raise DataTooLarge(f"{self.size} bytes is above MAX_DATA_BYTES ({limit}); "
                               "stream entry.file or copy with entry.save(name)",
                               size=self.size, max_data_bytes=limit)
        with self.sink.open_reader(self.storage_name) as f:
            return f.read()

    # -- storage -------------------------------------------------------------------------------
    def save(self, name: str, storage: Any = None) -> str:
        """Store the file as ``name`` in ``storage`` (default: ``default_storage``) and return
        the name actually used. When ``storage`` is the sink's own store (django-storages
        ``S3Storage`` on the same bucket, or a ``FileSystemStorage`` under the local sink's
        root) the copy is server-side (S3 CopyObject, UploadPartCopy above 5 GiB); otherwise
        the bytes stream through ``storage.save(name, entry.file)``."""
        self._require_complete()
        storage = storage or _default_storage()
        target = self._server_side_target(storage, name)
        if target is None:
            return storage.save(name, self.file)
        stored_name, key = target
        bridge.run(self.sink.copy, self.storage_name, key, what="entry.save()")
        return stored_name

    async def asave(self, name: str, storage: Any = None) -> str:
        """``save`` for async code (the storage calls run off the event loop)."""
        import asyncio

        self._require_complete()
        storage = storage or _default_storage()
        target = await asyncio.to_thread(self._server_side_target, storage, name)
        if target is None:
            return await asyncio.to_thread(lambda: storage.save(name, self.file))
        stored_name, key = target
        await bridge.arun(self.sink.copy, self.storage_name, key)
        return stored_name

    def delete(self) -> None:
        """Delete the uploaded object (e.g. after ``save`` copied it elsewhere)."""
        bridge.run(self.sink.delete, self.storage_name, what="entry.delete()")

    def _server_side_target(self, storage: Any, name: str) -> tuple[str, str] | None:
        """``(name to return, key in the sink)`` when ``storage`` writes to the sink's own
        store, else None."""
        sink = self.sink
        try:
            from storages.backends.s3 import S3Storage
            from storages.utils import clean_name

            from .sinks.s3 import S3Sink

            if isinstance(sink, S3Sink) and isinstance(storage, S3Storage):
                ours = str(sink.client.meta.endpoint_url or "").rstrip("/")
                theirs = str(storage.endpoint_url or "").rstrip("/")
                if storage.bucket_name == sink.bucket and (not theirs or theirs == ours):
                    final = clean_name(storage.get_available_name(name))
                    return final, storage._normalize_name(final)
        except ImportError:  # django-storages not installed: no S3 fast path
            pass
        from django.core.files.storage import FileSystemStorage

        from .sinks.local import LocalSink

        if isinstance(sink, LocalSink) and isinstance(storage, FileSystemStorage):
            final = storage.get_available_name(name)
            path = Path(storage.path(final)).resolve()
            if path.is_relative_to(sink.root):
                return final, path.relative_to(sink.root).as_posix()
        return None

    def _require_complete(self) -> None:
        if not self.complete:
            raise ValueError(f"upload {self.ref} is {self.state}, not complete")

    def __repr__(self) -> str:
        return (f"<ResumableUploadEntry {self.ref} {self.upload_name}:{self.client_name!r} "
                f"{self.state} {self.progress}%>")


def _default_storage() -> Any:
    from django.core.files.storage import default_storage

    return default_storage
