"""A real local Redis Cluster: three masters (``redis-server --cluster-enabled yes``) on free
ports, joined by ``redis-cli --cluster create --cluster-replicas 0``.

Each node gets its own data port and its own cluster-bus port (``cluster-port``, Redis >= 7),
both picked free, so the fixture never depends on ``port + 10000`` being free or below 65536.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
        conf = self.dir / "cluster-node.conf"  # a private copy (CONFIG REWRITE safe)
        if not conf.exists():
            shutil.copyfile(NODE_CONF, conf)
        args = [REDIS_SERVER, str(conf), "--port", str(self.port), "--bind", self.host,
                "--dir", str(self.dir), "--save", "", *persist,
                "--daemonize", "no", "--cluster-port", str(self.bus_port),
                "--cluster-config-file", str(self.dir / "nodes.conf")]
        self._spawn(args, timeout)
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


# --------------------------------------------------------------------------- Sentinel

DEPLOY_REDIS = NODE_CONF.parent


class ConfiguredRedis(RedisServer):
    """redis-server started from a config file of deploy/redis/ plus command-line overrides
    (this machine's port, bind address and directory come last and win)."""

    def __init__(self, directory: Path, conf: Path, *extra: str, sentinel: bool = False) -> None:
        super().__init__(directory)
        self.conf = conf
        self.extra = list(extra)
        self.sentinel = sentinel

    def start(self, timeout: float = 20.0) -> ConfiguredRedis:
        # A private copy: Sentinel makes its instances CONFIG REWRITE their config file.
        conf = self.dir / f"run-{self.conf.name}"
        if not conf.exists():
            shutil.copyfile(self.conf, conf)
        args = [REDIS_SERVER, str(conf)]
        if self.sentinel:
            args.append("--sentinel")
        args += ["--port", str(self.port), "--bind", self.host, "--dir", str(self.dir),
                 "--daemonize", "no", *self.extra]
        self._spawn(args, timeout)
        return self


@dataclass
class SentinelSet:
    """A master and a replica (deploy/redis/redis.conf + sentinel-node.conf) watched by one
    sentinel
    (deploy/redis/sentinel.conf, quorum lowered to 1) under the master name ``djr``."""

    master: ConfiguredRedis
    replica: ConfiguredRedis
    sentinel: ConfiguredRedis
    name: str = "djr"

    @property
    def url(self) -> str:
        return self.master.url

    @property
    def sentinels(self) -> list[str]:
        return [f"{self.sentinel.host}:{self.sentinel.port}"]

    def cli(self, server: RedisServer, *args: str) -> str:
        return subprocess.run([REDIS_CLI, "-h", server.host, "-p", str(server.port), *args],
                              check=True, capture_output=True, text=True, timeout=30).stdout

    def master_port(self) -> int:
        out = self.cli(self.sentinel, "sentinel", "get-master-addr-by-name", self.name)
        return int(out.split()[1])

    def role(self, server: RedisServer) -> str:
        return self.cli(server, "role").split()[0]

    def wait(self, pred: Any, what: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not pred():
            if time.monotonic() > deadline:
                raise TimeoutError(what)
            time.sleep(0.2)

    def wait_ready(self) -> None:
        """Until the replica is in sync and the sentinel knows it (else no failover)."""
        self.wait(lambda: "master_link_status:up" in self.cli(self.replica, "info",
                                                               "replication"),
                  "replica in sync")
        self.wait(lambda: str(self.replica.port) in self.cli(
            self.sentinel, "sentinel", "replicas", self.name), "sentinel sees the replica")

    def failover(self) -> None:
        """``SENTINEL FAILOVER``: the replica becomes master; waits until both agree."""
        self.cli(self.sentinel, "sentinel", "failover", self.name)
        self.wait(lambda: self.master_port() == self.replica.port
                  and self.role(self.replica) == "master"
                  and self.role(self.master) == "slave", "failover done")

    def stop(self) -> None:
        for s in (self.sentinel, self.replica, self.master):
            s.stop()


@pytest.fixture
def redis_sentinel(tmp_path: Path) -> Iterator[SentinelSet]:
    """A private master + replica + sentinel set (``.url``, ``.sentinels``, ``.failover()``,
    ``.master_port()``), stopped at the end of the test."""
    conf = DEPLOY_REDIS / "redis.conf"
    # sentinel-node.conf includes redis.conf by an absolute path: pass its own directives
    # on the command line instead.
    node = [arg for line in (DEPLOY_REDIS / "sentinel-node.conf").read_text().splitlines()
            if line.strip() and not line.startswith(("#", "include"))
            for arg in (f"--{line.split()[0]}", *line.split()[1:])]
    assert "--min-replicas-to-write" in node
    fsync = ("--appendfsync", "always", "--save", "", *node)
    master = ConfiguredRedis(tmp_path / "master", conf, *fsync)
    replica = ConfiguredRedis(tmp_path / "replica", conf, *fsync)
    sentinel = ConfiguredRedis(tmp_path / "sentinel", tmp_path / "sentinel.conf", sentinel=True)
    text = (DEPLOY_REDIS / "sentinel.conf").read_text()
    text = re.sub(r"(?m)^sentinel monitor djr .*$",
                  f"sentinel monitor djr 127.0.0.1 {master.port} 1", text)
    # A forced failover does not wait for down-after; keep the rest of the recipe.
    (tmp_path / "sentinel.conf").write_text(text)
    replica.extra += ["--replicaof", "127.0.0.1", str(master.port)]
    sset = SentinelSet(master, replica, sentinel)
    try:
        master.start()
        replica.start()
        sentinel.start()
        sset.wait_ready()
        yield sset
    finally:
        sset.stop()
