"""``python manage.py messenger_handled prune [--older-than SECONDS] [--database ALIAS]``.

The records of idempotent handlers (``@handler(idempotent=True)``) are kept for
``MESSENGER["HANDLED_TTL"]`` (7 days by default); run ``prune`` regularly (cron, a
scheduled job) to delete older ones. A message redelivered after its record was pruned
runs its handler again.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connections

from ... import once
from ...conf import messenger_settings

#: The longest age a timedelta holds (about 2.7 million years), in whole seconds.
MAX_SECONDS = int(timedelta.max.total_seconds())


class Command(BaseCommand):
    help = "Prune the records of idempotent handlers older than MESSENGER['HANDLED_TTL']."

    def add_arguments(self, parser: CommandParser) -> None:
        actions = parser.add_subparsers(dest="action", required=True, metavar="{prune}")
        prune = actions.add_parser("prune", help="Delete the records older than HANDLED_TTL.")
        prune.add_argument(
            "--older-than",
            type=float,
            metavar="SECONDS",
            help="Delete the records older than this many seconds instead of HANDLED_TTL.",
        )
        prune.add_argument(
            "--database",
            action="append",
            dest="databases",
            metavar="ALIAS",
            help="Prune this database (repeatable); by default every database idempotent handlers use.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        getattr(self, f"handle_{options['action']}")(**options)

    def handle_prune(self, **options: Any) -> None:
        seconds = options.get("older_than")
        if seconds is None:
            seconds = messenger_settings.HANDLED_TTL
        if not 0 <= seconds <= MAX_SECONDS:
            raise CommandError(
                f"--older-than must be a number of seconds from 0 to {MAX_SECONDS}, not {seconds}."
            )
        aliases = options.get("databases")
        for alias in aliases or ():
            if alias not in connections:
                raise CommandError(f"No database {alias!r} in settings.DATABASES.")
        deleted = once.prune(timedelta(seconds=seconds), using=aliases)
        self.stdout.write(f"Deleted {deleted} record(s) of handled messages older than {seconds:g} s.")
