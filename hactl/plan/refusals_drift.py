"""Refusals for differences hactl cannot plan yet (issue 12: every difference between the spec
and the running cluster is a change or a refusal, never a silent "No changes").

Each message names the field as the spec writes it (``kubernetes.podSubnet``), the live value,
the wanted value and what to do. Pure (facts in, messages out); wired into
:func:`hactl.plan.refusals.check`.
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Mapping
from datetime import datetime

from hactl import hostlayout
from hactl.diff import Diff
from hactl.facts.model import ClusterView, Observed
from hactl.spec.models import Cluster, parse_version
from hactl.vocabulary import Intent


def check(cluster: Cluster, observed: Observed) -> list[str]:
    """Every drift refusal of this module, in a fixed order."""
    early = [*etcd_version(cluster, observed), *certificates_expiring(cluster, observed)]
    view = observed.views(cluster).api
    if view is None:
        return early  # no initialised cluster answered: nothing else live to compare
    return [*kubernetes_settings(cluster, view), *etcd_topology(cluster, observed, view), *early]


def running_etcd_version(observed: Observed, name: str) -> str | None:
    """The etcd version a reachable member runs: ``endpoint status``, else ``etcd --version``."""
    facts = observed.get(name)
    if facts is None or not facts.reachable:
        return None
    return (facts.etcd.server_version if facts.etcd else None) or (
        facts.binaries.version("etcd") if facts.binaries else None)


def _plain_version(text: str) -> str:
    """``v1.30.4`` → ``1.30.4`` (how the spec's docs write it)."""
    return text[1:] if text.startswith("v") else text


def _version(text: object) -> tuple[int, int, int] | None:
    try:
        return parse_version(str(text).strip())
    except ValueError:
        return None


def _same_network(live: str, wanted: str) -> bool:
    """Two CIDRs (or comma-separated dual-stack lists) name the same networks."""
    def parse(text: str) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network] | None:
        try:
            return sorted((ipaddress.ip_network(p.strip(), strict=False) for p in text.split(",")),
                          key=lambda n: (n.version, n))
        except ValueError:
            return None

    a, b = parse(live), parse(wanted)
    return a == b if a is not None and b is not None else live.strip() == wanted.strip()


def kubernetes_settings(cluster: Cluster, view: ClusterView) -> list[str]:
    """``kubernetes.version``, ``podSubnet``, ``serviceSubnet``, ``dnsDomain`` against kubeadm's
    stored ClusterConfiguration, and each spec Node's kubelet version against the spec's: none
    of them can be changed by hactl after ``kubeadm init``. A live value the probe could not read
    is not compared."""
    out: list[str] = []
    k8s = cluster.kubernetes
    wanted = _plain_version(k8s.version)
    version_differs = False
    if view.kubernetes_version:
        live_text = _plain_version(str(view.kubernetes_version).strip())
        live = _version(live_text)
        if live is None or live != k8s.version_tuple:
            version_differs = True
            if live is not None and k8s.version_tuple < live:
                out.append(
                    f"kubernetes.version: live {live_text}, spec {wanted}: that is a downgrade, "
                    "which kubeadm does not do; put "
                    f"{live_text} back in the spec")
            else:
                out.append(
                    f"kubernetes.version: live {live_text}, spec {wanted}: hactl cannot upgrade a "
                    f"cluster yet (a later issue builds it); put {live_text} back in the spec, or "
                    "upgrade by hand with kubeadm upgrade")
    for field, live_value, want in (
        ("podSubnet", view.pod_subnet, str(k8s.pod_subnet)),
        ("serviceSubnet", view.service_subnet, str(k8s.service_subnet)),
    ):
        if live_value and not _same_network(live_value, want):
            what = "pod network" if field == "podSubnet" else "service network"
            out.append(
                f"kubernetes.{field} cannot change after kubeadm init: live {live_value}, spec "
                f"{want}; put the live value back in the spec (a new {what} needs a new cluster)")
    if view.dns_domain and view.dns_domain.rstrip(".").lower() != k8s.dns_domain.rstrip(".").lower():
        out.append(
            f"kubernetes.dnsDomain cannot change after kubeadm init: live {view.dns_domain}, spec "
            f"{k8s.dns_domain}; put the live value back in the spec (Services and Pods resolve "
            "names under it; a new DNS domain needs a new cluster)")
    if version_differs:
        return out  # the cluster's own version differs: that refusal covers the kubelets too
    spec_nodes = {h.name for h in (*cluster.masters, *cluster.workers)}
    stale = sorted(
        (n.name, _plain_version(n.kubelet_version)) for n in view.nodes
        if n.name in spec_nodes and n.kubelet_version
        and _version(n.kubelet_version) not in (None, k8s.version_tuple))
    if stale:
        listing = ", ".join(f"{name} {version}" for name, version in stale)
        out.append(
            f"kubernetes.version: the kubelet of {listing} (Node status) is not the spec's "
            f"{wanted}; hactl cannot upgrade or downgrade a kubelet yet (a later issue builds "
            "it); upgrade it by hand (kubeadm upgrade node, then the kubelet package) or put "
            "the running version in the spec")
    return out


