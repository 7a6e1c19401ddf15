"""One-shot set-up before the app starts (docker-compose's `init` service, a Kubernetes Job):
create the bucket if it is missing, apply deploy/s3/lifecycle.json to it, run migrations.

Reads the same environment as the example settings (AWS_STORAGE_BUCKET_NAME,
AWS_S3_ENDPOINT_URL, AWS_S3_REGION_NAME, AWS credentials, DJANGO_SETTINGS_MODULE).
Idempotent: safe to run on every deploy. tests/deploy/test_s3_recipes.py runs it against a
real moto_server.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

LIFECYCLE = Path(os.environ.get("DJR_LIFECYCLE_JSON",
                                Path(__file__).resolve().parents[1] / "s3" / "lifecycle.json"))


def ensure_bucket() -> None:
    import boto3
    from botocore.exceptions import ClientError

    bucket = os.environ["AWS_STORAGE_BUCKET_NAME"]
    region = os.environ.get("AWS_S3_REGION_NAME", "us-east-1")
    s3 = boto3.client("s3", endpoint_url=os.environ.get("AWS_S3_ENDPOINT_URL") or None,
                      region_name=region)
    try:
        s3.head_bucket(Bucket=bucket)
    except ClientError:
        kw = {} if region == "us-east-1" else {
            "CreateBucketConfiguration": {"LocationConstraint": region}}
        s3.create_bucket(Bucket=bucket, **kw)
        print(f"created bucket {bucket}")
    s3.put_bucket_lifecycle_configuration(
        Bucket=bucket, LifecycleConfiguration=json.loads(LIFECYCLE.read_text()))
    print(f"applied {LIFECYCLE.name} to {bucket}")


def migrate() -> None:
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", interactive=False, verbosity=1)


if __name__ == "__main__":
    app_dir = os.environ.get("DJR_APP_DIR", "example")
    sys.path.insert(0, str(Path(app_dir).resolve()))
    ensure_bucket()
    if os.environ.get("DJR_SKIP_MIGRATE") != "1":
        migrate()
