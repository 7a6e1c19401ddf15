"""The upload-sessions admin through a real uvicorn worker of the example project, a real
redis-server and a real moto_server: staff sees a live session, others are refused, abort
marks the ledger, aborts the multipart upload and the uploading client gets ``aborted``."""

from __future__ import annotations

import asyncio
import os
import re
import sqlite3
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
import requests
from django.conf import settings as dj

from djust_resumable.client import ResumableUploader, UploadFailed
from djust_resumable.conf import MiB
from tests.helpers import make_random_file

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "s3cret-Pass-123"
LIST = "/admin/djust_resumable/uploadsession/"

_USERS = f"""
from django.contrib.auth.models import Permission, User
perms = Permission.objects.filter(content_type__app_label="djust_resumable",
                                  codename__in=["view_uploadsession", "change_uploadsession",
                                                "view_uploadhistory"])
ops = User.objects.create_user("ops", password="{PASSWORD}", is_staff=True)
ops.user_permissions.set(perms)
plain = User.objects.create_user("plain", password="{PASSWORD}")
User.objects.create_user("staffnoperm", password="{PASSWORD}", is_staff=True)
# The admin's login form refuses non-staff users: give "plain" a session the way any other
# login view of the site would.
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
from django.contrib.sessions.backends.db import SessionStore
s = SessionStore()
s[SESSION_KEY] = str(plain.pk)
s[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
s[HASH_SESSION_KEY] = plain.get_session_auth_hash()
s.create()
print("SESSION=" + s.session_key)
"""


def prepare_db(tmp_path: Path) -> tuple[Path, str]:
    """Migrate the example project's database that the ``workers`` fixture points its
    processes at (``tmp_path/db.sqlite3``) and create the test users. Returns the database
    and the session key of the logged-in non-staff user "plain"."""
    db = tmp_path / "db.sqlite3"
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "project.settings",
           "DJANGO_SECRET_KEY": dj.SECRET_KEY, "DJR_DB_PATH": str(db)}
    manage = [sys.executable, str(ROOT / "example" / "manage.py")]
    subprocess.run([*manage, "migrate", "--noinput", "-v", "0"], env=env, check=True, cwd=ROOT)
    out = subprocess.run([*manage, "shell", "-c", _USERS], env=env, check=True, cwd=ROOT,
                         capture_output=True, text=True).stdout
    return db, re.search(r"SESSION=(\w+)", out).group(1)


def login(base: str, username: str) -> requests.Session:
    s = requests.Session()
    s.get(f"{base}/admin/login/", timeout=10)
    r = s.post(f"{base}/admin/login/", timeout=10, allow_redirects=False, data={
        "username": username, "password": PASSWORD, "next": "/admin/",
        "csrfmiddlewaretoken": s.cookies["csrftoken"]})
    assert r.status_code == 302, r.text[:500]
    return s


def post_action(s: requests.Session, base: str, ref: str, action: str) -> requests.Response:
    return s.post(f"{base}{LIST}{ref}/action/{action}/", timeout=30, allow_redirects=False,
                  data={"csrfmiddlewaretoken": s.cookies["csrftoken"]},
                  headers={"Referer": f"{base}{LIST}{ref}/"})


def history_state(db: Path, ref: str) -> str | None:
    with sqlite3.connect(db) as c:
        row = c.execute("SELECT state FROM djust_resumable_uploadhistory WHERE ref = ?",
                        (ref,)).fetchone()
    return row[0] if row else None


class HeldUpload:
    """An upload driven from the test that stops sending after ``hold_at`` bytes (optionally
    slowly before that) and waits there, connected, until the server tells it something."""

    def __init__(self, url: str, token: str, path: Path, hold_at: int,
                 delay: float = 0.0) -> None:
        self.hold_at = hold_at
        self.delay = delay
        self.durable = 0
        self.up = ResumableUploader(url, token, on_progress=self._progress, backoff_max=0.5,
                                    give_up_after=60)
        self._hold_moved = asyncio.Event()
        self.task = asyncio.create_task(self.up.upload(str(path)))

    def hold_until(self, hold_at: int) -> None:
        """Let the sender go on until ``hold_at`` bytes have been sent."""
        self.hold_at = hold_at
        self._hold_moved.set()

    async def _progress(self, sent: int, durable: int, size: int) -> None:
        self.durable = durable
        if asyncio.current_task() is self.task:
            return  # the client's receive loop (acks): never block it, only the sender
        while sent >= self.hold_at:  # cancelled when the connection ends
            await self._hold_moved.wait()
            self._hold_moved.clear()
        if self.delay:
            await asyncio.sleep(self.delay)

    async def wait_durable(self, ledger: Any, at_least: int, timeout: float = 30) -> str:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            if self.task.done():
                self.task.result()
                raise AssertionError("upload ended early")
            if self.up.ref:
                rec = await ledger.get(self.up.ref)
                if rec is not None and rec.durable >= at_least:
                    return self.up.ref
            assert loop.time() < deadline, "upload did not become durable in time"
            await asyncio.sleep(0.1)


