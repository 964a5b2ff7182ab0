"""Lab fixtures: real nodes (network namespaces + real sshd) for tests. Needs root.

    def test_something(lab_factory):
        lab = lab_factory()                      # specs/lab.yaml, own name/subnet/state dir
        lab = lab_factory("specs/other.yaml")    # or a path, a dict (parsed YAML) or a Cluster
        lab = lab_factory(knobs={"kubeadm": {...}}, up=False)
        lab.run("etcd01", "systemctl is-active etcd")   # CompletedProcess (nsenter; via="ssh")
        lab.spec_file                            # the rewritten spec on disk (for `hactl -f`)

Each lab gets a unique name (``t<pid>-<n>``), a free /24 in 198.19.0.0/16 (host addresses keep
their offset), its state dir under /var/lib/hactl-lab and a spec whose ``ssh`` points at the
lab's key and known_hosts. Every lab is taken down after the test, even on failure, and the test
fails if anything of it (namespace, link, mount, process, state dir) is left.

A converged cluster shared by the whole session (instead of converging per test)::

    def test_day2(shared_lab):
        lab = shared_lab()                       # specs/lab.yaml; or shared_lab("specs/stacked.yaml")
        lab.spec_file                            # this test's own copy of the converged spec
        doc = lab.spec_doc()                     # that spec, parsed (a fresh deep copy)
        five = lab.write_spec(lambda d: d["masters"].extend(lab.spares["masters"]), "five")
        lab.spares                               # {"etcd": [...], "masters": [...], "workers": [...]}
        lab.run(...), lab.stop(...), …           # a full Lab (hactl.lab.Lab); lab.cluster = the spec's

The first test that asks for a spec brings its lab up, converges it ONCE (``hactl apply -f SPEC
--auto-approve``, then ``hactl check -f SPEC`` must pass) and snapshots every node's disk
(``Lab.snapshot``). Every later test that asks for it gets the snapshot restored first
(``Lab.restore``: every node powered off, its disk put back, booted) and waits until ``hactl
check`` passes again, so each test starts from the same converged cluster whatever the previous
one did to it. The lab also holds idle fresh nodes that are not in the spec (``lab.spares``,
host entries ready to add to the spec: etcd04/etcd05, master04/master05, worker03 for
specs/lab.yaml), so day-2 tests can add hosts. A test must not take the shared lab down; it may
stop, partition, re-image or break any node. The shared labs are named ``s<pid>-<n>`` and are
taken down at the end of the session (even after failures); the session fails if anything of
them is left. Setup and restore times are printed in the terminal summary.
"""

from __future__ import annotations

import copy
import fcntl
import ipaddress
import itertools
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
LAB_SPEC = REPO / "specs" / "lab.yaml"
POOL = ipaddress.IPv4Network("198.19.0.0/16")
ALLOC_LOCK = "/run/hactl-lab-tests.lock"
_counter = itertools.count(1)
PREFIX = f"t{os.getpid()}-"
SHARED_PREFIX = f"s{os.getpid()}-"
HACTL = [sys.executable, "-c", "from hactl.cli import main; main(prog_name='hactl')"]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.lab)
            if item.get_closest_marker("slow") and os.environ.get("HACTL_SKIP_SLOW") == "1":
                item.add_marker(pytest.mark.skip(reason="slow lab test skipped (HACTL_SKIP_SLOW=1)"))


@pytest.fixture(autouse=True)
def _needs_root_and_no_leaks() -> Iterator[None]:
    if os.geteuid() != 0:
        pytest.skip("lab tests need root (network namespaces, mounts, bridges); run as root")
    yield
    left = leftovers(PREFIX)
    assert not left, f"lab resources left behind: {left}"


