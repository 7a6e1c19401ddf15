"""Storage sinks: S3 multipart (``s3``), local filesystem (``local``), or a dotted path to a
``Sink`` subclass, chosen by ``DJUST_RESUMABLE['SINK']``."""

from __future__ import annotations

import threading

from django.utils.module_loading import import_string

from ..conf import ResumableSettings, get_settings
from .base import CompleteResult, PartInfo, Sink, choose_part_size, part_range

__all__ = ["CompleteResult", "PartInfo", "Sink", "choose_part_size", "part_range", "get_sink",
           "clear_sink_cache"]

_BUILTIN = {
    "s3": "djust_resumable.sinks.s3.S3Sink",
    "local": "djust_resumable.sinks.local.LocalSink",
}
_cache: dict[ResumableSettings, Sink] = {}
_lock = threading.Lock()


def get_sink(settings: ResumableSettings | None = None) -> Sink:
    """The process-wide sink for ``settings`` (default: the effective settings).

    One instance per distinct settings value, so every upload of a process shares one thread
    pool and one boto3 client. Raises ImportError/TypeError for a bad ``SINK`` value.
    """
    settings = settings or get_settings()
    sink = _cache.get(settings)
    if sink is not None:
        return sink
    with _lock:
        sink = _cache.get(settings)
        if sink is None:
            cls = import_string(_BUILTIN.get(settings.SINK, settings.SINK))
            if not (isinstance(cls, type) and issubclass(cls, Sink)):
                raise TypeError(f"DJUST_RESUMABLE['SINK'] {settings.SINK!r} is not a Sink")
            sink = cls(settings)
            _cache[settings] = sink
    return sink


def clear_sink_cache() -> None:
    """Close and forget every cached sink (tests; settings changes)."""
    with _lock:
        sinks = list(_cache.values())
        _cache.clear()
    for s in sinks:
        s.close()


get_sink.cache_clear = clear_sink_cache  # type: ignore[attr-defined]
