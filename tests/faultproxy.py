"""A TCP proxy on 127.0.0.1 that can reset or black-hole the connections it carries.

Put it between a client and RabbitMQ to reproduce network faults in tests::

    with FaultProxy() as proxy:            # forwards 127.0.0.1:<proxy.port> -> 127.0.0.1:5672
        url = proxy.url()                  # amqp://guest:guest@127.0.0.1:<port>/%2F
        proxy.blackhole()                  # bytes are swallowed, nothing ever comes back
        proxy.reset()                      # every connection, open or new, gets a TCP RST
        proxy.restore()                    # forwarding again (for new connections)

Each accepted connection has one thread that relays both directions with ``selectors``
and a socket pair to receive commands, so that only that thread ever closes its sockets
(a socket closed under another thread's ``recv`` would not wake it). Every thread is a
daemon and :meth:`FaultProxy.stop` joins them all.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import struct
import threading
from types import TracebackType

__all__ = ["FaultProxy", "rst_close"]

PASS = "pass"
RESET = "reset"
BLACKHOLE = "blackhole"

_CHUNK = 65536
#: How long a command waits for a connection's thread to carry it out.
_COMMAND_TIMEOUT = 5.0


def rst_close(sock: socket.socket) -> None:
    """Close ``sock`` with a TCP RST instead of a FIN (``SO_LINGER`` on, zero seconds)."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


class _Link:
    """One client connection, its upstream connection (if any) and the thread relaying them."""

    def __init__(self, proxy: FaultProxy, client: socket.socket, upstream: socket.socket | None) -> None:
        self.proxy = proxy
        self.client = client
        self.upstream = upstream
        #: Read by the relay thread for every chunk: set from the caller's thread, so that
        #: nothing sent after blackhole() returned gets through.
        self.blackholed = upstream is None
        self.closed = threading.Event()
        self._wake_r, self._wake_w = socket.socketpair()
        self._commands: list[str] = []
        self._lock = threading.Lock()
        self.thread = threading.Thread(target=self._run, name="faultproxy-link", daemon=True)

    def command(self, name: str, *, wait: bool = True) -> None:
        """Ask the relay thread to ``"reset"`` (RST both ends) or ``"close"`` the link."""
        with self._lock:
            if self.closed.is_set():
                return
            self._commands.append(name)
            try:
                self._wake_w.send(b"!")
            except OSError:
                return
        if wait:
            self.closed.wait(_COMMAND_TIMEOUT)

    def _run(self) -> None:
        selector = selectors.DefaultSelector()
        try:
            selector.register(self._wake_r, selectors.EVENT_READ)
            selector.register(self.client, selectors.EVENT_READ)
            if self.upstream is not None:
                selector.register(self.upstream, selectors.EVENT_READ)
            while True:
                for key, _ in selector.select():
                    if key.fileobj is self._wake_r:
                        self._wake_r.recv(_CHUNK)
                        with self._lock:
                            commands, self._commands = self._commands, []
                        if commands:
                            self._shutdown(rst=RESET in commands)
                            return
                    elif key.fileobj is self.client:
                        if not self._relay(self.client, self.upstream):
                            self._shutdown(rst=False)
                            return
                    elif key.fileobj is self.upstream and not self._relay(self.upstream, self.client):
                        if not self.blackholed:
                            self._shutdown(rst=False)
                            return
                        # A black hole does not pass the server's close on: it stays silent.
                        selector.unregister(self.upstream)
                        self.upstream.close()
                        self.upstream = None
        except Exception:
            self._shutdown(rst=True)
        finally:
            selector.close()

    def _relay(self, source: socket.socket, target: socket.socket | None) -> bool:
        """Move one chunk from ``source`` to ``target``; False once ``source`` is closed."""
        try:
            data = source.recv(_CHUNK)
        except OSError:
            return False
        if not data:
            return False
        if self.blackholed or target is None:
            return True  # swallowed
        try:
            target.sendall(data)
        except OSError:
            return False
        return True

    def _shutdown(self, *, rst: bool) -> None:
        with self._lock:
            for sock in (self.client, self.upstream):
                if sock is None:
                    continue
                if rst:
                    rst_close(sock)
                else:
                    sock.close()
            self._wake_r.close()
            self._wake_w.close()
            self.closed.set()
        self.proxy._forget(self)


