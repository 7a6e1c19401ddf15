"""Settings of the bench-only djust peer (bench/peers.py starts it with uvicorn).

Env: DJANGO_SECRET_KEY, PEER_S3_ENDPOINT, PEER_S3_BUCKET, PEER_MARKS (JSON lines of
server-side timings), PEER_CHUNK (djust chunk payload bytes), PEER_RESUMABLE ("1": wrap the
writer in djust's ResumableUploadWriter), PEER_DJUST_CONFIG (JSON merged into djust's
LIVEVIEW_CONFIG; empty = djust's defaults, i.e. max_message_size 65536 and
rate_limit.upload_rate 200 frames/s).
"""

import json
import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent
env = os.environ.get

SECRET_KEY = env("DJANGO_SECRET_KEY", "bench-only-secret-key-0123456789abcdef0123456789")
DEBUG = False
ALLOWED_HOSTS = ["*"]
INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "channels",
    "djust",
    "djustpeer",
]
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
]
ROOT_URLCONF = "djustpeer.urls"
TEMPLATES = [{
    "BACKEND": "django.template.backends.django.DjangoTemplates",
    "DIRS": [],
    "APP_DIRS": True,
    "OPTIONS": {"context_processors": ["django.template.context_processors.request"]},
}]
ASGI_APPLICATION = "djustpeer.asgi.application"
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3",
                         "NAME": env("PEER_DB_PATH", "/tmp/djr-bench-djustpeer.sqlite3")}}
# Sessions in signed cookies: the resume test needs a session key (djust ties a resumable
# upload to it) without a database table.
SESSION_ENGINE = "django.contrib.sessions.backends.signed_cookies"
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

LIVEVIEW_CONFIG = json.loads(env("PEER_DJUST_CONFIG") or "{}")

PEER_S3_ENDPOINT = env("PEER_S3_ENDPOINT", "")
PEER_S3_BUCKET = env("PEER_S3_BUCKET", "")
PEER_MARKS = env("PEER_MARKS", "")
PEER_CHUNK = int(env("PEER_CHUNK", str(63 * 1024)))
PEER_RESUMABLE = env("PEER_RESUMABLE", "0") == "1"
PEER_PART_SIZE = int(env("PEER_PART_SIZE", str(8 * 1024 * 1024)))

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"djust": {"handlers": ["console"], "level": "WARNING"}},
}
