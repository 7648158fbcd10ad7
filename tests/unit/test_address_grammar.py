"""Issue 10, case 1: an address is dotted-quad IPv4, IPv6 with a short zone, or an RFC 1123 host
name; nothing else reaches a config, even when a decoder is bypassed (defence in depth)."""

from __future__ import annotations

import ipaddress
import json
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lbgen.core.layout import UnsafeValue, Verbatim, host_port
from lbgen.core.model import Catalog, Endpoint, Service
from lbgen.core.render import render
from lbgen.core.addresses import is_ip, normalize_address
from lbgen.core.schema import decode_endpoint
from lbgen.core.settings import Target
from lbgen.errors import InvalidValue, TemplateError
from tests.unit.catalogs import render_default

LB_VARS = {
    "nginx": {"pid": "/run/t/nginx.pid", "error_log": "/run/t/error.log", "access_log": "off", "temp_dir": "/run/t"},
    "haproxy": {"pid": "/run/t/haproxy.pid", "stats_socket": "/run/t/haproxy.sock", "log": "stderr"},
}
# The payload of issue 10: it passed validation and rendered a `server evil` line.
ZONE_INJECTION = "::1%x\n    server evil 127.0.0.1:9 weight 256\n#"


@pytest.mark.parametrize("value, expected", [
    ("10.0.0.1", "10.0.0.1"),
    ("127.0.0.1", "127.0.0.1"),
    ("::1", "::1"),
    ("2001:DB8::1", "2001:db8::1"),
    ("fe80::1%lo", "fe80::1%lo"),
    ("fe80::1%eth0.100", "fe80::1%eth0.100"),
    ("fe80::1%3", "fe80::1%3"),
    ("db.internal", "db.internal"),
    ("web-1", "web-1"),
], ids=str)
def test_accepted_addresses_are_normalized(value: str, expected: str) -> None:
    assert normalize_address(value) == expected


@pytest.mark.parametrize("value", [
    ZONE_INJECTION,
    "::1%x y",
    "::1%",
    "::1%a-zone-far-too-long-for-an-interface",
    "::1%x;",
    "1.2.3.4%eth0",
    "01.2.3.4",
    "256.1.1.1",
    "1.2.3",
    "1.2.3.4.5",
    "1.2.3.4 ",
    " 1.2.3.4",
    "[::1]",
    "::1]:80",
    "a..b",
    "-a.example",
    "",
    "x" * 300,
], ids=repr)
def test_refused_addresses(value: str) -> None:
    assert normalize_address(value) is None
    assert not is_ip(value)
    with pytest.raises(InvalidValue, match="address"):
        decode_endpoint("e1", json.dumps({"address": value, "port": 8000}))


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60))
def test_any_accepted_address_is_one_bare_token_and_stable(value: str) -> None:
    address = normalize_address(value)
    if address is not None:
        assert re.fullmatch(r"[A-Za-z0-9_.:%-]+", address)
        assert normalize_address(address) == address


@settings(max_examples=200, deadline=None)
@given(st.from_regex(r"[0-9a-f:]{2,20}%[\x00-\x7f]{1,20}", fullmatch=True))
def test_zones_never_carry_more_than_an_interface_name(value: str) -> None:
    address = normalize_address(value)
    if address is not None:
        assert re.fullmatch(r"[0-9a-f:.]+(%[A-Za-z0-9_.-]{1,15})?", address)


@settings(max_examples=200, deadline=None)
@given(st.from_regex(r"(0|00|01|1[0-9]{0,2}|2[0-9]{0,2}|25[0-9]|[3-9][0-9]{0,2})(\.(0|00|01|1[0-9]{0,2}|2[0-9]{0,2}|25[0-9]|[3-9][0-9]{0,2})){3}",
                     fullmatch=True))
def test_dotted_quads_are_taken_exactly_as_ipaddress_takes_them(value: str) -> None:
    """The direct IPv4 check (issue 13) accepts and normalizes exactly as `ipaddress` does: octets
    up to 255, no leading zero."""
    try:
        expected: str | None = str(ipaddress.IPv4Address(value))
    except ValueError:
        expected = None
    assert normalize_address(value) == expected


def _hostile_catalog(address: str) -> Catalog:
    """An endpoint built directly, as a buggy decoder or a future backend might hand it over."""
    endpoint = Endpoint("e1", address, 8000)
    return Catalog(5, (Service("web", {"listen": 8080}, (endpoint,)),))


@pytest.mark.parametrize("kind", ["nginx", "haproxy"])
def test_shipped_templates_refuse_an_address_no_decoder_checked(kind: str) -> None:
    with pytest.raises(TemplateError, match="refusing address"):
        render_default(kind, _hostile_catalog(ZONE_INJECTION), LB_VARS[kind])


def test_host_port_refuses_non_canonical_addresses_and_bad_ports() -> None:
    assert host_port("::1", 80) == "[::1]:80"
    assert host_port("db.internal", 5432) == "db.internal:5432"
    refused = [(ZONE_INJECTION, 80), ("2001:DB8::1", 80), ("::1", 0), ("::1", True)]
    for address, port in refused * 2:  # twice: the remembered verdicts too
        with pytest.raises(UnsafeValue):
            host_port(address, port)


@pytest.mark.parametrize("kind", ["nginx", "haproxy"])
def test_output_guard_refuses_verbatim_text_that_ends_its_line(kind: str) -> None:
    target = Target(name=kind, template="t.j2", dest="/dev/null", kind=kind, vars={"x": Verbatim("a\nb")})
    with pytest.raises(TemplateError, match="control character"):
        render("{{ vars.x }}", Catalog(1), target)
