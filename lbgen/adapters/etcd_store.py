"""The etcd v3 registry: `lbgen.ports.Store` on pyetcd (PyPI `etcd-sdk-python`, the `etcd3` API).

The connection (channel options, TLS and auth, failover between members) is `etcd_connection`'s;
this module is the registry on top of it (docs/registry.md, "Design choices"):

- 100k keys exceed gRPC's 4 MB message limit: the limit is raised (`etcd_connection`) and
  snapshots are paged, every page pinned to the first page's revision so the snapshot is consistent.
- Watches run on their own gRPC stream and ask etcd for a progress report when idle: a watch whose
  etcd died or froze raises `StoreUnavailable` within seconds instead of hanging ("feign death").
- No background lease keep-alive: `keep_alive()` refreshes once, the services' lease keeper loops it.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Iterator, Sequence

# etcd_connection first: it sets GRPC_ENABLE_FORK_SUPPORT before grpc is imported.
from lbgen.adapters.etcd_connection import EtcdConfig, EtcdConnection, status_code
from lbgen.adapters.etcd_watch import EtcdWatch
from lbgen.core.values import KeyValue, Snapshot
from lbgen.errors import Compacted, LeaseLost, StoreError

import grpc
from pyetcd import etcdrpc, utils

__all__ = ["EtcdConfig", "EtcdStore"]  # EtcdConfig's home is etcd_connection; callers build both here

log = logging.getLogger(__name__)

# etcd 3.4 walks the rest of the range to count it on every page, so fewer pages cost it less: a
# 110,000-key snapshot took 290-340 ms of etcd CPU in 5,000-key pages and 170-180 ms in 20,000-key
# ones, ~600 ms wall either way, client CPU unchanged (one etcd on 127.0.0.1, load 2.2, 2026-12-03).
# A 20,000-key page of ~150-byte values is ~3 MB, well inside the client's receive limit.
PAGE_SIZE = 20_000
MAX_TXN_OPS = 128  # etcd's default --max-txn-ops


class EtcdStore:
    """`Store` on an etcd v3 cluster. No I/O happens before the first call: a daemon can start while
    etcd is down, and every call raises `StoreUnavailable` until it is back."""

    def __init__(self, config: EtcdConfig, start: int | None = None, connection: EtcdConnection | None = None) -> None:
        """`start`: where the failover order begins in `config.endpoints` (default: at random);
        `connection`: one made by the caller (a bench's simulated outage), else a new one."""
        self.config = config
        self.connection = connection or EtcdConnection(config, start)
        self._client = self.connection.client
        self.name = self.connection.name

    # --- Store ------------------------------------------------------------------------------------

    def snapshot(self, prefix: str) -> Snapshot:
        """Every key under `prefix` at one revision, read in pages of `PAGE_SIZE` keys."""
        for _ in range(3):
            try:
                pages = list(self.snapshot_pages(prefix))
                items = tuple(kv for page in pages for kv in page.items)
                return Snapshot(pages[0].revision, items, pages[0].cluster_id)
            except Compacted:
                log.info("etcd %s: snapshot of %r outran a compaction, starting again", self.name, prefix)
        raise StoreError(f"etcd {self.name}: snapshot {prefix!r}: compacted three times while paging")

    def snapshot_pages(self, prefix: str) -> Iterator[Snapshot]:
        """The snapshot in pages of `PAGE_SIZE` keys, each at the first page's revision. The next page
        is requested as soon as a page arrives, so etcd serves it while the caller decodes this one."""
        start, end = prefix.encode(), utils.prefix_range_end(prefix.encode())
        response = self._page(prefix, start, end, 0)
        revision, cluster_id = int(response.header.revision), f"{response.header.cluster_id:x}"
        with ThreadPoolExecutor(1, thread_name_prefix="etcd-next-page") as pool:
            while True:
                following = (pool.submit(self._page, prefix, response.kvs[-1].key + b"\0", end, revision)
                             if response.more and response.kvs else None)
                yield Snapshot(revision, tuple([_key_value(kv) for kv in response.kvs]), cluster_id)
                if following is None:
                    return
                response = following.result()

    def _page(self, prefix: str, start: bytes, end: bytes, revision: int) -> Any:
        """One range response of at most `PAGE_SIZE` keys from `start`, at `revision` (0: the current one)."""
        try:
            return self.connection.call(
                f"snapshot {prefix!r}",
                lambda: self._client.get_range_response(start, end, limit=PAGE_SIZE, revision=revision or None),
            )
        except StoreError as e:
            if revision and status_code(e.__cause__ or e) == grpc.StatusCode.OUT_OF_RANGE:
                raise Compacted(revision, 0) from e
            raise

    def get(self, key: str) -> KeyValue | None:
        response = self.connection.call(f"get {key!r}", lambda: self._client.get_response(key))
        return _key_value(response.kvs[0]) if response.kvs else None

    def count(self, prefix: str, revision: int = 0) -> int:
        """How many keys were under `prefix` at `revision` (0: now): a count-only range, so a tiny answer."""
        start = prefix.encode()
        try:
            response = self.connection.call(f"count {prefix!r} at revision {revision}", lambda: (
                self._client.get_range_response(start, utils.prefix_range_end(start), count_only=True,
                                                 revision=revision or None)))
        except StoreError as e:
            if revision and status_code(e.__cause__ or e) == grpc.StatusCode.OUT_OF_RANGE:
                raise Compacted(revision, 0) from e
            raise
        return int(response.count)

    def get_many(self, keys: Sequence[str]) -> list[KeyValue]:
        """Those of `keys` that exist, read by transactions of at most `MAX_TXN_OPS` ranges each."""
        found: list[KeyValue] = []
        for start in range(0, len(keys), MAX_TXN_OPS):
            chunk = keys[start : start + MAX_TXN_OPS]
            request = etcdrpc.TxnRequest(success=[
                etcdrpc.RequestOp(request_range=etcdrpc.RangeRequest(key=key.encode())) for key in chunk])
            response = self.connection.call(
                f"get {len(chunk)} keys from {chunk[0]!r}",
                lambda: self._client.kvstub.Txn(request, self.config.timeout, metadata=self._client.metadata),
            )
            found += [_key_value(kv) for op in response.responses for kv in op.response_range.kvs]
        return found

    def lease_keys(self, lease: int) -> tuple[str, ...]:
        """The keys attached to `lease`, without their values; () when the lease is gone."""
        response = self.connection.call(f"list the keys of lease {lease:x}", lambda: self._client.get_lease_info(lease))
        if int(response.TTL) < 0:
            return ()
        return tuple(sorted(key.decode(errors="replace") for key in response.keys))

    def watch(self, prefix: str, start_revision: int) -> EtcdWatch:
        """Events under `prefix` from `start_revision`; no I/O until iterated (errors surface there).

        Pass the snapshot's revision + 1: the stream opens when iteration starts, so 0 ("from now")
        would miss changes made in between."""
        return EtcdWatch(self.connection, prefix, start_revision, self.config.probe_interval, self.config.probe_timeout)

    def put(self, key: str, value: bytes, lease: int = 0) -> int:
        response = self.connection.call(f"put {key!r}", lambda: self._client.put(key, value, lease=lease or None))
        return int(response.header.revision)

    def delete(self, key: str) -> bool:
        response = self.connection.call(f"delete {key!r}", lambda: self._client.delete(key, return_response=True))
        return int(response.deleted) > 0

    def grant_lease(self, ttl: int) -> int:
        return int(self.connection.call(f"grant a {ttl}s lease", lambda: self._client.lease(ttl)).id)

    def keep_alive(self, lease: int) -> int:
        responses = self.connection.call(f"keep lease {lease:x} alive", lambda: list(self._client.refresh_lease(lease)))
        ttl = int(responses[0].TTL) if responses else 0
        if ttl <= 0:
            raise LeaseLost(f"etcd {self.name}: lease {lease:x} has expired or was revoked")
        return ttl

    def revoke_lease(self, lease: int) -> None:
        try:
            self.connection.call(f"revoke lease {lease:x}", lambda: self._client.revoke_lease(lease))
        except LeaseLost:
            log.debug("etcd %s: lease %x was already gone", self.name, lease)

    def compact(self, revision: int) -> None:
        """Drop history before `revision` (operators and tests: etcd does this by itself when told to)."""
        self.connection.call(f"compact to {revision}", lambda: self._client.compact(revision, physical=True))

    def close(self) -> None:
        self.connection.close()


def _key_value(kv: Any) -> KeyValue:
    return KeyValue(kv.key.decode(errors="replace"), bytes(kv.value), int(kv.mod_revision), int(kv.lease))
