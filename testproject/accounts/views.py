from django_messenger.viewsets import MessengerViewSet

from .messages import ResetPasswordRequest
from .serializers import ResetPasswordRequestSerializer


class ResetPasswordRequestViewSet(MessengerViewSet):
    """``POST`` a username: a reset token is issued if the account exists. Always 202."""

    serializer_class = ResetPasswordRequestSerializer
    message_class = ResetPasswordRequest
