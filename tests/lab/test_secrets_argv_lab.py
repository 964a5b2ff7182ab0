"""H2 in the lab: no live bootstrap token or certificate key on any process's command line while
`hactl apply` builds a cluster (kubeadm init on master01, a control-plane join of master02, a
worker join of worker01).

The lab's nodes run in their own PID namespaces, but their processes are visible from the root PID
namespace of this machine, so a thread here reads every ``/proc/*/cmdline`` (the lab nodes', the
operator's, everything) about every 20 ms during the apply. The live secrets come from the hosts:

- from the 0600 kubeadm config files while they exist, read through ``/proc/<kubeadm pid>/root``
  (the node's own mount namespace) the moment a ``kubeadm … --config /run/hactl/…`` process is
  seen: the certificate key of the init file and the control-plane join file, the join token;
- from the cluster afterwards: ``kubeadm token list`` on master01.

The check can fail: the poller must have seen the ``kubeadm init``/``kubeadm join`` command lines
themselves (so it does see the nodes' argv) and must have caught a token and a key from the files;
and a marker put on a node's command line afterwards is found by the same scan. Smallest topology
with init + control-plane join + worker join: one external etcd member (a warning, not an error),
one load balancer, two masters, one worker. (One host holding both the etcd member and the load
balancer would save a node, but `hactl check` then reports that host's HAProxy facts missing.)
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
HACTL = [sys.executable, "-c", "from hactl.cli import main; main(prog_name='hactl')"]
CONFIG_RE = re.compile(r"kubeadm (init|join) --config (/run/hactl/kubeadm-(?:init|join)\.yaml)")
TOKEN_RE = re.compile(r"\b[a-z0-9]{6}\.[a-z0-9]{16}\b")
KEY_RE = re.compile(r"certificateKey: ['\"]?([0-9a-f]{64})")

SPEC: dict[str, Any] = {
    "apiVersion": "hactl.dev/v1alpha1",
    "kind": "Cluster",
    "metadata": {"name": "secrets"},
    "controlPlaneEndpoint": "k8s-api.secrets:6443",
    "kubernetes": {"version": "1.30.4", "podSubnet": "10.244.0.0/16", "serviceSubnet": "10.96.0.0/12"},
    "etcd": {"topology": "external", "version": "3.4.23",
             "members": [{"name": "etcd01", "address": "198.18.0.21"}]},
    "loadBalancer": {"kind": "haproxy", "dnsName": "k8s-api.secrets",
                     "hosts": [{"name": "lb01", "address": "198.18.0.10"}]},
    "masters": [{"name": "master01", "address": "198.18.0.11"},
                {"name": "master02", "address": "198.18.0.12"}],
    "workers": [{"name": "worker01", "address": "198.18.0.31"}],
    "ssh": {"user": "root", "hostKeyPolicy": "strict", "connectTimeout": 5},
    "lab": {"subnet": "198.18.0.0/24"},
}


@dataclass
class Poller:
    """Reads every process's command line until stopped; records what it saw."""

    cmdlines: set[str] = field(default_factory=set)
    kubeadm: set[str] = field(default_factory=set)
    secrets: set[str] = field(default_factory=set)
    keys: set[str] = field(default_factory=set)
    files_read: set[str] = field(default_factory=set)
    rounds: int = 0
    stop: threading.Event = field(default_factory=threading.Event)

    def scan(self) -> None:
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                raw = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            line = raw.replace(b"\0", b" ").decode(errors="replace").strip()
            if not line:
                continue
            self.cmdlines.add(line)
            match = CONFIG_RE.search(line)
            if match:
                self.kubeadm.add(match.group(0))
                self._read_config(pid, match.group(2))
        self.rounds += 1

    def _read_config(self, pid: str, path: str) -> None:
        try:  # the node's own /run, through the process's root (its mount namespace)
            text = Path(f"/proc/{pid}/root{path}").read_text()
        except OSError:
            return
        self.files_read.add(path)
        self.secrets.update(TOKEN_RE.findall(text))
        keys = KEY_RE.findall(text)
        self.keys.update(keys)
        self.secrets.update(keys)

    def run(self) -> None:
        while not self.stop.is_set():
            self.scan()
            time.sleep(0.02)


def show(res: subprocess.CompletedProcess[str]) -> str:
    return f"exit {res.returncode}\n--- stdout\n{res.stdout[-5000:]}\n--- stderr\n{res.stderr[-5000:]}"


def test_no_live_token_or_certificate_key_on_any_command_line(lab_factory: Any, tmp_path: Path) -> None:
    lab = lab_factory(SPEC)
    env = {**os.environ, "HACTL_STATE_DIR": str(tmp_path / "state")}
    poller = Poller()
    thread = threading.Thread(target=poller.run, daemon=True)
    thread.start()
    try:
        res = subprocess.run([*HACTL, "apply", "-f", lab.spec_file, "--auto-approve"], capture_output=True,
                             text=True, timeout=900, cwd=REPO, env=env, check=False)
    finally:
        poller.stop.set()
        thread.join(timeout=10)
    # every step ran (the `hactl check` that ends an apply is judged by tests/lab/test_apply_lab.py)
    assert "Apply complete:" in res.stdout and "step(s) failed" not in res.stderr, show(res)
    print(show(res))

    # the poller saw the nodes' kubeadm command lines, and their config files while they existed
    assert {k.split(" --config")[0] for k in poller.kubeadm} == {"kubeadm init", "kubeadm join"}, poller.kubeadm
    assert poller.files_read == {"/run/hactl/kubeadm-init.yaml", "/run/hactl/kubeadm-join.yaml"}
    assert poller.keys, "no certificate key read from the init or control-plane join file"
    assert any(TOKEN_RE.fullmatch(s) for s in poller.secrets), "no token read from a join file"
    # … and the live tokens of the cluster afterwards
    listed = lab.run("master01", "kubeadm token list")
    assert listed.returncode == 0, listed.stderr
    tokens = set(TOKEN_RE.findall(listed.stdout))
    assert tokens & poller.secrets, (tokens, "the join token is not among the cluster's tokens")
    secrets = poller.secrets | tokens

    print(f"{poller.rounds} scans, {len(poller.cmdlines)} command lines, kubeadm seen: {sorted(poller.kubeadm)}, "
          f"{len(secrets)} live secrets ({len(poller.keys)} keys)")
    leaked = [(s[:6] + "…", line) for line in poller.cmdlines for s in secrets if s in line]
    assert not leaked, leaked
    for text in (res.stdout, res.stderr):
        assert not [s for s in secrets if s in text], "a secret in hactl's own output"
    # the files are gone on every node
    for node in ("master01", "master02", "worker01"):
        left = lab.run(node, "ls -A /run/hactl 2>/dev/null")
        assert "kubeadm-" not in left.stdout, (node, left.stdout)
    # the long-lived config that upload-certs reuses holds no key
    kept = lab.run("master01", "cat /etc/hactl/kubeadm-config.yaml")
    assert kept.returncode == 0 and "certificateKey" not in kept.stdout
    assert next(yaml.safe_load_all(kept.stdout))["kind"] == "InitConfiguration"

    # control: the same scan finds a marker on a node's command line (nodes' argv is visible)
    marker = f"hactl-argv-marker-{os.getpid()}"
    control = Poller()
    started = lab.run("worker01", f"sh -c 'sleep 3' {marker} >/dev/null 2>&1 & echo $!")
    assert started.returncode == 0, started.stderr
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline and not any(marker in line for line in control.cmdlines):
        control.scan()
        time.sleep(0.02)
    assert any(marker in line for line in control.cmdlines), "the scan does not see the nodes' processes"
