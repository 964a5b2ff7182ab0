"""M4 in the lab: ``hactl apply`` SIGKILLed inside ``kubeadm init`` (and kubeadm with it, as the
SSH session's end takes it down), then ``hactl plan`` + ``hactl apply`` converge.

The reviewer's repro: killed 1.5 s into init, master01 kept admin.conf and pki/ but no
manifests; the next plan skipped init and the next apply waited 364 s for a /readyz that could
not come. Here hactl is killed (by the PID this test started) as soon as kubeadm has written
admin.conf, and the kubeadm it left running on master01 is killed too (by its PID, inside the
node). The next plan must name the half-finished init and complete it phase by phase — never a
second init — and the apply must finish (the worker joins through the completed cluster-info and
a fresh token) well inside the time the old wait alone took; a last plan says "No changes".
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import yaml

from tests.lab.conftest import LAB_SPEC
from tests.lab.faultlib import ApplyRun, hactl, show

OLD_WAIT = 364.0  # seconds the old apply waited for /readyz after such a kill


def spec_doc() -> dict[str, Any]:
    doc = yaml.safe_load(LAB_SPEC.read_text())
    doc["masters"] = [m for m in doc["masters"] if m["name"] == "master01"]
    doc["workers"] = [w for w in doc["workers"] if w["name"] == "worker01"]
    return doc


def kubeadm_pids(lab: Any, node: str) -> list[str]:
    res = lab.run(node, ["ps", "-eo", "pid=,args="])
    return [line.split()[0] for line in res.stdout.splitlines()
            if "hactl.lab.standins.kubeadm" in line and " init" in line]


def unlock(spec: str, env: dict[str, str]) -> None:
    """The killed apply's lock (its holder, this test's hactl process, is gone)."""
    res = hactl("unlock", "-f", spec, "--force", env=env, timeout=120)
    assert res.returncode == 0, show(res)


def test_apply_killed_inside_kubeadm_init_is_completed_then_converges(lab_factory: Any, tmp_path: Path) -> None:
    lab = lab_factory(spec_doc())
    spec = lab.spec_file
    env = {**os.environ, "HACTL_STATE_DIR": str(tmp_path / "state")}

    run = ApplyRun("-f", spec, "--auto-approve", env=env)
    try:
        event = run.step_event("step.start", r"master01\]?\.init$", timeout=600)
        assert event is not None, "the apply never reached kubeadm init:\n" + run.text()
        deadline = time.monotonic() + 180
        while lab.run("master01", ["test", "-f", "/etc/kubernetes/admin.conf"]).returncode != 0:
            assert time.monotonic() < deadline, "kubeadm never wrote admin.conf:\n" + run.text()
            time.sleep(0.05)
    finally:
        run.kill()  # SIGKILL to the hactl process this test started
    for pid in kubeadm_pids(lab, "master01"):
        lab.run("master01", ["kill", "-9", pid])
    files = lab.run("master01", "ls /etc/kubernetes /etc/kubernetes/manifests").stdout
    print("master01 after the kill:\n" + files)
    assert "admin.conf" in files

    unlock(spec, env)
    plan = hactl("plan", "-f", spec, "--detailed-exitcode", env=env, timeout=300)
    assert plan.returncode == 2, show(plan)
    assert "Complete the interrupted kubeadm init on master01" in plan.stdout, show(plan)
    assert "stopped half-way" in plan.stdout, show(plan)
    assert "Initialise the control plane" not in plan.stdout, show(plan)

    started = time.monotonic()
    apply = hactl("apply", "-f", spec, "--auto-approve", env=env, timeout=900)
    took = time.monotonic() - started
    assert apply.returncode == 0, show(apply)
    assert took < OLD_WAIT, f"the apply took {took:.0f}s"
    print(f"apply after the kill converged in {took:.1f}s")

    last = hactl("plan", "-f", spec, "--detailed-exitcode", env=env, timeout=300)
    assert last.returncode == 0 and "No changes." in last.stdout, show(last)
    nodes = lab.run("master01", ["kubectl", "--kubeconfig", "/etc/kubernetes/admin.conf", "get", "nodes",
                                 "-o", "name"])
    assert sorted(nodes.stdout.split()) == ["node/master01", "node/worker01"], nodes.stdout + nodes.stderr
    info = lab.run("master01", ["kubectl", "--kubeconfig", "/etc/kubernetes/admin.conf", "-n", "kube-public",
                                "get", "configmap", "cluster-info", "-o", "name"])
    assert info.stdout.strip() == "configmap/cluster-info", info.stderr
