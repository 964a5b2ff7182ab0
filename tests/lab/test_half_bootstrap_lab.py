"""A new etcd cluster's bootstrap stopped between members, in the lab: ``hactl apply`` (one step
at a time) SIGKILLed (by the PID this test started) the moment etcd01's bootstrap has ended, while
etcd02's waits on a cut cable. etcd01 then runs alone with member data and waits for a quorum
that cannot come; etcd02 and etcd03 never started. hactl's bootstrap-pending marker on etcd01
proves the cluster never formed: the next plan must finish the bootstrap (bootstrap etcd02 and
etcd03, start etcd01 with them), not refuse it; the apply converges, the markers are gone, and a
last plan says "No changes"."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import yaml

from tests.lab.conftest import LAB_SPEC
from tests.lab.faultlib import ApplyRun, hactl, show

APPLY_LIMIT = 600.0
MARKER = "/etc/etcd/hactl-bootstrap-pending"


def spec_doc() -> dict[str, Any]:
    doc = yaml.safe_load(LAB_SPEC.read_text())
    doc["masters"] = doc["masters"][:1]
    doc["workers"] = []
    doc["apply"] = {**(doc.get("apply") or {}), "parallelism": 1}
    return doc


def exists(lab: Any, node: str, path: str) -> bool:
    return os.path.exists(f"/proc/{lab.pid(node)}/root{path}")


def test_a_bootstrap_stopped_between_members_is_finished(lab_factory: Any, tmp_path: Path) -> None:
    lab = lab_factory(spec_doc())
    spec = lab.spec_file
    env = {**os.environ, "HACTL_STATE_DIR": str(tmp_path / "state")}
    data_dir = lab.cluster.etcd.data_dir.rstrip("/")
    names = [h.name for h in lab.cluster.etcd_members]
    first, others = names[0], names[1:]

    run = ApplyRun("-f", spec, "--auto-approve", env=env)
    cut: list[str] = []
    try:
        # the steps run one at a time, in the plan's order: etcd01's bootstrap first (etcd01 also
        # keeps the lock, so its cable stays in)
        start = run.step_event("step.start", r"\.bootstrap$", timeout=APPLY_LIMIT)
        assert start is not None, "no bootstrap started:\n" + run.text()
        assert start["step"] == f"etcd.member[{first}].bootstrap", start
        for name in others:  # their bootstraps cannot reach them: none starts a member
            lab.partition(name)
            cut.append(name)
        end = run.step_event("step.end", rf"\[{first}\]\.bootstrap$", timeout=APPLY_LIMIT)
        assert end is not None and end.get("outcome") == "ok", "etcd01's bootstrap:\n" + run.text()
    finally:
        run.kill()  # SIGKILL to the hactl process this test started
        for name in cut:
            lab.heal(name)
    print(f"killed hactl after {first}'s bootstrap; steps ended: {run.ended_steps()}")

    # the state a kill between two members' bootstraps leaves
    assert _wait_member(lab, first, f"{data_dir}/member"), f"{first} wrote no member data"
    assert exists(lab, first, MARKER)
    for name in others:
        assert not exists(lab, name, f"{data_dir}/member"), f"{name} started: not the state under test"
    # Type=notify: systemd shows a member of a new cluster as activating until a quorum runs
    active = lab.run(first, "systemctl is-active etcd")
    assert active.stdout.strip() == "activating", active.stdout + active.stderr

    res = hactl("unlock", "-f", spec, "--force", env=env, timeout=120)
    assert res.returncode == 0, show(res)
    plan = hactl("plan", "-f", spec, "--detailed-exitcode", env=env, timeout=300)
    assert plan.returncode == 2, "the next plan must finish the bootstrap:\n" + show(plan)
    assert "bootstrap-pending marker proves the cluster never formed" in plan.stdout, plan.stdout
    assert "systemd shows a member of a new cluster as activating until a quorum runs" in plan.stdout, \
        plan.stdout
    for name in others:
        assert f"etcd.member[{name}].bootstrap" in plan.stdout, plan.stdout

    apply = hactl("apply", "-f", spec, "--auto-approve", env=env, timeout=APPLY_LIMIT)
    assert apply.returncode == 0, show(apply)
    last = hactl("plan", "-f", spec, "--detailed-exitcode", env=env, timeout=300)
    assert last.returncode == 0 and "No changes" in last.stdout, show(last)
    for name in names:
        assert not exists(lab, name, MARKER), f"the bootstrap-pending marker is still on {name}"
    members = lab.run(first, "ETCDCTL_API=3 etcdctl --cacert /etc/etcd/pki/ca.crt "
                      "--cert /etc/etcd/pki/healthcheck-client.crt --key /etc/etcd/pki/healthcheck-client.key "
                      f"--endpoints https://{lab.cluster.host(first).address}:{lab.cluster.etcd.client_port} member list")
    assert members.returncode == 0, members.stderr
    assert sorted(line.split(", ")[2] for line in members.stdout.splitlines()) == sorted(names), members.stdout


def _wait_member(lab: Any, node: str, path: str, timeout: float = 30.0) -> bool:
    """etcd writes its member dir a moment after its start (``systemctl start --no-block``)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if exists(lab, node, path):
            return True
        time.sleep(0.2)
    return False
