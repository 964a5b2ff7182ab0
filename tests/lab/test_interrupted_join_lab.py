"""A join interrupted once kubeadm has fetched the certificates, in the lab: ``hactl apply``
SIGKILLed (by the PID this test started) the moment /etc/kubernetes/pki/ca.key appears on
master02 inside its control-plane join, the kubeadm it left running there killed too (by its
PID, inside the node: what a power-off does). The node then holds kubeadm's files but no
kubelet.conf and no Node, and a plain ``kubeadm join`` is refused by kubeadm's preflight for
ever (``[ERROR FileAvailable--etc-kubernetes-pki-ca.crt]``: docs/reliability.md, "Failing
today", item 1). The next plan must say why and reset the node first; the apply converges and a
last plan says "No changes". Then the same for a worker join (killed once pki/ca.crt is on
worker01, its kubelet stopped with kubeadm): its plan is a reset and join too, unless the
kubelet had already finished the TLS bootstrap (then the worker is simply joined).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import yaml

from tests.lab.conftest import LAB_SPEC
from tests.lab.faultlib import ApplyRun, hactl, show

PHRASE = "kubeadm files from an interrupted join, no kubelet.conf, no Node: reset then join"
APPLY_LIMIT = 600.0


def spec_doc(workers: tuple[str, ...] = ()) -> dict[str, Any]:
    doc = yaml.safe_load(LAB_SPEC.read_text())
    doc["masters"] = [m for m in doc["masters"] if m["name"] in ("master01", "master02")]
    doc["workers"] = [w for w in doc["workers"] if w["name"] in workers]
    return doc


def kubeadm_pids(lab: Any, node: str) -> list[str]:
    res = lab.run(node, ["ps", "-eo", "pid=,args="])
    return [line.split()[0] for line in res.stdout.splitlines()
            if "hactl.lab.standins.kubeadm" in line and " join" in line]


def kill_inside_join(lab: Any, spec: str, env: dict[str, str], node: str, path: str) -> ApplyRun:
    """Apply ``spec``; SIGKILL hactl the moment ``path`` exists on ``node`` inside its join, then
    the kubeadm join left running on ``node``."""
    run = ApplyRun("-f", spec, "--auto-approve", env=env)
    try:
        event = run.step_event("step.start", rf"{node}\]?\.join$", timeout=APPLY_LIMIT)
        assert event is not None, f"the apply never reached {node}'s join:\n" + run.text()
        root = f"/proc/{lab.pid(node)}/root"
        deadline = time.monotonic() + 180
        while not os.path.exists(root + path):
            assert run.proc.poll() is None, f"hactl ended before {path} appeared:\n" + run.human()
            assert time.monotonic() < deadline, f"{path} never appeared on {node}:\n" + run.text()
            time.sleep(0.02)
    finally:
        run.kill()  # SIGKILL to the hactl process this test started
    for pid in kubeadm_pids(lab, node):
        lab.run(node, ["kill", "-9", pid])
    # as a power-off would: the kubelet kubeadm may have started stops too (else it could
    # finish the TLS bootstrap on its own and leave nothing to repair)
    lab.run(node, ["systemctl", "stop", "kubelet"])
    return run


def files(lab: Any, node: str) -> str:
    return lab.run(node, "ls /etc/kubernetes /etc/kubernetes/pki /etc/kubernetes/manifests").stdout


def unlock(spec: str, env: dict[str, str]) -> None:
    """The killed apply's lock (its holder, this test's hactl process, is gone)."""
    res = hactl("unlock", "-f", spec, "--force", env=env, timeout=120)
    assert res.returncode == 0, show(res)


def converge(spec: str, env: dict[str, str]) -> float:
    started = time.monotonic()
    apply = hactl("apply", "-f", spec, "--auto-approve", env=env, timeout=APPLY_LIMIT)
    took = time.monotonic() - started
    assert apply.returncode == 0, show(apply)
    last = hactl("plan", "-f", spec, "--detailed-exitcode", env=env, timeout=300)
    assert last.returncode == 0 and "No changes." in last.stdout, show(last)
    return took


def nodes(lab: Any) -> dict[str, dict[str, str]]:
    import json

    res = lab.run("master01", ["kubectl", "--kubeconfig", "/etc/kubernetes/admin.conf", "get", "nodes",
                               "-o", "json"])
    assert res.returncode == 0, res.stderr
    return {n["metadata"]["name"]: n["metadata"].get("labels") or {} for n in json.loads(res.stdout)["items"]}


def test_joins_killed_after_the_certificates_are_fetched_are_reset_and_joined(
        lab_factory: Any, tmp_path: Path) -> None:
    lab = lab_factory(spec_doc(("worker01",)))
    full = yaml.safe_load(Path(lab.spec_file).read_text())
    spec = str(tmp_path / "masters-only.yaml")  # first without worker01
    Path(spec).write_text(yaml.safe_dump({**full, "workers": []}, sort_keys=False))
    spec_b = lab.spec_file
    env = {**os.environ, "HACTL_STATE_DIR": str(tmp_path / "state")}

    # -- a control-plane join ---------------------------------------------------------------
    kill_inside_join(lab, spec, env, "master02", "/etc/kubernetes/pki/ca.key")
    left = files(lab, "master02")
    print("master02 after the kill:\n" + left)
    assert "ca.key" in left and "kubelet.conf" not in left
    assert "master02" not in nodes(lab)

    unlock(spec, env)
    plan = hactl("plan", "-f", spec, "--detailed-exitcode", env=env, timeout=300)
    assert plan.returncode == 2, show(plan)
    assert "Reset and re-join control-plane node master02" in plan.stdout, show(plan)
    assert PHRASE in plan.stdout, show(plan)
    assert "kubeadm reset -f" in plan.stdout, show(plan)
    took = converge(spec, env)
    print(f"control-plane join: the apply after the kill converged in {took:.1f}s")
    labels = nodes(lab)
    assert "node-role.kubernetes.io/control-plane" in labels.get("master02", {}), labels
    assert lab.run("master02", ["test", "-f", "/etc/kubernetes/kubelet.conf"]).returncode == 0

    # -- a worker join ----------------------------------------------------------------------
    kill_inside_join(lab, spec_b, env, "worker01", "/etc/kubernetes/pki/ca.crt")
    print("worker01 after the kill:\n" + files(lab, "worker01"))
    unlock(spec_b, env)
    plan = hactl("plan", "-f", spec_b, "--detailed-exitcode", env=env, timeout=300)
    assert plan.returncode in (0, 2), show(plan)
    joined = lab.run("worker01", ["test", "-f", "/etc/kubernetes/kubelet.conf"]).returncode == 0
    if not joined:  # kubeadm's files, no kubelet.conf: a reset then a join, never a plain join
        assert "Reset and re-join worker node worker01" in plan.stdout, show(plan)
        assert PHRASE in plan.stdout, show(plan)
    print(f"worker01 {'joined by its kubelet' if joined else 'left half-joined'}; plan:\n{plan.stdout}")
    took = converge(spec_b, env)
    print(f"worker join: the apply after the kill converged in {took:.1f}s")
    assert "worker01" in nodes(lab)

