"""Grammars of the spec's scalar values: every value hactl renders into a configuration file,
runs a command with, or empties as root is checked here, whole (``fullmatch``), before it is used.

Each check takes the raw value and returns the canonical one or raises ``ValueError`` with a
message that says what is wrong and what to write instead (the loader adds ``FILE:LINE:COL`` and
the field). Pure: no I/O, no hactl imports.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

DEFAULT_API_PORT = 6443

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

DNS_LABEL_RE = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", re.ASCII)
HOSTNAME_RE = re.compile(
    r"[A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?)*",
    re.ASCII,
)
DNS_SUBDOMAIN_RE = re.compile(
    r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?(\.[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)*", re.ASCII
)
USER_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,31}", re.ASCII)
PORT_RE = re.compile(r"[0-9]{1,5}", re.ASCII)
MAX_DNS_NAME = 253
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def show(value: object, limit: int = 80) -> str:
    """``repr(value)``, cut to ``limit`` characters (a 5,000-digit value stays one short line)."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 5]}…{text[-4:]}"


# -- names --------------------------------------------------------------------------------------


def dns_label(value: str, example: str) -> str:
    if not DNS_LABEL_RE.fullmatch(value):
        raise ValueError(
            f"{show(value)} is not a DNS label: use lower-case letters, digits and '-' "
            f"(at most 63), e.g. {example!r}"
        )
    return value


def dns_name(value: str) -> str:
    """A host name such as ``loadbalancer.example.com`` (letters, digits, '-', dots; ≤ 253)."""
    if len(value) > MAX_DNS_NAME:
        raise ValueError(
            f"{show(value)} is {len(value)} characters; a DNS name has at most 253"
        )
    if not HOSTNAME_RE.fullmatch(value):
        raise ValueError(f"{show(value)} is not a DNS name like loadbalancer.example.com")
    return value


def dns_domain(value: str) -> str:
    """A lower-case DNS subdomain (kubeadm's ``networking.dnsDomain`` rule, RFC 1123)."""
    if len(value) > MAX_DNS_NAME or not DNS_SUBDOMAIN_RE.fullmatch(value):
        raise ValueError(
            f"{show(value)} is not a DNS domain: lower-case labels of letters, digits and '-' "
            "joined by dots, at most 253 characters, e.g. 'cluster.local'"
        )
    return value


def user_name(value: str) -> str:
    if not USER_RE.fullmatch(value):
        raise ValueError(
            f"{show(value)} is not a user name: start with a letter or '_', then letters, "
            "digits, '_', '.' or '-', at most 32 characters, e.g. 'root' or 'deploy'"
        )
    return value


def local_path(value: str) -> str:
    """A file on the operator's machine: any characters but control characters (NUL, newline)."""
    if not value:
        raise ValueError("is empty; give a file path or leave the key out")
    bad = _CONTROL_RE.search(value)
    if bad:
        raise ValueError(
            f"{show(value)} contains a control character (U+{ord(bad.group()):04X}); remove it"
        )
    if len(value) > 4096:
        raise ValueError(f"is {len(value)} characters long; a path has at most 4096")
    return value


# -- addresses and networks ---------------------------------------------------------------------


def ip_address(value: Any) -> IPAddress:
    """A host address: IPv4 or IPv6 text (or an address object from Python callers), without an
    IPv6 zone, not IPv6 link-local (it needs a zone), unspecified, multicast or broadcast."""
    if isinstance(value, ipaddress.IPv4Address | ipaddress.IPv6Address):
        ip: IPAddress = value
    elif isinstance(value, str) and value and not _has_space_or_control(value):
        try:
            ip = ipaddress.ip_address(value)
        except ValueError:
            raise ValueError(f"{show(value)} is not a valid IP address like 10.0.0.11") from None
    else:
        raise ValueError(
            f"{show(value)} is not a valid IP address like 10.0.0.11 (write the address as text)"
        )
    return usable_address(ip, value)


