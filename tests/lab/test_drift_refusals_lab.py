"""Issue 12 §1 on a converged specs/lab.yaml lab (real probe over SSH, the stand-ins' kubeadm
and API server): a converged lab plans "No changes"; then spec edits that hactl cannot plan yet
are each refused, naming the field — kubernetes.version, kubernetes.podSubnet. The lab is the
session's shared converged lab (tests/lab/conftest.py) and every edit is planned against it
(plans change nothing). Certificates inside certificates.renewBeforeDays (kubeadm's and the etcd members', dated by the real probe) are
refused.

Then the nodes' identity (hactl/plan/refusals_identity.py), with the real probe and the module's
``check`` called as the plan's refusals call it: the converged lab gives no refusal; a spec
that adds a loadBalancer.dnsName or a loadBalancer.vip the API server certificates (made by the
stand-in kubeadm, sent back by the probe) do not carry is refused on every master; a
master whose spec address is a second address of the same host is refused naming
masters[1].address, for its certificate and for its Node's InternalIP (the real API's Node
list); the kubelet client certificates, dated by the probe as openssl dates them on the node,
are not refused while the kubelet rotates them, and are refused inside a wide window once
rotation is off in /var/lib/kubelet/config.yaml."""

from __future__ import annotations

import asyncio
import copy
import ipaddress
import os
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from test_apply_lab import hactl, show

from hactl.facts.model import CertDates, Observed
from hactl.hostlayout import KUBELET_CLIENT_CERT, KUBELET_CONFIG
from hactl.plan import refusals_identity
from hactl.probe import probe_cluster
from hactl.spec.load import load_cluster


def _write(base: dict[str, Any], path: Path, edit: Any) -> str:
    doc = copy.deepcopy(base)
    edit(doc)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return str(path)


def test_spec_edits_on_a_converged_lab_are_refused_naming_the_field(shared_lab: Any,
                                                                    tmp_path: Path) -> None:
    lab = shared_lab()  # converged once per session, restored from its snapshot
    env = {**os.environ, "HACTL_STATE_DIR": str(tmp_path / "state")}
    res = hactl("plan", "-f", lab.spec_file, "--detailed-exitcode", env=env)
    assert res.returncode == 0 and "No changes" in res.stdout, show(res)

    base = yaml.safe_load(Path(lab.spec_file).read_text())
    edits: dict[str, tuple[Any, list[str]]] = {
        "version": (lambda d: d["kubernetes"].update(version="1.30.9"),
                    ["kubernetes.version: live 1.30.4, spec 1.30.9: hactl cannot upgrade a cluster yet"]),
        "pod-subnet": (lambda d: d["kubernetes"].update(podSubnet="10.245.0.0/16"),
                       ["kubernetes.podSubnet cannot change after kubeadm init: live 10.244.0.0/16, "
                        "spec 10.245.0.0/16"]),
        # (a worker or a master taken out of the spec is no longer refused: hactl plans its
        # removal now, tested in tests/lab/test_*membership*/test_workers*/test_masters_shrink*)
        # §4: a window wider than the certificates' life: the real probe dates them over SSH
        "renew-3650": (lambda d: d.update(certificates={"renewBeforeDays": 3650}),
                       ["kubeadm certificates expire within certificates.renewBeforeDays (3650 days)",
                        "/etc/kubernetes/pki/apiserver.crt expires",
                        "etcd certificates expire within certificates.renewBeforeDays (3650 days)",
                        "/etc/etcd/pki/server.crt expires", "kubeadm certs renew all"]),
    }
    for name, (edit, expected) in edits.items():
        spec = _write(base, tmp_path / f"{name}.yaml", edit)
        res = hactl("plan", "-f", spec, env=env)
        assert res.returncode == 1, f"{name}: {show(res)}"
        out = res.stdout + res.stderr
        assert "the plan is refused" in out, f"{name}: {show(res)}"
        for text in expected:
            assert text in " ".join(out.split()), f"{name}: {text!r} not in {show(res)}"

    _identity(lab, base, tmp_path, env)

    # the edits changed nothing: the original spec still plans no changes
    res = hactl("plan", "-f", lab.spec_file, "--detailed-exitcode", env=env)
    assert res.returncode == 0 and "No changes" in res.stdout, show(res)


def _probe_and_check(spec: str) -> tuple[Observed, list[str]]:
    """What the plan does for the nodes' identity: the real probe, then the module's check."""
    cluster = load_cluster(spec)
    observed = asyncio.run(probe_cluster(cluster))
    return observed, refusals_identity.check(cluster, observed)


def _openssl_dates(lab: Any, name: str) -> CertDates | None:
    """The kubelet client certificate's dates as openssl reads them on the node itself."""
    res = lab.run(name, f"test -e {KUBELET_CLIENT_CERT} && openssl x509 -in {KUBELET_CLIENT_CERT} "
                        "-noout -startdate -enddate")
    if res.returncode != 0:
        return None
    start, end = (datetime.strptime(line.partition("=")[2], "%b %d %H:%M:%S %Y GMT").replace(tzinfo=UTC)
                  for line in res.stdout.splitlines()[:2])
    return CertDates(not_after=end, not_before=start)


def _openssl_names(lab: Any, name: str) -> tuple[set[str], set[str]]:
    """apiserver.crt's subjectAltName as openssl prints it on the master itself."""
    out = lab.run(name, "openssl x509 -in /etc/kubernetes/pki/apiserver.crt -noout -ext "
                        "subjectAltName", check=True).stdout.splitlines()[1]
    entries = [e.strip().partition(":") for e in out.split(",")]
    return ({v for k, _, v in entries if k == "DNS"},
            {str(ipaddress.ip_address(v)) for k, _, v in entries if k == "IP Address"})


