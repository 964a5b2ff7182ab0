"""``Lab.snapshot`` / ``Lab.restore`` / ``Lab.reimage`` (hactl/lab/snapshot.py) and the shared
converged lab of tests/lab/conftest.py.

- A snapshot's copy of every node's disk is exact: same tree, types, modes, owners, sizes,
  times, symlink targets, device numbers (overlay whiteouts), xattrs (overlay's opaque dirs)
  and contents as the node dirs it was taken of.
- On the converged shared lab: a key written to etcd, a hand-edited haproxy.cfg, a removed
  static Pod manifest and a kubelet stopped and disabled are all gone after a restore, and the
  cluster is healthy again by itself (``hactl check``), the etcd member IDs are the same.
- A re-imaged node has none of its old files, a new SSH host key, and sshd answers with the
  rewritten known_hosts (the old key is gone from it); a restore brings its old disk and key
  back, known_hosts too.
- A restore refuses another topology, an unknown tag and a bad tag; ``down`` removes snapshots.
"""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from hactl.errors import HactlError
from hactl.lab.snapshot import DISK, snapshot_dir

ETCDCTL = ("etcdctl --endpoints=https://127.0.0.1:2379 --cacert=/etc/etcd/pki/ca.crt "
           "--cert=/etc/etcd/pki/healthcheck-client.crt --key=/etc/etcd/pki/healthcheck-client.key ")
SCHEDULER = "/etc/kubernetes/manifests/kube-scheduler.yaml"


def tree(root: str) -> dict[str, tuple[Any, ...]]:
    """Everything a copy must keep, for every entry under ``root``."""
    out: dict[str, tuple[Any, ...]] = {}
    for path in [root, *(str(p) for p in Path(root).rglob("*"))]:
        st = os.lstat(path)
        xattrs = tuple(sorted((a, os.getxattr(path, a, follow_symlinks=False))
                              for a in os.listxattr(path, follow_symlinks=False)))
        kind = stat.S_IFMT(st.st_mode)
        extra: object = None
        if stat.S_ISREG(st.st_mode):
            extra = hashlib.sha256(Path(path).read_bytes()).hexdigest()
        elif stat.S_ISLNK(st.st_mode):
            extra = os.readlink(path)
        elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
            extra = st.st_rdev
        mtime = None if stat.S_ISLNK(st.st_mode) else st.st_mtime_ns
        out[os.path.relpath(path, root)] = (kind, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid,
                                            st.st_size if kind != stat.S_IFDIR else None, mtime, xattrs, extra)
    return out


def disk(node_dir: str) -> dict[str, dict[str, tuple[Any, ...]]]:
    return {part: tree(os.path.join(node_dir, part)) for part in DISK}


def etcd(lab: Any, cmd: str) -> subprocess.CompletedProcess[str]:
    res: subprocess.CompletedProcess[str] = lab.run("etcd01", ETCDCTL + cmd)
    return res


def test_snapshot_copies_are_exact_restore_undoes_changes_and_reimage(shared_lab: Any) -> None:
    lab = shared_lab()
    members = etcd(lab, "member list")
    assert members.returncode == 0 and members.stdout.count("started") == 3, members.stdout + members.stderr
    cfg = lab.read("lb01", "/etc/haproxy/haproxy.cfg")
    scheduler = lab.read("master02", SCHEDULER)

    # the copy is exact (whiteouts, opaque dirs, owners, times, contents)
    started = time.monotonic()
    lab.snapshot("mine", boot=False)
    print(f"snapshot (nodes left off): {time.monotonic() - started:.1f}s")
    assert all(s.state == "stopped" for s in lab.status())
    taken = snapshot_dir(lab.topo, "mine")
    whiteouts = opaque = 0
    for node in lab.topo.nodes:
        here, there = disk(node.dir), disk(os.path.join(taken, node.name))
        assert here == there, node.name
        for entries in here.values():
            whiteouts += sum(1 for e in entries.values() if e[0] == stat.S_IFCHR and e[7] == 0)
            opaque += sum(1 for e in entries.values() if ("trusted.overlay.opaque", b"y") in e[6])
    assert whiteouts > 0  # the image hides the machine's host keys and enabled units
    assert "mine" in lab.snapshots() and "converged" in lab.snapshots()
    started = time.monotonic()
    lab.restore("mine")
    print(f"restore of a powered-off lab: {time.monotonic() - started:.1f}s, whiteouts {whiteouts}, "
          f"opaque dirs {opaque}")
    deadline = time.monotonic() + 60  # etcd re-forms by itself (the API may still be starting)
    while etcd(lab, "endpoint health").returncode != 0:
        assert time.monotonic() < deadline, etcd(lab, "endpoint health").stderr
        time.sleep(0.5)

    # change things on several nodes' disks
    assert etcd(lab, "put /hactl-test/marker restored-away").returncode == 0
    assert etcd(lab, "get /hactl-test/marker --print-value-only").stdout.strip() == "restored-away"
    lab.put("lb01", "/etc/haproxy/haproxy.cfg", cfg + "# edited by hand\n")
    assert lab.run("master02", f"rm {SCHEDULER}").returncode == 0
    stopped = lab.run("worker01", "systemctl disable --now kubelet")
    assert stopped.returncode == 0, stopped.stderr
    assert lab.run("worker01", "systemctl is-active kubelet").stdout.strip() == "inactive"
    lab.stop("etcd03")
    lab.partition("master03")

    started = time.monotonic()
    copied = lab.restore("mine")
    print(f"restore: {time.monotonic() - started:.1f}s (copy {copied:.1f}s)")
    print(f"healthy after {lab.wait_healthy():.1f}s")  # fails the test if it never is

    assert all(s.state == "running" and s.link == "up" and s.sshd for s in lab.status())
    assert etcd(lab, "get /hactl-test/marker").stdout == ""
    again = etcd(lab, "member list")
    assert again.returncode == 0 and sorted(again.stdout.splitlines()) == sorted(members.stdout.splitlines())
    assert lab.read("lb01", "/etc/haproxy/haproxy.cfg") == cfg
    assert lab.read("master02", SCHEDULER) == scheduler
    assert lab.run("worker01", "systemctl is-enabled kubelet").stdout.strip() == "enabled"
    assert lab.run("worker01", "systemctl is-active kubelet").stdout.strip() == "active"

    _reimage_gives_a_fresh_node_with_a_new_host_key(lab)


