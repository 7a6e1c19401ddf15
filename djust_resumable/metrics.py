"""Upload metrics shared by every worker process, served in Prometheus text format.

Recording (``record_*``, called from ``service.py`` and the sweeper) only adds to a dict in
memory: it never awaits, never raises and never touches the network, so it cannot block or
break an upload. A background task per process flushes the sums to the Redis hash
``<KEY_PREFIX>:metrics`` with HINCRBY (one pipeline per ``FLUSH_INTERVAL`` seconds, however
many uploads and frames), so every worker adds to the same counters. A failed flush is
dropped (metrics are best effort; uploads are not).

Reading: ``metrics_view`` (mount it in your ``urls.py``) renders the hash with
``prometheus_client`` through a custom collector. Names (all counters are ``_total``):

* ``djust_resumable_uploads_started_total``    uploads registered
* ``djust_resumable_uploads_resumed_total``    attaches that continued an upload (second or
  later attach, or an attach with durable bytes)
* ``djust_resumable_uploads_completed_total``  uploads completed (object assembled)
* ``djust_resumable_uploads_failed_total``     uploads marked ``failed`` (checksum mismatch)
* ``djust_resumable_uploads_aborted_total``    uploads aborted (cancel, admin)
* ``djust_resumable_uploads_expired_total``    uploads expired by the sweeper
* ``djust_resumable_received_bytes_total``     bytes accepted from clients (new bytes only:
  duplicates below the received offset are not counted)
* ``djust_resumable_durable_bytes_total``      bytes stored as parts and recorded in the ledger
* ``djust_resumable_resent_bytes_total``       bytes clients had to send again on resume: at
  each attach, ``received - durable`` of the ledger record when positive. ``received`` is
  refreshed at every lease renewal, so this is a lower bound (bytes received after the last
  renewal and lost with a killed worker are not seen)
* ``djust_resumable_part_store_seconds``       histogram: UploadPart until the ledger recorded
  the part
* ``djust_resumable_sweep_actions_total{action}`` sweeper work done (``expired``,
  ``orphan_upload_aborted``, ``tail_deleted``, ``index_dropped``)
* ``djust_resumable_ledger_records``           gauge: refs in the ledger index
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Callable, Iterator
from typing import Any, ParamSpec

from .ledger import Ledger, UploadRecord

log = logging.getLogger("djust_resumable.metrics")
P = ParamSpec("P")

#: Seconds between two flushes of a process's sums to Redis.
FLUSH_INTERVAL = 1.0
#: Upper bounds (seconds) of the part latency histogram buckets (+Inf is added).
BUCKETS: tuple[float, ...] = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)

_COUNTERS: dict[str, str] = {
    "uploads_started": "Uploads registered.",
    "uploads_resumed": "Attaches that continued an upload already begun.",
    "uploads_completed": "Uploads completed.",
    "uploads_failed": "Uploads marked failed (checksum mismatch).",
    "uploads_aborted": "Uploads aborted (cancelled by the client or an operator).",
    "uploads_expired": "Stale uploads expired by the sweeper.",
    "received_bytes": "Bytes accepted from clients (new bytes only).",
    "durable_bytes": "Bytes stored as parts and recorded in the ledger.",
    "resent_bytes": "Bytes clients had to send again on resume (received - durable at attach).",
}
SWEEP_ACTIONS = ("expired", "orphan_upload_aborted", "tail_deleted", "index_dropped")


class _Recorder:
    """Per-ledger (so per Redis and key prefix) sums waiting for the next flush."""

    def __init__(self, ledger: Ledger) -> None:
        self.r = ledger.r
        self.key = ledger.metrics_key
        self.pending: dict[str, float] = {}
        self.task: asyncio.Task[None] | None = None

    def add(self, name: str, n: float = 1) -> None:
        if not n:
            return
        self.pending[name] = self.pending.get(name, 0) + n
        if self.task is None or self.task.done():
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # no loop (sync caller): the next flush sends it
                return
            self.task = loop.create_task(self._flush_later())

    async def _flush_later(self) -> None:
        while self.pending:
            await asyncio.sleep(FLUSH_INTERVAL)
            await self.flush()

    async def flush(self) -> None:
        pending, self.pending = self.pending, {}
        if not pending:
            return
        try:
            async with self.r.pipeline(transaction=False) as p:
                for name, v in pending.items():
                    if name.endswith("_sum"):
                        p.hincrbyfloat(self.key, name, float(v))
                    else:
                        p.hincrby(self.key, name, int(v))
                await p.execute()
        except Exception as exc:  # best effort: a lost flush never matters to an upload
            log.debug("metrics flush to %s dropped: %s", self.key, exc)


_recorders: weakref.WeakKeyDictionary[Ledger, _Recorder] = weakref.WeakKeyDictionary()


def _rec(ledger: Ledger) -> _Recorder:
    r = _recorders.get(ledger)
    if r is None:
        r = _recorders[ledger] = _Recorder(ledger)
    return r


def _safe(fn: Callable[P, None]) -> Callable[P, None]:
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> None:
        try:
            fn(*args, **kwargs)
        except Exception as exc:  # recording must never break an upload
            log.debug("metrics %s failed: %s", fn.__name__, exc)

    wrapper.__name__ = fn.__name__
    wrapper.__doc__ = fn.__doc__
    return wrapper


# -- recording API (one call per site in service.py) -----------------------------------------
@_safe
def record_started(ledger: Ledger) -> None:
    _rec(ledger).add("uploads_started")


@_safe
def record_attach(ledger: Ledger, rec: UploadRecord) -> None:
    """After a successful attach; ``rec`` is the record read after the lease was taken
    (``attaches`` already counts this attach)."""
    r = _rec(ledger)
    if rec.attaches > 1 or rec.durable > 0:
        r.add("uploads_resumed")
    if rec.received > rec.durable:
        r.add("resent_bytes", rec.received - rec.durable)


@_safe
def record_received(ledger: Ledger, n: int) -> None:
    _rec(ledger).add("received_bytes", n)


@_safe
def record_part(ledger: Ledger, size: int, seconds: float) -> None:
    r = _rec(ledger)
    r.add("durable_bytes", size)
    le = next((b for b in BUCKETS if seconds <= b), None)
    r.add(f"part_seconds_bucket:{'+Inf' if le is None else repr(le)}")
    r.add("part_seconds_count")
    r.add("part_seconds_sum", max(seconds, 1e-9))


@_safe
def record_completed(ledger: Ledger) -> None:
    _rec(ledger).add("uploads_completed")


@_safe
def record_failed(ledger: Ledger) -> None:
    _rec(ledger).add("uploads_failed")


@_safe
def record_aborted(ledger: Ledger) -> None:
    _rec(ledger).add("uploads_aborted")


@_safe
def record_sweep(ledger: Ledger, action: str, n: int = 1) -> None:
    _rec(ledger).add(f"sweep:{action}", n)
    if action == "expired":
        _rec(ledger).add("uploads_expired", n)


async def flush(ledger: Ledger) -> None:
    """Send this process's pending sums for ``ledger`` now (tests, the sweeper at exit)."""
    r = _recorders.get(ledger)
    if r is not None:
        await r.flush()


