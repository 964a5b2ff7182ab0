"""Issue 6 acceptance on a fresh specs/lab.yaml lab (3 etcd + 1 LB + 3 masters + 2 workers):

- a plan saved on the fresh lab;
- two `hactl apply --auto-approve` started together: one converges, the other fails fast naming
  the holder of the cluster lock;
- the saved plan is then refused as stale (the hosts changed);
- `hactl check` passes (text and --json);
- the machine's real kubectl, through the load balancer, lists 3 control-plane nodes Ready;
- the journal's critical path is computed;
- a second `hactl plan --detailed-exitcode` exits 0 with "No changes";
- a plan saved after a hand edit of haproxy.cfg applies (the cluster did not change since), and
  then the cluster is converged again.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
HACTL = [sys.executable, "-c", "from hactl.cli import main; main(prog_name='hactl')"]


def hactl(
    *args: str, timeout: float = 900, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*HACTL, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        env=env,
        check=False,
    )


def show(res: subprocess.CompletedProcess[str]) -> str:
    return (
        f"exit {res.returncode}\n--- stdout\n{res.stdout[-6000:]}\n--- stderr\n{res.stderr[-6000:]}"
    )


def test_apply_converges_locks_refuses_stale_and_checks(lab_factory: Any, tmp_path: Path) -> None:
    lab = lab_factory()
    spec = lab.spec_file
    env = {**os.environ, "HACTL_STATE_DIR": str(tmp_path / "state")}

    saved = tmp_path / "fresh-plan.json"
    res = hactl("plan", "-f", spec, "-o", str(saved), env=env)
    assert res.returncode == 0, show(res)

    # two applies at once: exactly one runs, the other fails fast naming the holder
    started = time.monotonic()
    procs = [
        subprocess.Popen(
            [*HACTL, "apply", "-f", spec, "--auto-approve"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
            env=env,
        )
        for _ in range(2)
    ]
    outs: list[tuple[int, str, str, float]] = []
    try:
        ended: dict[int, float] = {}
        while len(ended) < len(procs) and time.monotonic() - started < 900:
            for i, proc in enumerate(procs):
                if i not in ended and proc.poll() is not None:
                    ended[i] = time.monotonic() - started
            time.sleep(0.2)
        for i, proc in enumerate(procs):
            out, err = proc.communicate(timeout=60)
            outs.append((proc.returncode, out, err, ended.get(i, -1.0)))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    codes = sorted(o[0] for o in outs)
    report = "\n\n".join(
        f"exit {c} after {t:.1f}s\n{o[-5000:]}\n{e[-5000:]}" for c, o, e, t in outs
    )
    assert codes == [0, 1], report
    loser = next(o for o in outs if o[0] == 1)
    winner = next(o for o in outs if o[0] == 0)
    assert "is locked by" in loser[2] and "since" in loser[2], report
    assert loser[3] < 60, report  # fast, not after the other's converge
    assert "Apply complete: " in winner[1], report
    assert "Cluster '" in winner[1] and "is healthy." in winner[1], report

    # the plan saved on the fresh lab no longer matches the hosts
    res = hactl("apply", str(saved), env=env)
    assert res.returncode == 1, show(res)
    assert "Saved plan is stale" in res.stderr, show(res)

    res = hactl("check", "-f", spec, env=env)
    assert res.returncode == 0, show(res)
    res = hactl("check", "-f", spec, "--json", env=env)
    assert res.returncode == 0, show(res)
    assert json.loads(res.stdout)["healthy"] is True

    # the machine's real kubectl through the load balancer endpoint
    endpoint = lab.cluster.control_plane_endpoint
    kubectl = (
        "kubectl --kubeconfig /etc/kubernetes/admin.conf "
        f"--server https://{endpoint} get nodes -l node-role.kubernetes.io/control-plane -o json"
    )
    done = lab.run(lab.cluster.masters[0].name, kubectl)
    assert done.returncode == 0, done.stderr
    nodes = json.loads(done.stdout)["items"]
    ready = {
        n["metadata"]["name"]
        for n in nodes
        if any(c["type"] == "Ready" and c["status"] == "True" for c in n["status"]["conditions"])
    }
    assert ready == {m.name for m in lab.cluster.masters}

    # the journal of the run and its critical path
    from hactl.journal import journal_critical_path, read_journal, run_wall_time

    journals = list((tmp_path / "state" / "journal").rglob("*.jsonl"))
    assert len(journals) == 1
    records = read_journal(journals[0])
    path = journal_critical_path(records)
    wall = run_wall_time(records)
    assert path.steps and wall is not None and path.length <= wall + 0.5
    print(f"converge wall {wall:.1f}s, critical path {path.length:.1f}s ({len(path.steps)} steps)")

    res = hactl("plan", "-f", spec, "--detailed-exitcode", env=env)
    assert res.returncode == 0, show(res)
    assert "No changes." in res.stdout

    # a saved plan on an unchanged cluster applies: drift haproxy.cfg by hand, save, apply
    lb = lab.cluster.load_balancer.hosts[0].name
    edit = lab.run(lb, "echo '# edited by hand' >> /etc/haproxy/haproxy.cfg")
    assert edit.returncode == 0, edit.stderr
    fix = tmp_path / "fix-drift.json"
    res = hactl("plan", "-f", spec, "-o", str(fix), "--detailed-exitcode", env=env)
    assert res.returncode == 2, show(res)
    res = hactl("apply", str(fix), env=env)
    assert res.returncode == 0, show(res)
    assert "Apply complete: 0 added, 1 changed, 0 removed" in res.stdout, show(res)
    res = hactl("plan", "-f", spec, "--detailed-exitcode", env=env)
    assert res.returncode == 0, show(res)
