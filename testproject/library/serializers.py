from django.db import models
from rest_framework import serializers

from testproject.fields import Day, Price, Text

from .models import Book


class BookSerializer(serializers.ModelSerializer):
    # Fields that take exactly what the OpenAPI schema says (testproject/fields.py).
    serializer_field_mapping = {
        **serializers.ModelSerializer.serializer_field_mapping,
        models.CharField: Text,
        models.DecimalField: Price,
        models.DateField: Day,
    }

    class Meta:
        model = Book
        fields = ["id", "title", "author", "isbn", "price", "published", "added_by"]
        read_only_fields = ["added_by"]
