"""The messages of the accounts app."""

from dataclasses import dataclass


@dataclass
class ResetPasswordRequest:
    """Someone asked for a password reset for ``username``."""

    username: str
