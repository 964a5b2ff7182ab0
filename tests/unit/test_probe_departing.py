"""The probe's part of day-2 membership (issue 13): stacked etcd's member list and health read
with the API query, and the departing hosts (in the cluster, not in the spec) connected and
probed in one more round at the address the cluster records for them."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_probe import answer, sections_of

from hactl.errors import UnreachableError
from hactl.facts import kubernetes
from hactl.probe import SectionOutput, probe
from hactl.spec.models import Cluster, Host
from hactl.transport.base import Transport
from hactl.transport.fake import FakeTransport

REPO = Path(__file__).resolve().parents[2]
API_OUT = (REPO / "tests/facts_data/kubernetes/api.out").read_text()
MEMBERS = ('{"header":{"cluster_id":1,"member_id":2},"members":['
           '{"ID":11,"name":"master01","peerURLs":["https://198.18.2.11:2380"],'
           '"clientURLs":["https://198.18.2.11:2379"]},'
           '{"ID":12,"name":"master02","peerURLs":["https://198.18.2.12:2380"],'
           '"clientURLs":["https://198.18.2.12:2379"]},'
           '{"ID":13,"peerURLs":["https://198.18.2.77:2380"]}]}')
HEALTH = ('[{"endpoint":"https://198.18.2.11:2379","health":true,"took":"1ms"},'
          '{"endpoint":"https://198.18.2.12:2379","health":false,"error":"context deadline exceeded"}]')


def spec(name: str) -> Cluster:
    return Cluster.model_validate(yaml.safe_load((REPO / "specs" / name).read_text()))


def test_the_stacked_lines_become_the_views_member_list_and_health() -> None:
    fact = kubernetes.ApiState(stacked=True)
    view = kubernetes.cluster_view(fact.parse(f"{API_OUT}etcdmembers\t{MEMBERS}\netcdhealth\t{HEALTH}\n"), None)
    assert view.stacked_members is not None
    assert [(m.id, m.name, m.started) for m in view.stacked_members] == [
        ("b", "master01", True), ("c", "master02", True), ("d", "", False)]
    assert view.stacked_health == {"https://198.18.2.11:2379": True, "https://198.18.2.12:2379": False}
    assert view.stacked_error is None
    failed = kubernetes.cluster_view(fact.parse(f"{API_OUT}etcderror\tcontext deadline exceeded\n"), None)
    assert failed.stacked_members is None and failed.stacked_error == "context deadline exceeded"
    # external etcd: not asked, nothing recorded
    assert kubernetes.cluster_view(kubernetes.ApiState().parse(API_OUT), None).stacked_members is None


def test_the_stacked_script_reads_both_through_the_local_member_in_real_sh(tmp_path: Path) -> None:
    """The snippet in /bin/sh with kubectl and etcdctl on PATH that print recorded answers (and
    log their argv): one line each, the API query's exit status kept."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "argv.log"
    (bin_dir / "kubectl").write_text(f"#!/bin/sh\nprintf 'kubectl %s\\n' \"$*\" | tr -d '\\\\' >> {log}\n"
                                     "printf 'configmaps\\tkubeadm-config\\n'\n")
    (bin_dir / "etcdctl").write_text(
        f"#!/bin/sh\nprintf 'etcdctl %s\\n' \"$*\" >> {log}\n"
        f"case \"$*\" in *'member list'*) printf '%s\\n' '{MEMBERS}';; *) printf '%s\\n' '{HEALTH}'; exit 1;; esac\n")
    for tool in ("kubectl", "etcdctl"):
        os.chmod(bin_dir / tool, 0o755)
    script = kubernetes.ApiState(stacked=True).script()
    script = script.replace("/etc/kubernetes/admin.conf", str(tmp_path / "admin.conf")).replace(
        "/etc/kubernetes/manifests/etcd.yaml", str(tmp_path / "etcd.yaml"))
    (tmp_path / "admin.conf").write_text("")
    (tmp_path / "etcd.yaml").write_text("")
    run = subprocess.run(["/bin/sh", "-c", f"f() {{\n{script}\n}}\nf"], capture_output=True, text=True,
                         env={"PATH": f"{bin_dir}:/usr/bin:/bin"}, check=False)
    assert run.returncode == 0, run.stderr
    view = kubernetes.cluster_view(kubernetes.ApiState(stacked=True).parse(run.stdout), None)
    assert view.stacked_members is not None and len(view.stacked_members) == 3
    assert view.stacked_health is not None and view.stacked_health["https://198.18.2.12:2379"] is False
    calls = [c for c in log.read_text().splitlines() if c.split()[0] in ("kubectl", "etcdctl")]
    # the API (Nodes, Secrets, kubeadm-config), kube-public's cluster-info, hactl's pod network
    # objects; then kubeadm's etcd through the local member
    assert [c.split()[0] for c in calls] == ["kubectl", "kubectl", "kubectl", "etcdctl", "etcdctl"]
    assert "--endpoints=https://127.0.0.1:2379" in calls[3] and "healthcheck-client.crt" in calls[3]
    assert calls[4].endswith("endpoint health --cluster")