def consumers_unknown(cluster: Cluster, observed: Observed, diff: Diff) -> list[str]:
    """External etcd: a plan that removes an etcd member first rewrites every API server's
    ``--etcd-servers`` that lists it (:func:`hactl.diff._etcd_consumers`). A running master
    whose list could not be read (unreachable, or a manifest without the flag) might still use
    the member: the removal is refused until its list is known."""
    removed = sorted(c.addr.host or "" for c in diff.effective() if Intent.REMOVE in c.intents)
    if cluster.etcd.topology != "external" or not removed:
        return []
    view = observed.views(cluster).api
    if view is None:
        return []
    out = []
    for host in cluster.masters:
        node = view.node(host.name)
        if node is None or not node.control_plane:
            continue
        facts = observed.kubernetes(host.name)
        if facts is not None and facts.etcd_servers is not None:
            continue
        why = ("did not answer" if facts is None else
               "has no readable --etcd-servers in /etc/kubernetes/manifests/kube-apiserver.yaml")
        out.append(
            f"{host.name} {why}: hactl cannot tell whether its API server uses the etcd "
            f"member{'s' if len(removed) > 1 else ''} the plan removes ({', '.join(removed)}), and "
            "cannot point it at the spec's members first; bring it back (or fix its manifest) "
            "and plan again, or keep the member in the spec until it is")
    return out


_KUBEADM_CAS = (hostlayout.K8S_CA_CERT, hostlayout.K8S_FRONT_PROXY_CA_CERT, hostlayout.K8S_ETCD_CA)


def _soon(host: str, certs: Mapping[str, datetime], now: datetime, days: int) -> list[tuple[str, str, datetime]]:
    return [(host, path, end) for path, end in certs.items()
            if (end - now).total_seconds() < days * 86400]


def _when(end: datetime, now: datetime) -> str:
    left = (end - now).total_seconds() / 86400
    date = end.strftime("%Y-%m-%d %H:%M UTC")
    if left < 0:
        ago = math.floor(-left)
        return f"expired {date} ({ago} day{'' if ago == 1 else 's'} ago)"
    whole = math.floor(left)
    return f"expires {date} ({whole} day{'' if whole == 1 else 's'} left)"