def leftovers(prefix: str, state_dirs: list[str] | None = None) -> list[str]:
    """Everything of labs named ``prefix*`` that still exists: netns, links, mounts, processes."""
    found: list[str] = []
    netns_dir = Path("/run/netns")
    if netns_dir.is_dir():
        found += [f"netns {n.name}" for n in netns_dir.iterdir() if n.name.startswith("hl-" + prefix)]
    dirs = state_dirs if state_dirs is not None else [
        str(p) for p in Path("/var/lib/hactl-lab").glob(prefix + "*")
    ]
    found += [f"state dir {d}" for d in dirs if os.path.exists(d)]
    with open("/proc/mounts", encoding="utf-8") as handle:
        mounts = handle.read()
    found += [f"mount {line}" for line in mounts.splitlines() if "/var/lib/hactl-lab/" + prefix in line]
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if b"/var/lib/hactl-lab/" + prefix.encode() in cmdline:
                text = cmdline.replace(b"\0", b" ").decode(errors="replace")
                found.append(f"process {pid} {text}")
    return found


def links_of(lab: Any) -> list[str]:
    """The lab's bridge and veths that still exist in the root namespace."""
    names = {lab.topo.bridge, lab.topo.uplink_bridge, *(n.veth for n in lab.topo.nodes),
             *(n.uplink_veth for n in lab.topo.nodes)}
    out = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, check=True).stdout
    return [line.split(":")[1].strip().split("@")[0] for line in out.splitlines() if line.split(":")[1].strip().split("@")[0] in names]


def _used_subnets() -> set[ipaddress.IPv4Network]:
    out = subprocess.run(["ip", "-o", "-4", "addr", "show"], capture_output=True, text=True, check=True).stdout
    used = set()
    for line in out.splitlines():
        addr = ipaddress.IPv4Interface(line.split()[3])
        if addr.ip in POOL:
            used.add(ipaddress.IPv4Network(f"{addr.ip}/24", strict=False))
    return used


def _allocate(doc: dict[str, Any], name: str, salt: int, create: Callable[[dict[str, Any]], Any]) -> Any:
    """Under the allocation lock: pick a free /24, relocate ``doc`` there and ``create`` the
    lab (which must bring it up, so that its bridge claims the subnet before the lock goes)."""
    Path(ALLOC_LOCK).touch()
    with open(ALLOC_LOCK) as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        used = _used_subnets()
        free = [s for s in POOL.subnets(new_prefix=24) if s not in used and s.network_address != POOL.network_address]
        subnet = free[(os.getpid() * 7 + salt) % len(free)]
        return create(relocate(doc, name, subnet))


def relocate(doc: dict[str, Any], name: str, subnet: ipaddress.IPv4Network) -> dict[str, Any]:
    """A copy of a parsed spec moved to ``name``/``subnet`` (addresses keep their offsets)."""
    doc = copy.deepcopy(doc)
    old = ipaddress.IPv4Network((doc.get("lab") or {}).get("subnet", "198.18.0.0/24"))

    def move(value: str) -> str:
        return str(subnet.network_address + (int(ipaddress.IPv4Address(value)) - int(old.network_address)))

    hosts = (
        (doc.get("etcd") or {}).get("members", [])
        + doc["loadBalancer"]["hosts"]
        + doc["masters"]
        + doc.get("workers", [])
    )
    for host in hosts:
        host["address"] = move(host["address"])
    if doc["loadBalancer"].get("vip"):
        doc["loadBalancer"]["vip"] = move(doc["loadBalancer"]["vip"])
    host_part, _, port = doc["controlPlaneEndpoint"].rpartition(":")
    try:
        ipaddress.IPv4Address(host_part)
        doc["controlPlaneEndpoint"] = f"{move(host_part)}:{port}"
    except ValueError:
        pass
    state_dir = f"/var/lib/hactl-lab/{name}"
    doc["metadata"]["name"] = name
    doc["lab"] = {"subnet": str(subnet), "stateDir": state_dir}
    doc.setdefault("ssh", {})
    doc["ssh"]["identityFile"] = f"{state_dir}/id_ed25519"
    doc["ssh"]["knownHostsFile"] = f"{state_dir}/known_hosts"
    return doc


