"""Serializer fields of the demo that take exactly what its OpenAPI schema says.

DRF's fields are lenient where JSON Schema is exact: a ``CharField`` turns the number ``0`` into
the text ``"0"`` and trims whitespace before it counts ``max_length``, a ``DecimalField`` reads
``" 1e2 "``, a ``DateField`` reads ``"20240131"``. The schema then says "invalid" where the API
answers 202, or "valid" where it answers 400, and schemathesis (tests/integration/
test_schemathesis.py) tells. These fields refuse what their schema refuses and take what it takes.
"""

from __future__ import annotations

import re
from typing import Any

from django.core.validators import RegexValidator
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

#: The schema's pattern for text: anything but NUL, which DRF's CharField always refuses. Not
#: empty either: "" is refused (minLength 1) or, for a field that allows blank, documented apart
#: by drf-spectacular (``oneOf`` this or ``maxLength: 0``), which must not match "" twice.
NO_NUL = RegexValidator(r"^[^\x00]+$", "Null characters are not allowed.")
#: A price as the schema writes it: up to 6 digits, optionally 1 or 2 decimals (max_digits 8, 2 places).
PRICE_PATTERN = r"^-?[0-9]{1,6}(\.[0-9]{1,2})?$"
#: An RFC 3339 full-date, OpenAPI's ``format: date``.
DATE_PATTERN = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"


class Text(serializers.CharField):
    """Text only (a JSON string), kept as sent: its length is what the client counted."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("trim_whitespace", False)
        super().__init__(**kwargs)
        self.validators.append(NO_NUL)  # the schema's pattern (CharField refuses NUL on its own too)

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


@extend_schema_field({"type": "string", "format": "decimal", "pattern": PRICE_PATTERN})
class Price(serializers.DecimalField):
    """A price written as a string of digits, ``"12.50"``: never a JSON number, which a float would round."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("max_digits", 8)
        kwargs.setdefault("decimal_places", 2)
        super().__init__(**kwargs)

    def validate_empty_values(self, data: Any) -> tuple[bool, Any]:
        # DRF's DecimalField reads a blank string as null; the schema says null is null.
        return serializers.Field.validate_empty_values(self, data)

    def to_internal_value(self, data: Any) -> Any:
        if not isinstance(data, str) or not re.fullmatch(PRICE_PATTERN, data):
            self.fail("invalid")
        return super().to_internal_value(data)


@extend_schema_field({"type": "string", "format": "date"})
class Day(serializers.DateField):
    """A date written as OpenAPI's ``format: date`` says, ``"2024-01-31"``, and nothing else."""

    def to_internal_value(self, value: Any) -> Any:
        if not isinstance(value, str) or not re.fullmatch(DATE_PATTERN, value):
            self.fail("invalid", format="YYYY-MM-DD")
        return super().to_internal_value(value)
