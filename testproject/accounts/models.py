from django.conf import settings
from django.db import models


class PasswordResetToken(models.Model):
    """A token issued for a password reset request.

    ``message_id`` is the id of the envelope that asked for it: delivery is at least
    once, so the handler creates one token per message, however often it runs.
    """

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    token = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    message_id = models.UUIDField(unique=True)

    def __str__(self) -> str:
        return f"Password reset token for user {self.user_id} ({self.created_at:%Y-%m-%d %H:%M})"
