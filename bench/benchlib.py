"""Shared helpers for the benchmarks in bench/: lab specs, a lab session, timing, machine facts.

Benchmarks run as root against lab nodes (docs/lab.md). Every lab they bring up is taken down
again by the lab's own ``down`` (try/finally); labs use addresses in 198.18.0.0/15 only.
"""

from __future__ import annotations

import ipaddress
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
BIN = Path(sys.executable).parent
BENCH_NET = ipaddress.IPv4Network("198.18.0.0/15")


def bench_spec(n: int, name: str, subnet: str) -> dict[str, Any]:
    """A lab spec with ``n`` hosts: 3 etcd + 1 LB + 3 masters + (n - 7) workers in ``subnet``."""
    if n < 7:
        raise SystemExit(f"--nodes must be at least 7 (3 etcd + 1 lb + 3 masters), got {n}")
    net = ipaddress.IPv4Network(subnet)
    if not net.subnet_of(BENCH_NET):
        raise SystemExit(f"{subnet} is not inside {BENCH_NET}")
    addrs = [str(a) for a in net.hosts()][1:]  # the first address is the lab bridge's
    if len(addrs) < n:
        raise SystemExit(f"{subnet} has room for {len(addrs)} hosts, not {n}")
    it = iter(addrs)

    def hosts(prefix: str, count: int, width: int = 2) -> list[dict[str, str]]:
        return [{"name": f"{prefix}{i:0{width}d}", "address": next(it)} for i in range(1, count + 1)]

    state = f"/var/lib/hactl-lab/{name}"
    lb = hosts("lb", 1)
    etcd = hosts("etcd", 3)
    masters = hosts("master", 3)
    workers = hosts("worker", n - 7, 3 if n - 7 >= 100 else 2)
    return {
        "apiVersion": "hactl.dev/v1alpha1",
        "kind": "Cluster",
        "metadata": {"name": name},
        "controlPlaneEndpoint": f"k8s-api.{name}:6443",
        "kubernetes": {"version": "1.30.4", "podSubnet": "10.244.0.0/16",
                       "serviceSubnet": "10.96.0.0/12"},
        "etcd": {"topology": "external", "version": "3.4.23", "members": etcd},
        "loadBalancer": {"kind": "haproxy", "dnsName": f"k8s-api.{name}", "hosts": lb,
                         "frontendPort": 6443, "healthCheck": "https-readyz",
                         "balance": "roundrobin"},
        "masters": masters,
        "workers": workers,
        "ssh": {"user": "root", "identityFile": f"{state}/id_ed25519",
                "knownHostsFile": f"{state}/known_hosts", "hostKeyPolicy": "strict",
                "connectTimeout": 30},
        "apply": {"parallelism": 10},
        "lab": {"subnet": subnet, "stateDir": state},
    }


