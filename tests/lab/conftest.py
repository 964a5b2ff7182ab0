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
"""

from __future__ import annotations

import copy
import fcntl
import ipaddress
import itertools
import os
import subprocess
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
    names = {lab.topo.bridge, *(n.veth for n in lab.topo.nodes)}
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
             up: bool = True) -> Any:
        if isinstance(spec, Cluster):
            doc = spec.model_dump(mode="json", by_alias=True, exclude_none=True)
        elif isinstance(spec, dict):
            doc = spec
        else:
            doc = yaml.safe_load(Path(spec).read_text())
        name = f"{PREFIX}{next(_counter)}"
        Path(ALLOC_LOCK).touch()
        with open(ALLOC_LOCK) as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            used = _used_subnets()
            free = [s for s in POOL.subnets(new_prefix=24) if s not in used and s.network_address != POOL.network_address]
            subnet = free[(os.getpid() * 7 + len(labs)) % len(free)]
            moved = relocate(doc, name, subnet)
            spec_file = tmp_path / f"{name}.yaml"
            spec_file.write_text(yaml.safe_dump(moved, sort_keys=False))
            lab = Lab(Cluster.model_validate(moved), knobs=knobs)
            lab.spec_file = str(spec_file)
            labs.append(lab)
            if up:
                lab.up()
        return lab

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
