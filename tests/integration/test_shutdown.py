"""A worker stops promptly after connections that were refused with a typed error.

`make run` hung on Ctrl-C (uvicorn: "Waiting for background tasks to complete", then
SIGKILL) after CLI uploads with a garbage or expired token: on about one short connection in
ten, the consumer's channel-layer receive (channels_redis BZPOPMIN loop) lost its
cancellation and kept the connection's ASGI task alive for ever (consumer._cancel_hard)."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess

import pytest
from websockets.asyncio.client import connect

pytestmark = pytest.mark.integration


async def _refused(url: str, token: str, code: str) -> None:
    async with connect(url, compression=None, open_timeout=20) as ws:
        await ws.send(json.dumps({"type": "open", "id": "1", "token": token, "name": "x.bin",
                                  "size": 10, "content_type": "application/octet-stream"}))
        msg = json.loads(await asyncio.wait_for(ws.recv(), 20))
        assert (msg["type"], msg["code"]) == ("error", code)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
async def test_worker_stops_promptly_after_refused_connections(workers, token, sig):
    (w,) = workers(1, TOKEN_MAX_AGE=1)
    await asyncio.sleep(1.5)  # the fixture's token is now expired for this worker
    for _ in range(10):
        await _refused(w.url, "garbage", "bad_token")
    for _ in range(3):
        await _refused(w.url, token, "token_expired")
    assert w.proc is not None
    w.proc.send_signal(sig)
    try:
        w.proc.wait(timeout=8)
    except subprocess.TimeoutExpired:
        pytest.fail(f"worker still running 8 s after {sig.name}:\n{w.log_text()[-3000:]}")
    assert "Traceback" not in w.log_text()
