from avatar.views import AvatarOnSaveView, AvatarView
from bigfiles.views import FilesView
from django.contrib import admin
from django.contrib.staticfiles.urls import staticfiles_urlpatterns
from django.urls import path
from django.views.generic import TemplateView

from djust_resumable.metrics import metrics_view

urlpatterns = [
    path("", TemplateView.as_view(template_name="index.html"), name="index"),
    path("admin/", admin.site.urls),
    # The seed tutorial's avatar uploader, with resumable=True (example/avatar/).
    path("avatar/", AvatarView.as_view(), name="avatar"),
    path("avatar/on-save/", AvatarOnSaveView.as_view(), name="avatar-on-save"),
    path("files/", FilesView.as_view(), name="files"),
    # Prometheus scrape target (restrict it to your monitoring network in production).
    path("metrics/", metrics_view, name="djust_resumable_metrics"),
]

# Serve the admin's CSS/JS from `make run` and the test workers (uvicorn serves no static
# files; this is a no-op unless DEBUG).
urlpatterns += staticfiles_urlpatterns()