def master_answer(name: str, api: str | None) -> Any:
    sections = {
        "system": SectionOutput(f"hostname={name}\n", "", 0),
        "binaries": SectionOutput("", "", 0),
        "services": SectionOutput("Id=kubelet.service\nActiveState=active\nUnitFileState=enabled\n", "", 0),
        "k8s.files": SectionOutput("admin_conf=1\nkubelet_conf=1\nmanifest=kube-apiserver.yaml\n", "", 0),
        "k8s.certs": SectionOutput("", "", 0),
    }
    if api is not None:
        sections["k8s.api"] = SectionOutput(api, "", 0)
    return answer(sections)


async def test_a_departing_node_is_probed_at_its_internal_ip_as_its_role() -> None:
    lab = spec("lab.yaml")
    doc = lab.model_dump(mode="json", by_alias=True, exclude_none=True)
    doc["workers"] = [w for w in doc["workers"] if w["name"] != "worker01"]
    cluster = Cluster.model_validate(doc)
    api = API_OUT.replace('"kubernetes.io/os":"linux"}\n',
                          '"kubernetes.io/os":"linux"}\t198.18.0.31\n')
    transports: dict[str, Transport | BaseException] = {
        h.name: FakeTransport(h.name).on(lambda w: "__hactl_run" in w,
                                         respond=master_answer(h.name, api if h.name == "master01" else None))
        for h in cluster.masters}
    worker = FakeTransport("worker01").on(lambda w: "__hactl_run" in w, respond=master_answer("worker01", None))
    asked: list[Sequence[Host]] = []

    async def connect(hosts: Sequence[Host]) -> Mapping[str, Transport | BaseException]:
        asked.append(hosts)
        return {"worker01": worker}

    observed = await probe(cluster, transports, connect=connect)
    assert [[(h.name, str(h.address)) for h in batch] for batch in asked] == [[("worker01", "198.18.0.31")]]
    assert [sections_of(c) for c in worker.calls] == [["system", "binaries", "services", "k8s.files", "k8s.certs",
                                                       "preflight"]]
    facts = observed["worker01"]
    assert facts.reachable and facts.kubernetes is not None and facts.kubernetes.kubelet_conf

    # unreachable: recorded as such (the plan then decides), never an aborted probe
    async def refused(hosts: Sequence[Host]) -> Mapping[str, Transport | BaseException]:
        return {"worker01": UnreachableError("connection refused", host="worker01")}

    observed = await probe(cluster, transports, connect=refused)
    assert not observed["worker01"].reachable

    # nothing departs: no extra round, nobody is connected
    asked.clear()
    await probe(lab, {**transports, **{h.name: FakeTransport(h.name).on(
        lambda w: "__hactl_run" in w, respond=master_answer(h.name, None))
        for h in lab.all_hosts() if h.name not in transports}}, connect=connect)
    assert asked == []


@pytest.mark.parametrize("ip", ["198.18.0.11"])
async def test_a_departing_node_at_a_spec_hosts_address_is_not_connected(ip: str) -> None:
    """A Node renamed in the spec (same machine, new name): never probed as a departing host."""
    lab = spec("lab.yaml")
    doc = lab.model_dump(mode="json", by_alias=True, exclude_none=True)
    doc["workers"] = [w for w in doc["workers"] if w["name"] != "worker01"]
    cluster = Cluster.model_validate(doc)
    api = API_OUT.replace('"kubernetes.io/os":"linux"}\n', f'"kubernetes.io/os":"linux"}}\t{ip}\n')
    transports: dict[str, Transport | BaseException] = {
        h.name: FakeTransport(h.name).on(lambda w: "__hactl_run" in w,
                                         respond=master_answer(h.name, api if h.name == "master01" else None))
        for h in cluster.masters}
    asked: list[Sequence[Host]] = []

    async def connect(hosts: Sequence[Host]) -> Mapping[str, Transport | BaseException]:
        asked.append(hosts)
        return {}

    observed = await probe(cluster, transports, connect=connect)
    assert asked == [] and "worker01" not in observed.hosts
