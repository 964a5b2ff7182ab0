"""Address formatting shared by the renderers."""

from __future__ import annotations

import ipaddress


def host_port(address: ipaddress.IPv4Address | ipaddress.IPv6Address | str, port: int) -> str:
    """``10.0.0.11:6443`` or ``[fd00::11]:6443`` (IPv6 in brackets, as URLs and HAProxy want)."""
    ip = ipaddress.ip_address(address) if isinstance(address, str) else address
    return f"[{ip}]:{port}" if ip.version == 6 else f"{ip}:{port}"
