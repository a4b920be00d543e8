from django.apps import AppConfig


class LibraryConfig(AppConfig):
    """Books: a model resource whose writes go through the message bus (CQRS)."""

    name = "testproject.library"
    label = "library"
    default_auto_field = "django.db.models.BigAutoField"
