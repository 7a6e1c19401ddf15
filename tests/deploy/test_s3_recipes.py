"""deploy/s3/ against a real moto_server: the lifecycle rule is accepted and read back, the
compose/Job init script creates the bucket and applies it, and the IAM policy is enough for
every S3 call the app makes — and each of its actions is needed.

The IAM test runs its own moto_server with IAM enforcement switched on (moto's
``/moto-api/reset-auth``): requests are signed with an IAM user's keys and moto checks each
S3 action and resource ARN against the user's policy. What moto does not model (and so is
not tested here): policy conditions, the 403-instead-of-404 answer for a missing key
without s3:ListBucket, KMS permissions (docs/deploy.md)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config

from djust_resumable.conf import MiB, get_settings
from djust_resumable.errors import StorageError
from djust_resumable.ledger import Ledger
from djust_resumable.service import UploadService, UploadWriter
from djust_resumable.sinks.s3 import S3Sink
from djust_resumable.sweeper import Sweeper
from djust_resumable.tokens import UploadGrant
from tests.conftest import _moto_binary
from tests.helpers import free_port, wait_for_port

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
LIFECYCLE = json.loads((ROOT / "deploy" / "s3" / "lifecycle.json").read_text())
POLICY_TEXT = (ROOT / "deploy" / "s3" / "iam-policy.json").read_text()
CREDS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}


def _client(url: str, service: str = "s3", **creds: str) -> Any:
    return boto3.client(service, endpoint_url=url, region_name="us-east-1",
                        config=Config(retries={"mode": "standard", "max_attempts": 2}),
                        **(creds or CREDS))


def test_lifecycle_rule_round_trips(s3_client, s3_bucket):
    s3_client.put_bucket_lifecycle_configuration(Bucket=s3_bucket,
                                                 LifecycleConfiguration=LIFECYCLE)
    got = s3_client.get_bucket_lifecycle_configuration(Bucket=s3_bucket)["Rules"]
    by_id = {r["ID"]: r for r in got}
    assert set(by_id) == {r["ID"] for r in LIFECYCLE["Rules"]}
    for want in LIFECYCLE["Rules"]:
        rule = by_id[want["ID"]]
        assert rule["Status"] == "Enabled"
        assert rule["Filter"]["Prefix"] == want["Filter"]["Prefix"]
        for k in ("AbortIncompleteMultipartUpload", "Expiration"):
            assert rule.get(k) == want.get(k), k


def test_init_script_creates_bucket_and_applies_lifecycle(moto_server, s3_client, tmp_path):
    bucket = f"djr-init-{uuid.uuid4().hex[:12]}"
    env = {**os.environ, "AWS_STORAGE_BUCKET_NAME": bucket,
           "AWS_S3_ENDPOINT_URL": moto_server.url, "AWS_S3_REGION_NAME": "us-east-1",
           "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "DJANGO_SETTINGS_MODULE": "project.settings",
           "DJR_DB_PATH": str(tmp_path / "db.sqlite3")}
    cmd = [sys.executable, str(ROOT / "deploy" / "docker" / "init.py")]
    try:
        for _ in range(2):  # idempotent: the second run finds the bucket and re-applies
            out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True,
                                 timeout=180)
            assert out.returncode == 0, out.stdout + out.stderr
        rules = s3_client.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
        assert {r["ID"] for r in rules} == {r["ID"] for r in LIFECYCLE["Rules"]}
        assert (tmp_path / "db.sqlite3").stat().st_size > 0  # migrations ran
    finally:
        s3_client.delete_bucket_lifecycle(Bucket=bucket)
        s3_client.delete_bucket(Bucket=bucket)


# -- IAM ----------------------------------------------------------------------------------

class AuthMoto:
    """A private moto_server whose IAM enforcement can be switched on and off."""

    def __init__(self, url: str) -> None:
        self.url = url

    def enforce(self, on: bool) -> None:
        # The next N requests skip authentication; inf = off, 0 = every request checked.
        req = urllib.request.Request(f"{self.url}/moto-api/reset-auth",
                                     data=b"0" if on else b"inf", method="POST",
                                     headers={"Content-Type": "text/plain"})
        urllib.request.urlopen(req, timeout=10).close()


@pytest.fixture
def auth_moto(tmp_path: Path) -> Iterator[AuthMoto]:
    port = free_port()
    log = open(tmp_path / "moto.log", "ab")  # noqa: SIM115 - handed to the child
    env = dict(os.environ, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
               AWS_DEFAULT_REGION="us-east-1")
    try:
        proc = subprocess.Popen([_moto_binary(), "-H", "127.0.0.1", "-p", str(port)],
                                stdout=log, stderr=subprocess.STDOUT, env=env,
                                stdin=subprocess.DEVNULL)
    finally:
        log.close()
    try:
        wait_for_port(port, timeout=30)
        moto = AuthMoto(f"http://127.0.0.1:{port}")
        deadline = time.monotonic() + 30
        while True:
            try:
                moto.enforce(False)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        yield moto
    finally:
        proc.terminate()
        proc.wait(10)


def _policy(bucket: str, drop: str | None = None) -> str:
    doc = json.loads(POLICY_TEXT.replace("example-bucket", bucket))
    for st in doc["Statement"]:
        st["Action"] = [a for a in st["Action"] if a != drop]
    doc["Statement"] = [st for st in doc["Statement"] if st["Action"]]
    return json.dumps(doc)


def _grant() -> UploadGrant:
    return UploadGrant(session=os.urandom(8).hex(), user="3", view="tests", slot="files",
                       max_file_size=1 << 40, max_entries=0)


async def _noack(ref: str, received: int, durable: int) -> None:
    return None


async def test_iam_policy_is_enough_and_minimal(auth_moto, redis_server):
    moto = auth_moto
    bucket = f"djr-iam-{uuid.uuid4().hex[:12]}"
    admin = _client(moto.url)
    admin.create_bucket(Bucket=bucket)
    iam = _client(moto.url, "iam")
    iam.create_user(UserName="djr-app")
    iam.put_user_policy(UserName="djr-app", PolicyName="djr", PolicyDocument=_policy(bucket))
    key = iam.create_access_key(UserName="djr-app")["AccessKey"]
    app = _client(moto.url, aws_access_key_id=key["AccessKeyId"],
                  aws_secret_access_key=key["SecretAccessKey"])
    orphan_key = "resumable/2026/01/01/orphan"
    orphan = admin.create_multipart_upload(Bucket=bucket, Key=orphan_key)["UploadId"]

    from django.test.utils import override_settings

    prefix = "iam" + uuid.uuid4().hex[:8]
    with override_settings(DJUST_RESUMABLE={"REDIS_URL": redis_server.url, "KEY_PREFIX": prefix,
                                            "LEASE_TTL": 30},
                           AWS_STORAGE_BUCKET_NAME=bucket):
        s = get_settings()
    sink = S3Sink(s, client=app, bucket=bucket)
    ledger = Ledger.from_settings(s)
    svc = UploadService(ledger, sink, s)
    moto.enforce(True)
    try:
        # Denied: outside the policy's prefixes, and bucket-level writes.
        with pytest.raises(Exception, match="AccessDenied"):
            app.put_object(Bucket=bucket, Key="elsewhere/x", Body=b"x")
        with pytest.raises(Exception, match="AccessDenied"):
            app.delete_bucket(Bucket=bucket)

        # A real upload through the service with the app's keys: parts, a spilled tail
        # (PutObject), a resume (GetObject + DeleteObject of the tail), completion.
        grant = _grant()
        data = os.urandom(12 * MiB + 5)
        rec = await svc.register(grant, "iam.bin", len(data), "application/octet-stream")
        w = await svc.attach(rec.ref, grant, uuid.uuid4().hex, "", _noack)
        assert isinstance(w, UploadWriter)
        await w.write(0, memoryview(data[:9 * MiB + 7]))
        await w.detach(spill=True)
        assert (await ledger.get(rec.ref)).tail_key
        w = await svc.attach(rec.ref, grant, uuid.uuid4().hex, "", _noack)
        assert isinstance(w, UploadWriter)
        await w.write(9 * MiB + 7, memoryview(data[9 * MiB + 7:]))
        await w.finish(None)
        done = await ledger.get(rec.ref)
        assert done.state == "complete"
        with sink.open_reader(done.key) as f:  # HeadObject + ranged GetObject
            assert f.read() == data
        # entry.save()'s server-side copy into the media/ prefix, then delete.
        await sink.copy(done.key, "media/iam-copy.bin")
        assert await sink.stat("media/iam-copy.bin") == len(data)
        # The sweeper: ListBucketMultipartUploads, ListBucket (tails), AbortMultipartUpload.
        report = await Sweeper(ledger, sink, s, grace=0).run()
        assert report.errors == [] and f"{orphan_key} {orphan}" in report.uploads_aborted
        await sink.delete(done.key)
        assert await sink.stat(done.key) is None

        # Minimal: without any one action some call the app makes is refused.
        calls = {
            "s3:PutObject": lambda: sink.create("resumable/x/y", "text/plain"),
            "s3:GetObject": lambda: sink.stat("media/iam-copy.bin"),
            "s3:DeleteObject": lambda: sink.delete_tail("resumable/.tails/r/1-0"),
            "s3:AbortMultipartUpload": lambda: sink.abort(orphan_key, _fresh_upload()),
            "s3:ListBucket": lambda: sink.list_keys("resumable/.tails/"),
            "s3:ListBucketMultipartUploads": lambda: sink.list_multipart_uploads("resumable/"),
            # ListParts: adopting the parts a killed worker sent in full.
            "s3:ListMultipartUploadParts": lambda: sink.list_parts(orphan_key, _fresh_upload(),
                                                                   [1]),
        }

        def _fresh_upload() -> str:
            moto.enforce(False)
            try:
                return admin.create_multipart_upload(Bucket=bucket, Key=orphan_key)["UploadId"]
            finally:
                moto.enforce(True)

        assert set(calls) == {a for st in json.loads(POLICY_TEXT)["Statement"]
                              for a in st["Action"]}
        for action, call in calls.items():
            moto.enforce(False)
            iam.put_user_policy(UserName="djr-app", PolicyName="djr",
                                PolicyDocument=_policy(bucket, drop=action))
            moto.enforce(True)
            with pytest.raises(StorageError) as err:
                await call()
            # HEAD answers have no body: a bare 403 there, AccessDenied elsewhere.
            assert re.search(r"AccessDenied|: 403$", str(err.value)), (action, err.value)
            moto.enforce(False)
            iam.put_user_policy(UserName="djr-app", PolicyName="djr",
                                PolicyDocument=_policy(bucket))
            moto.enforce(True)
            await call()  # and with the full policy the same call passes
    finally:
        moto.enforce(False)
        await ledger.close()
        sink.close()
