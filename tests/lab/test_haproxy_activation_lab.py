"""M3 (HAProxy): an apply killed after `mv haproxy.cfg` but before `systemctl reload haproxy`
leaves the right file on disk and the old configuration running. The next plan must see it
("written" is not "loaded") and plan a graceful reload; after the apply, no changes.

A small stacked lab (lb01 + master01) is converged with `hactl apply`; then the spec's balance
algorithm changes and the new rendered haproxy.cfg is written on lb01 by hand, without a reload
(exactly what the interrupted apply leaves). The plan lists only `lb[lb01].service`, saying the
file was not loaded; the apply reloads (the haproxy master keeps its PID: graceful, never a
restart) and leaves hactl's marker; the next plan shows no changes.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from hactl.facts.haproxy import LOADED_MARKER, admin_script
from hactl.plan import desired
from hactl.spec.models import Cluster

REPO = Path(__file__).resolve().parents[2]
HACTL = [sys.executable, "-c", "from hactl.cli import main; main(prog_name='hactl')"]


def hactl(*args: str, env: dict[str, str], timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*HACTL, *args], capture_output=True, text=True, timeout=timeout,
                          cwd=REPO, env=env, check=False)  # fmt: skip


def show(res: subprocess.CompletedProcess[str]) -> str:
    return f"exit {res.returncode}\n--- stdout\n{res.stdout[-5000:]}\n--- stderr\n{res.stderr[-5000:]}"


def lb_facts(lab: Any) -> str:
    """What the probe reads on lb01 (for failure messages)."""
    import asyncio

    from hactl.probe import probe_cluster

    observed = asyncio.run(probe_cluster(lab.cluster))
    host = observed["lb01"]
    return f"lb01: error={host.error} sections={host.section_errors} haproxy={host.haproxy}"


def small_stacked() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((REPO / "specs" / "stacked.yaml").read_text())
    doc["masters"] = doc["masters"][:1]
    doc["workers"] = []
    return doc


def test_a_written_but_never_loaded_haproxy_cfg_is_reloaded(lab_factory: Any, tmp_path: Path) -> None:
    lab = lab_factory(small_stacked())
    env = {**os.environ, "HACTL_STATE_DIR": str(tmp_path / "state")}
    res = hactl("apply", "-f", lab.spec_file, "--auto-approve", env=env)
    assert res.returncode == 0, show(res) + lb_facts(lab)
    res = hactl("plan", "-f", lab.spec_file, "--detailed-exitcode", env=env)
    assert res.returncode == 0, show(res) + lb_facts(lab)

    # the spec changes; the apply that installs it dies between `mv` and `reload`
    doc = yaml.safe_load(Path(lab.spec_file).read_text())
    doc["loadBalancer"]["balance"] = "leastconn"
    spec2 = tmp_path / "spec2.yaml"
    spec2.write_text(yaml.safe_dump(doc, sort_keys=False))
    text = desired.haproxy_cfg(Cluster.model_validate(doc))
    master = lab.run("lb01", "systemctl show -p MainPID --value haproxy").stdout.strip()
    time.sleep(0.5)  # the file is written clearly after the last (re)load
    wrote = lab.run("lb01", "cat > /etc/haproxy/haproxy.cfg", input=text, via="ssh")
    assert wrote.returncode == 0, wrote.stderr

    res = hactl("plan", "-f", str(spec2), "--json", env=env)
    assert res.returncode == 0, show(res)
    changes = json.loads(res.stdout)["changes"]
    assert [(c["address"], c["actions"]) for c in changes] == [("lb[lb01].service", ["update"])], changes
    reason = changes[0]["reason"]
    assert "has not loaded it" in reason and "reload haproxy (graceful)" in reason, reason

    res = hactl("apply", "-f", str(spec2), "--auto-approve", env=env)
    assert res.returncode == 0, show(res)
    assert lab.run("lb01", "systemctl show -p MainPID --value haproxy").stdout.strip() == master
    marker = lab.run("lb01", f"cat {LOADED_MARKER}").stdout.split()
    assert marker == [hashlib.sha256(text.encode()).hexdigest()]

    res = hactl("plan", "-f", str(spec2), "--detailed-exitcode", env=env)
    assert res.returncode == 0, show(res)
    assert res.stdout.rstrip("\n").splitlines()[-1] == "No changes. The cluster matches the spec."

    # a master's server left drained at runtime (a drill or an apply killed between its drain and
    # its ready): the plan puts it back in rotation without a reload
    drained = lab.run("lb01", admin_script("set server k8s-api-backend/master01 state drain"),
                      via="ssh")
    assert drained.returncode == 0 and not drained.stdout.strip(), drained.stdout + drained.stderr
    res = hactl("plan", "-f", str(spec2), "--json", env=env)
    assert res.returncode == 0, show(res)
    changes = json.loads(res.stdout)["changes"]
    assert [(c["address"], c["actions"]) for c in changes] == [("lb[lb01].service", ["update"])], changes
    assert "master01 held out of k8s-api-backend at runtime (master01 DRAIN" in changes[0]["reason"]
    res = hactl("apply", "-f", str(spec2), "--auto-approve", env=env)
    assert res.returncode == 0, show(res)
    assert lab.run("lb01", "systemctl show -p MainPID --value haproxy").stdout.strip() == master
    stat = lab.run("lb01", admin_script("show stat"))
    row = next(line.split(",") for line in stat.stdout.splitlines()
               if line.startswith("k8s-api-backend,master01,"))
    assert row[17] != "DRAIN", stat.stdout  # status column: back under its health checks
    res = hactl("plan", "-f", str(spec2), "--detailed-exitcode", env=env)
    assert res.returncode == 0, show(res)
