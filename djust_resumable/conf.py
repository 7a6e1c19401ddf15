"""All djust_resumable settings, in one place.

A project sets ``DJUST_RESUMABLE = {...}`` in its Django settings; every key is optional and
falls back to ``DEFAULTS``. S3 access is not configured here: the S3 sink reads django-storages'
``AWS_*`` settings (bucket, endpoint URL, region, credentials, addressing style), so AWS S3,
MinIO, R2 and moto work by settings alone. ``checks.py`` validates the values.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB
TiB = 1024 * GiB

DEFAULTS: dict[str, Any] = {
    # Redis holding the ledger (redis-py URL).
    "REDIS_URL": "redis://127.0.0.1:6379/0",
    # True: REDIS_URL names one node of a Redis Cluster (database 0) and the ledger, metrics
    # and sweeper use redis-py's cluster client. The channel layer (channels-redis) cannot use
    # a cluster: point CHANNEL_LAYERS at a plain Redis or Sentinel (docs/deploy.md).
    "REDIS_CLUSTER": False,
    # Redis Sentinel: ["host:port", ...] of the sentinels and the name of the monitored master.
    # When set, the ledger asks them for the current master (and follows a failover);
    # REDIS_URL then only gives the database, user and password (its host is not used).
    "REDIS_SENTINELS": [],
    "REDIS_SENTINEL_MASTER": "",
    # Prefix of every Redis key the ledger writes.
    "KEY_PREFIX": "djr",
    # "s3", "local", or a dotted path to a Sink class.
    "SINK": "s3",
    # Prefix of every object key in the bucket (or directory under LOCAL_ROOT).
    "STORAGE_PREFIX": "resumable/",
    # Root directory of the local filesystem sink (development).
    "LOCAL_ROOT": "",
    # Part sizing (bytes). S3 limits: parts >= 5 MiB except the last, <= 5 GiB, <= 10,000 parts,
    # objects <= 5 TiB. Lower them for stores with smaller limits.
    "PREFERRED_PART_SIZE": 8 * MiB,
    "MIN_PART_SIZE": 5 * MiB,
    "MAX_PART_SIZE": 5 * GiB,
    "MAX_PARTS": 10_000,
    "MAX_OBJECT_SIZE": 5 * TiB,
    # Per-part checksum sent to S3 and recorded in the ledger: "CRC32C", "SHA256" or None.
    "CHECKSUM": "CRC32C",
    # Complete S3 uploads with a full-object CRC32C (ChecksumType=FULL_OBJECT) when CHECKSUM is
    # CRC32C. Turn off for stores that reject it.
    "FULL_OBJECT_CHECKSUM": True,
    # Parts open at once per upload: one receiving and the rest being stored. The client's
    # window of bytes not yet durable is PARTS_IN_FLIGHT x part size, which is what a SIGKILL
    # can make the client re-send: 1 keeps durability rule 2 (at most one part) at any kill
    # offset. With more, the next worker still adopts the parts the store received in full
    # (ListParts), but a part still on its way to the store at the kill is lost with every
    # byte the client sent after it (docs/durability.md, docs/benchmarks.md).
    "PARTS_IN_FLIGHT": 1,
    # Largest payload of one binary frame (bytes).
    "MAX_FRAME_BYTES": 1 * MiB,
    # Per-connection rate limit (bytes/second); 0 disables it.
    "RATE_LIMIT_BYTES_PER_SECOND": 1 * GiB,
    # Uploads one user (or anonymous session) may have attached to a writer at once.
    "MAX_UPLOADS_PER_USER": 8,
    # Ledger records expire this long (seconds) after their last activity.
    "LEDGER_TTL": 24 * 3600,
    # Writer lease (seconds); renewed every third of it while the socket lives.
    "LEASE_TTL": 15,
    # How long (seconds) a new connection waits for the lease holder to hand over.
    "HANDOVER_TIMEOUT": 5,
    # Upload tokens are valid this long (seconds) after minting.
    "TOKEN_MAX_AGE": 24 * 3600,
    # Threads running blocking storage calls (boto3), shared by every upload of a process.
    "STORAGE_THREADS": 8,
    # Read timeout (seconds) of CompleteMultipartUpload alone. S3 may take minutes to
    # assemble a big object (moto: O(size), ~15 s per GiB here); with botocore's default 60 s
    # the call timed out and was re-sent while the first was still running. The other calls
    # keep the client's own timeout (AWS_S3_CLIENT_CONFIG), so a dead connection is noticed.
    "COMPLETE_TIMEOUT": 900,
    # Bytes of each file's head kept in the ledger for magic-byte checks.
    "HEAD_BYTES": 4 * KiB,
    # URL path of the upload WebSocket.
    "ENDPOINT_PATH": "/ws/djust-resumable/",
    # Largest object ``UploadEntry.data`` loads into memory (bytes); above it ``data`` raises
    # DataTooLarge (use ``entry.file``, which streams, or ``entry.save()``).
    "MAX_DATA_BYTES": 10 * MiB,
}


@dataclass(frozen=True)
class ResumableSettings:
    REDIS_URL: str
    REDIS_CLUSTER: bool
    REDIS_SENTINELS: tuple[str, ...]
    REDIS_SENTINEL_MASTER: str
    KEY_PREFIX: str
    SINK: str
    STORAGE_PREFIX: str
    LOCAL_ROOT: str
    PREFERRED_PART_SIZE: int
    MIN_PART_SIZE: int
    MAX_PART_SIZE: int
    MAX_PARTS: int
    MAX_OBJECT_SIZE: int
    CHECKSUM: str | None
    FULL_OBJECT_CHECKSUM: bool
    PARTS_IN_FLIGHT: int
    MAX_FRAME_BYTES: int
    RATE_LIMIT_BYTES_PER_SECOND: int
    MAX_UPLOADS_PER_USER: int
    LEDGER_TTL: int
    LEASE_TTL: float
    HANDOVER_TIMEOUT: float
    TOKEN_MAX_AGE: int
    STORAGE_THREADS: int
    COMPLETE_TIMEOUT: float
    HEAD_BYTES: int
    ENDPOINT_PATH: str
    MAX_DATA_BYTES: int


def get_settings(overrides: dict[str, Any] | None = None) -> ResumableSettings:
    """Return the effective settings: DEFAULTS, then ``settings.DJUST_RESUMABLE``, then
    ``overrides``. Unknown keys are ignored here and reported by the system checks."""
    from django.conf import settings as dj

    merged = dict(DEFAULTS)
    merged.update(getattr(dj, "DJUST_RESUMABLE", {}) or {})
    if overrides:
        merged.update(overrides)
    names = {f.name for f in fields(ResumableSettings)}
    # A tuple keeps the frozen settings hashable (the bridge caches services by settings).
    sentinels = merged.get("REDIS_SENTINELS")
    if isinstance(sentinels, (list, tuple)):
        merged["REDIS_SENTINELS"] = tuple(tuple(x) if isinstance(x, list) else x
                                          for x in sentinels)
    return ResumableSettings(**{k: v for k, v in merged.items() if k in names})
