"""Helpers of the day-2 membership lab tests (issue 13): run hactl against a shared lab with a
reader through the load balancer, and look at what a removal left on the hosts."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

from faultlib import ApiReader
from test_apply_lab import hactl, show

KUBECTL = "kubectl --kubeconfig /etc/kubernetes/admin.conf --request-timeout=10s"


class Day2:
    """One test's view of a shared lab: its own state dir, the reader, the checks."""

    def __init__(self, lab: Any, tmp_path: Path) -> None:
        self.lab = lab
        self.env = {**os.environ, "HACTL_STATE_DIR": str(tmp_path / "state")}
        lb = lab.spec_doc()["loadBalancer"]
        self.lb = (lb["hosts"][0]["address"], int(lb.get("frontendPort", 6443)))

    def hactl(self, *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
        return hactl(*args, env=self.env, timeout=timeout)

    def reader(self) -> ApiReader:
        """``/readyz`` through the load balancer every 0.5 s: each request is a new TLS
        connection, and any answer that is not ``200 ok`` (a refused or reset connection, a TLS
        error, a 5xx) is a failure; there is no watch to reconnect."""
        return ApiReader(self.lb[0], self.lb[1], period=0.5)

    def apply(self, spec: str, *, expect: int = 0) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
        """``hactl apply`` with the reader running; asserts its exit status and zero failed reads."""
        with self.reader() as reader:
            res = self.hactl("apply", "-f", spec, "--auto-approve")
        summary = reader.summary()
        print(f"{Path(spec).name}: exit {res.returncode}; reader through the LB: {summary}")
        assert res.returncode == expect, show(res)
        assert reader.ok > 5 and reader.failed == 0, summary
        return res, summary

    def no_changes(self, spec: str) -> None:
        res = self.hactl("plan", "-f", spec, "--detailed-exitcode")
        assert res.returncode == 0 and "No changes" in res.stdout, show(res)

    def kubectl(self, via: str, args: str, *, input: str | None = None) -> str:
        res = self.lab.run(via, f"{KUBECTL} {args}", input=input)
        assert res.returncode == 0, f"kubectl {args}: {res.stderr}"
        return res.stdout

    def nodes(self, via: str) -> dict[str, dict[str, Any]]:
        items = json.loads(self.kubectl(via, "get nodes -o json"))["items"]
        return {n["metadata"]["name"]: n for n in items}

    def stacked_members(self, via: str) -> list[str]:
        res = self.lab.run(via, "etcdctl --endpoints=https://127.0.0.1:2379 "
                           "--cacert=/etc/kubernetes/pki/etcd/ca.crt "
                           "--cert=/etc/kubernetes/pki/etcd/healthcheck-client.crt "
                           "--key=/etc/kubernetes/pki/etcd/healthcheck-client.key -w json member list")
        assert res.returncode == 0, res.stderr
        return sorted(m.get("name", "") for m in json.loads(res.stdout)["members"])

    def assert_reset(self, name: str) -> None:
        """What ``kubeadm reset -f`` and hactl's kubelet disable leave: no kubeconfig, no
        manifests, kubelet neither running nor enabled."""
        res = self.lab.run(name, "ls /etc/kubernetes/kubelet.conf /etc/kubernetes/admin.conf "
                           "/etc/kubernetes/manifests/*.yaml 2>/dev/null; "
                           "systemctl is-active kubelet; systemctl is-enabled kubelet")
        lines = res.stdout.split()
        assert not any(line.startswith("/etc/kubernetes/") for line in lines), res.stdout
        assert "active" not in lines and "enabled" not in lines, res.stdout

    def wait_not_ready(self, via: str, name: str, timeout: float = 150.0) -> float:
        """Until Node ``name``'s Ready condition is not True (the node monitor's grace period)."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            node = self.nodes(via).get(name)
            ready = [c for c in (node or {}).get("status", {}).get("conditions", []) if c["type"] == "Ready"]
            if not ready or ready[0]["status"] != "True":
                return time.monotonic() - started
            time.sleep(2)
        raise AssertionError(f"Node {name} still Ready after {timeout:.0f} s")

    def wait_budget(self, *, healthy: int, allowed: int = 0, via: str = "master03",
                    timeout: float = 60.0) -> None:
        """Until the disruption controller has counted the budget ``web`` in ``default``."""
        started = time.monotonic()
        status: dict[str, Any] = {}
        while time.monotonic() - started < timeout:
            pdb = json.loads(self.kubectl(via, "get pdb web -n default -o json"))
            status = pdb.get("status") or {}
            if status.get("observedGeneration") == pdb["metadata"].get("generation") and \
                    status.get("currentHealthy") == healthy and status.get("disruptionsAllowed") == allowed:
                return
            time.sleep(1)
        raise AssertionError(f"budget web not counted: {status}")
