"""Issue 13 on a stacked cluster (specs/stacked.yaml: kubeadm's etcd on every master), on the
session's shared converged lab: masters 3 → 5 → 3, the second step removing master01 (the one
that ran ``kubeadm init``) and master02, and workers added and removed — worker01's drain first
blocked by a PodDisruptionBudget (the apply stops after ``apply.drainTimeout`` naming the pod and
the budget; the node stays cordoned), then allowed once the budget allows it. During every apply
a reader asks ``/readyz`` through the load balancer every 0.5 s: zero failed requests. Each step
ends with the apply's own check passing and a second plan showing no changes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from membership import Day2

RS = """{"apiVersion": "apps/v1", "kind": "ReplicaSet",
 "metadata": {"name": "web-%(node)s", "namespace": "default", "labels": {"app": "web"}},
 "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web", "node": "%(node)s"}},
   "template": {"metadata": {"labels": {"app": "web", "node": "%(node)s"}},
     "spec": {"nodeSelector": {"kubernetes.io/hostname": "%(node)s"},
              "containers": [{"name": "web", "image": "registry.k8s.io/pause:3.9"}]}}}}"""
"""A workload of two replicas under one budget, one on worker01 and one on worker02: a
ReplicaSet per worker, pinned by nodeSelector (the lab's scheduler, like the real one, places
the ReplicaSet controller's pods; it has no pod anti-affinity to spread one ReplicaSet)."""
PDB = """{"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
 "metadata": {"name": "web", "namespace": "default"},
 "spec": {"minAvailable": %d, "selector": {"matchLabels": {"app": "web"}}}}"""


@pytest.mark.timeout(1200)  # a shared lab converged first, then 3 → 5 → 3
def test_stacked_masters_3_5_3_removing_the_init_master_and_workers_in_and_out(
        shared_lab: Any, tmp_path: Path) -> None:
    lab = shared_lab("specs/stacked.yaml")
    day2 = Day2(lab, tmp_path)
    spare_masters, spare_workers = lab.spares["masters"], lab.spares["workers"]
    five = lab.write_spec(lambda d: (d["masters"].extend(spare_masters),
                                     d["workers"].extend(spare_workers)), "five")

    def shrink(d: dict[str, Any]) -> None:
        d["masters"] = [m for m in d["masters"] + spare_masters if m["name"] not in ("master01", "master02")]
        d["workers"] = list(spare_workers)
        d["apply"] = {"drainTimeout": 20}
    three = lab.write_spec(shrink, "three")

    # 3 → 5 masters and a second worker: joins one at a time, each waiting for a settled etcd
    res, _ = day2.apply(five)
    assert "is healthy." in res.stdout, res.stdout
    day2.no_changes(five)
    assert day2.stacked_members("master01") == ["master01", "master02", "master03", "master04", "master05"]

    # a workload on worker01 (one replica there, one on worker02) under a budget of 2
    for node in ("worker01", "worker02"):
        day2.kubectl("master03", "apply -f -", input=RS % {"node": node})
    day2.kubectl("master03", "apply -f -", input=PDB % 2)
    day2.wait_budget(healthy=2)
    on = {p["spec"].get("nodeName"): p["metadata"]["name"] for p in json.loads(
        day2.kubectl("master03", "get pods -n default -l app=web -o json"))["items"]}
    web_a, web_b = on["worker01"], on["worker02"]

    # 5 → 3 (master01 and master02 out) and worker01 out: the masters leave, worker01's drain
    # is refused by the budget until drainTimeout; the apply fails, worker01 stays cordoned
    plan = day2.hactl("plan", "-f", three)
    assert plan.returncode == 0, plan.stderr
    print(f"--- plan 5 -> 3 (stacked)\n{plan.stdout}")
    text = " ".join(plan.stdout.split())
    assert ("(5 voting members, 5 healthy; without master01: 4 members need ⌊4/2⌋+1 = 3 healthy, "
            "4 are)") in text, plan.stdout
    assert "without master01, master02: 3 members need ⌊3/2⌋+1 = 2 healthy, 3 are" in text
    res, _ = day2.apply(three, expect=1)
    print(f"--- apply blocked by the budget\n{res.stdout}{res.stderr}")
    out = " ".join((res.stdout + res.stderr).split())
    assert web_a in out and "disruption budget" in out, out
    assert "worker01" in out and "cordoned" in out, out
    worker01 = day2.nodes("master03")["worker01"]
    assert worker01["spec"].get("unschedulable") is True

    # the budget allows one disruption: the drain goes through, the rest of the plan finishes
    day2.kubectl("master03", "apply -f -", input=PDB % 1)
    day2.wait_budget(healthy=2, allowed=1)
    res, _ = day2.apply(three)
    assert "is healthy." in res.stdout, res.stdout
    day2.no_changes(three)

    nodes = day2.nodes("master03")
    assert sorted(nodes) == ["master03", "master04", "master05", "worker02"], sorted(nodes)
    assert day2.stacked_members("master03") == ["master03", "master04", "master05"]
    for gone in ("master01", "master02", "worker01"):
        day2.assert_reset(gone)
    cfg = lab.run("lb01", "cat /etc/haproxy/haproxy.cfg").stdout
    assert "server master01 " not in cfg and "server master02 " not in cfg and "server master05 " in cfg
    pods = json.loads(day2.kubectl("master03", "get pods -n default -o json"))["items"]
    names = [p["metadata"]["name"] for p in pods]
    assert web_b in names and web_a not in names, names  # web_a was evicted, web_b kept
    # worker01's ReplicaSet made a new pod, which no node takes (worker01 is gone)
    pending = [p for p in pods if p["metadata"]["name"].startswith("web-worker01-")]
    assert [p["status"].get("phase") for p in pending] == ["Pending"], pods
