from django.conf import settings
from django.db import models


class Article(models.Model):
    title = models.CharField(max_length=200)
    body = models.TextField(blank=True)
    price = models.DecimalField(max_digits=8, decimal_places=2, null=True, blank=True)
    published = models.DateTimeField(null=True, blank=True)
    author = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)

    def __str__(self) -> str:
        return self.title


class Effect(models.Model):
    """What a handler did, for the tests to see (one row a handler call)."""

    handler = models.CharField(max_length=100)
    message_id = models.UUIDField()
    payload = models.JSONField(default=dict)

    def __str__(self) -> str:
        return f"{self.handler} {self.message_id}"