class FaultProxy:
    """A threaded TCP proxy from ``127.0.0.1:<port>`` (an ephemeral port) to ``upstream``.

    Modes: forwarding (the start), :meth:`reset`, :meth:`blackhole`, back with :meth:`restore`.
    Use it as a context manager, or call :meth:`start` and :meth:`stop`.
    """

    host = "127.0.0.1"

    def __init__(self, upstream: tuple[str, int] = ("127.0.0.1", 5672)) -> None:
        if upstream[0] != "127.0.0.1":
            raise ValueError("FaultProxy only forwards to 127.0.0.1.")
        self.upstream = upstream
        self.mode = PASS
        self.port = 0
        self.accepted = 0
        self._listener: socket.socket | None = None
        self._acceptor: threading.Thread | None = None
        self._links: set[_Link] = set()
        self._lock = threading.Lock()
        self._stopping = False

    # Life cycle.

    def start(self) -> FaultProxy:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self.host, 0))
        listener.listen(64)
        self._listener = listener
        self.port = listener.getsockname()[1]
        self._acceptor = threading.Thread(target=self._accept_loop, name="faultproxy-accept", daemon=True)
        self._acceptor.start()
        return self

    def stop(self) -> None:
        """Close every connection (RST) and the listening socket; join all threads."""
        if self._listener is None:
            return
        self._stopping = True
        # Wake the blocking accept() with a connection of our own.
        with contextlib.suppress(OSError):
            socket.create_connection((self.host, self.port), timeout=1).close()
        if self._acceptor is not None:
            self._acceptor.join(_COMMAND_TIMEOUT)
        self._listener.close()
        self._listener = None
        for link in self.links():
            link.command(RESET)
            link.thread.join(_COMMAND_TIMEOUT)

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    def url(self, user: str = "guest", password: str = "guest", vhost: str = "%2F") -> str:
        """An AMQP URL for RabbitMQ through this proxy."""
        return f"amqp://{user}:{password}@{self.host}:{self.port}/{vhost}"

    def links(self) -> list[_Link]:
        with self._lock:
            return list(self._links)

    @property
    def threads(self) -> list[threading.Thread]:
        """The proxy's live threads (for tests of the proxy itself)."""
        threads = [link.thread for link in self.links()]
        if self._acceptor is not None:
            threads.append(self._acceptor)
        return [thread for thread in threads if thread.is_alive()]

    # Faults.

    def reset(self) -> None:
        """RST every open connection, and every new one until :meth:`restore`."""
        self.mode = RESET
        for link in self.links():
            link.command(RESET)

    def blackhole(self) -> None:
        """Swallow everything: open connections stop relaying, new ones are accepted and never answered."""
        self.mode = BLACKHOLE
        for link in self.links():
            link.blackholed = True

    def restore(self) -> None:
        """Forward new connections again. Black-holed ones lost bytes for good: they are reset."""
        self.mode = PASS
        for link in self.links():
            if link.blackholed:
                link.command(RESET)

    # Internals.

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self._stopping:
                client.close()
                return
            self.accepted += 1
            mode = self.mode
            if mode == RESET:
                rst_close(client)
                continue
            upstream: socket.socket | None = None
            if mode == PASS:
                try:
                    upstream = socket.create_connection(self.upstream, timeout=_COMMAND_TIMEOUT)
                    upstream.settimeout(None)
                except OSError:
                    rst_close(client)
                    continue
            link = _Link(self, client, upstream)
            with self._lock:
                self._links.add(link)
            link.thread.start()

    def _forget(self, link: _Link) -> None:
        with self._lock:
            self._links.discard(link)