def write_spec(spec: dict[str, Any], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    return path


@contextmanager
def lab_session(spec_file: Path) -> Iterator[Any]:
    """Bring up the lab of ``spec_file``; always take it down again (the lab's own ``down``)."""
    from hactl.lab import Lab
    from hactl.spec.load import load_cluster

    lab = Lab(load_cluster(spec_file))
    started = time.monotonic()
    try:
        lab.up()
        print(f"lab {lab.name}: {len(lab.topo.nodes)} nodes up in "
              f"{time.monotonic() - started:.1f}s", file=sys.stderr)
        yield lab
    finally:
        lab.down()
        print(f"lab {lab.name}: down", file=sys.stderr)


def converge(spec_file: Path) -> dict[str, Any]:
    """``hactl apply -f SPEC --auto-approve`` (journal in a temp dir), then ``hactl plan
    --detailed-exitcode``, which must exit 0: the lab matches the spec, a plan is a no-op."""
    import tempfile

    out: dict[str, Any] = {"ok": False}
    with tempfile.TemporaryDirectory(prefix="hactl-bench-converge-") as state:
        env = dict(os.environ, HACTL_STATE_DIR=state)
        seconds, proc = timed_run([tool("hactl"), "apply", "-f", str(spec_file), "--auto-approve"],
                                  env=env, timeout=3600)
        out.update(apply_seconds=round(seconds, 2), apply_exit=proc.returncode)
        if proc.returncode != 0:
            out["error"] = f"apply exit {proc.returncode}: {proc.stderr.strip()[-500:]}"
            return out
        seconds, proc = timed_run([tool("hactl"), "plan", "-f", str(spec_file),
                                   "--detailed-exitcode"], env=env)
        out.update(plan_seconds=round(seconds, 2), plan_detailed_exit=proc.returncode,
                   plan_last_line=(proc.stdout.strip().splitlines() or [""])[-1])
        if proc.returncode != 0:
            out["error"] = (f"plan --detailed-exitcode exit {proc.returncode}: "
                            f"{(proc.stdout + proc.stderr).strip()[-500:]}")
            return out
    out["ok"] = True
    return out


@dataclass
class Series:
    """Repeated timings of one tool on one N: successes are timed, failures only counted."""

    tool: str
    n: int
    seconds: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    loads: list[float] = field(default_factory=list)
    machine: list[float] = field(default_factory=list)
    """Machine-wide CPU seconds during each timed success (see :func:`machine_cpu`)."""

    def add(self, seconds: float, cpu: float, error: str | None, machine: float = 0.0) -> None:
        self.loads.append(os.getloadavg()[0])
        if error is None:
            self.seconds.append(seconds)
            self.cpu.append(cpu)
            self.machine.append(machine)
        else:
            self.failures.append(error)

    @property
    def machine_median(self) -> float | None:
        return statistics.median(self.machine) if self.machine else None

    @property
    def cpu_median(self) -> float | None:
        return statistics.median(self.cpu) if self.cpu else None

    @property
    def median(self) -> float | None:
        return statistics.median(self.seconds) if self.seconds else None

    def data(self) -> dict[str, Any]:
        return {
            "tool": self.tool, "n": self.n, "seconds": [round(s, 4) for s in self.seconds],
            "median": None if self.median is None else round(self.median, 4),
            "min": round(min(self.seconds), 4) if self.seconds else None,
            "max": round(max(self.seconds), 4) if self.seconds else None,
            "cpu_seconds": [round(s, 4) for s in self.cpu],
            "cpu_median": None if self.cpu_median is None else round(self.cpu_median, 4),
            "machine_cpu_seconds": [round(s, 4) for s in self.machine],
            "machine_cpu_median": None if self.machine_median is None else round(self.machine_median, 4),
            "failures": self.failures, "load1": [round(x, 2) for x in self.loads],
        }

    def cell(self) -> str:
        if not self.seconds:
            return f"FAILED ({len(self.failures)}/{len(self.failures)})"
        text = (f"{self.median:.2f} ({min(self.seconds):.2f}–{max(self.seconds):.2f}); "
                f"cpu {self.cpu_median:.2f}; machine {self.machine_median or 0:.2f}")
        return text + (f" [{len(self.failures)} failed]" if self.failures else "")


def machine_cpu() -> float:
    """CPU seconds every process of this machine used since boot (busy jiffies of
    /proc/stat: user, nice, system, irq, softirq, steal). Between two reads: the tool's own
    work, the hosts' sshd and probe scripts, and the lab's idle background, all together."""
    with open("/proc/stat", encoding="ascii") as handle:
        fields = [int(x) for x in handle.readline().split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def idle_rate(seconds: float = 5.0) -> float:
    """CPU seconds per second the machine spends while no tool runs (the lab's background)."""
    start = machine_cpu()
    time.sleep(seconds)
    return (machine_cpu() - start) / seconds


def local_cpu() -> float:
    """CPU seconds used so far by this process and its waited-for children (user + system)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def timed_run(argv: list[str], *, env: dict[str, str] | None = None, cwd: str | None = None,
              timeout: float = 900.0) -> tuple[float, subprocess.CompletedProcess[str]]:
    """Run a command, return (wall seconds, completed process); a timeout is a failed run."""
    started = time.perf_counter()
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=cwd,
                              timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        proc = subprocess.CompletedProcess(argv, -9, out, f"timed out after {timeout}s")
    return time.perf_counter() - started, proc


def _version(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    except OSError as exc:
        return f"unavailable ({exc})"
    text = (out.stdout + out.stderr).strip().splitlines()
    return text[0].strip() if text else "?"


def _pkg(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def _dirty() -> list[str]:
    """Files under hactl/ that differ from the commit (others may be editing the tree)."""
    out = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--", "hactl"],
                         capture_output=True, text=True, timeout=60, check=False)
    return [line[3:] for line in out.stdout.splitlines()]


def machine_facts() -> dict[str, Any]:
    """What the numbers were measured on (cores, load, versions of each tool)."""
    rev = _version(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"])
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "nproc": os.cpu_count(), "cpu": cpu, "kernel": platform.release(),
        "loadavg": [round(x, 2) for x in os.getloadavg()], "nice": os.nice(0),
        "python": platform.python_version(), "hactl_git": rev,
        "hactl_uncommitted": _dirty(),
        "asyncssh": _pkg("asyncssh"), "pyinfra": _pkg("pyinfra"), "paramiko": _pkg("paramiko"),
        "ansible_core": _pkg("ansible-core"),
        "openssh": _version(["ssh", "-V"]),
        "sshd": _version(["dpkg-query", "-W", "-f", "${Version}", "openssh-server"]),
    }


def write_results(name: str, data: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = RESULTS / f"{name}-{stamp}.json"
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    return path


def tool(name: str) -> str:
    """A console script of this venv (hactl, pyinfra, ansible), else from PATH."""
    path = BIN / name
    if path.exists():
        return str(path)
    found = shutil.which(name)
    if found is None:
        raise SystemExit(f"{name} not found; install the bench extra: pip install -e '.[bench]'")
    return found
