"""Refusals for the nodes' identity, which hactl cannot change yet (issue 12 §1: every
difference between the spec and the running cluster is a change or a refusal):

- the kubelet's client certificate (``/var/lib/kubelet/pki/kubelet-client-current.pem``, masters
  and workers) when the kubelet will not renew it in time (:func:`kubelet_cert_due`);
- the API server's serving certificate (``/etc/kubernetes/pki/apiserver.crt``, each master)
  when it does not carry a name or address clients use: ``controlPlaneEndpoint``'s host,
  ``loadBalancer.dnsName``, ``loadBalancer.vip``, the master's own ``address``;
- each spec host's Node whose InternalIP is not the host's ``address``.

Each message names the field as the spec writes it, the live value, the wanted value and what
to do. Pure (facts in, messages out): :func:`check` is meant to be called from
:func:`hactl.plan.refusals_drift.check`.

The kubelet client certificate rule, from kubeadm ("Certificate Management with kubeadm"):
kubeadm configures the kubelet to rotate its client certificate itself
(``rotateCertificates: true``), so ``kubeadm certs renew`` leaves it out; the kubelet's
certificate manager asks for a new one at a jittered 70–90 % of the old one's validity. A
certificate inside ``certificates.renewBeforeDays`` is therefore refused only when the kubelet
will not renew it: it has expired (the kubelet cannot authenticate to ask for a new one:
kubeadm's troubleshooting guide fixes it by hand), rotation is off (or not known to be on) in
/var/lib/kubelet/config.yaml, less than a day is left, or more than 90 % of its validity has
passed (the rotation is overdue, so it is failing). A rotating certificate inside the window
that the kubelet will still renew on time is not a difference.
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Sequence
from datetime import datetime, timedelta

from hactl.facts.kubernetes import APISERVER_CERT
from hactl.facts.model import CertDates, ClusterView, Observed, ServingNames
from hactl.hostlayout import KUBELET_CLIENT_CERT, KUBELET_CONFIG
from hactl.spec.models import Cluster, Host

ROTATION_OVERDUE = 0.9
"""The share of a certificate's validity by which a rotating kubelet has asked for a new one
(its certificate manager picks a deadline between 70 % and 90 %)."""
LAST_DAY = timedelta(days=1)


def check(cluster: Cluster, observed: Observed) -> list[str]:
    """Every refusal of this module, in a fixed order."""
    view = observed.views(cluster).api
    return [*api_server_names(cluster, observed),
            *(node_addresses(cluster, view) if view is not None else ()),
            *kubelet_client_certs(cluster, observed)]


# -- the kubelet client certificate ---------------------------------------------------------------


def kubelet_cert_due(cert: CertDates, rotates: bool | None, now: datetime, days: int) -> str | None:
    """Why this kubelet client certificate is refused (see the module's rule), or None."""
    left = cert.not_after - now
    if left >= timedelta(days=days):
        return None
    if left <= timedelta(0):
        return "expired: the kubelet cannot ask for a new one with it"
    if rotates is None:
        return (f"rotateCertificates of {KUBELET_CONFIG} not known (no such file, or not a "
                "boolean): nothing shows the kubelet renews it")
    if not rotates:
        return f"rotation is off in {KUBELET_CONFIG}: nothing renews it"
    if left < LAST_DAY:
        return "less than a day left and the kubelet has not rotated it"
    used = cert.life_used(now)
    if used is not None and used > ROTATION_OVERDUE:
        return (f"{math.floor(used * 100)}% of its validity has passed: the kubelet rotates at "
                "70-90%, so its rotation is failing")
    return None


def _when(end: datetime, now: datetime) -> str:
    days = (end - now).total_seconds() / 86400
    stamp = end.strftime("%Y-%m-%d %H:%M UTC")
    if days < 0:
        return f"expired {stamp}"
    return f"expires {stamp}, in {math.floor(days)} day{'' if math.floor(days) == 1 else 's'}"


def kubelet_client_certs(cluster: Cluster, observed: Observed) -> list[str]:
    """One refusal listing every master's and worker's kubelet client certificate that
    :func:`kubelet_cert_due` refuses, with kubeadm's ways to renew it by hand."""
    days = cluster.certificates.renew_before_days
    now = observed.probed_at
    due: list[tuple[str, CertDates, str, bool]] = []
    for host in (*cluster.masters, *cluster.workers):
        facts = observed.kubernetes(host.name)
        if facts is None or facts.kubelet_client_cert is None:
            continue
        cert = facts.kubelet_client_cert
        why = kubelet_cert_due(cert, facts.kubelet_rotates_certificates, now, days)
        if why is not None:
            rotation_off = facts.kubelet_rotates_certificates is not True and cert.not_after > now
            due.append((host.name, cert, why, rotation_off))
    if not due:
        return []
    listing = "; ".join(f"{name} {KUBELET_CLIENT_CERT} {_when(cert.not_after, now)} ({why})"
                        for name, cert, why, _ in due)
    off = [name for name, _, _, rotation_off in due if rotation_off]
    broken = [name for name, _, _, rotation_off in due if not rotation_off]
    ways = []
    if off:
        ways.append(
            f"on {', '.join(off)}: set `rotateCertificates: true` in {KUBELET_CONFIG} and restart "
            "the kubelet (`systemctl restart kubelet`): with a still valid certificate it asks "
            "for a new one, which kubeadm's node auto-approval signs")
    if broken:
        ways.append(
            f"on {', '.join(broken)} (kubeadm's troubleshooting guide, 'Kubelet client "
            "certificate rotation fails'): move /etc/kubernetes/kubelet.conf and "
            "/var/lib/kubelet/pki/kubelet-client* aside; on a master run `kubeadm kubeconfig "
            "user --org system:nodes --client-name system:node:NODE > kubelet.conf` and copy it "
            "to the node as /etc/kubernetes/kubelet.conf; restart the kubelet and wait for "
            f"{KUBELET_CLIENT_CERT}; point kubelet.conf's client-certificate and client-key at "
            "that file (instead of the embedded data), restart the kubelet again and check that "
            "the Node is Ready")
    return [
        f"kubelet client certificates expire within certificates.renewBeforeDays ({days} "
        f"day{'' if days == 1 else 's'}) of now and will not be renewed in time: {listing}. "
        "hactl does not renew certificates yet (a later issue builds it); `kubeadm certs renew` "
        f"does not cover this certificate. Renew it by hand: {'; '.join(ways)}. Then plan again"]


# -- the API server certificate's names -----------------------------------------------------------


def _ip(text: str) -> str | None:
    try:
        return str(ipaddress.ip_address(text.strip()))
    except ValueError:
        return None


def covers(names: ServingNames, wanted: str) -> bool:
    """The certificate is valid for ``wanted`` as a TLS client checks it: an address against
    the IP entries only, a DNS name against the DNS entries (case-insensitive, a trailing dot
    ignored, ``*.`` standing for exactly one left-most label)."""
    ip = _ip(wanted)
    if ip is not None:
        return ip in {_ip(a) for a in names.ip_addresses}
    host = wanted.rstrip(".").lower()
    for entry in names.dns_names:
        name = entry.rstrip(".").lower()
        if name == host:
            return True
        if name.startswith("*.") and host.partition(".")[2] == name[2:] and host.partition(".")[0]:
            return True
    return False


def wanted_names(cluster: Cluster, index: int, master: Host) -> dict[str, list[str]]:
    """Name or address → the spec fields that ask for it on ``master``'s certificate."""
    lb = cluster.load_balancer
    wanted: dict[str, list[str]] = {}
    for field, value in (("controlPlaneEndpoint", cluster.endpoint_host),
                         ("loadBalancer.dnsName", lb.dns_name),
                         ("loadBalancer.vip", str(lb.vip) if lb.vip is not None else None),
                         (f"masters[{index}].address", str(master.address))):
        if value:
            wanted.setdefault(_ip(value) or value, []).append(field)
    return wanted


def _listing(names: ServingNames) -> str:
    parts = [f"DNS {', '.join(names.dns_names)}" if names.dns_names else "",
             f"IP {', '.join(names.ip_addresses)}" if names.ip_addresses else ""]
    return "; ".join(p for p in parts if p) or "none"


def api_server_names(cluster: Cluster, observed: Observed) -> list[str]:
    """Per master whose apiserver.crt was read: the names and addresses of the spec that it
    does not carry (clients using them fail TLS verification)."""
    out = []
    for index, master in enumerate(cluster.masters):
        facts = observed.kubernetes(master.name)
        if facts is None or facts.apiserver_sans is None:
            continue
        missing = {value: fields for value, fields in wanted_names(cluster, index, master).items()
                   if not covers(facts.apiserver_sans, value)}
        if not missing:
            continue
        what = "; ".join(f"{' and '.join(fields)} {value}" for value, fields in missing.items())
        sans = ", ".join(missing)
        out.append(
            f"{master.name}: the API server certificate {APISERVER_CERT} does not carry {what} "
            f"(its names: {_listing(facts.apiserver_sans)}): clients that reach the API server "
            "by them fail TLS verification. hactl does not re-issue this certificate yet (a "
            "later issue builds it). Put the names the certificate carries back in the spec, "
            f"or re-issue it by hand, one master at a time: add {sans} to apiServer.certSANs of "
            "the ClusterConfiguration (the kubeadm config file and kube-system/kubeadm-config), "
            f"move {APISERVER_CERT} and apiserver.key out of /etc/kubernetes/pki, run `kubeadm "
            "init phase certs apiserver --config <that file>`, restart the API server (move "
            "kube-apiserver.yaml out of /etc/kubernetes/manifests and back) and wait for its "
            "/readyz; then plan again")
    return out


# -- the Nodes' addresses -------------------------------------------------------------------------


def _roles(cluster: Cluster) -> Sequence[tuple[str, Sequence[Host]]]:
    return (("masters", cluster.masters), ("workers", cluster.workers))


def node_addresses(cluster: Cluster, view: ClusterView) -> list[str]:
    """Each spec master's and worker's Node (the API's Node list) against the host's address:
    an InternalIP list without the spec's address is refused. A Node that reports no
    InternalIP, or that the API does not list, is not compared."""
    out = []
    for role, hosts in _roles(cluster):
        for index, host in enumerate(hosts):
            node = view.node(host.name)
            if node is None or not node.internal_ips:
                continue
            wanted = str(host.address)
            if wanted in {_ip(ip) for ip in node.internal_ips}:
                continue
            live = ", ".join(node.internal_ips)
            extra = (" (its API server advertises the old address and its certificate carries "
                     "it)" if role == "masters" else "")
            out.append(
                f"{role}[{index}].address: the Node {host.name} reports InternalIP {live}, spec "
                f"{wanted}: the node joined the cluster with another address{extra}, and hactl "
                "does not move a node to a new address yet (a later issue builds it). Put "
                f"{live} back in the spec; or, if the host's address changed for good, take "
                f"the node out and join it again at the new address: `kubectl drain {host.name} "
                f"--ignore-daemonsets --delete-emptydir-data`, `kubectl delete node {host.name}`, "
                f"`kubeadm reset -f` on {host.name}, then plan and apply")
    return out
