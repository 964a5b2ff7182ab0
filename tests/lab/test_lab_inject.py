"""Prepared and unprepared lab nodes, the second interface, and injected host conditions — each
seen over ssh exactly as a real host shows it, and gone again after ``clear``."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

import yaml

from hactl.lab import inject

ROOT = Path(__file__).resolve().parents[2]


def _small_spec() -> dict[str, Any]:
    doc = yaml.safe_load((ROOT / "specs" / "lab.yaml").read_text())
    doc["etcd"]["members"] = doc["etcd"]["members"][:1]
    doc["masters"] = doc["masters"][:1]
    doc["workers"] = doc["workers"][:1]
    return doc


def _ssh(lab: Any, node: str, command: str) -> str:
    argv = [*lab.ssh_argv(node), f"root@{lab.node(node).address}", command]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    assert proc.returncode == 0, f"{node}: {command}: {proc.stderr}"
    return proc.stdout


def test_prepared_unprepared_and_second_interface(lab_factory: Any) -> None:
    lab = lab_factory(_small_spec(), up=False)
    lab.unprepared = frozenset({"worker01"})
    lab.up()
    for name in ("master01", "worker01", "etcd01"):
        node = lab.node(name)
        text = _ssh(lab, name, "ip -4 -o addr show dev eth1; ip route show default; "
                               "cat /proc/sys/net/bridge/bridge-nf-call-iptables")
        lines = text.splitlines()
        assert f"inet {node.uplink_address}/24" in lines[0]
        assert node.uplink_address != node.address and node.uplink_address not in lab.topo.subnet
        assert lines[1].startswith(f"default via {lab.topo.uplink_gateway} dev eth1")
        assert lines[2] == "1"
    # prepared Kubernetes node: ip_forward on, containerd answering on its socket
    assert _ssh(lab, "master01", "cat /proc/sys/net/ipv4/ip_forward") == "1\n"
    assert _ssh(lab, "master01", "systemctl is-active containerd").strip() == "active"
    version = _ssh(lab, "master01", "ctr --address /run/containerd/containerd.sock version")
    assert "Server:" in version and "Version:" in version.split("Server:")[1]
    assert "SystemdCgroup = true" in _ssh(lab, "master01", "cat /etc/containerd/config.toml")
    # prepared etcd node: the sysctls, but no container runtime
    assert _ssh(lab, "etcd01", "cat /proc/sys/net/ipv4/ip_forward") == "1\n"
    assert _ssh(lab, "etcd01", "systemctl is-enabled containerd; true").strip() != "enabled"
    # unprepared: a new network namespace's ip_forward, no runtime, no socket
    assert _ssh(lab, "worker01", "cat /proc/sys/net/ipv4/ip_forward") == "0\n"
    assert _ssh(lab, "worker01", "systemctl is-active containerd; test -S /run/containerd/containerd.sock"
                                 " && echo socket || echo none").split() == ["inactive", "none"]
    # kubeadm's default advertise address is the default-route interface's (eth1), not the spec's
    default = lab.run("master01", "PYTHONPATH=/run/hactl-lab/src python3 -c 'from hactl.lab.standins."
                                  "kubeadm_common import default_route_address as d; print(d())'", check=True)
    assert default.stdout.strip() == str(lab.node("master01").uplink_address)
    # kubeadm's preflight: the prepared master passes, the unprepared worker fails like a bare host
    config = ("apiVersion: kubeadm.k8s.io/v1beta3\nkind: ClusterConfiguration\n"
              "networking: {podSubnet: 10.244.0.0/16}\n")
    for name in ("master01", "worker01"):
        lab.put(name, "/root/init.yaml", config)
    ok = lab.run("master01", "kubeadm init phase preflight --config /root/init.yaml", via="ssh")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    bare = lab.run("worker01", "kubeadm init phase preflight --config /root/init.yaml", via="ssh")
    assert bare.returncode == 1
    assert ("\t[ERROR FileContent--proc-sys-net-ipv4-ip_forward]: /proc/sys/net/ipv4/ip_forward contents are "
            "not set to 1\n") in bare.stderr
    assert "\t[ERROR CRI]: container runtime is not running: output: " in bare.stderr
    assert ("connect: no such file or directory" in bare.stderr
            and "unix:///var/run/containerd/containerd.sock" in bare.stderr)

    # a reboot keeps the prepared node's sysctl (sysctl.d applied at boot)
    lab.stop("master01")
    lab.start("master01")
    assert _ssh(lab, "master01", "cat /proc/sys/net/ipv4/ip_forward") == "1\n"


def test_inject_and_clear_each_condition(lab_factory: Any) -> None:
    lab = lab_factory(_small_spec())
    node = "master01"

    # each condition as kubeadm's own preflight reports it (the stand-in's real check names)
    config = "apiVersion: kubeadm.k8s.io/v1beta3\nkind: ClusterConfiguration\n"
    lab.put(node, "/root/init.yaml", config)
    lab.inject(node, "swap")
    lab.inject(node, "ip-forward")
    lab.inject(node, "port", port=10250)
    lab.inject(node, "kubelet-version", version="1.31.0")
    pre = lab.run(node, "kubeadm init phase preflight --config /root/init.yaml", via="ssh")
    assert pre.returncode == 1, pre.stdout + pre.stderr
    for line in ("\t[WARNING Swap]: swap is supported for cgroup v2 only; the NodeSwap feature gate of the "
                 "kubelet is beta but disabled by default\n",
                 "\t[ERROR Port-10250]: Port 10250 is in use\n",
                 "\t[ERROR KubeletVersion]: the kubelet version is higher than the control plane version. This is "
                 'not a supported version skew and may lead to a malfunctional cluster. Kubelet version: "1.31.0" '
                 'Control plane version: "1.30.4"\n',
                 "\t[ERROR FileContent--proc-sys-net-ipv4-ip_forward]: /proc/sys/net/ipv4/ip_forward contents "
                 "are not set to 1\n"):
        assert line in pre.stderr, pre.stderr
    for condition in ("swap", "ip-forward", "port", "kubelet-version"):
        lab.clear(node, condition)
    assert lab.run(node, "kubeadm init phase preflight --config /root/init.yaml", via="ssh").returncode == 0

    # swap: /proc/swaps in the kernel's format
    before = _ssh(lab, node, "cat /proc/swaps")
    assert before == inject.SWAPS_HEADER
    lab.inject(node, "swap")
    assert _ssh(lab, node, "cat /proc/swaps") == inject.SWAPS_HEADER + (
        "/swap.img                               file\t\t4194300\t\t0\t\t-2\n")
    assert _ssh(lab, node, "swapon --show=NAME,TYPE --noheadings").split() == ["/swap.img", "file"]
    assert _ssh(lab, "worker01", "cat /proc/swaps") == inject.SWAPS_HEADER  # other nodes: untouched
    assert "/swap.img" not in Path("/proc/swaps").read_text()  # the machine: untouched
    lab.clear(node, "swap")
    assert _ssh(lab, node, "cat /proc/swaps") == before

    # ip_forward off (the real sysctl of the node's network namespace), then back on
    lab.inject(node, "ip-forward")
    assert _ssh(lab, node, "sysctl -n net.ipv4.ip_forward") == "0\n"
    assert _ssh(lab, "worker01", "sysctl -n net.ipv4.ip_forward") == "1\n"
    lab.clear(node, "ip-forward")
    assert _ssh(lab, node, "sysctl -n net.ipv4.ip_forward") == "1\n"

    # a port taken by a process of the node
    lab.inject(node, "port", port=2380)
    listeners = _ssh(lab, node, "ss -Hltnp 'sport = :2380'")
    assert "0.0.0.0:2380" in listeners and '"python3"' in listeners, listeners
    pid = inject.active(lab, node)["port"]["pid"]
    lab.clear(node, "port")
    assert _ssh(lab, node, "ss -Hltn 'sport = :2380'") == ""
    assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split(")")[1][:3]

    # a kubelet binary of another version
    assert _ssh(lab, node, "kubelet --version") == "Kubernetes v1.30.4\n"
    lab.inject(node, "kubelet-version", version="1.29.0")
    assert _ssh(lab, node, "kubelet --version") == "Kubernetes v1.29.0\n"
    assert _ssh(lab, node, "kubeadm version -o short") == "v1.30.4\n"
    assert _ssh(lab, "worker01", "kubelet --version") == "Kubernetes v1.30.4\n"
    lab.clear(node, "kubelet-version")
    assert _ssh(lab, node, "kubelet --version") == "Kubernetes v1.30.4\n"

    # clock skew for every new process of the node (date over ssh)
    def skew(name: str) -> float:
        start = time.time()
        seen = float(_ssh(lab, name, "date +%s.%N"))
        return seen - (start + time.time()) / 2

    assert abs(skew(node)) < 3
    lab.inject(node, "clock-skew", seconds=120)
    assert 115 < skew(node) < 125
    assert abs(skew("worker01")) < 3
    lab.clear(node, "clock-skew")
    assert abs(skew(node)) < 3
    assert inject.active(lab, node) == {}
