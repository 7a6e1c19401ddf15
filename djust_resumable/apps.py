from django.apps import AppConfig


class DjustResumableConfig(AppConfig):
    name = "djust_resumable"
    verbose_name = "Resumable uploads"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import checks  # noqa: F401  (registers the system checks)