# -- reading: a prometheus_client collector over the Redis hash ------------------------------
class LedgerMetricsCollector:
    """Renders ``<KEY_PREFIX>:metrics`` (written by every worker) as Prometheus metrics.
    ``client`` is a synchronous redis-py client, plain or cluster (the view runs in a
    thread); the two keys it reads lie in different cluster slots, so its pipeline is not a
    transaction."""

    def __init__(self, client: Any, prefix: str) -> None:
        self.client = client
        self.key = f"{prefix}:metrics"
        self.index_key = f"{prefix}:index"

    def describe(self) -> list[Any]:
        return []  # no collect() at registration time (it would need Redis)

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        with self.client.pipeline(transaction=False) as p:
            p.hgetall(self.key)
            p.zcard(self.index_key)
            raw, records = p.execute()
        vals = {k.decode(): v.decode() for k, v in raw.items()}
        for name, doc in _COUNTERS.items():
            yield CounterMetricFamily(f"djust_resumable_{name}", doc,
                                      value=int(vals.get(name, 0)))
        buckets: list[tuple[str, float]] = []
        running = 0
        for b in BUCKETS:
            running += int(vals.get(f"part_seconds_bucket:{b!r}", 0))
            buckets.append((repr(b), running))
        running += int(vals.get("part_seconds_bucket:+Inf", 0))
        buckets.append(("+Inf", running))
        yield HistogramMetricFamily(
            "djust_resumable_part_store_seconds",
            "Seconds from UploadPart start until the ledger recorded the part.",
            buckets=buckets, sum_value=float(vals.get("part_seconds_sum", 0)))
        sweep = CounterMetricFamily("djust_resumable_sweep_actions",
                                    "Work done by resumable_sweep.", labels=["action"])
        for action in SWEEP_ACTIONS:
            sweep.add_metric([action], int(vals.get(f"sweep:{action}", 0)))
        yield sweep
        yield GaugeMetricFamily("djust_resumable_ledger_records",
                                "Uploads in the ledger index (any state).", value=int(records))


_clients: dict[tuple[str, bool, str], Any] = {}


def _registry() -> Any:
    from prometheus_client import CollectorRegistry

    from .conf import get_settings
    from .redis_client import sync_client

    s = get_settings()
    cache_key = (s.REDIS_URL, s.REDIS_CLUSTER, s.KEY_PREFIX)
    reg = _clients.get(cache_key)
    if reg is None:
        client = sync_client(s)
        reg = CollectorRegistry(auto_describe=False)
        reg.register(LedgerMetricsCollector(client, s.KEY_PREFIX))
        _clients[cache_key] = reg
    return reg


def metrics_view(request: Any) -> Any:
    """Django view: the metrics in Prometheus text format. Mount it in ``urls.py``, e.g.
    ``path("metrics/", metrics_view)``, and restrict who can reach it (network policy or a
    wrapping view): it exposes counts, not upload contents."""
    from django.http import HttpResponse
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
    from redis.exceptions import RedisClusterException, RedisError

    try:
        body = generate_latest(_registry())
    except (RedisError, RedisClusterException) as exc:  # the latter: no cluster node answers
        log.warning("metrics unavailable: %s", exc)
        return HttpResponse("# ledger unavailable\n", status=503,
                            content_type="text/plain; charset=utf-8")
    return HttpResponse(body, content_type=CONTENT_TYPE_LATEST)
