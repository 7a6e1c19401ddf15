"""WebSocket routes. In the project's asgi.py::

    from djust_resumable.routing import websocket_urlpatterns as resumable_ws
    application = ProtocolTypeRouter({..., "websocket": URLRouter(resumable_ws + ...)})
"""

from django.urls import path

from .conf import DEFAULTS, get_settings
from .consumer import UploadConsumer


def _route() -> str:
    try:
        p = get_settings().ENDPOINT_PATH
    except Exception:  # settings not configured yet (import-time use)
        p = DEFAULTS["ENDPOINT_PATH"]
    return p.lstrip("/")


websocket_urlpatterns = [path(_route(), UploadConsumer.as_asgi())]
