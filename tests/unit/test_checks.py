from django.test import override_settings

from djust_resumable.checks import check_settings
from djust_resumable.conf import MiB


def ids(**conf):
    with override_settings(DJUST_RESUMABLE=conf, AWS_STORAGE_BUCKET_NAME="b"):
        return sorted(m.id for m in check_settings())


def test_defaults_pass():
    assert ids() == []


def test_actionable_errors():
    assert ids(PREFERRED_PART_SIZE=1 * MiB) == ["djust_resumable.E002"]
    assert ids(MIN_PART_SIZE=1 * MiB) == ["djust_resumable.E003"]
    assert ids(CHECKSUM="MD5") == ["djust_resumable.E005"]
    assert ids(PARTS_IN_FLIGHT=0) == ["djust_resumable.E006"]
    assert ids(MAX_FRAME_BYTES=10) == ["djust_resumable.E007"]
    assert ids(STORAGE_PREFIX="/abs/") == ["djust_resumable.E009"]
    assert ids(COMPLETE_TIMEOUT=30) == ["djust_resumable.E016"]
    assert ids(NOPE=1) == ["djust_resumable.W001"]


def test_bucket_required_for_s3():
    with override_settings(DJUST_RESUMABLE={}, AWS_STORAGE_BUCKET_NAME=None):
        assert [m.id for m in check_settings()] == ["djust_resumable.E004"]
    with override_settings(DJUST_RESUMABLE={"SINK": "local"}, AWS_STORAGE_BUCKET_NAME=None):
        assert check_settings() == []


def _layer(*hosts):
    return {"default": {"BACKEND": "channels_redis.core.RedisChannelLayer",
                        "CONFIG": {"hosts": list(hosts)}}}


def test_redis_cluster_setting():
    assert ids(REDIS_CLUSTER="yes") == ["djust_resumable.E010"]
    assert ids(REDIS_CLUSTER=True, REDIS_URL="redis://node-a:7000/0") == []
    assert ids(REDIS_CLUSTER=True, REDIS_URL="redis://node-a:7000") == []
    # A cluster has only database 0.
    assert ids(REDIS_CLUSTER=True, REDIS_URL="redis://node-a:7000/3") == ["djust_resumable.E012"]
    assert ids(REDIS_CLUSTER=True,
               REDIS_URL="redis://node-a:7000/?db=2") == ["djust_resumable.E012"]
    # Without REDIS_CLUSTER any database is fine.
    assert ids(REDIS_URL="redis://node-a:7000/3") == []


def test_channel_layer_must_not_use_the_ledger_cluster():
    conf = {"REDIS_CLUSTER": True, "REDIS_URL": "redis://node-a:7000/0"}
    for host in ("redis://node-a:7000/0", {"address": "redis://node-a:7000", "socket_timeout": 30},
                 ("node-a", 7000)):
        with override_settings(DJUST_RESUMABLE=conf, AWS_STORAGE_BUCKET_NAME="b",
                               CHANNEL_LAYERS=_layer(host)):
            assert [m.id for m in check_settings()] == ["djust_resumable.E011"], host
    with override_settings(DJUST_RESUMABLE=conf, AWS_STORAGE_BUCKET_NAME="b",
                           CHANNEL_LAYERS=_layer({"address": "redis://layer:6379/0"})):
        assert check_settings() == []
    # The same layer on a plain (non-cluster) ledger Redis is the ordinary set-up.
    with override_settings(DJUST_RESUMABLE={"REDIS_URL": "redis://node-a:7000/0"},
                           AWS_STORAGE_BUCKET_NAME="b",
                           CHANNEL_LAYERS=_layer("redis://node-a:7000/0")):
        assert check_settings() == []


def test_redis_sentinel_settings():
    ok = {"REDIS_SENTINELS": ["s1:26379", "s2"], "REDIS_SENTINEL_MASTER": "djr"}
    assert ids(**ok) == []
    assert ids(REDIS_SENTINELS=["s1:notaport"],
               REDIS_SENTINEL_MASTER="djr") == ["djust_resumable.E013"]
    assert ids(REDIS_SENTINELS=["s1:26379"]) == ["djust_resumable.E014"]
    assert ids(REDIS_CLUSTER=True, **ok) == ["djust_resumable.E015"]


def test_sentinel_addresses_and_url_auth():
    from djust_resumable.conf import get_settings
    from djust_resumable.redis_client import _url_auth, sentinel_addresses

    with override_settings(DJUST_RESUMABLE={
            "REDIS_URL": "redis://app:p%40ss@ignored:1/4",
            "REDIS_SENTINELS": ["s1:26380", ["s2", 26381], "s3"]}):
        s = get_settings()
    assert sentinel_addresses(s) == [("s1", 26380), ("s2", 26381), ("s3", 26379)]
    assert _url_auth(s) == {"db": 4, "username": "app", "password": "p@ss"}
    hash(s)  # settings stay hashable (the bridge caches services by them)
