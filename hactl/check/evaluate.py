"""Pure evaluation of a control plane's health from gathered data (see :mod:`hactl.check`)."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

from hactl.check.model import CERT_WARN_DAYS, LEADER_LEASES, CheckData, Finding, Report
from hactl.facts.host_keys import host_key_problems
from hactl.facts.model import EtcdHealth, EtcdMember, Observed
from hactl.render.haproxy import BACKEND

if TYPE_CHECKING:
    from hactl.spec.models import Cluster


def evaluate(cluster: Cluster, data: CheckData) -> Report:
    """Pure: the health of ``cluster`` from gathered data."""
    findings: list[Finding] = _check_host_keys(data.observed)
    findings += _check_api(cluster, data)
    findings += _check_masters(cluster, data)
    findings += _check_workers(cluster, data)
    findings += _check_nodes_ready(cluster, data)
    findings += _check_coredns(cluster, data)
    findings += _check_leases(data)
    findings += _check_etcd(cluster, data)
    findings += _check_lb(cluster, data.observed)
    cert_findings, expiry = _check_certs(cluster, data)
    findings += cert_findings
    return Report(cluster.metadata.name, tuple(findings), expiry)


def _check_host_keys(observed: Observed) -> list[Finding]:
    """A host whose SSH host key CHANGED fails the check (any role), in the plan's words."""
    return [
        Finding(
            "ssh",
            "error",
            name,
            words,
            "verify the host out of band before anything else; hactl plans nothing until then",
        )
        for name, words in host_key_problems(observed).items()
    ]


def _check_api(cluster: Cluster, data: CheckData) -> list[Finding]:
    endpoint = cluster.control_plane_endpoint
    if data.api is None:
        return [
            Finding(
                "api",
                "error",
                endpoint,
                "no initialised master could ask /readyz",
                "run `hactl plan -f SPEC` to see what is missing, then `hactl apply`",
            )
        ]
    if data.api.ok:
        return [Finding("api", "ok", endpoint, f"/readyz ok (asked from {data.api.via})")]
    return [
        Finding(
            "api",
            "error",
            endpoint,
            f"/readyz through the load balancer failed: {data.api.detail}",
            "check the load balancer (`hactl check` LB lines) and the API servers' logs",
        )
    ]


def _check_masters(cluster: Cluster, data: CheckData) -> list[Finding]:
    view = data.observed.views(cluster).api
    if view is None:
        return [
            Finding(
                "masters",
                "error",
                "nodes",
                "no master's API answered",
                "run `hactl plan -f SPEC`: the control plane may not be initialised",
            )
        ]
    out = []
    for master in cluster.masters:
        node = view.node(master.name)
        if node is None:
            out.append(
                Finding(
                    "masters",
                    "error",
                    master.name,
                    "not registered as a Node",
                    "run `hactl apply -f SPEC` to join it",
                )
            )
        elif not node.ready:
            out.append(
                Finding(
                    "masters",
                    "error",
                    master.name,
                    "Node is not Ready" + (f" ({view.not_ready[master.name]})"
                                           if master.name in view.not_ready else ""),
                    f"look at the kubelet on {master.name} (`journalctl -u kubelet`)",
                )
            )
        elif not node.control_plane:
            out.append(
                Finding(
                    "masters",
                    "error",
                    master.name,
                    "Node lacks the node-role.kubernetes.io/control-plane label",
                    "it joined as a worker: reset it and let `hactl apply` rejoin it",
                )
            )
        else:
            out.append(Finding("masters", "ok", master.name, "Ready, control-plane"))
    return out


def _check_workers(cluster: Cluster, data: CheckData) -> list[Finding]:
    """Every worker of the spec is a Node (an error when not: the apply that joined it must not
    pass); a NotReady worker is a warning (the control plane does not depend on it)."""
    view = data.observed.views(cluster).api
    if view is None or not cluster.workers:
        return []  # no API answer is one `masters` error already
    missing = [w.name for w in cluster.workers if view.node(w.name) is None]
    not_ready = [w.name for w in cluster.workers if (node := view.node(w.name)) and not node.ready]
    out = []
    if missing:
        out.append(
            Finding(
                "workers",
                "error",
                "nodes",
                f"not registered as a Node: {', '.join(missing)}",
                "run `hactl apply -f SPEC` to join them",
            )
        )
    if not_ready:
        out.append(
            Finding(
                "workers",
                "warning",
                "nodes",
                f"Node not Ready: {', '.join(not_ready)}",
                "look at the kubelet on those hosts (`journalctl -u kubelet`)",
            )
        )
    if not missing and not not_ready:
        out.append(Finding("workers", "ok", "nodes", f"{len(cluster.workers)} registered, Ready"))
    return out