LabFactory = Callable[..., Any]


@pytest.fixture
def lab_leftovers() -> Callable[[Any], list[str]]:
    """``lab_leftovers(lab)``: what of ``lab`` still exists (empty after a clean ``down``)."""
    return lambda lab: leftovers(lab.name, [lab.topo.state_dir]) + [f"link {n}" for n in links_of(lab)]


@pytest.fixture
def lab_factory(tmp_path: Path) -> Iterator[LabFactory]:
    from hactl.lab import Lab
    from hactl.spec.models import Cluster

    labs: list[Any] = []

    def make(spec: str | Path | dict[str, Any] | Cluster = LAB_SPEC, *, knobs: dict[str, Any] | None = None,
             up: bool = True, unprepared: tuple[str, ...] = ()) -> Any:
        if isinstance(spec, Cluster):
            doc = spec.model_dump(mode="json", by_alias=True, exclude_none=True)
        elif isinstance(spec, dict):
            doc = spec
        else:
            doc = yaml.safe_load(Path(spec).read_text())
        name = f"{PREFIX}{next(_counter)}"

        def create(moved: dict[str, Any]) -> Any:
            spec_file = tmp_path / f"{name}.yaml"
            spec_file.write_text(yaml.safe_dump(moved, sort_keys=False))
            lab = Lab(Cluster.model_validate(moved), knobs=knobs, unprepared=unprepared)
            lab.spec_file = str(spec_file)
            labs.append(lab)
            if up:
                lab.up()
            return lab

        return _allocate(doc, name, len(labs), create)

    try:
        yield make
    finally:
        errors = []
        for lab in reversed(labs):
            try:
                lab.down()
            except Exception as exc:  # keep tearing the others down
                errors.append(f"{lab.name}: {exc}")
        for lab in labs:
            left = leftovers(lab.name, [lab.topo.state_dir]) + [f"link {n}" for n in links_of(lab)]
            if left:
                errors.append(f"{lab.name} left: {left}")
        assert not errors, errors


# -- the shared converged lab ------------------------------------------------------------------

SPARES: dict[str, dict[str, list[dict[str, str]]]] = {
    "lab.yaml": {
        "etcd": [{"name": "etcd04", "address": "198.18.0.24"}, {"name": "etcd05", "address": "198.18.0.25"}],
        "masters": [{"name": "master04", "address": "198.18.0.14"},
                    {"name": "master05", "address": "198.18.0.15"}],
        "workers": [{"name": "worker03", "address": "198.18.0.33"}],
    },
    "stacked.yaml": {
        "etcd": [],
        "masters": [{"name": "master04", "address": "198.18.2.14"},
                    {"name": "master05", "address": "198.18.2.15"}],
        "workers": [{"name": "worker02", "address": "198.18.2.32"}],
    },
}
"""Idle nodes a shared lab holds besides its spec's hosts (by spec file name), on the spec's
own addresses (relocated with the rest)."""
HEALTHY_TIMEOUT = 300.0
SHARED_TIMINGS: list[str] = []
"""What the shared labs cost (printed in the terminal summary)."""


def _hactl(*args: str, env: dict[str, str], timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*HACTL, *args], capture_output=True, text=True, timeout=timeout, cwd=REPO,
                          env=env, check=False)


def _shown(res: subprocess.CompletedProcess[str]) -> str:
    return f"exit {res.returncode}\n--- stdout\n{res.stdout[-4000:]}\n--- stderr\n{res.stderr[-4000:]}"


