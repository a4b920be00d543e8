"""``python manage.py messenger_failed list | show ID | retry ID… | remove ID…``.

After Symfony's ``messenger:failed:*`` commands, on the database failure store, so
it works the same on every broker. IDs are envelope message ids.
"""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from ... import failures
from ...exceptions import BrokerUnavailable, FailedMessageGone, MessengerError
from ...models import FailedMessage


class Command(BaseCommand):
    help = "List, show, retry or remove the messages whose handlers failed for good."

    def add_arguments(self, parser: CommandParser) -> None:
        actions = parser.add_subparsers(dest="action", required=True, metavar="{list,show,retry,remove}")
        listing = actions.add_parser("list", help="List the failed messages, newest first.")
        listing.add_argument("--handler", help="Only the failures of this handler (actor name).")
        show = actions.add_parser("show", help="Show a failed message: body, error, traceback.")
        show.add_argument("ids", nargs=1, metavar="ID")
        for name, text in (
            ("retry", "Send failed messages again, to the failed handler only."),
            ("remove", "Forget failed messages."),
        ):
            sub = actions.add_parser(name, help=text)
            sub.add_argument("ids", nargs="*", metavar="ID", help="Envelope message ids.")
            sub.add_argument("--all", action="store_true", dest="all_", help="Every failed message.")
            sub.add_argument("--handler", help="Only the failures of this handler (actor name).")

    def handle(self, *args: Any, **options: Any) -> None:
        getattr(self, f"handle_{options['action']}")(**options)

    def _select(self, options: dict[str, Any]) -> list[FailedMessage]:
        ids = options.get("ids") or []
        all_ = bool(options.get("all_"))
        if not ids and not all_:
            raise CommandError("Name at least one message id, or pass --all.")
        if ids and all_:
            raise CommandError("Pass message ids or --all, not both.")
        try:
            return failures.select(ids, handler=options.get("handler"), all_=all_)
        except MessengerError as exc:
            raise CommandError(str(exc)) from exc

    def handle_list(self, **options: Any) -> None:
        queryset = FailedMessage.objects.all()
        if options.get("handler"):
            queryset = queryset.filter(handler=options["handler"])
        rows = list(queryset)
        if not rows:
            self.stdout.write("No failed messages.")
            return
        header = ("MESSAGE ID", "TYPE", "HANDLER", "ERROR", "FAILED AT", "TRIES")
        table = [header] + [
            (
                str(row.message_id or row.broker_message_id),
                row.message_type,
                row.handler,
                row.error.splitlines()[0][:60] if row.error else "",
                row.last_failed_at.strftime("%Y-%m-%d %H:%M:%S %Z"),
                str(row.tries),
            )
            for row in rows
        ]
        widths = [max(len(line[column]) for line in table) for column in range(len(header))]
        for line in table:
            self.stdout.write(
                "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
            )
        self.stdout.write(f"\n{len(rows)} failed message(s).")

    def handle_show(self, **options: Any) -> None:
        for row in self._select(options):
            self.stdout.write(f"Message id:  {row.message_id}")
            self.stdout.write(f"Broker id:   {row.broker_message_id}")
            self.stdout.write(f"Type:        {row.message_type}")
            self.stdout.write(f"Handler:     {row.handler} (queue {row.queue_name})")
            self.stdout.write(f"Tries:       {row.tries}")
            self.stdout.write(f"First fail:  {row.first_failed_at.isoformat()}")
            self.stdout.write(f"Last fail:   {row.last_failed_at.isoformat()}")
            self.stdout.write(f"Error:       {row.error}")
            self.stdout.write("Envelope:")
            self.stdout.write(json.dumps(row.payload, indent=2, sort_keys=True))
            self.stdout.write("Traceback:")
            self.stdout.write(row.traceback or "(none)")
            self.stdout.write("")

    def handle_retry(self, **options: Any) -> None:
        errors = gone = 0
        for row in self._select(options):
            try:
                failures.retry(row)
            except FailedMessageGone as exc:
                gone += 1
                self.stderr.write(f"{row.message_id} ({row.handler}): not retried: {exc}")
            except (MessengerError, BrokerUnavailable) as exc:
                errors += 1
                self.stderr.write(f"{row.message_id} ({row.handler}): not retried: {exc}")
            else:
                self.stdout.write(f"{row.message_id} sent again to {row.handler}.")
        problems = []
        if errors:
            problems.append(f"{errors} message(s) could not be retried; they stay in the list.")
        if gone:
            problems.append(
                f"{gone} message(s) were already retried or removed by someone else; not sent again."
            )
        if problems:
            raise CommandError(" ".join(problems))

    def handle_remove(self, **options: Any) -> None:
        count = failures.remove(self._select(options))
        self.stdout.write(f"Removed {count} failed message(s).")
