"""``hactl drill`` on a converged specs/lab.yaml lab (issue 13):

- with the kube-scheduler Lease holder's master as ``--node``, the drill passes (exit 0, --json
  and --junit), the scheduler's leadership moves off that master, and a reader of our own
  (``GET /readyz`` through the load balancer once a second, tests/lab/faultlib.ApiReader) sees
  zero failed requests from before the drill to its end;
- with two of the three etcd members powered off, the drill refuses (exit 1) and touches
  nothing: every master's manifests and kubelet, etcd01's etcd and the lock folder are as before.

And on a converged specs/stacked.yaml lab (etcd as kubeadm static Pods on the masters): the drill
passes both faults (the control plane of the scheduler's leader master, then the etcd member of
another master: drained from the load balancer, etcd.yaml parked), leadership moves, our reader
sees zero failed requests, and afterwards ``hactl check`` is healthy, every etcd.yaml is back
and a second ``hactl plan`` shows no changes.

One converge per lab only (the suite's time budget).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

from tests.lab.faultlib import ApiReader
from tests.lab.test_apply_lab import REPO, hactl, show

MASTERS = ("master01", "master02", "master03")


@dataclass
class TimedReader(ApiReader):
    """:class:`ApiReader` that also keeps when (UTC) each failed request was made."""

    failures: list[str] = field(default_factory=list)

    def once(self) -> tuple[bool, str]:
        started = time.strftime("%H:%M:%S", time.gmtime()) + f".{int(time.time() * 10) % 10}"
        good, why = super().once()
        if not good:
            self.failures.append(f"{started} {why}")
        return good, why


def drill_timeline(stderr: str) -> list[str]:
    """The drill's own events (``--log-format json``): when each fault started, was restored."""
    lines = []
    for line in stderr.splitlines():
        if not line.startswith("{"):
            continue
        event = json.loads(line)
        if str(event.get("event", "")).startswith(("drill.", "check.", "lock.")):
            lines.append(f"{str(event.get('timestamp', ''))[11:22]} {event['event']} "
                         f"{event.get('kind', '')} {event.get('host', '')}".rstrip())
    return lines


def scheduler_holder(lab: Any) -> str:
    res = lab.run("master01", ["kubectl", "--kubeconfig", "/etc/kubernetes/admin.conf", "-n",
                               "kube-system", "get", "lease", "kube-scheduler", "-o",
                               "jsonpath={.spec.holderIdentity}"])
    assert res.returncode == 0, res.stderr
    return str(res.stdout.strip().split("_", 1)[0])


def host_state(lab: Any) -> dict[str, str]:
    """What the drill could change: manifests and kubelet on the masters, etcd01, the lock."""
    state = {}
    for master in MASTERS:
        res = lab.run(master, "ls /etc/kubernetes/manifests; systemctl is-active kubelet; "
                              "ls -d /etc/kubernetes/hactl-drill-parked 2>&1 || true")
        state[master] = res.stdout
    res = lab.run("etcd01", "systemctl is-active etcd; ls /var/lib/hactl/lock.d 2>&1 || true")
    state["etcd01"] = res.stdout
    return state


def test_drill_passes_moves_leadership_and_refuses_without_quorum(
    lab_factory: Any, tmp_path: Path
) -> None:
    lab = lab_factory()
    spec = lab.spec_file
    env = {**os.environ, "HACTL_STATE_DIR": str(tmp_path / "state")}
    res = hactl("apply", "-f", spec, "--auto-approve", env=env)
    assert res.returncode == 0, show(res)

    node = scheduler_holder(lab)
    assert node in MASTERS
    lb = lab.cluster.load_balancer
    junit = tmp_path / "drill.xml"
    with ApiReader(str(lb.hosts[0].address), lb.frontend_port) as reader:
        res = hactl("drill", "-f", spec, "--node", node, "--json", "--junit", str(junit),
                    env=env, timeout=900)
    print(res.stdout[-4000:])
    assert res.returncode == 0, show(res)
    report = json.loads(res.stdout)
    assert report["passed"] is True and report["final_check_healthy"] is True, show(res)
    cp, member = report["faults"]
    assert (cp["kind"], cp["host"]) == ("control-plane", node)
    assert cp["lease_moves"].get("kube-scheduler") is not None, cp  # leadership moved
    assert cp["detect_seconds"] is not None and cp["recover_seconds"] is not None
    assert cp["reader"]["failed"] == 0 and member["reader"]["failed"] == 0
    assert (member["kind"], member["restored"]) == ("etcd-member", True)
    assert reader.ok > 0 and reader.failed == 0, reader.summary()
    suite = ElementTree.parse(junit).getroot()
    assert suite.get("failures") == "0" and suite.get("tests") == "3"
    assert scheduler_holder(lab) in MASTERS

    # two of three etcd members off: refused, nothing touched
    lab.stop("etcd02")
    lab.stop("etcd03")
    before = host_state(lab)
    res = hactl("drill", "-f", spec, env=env, timeout=300)
    assert res.returncode == 1, show(res)
    assert "Drill refused" in res.stdout and "nothing was touched" in res.stdout, show(res)
    assert "degraded" in res.stdout, show(res)
    after = host_state(lab)
    assert after == before
    assert "active" in after["etcd01"] and "No such file" in after["etcd01"], after
    for master in MASTERS:
        assert "kube-apiserver.yaml" in after[master] and "No such file" in after[master], after


