"""Handlers of the accounts app, found by django_messenger at start-up."""

import secrets

from django.contrib.auth import get_user_model

from django_messenger import Envelope, handler

from .messages import ResetPasswordRequest
from .models import PasswordResetToken


@handler
def reset_password(message: ResetPasswordRequest, envelope: Envelope) -> None:
    """Issue a reset token to the user named in the request.

    An unknown or inactive username is ignored silently: the answer must not tell
    whether an account exists. Redelivery of the same message issues no second token.
    """
    user = get_user_model().objects.filter(username=message.username, is_active=True).first()
    if user is None:
        return
    PasswordResetToken.objects.get_or_create(
        message_id=envelope.message_id,
        defaults={"user": user, "token": secrets.token_urlsafe(32)},
    )
