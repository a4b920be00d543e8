"""The handler of the library app: it applies the writes that BookViewSet dispatched."""

from django_messenger import Envelope, handler
from django_messenger.stamps import OperationStamp, RemoveStamp

from .models import Book


@handler(idempotent=True)
def persist_book(message: Book, envelope: Envelope) -> None:
    """Create, update or delete the book, as the HTTP request asked.

    ``idempotent=True``: the write and a record of the message commit in one transaction, so a
    redelivered message (a worker killed after the commit, before its acknowledgement) is
    acknowledged without running again, and a redelivered create does not insert a second book.

    - DELETE: the envelope has a ``RemoveStamp``; the book may already be gone.
    - POST: the instance is new (``_state.adding`` survives the wire).
    - PATCH: only the fields the request set are written (``OperationStamp.fields``),
      so two concurrent PATCHes of different fields do not undo each other.
    - PUT: the whole row is written.

    Updates are UPDATE statements, so a redelivered message writes the same values
    again and a late update of a deleted book changes nothing.
    """
    if envelope.last(RemoveStamp) is not None:
        Book.objects.filter(pk=message.pk).delete()
    elif message._state.adding:
        message.save()
    else:
        operation = envelope.last(OperationStamp)
        if operation is not None and operation.operation == "partial_update":
            names = operation.fields
        else:
            names = tuple(field.name for field in Book._meta.concrete_fields if not field.primary_key)
        # An UPDATE, never an INSERT: a PUT that arrives after the DELETE does not bring the book back.
        attnames = (Book._meta.get_field(name).attname for name in names)
        Book.objects.filter(pk=message.pk).update(**{name: getattr(message, name) for name in attnames})
