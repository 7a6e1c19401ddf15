"""The Redis client factory: redis-py's writer-close race becomes a ConnectionError that its
retries handle (redis/redis-py#3546), for plain and cluster clients alike."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis
from fakeredis import TcpFakeServer
from redis.exceptions import ConnectionError as RedisConnectionError

from djust_resumable.conf import ResumableSettings, get_settings
from djust_resumable.redis_client import RaceSafeConnection, ResilientRedisCluster, async_client
from tests.helpers import free_port


class _ClosedUnderUs:
    """What the stream writer looks like after a concurrent close (the race): the transport
    callbacks are gone, so writing fails with the error redis-py lets escape."""

    transport = None

    def writelines(self, data):
        raise AttributeError("'NoneType' object has no attribute 'writelines'")

    def close(self):
        pass

    async def wait_closed(self):
        pass


class _Buggy(_ClosedUnderUs):
    def writelines(self, data):
        raise AttributeError("'list' object has no attribute 'encode'")


@pytest.fixture
def fake_server():
    import threading

    port = free_port()
    server = TcpFakeServer(("127.0.0.1", port), server_type="redis")
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    yield port
    server.shutdown()
    server.server_close()


async def _written_with(cls, port: int, writer) -> BaseException:
    conn = cls(host="127.0.0.1", port=port, socket_timeout=None)
    await conn.connect()
    assert await conn.send_command("PING") is None and await conn.read_response() == b"PONG"
    conn._writer = writer
    try:
        await conn.send_packed_command(conn.pack_command("PING"), check_health=False)
    except BaseException as exc:  # noqa: BLE001 - the type is what the test checks
        return exc
    finally:
        await conn.disconnect(nowait=True)
    raise AssertionError("the write did not fail")


async def test_writer_close_race_becomes_a_connection_error(fake_server):
    plain = await _written_with(aioredis.Connection, fake_server, _ClosedUnderUs())
    assert isinstance(plain, AttributeError)  # redis-py as it is: escapes every retry
    ours = await _written_with(RaceSafeConnection, fake_server, _ClosedUnderUs())
    assert isinstance(ours, RedisConnectionError) and "closed while writing" in str(ours)
    # Any other AttributeError is a real bug and stays one.
    other = await _written_with(RaceSafeConnection, fake_server, _Buggy())
    assert type(other) is AttributeError


def test_clients_use_the_race_safe_connection():
    s: ResumableSettings = get_settings()
    plain = async_client(s)
    assert plain.connection_pool.connection_class is RaceSafeConnection
    cluster = ResilientRedisCluster.from_url(f"redis://127.0.0.1:{free_port()}/0")
    assert cluster.nodes_manager.connection_kwargs["connection_class"] is RaceSafeConnection
    assert [n.connection_class for n in cluster.nodes_manager.startup_nodes.values()] == [
        RaceSafeConnection]
    asyncio.run(plain.aclose())
