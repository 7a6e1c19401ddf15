"""Django system checks for ``DJUST_RESUMABLE`` (run by ``manage.py check`` and at startup).
Every message says what to change."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import Error, Tags, Warning, register

from .conf import DEFAULTS, GiB, MiB, get_settings


@register(Tags.compatibility)
def check_settings(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    out: list[Any] = []
    raw = getattr(settings, "DJUST_RESUMABLE", {}) or {}
    if not isinstance(raw, dict):
        return [Error("DJUST_RESUMABLE must be a dict.", hint="Set DJUST_RESUMABLE = {...}.",
                      id="djust_resumable.E001")]
    for key in sorted(set(raw) - set(DEFAULTS)):
        out.append(Warning(f"DJUST_RESUMABLE has an unknown key {key!r}.",
                           hint=f"Known keys: {', '.join(sorted(DEFAULTS))}.",
                           id="djust_resumable.W001"))
    s = get_settings()
    if not s.MIN_PART_SIZE <= s.PREFERRED_PART_SIZE <= s.MAX_PART_SIZE:
        out.append(Error("PREFERRED_PART_SIZE must lie between MIN_PART_SIZE and MAX_PART_SIZE.",
                         hint="S3 allows parts of 5 MiB to 5 GiB; the default is 8 MiB.",
                         id="djust_resumable.E002"))
    if s.SINK == "s3" and s.MIN_PART_SIZE < 5 * MiB:
        out.append(Error("MIN_PART_SIZE below 5 MiB: S3 rejects such non-last parts "
                         "(EntityTooSmall).", hint="Set MIN_PART_SIZE to at least 5 MiB.",
                         id="djust_resumable.E003"))
    if s.SINK == "s3" and not getattr(settings, "AWS_STORAGE_BUCKET_NAME", None):
        out.append(Error("The S3 sink needs AWS_STORAGE_BUCKET_NAME (django-storages setting).",
                         hint="Set AWS_STORAGE_BUCKET_NAME, or DJUST_RESUMABLE['SINK'] = 'local' "
                              "for development.", id="djust_resumable.E004"))
    if s.CHECKSUM not in (None, "CRC32C", "SHA256"):
        out.append(Error("CHECKSUM must be 'CRC32C', 'SHA256' or None.",
                         id="djust_resumable.E005"))
    if s.PARTS_IN_FLIGHT < 1:
        out.append(Error("PARTS_IN_FLIGHT must be >= 1.", id="djust_resumable.E006"))
    if not 64 * 1024 <= s.MAX_FRAME_BYTES <= 64 * MiB:
        out.append(Error("MAX_FRAME_BYTES must be between 64 KiB and 64 MiB.",
                         hint="1 MiB (the default) keeps per-frame overhead negligible.",
                         id="djust_resumable.E007"))
    if s.HANDOVER_TIMEOUT >= s.LEASE_TTL * 2:
        out.append(Warning("HANDOVER_TIMEOUT is long compared with LEASE_TTL.",
                           hint="A dead holder's lease expires after LEASE_TTL anyway.",
                           id="djust_resumable.W002"))
    if s.LEASE_TTL < 1:
        out.append(Error("LEASE_TTL must be at least 1 second.", id="djust_resumable.E008"))
    if s.MAX_OBJECT_SIZE > 5 * 1024 * GiB and s.SINK == "s3":
        out.append(Warning("MAX_OBJECT_SIZE above S3's 5 TiB object limit.",
                           id="djust_resumable.W003"))
    if s.COMPLETE_TIMEOUT < 60:
        out.append(Error("COMPLETE_TIMEOUT must be at least 60 seconds.",
                         hint="S3 may take minutes to complete a big multipart upload; a "
                              "shorter read timeout re-sends CompleteMultipartUpload while the "
                              "first one still runs.", id="djust_resumable.E016"))
    if not s.STORAGE_PREFIX or s.STORAGE_PREFIX.startswith("/"):
        out.append(Error("STORAGE_PREFIX must be a relative key prefix such as 'resumable/'.",
                         id="djust_resumable.E009"))
    out += _check_redis(s)
    return out


def _layer_addresses() -> list[tuple[str, int]]:
    """``(host, port)`` of every plain-Redis host of the default channels-redis layer (hosts
    given as URL strings, ``{"address": url}`` dicts or ``(host, port)`` tuples)."""
    from .redis_client import url_address

    layer = (getattr(settings, "CHANNEL_LAYERS", {}) or {}).get("default") or {}
    if "channels_redis" not in str(layer.get("BACKEND", "")):
        return []
    out: list[tuple[str, int]] = []
    for host in (layer.get("CONFIG") or {}).get("hosts") or []:
        if isinstance(host, dict):
            host = host.get("address", "")
        if isinstance(host, str):
            addr = url_address(host)
            if addr:
                out.append(addr)
        elif isinstance(host, (tuple, list)) and len(host) == 2:
            out.append((str(host[0]), int(host[1])))
    return out


def _check_redis(s: Any) -> list[Any]:
    from .redis_client import url_address, url_db

    out: list[Any] = []
    if not isinstance(s.REDIS_CLUSTER, bool):
        out.append(Error("REDIS_CLUSTER must be True or False.", id="djust_resumable.E010"))
        return out
    if s.REDIS_SENTINELS:
        from .redis_client import sentinel_addresses

        try:
            sentinel_addresses(s)
        except (TypeError, ValueError):
            out.append(Error("REDIS_SENTINELS must list 'host:port' strings.",
                             id="djust_resumable.E013"))
        if not s.REDIS_SENTINEL_MASTER:
            out.append(Error("REDIS_SENTINELS is set but REDIS_SENTINEL_MASTER is empty.",
                             hint="Set it to the master name of `sentinel monitor <name> ...`.",
                             id="djust_resumable.E014"))
        if s.REDIS_CLUSTER:
            out.append(Error("REDIS_CLUSTER and REDIS_SENTINELS exclude each other.",
                             hint="A Redis Cluster fails over by itself; drop one of them.",
                             id="djust_resumable.E015"))
    if not s.REDIS_CLUSTER:
        return out
    try:
        db = url_db(s.REDIS_URL)
    except ValueError:
        db = -1
    if db != 0:
        out.append(Error("REDIS_CLUSTER is set but REDIS_URL selects a database other than 0.",
                         hint="A Redis Cluster has only database 0: use redis://host:port/0 "
                              "(any one node of the cluster).", id="djust_resumable.E012"))
    ledger = url_address(s.REDIS_URL)
    if ledger is not None and ledger in _layer_addresses():
        out.append(Error("The channel layer points at the ledger's Redis Cluster; "
                         "channels-redis does not speak Redis Cluster.",
                         hint="Give CHANNEL_LAYERS a plain Redis (or Sentinel) of its own; "
                              "see docs/deploy.md.", id="djust_resumable.E011"))
    return out
