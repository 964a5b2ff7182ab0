"""Lab nodes are real hosts: ssh with strict host keys, own hostname/address//etc; down is clean."""

from __future__ import annotations

import os
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from hactl.cli import main
from hactl.errors import HactlError


def _ssh(lab: Any, node: str, command: str) -> subprocess.CompletedProcess[str]:
    """The plain OpenSSH client, the lab key and StrictHostKeyChecking=yes, as a user would."""
    address = str(lab.node(node).address)
    argv = [
        "ssh", "-F", "/dev/null", "-i", lab.key_file,
        "-o", f"UserKnownHostsFile={lab.known_hosts}", "-o", "StrictHostKeyChecking=yes",
        "-o", "BatchMode=yes", "-o", "ConnectTimeout=5", f"root@{address}", command,
    ]
    return subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)


def test_cli_up_ssh_strict_isolation_and_clean_down(lab_factory: Any, lab_leftovers: Any) -> None:
    lab = lab_factory(up=False)
    runner = CliRunner()
    result = runner.invoke(main, ["lab", "up", "-f", lab.spec_file])
    assert result.exit_code == 0, result.output
    assert "9 nodes up" in result.output

    names = [n.name for n in lab.topo.nodes]

    def probe(name: str) -> tuple[str, subprocess.CompletedProcess[str]]:
        return name, _ssh(lab, name, "hostname; cat /etc/hostname; ip -4 -o addr show dev eth0; "
                                     "getent hosts k8s-api.lab; echo $HOME; ls -A /root")

    with ThreadPoolExecutor(max_workers=9) as pool:
        results = dict(pool.map(probe, names))
    lb_address = str(lab.node("lb01").address)
    for name, proc in results.items():
        assert proc.returncode == 0, f"{name}: {proc.stderr}"
        lines = proc.stdout.splitlines()
        assert lines[0] == name and lines[1] == name
        assert f"inet {lab.node(name).address}/24" in lines[2]
        assert lines[3].split()[0] == lb_address  # the control-plane endpoint name → the LB
        assert lines[4] == "/root"
        assert lines[5:] == [".ssh"]  # a clean /root: no shell start-up files of the machine

    # a file in one node's /etc is private to that node
    marker = "/etc/hactl-lab-isolation-probe"
    assert _ssh(lab, "etcd01", f"echo private > {marker}").returncode == 0
    assert lab.run("etcd01", f"cat {marker}").stdout == "private\n"
    assert lab.run("etcd02", f"test -e {marker}").returncode == 1
    assert not os.path.exists(marker)
    # and so are /var, /root, /tmp
    lab.run("master01", "touch /var/lib/probe /root/probe /tmp/probe", check=True)
    assert lab.run("master02", "ls /var/lib/probe /root/probe /tmp/probe").returncode != 0
    assert not any(os.path.exists(p) for p in ("/var/lib/probe", "/root/probe"))

    # nothing leaves the lab: the nodes' default route (eth1, the uplink) ends at the machine,
    # whose policy rule refuses everything arriving from the uplink that is not for the machine
    # itself (ICMP "network unreachable", rate-limited by the kernel: later tries may time out)
    out = lab.run("worker01", "timeout 2 bash -c 'exec 3<>/dev/tcp/192.0.2.1/22' 2>&1")
    assert (out.returncode == 1 and "Network is unreachable" in out.stdout) or out.returncode == 124, out
    uplink = lab.node("worker01").uplink_address
    refused = subprocess.run(["ip", "route", "get", "192.0.2.1", "iif", lab.topo.uplink_bridge, "from", str(uplink)],
                             capture_output=True, text=True)
    assert refused.returncode != 0 and "Network is unreachable" in refused.stderr
    routes = subprocess.run(["ip", "route", "show", "198.18.0.0/15"], capture_output=True, text=True).stdout
    assert routes.startswith("unreachable 198.18.0.0/15")
    # and nodes never see the lab's keys
    assert lab.run("worker01", "ls /var/lib/hactl-lab").returncode != 0

    # an unknown host key is refused under strict checking
    Path(lab.known_hosts).write_text("")
    refused = _ssh(lab, "etcd01", "true")
    assert refused.returncode == 255 and "Host key verification failed" in refused.stderr

    status = runner.invoke(main, ["lab", "status", "-f", lab.spec_file])
    assert status.exit_code == 0, status.output
    assert status.output.count("running") == 9 and "ssh.service" in status.output

    result = runner.invoke(main, ["lab", "down", "-f", lab.spec_file])
    assert result.exit_code == 0, result.output
    assert lab_leftovers(lab) == []


def test_stop_start_partition_heal(lab_factory: Any) -> None:
    lab = lab_factory()
    lab.run("worker01", "echo kept > /etc/kept; echo gone > /run/gone", check=True)
    old_pid = lab.pid("worker01")
    lab.stop("worker01")
    assert not os.path.exists(f"/proc/{old_pid}") or "Z" in Path(f"/proc/{old_pid}/stat").read_text().split(")")[1][:3]
    assert {s.name: s.state for s in lab.status()}["worker01"] == "stopped"
    with pytest.raises(HactlError, match="not running"):
        lab.run("worker01", "true")
    others = {s.name: s.pid for s in lab.status() if s.name != "worker01"}
    lab.up()  # idempotent: boots what is off, leaves the rest alone
    assert {s.name: s.pid for s in lab.status() if s.name != "worker01"} == others
    lab.stop("worker01")
    lab.start("worker01")
    assert lab.run("worker01", "cat /etc/kept").stdout == "kept\n"  # the disk survives
    assert lab.run("worker01", "test -e /run/gone").returncode == 1  # /run is a fresh tmpfs
    assert lab.run("worker01", "systemctl is-active ssh", via="ssh").stdout == "active\n"

    lab.partition("worker02")
    by_name = {s.name: s for s in lab.status()}
    assert by_name["worker02"].link == "down" and not by_name["worker02"].sshd
    probe = f"timeout 2 bash -c 'exec 3<>/dev/tcp/{lab.node('worker02').address}/22'"
    assert lab.run("worker01", probe).returncode == 124  # no answer at all: the cable is cut
    lab.heal("worker02")
    assert lab.run("worker02", "hostname", via="ssh").stdout == "worker02\n"
    assert lab.run("worker01", probe).returncode == 0


def test_refuses_without_root_and_names_missing_packages(lab_factory: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from hactl.lab import lab as lab_module

    lab = lab_factory(up=False)
    monkeypatch.setattr(lab_module.os, "geteuid", lambda: 1000)
    with pytest.raises(HactlError, match="needs root"):
        lab.up()
    monkeypatch.undo()
    monkeypatch.setitem(lab_module.REQUIRED, "haproxy", ("/nonexistent/haproxy", "haproxy"))
    monkeypatch.setitem(lab_module.REQUIRED, "etcd", ("/nonexistent/etcd", "etcd-server"))
    with pytest.raises(HactlError) as info:
        lab.up()
    assert "apt-get install -y etcd-server haproxy" in str(info.value)
