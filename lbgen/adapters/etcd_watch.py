"""An etcd watch that cannot die silently.

Each watch has its own gRPC stream (pyetcd's shared watcher thread blocks forever on a frozen etcd
and has no way to cancel it). A small reader thread pumps responses into a queue; the consumer's
thread iterates the queue. When nothing has arrived for `probe_interval` seconds, the consumer asks
etcd for a progress report on the same stream; no answer within `probe_timeout` means the stream,
or etcd, is dead: the stream is cancelled and iteration raises `StoreUnavailable`. confd users call
the alternative "feign death" (confd #449, #628).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Any, Iterator

# etcd_connection first: it sets GRPC_ENABLE_FORK_SUPPORT before grpc is imported.
from lbgen.adapters.etcd_connection import EtcdConnection, WatchStream
from lbgen.core.values import WatchEvent
from lbgen.errors import Compacted, StoreError, StoreUnavailable

import grpc
from pyetcd import etcdrpc, utils
from pyetcd.etcdrpc import kv_pb2

log = logging.getLogger(__name__)

_END = object()  # the request iterator's "half-close" and the consumer's "cancelled" marker
_PUT = kv_pb2.Event.EventType.Value("PUT")


class EtcdWatch:
    """Event batches under a prefix from a start revision (see `lbgen.ports.Watch`). With nothing
    received for `probe_interval` s, a progress request must be answered within `probe_timeout` s."""

    def __init__(self, connection: EtcdConnection, prefix: str, start_revision: int, probe_interval: float,
                 probe_timeout: float) -> None:
        self._connection = connection
        self._probe = probe_interval, probe_timeout
        self.prefix = prefix
        self.start_revision = start_revision
        self.last_revision = start_revision - 1
        self._requests: queue.Queue[object] = queue.Queue()
        self._responses: queue.Queue[object] = queue.Queue()
        self._cancelled = threading.Event()
        self._stream: WatchStream | None = None
        self._reader: threading.Thread | None = None

    def __iter__(self) -> Iterator[list[WatchEvent]]:
        if self._cancelled.is_set():
            return
        self._open()
        try:
            yield from self._batches()
        finally:
            self._close()

    def cancel(self) -> None:
        """End the iteration (from any thread); the stream is closed."""
        self._cancelled.set()
        self._responses.put(_END)
        self._close()

    def _open(self) -> None:
        key = self.prefix.encode()
        create = etcdrpc.WatchCreateRequest(
            key=key, range_end=utils.prefix_range_end(key), start_revision=self.start_revision
        )
        self._requests.put(etcdrpc.WatchRequest(create_request=create))
        self._stream = self._connection.open_watch_stream(self._request_iterator())
        reader = threading.Thread(
            target=self._read, args=(self._stream,), name=f"etcd-watch {self.prefix}", daemon=True
        )
        reader.start()
        self._reader = reader  # only once started: a cancel() from another thread may join it any time

    def _close(self) -> None:
        self._requests.put(_END)
        if self._stream is not None:
            self._stream.call.cancel()
        if self._reader is not None and self._reader is not threading.current_thread():
            self._reader.join(timeout=5)

    def _request_iterator(self) -> Iterator[object]:
        while (request := self._requests.get()) is not _END:
            yield request

    def _read(self, stream: WatchStream) -> None:
        try:
            for response in stream.call:
                self._responses.put(response)
            self._responses.put(StoreUnavailable(f"etcd {stream.endpoint}: watch {self.prefix!r}: stream ended"))
        except grpc.RpcError as e:
            self._responses.put(e)

    def _batches(self) -> Iterator[list[WatchEvent]]:
        interval, timeout = self._probe
        probe_deadline: float | None = None
        while True:
            wait = interval if probe_deadline is None else probe_deadline - time.monotonic()
            try:
                item = self._responses.get(timeout=max(wait, 0))
            except queue.Empty:
                if probe_deadline is not None:
                    raise self._unavailable(f"no answer to a progress request within {timeout:g} s") from None
                self._requests.put(etcdrpc.WatchRequest(progress_request=etcdrpc.WatchProgressRequest()))
                probe_deadline = time.monotonic() + timeout
                continue
            probe_deadline = None
            if item is _END or self._cancelled.is_set():
                return
            batch = self._handle(item)
            if batch:
                yield batch

    def _handle(self, item: object) -> list[WatchEvent]:
        if isinstance(item, StoreError):
            raise item
        if isinstance(item, grpc.RpcError):
            assert self._stream is not None
            raise self._unavailable(self._connection.stream_failed(self._stream.endpoint, item)) from item
        response: Any = item
        if response.compact_revision:
            raise Compacted(self.start_revision, int(response.compact_revision))
        if response.canceled:
            raise StoreError(f"etcd: watch {self.prefix!r} cancelled by etcd: {response.cancel_reason or 'no reason'}")
        batch = [_event(e) for e in response.events]
        if batch:
            self.last_revision = batch[-1].revision
        return batch

    def _unavailable(self, why: str) -> StoreUnavailable:
        endpoint = self._stream.endpoint if self._stream else self._connection.name
        log.warning("etcd %s: watch %r after revision %s: %s", endpoint, self.prefix, self.last_revision, why)
        return StoreUnavailable(f"etcd {endpoint}: watch {self.prefix!r}: {why}")


def _event(event: Any) -> WatchEvent:
    kv = event.kv
    kind = "put" if event.type == _PUT else "delete"
    return WatchEvent(kind, kv.key.decode(errors="replace"), bytes(kv.value), int(kv.mod_revision))
