"""HTTP as values (`lbgen.core.web`): listen addresses, the route table, tokens, Host checks and
server-sent-event framing, all without a socket."""

from __future__ import annotations

import pytest

from lbgen.core.web import (
    ListenAddress,
    Request,
    Response,
    bearer_token,
    dispatch,
    is_local_host,
    parse_listen_address,
    require_local_host,
    require_token,
    sse_event,
    text,
)
from lbgen.errors import UsageError

OK = Response(200, b"hello")
ROUTES = {"/": lambda request: OK}


@pytest.mark.parametrize(("text_", "expected"), [
    ("127.0.0.1:9200", ListenAddress("127.0.0.1", 9200)),
    (":9200", ListenAddress("127.0.0.1", 9200)),
    ("[::1]:9200", ListenAddress("::1", 9200)),
    ("0.0.0.0:0", ListenAddress("0.0.0.0", 0)),
    ("off", None),
    ("", None),
], ids=["ipv4", "port only", "ipv6", "any", "off", "empty"])
def test_listen_addresses(text_: str, expected: ListenAddress | None) -> None:
    assert parse_listen_address(text_) == expected


@pytest.mark.parametrize("bad", ["localhost:9200", "127.0.0.1", "127.0.0.1:99999", "1.2.3.4:x"])
def test_a_bad_listen_address_names_the_option(bad: str) -> None:
    with pytest.raises(UsageError, match=f"^--listen '{bad}': expected IP:PORT"):
        parse_listen_address(bad, "--listen")


def test_loopback_addresses() -> None:
    assert ListenAddress("127.0.0.2", 1).loopback and ListenAddress("::1", 1).loopback
    assert not ListenAddress("0.0.0.0", 1).loopback
    assert str(ListenAddress("::1", 80)) == "[::1]:80"


@pytest.mark.parametrize(("method", "path", "status"), [
    ("GET", "/", 200), ("HEAD", "/", 200), ("GET", "/nope", 404), ("POST", "/", 405), ("DELETE", "/nope", 405),
], ids=["get", "head", "unknown path", "post", "delete"])
def test_dispatch(method: str, path: str, status: int) -> None:
    response = dispatch(ROUTES, Request(method, path))
    assert response.status == status
    if status == 405:
        assert response.headers["Allow"] == "GET, HEAD"


@pytest.mark.parametrize(("headers", "query", "expected"), [
    ({"authorization": "Bearer s3cret"}, {}, "s3cret"),
    ({"authorization": "bearer  s3cret "}, {}, "s3cret"),
    ({}, {"token": "q"}, "q"),
    ({"authorization": "Basic abc"}, {"token": "q"}, "q"),
    ({}, {}, None),
], ids=["header", "header case and spaces", "query", "not bearer", "none"])
def test_the_token_comes_from_the_header_or_the_query(headers: dict, query: dict, expected: str | None) -> None:
    assert bearer_token(Request("GET", "/", query, headers)) == expected


@pytest.mark.parametrize(("headers", "query", "status"), [
    ({"authorization": "Bearer s3cret"}, {}, 200),
    ({}, {"token": "s3cret"}, 200),
    ({}, {}, 401),
    ({}, {"token": "s3cre"}, 401),
    ({}, {"token": "s3cretX"}, 401),
    ({"authorization": "Bearer wrong"}, {"token": "s3cret"}, 401),
    ({}, {"token": "s\u00e9cret"}, 401),
], ids=["header", "query", "missing", "prefix", "longer", "wrong header wins", "non-ascii"])
def test_require_token(headers: dict, query: dict, status: int) -> None:
    route = require_token(lambda request: OK, "s3cret")
    response = route(Request("GET", "/api/status", query, headers))
    assert response.status == status
    if status == 401:
        assert response.headers["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize(("host", "local"), [
    ("127.0.0.1:9200", True), ("localhost:9200", True), ("LOCALHOST", True), ("[::1]:9200", True),
    ("10.1.2.3", True), ("evil.example:9200", False), ("localhost.evil.example", False), ("", False),
    ("[::1", True), ("::1", True),
], ids=["ipv4", "localhost", "upper case", "ipv6", "other ip", "name", "suffix trick", "none",
        "broken bracket", "bare ipv6"])
def test_local_hosts(host: str, local: bool) -> None:
    assert is_local_host(host) is local


def test_require_local_host_refuses_a_foreign_name() -> None:
    route = require_local_host(lambda request: OK)
    assert route(Request("GET", "/", headers={"host": "127.0.0.1:9200"})).status == 200
    assert route(Request("GET", "/", headers={"host": "attacker.example"})).status == 421


@pytest.mark.parametrize(("data", "expected"), [
    ('{"a":1}', b'event: status\ndata: {"a":1}\n\n'),
    ("two\nlines", b"event: status\ndata: two\ndata: lines\n\n"),
    ("cr\r\nlf\rx", b"event: status\ndata: cr\ndata: lf\ndata: x\n\n"),
    ("", b"event: status\ndata: \n\n"),
], ids=["json", "newline", "carriage returns", "empty"])
def test_sse_framing_keeps_every_line_inside_its_event(data: str, expected: bytes) -> None:
    assert sse_event("status", data) == expected


def test_text_is_one_line() -> None:
    assert text(404, "gone").body == b"gone\n"
