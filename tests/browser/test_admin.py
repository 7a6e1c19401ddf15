"""Headless Chromium against the upload-sessions admin of a real worker: a staff user logs in,
watches a live upload's durable bytes move, opens its detail, aborts it, and the uploading
client (the Python client, driven slowly from the test) gets the typed ``aborted`` error.
Screenshots are saved in the test's tmp_path."""

from __future__ import annotations

import asyncio
import shutil
import uuid

import pytest
from playwright import async_api as playwright

from djust_resumable.client import UploadFailed
from djust_resumable.conf import MiB
from tests.helpers import make_random_file
from tests.integration.test_admin import (
    LIST,
    PASSWORD,
    HeldUpload,
    _prefixed_ledger,
    prepare_db,
)

pytestmark = pytest.mark.integration

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]


async def _durable_cell(page, ref: str) -> int:
    cell = page.locator(f'#djr-sessions tr[data-ref="{ref}"] td.durable')
    if await cell.count() == 0:
        return -1
    return int(await cell.get_attribute("data-bytes") or -1)


async def test_staff_watches_live_upload_and_aborts_it(workers, token, tmp_path, redis_server):
    await asyncio.to_thread(prepare_db, tmp_path)
    prefix = "badm" + uuid.uuid4().hex[:8]
    (w,) = workers(1, KEY_PREFIX=prefix)
    base = f"http://127.0.0.1:{w.port}"
    ledger = _prefixed_ledger(redis_server.url, prefix)
    shots = tmp_path / "screenshots"
    shots.mkdir()
    # 1 MiB frames, 0.15 s apart: an 8 MiB part becomes durable every ~1.2 s. The client
    # holds after the first part until the admin page is up (a slow machine must not let the
    # upload run ahead of the page), then goes on to 40 MiB and stays connected.
    src = make_random_file(tmp_path / "live-video.bin", 48 * MiB)
    held = HeldUpload(w.url, token, src, hold_at=8 * MiB, delay=0.15)
    try:
        ref = await held.wait_durable(ledger, 1)
        async with playwright.async_playwright() as p:
            browser = await p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            page = await browser.new_page(viewport={"width": 1400, "height": 900})
            page.on("dialog", lambda d: asyncio.ensure_future(d.accept()))
            await page.goto(f"{base}/admin/login/?next={LIST}")
            await page.fill("#id_username", "ops")
            await page.fill("#id_password", PASSWORD)
            await page.click("input[type=submit]")
            await page.wait_for_selector("#djr-sessions")
            await page.screenshot(path=str(shots / "01-list.png"), full_page=True)
            # The durable column moves without a reload (polling).
            first = await _durable_cell(page, ref)
            assert first >= 0, "the live session is not listed"
            held.hold_until(40 * MiB)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 30
            seen = {first}
            while len(seen) < 3:
                assert loop.time() < deadline, f"durable bytes did not move: {seen}"
                await asyncio.sleep(0.3)
                seen.add(await _durable_cell(page, ref))
            assert max(seen) > first
            await page.screenshot(path=str(shots / "02-list-moved.png"), full_page=True)

            await page.click(f'#djr-sessions tr[data-ref="{ref}"] td a')
            await page.wait_for_selector("#djr-parts")
            assert "part 1 stored" in await page.inner_text("#djr-events")
            await page.screenshot(path=str(shots / "03-detail.png"), full_page=True)

            await page.click("#djr-abort")
            await page.wait_for_selector("ul.messagelist li.success")
            assert (await page.inner_text("#djr-state")) == "aborted"
            await page.screenshot(path=str(shots / "04-aborted.png"), full_page=True)
            # Not staff, or staff without the permission: refused.
            for user, shot in (("plain", "05-non-staff.png"), ("staffnoperm", "06-no-perm.png")):
                ctx = await browser.new_context()
                other = await ctx.new_page()
                await other.goto(f"{base}/admin/login/?next={LIST}")
                await other.fill("#id_username", user)
                await other.fill("#id_password", PASSWORD)
                await other.click("input[type=submit]")
                await other.wait_for_load_state()
                body = await other.inner_text("body")
                assert await other.locator("#djr-sessions").count() == 0, user
                assert ("staff account" in body) if user == "plain" else (
                    "403" in body or "Forbidden" in body or "permission" in body.lower()), body
                await other.screenshot(path=str(shots / shot), full_page=True)
                await ctx.close()
            await browser.close()
        with pytest.raises(UploadFailed) as err:
            await asyncio.wait_for(held.task, 30)
        assert err.value.code == "aborted"
        assert (await ledger.get(ref)).state == "aborted"
        print(f"screenshots: {shots}")
    finally:
        if not held.task.done():
            held.task.cancel()
            await asyncio.gather(held.task, return_exceptions=True)
        await ledger.close()
