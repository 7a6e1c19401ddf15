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
    assert ids(NOPE=1) == ["djust_resumable.W001"]


def test_bucket_required_for_s3():
    with override_settings(DJUST_RESUMABLE={}, AWS_STORAGE_BUCKET_NAME=None):
        assert [m.id for m in check_settings()] == ["djust_resumable.E004"]
    with override_settings(DJUST_RESUMABLE={"SINK": "local"}, AWS_STORAGE_BUCKET_NAME=None):
        assert check_settings() == []