async def test_admin_sessions_list_permissions_and_abort(workers, token, tmp_path, grant,
                                                         ledger_reader, redis_server, s3_client,
                                                         s3_bucket):
    db, plain_session = await asyncio.to_thread(prepare_db, tmp_path)
    prefix = "adm" + uuid.uuid4().hex[:8]
    (w,) = workers(1, KEY_PREFIX=prefix)
    base = f"http://127.0.0.1:{w.port}"
    ledger = _prefixed_ledger(redis_server.url, prefix)
    try:
        src = make_random_file(tmp_path / "held.bin", 24 * MiB)
        held = HeldUpload(w.url, token, src, hold_at=12 * MiB)
        ref = await held.wait_durable(ledger, 1)

        # Refused: anonymous and non-staff go to the login page, staff without the
        # permission gets 403.
        anon = await asyncio.to_thread(requests.get, f"{base}{LIST}", timeout=10,
                                       allow_redirects=False)
        assert anon.status_code == 302 and "/admin/login/" in anon.headers["Location"]
        plain = requests.Session()
        plain.cookies.set("sessionid", plain_session)
        r = await asyncio.to_thread(plain.get, f"{base}{LIST}", timeout=10,
                                    allow_redirects=False)
        assert r.status_code == 302 and "/admin/login/" in r.headers["Location"]
        r = await asyncio.to_thread(plain.get, f"{base}{LIST}poll.json", timeout=10,
                                    allow_redirects=False)
        assert r.status_code == 302
        noperm = await asyncio.to_thread(login, base, "staffnoperm")
        for url in (LIST, f"{LIST}poll.json", f"{LIST}{ref}/"):
            r = await asyncio.to_thread(noperm.get, f"{base}{url}", timeout=10,
                                        allow_redirects=False)
            assert r.status_code == 403, url
        r = await asyncio.to_thread(post_action, noperm, base, ref, "abort")
        assert r.status_code == 403

        # Staff with the permission: the admin index lists it, the list shows the session.
        ops = await asyncio.to_thread(login, base, "ops")
        r = await asyncio.to_thread(ops.get, f"{base}/admin/", timeout=10)
        assert r.status_code == 200 and LIST in r.text
        r = await asyncio.to_thread(ops.get, f"{base}{LIST}", timeout=10)
        assert r.status_code == 200 and ref in r.text and "held.bin" in r.text
        r = await asyncio.to_thread(ops.get, f"{base}{LIST}poll.json", timeout=10)
        rows = {row["ref"]: row for row in r.json()["rows"]}
        row = rows[ref]
        assert row["state"] == "uploading" and row["user"] == grant.user
        assert row["durable"] >= 8 * MiB and row["size"] == 24 * MiB
        assert row["holder"] and row["worker"]
        # Filters and search.
        for q, hit in (("state=uploading", True), ("state=complete", False),
                       ("q=held", True), (f"q={ref[:10]}", True), ("q=nomatch", False),
                       (f"user={grant.user}", True), ("slot=other", False), ("age=1h", True),
                       ("age=old", False)):
            r = await asyncio.to_thread(ops.get, f"{base}{LIST}poll.json?{q}", timeout=10)
            assert (ref in {x["ref"] for x in r.json()["rows"]}) is hit, q
        # Detail: every field, parts, ranges, timeline.
        r = await asyncio.to_thread(ops.get, f"{base}{LIST}{ref}/", timeout=10)
        assert r.status_code == 200
        for text in ("upload_id", "holder_channel", "part 1 stored", "registered",
                     "attached on worker", 'id="djr-parts"', 'id="djr-ranges"'):
            assert text in r.text, text
        assert history_state(db, ref) in ("registered", "uploading")

        # Abort: ledger aborted, multipart upload gone, the client hears `aborted`.
        rec = await ledger.get(ref)
        r = await asyncio.to_thread(post_action, ops, base, ref, "abort")
        assert r.status_code == 302
        with pytest.raises(UploadFailed) as err:
            await asyncio.wait_for(held.task, 30)
        assert err.value.code == "aborted"
        rec2 = await ledger.get(ref)
        assert rec2.state == "aborted" and "admin ops" in rec2.error
        uploads = s3_client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", [])
        assert rec.upload_id not in {u["UploadId"] for u in uploads}
        assert any(e["event"] == "aborted" for e in await ledger.events(ref))
        for _ in range(50):
            if history_state(db, ref) == "aborted":
                break
            await asyncio.sleep(0.1)
        assert history_state(db, ref) == "aborted"
        # The detail page shows it; a second abort is refused politely.
        r = await asyncio.to_thread(post_action, ops, base, ref, "abort")
        assert r.status_code == 302
        r = await asyncio.to_thread(ops.get, f"{base}{LIST}{ref}/", timeout=10)
        assert "aborted" in r.text and re.search(r"(?i)abort refused", r.text)
    finally:
        await ledger.close()


