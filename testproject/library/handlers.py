"""The handler of the library app: it applies the writes that BookViewSet dispatched."""

from django_messenger import Envelope, handler
from django_messenger.stamps import OperationStamp, RemoveStamp

from .models import Book


@handler
def persist_book(message: Book, envelope: Envelope) -> None:
    """Create, update or delete the book, as the HTTP request asked.

    - DELETE: the envelope has a ``RemoveStamp``; the book may already be gone.
    - POST: the instance is new (``_state.adding`` survives the wire).
    - PATCH: only the fields the request set are written (``OperationStamp.fields``),
      so two concurrent PATCHes of different fields do not undo each other.
    - PUT: the whole row is written.
    """
    if envelope.last(RemoveStamp) is not None:
        Book.objects.filter(pk=message.pk).delete()
    elif message._state.adding:
        message.save()
    else:
        operation = envelope.last(OperationStamp)
        if operation is not None and operation.operation == "partial_update":
            message.save(update_fields=list(operation.fields))
        else:
            message.save()
