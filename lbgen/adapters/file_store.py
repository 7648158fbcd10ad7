"""The embedded registry: a YAML file, served through the same `Store` port as etcd.

    services:
      web:
        spec: {listen: 8080, mode: http}
        endpoints:
          host-a.web.1: {address: 127.0.0.1, port: 18081, weight: 1, health: healthy}

maps to the etcd keys `{prefix}/services/web/spec` and `{prefix}/services/web/endpoints/host-a.web.1`
with JSON values, so the same schema validation applies downstream. A `MemoryStore` holds the
keys; every (re)load of the file becomes one change in it, so watches see the diff as events.

The file is watched with watchdog (its directory, so editors that replace the file are seen too).
A file that does not parse, or does not have this shape, is refused with a one-line error naming
file and line: the previous content stays (at start-up it is a `ConfigError`). `put`/`delete`
rewrite the file atomically (comments are not kept). Leases are accepted but keys never expire and
watcher status keys (`{prefix}/lb/...`) stay in memory: the file registry is for a single node.
"""

from __future__ import annotations

import copy
import itertools
import json
import logging
import os
import threading
from pathlib import Path
from typing import Any, Iterator, Sequence

import yaml

from lbgen.adapters.file_watch import FileWatch
from lbgen.adapters.files import write_atomic
from lbgen.adapters.memory_store import MemoryStore, MemoryWatch
from lbgen.adapters.yaml_file import REGISTRY_LIMITS, parse_yaml
from lbgen.core.bounded import load_json
from lbgen.core.schema import NAME_RE, KeyRef, endpoint_key, normalize_prefix, parse_key, services_prefix, spec_key
from lbgen.errors import ConfigError, InvalidValue, LeaseLost, StoreError
from lbgen.core.values import KeyValue, Snapshot

log = logging.getLogger(__name__)

DEBOUNCE_SECONDS = 0.1  # an editor's write is several events: read the file once they stop


def parse_registry_file(text: str, where: str) -> dict[str, Any]:
    """The YAML document, checked for shape; `ConfigError` naming `where` and the line."""
    document = parse_yaml(text, where, REGISTRY_LIMITS)
    document = {} if document is None else document
    if not isinstance(document, dict):
        raise ConfigError(f"{where}: expected a mapping with a 'services' key, got {type(document).__name__}")
    services = document.get("services") or {}
    if not isinstance(services, dict):
        raise ConfigError(f"{where}: services: expected a mapping of service names")
    for name, service in services.items():
        service = {} if service is None else service  # `web:` alone: a service with nothing yet
        if not isinstance(service, dict) or not set(service) <= {"spec", "endpoints"}:
            raise ConfigError(f"{where}: services.{name}: expected a mapping with 'spec' and/or 'endpoints'")
        if not isinstance(service.get("endpoints") or {}, dict):
            raise ConfigError(f"{where}: services.{name}.endpoints: expected a mapping of endpoint ids")
    return document


def registry_keys(document: dict[str, Any], prefix: str, where: str) -> dict[str, bytes]:
    """The etcd keys and JSON values of a parsed registry; names that cannot be a key segment are
    skipped and logged (other bad names are left to the catalog, which rejects them visibly)."""
    keys: dict[str, bytes] = {}
    for name, service in (document.get("services") or {}).items():
        service = service or {}
        if not _good_name(name, f"{where}: services.{name}"):
            continue
        if "spec" in service:
            keys[spec_key(prefix, name, checked=False)] = _json(service["spec"])
        for endpoint_id, value in (service.get("endpoints") or {}).items():
            if _good_name(endpoint_id, f"{where}: services.{name}.endpoints.{endpoint_id}"):
                keys[endpoint_key(prefix, name, endpoint_id, checked=False)] = _json(value)
    return keys


