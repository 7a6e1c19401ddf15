"""The avatar uploader of djust's tutorial ("file upload with live progress"), with
``resumable=True``: the bytes go to djust_resumable's upload endpoint, survive drops and
dead workers, and land in the configured S3 bucket.

Flow: pick or drop an image -> preview, ``<progress dj-upload-progress>`` to 100 -> "Save"
(``dj-submit="save_avatar"``; pressed while the upload is still running, the submit is held
until the bytes are stored, the form showing djust's ``dj-form-pending`` state) consumes the
entry, checks its magic bytes with python-magic
(in place of the deprecated ``imghdr``) and shows the card; "Replace" goes back to the drop
zone. Refusals (too large, wrong type, magic bytes) reach the view through
``dj-upload-error="upload_failed"`` (see djust_resumable/static/djust_resumable/uploads.js)
and are shown as typed messages.
"""

from __future__ import annotations

import uuid

from djust import LiveView
from djust.decorators import event_handler, state

from djust_resumable import UploadMixin

MAX_AVATAR_BYTES = 2 * 1024 * 1024
ACCEPT = ".png,.jpg,.jpeg,.webp"
IMAGE_TYPES = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}

MESSAGES = {
    "too_large": "That file is too large: avatars are limited to 2 MB.",
    "size_exceeded": "That file is too large: avatars are limited to 2 MB.",
    "not_accepted": "Only PNG, JPEG and WebP images can be used as an avatar.",
    "active_content": "Only PNG, JPEG and WebP images can be used as an avatar.",
    "invalid_content": "That file is not a valid image (its content does not match its name).",
    "checksum_mismatch": "The upload was corrupted on the way; please try again.",
}
GENERIC = "The upload failed; please try again."


def human_size(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    if n < 1024 * 1024:
        return f"{n / 1024:.1f} KB"
    return f"{n / (1024 * 1024):.1f} MB"


def sniff(head: bytes) -> str | None:
    """libmagic's MIME type of the first bytes, or None without python-magic."""
    try:
        import magic
    except ImportError:  # pragma: no cover - python-magic is a dependency
        return None
    return magic.from_buffer(head, mime=True)


class AvatarView(LiveView, UploadMixin):
    template_name = "avatar/avatar.html"
    login_required = False
    #: the template's ``dj-view`` (djust mounts this class over the socket)
    view_path = "avatar.views.AvatarView"

    avatar_url = state("")
    avatar_name = state("")
    avatar_size = state("")
    error = state("")

    def mount(self, request, **kwargs):
        self.allow_upload("avatar", accept=ACCEPT, max_entries=1,
                          max_file_size=MAX_AVATAR_BYTES, resumable=True)

    @event_handler()
    def save_avatar(self, **kwargs):
        self.error = ""
        saved = False
        for entry in self.consume_uploaded_entries("avatar"):
            with entry.file as f:
                head = f.read(2048)
            kind = sniff(head)
            if kind is not None and kind not in IMAGE_TYPES:
                entry.delete()
                self.error = MESSAGES["invalid_content"]
                continue
            ext = IMAGE_TYPES.get(kind or "", "img")
            name = entry.save(f"avatars/{uuid.uuid4().hex}.{ext}")
            entry.delete()
            try:
                from django.core.files.storage import default_storage

                self.avatar_url = default_storage.url(name)
            except Exception:  # a storage without URLs: the card still shows name and size
                self.avatar_url = ""
            self.avatar_name = entry.client_name
            self.avatar_size = human_size(entry.size)
            saved = True
        if not saved and not self.error:
            self.error = "Choose an image first (and wait for the upload to finish)."

    @event_handler()
    def upload_failed(self, code: str = "", message: str = "", **kwargs):
        self.error = MESSAGES.get(code, GENERIC)

    @event_handler()
    def reset_avatar(self, **kwargs):
        self.avatar_url = ""
        self.avatar_name = ""
        self.avatar_size = ""
        self.error = ""


class AvatarOnSaveView(AvatarView):
    """The same page with ``auto_upload=False`` (the tutorial's other flow): picking a file
    only shows its preview; "Save" starts the upload, the form shows its pending state while
    the bytes go, and ``save_avatar`` runs once every byte is stored."""

    view_path = "avatar.views.AvatarOnSaveView"

    def mount(self, request, **kwargs):
        self.allow_upload("avatar", accept=ACCEPT, max_entries=1,
                          max_file_size=MAX_AVATAR_BYTES, auto_upload=False, resumable=True)
