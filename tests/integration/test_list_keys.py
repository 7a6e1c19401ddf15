"""Sink.list_keys (used by the sweeper to find spilled tails) on both built-in sinks."""

from __future__ import annotations

import pytest

from djust_resumable.conf import get_settings
from djust_resumable.sinks.local import LocalSink
from djust_resumable.sinks.s3 import S3Sink

pytestmark = pytest.mark.integration
KEYS = ["resumable/.tails/abc/1-0", "resumable/.tails/abc/2-8388608", "resumable/.tails/d/1-5",
        "resumable/2026/11/30/abc", "other/x"]


async def _check(sink) -> None:
    for k in KEYS:
        await sink.spill_tail(k, b"data")
    upload_id = await sink.create("resumable/2026/11/30/open", "text/plain")
    assert await sink.list_keys("resumable/.tails/") == sorted(KEYS[:3])
    assert await sink.list_keys("resumable/.tails/abc/") == KEYS[:2]
    assert await sink.list_keys("resumable/.ta") == sorted(KEYS[:3])
    assert await sink.list_keys("resumable/") == sorted(KEYS[:4])  # no open upload listed
    assert await sink.list_keys("nothing/") == []
    await sink.abort("resumable/2026/11/30/open", upload_id)


async def test_local_list_keys(tmp_path):
    sink = LocalSink(get_settings(), root=tmp_path)
    try:
        await _check(sink)
    finally:
        sink.close()


async def test_s3_list_keys(django_s3_settings):
    sink = S3Sink(django_s3_settings.settings())
    try:
        await _check(sink)
    finally:
        sink.close()
