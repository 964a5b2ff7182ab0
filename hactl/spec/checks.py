"""Cross-field rules of a spec. Pure: a :class:`Cluster` in, a list of findings out.

Each finding carries the field path (YAML names) that the loader turns into ``FILE:LINE:COL``.
"""

from __future__ import annotations

import contextlib
import difflib
import ipaddress
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

from hactl.spec.models import Cluster, Host, parse_version

PathT = tuple[str | int, ...]

#: Kubernetes 1.31+ refuses external etcd older than this (kubeadm's supported-version table).
MIN_ETCD_FOR_K8S_131 = (3, 5, 11)

PREFLIGHT_CHECKS: tuple[str, ...] = (
    "Swap",
    "KernelModule-br_netfilter",
    "KernelModule-overlay",
    "FileContent--proc-sys-net-ipv4-ip_forward",
    "FileContent--proc-sys-net-bridge-bridge-nf-call-iptables",
    "CRI",
    "CgroupDriver",
    "FileExisting-kubeadm",
    "FileExisting-kubelet",
    "FileExisting-kubectl",
    "KubeadmVersion",
    "KubeletVersion",
    "KubectlVersion",
    "ClockSkew",
    "DuplicateHostname",
    "DuplicateProductUUID",
    "DuplicateMAC",
)
"""The preflight checks of ``hactl plan`` (docs/hosts.md), named like kubeadm's where kubeadm
has one; ``Port-N`` (any port) comes on top of these."""
_PORT_CHECK = re.compile(r"port-([0-9]{1,5})", re.ASCII)


def preflight_check_name(text: str) -> str | None:
    """A name of ``ignorePreflightErrors`` in its canonical spelling (``swap`` → ``Swap``,
    ``port-2380`` → ``Port-2380``, ``ALL`` → ``all``); None when there is no such check."""
    lowered = text.strip().lower()
    if lowered == "all":
        return "all"
    match = _PORT_CHECK.fullmatch(lowered)
    if match and 1 <= int(match.group(1)) <= 65535:
        return f"Port-{int(match.group(1))}"
    return next((c for c in PREFLIGHT_CHECKS if c.lower() == lowered), None)


@dataclass(frozen=True)
class Finding:
    path: PathT
    message: str
    severity: Literal["error", "warning"] = "error"


def quorum(members: int) -> int:
    """Votes needed for etcd to make progress: ⌊n/2⌋+1."""
    return members // 2 + 1


def tolerated_failures(members: int) -> int:
    return members - quorum(members)


def cross_checks(cluster: Cluster) -> list[Finding]:
    return [
        *_etcd_size(cluster),
        *_masters(cluster),
        *_hosts(cluster),
        *_networks(cluster),
        *_etcd_ports(cluster),
        *_endpoint(cluster),
        *_health_check(cluster),
        *_versions(cluster),
        *_lab(cluster),
        *_preflight_names(cluster),
    ]


def _preflight_names(cluster: Cluster) -> Iterator[Finding]:
    lists: list[tuple[PathT, list[str]]] = [
        (("preflight", "ignoreErrors"), cluster.preflight.ignore_errors)]
    lists += [((*path, "ignorePreflightErrors"), host.ignore_preflight_errors)
              for _role, path, host in _role_lists(cluster)]
    choices = {c.lower(): c for c in (*PREFLIGHT_CHECKS, "all")}
    for path, names in lists:
        for index, name in enumerate(names):
            if preflight_check_name(name) is not None:
                continue
            close = difflib.get_close_matches(name.strip().lower(), list(choices), n=1, cutoff=0.6)
            hint = (f"did you mean '{choices[close[0]]}'?" if close else
                    "the checks are listed in docs/hosts.md")
            yield Finding((*path, index), f"'{name}' is not a preflight check; {hint} (names: "
                          f"{', '.join(PREFLIGHT_CHECKS)}, Port-N, all)")


