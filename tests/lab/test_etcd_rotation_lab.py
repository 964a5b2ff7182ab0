"""Issue 12 §1, the etcd rotation on a lab (real etcd 3.4, real HAProxy, real kubectl, the
stand-ins' kubelet and API servers), from the session's shared converged specs/lab.yaml lab
(tests/lab/conftest.py; etcd04 and etcd05 are its spare nodes): external etcd grown 3 → 5, its first two members taken out
of the spec, then the next one powered off. Each step is a spec edit followed by ``hactl
apply``; the plan rewrites kubeadm-config's ``etcd.external.endpoints`` and every master's
``--etcd-servers`` (one master at a time) after the additions and before the removals, so
that the API never depends on a member that is gone. A reader asks ``/readyz`` (which reads
etcd) through the load balancer every 0.5 s from the first growth to the end: no request may
fail, also while each API server restarts on its new manifest and after etcd03 is powered off.
"""

from __future__ import annotations

import copy
import json
import os
import time
from pathlib import Path
from typing import Any

import yaml
from faultlib import ApiReader
from test_apply_lab import hactl, show

MANIFEST = "/etc/kubernetes/manifests/kube-apiserver.yaml"
KUBECTL = "kubectl --kubeconfig /etc/kubernetes/admin.conf --request-timeout=10s "
ETCDCTL = ("etcdctl --endpoints=https://127.0.0.1:2379 --cacert=/etc/etcd/pki/ca.crt "
           "--cert=/etc/etcd/pki/healthcheck-client.crt --key=/etc/etcd/pki/healthcheck-client.key ")


def with_members(base: dict[str, Any], names: list[str], path: Path) -> str:
    doc = copy.deepcopy(base)
    doc["etcd"]["members"] = [m for m in doc["etcd"]["members"] if m["name"] in names]
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return str(path)


def etcd_servers(lab: Any, master: str) -> list[str]:
    res = lab.run(master, f"grep -o -e '--etcd-servers=[^[:space:]\"]*' {MANIFEST}")
    assert res.returncode == 0, res.stderr
    return res.stdout.strip().split("=", 1)[1].split(",")


def kubeadm_config_endpoints(lab: Any) -> list[str]:
    res = lab.run("master01", KUBECTL + "get configmap -n kube-system kubeadm-config -o json")
    assert res.returncode == 0, res.stderr
    config = yaml.safe_load(json.loads(res.stdout)["data"]["ClusterConfiguration"])
    return list(config["etcd"]["external"]["endpoints"])


def test_etcd_rotation_keeps_the_api_answering(shared_lab: Any, tmp_path: Path) -> None:
    lab = shared_lab()  # converged with etcd01..03; etcd04, etcd05 are idle spare nodes
    base = lab.spec_doc()
    base["etcd"]["members"] += [m for m in lab.spares["etcd"] if m["name"] in ("etcd04", "etcd05")]
    url = {m["name"]: f"https://{m['address']}:2379" for m in base["etcd"]["members"]}
    masters = [m["name"] for m in base["masters"]]
    first = with_members(base, ["etcd01", "etcd02", "etcd03"], tmp_path / "three.yaml")
    grown = with_members(base, ["etcd01", "etcd02", "etcd03", "etcd04", "etcd05"], tmp_path / "five.yaml")
    rotated = with_members(base, ["etcd03", "etcd04", "etcd05"], tmp_path / "rotated.yaml")
    env = {**os.environ, "HACTL_STATE_DIR": str(tmp_path / "state")}

    res = hactl("plan", "-f", first, "--detailed-exitcode", env=env)  # the converged start
    assert res.returncode == 0 and "No changes" in res.stdout, show(res)
    assert all(etcd_servers(lab, m) == [url[n] for n in ("etcd01", "etcd02", "etcd03")] for m in masters)

    lb = base["loadBalancer"]
    with ApiReader(lb["hosts"][0]["address"], int(lb.get("frontendPort", 6443)), period=0.5) as reader:
        # 3 → 5: the members are added, then every API server lists all five
        res = hactl("apply", "-f", grown, "--auto-approve", env=env)
        assert res.returncode == 0, show(res)
        five = [url[f"etcd0{i}"] for i in range(1, 6)]
        for m in masters:
            assert etcd_servers(lab, m) == five, m
        assert kubeadm_config_endpoints(lab) == five

        # the first two out: the API servers leave them first, then they are removed
        res = hactl("plan", "-f", rotated, "--json", env=env)
        assert res.returncode == 0, show(res)
        order = [s["id"] for s in json.loads(res.stdout)["steps"]]
        rewrites = [order.index(f"master[{m}].etcd-servers") for m in masters]
        removals = [order.index(f"etcd.member[{n}].remove") for n in ("etcd01", "etcd02")]
        assert order.index("cluster.kubeadm-config") < rewrites[0]
        assert rewrites == sorted(rewrites) and rewrites[-1] < min(removals), order
        res = hactl("apply", "-f", rotated, "--auto-approve", env=env)
        assert res.returncode == 0, show(res)
        kept = [url[n] for n in ("etcd03", "etcd04", "etcd05")]
        for m in masters:
            assert etcd_servers(lab, m) == kept, m
        assert kubeadm_config_endpoints(lab) == kept
        listed = lab.run("etcd05", ETCDCTL + "member list")
        assert listed.returncode == 0 and sorted(
            line.split(", ")[2] for line in listed.stdout.strip().splitlines()) == \
            ["etcd03", "etcd04", "etcd05"], listed.stdout
        res = hactl("plan", "-f", rotated, "--detailed-exitcode", env=env)
        assert res.returncode == 0 and "No changes" in res.stdout, show(res)

        # the next member powered off: quorum holds (2 of 3), and no API server lists only it
        lab.stop("etcd03")
        before = reader.ok
        time.sleep(20)
        assert reader.ok >= before + 30, reader.summary()
    summary = reader.summary()
    print(f"reader through the LB: {summary}")
    assert reader.ok > 50, summary
    assert reader.failed == 0, summary
