"""Big files (up to 50 GiB each), several at once, with ``resumable=True``.

Per-file progress, speed, ETA and a pause/resume button come from djust_resumable's client
(the progress container carries ``dj-upload-controls``); a reload mid-upload and picking the
same file again resumes where the server is (IndexedDB, fingerprint checked by the server).

The input carries ``dj-upload-complete="upload_done"``: djust_resumable's browser client
calls that handler (through djust's ``window.djust.handleEvent``) each time a file is complete
in storage, and the handler consumes it (exactly once, whichever worker stored it) and lists
it with its size and CRC32C.
"""

from __future__ import annotations

from djust import LiveView
from djust.decorators import event_handler, state

from djust_resumable import UploadMixin

GiB = 1024 ** 3
MAX_FILES = 5


def human_size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n} B" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)  # pragma: no cover


class FilesView(LiveView, UploadMixin):
    template_name = "bigfiles/files.html"
    login_required = False

    stored = state([])
    error = state("")
    max_files = state(MAX_FILES)

    def mount(self, request, **kwargs):
        self.allow_upload("files", max_entries=MAX_FILES, max_file_size=50 * GiB,
                          resumable=True)

    @event_handler()
    def upload_done(self, **kwargs):
        rows = list(self.stored)
        for entry in self.consume_uploaded_entries("files"):
            rows.append({"name": entry.client_name, "size": human_size(entry.size),
                         "bytes": entry.size, "checksum": entry.checksum,
                         "key": entry.storage_name})
        self.stored = rows

    @event_handler()
    def upload_failed(self, code: str = "", message: str = "", client_name: str = "",
                      **kwargs):
        self.error = f"{client_name}: {message} ({code})"