def test_drill_on_stacked_etcd_stops_a_member_and_everything_comes_back(
    lab_factory: Any, tmp_path: Path
) -> None:
    lab = lab_factory(REPO / "specs" / "stacked.yaml")
    spec = lab.spec_file
    env = {**os.environ, "HACTL_STATE_DIR": str(tmp_path / "state")}
    res = hactl("apply", "-f", spec, "--auto-approve", env=env)
    assert res.returncode == 0, show(res)

    node = scheduler_holder(lab)
    assert node in MASTERS
    lb = lab.cluster.load_balancer
    junit = tmp_path / "drill.xml"
    reader = TimedReader(str(lb.hosts[0].address), lb.frontend_port)
    with reader:
        res = hactl("--log-format", "json", "-v", "drill", "-f", spec, "--json", "--junit",
                    str(junit), env=env, timeout=900)
    print(res.stdout[-6000:])
    timeline = drill_timeline(res.stderr)
    print("\n".join(timeline), "\nreader failures:", reader.failures)
    assert res.returncode == 0, show(res)
    report = json.loads(res.stdout)
    assert report["passed"] is True and report["final_check_healthy"] is True, show(res)
    cp, member = report["faults"]
    # by default the master holding the most leader Leases: the scheduler's leader's or (when
    # both Leases are on one master) that one
    assert cp["kind"] == "control-plane" and cp["host"] in MASTERS, cp
    if node == cp["host"]:
        assert cp["lease_moves"].get("kube-scheduler") is not None, cp  # leadership moved
    assert cp["lease_moves"] and all(v is not None for v in cp["lease_moves"].values()), cp
    assert cp["detect_seconds"] is not None and cp["recover_seconds"] is not None, cp
    assert member["kind"] == "etcd-member" and member["host"] in MASTERS, member
    assert member["host"] != cp["host"], member  # the etcd fault is on another master
    assert member["passed"] and member["restored"], member
    assert member["detect_seconds"] is not None and member["recover_seconds"] is not None
    names = [c["name"] for c in member["checks"] if c["ok"]]
    assert any("etcd member unhealthy" in n for n in names), member
    assert "quorum holds: every other member healthy" in names, member
    assert "the API writes (a ConfigMap created and deleted)" in names, member
    assert cp["reader"]["failed"] == 0 and member["reader"]["failed"] == 0, report
    assert reader.ok > 0 and reader.failed == 0, (reader.failures, timeline)
    suite = ElementTree.parse(junit).getroot()
    assert suite.get("failures") == "0" and suite.get("tests") == "3"

    # as found: the manifests back, nothing parked, every kubelet active, healthy, converged
    for master in MASTERS:
        out = lab.run(master, "ls /etc/kubernetes/manifests; systemctl is-active kubelet; "
                              "ls -d /etc/kubernetes/hactl-drill-parked 2>&1 || true").stdout
        for pod in ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"):
            assert f"{pod}.yaml" in out, (master, out)
        assert "active" in out.splitlines() and "No such file" in out, (master, out)
    res = hactl("check", "-f", spec, env=env, timeout=300)
    assert res.returncode == 0, show(res)
    res = hactl("plan", "-f", spec, "--detailed-exitcode", env=env)
    assert res.returncode == 0 and "No changes." in res.stdout, show(res)
