from django.apps import AppConfig


class AccountsConfig(AppConfig):
    """Password reset requests: a command endpoint with an input DTO."""

    name = "testproject.accounts"
    label = "accounts"
    default_auto_field = "django.db.models.BigAutoField"
