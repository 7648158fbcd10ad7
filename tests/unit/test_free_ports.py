"""The test suite's port allocator: ports no client takes as a source port, never handed out twice."""

from __future__ import annotations

import socket

import pytest

from tests.support.util import PortAllocator, is_free, listen_ports, worker_slice


def test_ports_lie_outside_the_kernels_ephemeral_range() -> None:
    assert listen_ports((32768, 60999)) == range(10000, 32768)
    assert listen_ports((1024, 50000)) == range(50001, 65536)
    assert listen_ports((1024, 65000)) == range(0)  # no gap worth the name: the kernel picks


@pytest.mark.parametrize(("worker", "count", "expected"), [
    ("gw0", "2", range(10000, 10050)), ("gw1", "2", range(10050, 10100)),
    ("", "", range(10000, 10100)), ("master", "2", range(10000, 10100)), ("gw5", "2", range(10000, 10100)),
])
def test_each_xdist_worker_has_its_own_slice(worker: str, count: str, expected: range) -> None:
    assert worker_slice(range(10000, 10100), worker, count) == expected


def test_a_round_hands_out_each_free_port_once_and_skips_a_bound_one() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        held = holder.getsockname()[1]
        ports = range(held - 3, held + 4)
        free = [port for port in ports if is_free(port)]
        allocator = PortAllocator(ports)
        given = [allocator.take() for _ in free]
    assert held not in free
    assert sorted(given) == free


def test_a_block_is_consecutive_and_the_next_port_follows_it() -> None:
    allocator = PortAllocator(range(20000, 20010))
    first = allocator.take(4)
    assert all(is_free(p) for p in range(first, first + 4))
    assert allocator.take() not in range(first, first + 4)
