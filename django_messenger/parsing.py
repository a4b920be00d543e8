"""Request parsing of messenger views: a hostile body is a 4xx with a JSON ``detail``, never a 500.

DRF parses ``request.data`` lazily with the view's parsers, and turns only its own
``ParseError`` into a 400. Other failures of a parser escape as a 500 or as Django's HTML
400 page: ``RecursionError`` on deeply nested JSON, ``TooManyFieldsSent`` on a form with more
than ``DATA_UPLOAD_MAX_NUMBER_FIELDS`` fields. JSON that Python can parse may still nest deeper
than a worker decodes (:data:`MAX_DEPTH`, the decoder's own bound): such bodies are refused.
Some bodies are not even refused: Django's form parsers read bytes that are not valid in the
request's charset as Latin-1 or U+FFFD, and JSON number literals too large for a float become
infinities. A multipart text field that holds
U+FFFD is refused for that reason (Django gives no way to tell it from a replaced byte).

:func:`guard_parser` gives any parser (DRF's or a user's, from ``parser_classes``) a
subclass of its own class whose ``parse`` turns each of these into a ``ParseError`` that says
what the client can change; DRF's own checks (``isinstance(parser, JSONParser)``) still hold.
``RequestDataTooBig`` passes through: the view answers it with a 413.
"""

from __future__ import annotations

import copy
import io
import json
import math
import sys
from typing import Any
from urllib.parse import unquote_to_bytes

from django.conf import settings
from django.core.exceptions import (
    RequestDataTooBig,
    SuspiciousOperation,
    TooManyFieldsSent,
    TooManyFilesSent,
)
from django.http import QueryDict
from django.http.multipartparser import MultiPartParserError
from rest_framework.exceptions import ParseError
from rest_framework.parsers import BaseParser, DataAndFiles, FormParser

from . import bounds

#: How deeply lists and objects may nest in a body: as deep as a worker decodes a message
#: (``bounds.MAX_DEPTH``). The envelope wraps the body in a few more levels, which the web side's
#: dry-run decode (transports/dramatiq.py) measures exactly; this bound refuses the deep ones early.
MAX_DEPTH = bounds.MAX_DEPTH
#: What Django's form parsers put in place of bytes that are not valid in the charset.
REPLACEMENT_CHARACTER = "\ufffd"


def unreadable(media_type: str | None, what: str = "") -> str:
    return f"The request body is not valid {media_type or 'content'}{what}: correct it and send it again."


def too_deep() -> str:
    return f"The request body is nested too deeply: send at most {MAX_DEPTH} levels of lists and objects."


def bad_number() -> str:
    digits = sys.get_int_max_str_digits() or "any number of"
    return (
        "The request body holds a number this endpoint cannot take: send finite numbers "
        f"(no NaN or Infinity) of at most {digits} digits."
    )


def not_in_charset(encoding: str) -> str:
    return f"The request body is not valid {encoding} text: send it encoded in the charset it names."


def too_many_fields() -> str:
    return f"The form has too many fields: send at most {settings.DATA_UPLOAD_MAX_NUMBER_FIELDS}."


def too_many_query_fields() -> str:
    return f"The query string has too many fields: send at most {settings.DATA_UPLOAD_MAX_NUMBER_FIELDS}."


def too_many_files() -> str:
    return f"The form has too many files: send at most {settings.DATA_UPLOAD_MAX_NUMBER_FILES}."


def text_charset(parser_context: Any) -> str:
    """The request's charset, if it is a text encoding (``bz2_codec`` would decompress the body)."""
    encoding = str((parser_context or {}).get("encoding") or settings.DEFAULT_CHARSET)
    try:
        "".encode(encoding)
    except (LookupError, UnicodeError):
        raise ParseError(
            f"The Content-Type names a charset this endpoint cannot read: send {settings.DEFAULT_CHARSET}."
        ) from None
    return encoding