async def test_admin_expire_now_and_retry_completion(workers, token, tmp_path, redis_server,
                                                     s3_client, s3_bucket):
    await asyncio.to_thread(prepare_db, tmp_path)
    prefix = "adm" + uuid.uuid4().hex[:8]
    (w,) = workers(1, KEY_PREFIX=prefix)
    base = f"http://127.0.0.1:{w.port}"
    ledger = _prefixed_ledger(redis_server.url, prefix)
    try:
        ops = await asyncio.to_thread(login, base, "ops")
        # expire now: an idle upload (client gone, no lease).
        src = make_random_file(tmp_path / "idle.bin", 12 * MiB)
        held = HeldUpload(w.url, token, src, hold_at=9 * MiB)
        ref = await held.wait_durable(ledger, 1)
        # Refused while a writer holds it.
        await asyncio.to_thread(post_action, ops, base, ref, "expire")
        assert (await ledger.get(ref)).state == "uploading"
        held.task.cancel()
        await asyncio.gather(held.task, return_exceptions=True)
        for _ in range(100):
            if await ledger.lease_info(ref) is None:
                break
            await asyncio.sleep(0.1)
        rec = await ledger.get(ref)
        r = await asyncio.to_thread(post_action, ops, base, ref, "expire")
        assert r.status_code == 302
        assert (await ledger.get(ref)).state == "expired"
        uploads = s3_client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", [])
        assert rec.upload_id not in {u["UploadId"] for u in uploads}

        # retry completion: a fully durable upload whose writer died in `completing`.
        src2 = make_random_file(tmp_path / "stuck.bin", 9 * MiB)
        held2 = HeldUpload(w.url, token, src2, hold_at=9 * MiB)
        ref2 = await held2.wait_durable(ledger, 9 * MiB)
        held2.task.cancel()
        await asyncio.gather(held2.task, return_exceptions=True)
        for _ in range(100):
            if await ledger.lease_info(ref2) is None:
                break
            await asyncio.sleep(0.1)
        await ledger.transition(ref2, "completing", ("uploading",))  # the crash point
        r = await asyncio.to_thread(post_action, ops, base, ref2, "retry_completion")
        assert r.status_code == 302
        rec2 = await ledger.get(ref2)
        assert rec2.state == "complete" and rec2.etag
        head = s3_client.head_object(Bucket=s3_bucket, Key=rec2.key)
        assert head["ContentLength"] == 9 * MiB
    finally:
        await ledger.close()


def _prefixed_ledger(url: str, prefix: str) -> Any:
    import dataclasses

    import redis.asyncio as aioredis

    from djust_resumable.conf import get_settings
    from djust_resumable.ledger import Ledger

    return Ledger(aioredis.Redis.from_url(url),
                  dataclasses.replace(get_settings(), KEY_PREFIX=prefix))
