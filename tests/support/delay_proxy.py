"""A TCP proxy on 127.0.0.1 that adds latency, and a black hole: etcd "a little far away" (issue 10.7).

- `DelayProxy(upstream_port, delay)`: every chunk, in each direction, is delivered `delay` seconds
  after it arrived (latency, not a bandwidth cap), so a client sees its first bytes late as it
  would across a WAN. Bounded: at most `MAX_CONNECTIONS` connections and `MAX_PENDING` chunks in
  flight per direction (the reader then waits: back-pressure, not memory).
- `BlackHole()`: a socket that listens (the kernel completes TCP handshakes) but never accepts,
  reads or answers: a peer that connects and then hangs.

Both listen on 127.0.0.1 only and are context managers that close every socket and thread.
"""

from __future__ import annotations

import queue
import socket
import threading
import time
from typing import Iterator

MAX_CONNECTIONS = 32
MAX_PENDING = 256
CHUNK = 65536
_EOF = b""


class DelayProxy:
    """127.0.0.1:`port` → 127.0.0.1:`upstream_port`, each direction delayed by `delay` seconds."""

    def __init__(self, upstream_port: int, delay: float) -> None:
        self.upstream_port = upstream_port
        self.delay = delay
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self.port = int(self._listener.getsockname()[1])
        self._closed = threading.Event()
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._spawn(self._accept, "delay-proxy accept")

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def __enter__(self) -> DelayProxy:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the listener and every connection; join the threads."""
        self._closed.set()
        self._listener.close()
        with self._lock:
            for sock in self._sockets:
                _shut(sock)
        for thread in self._threads:
            thread.join(timeout=5)

    def _spawn(self, target: object, name: str, *args: object) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)  # type: ignore[arg-type]
        self._threads.append(thread)
        thread.start()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except (socket.timeout, OSError):
                continue
            with self._lock:
                if len(self._sockets) >= 2 * MAX_CONNECTIONS:
                    client.close()
                    continue
                try:
                    upstream = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=5)
                except OSError:
                    client.close()
                    continue
                upstream.settimeout(None)
                self._sockets += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                chunks: queue.Queue[tuple[float, bytes]] = queue.Queue(MAX_PENDING)
                self._spawn(self._read, "delay-proxy read", source, chunks)
                self._spawn(self._write, "delay-proxy write", sink, chunks)

    def _read(self, source: socket.socket, chunks: queue.Queue[tuple[float, bytes]]) -> None:
        for data in _received(source):
            chunks.put((time.monotonic() + self.delay, data))
        chunks.put((time.monotonic() + self.delay, _EOF))

    def _write(self, sink: socket.socket, chunks: queue.Queue[tuple[float, bytes]]) -> None:
        while True:
            due, data = chunks.get()
            if self._closed.wait(max(0.0, due - time.monotonic())):
                return
            if data == _EOF:
                _half_close(sink)
                return
            try:
                sink.sendall(data)
            except OSError:
                return


class BlackHole:
    """A listening 127.0.0.1 socket that never accepts: connects succeed, nothing ever answers."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0), backlog=16)
        self.port = int(self._listener.getsockname()[1])

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def __enter__(self) -> BlackHole:
        return self

    def __exit__(self, *_: object) -> None:
        self._listener.close()


def _received(sock: socket.socket) -> Iterator[bytes]:
    """The chunks read from `sock` until EOF or an error."""
    while True:
        try:
            data = sock.recv(CHUNK)
        except OSError:
            return
        if not data:
            return
        yield data


def _half_close(sock: socket.socket) -> None:
    """Pass an EOF on: no more data this way, the other direction stays open."""
    try:
        sock.shutdown(socket.SHUT_WR)
    except OSError:
        pass


def _shut(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()
