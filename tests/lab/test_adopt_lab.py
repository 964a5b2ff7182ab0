"""hactl meets a cluster built by hand with the seed's commands (tests/lab/test_standins_e2e.py).

External etcd under Debian's unit, with its data in /var/lib/etcd/default and no client
certificate hactl knows:

- `hactl plan` refuses, naming each member: it never starts new etcd members over a running etcd
  it cannot read (before this rule it planned a bootstrap that emptied /var/lib/etcd);
- given a client certificate of that etcd's CA, it reads the cluster and plans only the real
  differences with the spec (the seed's haproxy.cfg, kubelet not enabled, the workers);
- `hactl apply` converges it without touching etcd or the control plane (same member IDs, same
  Node objects), and the next plan shows no changes;
- a rebuilt member (etcd03) is refused until the etcd CA's key is on a member, then replaced.

Stacked etcd, exactly the seed's `kubeadm init` / `join --control-plane` commands: the plan lists
only the seed's haproxy.cfg and kubelet not enabled at boot; once those two are made as the spec
says by hand (its haproxy.cfg, `systemctl enable kubelet`), the plan shows no changes.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from hactl.cli import main
from hactl.plan import desired
from hactl.plan.etcd_ops import STRICT_RECONFIG_WINDOW
from hactl.render import pki
from tests.lab.test_standins_e2e import (
    EPKI,
    ETCD,
    KNOBS,
    MASTERS,
    cp_flags,
    etcdctl,
    init_by_hand,
    join_masters_by_hand,
    stacked_by_hand,
    wait,
)

ADOPTED = [
    ("lb[lb01].haproxy_cfg", ["update"]),
    ("master[master01].kubelet", ["update"]),
    ("master[master02].kubelet", ["update"]),
    ("master[master03].kubelet", ["update"]),
    ("worker[worker01]", ["create"]),
    ("worker[worker02]", ["create"]),
    ("cluster.bootstrap-token", ["create"]),
]


def member_ids(lab: Any, stacked: bool = False) -> dict[str, str]:
    res = etcdctl(lab, "master01", "member list -w json") if stacked else lab.run(
        "etcd01", f"ETCDCTL_API=3 etcdctl --endpoints=https://127.0.0.1:2379 --cacert={EPKI}/ca.crt "
        f"--cert={EPKI}/server.crt --key={EPKI}/server.key member list -w json", timeout=30)
    assert res.returncode == 0, res.stderr
    return {m["name"]: format(m["ID"], "x") for m in json.loads(res.stdout)["members"]}


def node_uids(lab: Any) -> dict[str, str]:
    res = lab.run("master01", "kubectl --kubeconfig /etc/kubernetes/admin.conf --request-timeout=5s "
                  "get nodes -o json", timeout=30)
    assert res.returncode == 0, res.stderr
    return {i["metadata"]["name"]: i["metadata"]["uid"] for i in json.loads(res.stdout)["items"]}


def test_plan_refuses_then_adopts_a_cluster_built_by_hand(
    lab_factory: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HACTL_STATE_DIR", str(tmp_path / "state"))
    lab = lab_factory(knobs=KNOBS)
    ca, join, key = init_by_hand(lab)
    join_masters_by_hand(lab, join, key)
    members, nodes = member_ids(lab), node_uids(lab)
    assert sorted(members) == list(ETCD) and sorted(nodes) == list(MASTERS)
    runner = CliRunner()

    refused = runner.invoke(main, ["plan", "-f", lab.spec_file])
    assert refused.exit_code == 1, refused.output
    assert "the plan is refused" in refused.output
    for member in ETCD:
        assert (f"{member}: an etcd service is running but hactl cannot read it (exit status 128: "
                "Error: open /etc/etcd/pki/healthcheck-client.crt: no such file or directory)") in refused.output
    assert lab.run("etcd01", "test -d /var/lib/etcd/default/member").returncode == 0

    for member in ETCD:  # what the refusal says: a client certificate of that etcd's CA
        client = pki.issue(ca, "hactl-healthcheck", usage="client", key_type="ecdsa")
        lab.put(member, f"{EPKI}/healthcheck-client.crt", client.cert_pem())
        lab.put(member, f"{EPKI}/healthcheck-client.key", client.key_pem(), 0o600)
    planned = runner.invoke(main, ["plan", "-f", lab.spec_file, "--json"])
    assert planned.exit_code == 0, planned.output
    doc = json.loads(planned.stdout)
    assert [(c["address"], c["actions"]) for c in doc["changes"]] == ADOPTED
    assert [s["id"] for s in doc["steps"]] == [  # no etcd, PKI, init or control-plane join step
        "lb[lb01].haproxy", "cluster.bootstrap-token", "master[master01].kubelet",
        "master[master02].kubelet", "master[master03].kubelet", "worker[worker01].join",
        "worker[worker02].join", "cluster.verify"]

    apply_then_no_changes(lab)
    # the same etcd cluster and the same Kubernetes objects: nothing was rebuilt
    assert member_ids(lab) == members
    assert {n: u for n, u in node_uids(lab).items() if n in MASTERS} == nodes
    assert sorted(node_uids(lab)) == [*MASTERS, "worker01", "worker02"]

    # etcd03 is rebuilt (data and certificates gone). Its new certificates need the etcd CA's
    # key, which the hand-made bring-up never put on the members: refused at plan time
    assert lab.run("etcd03", "systemctl stop etcd && rm -rf /var/lib/etcd/default /etc/etcd/pki",
                   via="ssh").returncode == 0
    refused = runner.invoke(main, ["plan", "-f", lab.spec_file])
    assert refused.exit_code == 1, refused.output
    assert ("etcd03 needs etcd certificates from the etcd CA (/etc/etcd/pki/ca.crt on the members), "
            "but no member holds its key (/etc/etcd/pki/ca.key)") in refused.output
    lab.put("etcd01", f"{EPKI}/ca.key", ca.key_pem(), 0o600)  # what the refusal says
    planned = runner.invoke(main, ["plan", "-f", lab.spec_file, "--json"])
    assert planned.exit_code == 0, planned.output
    assert [s["id"] for s in json.loads(planned.stdout)["steps"]] == [
        "pki.etcd[etcd03]", "etcd.member[etcd03].remove", "etcd.member[etcd03].add",
        "etcd.member[etcd03].start", "etcd.member[etcd03].promote", "etcd.health", "cluster.verify"]
    apply_then_no_changes(lab)
    replaced = member_ids(lab)
    assert {n: replaced[n] for n in ("etcd01", "etcd02")} == {n: members[n] for n in ("etcd01", "etcd02")}
    assert sorted(replaced) == list(ETCD) and replaced["etcd03"] != members["etcd03"]


def apply_then_no_changes(lab: Any) -> None:
    runner = CliRunner()
    applied = runner.invoke(main, ["apply", "-f", lab.spec_file, "--auto-approve"])
    assert applied.exit_code == 0, applied.output[-6000:]
    assert "is healthy." in applied.output
    again = runner.invoke(main, ["plan", "-f", lab.spec_file, "--detailed-exitcode"])
    assert again.exit_code == 0, again.output
    assert again.stdout.rstrip("\n").splitlines()[-1] == "No changes. The cluster matches the spec."


def test_plan_adopts_the_seeds_stacked_cluster(
    lab_factory: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HACTL_STATE_DIR", str(tmp_path / "state"))
    lab, join, key = stacked_by_hand(lab_factory)
    for master in MASTERS[1:]:
        # as a person would: the next control-plane join once the stacked etcd is healthy again
        # and stayed so through etcd's strict-reconfig window (else "etcdserver: unhealthy cluster")
        wait(lambda: etcdctl(lab, "master01", "endpoint health --cluster").returncode == 0, 60,
             "stacked etcd healthy")
        time.sleep(STRICT_RECONFIG_WINDOW)
        res = lab.run(master, f"{join} {cp_flags(lab, master, key)}", via="ssh", timeout=300)
        assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    res = lab.run("worker01", join, via="ssh", timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    members, nodes = member_ids(lab, stacked=True), node_uids(lab)
    assert sorted(members) == list(MASTERS) and sorted(nodes) == [*MASTERS, "worker01"]

    planned = CliRunner().invoke(main, ["plan", "-f", lab.spec_file, "--json"])
    assert planned.exit_code == 0, planned.output
    assert [(c["address"], c["actions"]) for c in json.loads(planned.stdout)["changes"]] == [
        ("lb[lb01].haproxy_cfg", ["update"]),
        *((f"{node}.kubelet", ["update"]) for node in
          ("master[master01]", "master[master02]", "master[master03]", "worker[worker01]")),
    ]
    # the two differences are choices a person makes by hand: the spec's haproxy.cfg (HTTPS
    # /readyz checks, not the seed's tcp-check) and kubelet enabled at boot (kubeadm's install
    # step); with both, the hand-made cluster is exactly what the spec describes
    assert lab.run("lb01", "cat > /etc/haproxy/haproxy.cfg && systemctl reload haproxy", via="ssh",
                   input=desired.haproxy_cfg(lab.cluster)).returncode == 0
    for node in (*MASTERS, "worker01"):
        assert lab.run(node, "systemctl enable kubelet", via="ssh").returncode == 0
    plan = CliRunner().invoke(main, ["plan", "-f", lab.spec_file, "--detailed-exitcode"])
    assert plan.exit_code == 0, plan.output
    assert plan.stdout.rstrip("\n").splitlines()[-1] == "No changes. The cluster matches the spec."
    assert member_ids(lab, stacked=True) == members and node_uids(lab) == nodes