def _network_hint(cluster: Cluster) -> str:
    if cluster.network.plugin == "none":
        return ("network.plugin is none: hactl installs no CNI; install one (or set "
                "network.plugin: flannel and run `hactl apply`)")
    return ("look at the pod network's DaemonSet pods on those Nodes and at the kubelet "
            "(`journalctl -u kubelet`); `hactl plan` shows whether the pod network differs")


def _check_nodes_ready(cluster: Cluster, data: CheckData) -> list[Finding]:
    """Every Node the API lists is Ready; a NotReady one is named with what its kubelet says
    (the Ready condition's reason and message: a missing CNI reads ``NetworkPluginNotReady``)."""
    view = data.observed.views(cluster).api
    if view is None or not view.nodes:
        return []  # no API answer is one `masters` error already
    waiting = [n.name for n in view.nodes if not n.ready]
    if not waiting:
        return [Finding("nodes", "ok", "all", f"every Node Ready ({len(view.nodes)})")]
    said = "; ".join(f"{n} ({view.not_ready.get(n, 'no reason given')})" for n in waiting)
    # a warning: a NotReady master is an error of `masters` already (with the same message),
    # and a NotReady worker alone leaves the control plane healthy (as in `workers`)
    return [Finding("nodes", "warning", "all", f"NotReady: {said}", _network_hint(cluster))]


def _check_coredns(cluster: Cluster, data: CheckData) -> list[Finding]:
    dns = data.coredns
    if dns is None:
        return []
    if not dns.present:
        return [Finding("coredns", "warning", "kube-system/coredns", dns.detail,
                        "kubeadm's addon phase makes it (`kubeadm init phase addon coredns`)")]
    if dns.available:
        return [Finding("coredns", "ok", "kube-system/coredns", f"available ({dns.detail})")]
    return [Finding("coredns", "error", "kube-system/coredns", f"not available ({dns.detail})",
                    "CoreDNS pods run once a Node is Ready (a pod network is installed): "
                    + _network_hint(cluster))]


def _check_leases(data: CheckData) -> list[Finding]:
    if data.leases is None:
        return [
            Finding(
                "leases",
                "error",
                "kube-system",
                f"leases unreadable: {data.leases_error}",
                "check that the API answers (`kubectl get lease -n kube-system`)",
            )
        ]
    out = []
    for name in LEADER_LEASES:
        lease = data.leases.get(name)
        if lease is None or not lease.holder:
            out.append(
                Finding(
                    "leases",
                    "error",
                    name,
                    "no leader (no Lease holder)",
                    f"check that {name} runs on the masters (static pod manifests)",
                )
            )
        elif not lease.valid_at(data.now):
            out.append(
                Finding(
                    "leases",
                    "error",
                    name,
                    f"leader {lease.holder} stopped renewing its Lease",
                    f"check {name} on the masters; a standby takes over when it expires",
                )
            )
        else:
            out.append(Finding("leases", "ok", name, f"one leader: {lease.holder}"))
    return out


def _check_etcd(cluster: Cluster, data: CheckData) -> list[Finding]:
    names = [h.name for h in cluster.etcd_members]
    stacked = cluster.etcd.topology == "stacked"
    if data.etcd_view is not None:
        members = data.etcd_view.members
        health = {n: data.etcd_view.health.get(n, "not asked") for n in names}
    else:
        members = data.observed.views(cluster).members
        health = {n: _observed_health(data.observed, n) for n in names}
    return _etcd_membership(names, members) + _etcd_health(names, health, stacked)


def _observed_health(observed: Observed, name: str) -> EtcdHealth | str:
    facts = observed.etcd(name)
    if facts is not None and facts.health is not None:
        return facts.health
    host = observed.get(name)
    return (
        (host.error if host is not None else None)
        or (facts.query_error if facts else None)
        or "not probed"
    )


def _etcd_membership(names: list[str], members: tuple[EtcdMember, ...] | None) -> list[Finding]:
    if members is None:
        return [
            Finding(
                "etcd",
                "error",
                "members",
                "no etcd member answered `member list`",
                "start etcd on the members (`systemctl start etcd`) or run `hactl apply`",
            )
        ]
    out = []
    listed = {m.name for m in members if m.name}
    missing = [n for n in names if n not in listed]
    extra = sorted(listed - set(names))
    unstarted = [m.id for m in members if not m.started]
    learners = [m.name or m.id for m in members if m.is_learner]
    if missing:
        out.append(
            Finding(
                "etcd",
                "error",
                "members",
                f"missing from the cluster: {', '.join(missing)}",
                "run `hactl plan -f SPEC`: it adds members one at a time",
            )
        )
    if extra:
        out.append(
            Finding(
                "etcd",
                "error",
                "members",
                f"not in the spec: {', '.join(extra)}",
                "remove them with `hactl apply` (it keeps quorum) or add them to the spec",
            )
        )
    if unstarted:
        out.append(
            Finding(
                "etcd",
                "error",
                "members",
                f"added but never started: {', '.join(unstarted)}",
                "start etcd on that host with --initial-cluster-state=existing",
            )
        )
    if learners:
        out.append(
            Finding(
                "etcd",
                "error",
                "members",
                f"still learners: {', '.join(learners)}",
                "promote them (`etcdctl member promote ID`) or run `hactl apply`",
            )
        )
    if not (missing or extra or unstarted or learners):
        out.append(
            Finding("etcd", "ok", "members", f"{len(members)} members as in the spec, all started")
        )
    return out


