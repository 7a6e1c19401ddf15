"""deploy/asgi/uvicorn.sh, run as it is: it serves uploads (byte-exact by sha256), declines
permessage-deflate even when the client offers it, and stops on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings as dj
from websockets.asyncio.client import connect
from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory

from djust_resumable.client import ResumableUploader
from djust_resumable.conf import MiB
from tests.helpers import free_port, make_random_file, sha256_file, wait_for_port
from tests.integration.conftest import object_sha256

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "deploy" / "asgi" / "uvicorn.sh"


async def test_uvicorn_recipe_serves_uploads_without_deflate(redis_server, moto_server,
                                                             s3_client, s3_bucket, token,
                                                             tmp_path):
    port = free_port()
    env = {**os.environ, "PYTHON": sys.executable, "HOST": "127.0.0.1", "PORT": str(port),
           "WEB_CONCURRENCY": "2", "DJR_APP_DIR": str(ROOT / "example"),
           "DJANGO_SETTINGS_MODULE": "project.settings",
           "DJANGO_SECRET_KEY": dj.SECRET_KEY,
           "DJR_REDIS_URL": redis_server.url, "AWS_S3_ENDPOINT_URL": moto_server.url,
           "AWS_STORAGE_BUCKET_NAME": s3_bucket, "DJR_DB_PATH": str(tmp_path / "db.sqlite3"),
           "DJR_SETTINGS_JSON": json.dumps({"KEY_PREFIX": "asgi" + os.urandom(4).hex()})}
    log = open(tmp_path / "uvicorn.log", "ab")  # noqa: SIM115 - handed to the child
    try:
        proc = subprocess.Popen(["sh", str(SCRIPT)], cwd=ROOT, env=env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
    finally:
        log.close()
    try:
        wait_for_port(port, timeout=60)
        url = f"ws://127.0.0.1:{port}/ws/djust-resumable/"
        # A browser-like offer of permessage-deflate is declined: no extension negotiated.
        async with connect(url, extensions=[ClientPerMessageDeflateFactory()],
                           compression=None) as ws:
            assert ws.response.headers.get("Sec-WebSocket-Extensions") is None
            assert ws.protocol.extensions == []
        src = make_random_file(tmp_path / "src.bin", 17 * MiB + 3)
        result = await ResumableUploader(url, token).upload(str(src))
        assert result.ref and result.bytes_resent == 0
        keys = [o["Key"] for o in s3_client.list_objects_v2(Bucket=s3_bucket)
                .get("Contents", []) if not o["Key"].startswith("resumable/.tails/")]
        assert len(keys) == 1
        assert object_sha256(s3_client, s3_bucket, keys[0]) == (sha256_file(src),
                                                                 src.stat().st_size)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            code = proc.wait(45)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
            raise
    assert code == 0, (tmp_path / "uvicorn.log").read_text()[-2000:]
    assert "Traceback" not in (tmp_path / "uvicorn.log").read_text()
