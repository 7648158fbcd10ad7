"""The pipe between `BoundedRenderer` and its render worker (issue 13): what a request carries
and how both ends frame it. Apart from `lbgen.adapters.render_worker` so that the watcher process,
which only sends and reads, imports no Jinja: the worker imports the renderer after the fork.

A request is its length (8 bytes, big-endian), then a pickle of a `Request`; an answer is a status
byte, the length of what follows (8 bytes), then the rendered text or the error line in UTF-8.
"""

from __future__ import annotations

import copyreg
import io
import os
import pickle
from collections.abc import Callable
from types import MappingProxyType
from typing import Any

import msgspec

from lbgen.core.model import Catalog, Service
from lbgen.core.settings import Target

RenderFn = Callable[[str, Catalog, Target, frozenset[str]], str]

OK, FAILED, LIMIT, BROKEN = b"0", b"1", b"2", b"3"  # answers; after LIMIT or BROKEN the parent ends the worker
HEADER = 9  # an answer: its status byte, the length of what follows (8 bytes), the text or the error line
_LENGTH = 8


class CatalogDelta(msgspec.Struct, frozen=True):
    """A catalog as the changes from the worker's previous one; `order`: the services' names in
    order, sent only when they differ from the previous catalog's."""

    revision: int
    changed: tuple[Service, ...]
    removed: tuple[str, ...]
    order: tuple[str, ...] | None


class Request(msgspec.Struct, frozen=True):
    """Render target `name`; a None field is as at the worker's previous job. `rendered`: the
    target's last text, when another worker rendered it (the live-config reader places by it)."""

    name: str
    target: Target | None = None
    source: str | None = None
    served_health: frozenset[str] | None = None
    catalog: Catalog | CatalogDelta | None = None
    rendered: str | None = None


def answer(fd: int, status: bytes, text: str) -> None:
    """The worker's answer: the status byte, the text's length, the text (UTF-8, lone surrogates kept)."""
    data = text.encode("utf-8", "surrogatepass")
    write_all(fd, status + len(data).to_bytes(_LENGTH, "big"))
    write_all(fd, data)


def read_request(fd: int) -> Request | None:
    """The next request, or None when the parent closed the pipe (it ended, or ends this worker)."""
    header = _read_exactly(fd, _LENGTH)
    if len(header) < _LENGTH:
        return None
    size = int.from_bytes(header, "big")
    data = _read_exactly(fd, size)
    return pickle.loads(data) if len(data) == size else None


def _read_exactly(fd: int, size: int) -> bytes:
    chunks, left = [], size
    while left:
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def encode_request(request: Request) -> bytes:
    """The request as the worker reads it: its length, then the pickle (settings and specs hold
    read-only mappings, which pickle as the mappings they show)."""
    buffer = io.BytesIO()
    pickler = pickle.Pickler(buffer, protocol=pickle.HIGHEST_PROTOCOL)
    pickler.dispatch_table = _DISPATCH
    pickler.dump(request)
    data = buffer.getvalue()
    return len(data).to_bytes(_LENGTH, "big") + data


def _mapping(proxy: MappingProxyType[Any, Any]) -> tuple[Callable[[dict[Any, Any]], Any], tuple[dict[Any, Any]]]:
    return read_only, (dict(proxy),)


def read_only(mapping: dict[Any, Any]) -> MappingProxyType[Any, Any]:
    """A pickled read-only mapping, read back."""
    return MappingProxyType(mapping)


_DISPATCH = {**copyreg.dispatch_table, MappingProxyType: _mapping}


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
