"""Fan-out of server-sent events to a bounded number of browsers, replaying the latest state.

The feed publishes into named slots ("status", "changes", "connection"); each slot keeps its
latest event, which a newly connected browser receives first, so it never waits for the next
change to show the fleet. A browser that reads slower than events arrive (its backlog is full) is
disconnected: its EventSource reconnects by itself and gets the latest state again.
"""

from __future__ import annotations

import json
import threading
from collections import deque
from typing import Any, Iterator

from lbgen.core.web import SSE_HEARTBEAT, sse_event

_END = b""
RETRY_MS = 2000  # how soon a browser reconnects after the stream breaks


class _Client:
    """One open event stream: a bounded backlog of encoded events."""

    def __init__(self, backlog: int) -> None:
        self._frames: deque[bytes] = deque()
        self._backlog = backlog
        self._cond = threading.Condition()
        self._ended = False

    def offer(self, frame: bytes) -> bool:
        """Queue `frame`; False (and the stream ends) when the backlog is full or it has ended."""
        with self._cond:
            if not self._ended and len(self._frames) >= self._backlog:
                self._ended = True
                self._frames.clear()
            if not self._ended:
                self._frames.append(frame)
            self._cond.notify()
            return not self._ended

    def end(self) -> None:
        with self._cond:
            self._ended = True
            self._cond.notify()

    def next(self, timeout: float) -> bytes | None:
        """The next frame, `_END` once ended, None after `timeout` seconds with nothing to send."""
        with self._cond:
            self._cond.wait_for(lambda: self._frames or self._ended, timeout)
            if self._frames:
                return self._frames.popleft()
            return _END if self._ended else None


class EventStream:
    """What the HTTP server writes for one browser; `close()` (always called) unsubscribes it."""

    def __init__(self, hub: Hub, client: _Client, heartbeat: float) -> None:
        self._hub, self._client, self._heartbeat = hub, client, heartbeat

    def __iter__(self) -> Iterator[bytes]:
        yield f"retry: {RETRY_MS}\n\n".encode()
        while (frame := self._client.next(self._heartbeat)) != _END:
            yield SSE_HEARTBEAT if frame is None else frame

    def close(self) -> None:
        self._hub.unsubscribe(self._client)


class Hub:
    """Thread-safe: the feed publishes from its thread, each browser reads on its own."""

    def __init__(self, max_clients: int = 32, backlog: int = 64, heartbeat: float = 15.0) -> None:
        self.max_clients = max_clients
        self._backlog = backlog
        self._heartbeat = heartbeat
        self._lock = threading.Lock()
        self._clients: set[_Client] = set()
        self._latest: dict[str, bytes] = {}
        self._closed = False

    def publish(self, slot: str, event: str, data: Any) -> None:
        """Send `event` with `data` (as JSON) to every stream; it is also `slot`'s latest."""
        frame = sse_event(event, json.dumps(data, separators=(",", ":")))
        with self._lock:
            self._latest[slot] = frame
            dropped = {client for client in self._clients if not client.offer(frame)}
            self._clients -= dropped

    def subscribe(self) -> EventStream | None:
        """A stream starting with every slot's latest event; None when `max_clients` are open."""
        with self._lock:
            if self._closed or len(self._clients) >= self.max_clients:
                return None
            client = _Client(self._backlog + len(self._latest))
            for frame in self._latest.values():
                client.offer(frame)
            self._clients.add(client)
        return EventStream(self, client, self._heartbeat)

    def unsubscribe(self, client: _Client) -> None:
        client.end()
        with self._lock:
            self._clients.discard(client)

    @property
    def clients(self) -> int:
        with self._lock:
            return len(self._clients)

    def close(self) -> None:
        """End every stream (their requests finish) and accept no new one."""
        with self._lock:
            self._closed = True
            clients, self._clients = self._clients, set()
        for client in clients:
            client.end()
