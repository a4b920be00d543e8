"""``Idempotency-Key`` (IETF draft-ietf-httpapi-idempotency-key-header) for messenger writes.

A write that carries a key first *claims* it: one row (or cache entry) per user and key,
inserted before anything is dispatched, so that of two requests racing with one key only one
inserts it and dispatches; the other finds it in flight (409). When the write is answered
with a 2xx, the answer (status, body, ``Messenger-Message-Id``, ``Location``) is stored under
the key and replayed to every later request with the same key and the same request
(method, path, body) for ``MESSENGER["IDEMPOTENCY_TTL"]``; another request under the key is a
422. Any other answer (400, 503...) releases the key: the client may retry with it.

A request that crashed with its key in flight leaves it claimed for
``MESSENGER["IDEMPOTENCY_LOCK_TIMEOUT"]``; after that, the next request with the key takes it over.

The keys live in the database by default, or in ``MESSENGER["IDEMPOTENCY_CACHE"]``, a Django
cache every web process shares (Redis, Memcached, database cache), whose ``add`` is atomic.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

from django.apps import apps
from django.core.cache import caches
from django.db import IntegrityError, transaction
from django.utils import timezone

from .conf import messenger_settings
from .exceptions import IdempotencyKeyInUse, IdempotencyKeyMissing, IdempotencyKeyReused

if TYPE_CHECKING:
    from .models import IdempotencyKey

HEADER = "Idempotency-Key"
#: The header a replayed answer carries (as Stripe's API does).
REPLAYED_HEADER = "Idempotent-Replayed"
#: The answer's headers that are stored and replayed.
KEPT_HEADERS = ("Content-Type", "Messenger-Message-Id", "Location")
MAX_KEY_LENGTH = 255
#: The JSON schema of a key (printable ASCII, no blank at either end), for OpenAPI.
KEY_SCHEMA = {
    "type": "string",
    "minLength": 1,
    "maxLength": MAX_KEY_LENGTH,
    "pattern": "^[!-~]([ -~]*[!-~])?$",
}
#: How many times a claim retries when the key changed under it (released, expired, taken over).
_ATTEMPTS = 5


def parse_key(value: str | None) -> str | None:
    """The key of an ``Idempotency-Key`` header value (a quoted sf-string, or bare), or None if absent.

    Raises:
      IdempotencyKeyMissing: the value is empty, too long or not printable ASCII.
    """
    if value is None:
        return None
    key = value.strip()
    if len(key) > 2 and key[0] == key[-1] == '"':  # a structured-field string: its content
        key = key[1:-1]
    if not key or len(key) > MAX_KEY_LENGTH or not all(" " <= char <= "~" for char in key):
        raise IdempotencyKeyMissing()
    return key


def fingerprint(method: str, path: str, data: Any) -> str:
    """SHA-256 of what makes two requests "the same": the method, the path and the parsed body."""
    body = json.dumps(data, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(f"{method.upper()}\n{path}\n{body}".encode()).hexdigest()


@dataclass(frozen=True)
class Answer:
    """A stored answer, replayed as it was."""

    status_code: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""

    def to_json(self) -> dict[str, Any]:
        return {
            "status": self.status_code,
            "headers": self.headers,
            "body": base64.b64encode(self.body).decode("ascii"),
        }

    @classmethod
    def from_parts(cls, status_code: int, headers: Any, body: str) -> Answer:
        return cls(
            status_code=int(status_code),
            headers={str(k): str(v) for k, v in dict(headers or {}).items()},
            body=base64.b64decode(body or ""),
        )


@dataclass(frozen=True)
class Claim:
    """A key this request holds while it is answered: finish it with the answer, or release it."""

    store: Store
    owner: str
    key: str
    fingerprint: str
    token: str

    def finish(self, answer: Answer) -> None:
        self.store.finish(self, answer)

    def release(self) -> None:
        self.store.release(self)


class Store(Protocol):
    def claim(self, owner: str, key: str, fingerprint: str) -> Claim | Answer: ...

    def finish(self, claim: Claim, answer: Answer) -> None: ...

    def release(self, claim: Claim) -> None: ...


def _keys() -> type[IdempotencyKey]:
    """The model, looked up when used: views import this module before the app registry is ready."""
    return apps.get_model("django_messenger", "IdempotencyKey")


def _check(fingerprint_seen: str, fingerprint_now: str) -> None:
    if fingerprint_seen != fingerprint_now:
        raise IdempotencyKeyReused()


class DatabaseStore:
    """Keys as :class:`~django_messenger.models.IdempotencyKey` rows (insert first, unique key)."""

    def claim(self, owner: str, key: str, fingerprint: str) -> Claim | Answer:
        ttl = timedelta(seconds=messenger_settings.IDEMPOTENCY_TTL)
        lock_timeout = timedelta(seconds=messenger_settings.IDEMPOTENCY_LOCK_TIMEOUT)
        for _ in range(_ATTEMPTS):
            now = timezone.now()
            try:
                with transaction.atomic():
                    _keys().objects.create(
                        owner=owner, key=key, fingerprint=fingerprint, created_at=now, locked_at=now
                    )
                return Claim(self, owner, key, fingerprint, token=now.isoformat())
            except IntegrityError:
                pass  # the key exists: what is it?
            row = _keys().objects.filter(owner=owner, key=key).first()
            if row is None:
                continue  # released meanwhile
            if row.created_at < now - ttl:  # expired, not pruned yet: forget it, claim it afresh
                _keys().objects.filter(pk=row.pk, created_at=row.created_at).delete()
                continue
            _check(row.fingerprint, fingerprint)
            if row.status_code is not None:
                return Answer.from_parts(row.status_code, row.headers, row.body)
            if row.locked_at >= now - lock_timeout:
                raise IdempotencyKeyInUse()
            # Its request crashed in flight: take the key over (one taker wins the update).
            if (
                _keys()
                .objects.filter(pk=row.pk, status_code=None, locked_at=row.locked_at)
                .update(locked_at=now)
            ):
                return Claim(self, owner, key, fingerprint, token=now.isoformat())
        raise IdempotencyKeyInUse()

    def _mine(self, claim: Claim) -> Any:
        return _keys().objects.filter(
            owner=claim.owner,
            key=claim.key,
            status_code=None,
            locked_at=datetime.fromisoformat(claim.token),
        )

    def finish(self, claim: Claim, answer: Answer) -> None:
        stored = answer.to_json()
        self._mine(claim).update(
            status_code=answer.status_code, headers=stored["headers"], body=stored["body"]
        )

    def release(self, claim: Claim) -> None:
        self._mine(claim).delete()


class CacheStore:
    """Keys in a shared Django cache: ``cache.add`` claims, ``cache.set`` stores the answer."""

    def __init__(self, alias: str) -> None:
        self.alias = alias

    @property
    def cache(self) -> Any:
        return caches[self.alias]

    @staticmethod
    def cache_key(owner: str, key: str) -> str:
        digest = hashlib.sha256(f"{owner}\0{key}".encode()).hexdigest()
        return f"django_messenger:idempotency:{digest}"

    def claim(self, owner: str, key: str, fingerprint: str) -> Claim | Answer:
        cache, name = self.cache, self.cache_key(owner, key)
        ttl = messenger_settings.IDEMPOTENCY_TTL
        for _ in range(_ATTEMPTS):
            now = timezone.now().timestamp()
            token = secrets.token_hex(8)
            entry = {"fingerprint": fingerprint, "token": token, "at": now, "created": now}
            if cache.add(name, entry, timeout=ttl):
                return Claim(self, owner, key, fingerprint, token=token)
            seen = cache.get(name)
            if not isinstance(seen, dict):
                continue  # released or expired meanwhile
            _check(str(seen.get("fingerprint")), fingerprint)
            if "answer" in seen:
                answer = seen["answer"]
                return Answer.from_parts(answer["status"], answer["headers"], answer["body"])
            if float(seen.get("at", 0)) >= now - messenger_settings.IDEMPOTENCY_LOCK_TIMEOUT:
                raise IdempotencyKeyInUse()
            cache.delete(name)  # crashed in flight; the next add decides who takes it over
        raise IdempotencyKeyInUse()

    def finish(self, claim: Claim, answer: Answer) -> None:
        cache, name = self.cache, self.cache_key(claim.owner, claim.key)
        seen = cache.get(name)
        if not isinstance(seen, dict) or seen.get("token") != claim.token:
            return  # taken over meanwhile: the other request's answer stands
        expires = float(seen["created"]) + messenger_settings.IDEMPOTENCY_TTL
        remaining = max(1.0, expires - timezone.now().timestamp())
        cache.set(name, {**seen, "answer": answer.to_json()}, timeout=remaining)

    def release(self, claim: Claim) -> None:
        cache, name = self.cache, self.cache_key(claim.owner, claim.key)
        seen = cache.get(name)
        if isinstance(seen, dict) and seen.get("token") == claim.token and "answer" not in seen:
            cache.delete(name)


def store() -> Store:
    """The store ``MESSENGER["IDEMPOTENCY_CACHE"]`` names: a cache, or the database."""
    alias = messenger_settings.IDEMPOTENCY_CACHE
    return CacheStore(alias) if alias else DatabaseStore()
