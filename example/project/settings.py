"""Settings of the example project (what `make run` serves and the integration tests start).

Everything comes from environment variables with local defaults, so the same module runs
against the embedded Redis/moto of `make run`, the test fixtures, or a real Redis and S3.
"""

import json
import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
env = os.environ.get

SECRET_KEY = env("DJANGO_SECRET_KEY", "dev-only-secret-key-change-me-0123456789abcdef")
DEBUG = env("DJANGO_DEBUG", "1") == "1"
ALLOWED_HOSTS = ["*"]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "djust",
    "storages",
    "djust_resumable",
    "avatar",  # the seed tutorial's avatar uploader (example/avatar/)
    "bigfiles",  # several big files per slot (example/bigfiles/)
]
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
ROOT_URLCONF = "project.urls"
TEMPLATES = [{
    "BACKEND": "django.template.backends.django.DjangoTemplates",
    "DIRS": [BASE_DIR / "templates"],
    "APP_DIRS": True,
    "OPTIONS": {"context_processors": [
        "django.template.context_processors.request",
        "django.contrib.auth.context_processors.auth",
        "django.contrib.messages.context_processors.messages",
    ]},
}]
ASGI_APPLICATION = "project.asgi.application"
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3",
                         "NAME": env("DJR_DB_PATH", str(BASE_DIR / "db.sqlite3"))}}
USE_TZ = True
# Log lines, the admin and `grep attached` in worker logs then all speak UTC.
TIME_ZONE = "UTC"

# djust's advisory checks that do not apply to this example (they printed ~20 lines before
# every manage.py command): A030 wants a brute-force protection app for the admin (add one,
# e.g. django-axes, in production); C401 wants watchdog for hot view replacement (a dev
# nicety); T018/T002 say templates using {% extends %} are not analysed (the LiveView root
# is in the child template).
SILENCED_SYSTEM_CHECKS = ["djust.A030", "djust.C401", "djust.T018", "djust.T002"]
STATIC_URL = "static/"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = env("DJR_REDIS_URL", "redis://127.0.0.1:6379/0")
# The channel layer's Redis. channels-redis does not speak Redis Cluster: with a clustered
# ledger (DJR_SETTINGS_JSON='{"REDIS_CLUSTER": true}') set DJR_CHANNEL_REDIS_URL to a plain
# Redis (docs/deploy.md). Without it the layer shares the ledger's Redis.
CHANNEL_REDIS_URL = env("DJR_CHANNEL_REDIS_URL") or REDIS_URL
# redis-py >= 8 defaults socket_timeout to 5 s, the same as channels-redis' 5 s BZPOPMIN:
# without a longer timeout the layer's receive fails every few seconds.
CHANNEL_LAYERS = {"default": {"BACKEND": "channels_redis.core.RedisChannelLayer",
                              "CONFIG": {"hosts": [{"address": CHANNEL_REDIS_URL,
                                                    "socket_timeout": 30}]}}}

# django-storages settings, read by djust_resumable's S3 sink too.
STORAGES = {
    "default": {"BACKEND": "storages.backends.s3.S3Storage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
AWS_STORAGE_BUCKET_NAME = env("AWS_STORAGE_BUCKET_NAME", "djust-resumable")
AWS_S3_ENDPOINT_URL = env("AWS_S3_ENDPOINT_URL", "http://127.0.0.1:9000")
AWS_S3_REGION_NAME = env("AWS_S3_REGION_NAME", "us-east-1")
AWS_ACCESS_KEY_ID = env("AWS_ACCESS_KEY_ID", "testing")
AWS_SECRET_ACCESS_KEY = env("AWS_SECRET_ACCESS_KEY", "testing")
AWS_S3_ADDRESSING_STYLE = env("AWS_S3_ADDRESSING_STYLE", "path")

DJUST_RESUMABLE = {"REDIS_URL": REDIS_URL}
DJUST_RESUMABLE.update(json.loads(env("DJR_SETTINGS_JSON", "{}")))

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {
        "format": "%(asctime)s %(process)d %(name)s %(levelname)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "loggers": {"djust_resumable": {"handlers": ["console"],
                                    "level": env("DJR_LOG_LEVEL", "INFO")}},
}
