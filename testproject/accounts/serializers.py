from rest_framework import serializers

from testproject.fields import Text


class ResetPasswordRequestSerializer(serializers.Serializer):
    """The input of ``POST /reset-password-requests/``."""

    username = Text(max_length=150)
