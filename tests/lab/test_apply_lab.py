"""Issue 6 acceptance on a fresh specs/lab.yaml lab (3 etcd + 1 LB + 3 masters + 2 workers):

- a plan saved on the fresh lab;
- two `hactl apply --auto-approve` started together while kubeadm cannot work on worker02 (its
  kubelet port is taken): one runs, the other fails fast naming the holder of the cluster lock;
  the one that runs stops worker02's branch, finishes the independent ones and reports the
  failed step with its host, command and stderr;
- after the cause is removed, apply finishes the job without redoing what was done;
- the saved plan is then refused as stale (the hosts changed);
- `hactl check` passes (text and --json);
- the machine's real kubectl, through the load balancer, lists 3 control-plane nodes Ready;
- the journal's critical path is computed;
- a second `hactl plan --detailed-exitcode` exits 0 with "No changes";
- a plan saved after a hand edit of haproxy.cfg applies (the cluster did not change since), and
  then the cluster is converged again.

And the same for specs/stacked.yaml (etcd on the masters, control-plane joins one at a time).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
HACTL = [sys.executable, "-c", "from hactl.cli import main; main(prog_name='hactl')"]


def hactl(
    *args: str, timeout: float = 900, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    started = time.monotonic()
    res = subprocess.run(
        [*HACTL, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        env=env,
        check=False,
    )
    print(f"hactl {' '.join(args[:2])}: exit {res.returncode} in {time.monotonic() - started:.1f}s")
    return res


def show(res: subprocess.CompletedProcess[str]) -> str:
    return (
        f"exit {res.returncode}\n--- stdout\n{res.stdout[-6000:]}\n--- stderr\n{res.stderr[-6000:]}"
    )


def test_apply_converges_locks_refuses_stale_and_checks(lab_factory: Any, tmp_path: Path) -> None:
    lab = lab_factory()
    spec = lab.spec_file
    env = {**os.environ, "HACTL_STATE_DIR": str(tmp_path / "state")}
    # the spec skips hactl's own Port-10250 check on worker02 (ignorePreflightErrors), so that
    # the listener below reaches kubeadm's preflight, which still refuses it: a failing kubeadm
    doc = yaml.safe_load(Path(spec).read_text())
    [worker02] = [w for w in doc["workers"] if w["name"] == "worker02"]
    worker02["ignorePreflightErrors"] = ["Port-10250"]
    Path(spec).write_text(yaml.safe_dump(doc, sort_keys=False))

    saved = tmp_path / "fresh-plan.json"
    res = hactl("plan", "-f", spec, "-o", str(saved), env=env)
    assert res.returncode == 0, show(res)
    assert "Preflight checks skipped (spec): worker02: Port-10250" in res.stdout, show(res)

    # make kubeadm fail on worker02: something listens on the kubelet port (preflight Port-10250)
    blocker = lab.run(
        "worker02",
        "python3 -c 'import socket, time; s = socket.socket(); "
        's.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("0.0.0.0", 10250)); '
        "s.listen(); time.sleep(900)' >/dev/null 2>&1 & echo $!",
    )
    assert blocker.returncode == 0, blocker.stderr
    blocker_pid = blocker.stdout.strip()

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
    report = "\n\n".join(
        f"exit {c} after {t:.1f}s\n{o[-5000:]}\n{e[-5000:]}" for c, o, e, t in outs
    )
    assert [o[0] for o in outs] == [1, 1], report
    losers = [o for o in outs if "is locked by" in o[2]]
    assert len(losers) == 1, report
    loser = losers[0]
    winner = next(o for o in outs if o is not loser)
    assert "since" in loser[2] and loser[3] < 60, report  # fast, not after the other's converge
    # the failed step stops its branch; independent branches finish; one clear report
    out, err = winner[1], winner[2]
    assert "worker02: Join worker node worker02: FAILED" in out, report
    assert "1 step(s) failed:" in err and "- worker02: Join worker node worker02" in err, report
    assert "command: kubeadm join" in err and "Port 10250 is in use" in err, report
    assert "cluster: Verify the cluster [cluster.verify]" in err, report  # skipped after it
    for done in (
        "master03: Join control-plane node master03: done",
        "worker01: Join worker node worker01: done",
    ):
        assert done in out, report
    # skipped after it: the pod network's wait (every Node Ready) and the verify
    assert "master01: Wait until every Node is Ready and CoreDNS is available [network.wait]" in err, report
    assert "Apply failed: 1 failed, 2 skipped;" in out, report

    # fix the cause; the next apply finishes without redoing what was done
    assert lab.run("worker02", f"kill {blocker_pid}").returncode == 0
    res = hactl("apply", "-f", spec, "--auto-approve", env=env)
    assert res.returncode == 0, show(res)
    assert "Apply complete: " in res.stdout and "is healthy." in res.stdout, show(res)
    assert "worker02: Join worker node worker02: done" in res.stdout, show(res)
    for redo in (
        "Bootstrap etcd member",
        "Initialise the control plane",
        "Join worker node worker01",
        "Join control-plane node",
    ):
        assert redo not in res.stdout, show(res)

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

    journals = sorted((tmp_path / "state" / "journal").rglob("*.jsonl"))
    assert len(journals) == 2  # the failed run and the one that finished it
    for journal in journals:
        records = read_journal(journal)
        path = journal_critical_path(records)
        wall = run_wall_time(records)
        assert path.steps and wall is not None and path.length <= wall + 0.5
        print(
            f"{journal.name}: wall {wall:.1f}s, critical path {path.length:.1f}s ({len(path.steps)} steps)"
        )

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


def test_apply_converges_a_stacked_etcd_cluster(lab_factory: Any, tmp_path: Path) -> None:
    """specs/stacked.yaml: etcd on the masters; control-plane joins strictly one at a time."""
    lab = lab_factory(REPO / "specs" / "stacked.yaml")
    spec = lab.spec_file
    env = {**os.environ, "HACTL_STATE_DIR": str(tmp_path / "state")}
    res = hactl("--log-format", "json", "-vv", "apply", "-f", spec, "--auto-approve", env=env)
    assert res.returncode == 0, show(res)
    assert "Apply complete: " in res.stdout and "is healthy." in res.stdout, show(res)

    from hactl.journal import read_journal

    (journal,) = (tmp_path / "state" / "journal").rglob("*.jsonl")
    records = read_journal(journal)
    ends = {r["id"]: r for r in records if r["event"] == "step_end"}

    # apply verifies once: the Verify step is `hactl check`; its report is journaled once, after
    # the last change step, and printed once; no host is probed again after it
    assert res.stdout.count("is healthy.") == 1, show(res)
    (check,) = [r for r in records if r["event"] == "check"]
    assert check["step"] == "cluster.verify" and check["healthy"] is True, check
    last_change = max(r["end_mono"] for r in ends.values() if r["id"] != "cluster.verify")
    verified = ends["cluster.verify"]["end_mono"]
    assert last_change <= check["start_mono"] <= check["end_mono"] <= verified, check
    events = [json.loads(line) for line in res.stderr.splitlines() if line.startswith("{")]
    assert [e["event"] for e in events].count("check.end") == 1, show(res)
    for host in lab.cluster.all_hosts():
        probed = [e for e in events if e["event"] == "probed" and e.get("host") == host.name]
        # the plan's probe under the lock, then one per gather of the check: nothing after it
        assert len(probed) == 1 + check["attempts"], (host.name, check["attempts"], len(probed))
    joins = sorted(
        (r for r in ends.values() if r["id"].startswith("master[") and r["id"].endswith(".join")),
        key=lambda r: r["start_mono"],
    )
    assert [r["host"] for r in joins] == ["master02", "master03"]
    assert joins[1]["start_mono"] >= joins[0]["end_mono"]  # one at a time

    res = hactl("check", "-f", spec, "--json", env=env)
    assert res.returncode == 0, show(res)
    findings = json.loads(res.stdout)["findings"]
    assert {f["subject"] for f in findings if f["check"] == "etcd"} >= {
        "members",
        "master01",
        "master02",
        "master03",
    }
    res = hactl("plan", "-f", spec, "--detailed-exitcode", env=env)
    assert res.returncode == 0, show(res)
    assert "No changes." in res.stdout
