"""The example project's landing page: the URL `make run` prints leads somewhere."""

from __future__ import annotations

import asyncio
import urllib.request

import pytest

pytestmark = pytest.mark.integration


async def test_landing_page_links_every_example_page(workers, tmp_path):
    from tests.integration.test_admin import prepare_db

    await asyncio.to_thread(prepare_db, tmp_path)  # the LiveView pages keep sessions
    (w,) = workers(1)

    def get(path: str) -> tuple[int, str]:
        with urllib.request.urlopen(f"http://127.0.0.1:{w.port}{path}", timeout=20) as r:
            return r.status, r.read().decode()

    status, body = await asyncio.to_thread(get, "/")
    assert status == 200
    links = ["/avatar/", "/avatar/on-save/", "/files/", "/admin/", "/metrics/"]
    for link in links:
        assert f'href="{link}"' in body, link
    for link in links[:3]:  # every linked page answers
        assert (await asyncio.to_thread(get, link))[0] == 200, link
