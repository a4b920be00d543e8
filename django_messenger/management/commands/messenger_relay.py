"""``python manage.py messenger_relay [--once] [--prune]``: the transactional outbox's relay, apart.

Without options it publishes the outbox's rows until SIGTERM or SIGINT, as the relay thread of a
``rundramatiq`` worker does (django_messenger.outbox). ``--once`` publishes what is due and exits
(non-zero when the broker refused a publish: the rows stay for the next run); ``--prune`` deletes
the rows sent more than ``MESSENGER["OUTBOX_KEEP_SENT"]`` seconds ago. Both suit cron.
"""

from __future__ import annotations

import signal
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import Error as DatabaseError

from ...models import OutboxMessage
from ...outbox import Relay, has_outbox
from ...publishing import describe


class Command(BaseCommand):
    help = "Publish the transactional outbox's messages to the broker (until stopped, or --once)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--once", action="store_true", help="Publish what is due, then exit.")
        parser.add_argument(
            "--prune", action="store_true", help="Delete the rows sent over OUTBOX_KEEP_SENT seconds ago."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        relay = Relay()
        if not has_outbox():
            self.stderr.write(
                "No transport has an outbox (MESSENGER['TRANSPORTS'][name]['outbox'] = True): "
                "the rows already in the table are published all the same."
            )
        if options["prune"]:
            self.stdout.write(f"Deleted {relay.prune()} sent rows.")
        if options["once"]:
            self.publish_once(relay)
        elif not options["prune"]:
            for signum in (signal.SIGTERM, signal.SIGINT):
                signal.signal(signum, lambda *_: relay.stop())
            relay.run()

    def publish_once(self, relay: Relay) -> None:
        try:
            result = relay.drain()
        except DatabaseError as exc:
            raise CommandError(f"The outbox could not be read: {describe(exc)}") from exc
        left = OutboxMessage.objects.using(relay.alias).filter(sent_at__isnull=True).count()
        self.stdout.write(f"Published {result.sent} messages; {left} left unsent.")
        if result.refused:
            raise CommandError("The broker refused a publish (see the log): run again later.")