def certificates_expiring(cluster: Cluster, observed: Observed) -> list[str]:
    """Certificates that expire within ``certificates.renewBeforeDays`` of the probe (or have
    expired): kubeadm's (every .crt under /etc/kubernetes/pki of the masters and workers) and
    the etcd members' (/etc/etcd/pki/*.crt, external etcd). hactl renews none yet: each kind is
    refused with the way to renew it by hand."""
    days = cluster.certificates.renew_before_days
    now = observed.probed_at
    kube = sorted(
        item for h in (*cluster.masters, *cluster.workers)
        if (facts := observed.kubernetes(h.name)) is not None
        for item in _soon(h.name, facts.cert_expiry, now, days))
    etcd = sorted(
        item for h in (cluster.etcd_members if cluster.etcd.topology == "external" else ())
        if (member := observed.etcd(h.name)) is not None
        for item in _soon(h.name, member.cert_expiry, now, days))
    head = f"within certificates.renewBeforeDays ({days} day{'' if days == 1 else 's'}) of now"
    out = []
    if kube:
        listing = "; ".join(f"{host} {path} {_when(end, now)}" for host, path, end in kube)
        hosts = sorted({host for host, _, _ in kube})
        cas = sorted({path for _, path, _ in kube if path in _KUBEADM_CAS})
        ca_note = (f" `kubeadm certs renew` does not renew a CA ({', '.join(cas)}): that needs "
                   "kubeadm's manual CA rotation." if cas else "")
        out.append(
            f"kubeadm certificates expire {head}: {listing}. hactl does not renew certificates "
            f"yet (a later issue builds it); renew them by hand: on {', '.join(hosts)} run "
            "`kubeadm certs renew all` (masters), then restart the control-plane static Pods "
            "(move the manifests out of /etc/kubernetes/manifests and back) one master at a "
            f"time; a worker's kubelet certificates rotate on their own.{ca_note} Then plan again")
    if etcd:
        listing = "; ".join(f"{host} {path} {_when(end, now)}" for host, path, end in etcd)
        out.append(
            f"etcd certificates expire {head}: {listing}. hactl issued them and cannot re-issue "
            "them yet (a later issue builds it): re-issue them by hand from the etcd CA "
            "(/etc/etcd/pki/ca.crt and ca.key, same subject and SANs, e.g. with openssl) and "
            "restart etcd one member at a time, waiting for `etcdctl endpoint health` between "
            "members; an expiring etcd CA means new certificates for every member and for the "
            "API servers' etcd client (/etc/kubernetes/pki/apiserver-etcd-client.crt)")
    return out


def etcd_topology(cluster: Cluster, observed: Observed, view: ClusterView) -> list[str]:
    """``etcd.topology`` against the running cluster: external when kubeadm-config lists
    ``etcd.external.endpoints``, stacked when it does not and a master runs kubeadm's etcd
    (``manifests/etcd.yaml``). hactl does not move a cluster's etcd between the two."""
    if view.etcd_endpoints:
        live = "external"
    elif any((k := observed.kubernetes(h.name)) is not None and "etcd.yaml" in k.manifests
             for h in cluster.masters):
        live = "stacked"
    else:
        return []  # not known
    if live == cluster.etcd.topology:
        return []
    where = ("kubeadm-config lists etcd.external.endpoints" if live == "external"
             else "kubeadm runs etcd on the masters, kubeadm-config lists no external endpoints")
    return [
        f"etcd.topology: live {live} ({where}), spec {cluster.etcd.topology}: hactl does not "
        f"move a cluster's etcd between external and stacked (the API servers' data lives in "
        f"it); put {live} back in the spec{' with its members' if live == 'external' else ''}"]


def etcd_version(cluster: Cluster, observed: Observed) -> list[str]:
    """``etcd.version`` (when the spec gives one) against the version each external member runs
    (``endpoint status``, else ``etcd --version``): hactl installs and upgrades no etcd."""
    if cluster.etcd.topology != "external" or cluster.etcd.version is None:
        return []
    want = cluster.etcd.version
    running: dict[str, list[str]] = {}
    for host in cluster.etcd_members:
        seen = running_etcd_version(observed, host.name)
        if seen and _version(seen) is not None and _version(seen) != _version(want):
            running.setdefault(_plain_version(seen), []).append(host.name)
    return [
        f"etcd.version: {', '.join(names)} run{'s' if len(names) == 1 else ''} etcd {seen}, spec "
        f"{want}: hactl does not install or upgrade etcd (it runs the etcd installed on the "
        f"members); put {seen} back in the spec (or leave etcd.version out), or upgrade etcd on "
        "the members by hand, one member at a time"
        for seen, names in sorted(running.items())]
