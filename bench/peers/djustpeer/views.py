"""One LiveView with one djust upload slot, configured from the environment (settings.py)."""

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from djust import LiveView
from djust.uploads import UploadMixin
from djust.uploads.resumable import ResumableUploadWriter

from djustpeer.s3writer import S3MultipartWriter


def session_view(request: HttpRequest) -> HttpResponse:
    request.session["bench"] = 1
    return HttpResponse("ok")


class PeerUploadView(LiveView, UploadMixin):
    template_name = "djustpeer/peer.html"
    login_required = False

    def mount(self, request, **kwargs):  # type: ignore[no-untyped-def]
        writer = S3MultipartWriter
        if settings.PEER_RESUMABLE:
            writer = ResumableUploadWriter.with_inner(S3MultipartWriter)
        self.allow_upload(
            "file",
            max_file_size=1 << 40,
            chunk_size=settings.PEER_CHUNK,
            writer=writer,
            resumable=settings.PEER_RESUMABLE,
        )
