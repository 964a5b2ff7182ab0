"""A regenerated SSH host key on a node the plan does not need (a joined worker) refuses
`hactl plan` (text and JSON), `hactl apply -f SPEC`, `hactl apply PLANFILE` (saved before the
key changed) and `hactl check`, each with exit 1, naming the node, its address, the key it
offered and the way out; nothing changes on the other nodes although a hand edit of lb01's
haproxy.cfg is pending (the plan would rewrite it). With the old key back, the same plan goes on.

A small stacked lab (lb01, master01, worker01) is converged with `hactl apply` first.
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

from tests.lab.faultlib import HOST_KEY as KEY
from tests.lab.faultlib import regenerate_host_key, restore_host_key

REPO = Path(__file__).resolve().parents[2]
HACTL = [sys.executable, "-c", "from hactl.cli import main; main(prog_name='hactl')"]
WATCHED = "/etc/haproxy /etc/kubernetes /etc/systemd /var/lib/hactl /var/lib/kubelet /run/hactl"
"""What hactl writes on the nodes: must not change while a host key is in doubt."""


def hactl(*args: str, env: dict[str, str], timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*HACTL, *args], capture_output=True, text=True, timeout=timeout,
                          cwd=REPO, env=env, check=False)  # fmt: skip


def show(res: subprocess.CompletedProcess[str]) -> str:
    return f"exit {res.returncode}\n--- stdout\n{res.stdout[-5000:]}\n--- stderr\n{res.stderr[-5000:]}"


def small_stacked() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((REPO / "specs" / "stacked.yaml").read_text())
    doc["masters"] = doc["masters"][:1]
    doc["workers"] = doc["workers"][:1]
    return doc


def snapshot(lab: Any, node: str) -> str:
    """Checksums of every file hactl writes on ``node`` (lock.d is gone once a lock is released)."""
    res = lab.run(node, f"find {WATCHED} -xdev -type f 2>/dev/null | sort | xargs -r sha256sum")
    return res.stdout


def test_a_changed_host_key_refuses_plan_apply_and_check(lab_factory: Any, tmp_path: Path) -> None:
    t0 = time.monotonic()
    lab = lab_factory(small_stacked())
    env = {**os.environ, "HACTL_STATE_DIR": str(tmp_path / "state")}
    res = hactl("apply", "-f", lab.spec_file, "--auto-approve", env=env)
    assert res.returncode == 0, show(res)
    print(f"converged in {time.monotonic() - t0:.0f}s")

    edit = lab.run("lb01", "echo '# edited by hand' >> /etc/haproxy/haproxy.cfg")
    assert edit.returncode == 0, edit.stderr
    saved = tmp_path / "plan.json"
    res = hactl("plan", "-f", lab.spec_file, "-o", str(saved), "--json", env=env)
    assert res.returncode == 0, show(res)
    assert [s["id"] for s in json.loads(res.stdout)["steps"]][:1] == ["lb[lb01].haproxy"], res.stdout

    old = regenerate_host_key(lab, "worker01")
    try:
        ssh = lab.run("worker01", "true", via="ssh")  # OpenSSH with the same known_hosts refuses
        assert ssh.returncode != 0 and "Host key verification failed" in ssh.stderr, ssh.stderr
        offered = lab.run("worker01", f"ssh-keygen -lf {KEY}.pub").stdout.split()[1]
        address = str(lab.node("worker01").address)
        known = yaml.safe_load(Path(lab.spec_file).read_text())["ssh"]["knownHostsFile"]
        others = ("lb01", "master01")
        before = {n: snapshot(lab, n) for n in others}
        haproxy_pid = lab.run("lb01", "systemctl show -p MainPID --value haproxy").stdout.strip()
        journals = sorted((tmp_path / "state").rglob("*.jsonl"))  # the converging apply's

        def refused(res: subprocess.CompletedProcess[str], where: str) -> None:
            assert res.returncode == 1, f"{where}:\n" + show(res)
            text = res.stdout + res.stderr
            assert f"worker01 ({address}): the SSH host key of {address} CHANGED (offered {offered})" \
                in text, f"{where}:\n" + show(res)
            assert f"`ssh-keygen -R '{address}' -f {known}`" in text and "out of band" in text, text

        t1 = time.monotonic()
        for flags in ([], ["--json"]):
            res = hactl("plan", "-f", lab.spec_file, *flags, env=env, timeout=240)
            refused(res, f"plan {flags}")
            assert res.stdout == "" and "Error: the plan is refused: the SSH host key of worker01 " \
                "changed" in res.stderr, show(res)
        res = hactl("apply", "-f", lab.spec_file, "--auto-approve", env=env, timeout=240)
        refused(res, "apply -f")
        res = hactl("apply", str(saved), env=env, timeout=240)
        refused(res, "apply PLANFILE")
        assert "stale" not in res.stderr.lower(), show(res)
        res = hactl("check", "-f", lab.spec_file, env=env, timeout=240)
        refused(res, "check")
        assert "[FAIL] ssh: worker01: " in res.stdout, show(res)
        print(f"plan, apply x2, check refused in {time.monotonic() - t1:.0f}s")

        assert lab.read("lb01", "/etc/haproxy/haproxy.cfg").endswith("# edited by hand\n")
        assert lab.run("lb01", "systemctl show -p MainPID --value haproxy").stdout.strip() == haproxy_pid
        assert {n: snapshot(lab, n) for n in others} == before
        assert sorted((tmp_path / "state").rglob("*.jsonl")) == journals, "a step journal was written"
    finally:
        restore_host_key(lab, "worker01", old)

    # the old key back: the plan goes on (the hand edit is still there to fix)
    res = hactl("plan", "-f", lab.spec_file, "--detailed-exitcode", env=env, timeout=240)
    assert res.returncode == 2 and "lb[lb01].haproxy_cfg" in res.stdout, show(res)
    print(f"whole test {time.monotonic() - t0:.0f}s")