def _etcd_health(
    names: list[str], health: dict[str, EtcdHealth | str], stacked: bool
) -> list[Finding]:
    where = "the etcd static pod (/etc/kubernetes/manifests/etcd.yaml)" if stacked else "etcd"
    log = "the etcd pod's log" if stacked else "`journalctl -u etcd`"
    out: list[Finding] = []
    for name in names:
        state = health[name]
        if isinstance(state, str):
            out.append(
                Finding(
                    "etcd", "error", name, f"health unknown: {state}", f"check {where} on {name}"
                )
            )
        elif not state.healthy:
            out.append(
                Finding(
                    "etcd",
                    "error",
                    name,
                    f"unhealthy: {state.error or 'no answer'}",
                    f"look at {log} on {name}",
                )
            )
        else:
            out.append(Finding("etcd", "ok", name, "endpoint health true"))
    return out


def _check_lb(cluster: Cluster, observed: Observed) -> list[Finding]:
    out = []
    masters = [m.name for m in cluster.masters]
    for lb in cluster.load_balancer.hosts:
        host = observed.get(lb.name)
        facts = host.haproxy if host and host.reachable else None
        if facts is None:
            why = host.error if host and host.error else "HAProxy facts missing"
            out.append(
                Finding(
                    "load_balancer",
                    "error",
                    lb.name,
                    f"unreadable: {why}",
                    f"check that {lb.name} is up and reachable over SSH",
                )
            )
            continue
        if not facts.active:
            out.append(
                Finding(
                    "load_balancer",
                    "error",
                    lb.name,
                    "haproxy is not running",
                    f"`systemctl start haproxy` on {lb.name} or run `hactl apply`",
                )
            )
            continue
        servers = facts.backend(BACKEND)
        if not servers:
            detail = facts.stats_error or f"no servers in backend {BACKEND}"
            out.append(
                Finding(
                    "load_balancer",
                    "error",
                    lb.name,
                    f"backend state unknown: {detail}",
                    "check the stats socket /run/haproxy/admin.sock",
                )
            )
            continue
        down = sorted(s for s, status in servers.items() if status != "UP")
        absent = [m for m in masters if m not in servers]
        if down:
            states = ", ".join(f"{s} {servers[s]}" for s in down)
            out.append(
                Finding(
                    "load_balancer",
                    "error",
                    lb.name,
                    f"backends not UP: {states}",
                    "those API servers fail /readyz: check them and etcd",
                )
            )
        if absent:
            out.append(
                Finding(
                    "load_balancer",
                    "error",
                    lb.name,
                    f"no backend server for {', '.join(absent)}",
                    "run `hactl apply -f SPEC` to render haproxy.cfg again",
                )
            )
        if not down and not absent:
            out.append(Finding("load_balancer", "ok", lb.name, f"{len(servers)} backends UP"))
    return out


def _check_certs(cluster: Cluster, data: CheckData) -> tuple[list[Finding], dict[str, str]]:
    out: list[Finding] = []
    expiry: dict[str, str] = {}
    for host in [*cluster.masters, *cluster.workers]:
        facts = data.observed.kubernetes(host.name)
        if facts is None or not facts.cert_expiry:
            continue
        path, when = min(facts.cert_expiry.items(), key=lambda item: item[1])
        expiry[host.name] = when.isoformat()
        left = when - data.now
        if left.total_seconds() <= 0:
            out.append(
                Finding(
                    "certificates",
                    "error",
                    host.name,
                    f"{path} expired on {when:%Y-%m-%d}",
                    "renew with `kubeadm certs renew all` on that host",
                )
            )
        elif left < timedelta(days=CERT_WARN_DAYS):
            out.append(
                Finding(
                    "certificates",
                    "warning",
                    host.name,
                    f"{path} expires in {left.days} days",
                    "plan `kubeadm certs renew all`",
                )
            )
    if expiry and not out:
        first = min(expiry.values())
        out.append(Finding("certificates", "ok", "all", f"none expires before {first[:10]}"))
    return out, expiry
