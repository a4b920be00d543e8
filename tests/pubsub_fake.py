"""A scripted Pub/Sub server on a free loopback port, for what the emulator cannot show.

A real gRPC server speaking Pub/Sub's ``Publisher`` and ``Subscriber`` services, so that the
broker's real clients (api-core's retries and timeouts included) talk to it through
``PUBSUB_EMULATOR_HOST``; each method answers as the test says: UNAVAILABLE for an outage,
PERMISSION_DENIED for a least-privilege account, NOT_FOUND for a missing subscription, or silence
until the call's deadline. Every request is recorded. By default every call succeeds.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import proto
from google.protobuf import empty_pb2
from google.pubsub_v1 import types

from tests.loopback import free_port

#: A method's answer: called with the request and gRPC's context, returns the response (or aborts).
Answer = Callable[[Any, grpc.ServicerContext], Any]

#: Each method: its service, request type, and the default answer's maker.
_METHODS: dict[str, tuple[str, Any, Callable[[Any], Any]]] = {
    "CreateTopic": ("Publisher", types.Topic, lambda request: request),
    "GetTopic": ("Publisher", types.GetTopicRequest, lambda request: types.Topic(name=request.topic)),
    "Publish": (
        "Publisher",
        types.PublishRequest,
        lambda request: types.PublishResponse(message_ids=[str(n) for n in range(len(request.messages))]),
    ),
    "CreateSubscription": ("Subscriber", types.Subscription, lambda request: request),
    "GetSubscription": (
        "Subscriber",
        types.GetSubscriptionRequest,
        lambda request: types.Subscription(name=request.subscription),
    ),
    "Pull": ("Subscriber", types.PullRequest, lambda request: types.PullResponse()),
    "Acknowledge": ("Subscriber", types.AcknowledgeRequest, lambda request: empty_pb2.Empty()),
    "ModifyAckDeadline": ("Subscriber", types.ModifyAckDeadlineRequest, lambda request: empty_pb2.Empty()),
}


def _serialize(message: Any) -> bytes:
    if isinstance(message, proto.Message):
        return bytes(type(message).serialize(message))
    return bytes(message.SerializeToString())


class FakePubSub:
    """``with FakePubSub() as fake: fake.host`` — a scripted server while the block runs."""

    def __init__(self) -> None:
        self.port = free_port()
        self.calls: list[tuple[str, Any, float]] = []  # (method, request, monotonic time received)
        self.answers: dict[str, Answer] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server = grpc.server(ThreadPoolExecutor(max_workers=16))
        handlers: dict[str, dict[str, grpc.RpcMethodHandler]] = {"Publisher": {}, "Subscriber": {}}
        for method, (service, request_type, _) in _METHODS.items():
            handlers[service][method] = grpc.unary_unary_rpc_method_handler(
                self._handler(method),
                request_deserializer=request_type.deserialize,
                response_serializer=_serialize,
            )
        for service, methods in handlers.items():
            self._server.add_generic_rpc_handlers(
                (grpc.method_handlers_generic_handler(f"google.pubsub.v1.{service}", methods),)
            )

    @property
    def host(self) -> str:
        """What ``PUBSUB_EMULATOR_HOST`` takes."""
        return f"127.0.0.1:{self.port}"

    def _handler(self, method: str) -> Callable[[Any, grpc.ServicerContext], Any]:
        def handle(request: Any, context: grpc.ServicerContext) -> Any:
            with self._lock:
                self.calls.append((method, request, time.monotonic()))
                answer = self.answers.get(method)
            if answer is None:
                return _METHODS[method][2](request)
            return answer(request, context)

        return handle

    def requests(self, method: str) -> list[Any]:
        """The requests ``method`` received, in order."""
        with self._lock:
            return [request for name, request, _ in self.calls if name == method]

    def answer(self, method: str, answer: Answer) -> None:
        self.answers[method] = answer

    def fail(self, method: str, code: grpc.StatusCode, *, when: Callable[[Any], bool] | None = None) -> None:
        """``method`` answers ``code`` (to the requests ``when`` accepts; the others succeed)."""

        def failing(request: Any, context: grpc.ServicerContext) -> Any:
            if when is None or when(request):
                context.abort(code, f"scripted {code.name}")
            return _METHODS[method][2](request)

        self.answers[method] = failing

    def succeed(self, method: str) -> None:
        self.answers.pop(method, None)

    def hang(self, context: grpc.ServicerContext) -> None:
        """Answer nothing until the call's deadline (or the server stops): a silent server."""
        remaining = context.time_remaining()
        self._stopping.wait(60.0 if remaining is None else remaining + 0.5)
        context.abort(grpc.StatusCode.UNAVAILABLE, "stopped")

    def __enter__(self) -> FakePubSub:
        self._server.add_insecure_port(self.host)
        self._server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopping.set()
        self._server.stop(grace=None).wait(10)