def usable_address(ip: IPAddress, raw: object) -> IPAddress:
    if isinstance(ip, ipaddress.IPv6Address) and ip.scope_id is not None:
        raise ValueError(
            f"{show(str(raw))} has an IPv6 zone ('%{ip.scope_id}'); addresses are written into "
            "haproxy.cfg and etcd.env, where a zone is not allowed: use a global or unique-local "
            "address without '%…', e.g. fd00::11"
        )
    if isinstance(ip, ipaddress.IPv6Address) and ip.is_link_local:
        raise ValueError(
            f"{show(str(raw))} is an IPv6 link-local address, usable only with a zone ('%eth0'), "
            "which cannot be written into haproxy.cfg or etcd.env: use a global or unique-local "
            "address, e.g. fd00::11"
        )
    if ip.is_unspecified:
        raise ValueError(f"{show(str(raw))} is the unspecified address; write the host's own address")
    if ip.is_multicast:
        raise ValueError(f"{show(str(raw))} is a multicast address; write the host's own (unicast) address")
    if ip == ipaddress.IPv4Address("255.255.255.255"):
        raise ValueError(f"{show(str(raw))} is the broadcast address; write the host's own address")
    return ip


def _has_space_or_control(value: str) -> bool:
    return any(ch.isspace() for ch in value) or _CONTROL_RE.search(value) is not None


def ip_network(value: Any, *, field: str) -> IPNetwork:
    """A CIDR written with its prefix (``10.244.0.0/16``), no zone, host bits zero, and large
    enough for what kubeadm does with it (``field``: ``podSubnet`` or ``serviceSubnet``)."""
    if isinstance(value, ipaddress.IPv4Network | ipaddress.IPv6Network):
        net: IPNetwork = value
    elif isinstance(value, str) and not _has_space_or_control(value) and "%" not in value:
        if "/" not in value:
            raise ValueError(
                f"{show(value)} has no prefix length; write a CIDR such as 10.244.0.0/16"
            )
        try:
            net = ipaddress.ip_network(value)
        except ValueError:
            raise ValueError(f"{show(value)} is not a valid CIDR like 10.244.0.0/16") from None
    else:
        raise ValueError(f"{show(value)} is not a valid CIDR like 10.244.0.0/16")
    v4 = net.version == 4
    if field == "podSubnet":
        most = 24 if v4 else 64
        why = "kubeadm gives each node a /24 (IPv4) or /64 (IPv6) out of it"
    else:
        most = 28 if v4 else 124
        why = "kubeadm puts the cluster DNS service at its 10th address"
    if net.prefixlen > most:
        raise ValueError(
            f"{net} is too small: the prefix must be /{most} or shorter ({why})"
        )
    if field == "serviceSubnet" and net.max_prefixlen - net.prefixlen > 20:
        raise ValueError(
            f"{net} is too large: kubeadm refuses service subnets of more than 20 bits "
            f"(/{net.max_prefixlen - 20} or longer), e.g. 10.96.0.0/12"
        )
    return net


# -- controlPlaneEndpoint -----------------------------------------------------------------------


def _port(text: str, whole: str) -> int:
    if not PORT_RE.fullmatch(text) or not 1 <= int(text) <= 65535:
        raise ValueError(f"{show(whole)} has an invalid port {show(text)}; use 1-65535 (ASCII digits)")
    return int(text)


def split_host_port(value: str, *, default_port: int, what: str, example: str) -> tuple[str, int]:
    """``host[:port]`` or ``[ipv6][:port]`` → (host, port); the host is a DNS name, an IPv4
    address or a bracketed IPv6 address (no zone); returned without brackets."""
    if not value:
        raise ValueError(f"is empty; write {what}, e.g. {example}")
    if _has_space_or_control(value):
        raise ValueError(f"{show(value)} contains whitespace or a control character; write {what}, e.g. {example}")
    if "://" in value or "/" in value:
        raise ValueError(f"{show(value)} must be {what} without a scheme or path, e.g. {example}")
    port = default_port
    if value.startswith("["):
        host, closed, rest = value[1:].partition("]")
        if not closed:
            raise ValueError(f"{show(value)} opens '[' without ']'; write [IPv6]:port, e.g. [fd00::10]:6443")
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"{show(value)}: after ']' write ':port' or nothing")
            port = _port(rest[1:], value)
        try:
            ip = ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"{show(value)}: only an IPv6 address goes in brackets, e.g. [fd00::10]:6443") from None
        return str(usable_address(ip, host)), port
    if value.count(":") > 1:
        raise ValueError(f"{show(value)}: write an IPv6 address in brackets, e.g. [fd00::10]:6443")
    host, colon, port_text = value.partition(":")
    if colon:
        port = _port(port_text, value)
    try:
        ip4 = ipaddress.IPv4Address(host)
    except ValueError:
        if not host or len(host) > MAX_DNS_NAME or not HOSTNAME_RE.fullmatch(host):
            raise ValueError(f"{show(host)} is neither an IP address nor a DNS name") from None
        if host.replace(".", "").isdigit():
            raise ValueError(f"{show(host)} is not a valid IPv4 address") from None
        return host, port
    return str(usable_address(ip4, host)), port


