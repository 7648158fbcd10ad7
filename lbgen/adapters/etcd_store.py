"""The etcd v3 registry: `lbgen.ports.Store` on pyetcd (PyPI `etcd-sdk-python`, the `etcd3` API).

pyetcd is fast and current, but left alone it turns a short etcd outage into a long one. What this
adapter does about each of its caveats (docs/registry.md, "Design choices"):

- After a failed call pyetcd refuses an endpoint for `time_retry` (300 s by default): we lower it
  to `retry_after` and, when every endpoint is marked failed, try them again anyway: the caller's
  backoff (`lbgen.core.backoff`, capped at a few seconds) decides when, not the library.
- gRPC's reconnect backoff grows to 120 s (confd took 91 s to notice etcd was back): capped at 1 s.
- gRPC's `min_reconnect_backoff_ms` is really the *minimum connect timeout* (grpc
  doc/connection-backoff.md, MIN_CONNECT_TIMEOUT): set to 100 ms it failed every connect whose
  HTTP/2 SETTINGS took longer (etcd 50 ms away, issue 10.7). It is the call timeout (`--etcd-timeout`)
  instead, so one deadline bounds both the connect and the call.
- A list of endpoints is one cluster: a call that finds its member down tries each other member
  in turn, whatever earlier calls found about them. pyetcd starts on a random member but fails
  over to the first live one in list order: each store rotates its list by a random offset, so a
  fleet of watchers whose member restarts spreads its re-snapshots over the others (issue 13).
- 100k keys exceed gRPC's 4 MB message limit: the limit is raised and snapshots are paged, every
  page pinned to the first page's revision so the snapshot is consistent.
- Watches run on their own gRPC stream and ask etcd for a progress report when idle: a watch whose
  etcd died or froze raises `StoreUnavailable` within seconds instead of hanging ("feign death").
- No background lease keep-alive: `keep_alive()` refreshes once, the services loop it.
- Auth tokens die with an etcd restart: on "invalid auth token" we authenticate again and retry.
"""

from __future__ import annotations

import logging
import os
import random
import threading
from dataclasses import dataclass
from typing import Any, Callable, Sequence, TypeVar

# lbgen forks without exec only for bounded renders (adapters/bounded_render.py), whose children
# never use gRPC: its fork support would restart gRPC's threads in every such child for nothing.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

import grpc  # noqa: E402
import pyetcd  # noqa: E402
from pyetcd import etcdrpc, exceptions as etcd_exceptions, utils  # noqa: E402

from lbgen.adapters.etcd_watch import EtcdWatch, WatchStream
from lbgen.errors import Compacted, ConfigError, LeaseLost, StoreError, StoreUnavailable
from lbgen.core.values import KeyValue, Snapshot

log = logging.getLogger(__name__)
T = TypeVar("T")

PAGE_SIZE = 5_000
MAX_TXN_OPS = 128  # etcd's default --max-txn-ops
MAX_MESSAGE_BYTES = 256 << 20
GRPC_OPTIONS = (
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1_000),
    # etcd refuses pings more often than every 5 s (--grpc-keepalive-min-time).
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 3_000),
)
# Codes after which the endpoint is considered down (pyetcd marks it failed on the same codes).
UNAVAILABLE_CODES = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.INTERNAL}
)
_UNAVAILABLE_EXCEPTIONS = (
    etcd_exceptions.ConnectionFailedError,
    etcd_exceptions.ConnectionTimeoutError,
    etcd_exceptions.NoServerAvailableError,
    etcd_exceptions.InternalServerError,
)


@dataclass(frozen=True)
class EtcdConfig:
    """How to reach an etcd cluster. `endpoints` are `(host, port)`; several = one cluster."""

    endpoints: tuple[tuple[str, int], ...]
    tls: bool = False
    ca: str | None = None
    cert: str | None = None
    key: str | None = None
    user: str | None = None
    password: str | None = None
    timeout: float = 5.0
    retry_after: float = 1.0
    probe_interval: float = 2.0
    probe_timeout: float = 2.0