def _good_name(name: object, where: str) -> bool:
    """Whether `name` can be one key segment. A bad name that can (`wéb`, `a;b`) becomes a key the
    catalog rejects, so `registry ls` and `status` list it; only what cannot be a key is skipped."""
    if isinstance(name, str) and name and "/" not in name:
        return True
    log.error("%s: skipped, the name must match %s", where, NAME_RE.pattern)
    return False


# YAML may hold dates and the like: they become strings, then face the schema like any value.
# One encoder for every value (json.dumps with options builds one per call). Not msgspec, though
# ~4 ms faster at 2,000 endpoints: it writes a YAML timestamp, binary, a `true` key otherwise.
_ENCODE = json.JSONEncoder(default=str, separators=(",", ":")).encode


def _json(value: Any) -> bytes:
    return _ENCODE(value).encode()


class FileStore:
    """`Store` on a YAML registry file (see the module docstring)."""

    def __init__(self, path: str | os.PathLike[str], prefix: str = "/lbgen", must_exist: bool = True) -> None:
        self.path = Path(path).absolute()
        self.prefix = normalize_prefix(prefix)
        self._memory = MemoryStore(name=f"file {self.path}")
        self._lock = threading.RLock()
        self._document: dict[str, Any] = {}
        self._loaded: bytes | None = None
        self._observer: FileWatch | None = None
        self._timer: threading.Timer | None = None
        self._lease_ttls: dict[int, int] = {}
        self._lease_ids = itertools.count(1)
        if not self.path.exists() and not must_exist:
            log.info("registry file %s does not exist yet: starting empty", self.path)
            return
        self._reload(strict=True)

    # --- loading ----------------------------------------------------------------------------------

    def _reload(self, strict: bool = False, edited: bool = False) -> None:
        """Read the file; when its content changed and is valid, apply the diff as one change.
        An invalid file raises `ConfigError` when `strict`, else is logged and ignored. Changes
        are logged at INFO when `edited` (seen by the file watch), else at DEBUG."""
        with self._lock:
            try:
                raw = self.path.read_bytes()
            except OSError as e:
                self._refuse(ConfigError(f"registry file {self.path}: {e.strerror}"), strict, e)
                return
            if raw == self._loaded:
                return
            try:
                document = parse_registry_file(raw.decode(errors="replace"), str(self.path))
            except ConfigError as e:
                self._refuse(e, strict, e)
                return
            self._apply(document, registry_keys(document, self.prefix, str(self.path)), edited)
            self._loaded = raw

    def _refuse(self, error: ConfigError, strict: bool, cause: BaseException) -> None:
        if strict:
            raise error from cause
        log.error("%s; keeping the previous content (revision %s)", error, self._memory.revision)

    def _apply(self, document: dict[str, Any], keys: dict[str, bytes], edited: bool) -> None:
        current = {kv.key: kv.value for kv in self._memory.snapshot(services_prefix(self.prefix)).items}
        puts = {k: v for k, v in keys.items() if current.get(k) != v}
        deletes = [k for k in current if k not in keys]
        revision = self._memory.apply(puts, deletes)
        self._document = document
        if puts or deletes:
            log.log(logging.INFO if edited else logging.DEBUG, "registry file %s: %d put, %d deleted (revision %s)",
                    self.path, len(puts), len(deletes), revision)

    def _on_paths(self, touched: set[str]) -> None:
        if str(self.path) in touched:
            self._on_file_event()

    def _on_file_event(self) -> None:
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = threading.Timer(DEBOUNCE_SECONDS, self._reload, kwargs={"edited": True})
            self._timer.daemon = True
            self._timer.start()

    def _start_observer(self) -> None:
        if self._observer is not None:
            return
        self._observer = FileWatch([str(self.path.parent)], self._on_paths, name=f"registry-file {self.path.name}")
        self._reload()  # catch changes made before the observer was watching

    # --- Store --------------------------------------------------------------------------------------

    def snapshot(self, prefix: str) -> Snapshot:
        return self._memory.snapshot(prefix)

    def snapshot_pages(self, prefix: str) -> Iterator[Snapshot]:
        return self._memory.snapshot_pages(prefix)

    def get(self, key: str) -> KeyValue | None:
        return self._memory.get(key)

    def get_many(self, keys: Sequence[str]) -> list[KeyValue]:
        return self._memory.get_many(keys)

    def count(self, prefix: str, revision: int = 0) -> int:
        return self._memory.count(prefix, revision)

    def lease_keys(self, lease: int) -> None:
        """None: leases hold no keys here (they never expire, and the file does not record them)."""
        return None

    def watch(self, prefix: str, start_revision: int) -> MemoryWatch:
        with self._lock:
            self._start_observer()
            return self._memory.watch(prefix, start_revision)

    def put(self, key: str, value: bytes, lease: int = 0) -> int:
        """Write `value` (a JSON object) and rewrite the file; `lease` is accepted, never expires."""
        if lease and lease not in self._lease_ttls:
            raise LeaseLost(f"registry file {self.path}: lease {lease:x} not found")
        ref = self._ref(key)
        if not ref.in_catalog:
            return self._memory.put(key, value)
        try:
            parsed = load_json(value)
        except InvalidValue as e:
            raise StoreError(f"registry file {self.path}: {key}: {e}") from e
        with self._lock:
            document = self._current_document()
            entry = document.setdefault("services", {}).setdefault(ref.service, {})
            if ref.kind == "spec":
                entry["spec"] = parsed
            else:
                entry.setdefault("endpoints", {})[ref.endpoint_id] = parsed
            return self._save(document)

    def delete(self, key: str) -> bool:
        ref = self._ref(key)
        if not ref.in_catalog:
            return self._memory.delete(key)
        with self._lock:
            document = self._current_document()
            if self._memory.get(key) is None:
                return False
            entry = document["services"][ref.service]
            if ref.kind == "spec":
                del entry["spec"]
            else:
                del entry["endpoints"][ref.endpoint_id]
            if not entry.get("spec") and not entry.get("endpoints"):
                del document["services"][ref.service]
            self._save(document)
            return True

    def _ref(self, key: str) -> KeyRef:
        ref = parse_key(self.prefix, key)
        if ref is None:
            raise StoreError(
                f"registry file {self.path}: {key}: only {self.prefix}/services/<name>/spec, "
                f"{self.prefix}/services/<name>/endpoints/<id> and {self.prefix}/lb/<node> can be stored"
            )
        return ref

    def _current_document(self) -> dict[str, Any]:
        """A copy of the file's document to edit; refuses while the file on disk is invalid, so a
        write never overwrites an edit in progress."""
        if self.path.exists():
            self._reload(strict=True)
        document = copy.deepcopy(self._document)
        document["services"] = {name: entry or {} for name, entry in (document.get("services") or {}).items()}
        return document

    def _save(self, document: dict[str, Any]) -> int:
        """Write `document` atomically (`lbgen.adapters.files.write_atomic`, directory fsync included), then load it."""
        text = yaml.safe_dump(document, sort_keys=False, default_flow_style=None, allow_unicode=True)
        try:
            write_atomic(self.path, text.encode())
        except OSError as e:
            raise StoreError(f"registry file {self.path}: write failed: {e.strerror}") from e
        self._reload(strict=True)
        return self._memory.revision

    def grant_lease(self, ttl: int) -> int:
        lease = next(self._lease_ids)
        self._lease_ttls[lease] = ttl
        return lease

    def keep_alive(self, lease: int) -> int:
        if lease not in self._lease_ttls:
            raise LeaseLost(f"registry file {self.path}: lease {lease:x} was revoked")
        return self._lease_ttls[lease]

    def revoke_lease(self, lease: int) -> None:
        self._lease_ttls.pop(lease, None)

    def close(self) -> None:
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
            observer, self._observer = self._observer, None
        if observer is not None:
            observer.stop()
        self._memory.close()