def _etcd_size(cluster: Cluster) -> Iterator[Finding]:
    stacked = cluster.etcd.topology == "stacked"
    if stacked and cluster.etcd.members:
        yield Finding(
            ("etcd", "members"),
            "must be empty with topology 'stacked' (kubeadm runs one etcd member on every master); "
            "remove the list or use topology 'external'",
        )
        return
    if not stacked and not cluster.etcd.members:
        yield Finding(
            ("etcd", "members"),
            "external etcd needs its members (3 or 5 for high availability); add them, "
            "or use topology 'stacked' to run etcd on the masters",
        )
        return
    n = len(cluster.etcd_members)
    path: PathT = ("masters",) if stacked else ("etcd", "members")
    what = "masters (stacked etcd: one member each)" if stacked else "etcd members"
    if n % 2 == 0:
        yield Finding(
            path,
            f"{n} {what} is an even number: quorum is {quorum(n)} of {n}, so it tolerates "
            f"{tolerated_failures(n)} failure(s), the same as {n - 1} members, with one more "
            f"machine that can fail; use {n - 1} or {n + 1}",
        )
    elif n == 1:
        yield Finding(
            path,
            f"1 of {what}: etcd is not highly available (losing it stops the cluster); "
            "use 3 or 5 for production",
            "warning",
        )


def _masters(cluster: Cluster) -> Iterator[Finding]:
    n = len(cluster.masters)
    if n < 3:
        # Stacked: the masters are the etcd quorum. External: any one API server is enough.
        survives = tolerated_failures(n) if cluster.etcd.topology == "stacked" else n - 1
        yield Finding(
            ("masters",),
            f"{n} master(s): the control plane survives {survives} master failure(s); "
            "use 3 masters for high availability",
            "warning",
        )


def _role_lists(cluster: Cluster) -> Iterator[tuple[str, PathT, Host]]:
    for i, h in enumerate(cluster.etcd.members):
        yield "etcd", ("etcd", "members", i), h
    for i, h in enumerate(cluster.load_balancer.hosts):
        yield "lb", ("loadBalancer", "hosts", i), h
    for i, h in enumerate(cluster.masters):
        yield "master", ("masters", i), h
    for i, h in enumerate(cluster.workers):
        yield "worker", ("workers", i), h


def _hosts(cluster: Cluster) -> Iterator[Finding]:
    by_name: dict[str, tuple[str, PathT, Host]] = {}
    by_addr: dict[str, tuple[str, PathT, Host]] = {}
    for role, path, host in _role_lists(cluster):
        first = by_name.get(host.name)
        if first is not None:
            first_role, first_path, first_host = first
            if first_host.address != host.address:
                yield Finding(
                    (*path, "name"),
                    f"host name '{host.name}' is already used at {_dotted(first_path)} with "
                    f"address {first_host.address}; give each machine its own name",
                )
            elif first_role == role:
                yield Finding(
                    (*path, "name"),
                    f"host '{host.name}' is listed twice in the same role; remove one",
                )
            else:
                yield from _shared_roles(cluster, first_role, role, host, path)
            continue
        by_name[host.name] = (role, path, host)
        other = by_addr.get(str(host.address))
        if other is not None:
            yield Finding(
                (*path, "address"),
                f"address {host.address} is already used by host '{other[2].name}' at "
                f"{_dotted(other[1])}; one address per host (reuse the same name to give "
                "one host two roles)",
            )
            continue
        by_addr[str(host.address)] = (role, path, host)


def _shared_roles(
    cluster: Cluster, first: str, second: str, host: Host, path: PathT
) -> Iterator[Finding]:
    roles = {first, second}
    if roles == {"master", "worker"}:
        yield Finding(path, f"host '{host.name}' cannot be both a master and a worker; pick one")
    elif roles == {"master", "lb"} and cluster.load_balancer.frontend_port == 6443:
        yield Finding(
            ("loadBalancer", "frontendPort"),
            f"host '{host.name}' is a master and a load balancer: the API server binds 6443 "
            "there, so HAProxy cannot; set loadBalancer.frontendPort to another port, e.g. 8443",
        )
    elif roles == {"master", "etcd"}:
        yield Finding(
            path,
            f"host '{host.name}' is a master and an external etcd member; "
            "use etcd.topology 'stacked' to run etcd on the masters",
        )


def _dotted(path: PathT) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


