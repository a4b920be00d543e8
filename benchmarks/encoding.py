"""Encoding: µs per envelope encode and decode, for a small dataclass and a model instance.

Each operation is timed with ``timeit`` (auto-ranged loop, then ``--repeat`` repeats); the
table shows the median µs per operation and the min–max over the repeats. "wire" rows include
Dramatiq's own step (``Message.encode()`` to JSON bytes, ``Message.decode()`` back), which is
what a send and a receive pay; the raw Dramatiq rows are the same message without an envelope.
The envelopes carry an ``OperationStamp``, as a view's do. Needs no service.

    python -m benchmarks.encoding
    python -m benchmarks.encoding --quick
"""

from __future__ import annotations

import argparse
import os
import timeit
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from benchmarks._common import median, print_table, run_main, spread


def measure(fn: Callable[[], Any], repeat: int, min_time: float) -> list[float]:
    """µs per call of ``fn``, once per repeat."""
    timer = timeit.Timer(fn)
    number = 1
    while True:  # like Timer.autorange, with a configurable target time
        if timer.timeit(number) >= min_time:
            break
        number *= 2
    return [timer.timeit(number) / number * 1e6 for _ in range(repeat)]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 short repeats")
    args = parser.parse_args()
    min_time = 0.2
    if args.quick:
        args.repeat, min_time = 2, 0.01

    os.environ["DJANGO_SETTINGS_MODULE"] = "benchmarks.project.settings"
    import django

    django.setup()
    from dramatiq import Message

    from benchmarks.project.bench.messages import Ping
    from benchmarks.project.bench.models import Item
    from django_messenger.encoding import decode_envelope, encode_envelope
    from django_messenger.envelope import Envelope
    from django_messenger.stamps import OperationStamp

    stamp = OperationStamp(operation="create", fields=("name", "count"), lookup={})
    messages = {
        "dataclass Ping(name, count)": Ping(name="ada", count=3),
        "model Item (5 fields: str, int, Decimal, datetime, bool)": Item(
            name="ada", count=3, price=Decimal("9.99"), created=datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
        ),
    }
    rows = []
    for label, message in messages.items():
        envelope = Envelope(message, [stamp])
        payload = encode_envelope(envelope)

        def wire_encode(envelope: Envelope = envelope) -> bytes:
            return Message(
                queue_name="q", actor_name="a", args=(encode_envelope(envelope),), kwargs={}, options={}
            ).encode()

        wire = wire_encode()

        def wire_decode(wire: bytes = wire) -> Envelope:
            return decode_envelope(Message.decode(wire).args[0])

        assert type(wire_decode().message) is type(message)
        for operation, fn in [
            ("encode_envelope", lambda envelope=envelope: encode_envelope(envelope)),
            ("decode_envelope", lambda payload=payload: decode_envelope(payload)),
            ("wire encode (+ Message.encode)", wire_encode),
            ("wire decode (Message.decode +)", wire_decode),
        ]:
            values = measure(fn, args.repeat, min_time)
            rows.append([label, operation, f"{median(values):.2f}", spread(values, "{:.2f}"), len(wire)])

    raw = Message(queue_name="q", actor_name="a", args=(), kwargs={"name": "ada", "count": 3}, options={})
    raw_wire = raw.encode()
    for operation, fn in [
        (
            "Message.encode",
            lambda: Message(
                queue_name="q", actor_name="a", args=(), kwargs={"name": "ada", "count": 3}, options={}
            ).encode(),
        ),
        ("Message.decode", lambda: Message.decode(raw_wire)),
    ]:
        values = measure(fn, args.repeat, min_time)
        rows.append(
            [
                "raw Dramatiq kwargs (name, count)",
                operation,
                f"{median(values):.2f}",
                spread(values, "{:.2f}"),
                len(raw_wire),
            ]
        )
    print_table(
        f"Encoding: µs per operation (median of {args.repeat} repeats)",
        ["message", "operation", "µs/op", "min–max", "wire bytes"],
        rows,
    )


if __name__ == "__main__":
    run_main(main)