def join_host_port(host: str, port: int) -> str:
    """``host:port``, IPv6 in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def normalise_endpoint(value: str) -> str:
    """The canonical ``host:port`` of a ``controlPlaneEndpoint``: port 6443 when left out, IPv6
    in brackets and in its compressed lower-case form, the port in ASCII digits without leading
    zeros. Idempotent. ``ValueError`` for anything else."""
    host, port = split_host_port(
        value, default_port=DEFAULT_API_PORT, what="host[:port]", example="loadbalancer.example.com:6443"
    )
    return join_host_port(host, port)


def bastion(value: str) -> str:
    """``[user@]host[:port]`` (``""`` allowed: no bastion)."""
    if value == "":
        return value
    user, at, rest = value.rpartition("@")
    if at:
        user_name(user)
    if rest.count(":") > 1 and not rest.startswith("["):
        try:  # a bare IPv6 address (no port), as the SSH transport reads it
            usable_address(ipaddress.IPv6Address(rest), rest)
        except ValueError:
            raise ValueError(f"{show(value)}: write [user@]host[:port], e.g. ops@jump.example.com:22") from None
        return value
    split_host_port(rest, default_port=22, what="[user@]host[:port]", example="ops@jump.example.com:22")
    return value


# -- etcd.dataDir -------------------------------------------------------------------------------

#: Roots under which a data directory may live, and how deep it must be below ``/``.
DATA_DIR_ROOTS = ("/var/lib", "/srv", "/data", "/mnt", "/opt")
#: etcd's own folders inside a data directory: pointing at one would empty a member's data.
ETCD_SUBDIRS = frozenset({"member", "snap", "wal"})
_COMPONENT_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,254}", re.ASCII)
DATA_DIR_HINT = (
    "hactl empties etcd.dataDir as root before a new member starts: use a folder of its own "
    "below /var/lib, /srv, /data, /mnt or /opt with 'etcd' in its name, e.g. /var/lib/etcd or "
    "/data/etcd (the whole rule: docs/spec.md, etcd.dataDir)"
)


def data_dir(value: str) -> str:
    """``etcd.dataDir``: an absolute path in normal form (components of letters, digits, ``.``,
    ``_``, ``-``; no ``.``, ``..``, empty component or trailing ``/``; at most 1024 characters)
    below one of :data:`DATA_DIR_ROOTS` and not the root itself; dedicated to etcd: under
    ``/var/lib`` the first component below it contains ``etcd`` and does not start with
    ``hactl``; under the other roots some component below the root contains ``etcd``; no
    component is one of :data:`ETCD_SUBDIRS`."""

    def refuse(why: str) -> ValueError:
        return ValueError(f"{show(value)} {why}; {DATA_DIR_HINT}")

    if not value.startswith("/"):
        raise refuse("is not an absolute path")
    if len(value) > 1024:
        raise refuse("is longer than 1024 characters")
    for part in value[1:].split("/"):
        if not _COMPONENT_RE.fullmatch(part):
            raise refuse(
                f"has the component {show(part)}: write the path in normal form (no '.', '..', "
                "'//' or trailing '/') with letters, digits, '.', '_' and '-' only"
            )
    root = next((r for r in DATA_DIR_ROOTS if value == r or value.startswith(r + "/")), None)
    if root is None or value == root:
        raise refuse("is '/' or a system folder, not one dedicated to etcd")
    below = value[len(root) + 1 :].split("/")
    if any(p in ETCD_SUBDIRS for p in below):
        raise refuse("points inside an etcd data directory (a folder named member, snap or wal)")
    if root == "/var/lib":
        first = below[0].lower()
        if first.startswith("hactl") or "etcd" not in first:
            raise refuse(f"is inside {root}/{below[0]}, another program's folder")
    elif not any("etcd" in p.lower() for p in below):
        raise refuse("has no folder named for etcd (it may hold other data)")
    return value
