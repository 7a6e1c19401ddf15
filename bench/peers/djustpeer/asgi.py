import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "djustpeer.settings")
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402
from channels.sessions import SessionMiddlewareStack  # noqa: E402
from django.urls import path  # noqa: E402
from djust.websocket import LiveViewConsumer  # noqa: E402

# djust's usual stack, as in example/project/asgi.py (sessions for mount() and for the
# session key djust ties a resumable upload to).
application = ProtocolTypeRouter({
    "http": django_asgi_app,
    "websocket": AllowedHostsOriginValidator(SessionMiddlewareStack(URLRouter(
        [path("ws/live/", LiveViewConsumer.as_asgi())]))),
})
