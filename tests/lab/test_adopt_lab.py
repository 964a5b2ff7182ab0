"""hactl meets a cluster built by hand with the seed's commands (tests/lab/test_standins_e2e.py):
its external etcd runs under Debian's unit, with its data in /var/lib/etcd/default and no client
certificate hactl knows.

- `hactl plan` refuses, naming each member: it never starts new etcd members over a running etcd
  it cannot read (before this rule it planned a bootstrap that emptied /var/lib/etcd);
- given a client certificate of that etcd's CA, it reads the cluster and plans only the real
  differences with the spec (the seed's haproxy.cfg, kubelet not enabled, the workers);
- `hactl apply` converges it without touching etcd or the control plane (same member IDs, same
  Node objects), and the next plan shows no changes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from hactl.cli import main
from hactl.render import pki
from tests.lab.test_standins_e2e import (
    EPKI,
    ETCD,
    KNOBS,
    MASTERS,
    init_by_hand,
    join_masters_by_hand,
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


def member_ids(lab: Any) -> dict[str, str]:
    res = lab.run("etcd01", f"ETCDCTL_API=3 etcdctl --endpoints=https://127.0.0.1:2379 --cacert={EPKI}/ca.crt "
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

    applied = runner.invoke(main, ["apply", "-f", lab.spec_file, "--auto-approve"])
    assert applied.exit_code == 0, applied.output[-6000:]
    assert "is healthy." in applied.output
    again = runner.invoke(main, ["plan", "-f", lab.spec_file, "--detailed-exitcode"])
    assert again.exit_code == 0, again.output
    assert again.stdout.rstrip("\n").splitlines()[-1] == "No changes. The cluster matches the spec."
    # the same etcd cluster and the same Kubernetes objects: nothing was rebuilt
    assert member_ids(lab) == members
    assert {n: u for n, u in node_uids(lab).items() if n in MASTERS} == nodes
    assert sorted(node_uids(lab)) == [*MASTERS, "worker01", "worker02"]