def _host_lists(doc: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """The spec's host lists a spare can join (only those the spec has)."""
    lists = {"etcd": (doc.get("etcd") or {}).get("members"), "masters": doc.get("masters"),
             "workers": doc.get("workers")}
    return {role: hosts for role, hosts in lists.items() if isinstance(hosts, list)}


def _make_shared_lab_class() -> type:
    from hactl.lab.lab import Lab

    class SharedLab(Lab):
        """A shared converged lab as one test sees it (see this module's docstring)."""

        spares: dict[str, list[dict[str, Any]]]
        all_spares: dict[str, list[dict[str, Any]]]
        registry: SharedLabs
        tmp_dir: Path
        base_doc: dict[str, Any]

        def wait_healthy(self, timeout: float = HEALTHY_TIMEOUT) -> float:
            """Wait until ``hactl check`` passes on the converged spec; returns the seconds."""
            return self.registry.wait_healthy(self, timeout)

        def spec_doc(self) -> dict[str, Any]:
            """The converged spec (relocated), parsed: a fresh copy to edit."""
            return copy.deepcopy(self.base_doc)

        def write_spec(self, edit: Callable[[dict[str, Any]], Any] | None = None, name: str = "edited") -> str:
            """Write the converged spec, changed by ``edit(doc)``, to this test's tmp dir as
            ``<name>.yaml`` (next to ``spec_file``); returns its path."""
            doc = self.spec_doc()
            if edit is not None:
                edit(doc)
            path = self.tmp_dir / f"{name}.yaml"
            path.write_text(yaml.safe_dump(doc, sort_keys=False))
            return str(path)

    return SharedLab


class SharedLabs:
    """The session's shared labs, one per spec file: brought up and converged on first use."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.labs: dict[str, Any] = {}
        self.made: list[Any] = []  # every lab brought up (taken down at the end, even half-made)
        self.failed: dict[str, str] = {}
        self.pristine: set[str] = set()
        self.cls: type | None = None

    def env(self, lab: Any) -> dict[str, str]:
        return {**os.environ, "HACTL_STATE_DIR": str(self.root / f"{lab.name}-state")}

    def get(self, spec: str | Path) -> Any:
        path = Path(spec) if Path(spec).is_absolute() else REPO / spec
        key = str(path.resolve())
        if key in self.failed:
            pytest.fail(f"the shared lab for {spec} could not be set up (first failure):\n{self.failed[key]}")
        if key not in self.labs:
            try:
                self.labs[key] = self._create(path)
            except BaseException as exc:
                self.failed[key] = f"{type(exc).__name__}: {exc}"
                raise
            self.pristine.add(key)
        lab = self.labs[key]
        if key in self.pristine:
            self.pristine.discard(key)  # the first test gets the freshly converged cluster
        else:
            self._restore(lab)
        return lab

    def _create(self, path: Path) -> Any:
        from hactl.spec.models import Cluster

        if self.cls is None:
            self.cls = _make_shared_lab_class()
        cls = self.cls
        doc = yaml.safe_load(path.read_text())
        spares = SPARES.get(path.name, {})
        whole = copy.deepcopy(doc)
        for role, hosts in _host_lists(whole).items():
            hosts.extend(copy.deepcopy(spares.get(role, [])))
        spare_names = {h["name"] for hosts in spares.values() for h in hosts}
        name = f"{SHARED_PREFIX}{len(self.made) + 1}"

        def create(moved: dict[str, Any]) -> Any:
            lab = cls(Cluster.model_validate(moved))
            self.made.append(lab)
            base = copy.deepcopy(moved)
            lab.all_spares = {}
            for role, hosts in _host_lists(base).items():
                lab.all_spares[role] = [h for h in hosts if h["name"] in spare_names]
                hosts[:] = [h for h in hosts if h["name"] not in spare_names]
            lab.base_doc = base
            lab.cluster = Cluster.model_validate(base)
            started = time.monotonic()
            lab.up()
            SHARED_TIMINGS.append(f"{path.name} ({name}): up {time.monotonic() - started:.1f}s "
                                  f"({len(lab.topo.nodes)} nodes)")
            return lab

        lab = _allocate(whole, name, 100 + len(self.made), create)
        spec_file = self.root / f"{name}.yaml"
        spec_file.write_text(yaml.safe_dump(lab.base_doc, sort_keys=False))
        lab.spec_file = str(spec_file)
        started = time.monotonic()
        res = _hactl("apply", "-f", str(spec_file), "--auto-approve", env=self.env(lab))
        assert res.returncode == 0, f"converging the shared lab {name} failed:\n{_shown(res)}"
        converged = time.monotonic() - started
        res = _hactl("check", "-f", str(spec_file), env=self.env(lab), timeout=300)
        assert res.returncode == 0, f"the converged shared lab {name} is not healthy:\n{_shown(res)}"
        started = time.monotonic()
        copied = lab.snapshot("converged")
        snapped = time.monotonic() - started
        healthy = self.wait_healthy(lab)
        SHARED_TIMINGS.append(f"{path.name} ({name}): converge {converged:.1f}s, snapshot {snapped:.1f}s "
                              f"(copy {copied:.1f}s), healthy again after {healthy:.1f}s")
        return lab

    def _restore(self, lab: Any) -> None:
        started = time.monotonic()
        copied = lab.restore("converged")
        booted = time.monotonic() - started
        healthy = self.wait_healthy(lab)
        SHARED_TIMINGS.append(f"{lab.name}: restore {booted:.1f}s (copy {copied:.1f}s), "
                              f"healthy after {healthy:.1f}s more")

    def wait_healthy(self, lab: Any, timeout: float = HEALTHY_TIMEOUT) -> float:
        """Until ``hactl check -f SPEC`` passes (the cluster heals by itself after a boot)."""
        started = time.monotonic()
        waited: list[str] = []
        while True:
            res = _hactl("check", "-f", str(self.root / f"{lab.name}.yaml"), env=self.env(lab), timeout=300)
            if res.returncode == 0:
                if waited:
                    SHARED_TIMINGS.append(f"{lab.name}: waited for: " + " | ".join(waited))
                return time.monotonic() - started
            fails = [line.strip() for line in res.stdout.splitlines() if "[FAIL]" in line]
            waited.append(f"{time.monotonic() - started:.0f}s " + "; ".join(fails)[:300])
            if time.monotonic() - started > timeout:
                raise AssertionError(f"the shared lab {lab.name} is not healthy {timeout:.0f}s after its "
                                     f"restore:\n{_shown(res)}")
            time.sleep(1.0)

    def close(self) -> list[str]:
        errors = []
        for lab in self.made:
            try:
                lab.down()
            except Exception as exc:  # keep tearing the others down
                errors.append(f"{lab.name}: {exc}")
        for lab in self.made:
            left = leftovers(lab.name, [lab.topo.state_dir]) + [f"link {n}" for n in links_of(lab)]
            if left:
                errors.append(f"{lab.name} left: {left}")
        left = leftovers(SHARED_PREFIX)
        if left:
            errors.append(f"shared labs left: {left}")
        return errors


@pytest.fixture(scope="session")
def _shared_labs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SharedLabs]:
    labs = SharedLabs(tmp_path_factory.mktemp("shared-labs"))
    try:
        yield labs
    finally:
        errors = labs.close()
        assert not errors, errors


@pytest.fixture
def shared_lab(_shared_labs: SharedLabs, tmp_path: Path) -> Iterator[Callable[..., Any]]:
    """``shared_lab(spec="specs/lab.yaml")``: the session's converged lab for ``spec``, restored
    to its converged snapshot and healthy, with ``spec_file`` a copy of its spec for this test."""
    from hactl.spec.models import Cluster

    def get(spec: str | Path = LAB_SPEC) -> Any:
        lab = _shared_labs.get(spec)
        lab.registry = _shared_labs
        lab.tmp_dir = tmp_path
        lab.spares = copy.deepcopy(lab.all_spares)  # this test's to edit
        lab.cluster = Cluster.model_validate(lab.base_doc)
        lab.spec_file = lab.write_spec(None, lab.name)
        return lab

    yield get


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if SHARED_TIMINGS:
        terminalreporter.write_sep("-", "shared labs")
        for line in SHARED_TIMINGS:
            terminalreporter.write_line(line)
