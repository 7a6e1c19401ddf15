"""The ledger's Redis clients, plain or Cluster (``DJUST_RESUMABLE['REDIS_CLUSTER']``).

One place builds every client the library opens on the ledger's Redis (the ledger, the
sweeper and the sessions command through ``Ledger.from_settings``; the metrics view through
:func:`sync_client`), so a deployment switches to Redis Cluster with one setting:

* ``REDIS_CLUSTER: False`` — ``REDIS_URL`` names one Redis (``redis://``, ``rediss://`` or
  ``unix://``).
* ``REDIS_SENTINELS: ["host:26379", ...]`` with ``REDIS_SENTINEL_MASTER`` — the master that
  the sentinels name, followed across failovers; ``REDIS_URL`` gives only database, user and
  password.
* ``REDIS_CLUSTER: True`` — ``REDIS_URL`` names any one node of the cluster (database 0: a
  cluster has no other); redis-py discovers the others and follows ``MOVED``/``ASK``.

Why the library is cluster-safe (tested against a local 3-master cluster, tests/cluster/):
every Lua script and the one MULTI/EXEC (``Ledger.snapshot``) touch only the keys of one
upload, which share the hash tag ``{<ref>}`` and so one slot; the global keys (index, owner
sets, metrics, sweeper claims) are each a single key written by plain commands, and the
pipelines that mix slots are non-transactional (redis-py's cluster pipeline splits them per
node). Nothing uses ``KEYS``/``SCAN`` or a multi-key command across uploads.

The channel layer is not built here: channels-redis does not speak Redis Cluster, so
``CHANNEL_LAYERS`` must point at a plain Redis (or Sentinel) even when the ledger is a
cluster (system check ``djust_resumable.E011``).
"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import unquote, urlsplit

import redis
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.cluster import RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException
from redis.exceptions import TimeoutError as RedisTimeoutError

from .conf import ResumableSettings

#: Attempts and backoff (seconds) of every client: about 40 s of trying before an error.
RETRIES = 40
BACKOFF = ExponentialBackoff(cap=1.0, base=0.05)


class RaceSafeConnection(aioredis.Connection):
    """redis-py's asyncio ``Connection`` that reports a write racing a close as the
    connection error it is.

    When a connection is closed while a command is being written (seen with every cluster
    node restarting under load), redis-py raises ``AttributeError: 'NoneType' object has no
    attribute 'writelines'`` or ``TypeError: 'NoneType' object is not callable`` from the
    stream writer (redis/redis-py#3546; fix proposed upstream in #4217). Those escape
    redis-py's retry policy and reach the client as ``internal``. Here they become
    ``ConnectionError`` (the connection is already dropped), which the retries handle; any
    other AttributeError/TypeError is re-raised unchanged."""

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        try:
            await super().send_packed_command(command, check_health)
        except (AttributeError, TypeError) as exc:
            if "NoneType" not in str(exc):
                raise
            await self.disconnect(nowait=True)
            raise RedisConnectionError(f"connection closed while writing: {exc}") from exc


class ResilientRedisCluster(AsyncRedisCluster):
    """redis-py's asyncio ``RedisCluster`` that rides out a cluster it cannot reach.

    When no node answers (every master restarting, a network cut), redis-py 8 raises
    ``RedisClusterException("Redis Cluster cannot be connected")`` at once, with no retry and
    not as a ``RedisError``: the service would answer ``internal`` instead of the retryable
    ``ledger_unavailable``. Here (re)discovery is retried with the same backoff as the plain
    client (``RETRIES``, ``BACKOFF``) and then fails with redis-py's ``ConnectionError``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # redis-py's cluster hard-codes its Connection class; nodes discovered later are
        # built from nodes_manager.connection_kwargs, the startup nodes already exist.
        self.nodes_manager.connection_kwargs["connection_class"] = RaceSafeConnection
        for node in self.nodes_manager.startup_nodes.values():
            node.connection_class = RaceSafeConnection

    async def initialize(self, *args: Any, **kwargs: Any) -> ResilientRedisCluster:
        failures = 0
        while True:
            try:
                await super().initialize(*args, **kwargs)
                return self
            except RedisClusterException as exc:
                failures += 1
                if failures > RETRIES:
                    raise RedisConnectionError(f"Redis Cluster unreachable: {exc}") from exc
                await asyncio.sleep(BACKOFF.compute(failures))


#: What ``async_client`` returns: redis-py's asyncio client or its asyncio cluster client.
AsyncClient = aioredis.Redis | AsyncRedisCluster


def async_client(settings: ResumableSettings) -> AsyncClient:
    """An asyncio client on ``REDIS_URL``: a ``RedisCluster`` when ``REDIS_CLUSTER`` is true.

    Retries (exponential backoff capped at 1 s, 40 attempts: about 40 s) ride out a Redis
    restart, a Sentinel failover or a cluster failover or restart of a few seconds
    (``ResilientRedisCluster``); after that the caller gets redis-py's
    ``ConnectionError``/``TimeoutError`` (the service maps them to ``ledger_unavailable``).
    Connecting is lazy: building the client never touches the network."""
    retry = Retry(BACKOFF, retries=RETRIES)
    common: dict[str, Any] = {
        "retry": retry,
        "retry_on_error": [RedisConnectionError, RedisTimeoutError, ConnectionResetError],
        "health_check_interval": 10, "socket_connect_timeout": 2, "socket_timeout": 10}
    if settings.REDIS_CLUSTER:
        return ResilientRedisCluster.from_url(settings.REDIS_URL, **common)
    if settings.REDIS_SENTINELS:
        from redis.asyncio.sentinel import Sentinel as AsyncSentinel

        # retry/retry_on_error go to each connection: on a failover the old master answers
        # READONLY or drops the socket, the connection asks the sentinels again, the retry
        # re-sends on the new master.
        sentinel = AsyncSentinel(sentinel_addresses(settings), sentinel_kwargs=_SENTINEL_KW)
        return sentinel.master_for(settings.REDIS_SENTINEL_MASTER, **_url_auth(settings),
                                   **common)
    return aioredis.Redis.from_url(settings.REDIS_URL, connection_class=RaceSafeConnection,
                                   **common)


def sync_client(settings: ResumableSettings) -> redis.Redis | RedisCluster:
    """A synchronous client on ``REDIS_URL`` (the metrics view runs in a thread); a
    ``RedisCluster`` when ``REDIS_CLUSTER`` is true. Short timeouts (2 s connect, 5 s read):
    a scrape should fail fast rather than hang."""
    if settings.REDIS_CLUSTER:
        return RedisCluster.from_url(settings.REDIS_URL, socket_connect_timeout=2,
                                     socket_timeout=5)
    if settings.REDIS_SENTINELS:
        from redis.sentinel import Sentinel

        sentinel = Sentinel(sentinel_addresses(settings), sentinel_kwargs=_SENTINEL_KW)
        return sentinel.master_for(settings.REDIS_SENTINEL_MASTER, **_url_auth(settings),
                                   socket_connect_timeout=2, socket_timeout=5)
    return redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=2, socket_timeout=5)