def _networks(cluster: Cluster) -> Iterator[Finding]:
    pods = cluster.kubernetes.pod_subnet
    services = cluster.kubernetes.service_subnet
    if pods.version == services.version and pods.overlaps(services):
        yield Finding(
            ("kubernetes", "serviceSubnet"),
            f"{services} overlaps podSubnet {pods}; choose disjoint ranges "
            "(defaults: pods 10.244.0.0/16, services 10.96.0.0/12)",
        )
    for _role, path, host in _role_lists(cluster):
        for name, net in (("podSubnet", pods), ("serviceSubnet", services)):
            if host.address in net:
                yield Finding(
                    (*path, "address"),
                    f"{host.address} lies inside kubernetes.{name} {net}; move the "
                    f"{name} or the host so they do not overlap",
                )
    vip = cluster.load_balancer.vip
    if vip is not None:
        for name, net in (("podSubnet", pods), ("serviceSubnet", services)):
            if vip in net:
                yield Finding(
                    ("loadBalancer", "vip"),
                    f"{vip} lies inside kubernetes.{name} {net}; pick a VIP on the hosts' network",
                )


def _etcd_ports(cluster: Cluster) -> Iterator[Finding]:
    etcd = cluster.etcd
    if etcd.client_port == etcd.peer_port:
        yield Finding(
            ("etcd", "peerPort"),
            f"is the same as etcd.clientPort ({etcd.client_port}): etcd listens for clients and "
            "peers on separate ports; use e.g. clientPort 2379 and peerPort 2380",
        )


def _endpoint(cluster: Cluster) -> Iterator[Finding]:
    host = cluster.endpoint_host
    lb = cluster.load_balancer
    allowed = {h.name for h in lb.hosts} | {str(h.address) for h in lb.hosts}
    if lb.vip is not None:
        allowed.add(str(lb.vip))
    if lb.dns_name:
        allowed.add(lb.dns_name)
    with contextlib.suppress(ValueError):  # normalise IP spellings; names stay as they are
        host = str(ipaddress.ip_address(host))
    if host not in allowed:
        choices = ", ".join(sorted(allowed))
        yield Finding(
            ("controlPlaneEndpoint",),
            f"'{cluster.endpoint_host}' does not point at the load balancer; use one of: "
            f"{choices} (or set loadBalancer.dnsName to '{cluster.endpoint_host}')",
        )
    if cluster.endpoint_port != lb.frontend_port:
        yield Finding(
            ("controlPlaneEndpoint",),
            f"port {cluster.endpoint_port} differs from loadBalancer.frontendPort "
            f"{lb.frontend_port}; make them the same",
        )


def _health_check(cluster: Cluster) -> Iterator[Finding]:
    if cluster.load_balancer.health_check == "tcp":
        yield Finding(
            ("loadBalancer", "healthCheck"),
            "'tcp' only sees an open port: an API server that lost etcd keeps getting traffic; "
            "use 'https-readyz' unless the API servers' /readyz is unreachable from the LB",
            "warning",
        )


def _versions(cluster: Cluster) -> Iterator[Finding]:
    k8s = cluster.kubernetes.version_tuple
    if k8s < (1, 24, 0):
        yield Finding(
            ("kubernetes", "version"),
            f"{cluster.kubernetes.version} is not supported; hactl needs Kubernetes 1.24 or newer",
        )
    if cluster.etcd.topology != "external" or cluster.etcd.version is None:
        return
    if k8s >= (1, 31, 0) and parse_version(cluster.etcd.version) < MIN_ETCD_FOR_K8S_131:
        yield Finding(
            ("etcd", "version"),
            f"Kubernetes {cluster.kubernetes.version} needs external etcd 3.5.11 or newer, "
            f"the spec says {cluster.etcd.version}; upgrade etcd or use Kubernetes 1.30",
        )


def _lab(cluster: Cluster) -> Iterator[Finding]:
    if cluster.lab is None:
        return
    net = cluster.lab.subnet
    bridge = next(iter(net.hosts()), None)
    for _role, path, host in _role_lists(cluster):
        if host.address not in net:
            yield Finding(
                (*path, "address"),
                f"{host.address} is outside lab.subnet {net}; lab hosts need addresses in it",
            )
        elif host.address == bridge:
            yield Finding(
                (*path, "address"),
                f"{host.address} is the lab bridge's address (the subnet's first); use another",
            )