def _known_key(lab: Any, name: str) -> str:
    address = str(lab.node(name).address)
    lines = [line for line in Path(lab.known_hosts).read_text().splitlines()
             if address in line.split()[0].split(",")]
    assert len(lines) == 1, lines
    return lines[0].split()[2]


def _reimage_gives_a_fresh_node_with_a_new_host_key(lab: Any) -> None:
    """(Part of the test above: one restore and heal of the shared lab less, about 20 s.)"""
    old_key = lab.read("worker01", "/etc/ssh/ssh_host_ed25519_key.pub").split()[1]
    assert _known_key(lab, "worker01") == old_key
    others = {n.name: _known_key(lab, n.name) for n in lab.topo.nodes if n.name != "worker01"}
    assert lab.run("worker01", "test -e /etc/kubernetes/kubelet.conf").returncode == 0
    marker = lab.run("worker01", "echo old > /root/old-file && echo old > /tmp/old-file")
    assert marker.returncode == 0

    started = time.monotonic()
    lab.reimage("worker01")
    print(f"reimage: {time.monotonic() - started:.1f}s")

    new_key = lab.read("worker01", "/etc/ssh/ssh_host_ed25519_key.pub").split()[1]
    assert new_key != old_key
    assert _known_key(lab, "worker01") == new_key  # the old key is not in known_hosts any more
    assert {n: _known_key(lab, n) for n in others} == others
    ssh = lab.run("worker01", "hostname; ls -A /root; ls -A /tmp; ls /etc/kubernetes /var/lib/kubelet 2>&1; "
                  "systemctl is-enabled kubelet", via="ssh")
    lines = ssh.stdout.splitlines()
    assert lines[0] == "worker01", ssh.stdout
    assert "old-file" not in ssh.stdout, ssh.stdout
    assert ".ssh" in lines  # only the lab's authorized key in /root
    assert "'/etc/kubernetes': No such file or directory" in ssh.stdout, ssh.stdout
    assert "'/var/lib/kubelet': No such file or directory" in ssh.stdout, ssh.stdout
    assert lines[-1] != "enabled", ssh.stdout
    units = next(s.units for s in lab.status() if s.name == "worker01")
    assert units == ("containerd.service", "ssh.service"), units  # a fresh, prepared worker

    # a restore brings the old disk back, and the old key into known_hosts
    lab.restore("converged")  # (the next user of the shared lab restores and waits for health)
    assert _known_key(lab, "worker01") == old_key
    back = lab.run("worker01", "cat /root/old-file 2>/dev/null; test -e /etc/kubernetes/kubelet.conf",
                   via="ssh")
    assert back.returncode == 0 and back.stdout == "", back.stdout + back.stderr  # as at the snapshot


def test_restore_refuses_another_topology_and_down_removes_snapshots(lab_factory: Any,
                                                                     lab_leftovers: Any) -> None:
    from hactl.lab import Lab
    from hactl.spec.models import Cluster

    doc: dict[str, Any] = yaml.safe_load((Path(__file__).resolve().parents[2] / "specs" / "lab.yaml").read_text())
    doc["etcd"]["members"] = doc["etcd"]["members"][:1]
    doc["masters"] = doc["masters"][:1]
    doc["workers"] = []
    lab = lab_factory(doc)
    lab.run("master01", "echo before > /root/file", check=True)
    lab.snapshot("t1")
    assert all(s.state == "running" and s.sshd for s in lab.status())  # booted again
    lab.run("master01", "echo after > /root/file", check=True)

    with pytest.raises(HactlError, match="no snapshot 'nope'"):
        lab.restore("nope")
    with pytest.raises(HactlError, match="invalid snapshot tag"):
        lab.restore("../t1")
    bigger = yaml.safe_load(Path(lab.spec_file).read_text())
    extra = dict(bigger["masters"][0], name="master09")
    extra["address"] = extra["address"].rsplit(".", 1)[0] + ".19"
    bigger["masters"].append(extra)
    with pytest.raises(HactlError, match=r"another topology \(not in the snapshot: master09\)"):
        Lab(Cluster.model_validate(bigger)).restore("t1")
    assert lab.read("master01", "/root/file") == "after\n"  # nothing was touched

    lab.restore("t1")
    assert lab.read("master01", "/root/file") == "before\n"
    state = lab.topo.state_dir
    assert os.path.isdir(os.path.join(state, "snapshots", "t1"))
    lab.down()
    assert lab_leftovers(lab) == [] and not os.path.exists(state)