def _identity(lab: Any, base: dict[str, Any], tmp_path: Path, env: dict[str, str]) -> None:
    spec = lab.spec_file
    cluster = load_cluster(spec)
    nodes = [*cluster.masters, *cluster.workers]
    observed, messages = _probe_and_check(spec)
    assert messages == [], messages
    assert observed.unreachable() == []
    view = observed.cluster_view([m.name for m in cluster.masters])
    assert view is not None
    for host in nodes:
        node = view.node(host.name)
        assert node is not None and node.internal_ips == (str(host.address),), node
        facts = observed.kubernetes(host.name)
        assert facts is not None
        assert facts.kubelet_client_cert == _openssl_dates(lab, host.name), host.name
        assert facts.kubelet_rotates_certificates is True, host.name
        if host in cluster.masters:
            sans = facts.apiserver_sans
            assert sans is not None
            assert (set(sans.dns_names), set(sans.ip_addresses)) == _openssl_names(lab, host.name)
            assert "k8s-api.lab" in sans.dns_names and str(host.address) in sans.ip_addresses
    dated = {h.name for h in nodes if _openssl_dates(lab, h.name) is not None}
    assert {w.name for w in cluster.workers} <= dated, dated  # joined with TLS bootstrap

    subnet = ipaddress.ip_network(base["lab"]["subnet"])
    lb_address = base["loadBalancer"]["hosts"][0]["address"]
    vip = str(subnet.network_address + 100)

    # a load balancer name and a vip the API server certificates do not carry
    def new_lb_names(d: dict[str, Any]) -> None:
        d["controlPlaneEndpoint"] = f"{lb_address}:6443"  # an LB host address: in the certSANs
        d["loadBalancer"].update(dnsName="api.example.test", vip=vip)

    lb_names = _write(base, tmp_path / "lb-names.yaml", new_lb_names)
    _, messages = _probe_and_check(lb_names)
    assert [m.split(":")[0] for m in messages] == ["master01", "master02", "master03"], messages
    res = hactl("plan", "-f", lb_names, env=env)  # and the plan refuses with them
    assert res.returncode == 1 and "the plan is refused" in res.stdout + res.stderr, show(res)
    for message in messages:
        assert " ".join(message.split()) in " ".join((res.stdout + res.stderr).split()), show(res)
    for message in messages:
        text = " ".join(message.split())
        assert (" /etc/kubernetes/pki/apiserver.crt does not carry loadBalancer.dnsName "
                f"api.example.test; loadBalancer.vip {vip} (its names: DNS ") in text, text
        assert "k8s-api.lab" in text and "controlPlaneEndpoint" not in text
        assert "`kubeadm init phase certs apiserver --config <that file>`" in text

    # master02 in the spec at a second address of the same host: reachable there (its host key
    # recorded for it), but neither its certificate nor its Node carry that address
    old = base["masters"][1]["address"]
    new = str(subnet.network_address + 112)
    known = Path(base["ssh"]["knownHostsFile"])
    saved = known.read_text()
    line = next(entry for entry in saved.splitlines() if entry.split()[0].split(",")[0] == "master02")
    subprocess.run(["nsenter", "-t", str(lab.pid("master02")), "-n", "ip", "addr", "add",
                    f"{new}/{subnet.prefixlen}", "dev", "eth0"], check=True)
    try:
        known.write_text(saved + f"{new} {' '.join(line.split()[1:3])}\n")
        moved = _write(base, tmp_path / "master02-moved.yaml",
                       lambda d: d["masters"][1].update(address=new))
        observed, messages = _probe_and_check(moved)
        assert observed.unreachable() == [] and observed.kubernetes("master02") is not None
        text = " ".join(" ".join(messages).split())
        assert (f"master02: the API server certificate /etc/kubernetes/pki/apiserver.crt does not "
                f"carry masters[1].address {new} (its names:") in text, messages
        assert (f"masters[1].address: the Node master02 reports InternalIP {old}, spec {new}") in text
        assert not any(m.startswith(("master01:", "master03:")) for m in messages)
    finally:
        known.write_text(saved)
        subprocess.run(["nsenter", "-t", str(lab.pid("master02")), "-n", "ip", "addr", "del",
                        f"{new}/{subnet.prefixlen}", "dev", "eth0"], check=True)

    # the kubelet client certificates inside a ten-year window: the kubelet rotates them (not a
    # difference) until rotation is off on worker01
    wide = _write(base, tmp_path / "renew-wide.yaml",
                  lambda d: d.update(certificates={"renewBeforeDays": 3650}))
    assert _probe_and_check(wide)[1] == []
    config = lab.read("worker01", KUBELET_CONFIG)
    assert "rotateCertificates: true" in config
    lab.put("worker01", KUBELET_CONFIG, config.replace("rotateCertificates: true", "rotateCertificates: false"))
    try:
        observed, messages = _probe_and_check(wide)
    finally:
        lab.put("worker01", KUBELET_CONFIG, config)
    dates = _openssl_dates(lab, "worker01")
    assert dates is not None
    (message,) = messages
    text = " ".join(message.split())
    assert text.startswith("kubelet client certificates expire within certificates.renewBeforeDays "
                           "(3650 days) of now and will not be renewed in time: worker01 "
                           f"{KUBELET_CLIENT_CERT} expires {dates.not_after:%Y-%m-%d %H:%M} UTC"), text
    assert "(rotation is off in /var/lib/kubelet/config.yaml: nothing renews it)" in text
    assert "on worker01: set `rotateCertificates: true`" in text
    assert _probe_and_check(wide)[1] == []  # the file is back as it was
