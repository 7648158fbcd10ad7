"""The address grammar of the registry contract (issue 10): what lbgen may write into a config as a
backend's address or a server name. Strict on purpose; `lbgen.core.schema` turns a refusal into
the value's rejection."""

from __future__ import annotations

import ipaddress
import re

HOST_LABEL_RE = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
IPV4_RE = re.compile(r"[0-9]{1,3}(\.[0-9]{1,3}){3}")
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"  # 0-255 without a leading zero
IPV4_CANONICAL_RE = re.compile(rf"{_OCTET}(?:\.{_OCTET}){{3}}")  # what ipaddress.IPv4Address takes as is
IPV6_RE = re.compile(r"[0-9A-Fa-f:.]{2,45}")
ZONE_RE = re.compile(r"[A-Za-z0-9_.-]{1,15}")  # an interface name (IFNAMSIZ 16) or a scope number


def normalize_address(value: str) -> str | None:
    """`value` in its canonical form when it is an address lbgen may write into a config, else None.

    The grammar is strict on purpose (issue 10): dotted-quad IPv4; IPv6 with at most a short zone
    id of `[A-Za-z0-9_.-]` (Python's `ipaddress` accepts any zone text, newlines included); an
    RFC 1123 host name. Nothing else, whatever `ipaddress` would parse.
    """
    if IPV4_CANONICAL_RE.fullmatch(value):
        return value
    if IPV4_RE.fullmatch(value):
        return None  # a dotted quad ipaddress refuses: an octet over 255 or with a leading zero
    if ":" in value:
        return _normalize_ipv6(value)
    return value if is_hostname(value) else None


def _normalize_ipv6(value: str) -> str | None:
    address, percent, zone = value.partition("%")
    if not IPV6_RE.fullmatch(address) or (percent and not ZONE_RE.fullmatch(zone)):
        return None
    try:
        normalized = str(ipaddress.IPv6Address(address))
    except ValueError:
        return None
    return f"{normalized}%{zone}" if percent else normalized


def is_ip(value: str) -> bool:
    """An IPv4 or IPv6 address (zone allowed) in `normalize_address`'s strict grammar."""
    return (IPV4_RE.fullmatch(value) is not None or ":" in value) and normalize_address(value) is not None


def is_hostname(value: str, allow_wildcard: bool = False) -> bool:
    """RFC 1123 host name; with `allow_wildcard`, a leading `*.` label too (server_name style).

    An all-numeric last label is refused (RFC 3696 2): `1.2.3` is a mistyped address, not a name."""
    if allow_wildcard and value.startswith("*."):
        value = value[2:]
    labels = value.split(".")
    return (0 < len(value) <= 253 and not labels[-1].isdigit()
            and all(HOST_LABEL_RE.fullmatch(label) for label in labels))
