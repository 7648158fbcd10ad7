"""Small helpers the fixtures and tests share: free ports and polling with a deadline."""

from __future__ import annotations

import os
import random
import socket
import threading
import time
from pathlib import Path
from typing import Callable, TypeVar

T = TypeVar("T")

EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
LOWEST_PORT = 10000  # below: ports of well-known and registered services


def listen_ports(ephemeral: tuple[int, int]) -> range:
    """The loopback ports to hand out: the larger gap beside the kernel's ephemeral range.

    A port the kernel picks for bind(0) comes from the range it also takes outgoing connections'
    source ports from, so between picking it and the server binding it, any client (etcd members
    dialling each other, a gRPC channel) may take it: "bind: address already in use", seen in CI.
    A port outside that range is never anyone's source port. Empty when there is no such gap."""
    low, high = ephemeral
    below, above = range(LOWEST_PORT, low), range(max(high + 1, LOWEST_PORT), 65536)
    gap = max(below, above, key=len)
    return gap if len(gap) >= 1000 else range(0)


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = map(int, EPHEMERAL_RANGE.read_text().split())
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default
    return low, high


def worker_slice(ports: range, worker: str, workers: str) -> range:
    """This pytest-xdist worker's own part of `ports` (`gw3` of 4 takes the last quarter), so two
    workers never hand out the same port; the whole of it outside xdist."""
    try:
        index, count = int(worker.removeprefix("gw")), int(workers)
    except ValueError:
        return ports
    if not 0 <= index < count:
        return ports
    size = len(ports) // count
    return ports[index * size:(index + 1) * size]


class PortAllocator:
    """Hands out each port of `ports` once per round, from a random start (two test runs on one
    machine rarely walk the same ports), skipping any a socket is bound to now."""

    def __init__(self, ports: range) -> None:
        self._ports = ports
        self._next = random.randrange(len(ports)) if ports else 0
        self._lock = threading.Lock()

    def take(self, count: int = 1) -> int:
        """The first of `count` consecutive free ports; the cursor moves past all of them."""
        if not self._ports:
            return _kernel_block(count)
        with self._lock:
            for _ in range(len(self._ports)):
                first = self._next
                if first + count > len(self._ports):
                    first = 0
                self._next = (first + count) % len(self._ports)
                block = self._ports[first:first + count]
                if all(is_free(port) for port in block):
                    return block[0]
        raise RuntimeError(f"no {count} free consecutive ports in {self._ports.start}-{self._ports.stop - 1}")


def is_free(port: int) -> bool:
    """Whether no socket is bound to `port` on 127.0.0.1 (without SO_REUSEADDR, so a connection
    still in TIME_WAIT there counts as taken too)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _kernel_block(count: int) -> int:
    """The fallback where every port is ephemeral: the kernel's pick, racy as `listen_ports` says."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            first = int(sock.getsockname()[1])
        if first + count <= 65536 and all(is_free(port) for port in range(first + 1, first + count)):
            return first
    raise RuntimeError(f"no {count} free consecutive ports")


_ALLOCATOR = PortAllocator(worker_slice(listen_ports(_ephemeral_range()),
                                        os.environ.get("PYTEST_XDIST_WORKER", ""),
                                        os.environ.get("PYTEST_XDIST_WORKER_COUNT", "")))


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing is bound to now and no client will take as its source
    port before a server binds it (see `listen_ports`); never the same one twice in a round."""
    return _ALLOCATOR.take()


def free_block(size: int) -> int:
    """The first of `size` consecutive free ports, for a service that takes a range."""
    return _ALLOCATOR.take(size)


def wait_until(predicate: Callable[[], T | None], timeout: float, what: str, interval: float = 0.05) -> T:
    """Poll `predicate` until it returns something truthy, which is returned; `TimeoutError`
    naming `what` at the deadline. Exceptions from `predicate` propagate."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)
