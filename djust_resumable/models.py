"""Database models of djust_resumable: only what the admin needs.

* ``UploadSession`` — unmanaged, no table: the admin's entry for the live sessions read from
  Redis (its permissions, ``view_uploadsession`` / ``change_uploadsession``, gate the pages
  and the actions).
* ``UploadHistory`` — one row per upload, written at milestones (registered, complete,
  aborted) and refreshed whenever the admin reads the ledger, so finished sessions stay
  visible after Redis forgets them. In-flight figures always come from Redis.
"""

from __future__ import annotations

from django.db import models


class UploadSession(models.Model):
    """A ledger record (Redis). Never stored in the database (``managed = False``)."""

    ref = models.CharField(max_length=64, primary_key=True)

    class Meta:
        managed = False
        verbose_name = "upload session"
        verbose_name_plural = "upload sessions (live, from Redis)"
        default_permissions = ("view", "change")

    def __str__(self) -> str:
        return self.ref


class UploadHistory(models.Model):
    ref = models.CharField(max_length=64, unique=True)
    state = models.CharField(max_length=16, db_index=True)
    user = models.CharField(max_length=150, blank=True, db_index=True)
    owner = models.CharField(max_length=255, blank=True)
    slot = models.CharField(max_length=100, blank=True)
    view = models.CharField(max_length=255, blank=True)
    file_name = models.CharField(max_length=255, blank=True)
    content_type = models.CharField(max_length=255, blank=True)
    size = models.BigIntegerField(default=0)
    durable = models.BigIntegerField(default=0)
    key = models.CharField(max_length=1024, blank=True)
    upload_id = models.CharField(max_length=1024, blank=True)
    etag = models.CharField(max_length=255, blank=True)
    error = models.CharField(max_length=255, blank=True)
    attaches = models.IntegerField(default=0)
    spills = models.IntegerField(default=0)
    created = models.DateTimeField(null=True, blank=True, db_index=True)
    updated = models.DateTimeField(null=True, blank=True)
    completed = models.DateTimeField(null=True, blank=True)
    recorded = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ("-created",)
        verbose_name = "upload history"
        verbose_name_plural = "upload history"

    def __str__(self) -> str:
        return f"{self.file_name or self.ref} ({self.state})"