def _parse_error(exc: BaseException, media_type: str | None, encoding: str) -> ParseError | None:
    """The ParseError a failure of parsing becomes, or None when it is not the body's fault."""
    if isinstance(exc, ParseError):
        # DRF's parsers wrap the error that explains the failure; their text is Python's.
        cause = exc.__cause__ or exc.__context__
        if cause is None:
            return exc  # DRF's own wording (an unsupported charset, for instance)
        return _parse_error(cause, media_type, encoding) or exc
    if isinstance(exc, RecursionError):
        return ParseError(too_deep())
    if isinstance(exc, TooManyFieldsSent):
        return ParseError(too_many_fields())
    if isinstance(exc, TooManyFilesSent):
        return ParseError(too_many_files())
    if isinstance(exc, RequestDataTooBig):
        return None  # a 413, answered by the view
    if isinstance(exc, json.JSONDecodeError):
        return ParseError(unreadable(media_type, f" (line {exc.lineno}, column {exc.colno})"))
    if isinstance(exc, UnicodeError):
        return ParseError(not_in_charset(encoding))
    if isinstance(exc, ValueError) and "json" in (media_type or ""):
        return ParseError(bad_number())  # json's NaN and Infinity, or an int over Python's digit limit
    if isinstance(exc, ValueError):
        return ParseError(unreadable(media_type))
    if isinstance(exc, (SuspiciousOperation, MultiPartParserError)):
        return ParseError(unreadable(media_type))
    return None


def _is_text(form: bytes, encoding: str) -> bool:
    """Whether every key and value of the URL-encoded ``form`` is valid in ``encoding``.

    Each key and value lies between ASCII separators, so they are all valid if the whole
    percent-decoded body is (QueryDict would silently read invalid bytes as Latin-1 or U+FFFD).
    """
    try:
        unquote_to_bytes(form).decode(encoding)
    except UnicodeDecodeError:
        return False
    return True


def _replaced_text(data: QueryDict) -> bool:
    return any(
        REPLACEMENT_CHARACTER in key or any(REPLACEMENT_CHARACTER in value for value in values)
        for key, values in data.lists()
    )


#: JSON values with nothing to refuse: a flat object of these needs no walk (most write bodies).
_FLAT = frozenset({str, int, bool, type(None)})


def _refusal(data: Any) -> str | None:
    """Why parsed data cannot be dispatched (too deep, NaN or an infinity), walked without recursion."""
    if type(data) is dict and all(type(value) in _FLAT for value in data.values()):
        return None
    stack = [(data, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, float) and not math.isfinite(item):
            return bad_number()
        if isinstance(item, (dict, list)):
            if depth >= MAX_DEPTH:
                return too_deep()
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
    return None


class GuardedParserMixin(BaseParser):
    """Refuses, with a ``ParseError``, every body the parser underneath cannot read safely."""

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        encoding = text_charset(parser_context)
        if isinstance(self, FormParser):  # DRF hands it the body in memory (request.body)
            form = stream.read()
            if not _is_text(form, encoding):
                raise ParseError(not_in_charset(encoding))
            stream = io.BytesIO(form)
        try:
            parsed = super().parse(stream, media_type, parser_context)
        except (ParseError, RecursionError, SuspiciousOperation, ValueError) as exc:
            error = _parse_error(exc, media_type, encoding)
            if error is None or error is exc:
                raise
            raise error from exc
        data = parsed.data if isinstance(parsed, DataAndFiles) else parsed
        if isinstance(data, QueryDict):
            # multipart/form-data: Django puts U+FFFD in place of bytes invalid in the charset
            if not isinstance(self, FormParser) and _replaced_text(data):
                raise ParseError(not_in_charset(encoding))
        else:
            refusal = _refusal(data)
            if refusal is not None:
                raise ParseError(refusal)
        return parsed


_guarded: dict[type[BaseParser], type[BaseParser]] = {}


def guarded_parser_class(parser_class: type[BaseParser]) -> type[BaseParser]:
    """``parser_class`` with :class:`GuardedParserMixin`'s ``parse``, under the same name (built once)."""
    if issubclass(parser_class, GuardedParserMixin):
        return parser_class
    guarded = _guarded.get(parser_class)
    if guarded is None:
        namespace = {"__module__": parser_class.__module__, "__qualname__": parser_class.__qualname__}
        guarded = _guarded.setdefault(
            parser_class, type(parser_class.__name__, (GuardedParserMixin, parser_class), namespace)
        )
    return guarded


def guard_parser(parser: BaseParser) -> BaseParser:
    """A copy of ``parser`` (its settings kept) whose ``parse`` refuses hostile bodies."""
    guarded = copy.copy(parser)
    guarded.__class__ = guarded_parser_class(type(parser))
    return guarded
