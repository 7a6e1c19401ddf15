"""Minimal Django settings for the test suite (conftest.py sets DJANGO_SETTINGS_MODULE)."""

import os
import tempfile

_TMP = tempfile.mkdtemp(prefix="djr-test-")

SECRET_KEY = "djust-resumable-tests-only"
DEBUG = False
USE_TZ = True
ALLOWED_HOSTS = ["*"]
INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django.contrib.sessions",
    "channels",
    "storages",
    "djust_resumable",
]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.path.join(_TMP, "db.sqlite3"),
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
MEDIA_ROOT = os.path.join(_TMP, "media")
CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
DJUST_RESUMABLE: dict = {}
