"""A real local Redis Cluster: three masters (``redis-server --cluster-enabled yes``) on free
ports, joined by ``redis-cli --cluster create --cluster-replicas 0``.

Each node gets its own data port and its own cluster-bus port (``cluster-port``, Redis >= 7),
both picked free, so the fixture never depends on ``port + 10000`` being free or below 65536.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import REDIS_SERVER, RedisServer
from tests.helpers import free_port
from tests.integration.conftest import grant, token, workers  # noqa: F401 - shared fixtures

REDIS_CLI = shutil.which("redis-cli") or "/usr/bin/redis-cli"
NODE_CONF = Path(__file__).resolve().parents[2] / "deploy" / "redis" / "cluster-node.conf"


class ClusterNode(RedisServer):
    """One cluster-enabled redis-server. ``aof=True``: ``appendonly yes``, ``appendfsync
    always``, so its data survives a restart (``nodes.conf`` keeps its cluster identity)."""

    def __init__(self, directory: Path, aof: bool = False) -> None:
        super().__init__(directory, aof=aof)
        self.bus_port = free_port()
        while self.bus_port == self.port:
            self.bus_port = free_port()

    def start(self, timeout: float = 20.0) -> ClusterNode:
        persist = ["--appendfsync", "always"] if self.aof else ["--appendonly", "no"]
        # The production node config (deploy/redis/cluster-node.conf), with this machine's
        # ports and directory: the recipe itself is what the cluster tests run on.
        args = [REDIS_SERVER, str(NODE_CONF), "--port", str(self.port), "--bind", self.host,
                "--dir", str(self.dir), "--save", "", *persist,
                "--daemonize", "no", "--cluster-port", str(self.bus_port),
                "--cluster-config-file", str(self.dir / "nodes.conf")]
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        try:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL)
        finally:
            log.close()
        self._wait_ping(timeout)
        return self


@dataclass
class RedisCluster:
    """A running 3-master cluster. ``.url`` is one startup node (what ``REDIS_URL`` holds
    with ``REDIS_CLUSTER: True``); ``.urls`` every master."""

    nodes: list[ClusterNode] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.nodes[0].url

    @property
    def urls(self) -> list[str]:
        return [n.url for n in self.nodes]

    def cli(self, node: ClusterNode, *args: str) -> str:
        return subprocess.run([REDIS_CLI, "-h", node.host, "-p", str(node.port), *args],
                              check=True, capture_output=True, text=True, timeout=30).stdout

    def info(self, node: ClusterNode) -> dict[str, str]:
        out = self.cli(node, "cluster", "info")
        return dict(line.strip().split(":", 1) for line in out.splitlines() if ":" in line)

    def wait_ok(self, timeout: float = 60.0) -> None:
        """Until every node reports ``cluster_state:ok`` with all 16384 slots assigned."""
        deadline = time.monotonic() + timeout
        while True:
            infos = [self.info(n) for n in self.nodes]
            if all(i.get("cluster_state") == "ok" and i.get("cluster_slots_ok") == "16384"
                   and i.get("cluster_known_nodes") == str(len(self.nodes)) for i in infos):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"cluster not ok after {timeout}s: {infos}")
            time.sleep(0.2)

    def stop(self) -> None:
        for n in self.nodes:
            n.stop()

    def start(self) -> None:
        """Start every stopped node again (same ports, directories and ``nodes.conf``) and
        wait for ``cluster_state:ok``."""
        for n in self.nodes:
            if n.proc is None:
                n.start()
        self.wait_ok()


def start_cluster(directory: Path, masters: int = 3, aof: bool = False) -> RedisCluster:
    if not Path(REDIS_CLI).exists():
        pytest.fail("redis-cli not installed: run `make setup` (Debian redis-tools)")
    cluster = RedisCluster([ClusterNode(directory / f"node-{i}", aof=aof)
                            for i in range(masters)])
    try:
        for n in cluster.nodes:
            n.start()
        subprocess.run([REDIS_CLI, "--cluster", "create",
                        *[f"{n.host}:{n.port}" for n in cluster.nodes],
                        "--cluster-replicas", "0", "--cluster-yes"],
                       check=True, capture_output=True, text=True, timeout=60)
        cluster.wait_ok()
    except BaseException:
        cluster.stop()
        raise
    return cluster


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    """A local 3-master Redis Cluster for the session (``.url``, ``.urls``, ``.nodes``).
    Tests share it: use unique key prefixes or refs."""
    cluster = start_cluster(tmp_path_factory.mktemp("redis-cluster"))
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def redis_cluster_aof(tmp_path: Path) -> Iterator[RedisCluster]:
    """A private 3-master cluster with AOF (``appendfsync always``) for tests that stop and
    start its nodes; stopped at the end of the test."""
    cluster = start_cluster(tmp_path / "redis-cluster-aof", aof=True)
    try:
        yield cluster
    finally:
        cluster.stop()
