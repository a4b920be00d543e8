from rest_framework import serializers


class ResetPasswordRequestSerializer(serializers.Serializer):
    """The input of ``POST /reset-password-requests/``."""

    username = serializers.CharField(max_length=150)
