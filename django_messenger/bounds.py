"""How much work decoding a message from the wire may cost, whoever wrote it.

A worker decodes what anyone who can write to its queues sent. These bounds keep a
forged message from costing more than its size: nesting deeper than :data:`MAX_DEPTH`,
a list, set or object with more than :data:`MAX_ITEMS` items, or a set or dict whose keys
share one hash more than :data:`MAX_EQUAL_HASHES` times (hash flooding: building a set of
colliding keys, such as integers that differ by a multiple of 2**61 - 1, takes quadratic
time) fail decoding with :class:`MessageDecodingFailed`, so the message is poison.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

from .exceptions import MessageDecodingFailed

#: The deepest nesting of lists, objects and tagged values a message may have.
MAX_DEPTH = 32

#: The most items one list, set, tuple or object (dict) may hold.
MAX_ITEMS = 100_000

#: How many items of one set (or keys of one dict) may share one hash value.
MAX_EQUAL_HASHES = 8


def check_depth(depth: int) -> None:
    if depth > MAX_DEPTH:
        raise MessageDecodingFailed(f"The message nests deeper than {MAX_DEPTH} levels.")


def check_items(count: int) -> None:
    if count > MAX_ITEMS:
        raise MessageDecodingFailed(f"A container of the message holds more than {MAX_ITEMS} items.")


def check_hashes(items: Iterable[Any]) -> None:
    """Refuse ``items`` (about to become a set or dict keys) when too many share a hash.

    Counting the hash values is linear: the counter's keys are the hash values
    themselves, distinct integers that do not collide with one another.
    """
    counts = Counter(map(hash, items))
    if counts and max(counts.values()) > MAX_EQUAL_HASHES:
        raise MessageDecodingFailed(
            f"More than {MAX_EQUAL_HASHES} items of a set or dict of the message share one hash value."
        )


def bounded_set(items: list[Any], kind: type[set[Any]] | type[frozenset[Any]]) -> Any:
    """``kind(items)``, once :func:`check_hashes` accepted them."""
    check_hashes(items)
    return kind(items)
