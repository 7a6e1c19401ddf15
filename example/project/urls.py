from django.contrib import admin
from django.urls import path

from djust_resumable.metrics import metrics_view

urlpatterns = [
    path("admin/", admin.site.urls),
    # Prometheus scrape target (restrict it to your monitoring network in production).
    path("metrics/", metrics_view, name="djust_resumable_metrics"),
]
