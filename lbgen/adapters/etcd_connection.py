"""The connection to an etcd cluster: channel options, TLS and password auth, failover between
members (issue 11: one module of its own, used by the store and its watches alike).

pyetcd is fast and current, but left alone it turns a short etcd outage into a long one. What the
connection does about each of its caveats (docs/registry.md, "Design choices"):

- After a failed call pyetcd refuses an endpoint for `time_retry` (300 s by default): we lower it
  to `retry_after` and, when every endpoint is marked failed, try them again anyway: the caller's
  backoff (`lbgen.core.backoff`, capped at a few seconds) decides when, not the library.
- gRPC's reconnect backoff grows to 120 s (confd 0.16 took 91 s to notice etcd was back, 2026-11-25): capped at 1 s.
- gRPC's `min_reconnect_backoff_ms` is really the *minimum connect timeout* (grpc
  doc/connection-backoff.md, MIN_CONNECT_TIMEOUT): set to 100 ms it failed every connect whose
  HTTP/2 SETTINGS took longer (etcd 50 ms away, issue 10.7). It is the call timeout (`--etcd-timeout`)
  instead, so one deadline bounds both the connect and the call.
- A list of endpoints is one cluster: a call that finds its member down tries each other member
  in turn, whatever earlier calls found about them. pyetcd starts on a random member but fails
  over to the first live one in list order: each connection rotates its list by a random offset,
  so a fleet of watchers whose member restarts spreads its re-snapshots over the others (issue 13).
- Auth tokens die with an etcd restart: on "invalid auth token" we authenticate again and retry.
"""

from __future__ import annotations

import logging
import os
import random
import threading
from typing import Any, Callable, Sequence, TypeVar

import msgspec

# lbgen forks without exec only for its render workers (adapters/render_worker.py), which never use
# gRPC and close every inherited descriptor: gRPC's fork support (on by default in grpcio 1.85)
# restarts its poller in the child on the closed epoll descriptor, and the worker aborts (SIGABRT;
# 9 of 20 forks in a test). Forced, not defaulted, for that reason; set before grpc is first
# imported (`etcd_store` and `etcd_watch` import grpc only after this module).
os.environ["GRPC_ENABLE_FORK_SUPPORT"] = "false"

import grpc  # noqa: E402
import pyetcd  # noqa: E402
from pyetcd import etcdrpc, exceptions as etcd_exceptions  # noqa: E402

from lbgen.errors import ConfigError, LeaseLost, StoreError, StoreUnavailable  # noqa: E402

log = logging.getLogger(__name__)
T = TypeVar("T")

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


class EtcdConfig(msgspec.Struct, frozen=True):
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


def status_code(error: BaseException) -> grpc.StatusCode | None:
    """The gRPC status code behind `error`, if any."""
    rpc = rpc_error(error)
    return rpc.code() if rpc is not None and hasattr(rpc, "code") else None


def rotated(items: Sequence[T], start: int | None) -> list[T]:
    """`items` from index `start` (default: a random one) round to the end."""
    offset = random.randrange(len(items)) if start is None else start % len(items)
    return [*items[offset:], *items[:offset]]


class WatchStream(msgspec.Struct, frozen=True):
    """An open gRPC watch call and the endpoint it runs on."""

    endpoint: str
    call: Any  # grpc's streaming call: an iterator of WatchResponse with cancel()


class EtcdConnection:
    """A pyetcd client on `config.endpoints`, with our failover and auth around every call. No I/O
    happens before the first call: a daemon can start while etcd is down."""

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
        self.client = pyetcd.MultiEndpointEtcd3Client(endpoints=endpoints, timeout=config.timeout, failover=True)
        self._auth_lock = threading.Lock()
        self._token: str | None = None
        self.name = ",".join(f"{host}:{port}" for host, port in config.endpoints)
        if config.user and credentials is None:
            log.warning("etcd %s: password auth without TLS sends the password in clear text", self.name)

    def call(self, op: str, fn: Callable[[], T]) -> T:
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
                current = self.client.endpoint_in_use  # the one the call went to
                if status_code(e) == grpc.StatusCode.UNAUTHENTICATED and self.config.user and not reauthenticated:
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
        untried = [ep for label, ep in self.client.endpoints.items() if label not in tried]
        for endpoint in untried:
            endpoint.last_failed = 0
        return bool(untried)

    def _error(self, endpoint: str, op: str, error: BaseException) -> StoreError:
        message = f"etcd {endpoint}: {op}: {describe(error)}"
        if is_unavailable(error):
            return StoreUnavailable(message)
        if status_code(error) == grpc.StatusCode.NOT_FOUND and "lease" in describe(error):
            return LeaseLost(message)
        return StoreError(message)

    def _has_live_endpoint(self) -> bool:
        return any(not ep.is_failed() for ep in self.client.endpoints.values())

    def _revive_if_all_failed(self) -> None:
        # pyetcd would refuse every call until `time_retry` passes; the caller's backoff decides.
        if not self._has_live_endpoint():
            for endpoint in self.client.endpoints.values():
                endpoint.last_failed = 0

    def _ensure_token(self) -> None:
        if not self.config.user or self._token is not None:
            return
        with self._auth_lock:
            if self._token is None:
                request = etcdrpc.AuthenticateRequest(name=self.config.user, password=self.config.password)
                response = self.client.authstub.Authenticate(request, self.config.timeout)
                self._token = response.token
                # Metadata only (not call credentials): works on plain and TLS channels alike.
                self.client.metadata = (("token", self._token),)

    def open_watch_stream(self, request_iterator: object) -> WatchStream:
        """A raw gRPC watch stream on the current endpoint (used by `EtcdWatch`)."""

        def open_stream() -> WatchStream:
            channel = self.client.channel
            call = etcdrpc.WatchStub(channel).Watch(request_iterator, metadata=self.client.metadata)
            return WatchStream(self.client.endpoint_in_use.netloc, call)

        return self.call("watch", open_stream)

    def stream_failed(self, endpoint: str, error: BaseException) -> str:
        """A watch stream broke: mark its endpoint failed so the next watch tries another member
        (or drop a token etcd no longer accepts). Returns the one-line reason."""
        if status_code(error) == grpc.StatusCode.UNAUTHENTICATED:
            self._token = None
        elif endpoint in self.client.endpoints and is_unavailable(error):
            self.client.endpoints[endpoint].fail()
        return describe(error)

    def close(self) -> None:
        self.client.close()