#: Timeouts of the connections to the sentinels themselves (seconds).
_SENTINEL_KW: dict[str, Any] = {"socket_connect_timeout": 2, "socket_timeout": 2}


def sentinel_addresses(settings: ResumableSettings) -> list[tuple[str, int]]:
    """``REDIS_SENTINELS`` as ``(host, port)`` pairs; entries are ``"host:port"`` strings or
    ``[host, port]`` pairs (port 26379 when absent). Raises ValueError for a malformed one."""
    out: list[tuple[str, int]] = []
    for item in settings.REDIS_SENTINELS:
        if isinstance(item, str):
            host, _, port = item.rpartition(":") if ":" in item else (item, "", "26379")
            out.append((host, int(port)))
        elif isinstance(item, (list, tuple)) and len(item) == 2:
            out.append((str(item[0]), int(item[1])))
        else:
            raise ValueError(f"bad sentinel address {item!r}")
    return out


def _url_auth(settings: ResumableSettings) -> dict[str, Any]:
    """Database, user and password of ``REDIS_URL`` (for the master found by Sentinel)."""
    parts = urlsplit(settings.REDIS_URL)
    out: dict[str, Any] = {"db": url_db(settings.REDIS_URL)}
    if parts.username:
        out["username"] = unquote(parts.username)
    if parts.password:
        out["password"] = unquote(parts.password)
    return out


def url_db(url: str) -> int:
    """The database number a redis-py URL selects (path ``/N`` or ``?db=N``; 0 when absent).
    Raises ValueError for a non-numeric one."""
    parts = urlsplit(url)
    for item in parts.query.split("&"):
        if item.startswith("db="):
            return int(item[3:])
    path = parts.path.strip("/") if parts.scheme in ("redis", "rediss") else ""
    return int(path) if path else 0


def url_address(url: str) -> tuple[str, int] | None:
    """``(host, port)`` of a ``redis://``/``rediss://`` URL (port 6379 when absent), None for
    other schemes."""
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss") or not parts.hostname:
        return None
    return parts.hostname, parts.port or 6379
