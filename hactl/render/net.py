"""Address formatting shared by the renderers, and the last check on every rendered value.

The spec's grammars (:mod:`hactl.spec.values`) already refuse anything that could not be
written safely; this module is the defence in depth for values that reach a renderer some other
way (a model built in Python without validation, a future field): a renderer refuses, with
:class:`UnsafeValueError`, any value it cannot write as one token of a configuration file.
"""

from __future__ import annotations

import ipaddress
import re

from hactl.errors import HactlError

#: What one rendered value (a name, an address, a URL, a path) may contain in ``haproxy.cfg``
#: and ``etcd.env``: letters, digits and ``. _ : / [ ] = , -`` (no space, quote, backslash,
#: ``$``, ``#``, ``;``, ``%``, control character or non-ASCII letter). Anything else could end the
#: token, the line or the quoted string, or start a comment.
_TOKEN_RE = re.compile(r"[A-Za-z0-9._:/\[\]=,-]+", re.ASCII)


class UnsafeValueError(HactlError):
    """A value cannot be written into a configuration file as it is (newline, quote, space,
    control character …). The spec's validation should have refused it first."""


def safe_token(value: object, what: str) -> str:
    """``str(value)`` if it is one safe token for a configuration file, else UnsafeValueError."""
    text = str(value)
    if not _TOKEN_RE.fullmatch(text):
        raise UnsafeValueError(
            f"refusing to render {what} {text[:80]!r}: a value written into a configuration file "
            "may only hold letters, digits and . _ : / [ ] = , -",
            hint="fix the value in the spec (hactl validate -f SPEC names the field)",
        )
    return text


def _ip(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address | str,
) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        ip = ipaddress.ip_address(address) if isinstance(address, str) else address
    except ValueError:
        raise UnsafeValueError(f"refusing to render {str(address)[:80]!r}: not an IP address") from None
    if not isinstance(ip, ipaddress.IPv4Address | ipaddress.IPv6Address):
        raise UnsafeValueError(f"refusing to render {str(address)[:80]!r}: not an IP address")
    if isinstance(ip, ipaddress.IPv6Address) and ip.scope_id is not None:
        raise UnsafeValueError(
            f"refusing to render the address {str(ip)[:80]!r}: an IPv6 zone ('%…') cannot be "
            "written into haproxy.cfg or etcd.env",
            hint="use the address without its zone (hactl validate refuses zones)",
        )
    return ip


def address_text(address: ipaddress.IPv4Address | ipaddress.IPv6Address | str) -> str:
    """The address as rendered: no zone, nothing but address characters."""
    return safe_token(_ip(address), "the address")


def host_port(address: ipaddress.IPv4Address | ipaddress.IPv6Address | str, port: int) -> str:
    """``10.0.0.11:6443`` or ``[fd00::11]:6443`` (IPv6 in brackets, as URLs and HAProxy want).
    Refuses an IPv6 zone or anything that is not an address, and a port outside 1-65535."""
    ip = _ip(address)
    text = address_text(ip)
    port = port_number(port)
    return f"[{text}]:{port}" if ip.version == 6 else f"{text}:{port}"


def port_number(port: object) -> int:
    """``port`` if it is an int in 1-65535, else UnsafeValueError."""
    if type(port) is not int or not 1 <= port <= 65535:
        raise UnsafeValueError(f"refusing to render the port {str(port)[:20]!r}: not 1-65535")
    return port
