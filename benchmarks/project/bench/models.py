"""A model, for the encoding benchmark of a model instance (never saved)."""

from django.db import models


class Item(models.Model):
    name = models.CharField(max_length=100)
    count = models.IntegerField()
    price = models.DecimalField(max_digits=10, decimal_places=2)
    created = models.DateTimeField()
    active = models.BooleanField(default=True)

    class Meta:
        app_label = "bench"

    def __str__(self) -> str:
        return self.name
