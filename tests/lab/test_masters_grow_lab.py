"""Issue 13, adding masters (external etcd), on a lab (real etcd, real HAProxy, real kubectl, the
stand-ins' kubeadm, kubelet and API servers): a converged cluster of 3 masters (the session's
shared converged specs/lab.yaml lab, tests/lab/conftest.py; master04 and master05 are its spare
nodes) grown to 5 by a spec edit and ``hactl apply``. The new masters join one at a time, the load balancer gets their
backends (a graceful reload), the apply's closing check passes and the next plan is empty. A
reader asks ``/readyz`` through the load balancer every 0.5 s for the whole apply: no request may
fail (a refused connection that HAProxy retries on another server is not a failure: the reader
sees only what the load balancer answers)."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import yaml
from faultlib import ApiReader
from test_apply_lab import hactl, show

from hactl.journal import read_journal


def with_masters(base: dict[str, Any], count: int, path: Path) -> str:
    doc = copy.deepcopy(base)
    doc["masters"] = doc["masters"][:count]
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return str(path)


def test_three_masters_grow_to_five_with_the_api_answering(shared_lab: Any, tmp_path: Path) -> None:
    lab = shared_lab()  # converged with master01..03; master04, master05 are idle spare nodes
    base = lab.spec_doc()
    base["masters"] += [m for m in lab.spares["masters"] if m["name"] in ("master04", "master05")]
    three = with_masters(base, 3, tmp_path / "three.yaml")
    five = with_masters(base, 5, tmp_path / "five.yaml")
    state = tmp_path / "state"
    env = {**os.environ, "HACTL_STATE_DIR": str(state)}

    res = hactl("plan", "-f", three, "--detailed-exitcode", env=env)  # the converged start
    assert res.returncode == 0 and "No changes" in res.stdout, show(res)
    first = set((state / "journal").rglob("*.jsonl"))

    lb = base["loadBalancer"]
    with ApiReader(lb["hosts"][0]["address"], int(lb.get("frontendPort", 6443)), period=0.5) as reader:
        res = hactl("apply", "-f", five, "--auto-approve", env=env)
        assert res.returncode == 0, show(res)
        assert "is healthy." in res.stdout, show(res)
    summary = reader.summary()
    print(f"reader through the LB: {summary}")
    assert reader.ok > 10 and reader.failed == 0, summary

    (journal,) = set((state / "journal").rglob("*.jsonl")) - first
    ends = {r["id"]: r for r in read_journal(journal) if r["event"] == "step_end"}
    joins = [ends[f"master[{m}].join"] for m in ("master04", "master05")]
    assert all(j["outcome"] == "ok" for j in joins), joins
    assert joins[0]["end_mono"] <= joins[1]["start_mono"], joins  # one at a time
    assert ends["lb[lb01].haproxy"]["outcome"] == "ok"
    cfg = lab.run("lb01", "cat /etc/haproxy/haproxy.cfg")
    assert cfg.returncode == 0
    for m in base["masters"]:
        assert f"server {m['name']} {m['address']}:6443" in cfg.stdout, cfg.stdout
    nodes = lab.run("master01", "kubectl --kubeconfig /etc/kubernetes/admin.conf get nodes "
                    "-l node-role.kubernetes.io/control-plane -o name")
    assert nodes.returncode == 0
    assert sorted(nodes.stdout.split()) == [f"node/master0{i}" for i in range(1, 6)], nodes.stdout

    res = hactl("plan", "-f", five, "--detailed-exitcode", env=env)
    assert res.returncode == 0 and "No changes" in res.stdout, show(res)
