"""``python manage.py messenger_stats [QUEUE ...] [--json]``: queue counts and failures per handler.

After Symfony's ``messenger:stats``. Per queue (messenger's own by default: every Dramatiq
transport's, the fan-out actors' and every handler's), the messages ready, in flight where the
broker tells, delayed (``.DQ``) and dead-lettered (``.XQ``), read by the broker's reader
(:mod:`django_messenger.stats`); and the failures per handler from the failure store.

A broker without a reader is not an error: the failures are printed, with a note that the
queue counts cannot be read (``"queues": null`` in JSON). A broker that cannot be reached is:
a ``CommandError`` naming the broker and the kind of error, never a host or a credential.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DatabaseError

from ... import stats
from ...exceptions import MessengerError


class Command(BaseCommand):
    help = (
        "Show, per queue, the messages ready, in flight, delayed and dead-lettered, "
        "and the failed messages per handler."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "queues",
            nargs="*",
            metavar="QUEUE",
            help="Only these queues (default: every queue messenger uses).",
        )
        parser.add_argument("--json", action="store_true", help="Print one JSON object instead of tables.")
        parser.add_argument(
            "--timeout",
            type=float,
            default=None,
            help="Seconds to wait for the broker (default: MESSENGER['PUBLISH_TIMEOUT']).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        timeout = options["timeout"]
        if timeout is not None and not timeout > 0:
            raise CommandError("--timeout must be a number of seconds greater than 0.")
        queues: list[stats.QueueStats] | None
        note = None
        try:
            queues = stats.queue_stats(options["queues"] or None, timeout=timeout)
        except stats.NoReader as exc:
            queues, note = None, str(exc)
        except stats.StatsUnavailable as exc:
            raise CommandError(
                f"Could not read the queues: {exc} Is the broker running? (--traceback shows the cause)"
            ) from exc
        except MessengerError as exc:
            raise CommandError(str(exc)) from exc
        try:
            failures = stats.failures_per_handler()
        except DatabaseError as exc:
            # The database's texts may name its host: only the kind of error is shown.
            raise CommandError(
                f"Could not read the failure store ({type(exc).__name__}): is the database up and migrated?"
            ) from exc
        if options["json"]:
            self.stdout.write(
                json.dumps(
                    {
                        "queues": None if queues is None else [queue.as_dict() for queue in queues],
                        "failures": [failure.as_dict() for failure in failures],
                        "notes": [note] if note else [],
                    },
                    indent=2,
                )
            )
            return
        if queues is None:
            self.stderr.write(f"Note: {note}")
        else:
            self.write_queues(queues)
        self.stdout.write("")
        self.write_failures(failures)

    def write_queues(self, queues: list[stats.QueueStats]) -> None:
        if not queues:
            self.stdout.write("No queues.")
            return
        rows = [("QUEUE", "READY", "IN FLIGHT", "DELAYED", "DEAD-LETTERED")] + [
            (q.queue, _count(q.ready), _count(q.in_flight), _count(q.delayed), _count(q.dead_lettered))
            for q in queues
        ]
        self.write_table(rows)
        notes = sorted({note for queue in queues for note in queue.notes})
        for note in notes:
            queues_noted = ", ".join(q.queue for q in queues if note in q.notes)
            self.stdout.write(f"  * {queues_noted}: {note}")
        if any(q.in_flight is None or q.ready is None for q in queues):
            self.stdout.write("  (- : the broker does not tell)")

    def write_failures(self, failures: list[stats.HandlerFailures]) -> None:
        if not failures:
            self.stdout.write("No failed messages.")
            return
        rows = [("HANDLER", "FAILED", "LAST FAILED AT")] + [
            (f.handler, str(f.count), f.last_failed_at.strftime("%Y-%m-%d %H:%M:%S %Z")) for f in failures
        ]
        self.write_table(rows)
        total = sum(f.count for f in failures)
        self.stdout.write(f"\n{total} failed message(s); `manage.py messenger_failed list` shows them.")

    def write_table(self, rows: Sequence[tuple[str, ...]]) -> None:
        widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
        for row in rows:
            cells = [row[0].ljust(widths[0])] + [
                cell.rjust(width) for cell, width in zip(row[1:], widths[1:], strict=True)
            ]
            self.stdout.write("  ".join(cells).rstrip())


def _count(value: int | None) -> str:
    return "-" if value is None else str(value)
