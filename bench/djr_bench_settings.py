"""example/project settings plus one benchmark-only fix: the channel layer's Redis connections
get ``socket_timeout=None``.

Why: redis-py 8 changed the default ``socket_timeout`` from None to 5 s. channels_redis 4.3
waits for channel messages with ``BZPOPMIN ... 5`` (a 5 s server-side block), so the client-side
read times out at the same moment and ``redis.exceptions.TimeoutError`` escapes from
``await_many_dispatch``: every WebSocket consumer is torn down after ~5 s (django/channels_redis
#422, redis/redis-py#4091). With the stock settings an upload lasting more than ~5 s is
interrupted, the dead connection keeps the lease until LEASE_TTL, and the client waits ``busy``.
``bench/throughput.py --stock-settings`` runs with example/project's settings unchanged to show
it. The proper fix belongs in example/project/settings.py (and docs/deploy.md), not here.
"""

from project.settings import *  # noqa: F403
from project.settings import REDIS_URL

CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {"hosts": [{"address": REDIS_URL, "socket_timeout": None}]},
    }
}
