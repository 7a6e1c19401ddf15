from django.urls import path

from djustpeer.views import PeerUploadView, session_view

urlpatterns = [
    path("peer/", PeerUploadView.as_view(), name="peer"),
    # Sets a session cookie (the resume test's WebSocket sends it back).
    path("session/", session_view, name="session"),
]
