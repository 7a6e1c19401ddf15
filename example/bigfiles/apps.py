from django.apps import AppConfig


class BigfilesConfig(AppConfig):
    name = "bigfiles"
    default_auto_field = "django.db.models.BigAutoField"