def grpc_options(config: EtcdConfig) -> list[tuple[str, int]]:
    """The channel options: `GRPC_OPTIONS` plus a connect timeout equal to the call timeout.

    gRPC reads `min_reconnect_backoff_ms` as the least time a connect attempt (TCP + TLS + HTTP/2
    SETTINGS) is given; left at 100 ms, etcd a little far away was unreachable (issue 10.7)."""
    return [*GRPC_OPTIONS, ("grpc.min_reconnect_backoff_ms", max(1, round(config.timeout * 1000)))]


def _read(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise ConfigError(f"{what} {path}: {e.strerror}") from e


def _credentials(config: EtcdConfig) -> grpc.ChannelCredentials | None:
    if not (config.tls or config.ca or config.cert):
        return None
    if bool(config.cert) != bool(config.key):
        raise ConfigError("etcd TLS: --cert and --key go together")
    return grpc.ssl_channel_credentials(
        root_certificates=_read(config.ca, "etcd CA") if config.ca else None,
        private_key=_read(config.key, "etcd client key") if config.key else None,
        certificate_chain=_read(config.cert, "etcd client certificate") if config.cert else None,
    )


def rpc_error(error: BaseException) -> grpc.RpcError | None:
    """The gRPC error behind `error` (pyetcd re-raises its own exception inside the handler)."""
    for candidate in (error, error.__cause__, error.__context__):
        if isinstance(candidate, grpc.RpcError):
            return candidate
    return None


def describe(error: BaseException) -> str:
    """One line saying what went wrong, from the gRPC status when there is one."""
    rpc = rpc_error(error)
    if rpc is not None and hasattr(rpc, "code"):
        details = (rpc.details() or "").splitlines()
        return f"{rpc.code().name.lower()}: {details[0] if details else 'no details'}"
    return str(error) or type(error).__name__


def is_unavailable(error: BaseException) -> bool:
    """Whether `error` means the endpoint cannot be reached (retry elsewhere or later)."""
    rpc = rpc_error(error)
    if rpc is not None and hasattr(rpc, "code"):
        return rpc.code() in UNAVAILABLE_CODES
    return isinstance(error, _UNAVAILABLE_EXCEPTIONS)


def _code(error: BaseException) -> grpc.StatusCode | None:
    rpc = rpc_error(error)
    return rpc.code() if rpc is not None and hasattr(rpc, "code") else None


def rotated(items: Sequence[T], start: int | None) -> list[T]:
    """`items` from index `start` (default: a random one) round to the end."""
    offset = random.randrange(len(items)) if start is None else start % len(items)
    return [*items[offset:], *items[:offset]]


class EtcdStore:
    """`Store` on an etcd v3 cluster. No I/O happens before the first call: a daemon can start while
    etcd is down, and every call raises `StoreUnavailable` until it is back."""

    def __init__(self, config: EtcdConfig, start: int | None = None) -> None:
        """`start`: where the failover order begins in `config.endpoints` (default: at random)."""
        if not config.endpoints:
            raise ConfigError("etcd: no endpoints")
        if bool(config.user) != bool(config.password):
            raise ConfigError("etcd auth: a user needs a password (--password or LBGEN_ETCD_PASSWORD)")
        self.config = config
        credentials = _credentials(config)
        endpoints = [
            pyetcd.Endpoint(host, port, secure=credentials is not None, creds=credentials,
                            time_retry=config.retry_after, opts=grpc_options(config))
            for host, port in rotated(config.endpoints, start)
        ]
        self._client = pyetcd.MultiEndpointEtcd3Client(endpoints=endpoints, timeout=config.timeout, failover=True)
        self._auth_lock = threading.Lock()
        self._token: str | None = None
        self.name = ",".join(f"{host}:{port}" for host, port in config.endpoints)
        if config.user and credentials is None:
            log.warning("etcd %s: password auth without TLS sends the password in clear text", self.name)

    # --- error handling, failover, auth -------------------------------------------------------

    def _call(self, op: str, fn: Callable[[], T]) -> T:
        """Run `fn` on the current endpoint; when it is unreachable, on each other endpoint in turn;
        on a rejected token, authenticate again. Every failure becomes one of our errors, naming
        the endpoint and the operation."""
        tried: set[str] = set()
        reauthenticated = False
        self._revive_if_all_failed()
        while True:
            try:
                self._ensure_token()
                return fn()
            except (grpc.RpcError, etcd_exceptions.Etcd3Exception) as e:
                current = self._client.endpoint_in_use  # the one the call went to
                if _code(e) == grpc.StatusCode.UNAUTHENTICATED and self.config.user and not reauthenticated:
                    log.info("etcd %s: auth token rejected (%s), authenticating again", current.netloc, describe(e))
                    self._token, reauthenticated = None, True
                    continue
                tried.add(current.netloc)
                if is_unavailable(e) and self._fail_over(current, tried):
                    log.warning("etcd %s: %s: %s; trying the next endpoint", current.netloc, op, describe(e))
                    continue
                raise self._error(current.netloc, op, e) from e

    def _fail_over(self, current: pyetcd.Endpoint, tried: set[str]) -> bool:
        """Mark `current` failed; make the endpoints not yet tried by this call eligible (whatever
        an earlier call found), so the next attempt goes to one of them. False when none is left."""
        current.fail()  # pyetcd does it too, but not for our own raw calls (auth)
        untried = [ep for label, ep in self._client.endpoints.items() if label not in tried]
        for endpoint in untried:
            endpoint.last_failed = 0
        return bool(untried)

    def _error(self, endpoint: str, op: str, error: BaseException) -> StoreError:
        message = f"etcd {endpoint}: {op}: {describe(error)}"
        if is_unavailable(error):
            return StoreUnavailable(message)
        if _code(error) == grpc.StatusCode.NOT_FOUND and "lease" in describe(error):
            return LeaseLost(message)
        return StoreError(message)

    def _has_live_endpoint(self) -> bool:
        return any(not ep.is_failed() for ep in self._client.endpoints.values())

    def _revive_if_all_failed(self) -> None:
        # pyetcd would refuse every call until `time_retry` passes; the caller's backoff decides.
        if not self._has_live_endpoint():
            for endpoint in self._client.endpoints.values():
                endpoint.last_failed = 0

    def _ensure_token(self) -> None:
        if not self.config.user or self._token is not None:
            return
        with self._auth_lock:
            if self._token is None:
                request = etcdrpc.AuthenticateRequest(name=self.config.user, password=self.config.password)
                response = self._client.authstub.Authenticate(request, self.config.timeout)
                self._token = response.token
                # Metadata only (not call credentials): works on plain and TLS channels alike.
                self._client.metadata = (("token", self._token),)

    # --- Store ------------------------------------------------------------------------------------

    def snapshot(self, prefix: str) -> Snapshot:
        """Every key under `prefix` at one revision, read in pages of `PAGE_SIZE` keys."""
        for _ in range(3):
            try:
                return self._snapshot_pages(prefix)
            except Compacted:
                log.info("etcd %s: snapshot of %r outran a compaction, starting again", self.name, prefix)
        raise StoreError(f"etcd {self.name}: snapshot {prefix!r}: compacted three times while paging")

    def _snapshot_pages(self, prefix: str) -> Snapshot:
        start = prefix.encode()
        end = utils.prefix_range_end(start)
        revision, cluster_id = 0, ""
        items: list[KeyValue] = []
        while True:
            try:
                response = self._call(
                    f"snapshot {prefix!r}",
                    lambda: self._client.get_range_response(start, end, limit=PAGE_SIZE, revision=revision or None),
                )
            except StoreError as e:
                if revision and _code(e.__cause__ or e) == grpc.StatusCode.OUT_OF_RANGE:
                    raise Compacted(revision, 0) from e
                raise
            if not revision:
                revision, cluster_id = int(response.header.revision), f"{response.header.cluster_id:x}"
            items.extend(_key_value(kv) for kv in response.kvs)
            if not response.more or not response.kvs:
                return Snapshot(revision, tuple(items), cluster_id)
            start = response.kvs[-1].key + b"\0"

    def get(self, key: str) -> KeyValue | None:
        response = self._call(f"get {key!r}", lambda: self._client.get_response(key))
        return _key_value(response.kvs[0]) if response.kvs else None

    def count(self, prefix: str, revision: int = 0) -> int:
        """How many keys were under `prefix` at `revision` (0: now): a count-only range, so a tiny answer."""
        start = prefix.encode()
        try:
            response = self._call(f"count {prefix!r} at revision {revision}", lambda: self._client.get_range_response(
                start, utils.prefix_range_end(start), count_only=True, revision=revision or None))
        except StoreError as e:
            if revision and _code(e.__cause__ or e) == grpc.StatusCode.OUT_OF_RANGE:
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
            response = self._call(
                f"get {len(chunk)} keys from {chunk[0]!r}",
                lambda: self._client.kvstub.Txn(request, self.config.timeout, metadata=self._client.metadata),
            )
            found += [_key_value(kv) for op in response.responses for kv in op.response_range.kvs]
        return found

    def lease_keys(self, lease: int) -> tuple[str, ...]:
        """The keys attached to `lease`, without their values; () when the lease is gone."""
        response = self._call(f"list the keys of lease {lease:x}", lambda: self._client.get_lease_info(lease))
        if int(response.TTL) < 0:
            return ()
        return tuple(sorted(key.decode(errors="replace") for key in response.keys))

    def watch(self, prefix: str, start_revision: int) -> EtcdWatch:
        """Events under `prefix` from `start_revision`; no I/O until iterated (errors surface there).

        Pass the snapshot's revision + 1: the stream opens when iteration starts, so 0 ("from now")
        would miss changes made in between."""
        return EtcdWatch(self, prefix, start_revision, self.config.probe_interval, self.config.probe_timeout)

    def open_watch_stream(self, request_iterator: object) -> WatchStream:
        """A raw gRPC watch stream on the current endpoint (used by `EtcdWatch`)."""

        def open_stream() -> WatchStream:
            channel = self._client.channel
            call = etcdrpc.WatchStub(channel).Watch(request_iterator, metadata=self._client.metadata)
            return WatchStream(self._client.endpoint_in_use.netloc, call)

        return self._call("watch", open_stream)

    def stream_failed(self, endpoint: str, error: BaseException) -> str:
        """A watch stream broke: mark its endpoint failed so the next watch tries another member
        (or drop a token etcd no longer accepts). Returns the one-line reason."""
        if _code(error) == grpc.StatusCode.UNAUTHENTICATED:
            self._token = None
        elif endpoint in self._client.endpoints and is_unavailable(error):
            self._client.endpoints[endpoint].fail()
        return describe(error)

    def put(self, key: str, value: bytes, lease: int = 0) -> int:
        response = self._call(f"put {key!r}", lambda: self._client.put(key, value, lease=lease or None))
        return int(response.header.revision)

    def delete(self, key: str) -> bool:
        response = self._call(f"delete {key!r}", lambda: self._client.delete(key, return_response=True))
        return int(response.deleted) > 0

    def grant_lease(self, ttl: int) -> int:
        return int(self._call(f"grant a {ttl}s lease", lambda: self._client.lease(ttl)).id)

    def keep_alive(self, lease: int) -> int:
        responses = self._call(f"keep lease {lease:x} alive", lambda: list(self._client.refresh_lease(lease)))
        ttl = int(responses[0].TTL) if responses else 0
        if ttl <= 0:
            raise LeaseLost(f"etcd {self.name}: lease {lease:x} has expired or was revoked")
        return ttl

    def revoke_lease(self, lease: int) -> None:
        try:
            self._call(f"revoke lease {lease:x}", lambda: self._client.revoke_lease(lease))
        except LeaseLost:
            log.debug("etcd %s: lease %x was already gone", self.name, lease)

    def compact(self, revision: int) -> None:
        """Drop history before `revision` (operators and tests: etcd does this by itself when told to)."""
        self._call(f"compact to {revision}", lambda: self._client.compact(revision, physical=True))

    def close(self) -> None:
        self._client.close()


def _key_value(kv: Any) -> KeyValue:
    return KeyValue(kv.key.decode(errors="replace"), bytes(kv.value), int(kv.mod_revision), int(kv.lease))
