import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler  # noqa: E402
from django.urls import path, re_path  # noqa: E402
from djust.websocket import LiveViewConsumer  # noqa: E402

from djust_resumable.routing import websocket_urlpatterns  # noqa: E402


async def reject_unknown_path(scope, receive, send):
    """Catch-all WebSocket route: refuse the handshake (uvicorn answers HTTP 403) instead of
    URLRouter's ``ValueError: No route found``, which logs a traceback and answers HTTP 500
    that clients (djust_resumable.client) retry as a server fault. A 4xx ends them at once."""
    await receive()  # websocket.connect
    await send({"type": "websocket.close"})


# djust's LiveView socket (the avatar page) beside the upload endpoint, in djust's usual
# stack: AllowedHostsOriginValidator (CSWSH; djust's system check A001 requires it) and
# AuthMiddlewareStack (sessions for mount()). The upload endpoint itself authenticates with
# its signed token; clients without an Origin header (scripts) pass the validator while
# ALLOWED_HOSTS contains "*", as in this example project.
websocket = AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(
    websocket_urlpatterns + [path("ws/live/", LiveViewConsumer.as_asgi()),
                             re_path(r"", reject_unknown_path)])))

application = ProtocolTypeRouter({
    # Static files (djust's client, djust_resumable's uploads.js) served by the ASGI app.
    "http": ASGIStaticFilesHandler(django_asgi_app),
    "websocket": websocket,
})
