"""deploy/redis/redis.conf loads in the installed redis-server and sets what the ledger
relies on (AOF with a per-second fsync, no eviction). cluster-node.conf, sentinel.conf and
sentinel-node.conf run in tests/cluster/."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import redis

from tests.conftest import REDIS_SERVER, RedisServer

pytestmark = pytest.mark.integration
CONF = Path(__file__).resolve().parents[2] / "deploy" / "redis" / "redis.conf"


class FromConf(RedisServer):
    def start(self, timeout: float = 20.0) -> FromConf:
        conf = self.dir / "redis.conf"
        shutil.copyfile(CONF, conf)
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        try:
            self.proc = subprocess.Popen(
                [REDIS_SERVER, str(conf), "--port", str(self.port), "--bind", self.host,
                 "--dir", str(self.dir), "--daemonize", "no"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        finally:
            log.close()
        self._wait_ping(timeout)
        return self


def test_redis_conf_gives_aof_everysec_and_no_eviction(tmp_path):
    server = FromConf(tmp_path / "redis").start()
    try:
        with redis.Redis.from_url(server.url, decode_responses=True) as r:
            conf = {k: r.config_get(k)[k] for k in (
                "appendonly", "appendfsync", "maxmemory-policy", "tcp-keepalive")}
            assert conf == {"appendonly": "yes", "appendfsync": "everysec",
                            "maxmemory-policy": "noeviction", "tcp-keepalive": "60"}
            r.set("k", "v")
            assert r.info("persistence")["aof_enabled"] == 1
        server.restart()  # the AOF brings the data back
        with redis.Redis.from_url(server.url, decode_responses=True) as r:
            assert r.get("k") == "v"
    finally:
        server.stop()
