from django.apps import AppConfig


class AvatarConfig(AppConfig):
    name = "avatar"
    default_auto_field = "django.db.models.BigAutoField"
