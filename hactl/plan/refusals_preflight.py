"""Preflight at plan time: the plan refuses, before any change, when a host is not fit for what
the plan will do there — every problem on every host in one refusal, each naming the host, the
check (named like kubeadm's where kubeadm has one) and the fix. docs/hosts.md has the table.

Which checks apply where:

- on a node the plan will ``kubeadm init`` or ``join`` (a master or worker without kubeadm's
  files): swap, the kernel modules and sysctls, the container runtime (its socket answers, its
  cgroup driver is the kubelet's), kubeadm/kubelet (and kubectl on a master) present and at the
  spec's version, and the ports its components will listen on;
- on a node the plan resets and joins again, or whose interrupted init it completes: the same
  without the ports (kubeadm's own components hold them until the reset);
- on an external etcd member the plan starts (bootstrap, add, replace, start) while its etcd
  service is not active: its client and peer ports; on a load balancer whose haproxy is not
  active and that the plan configures or starts: the frontend port;
- everywhere, whatever the plan does: the host's clock against the operator's, host names,
  ``product_uuid`` and MAC addresses that two hosts share, and swap on every master and worker
  (the kubelet does not start with swap on, so a restart or reboot takes the node down).

A host whose preflight section was not read (a section error, shown in ``section_errors``; facts
made without it, like :mod:`hactl.plan.synthetic`'s) is not checked, except that its host name
still counts among the duplicates. The existing
etcd version rule (Kubernetes 1.31+ needs etcd 3.5.11, :func:`hactl.plan.refusals.etcd_version`)
stays where it is and is not repeated here.

A check that the plan's own host preparation (the spec's ``prepare`` section) makes good on a
host — its kernel settings, swap, container runtime or packages — is not refused there
(:data:`PREPARED_BY`): the preparation runs before anything else on the host.

Checks are skipped per host (``hosts[].ignorePreflightErrors``) and on every host
(``preflight.ignoreErrors``), by case-insensitive name or ``all``; :func:`skipped` says what the
spec skips where (the plan's output lists it). Pure: facts in, messages out.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from hactl.diff import Diff
from hactl.facts.model import HostFacts, Observed, PreflightFacts
from hactl.facts.preflight import (
    BRIDGE_NF,
    CONTAINERD_CONFIG,
    CONTAINERD_SOCKET,
    IP_FORWARD,
    KUBELET_CONFIG,
    role_ports,
)
from hactl.spec.checks import preflight_check_name
from hactl.spec.models import Cluster, Host, parse_version
from hactl.vocabulary import Aspect, Component, Intent

NODE_NEW = frozenset({Intent.INIT, Intent.JOIN})
"""kubeadm init/join on a node without kubeadm's files: every node check, with the ports."""
NODE_AGAIN = frozenset({Intent.REJOIN, Intent.COMPLETE_INIT})
"""kubeadm reset then join, or init's remaining phases: the node checks without the ports."""
ETCD_STARTS = frozenset({Intent.BOOTSTRAP, Intent.ADD, Intent.REPLACE, Intent.START,
                         Intent.START_ADDED})
KUBEADM_DEFAULT_CGROUP_DRIVER = "systemd"
"""What kubeadm writes into the KubeletConfiguration when nothing says otherwise (since 1.22)."""


@dataclass(frozen=True)
class Problem:
    host: str
    check: str
    found: str
    fix: str

    def text(self) -> str:
        return f"{self.host}: preflight check {self.check}: {self.found}. Fix: {self.fix}"


def skipped(cluster: Cluster) -> dict[str, tuple[str, ...]]:
    """Host → the checks the spec skips there (canonical names, ``all``), spec order of hosts;
    hosts that skip nothing are left out."""
    everywhere = _names(cluster.preflight.ignore_errors)
    out: dict[str, tuple[str, ...]] = {}
    for host in cluster.all_hosts():
        own: list[str] = []
        for spec_host in _occurrences(cluster, host.name):
            own += spec_host.ignore_preflight_errors
        names = tuple(dict.fromkeys([*everywhere, *_names(own)]))
        if names:
            out[host.name] = ("all",) if "all" in names else names
    return out


def _names(texts: Iterable[str]) -> list[str]:
    return [name for text in texts if (name := preflight_check_name(text)) is not None]


def _occurrences(cluster: Cluster, name: str) -> list[Host]:
    return [h for h in (*cluster.etcd.members, *cluster.load_balancer.hosts, *cluster.masters,
                        *cluster.workers) if h.name == name]


PREPARED_BY: dict[Aspect, tuple[str, ...]] = {
    Aspect.KERNEL: ("KernelModule-br_netfilter", "KernelModule-overlay",
                    "FileContent--proc-sys-net-ipv4-ip_forward",
                    "FileContent--proc-sys-net-bridge-bridge-nf-call-iptables"),
    Aspect.SWAP: ("Swap",),
    Aspect.RUNTIME: ("CRI", "CgroupDriver"),
    Aspect.PACKAGES: ("FileExisting-kubeadm", "FileExisting-kubelet", "FileExisting-kubectl",
                      "KubeadmVersion", "KubeletVersion", "KubectlVersion"),
}
"""The checks a host preparation change of the plan (the spec's ``prepare`` section,
:mod:`hactl.diff_prepare`) makes good before anything else runs on the host: not refused there."""


def prepared(diff: Diff) -> dict[str, set[str]]:
    """Host → the checks this plan's preparation of the host makes good."""
    out: dict[str, set[str]] = {}
    for change in diff.effective():
        checks = PREPARED_BY.get(change.addr.aspect) if change.addr.aspect else None
        if checks and change.host:
            out.setdefault(change.host, set()).update(checks)
    return out


def check(cluster: Cluster, observed: Observed, diff: Diff) -> list[str]:
    """The refusal texts: every problem that is neither skipped nor made good by the plan's own
    host preparation, hosts in spec order."""
    skips = skipped(cluster)
    fixed = prepared(diff)
    return [p.text() for p in problems(cluster, observed, diff)
            if not {"all", p.check} & set(skips.get(p.host, ()))
            and p.check not in fixed.get(p.host, ())]


def problems(cluster: Cluster, observed: Observed, diff: Diff) -> list[Problem]:
    """Every problem found, skipped or not (hosts in spec order, then cluster-wide ones)."""
    work = _work(cluster, observed, diff)
    out: list[Problem] = []
    for host in cluster.all_hosts():
        facts = observed.get(host.name)
        if facts is None or not facts.reachable:
            continue
        pf = facts.preflight
        if pf is None:
            continue  # the section did not run here (section_errors says why)
        roles = cluster.roles(host.name)
        kinds = work.get(host.name, set())
        out += _clock(cluster, facts)
        if "master" in roles or "worker" in roles:
            out += _swap(host.name, pf)
        if kinds & {"node-new", "node-again"}:
            out += _node(cluster, host.name, roles, facts, pf)
        if pf.listeners is not None:
            ports = _ports_to_check(cluster, roles, kinds)
            out += _ports(host.name, pf, ports)
    out += _duplicates(cluster, observed)
    return out


def _work(cluster: Cluster, observed: Observed, diff: Diff) -> dict[str, set[str]]:
    """Host → what the plan does there that preflight cares about."""
    out: dict[str, set[str]] = {}
    for change in diff.effective():
        host = change.host
        if host is None:
            continue
        component = change.addr.component
        if component in (Component.MASTER, Component.WORKER) and change.addr.aspect is None:
            if change.intents & NODE_NEW:
                out.setdefault(host, set()).add("node-new")
            elif change.intents & NODE_AGAIN:
                out.setdefault(host, set()).add("node-again")
        elif component is Component.ETCD_MEMBER and change.intents & ETCD_STARTS:
            etcd = observed.etcd(host)
            if etcd is not None and not etcd.active:
                out.setdefault(host, set()).add("etcd-start")
        elif component is Component.LB:
            lb = observed.haproxy(host)
            if lb is not None and not lb.active:
                out.setdefault(host, set()).add("lb-start")
    return out


def _ports_to_check(cluster: Cluster, roles: list[str], kinds: set[str]) -> dict[int, str]:
    wanted: list[str] = []
    if "node-new" in kinds:
        wanted += [r for r in roles if r in ("master", "worker")]
        if "master" in roles and cluster.etcd.topology == "stacked":
            wanted.append("etcd")
    if "etcd-start" in kinds:
        wanted.append("etcd")
    if "lb-start" in kinds:
        wanted.append("lb")
    return role_ports(cluster, wanted) if wanted else {}


# -- the checks ------------------------------------------------------------------------------


def _clock(cluster: Cluster, facts: HostFacts) -> list[Problem]:
    pf = facts.preflight
    skew = pf.clock_skew if pf is not None else None
    limit = cluster.preflight.max_clock_skew
    if skew is None or skew <= limit or pf is None or pf.host_time is None or pf.sent_at is None:
        return []
    direction = "behind" if pf.host_time < pf.sent_at else "ahead of"
    return [Problem(
        facts.name, "ClockSkew",
        f"its clock is at least {skew:.1f} s {direction} this machine's (preflight.maxClockSkew "
        f"is {limit:g} s); certificates that are not yet valid and etcd peers with clocks apart "
        "fail in ways that show up late",
        "keep the clocks in sync with NTP on every host and on this machine (e.g. `timedatectl "
        "set-ntp true`, or chrony), then plan again")]


def _swap(name: str, pf: PreflightFacts) -> list[Problem]:
    if not pf.swap:
        return []
    return [Problem(
        name, "Swap", f"swap is on ({', '.join(pf.swap[:4])}); the kubelet does not start with "
        "swap on (failSwapOn)",
        "run `swapoff -a` and remove the swap entries from /etc/fstab (and any swap unit), so "
        "it stays off after a reboot")]


def _node(cluster: Cluster, name: str, roles: list[str], facts: HostFacts,
          pf: PreflightFacts) -> list[Problem]:
    return [*_kernel(name, pf), *_runtime(name, pf), *_binaries(cluster, name, roles, facts)]


def _kernel(name: str, pf: PreflightFacts) -> list[Problem]:
    out: list[Problem] = []
    for module in ("br_netfilter", "overlay"):
        if module not in pf.modules:
            out.append(Problem(
                name, f"KernelModule-{module}",
                f"the kernel module {module} is not loaded (no /sys/module/{module}"
                + (f", no {BRIDGE_NF}" if module == "br_netfilter" else
                   ", not in /proc/filesystems") + ")",
                f"run `modprobe {module}` and add {module} to /etc/modules-load.d/k8s.conf"))
    if pf.ip_forward != "1":
        value = "unreadable" if pf.ip_forward is None else pf.ip_forward
        out.append(Problem(
            name, "FileContent--proc-sys-net-ipv4-ip_forward",
            f"{IP_FORWARD} is {value}, kubeadm needs 1 (Pods' traffic is routed through the node)",
            "run `sysctl -w net.ipv4.ip_forward=1` and keep it in /etc/sysctl.d/k8s.conf "
            "(`net.ipv4.ip_forward = 1`)"))
    if pf.bridge_nf_call_iptables is not None and pf.bridge_nf_call_iptables != "1":
        out.append(Problem(
            name, "FileContent--proc-sys-net-bridge-bridge-nf-call-iptables",
            f"{BRIDGE_NF} is {pf.bridge_nf_call_iptables}, kubeadm needs 1 (bridged Pod traffic "
            "must pass iptables for Services)",
            "run `sysctl -w net.bridge.bridge-nf-call-iptables=1` and keep it in "
            "/etc/sysctl.d/k8s.conf"))
    return out


def _runtime(name: str, pf: PreflightFacts) -> list[Problem]:
    rt = pf.runtime
    if rt is None:
        return []  # the node has kubelet.conf: its runtime is the one it runs with
    if not rt.answers:
        version = f" (containerd {rt.version} is installed)" if rt.version else ""
        return [Problem(
            name, "CRI", f"the container runtime does not answer at {rt.socket}: "
            f"{rt.error or 'no answer'}{version}",
            "install containerd and start it (`systemctl enable --now containerd`); hactl asks "
            f"containerd's socket {CONTAINERD_SOCKET} (another runtime: skip CRI for this host)")]
    kubelet = rt.kubelet_cgroup_driver or KUBEADM_DEFAULT_CGROUP_DRIVER
    if rt.cgroup_driver is not None and rt.cgroup_driver != kubelet:
        where = (f"cgroupDriver in {KUBELET_CONFIG}" if rt.kubelet_cgroup_driver
                 else "kubeadm's default for the kubelet")
        return [Problem(
            name, "CgroupDriver",
            f"containerd {rt.version or ''} uses the {rt.cgroup_driver} cgroup driver "
            f"({CONTAINERD_CONFIG}), the kubelet {kubelet} ({where}); the kubelet's Pods fail",
            f"set `SystemdCgroup = true` under [plugins.\"io.containerd.grpc.v1.cri\".containerd."
            f"runtimes.runc.options] in {CONTAINERD_CONFIG}, then `systemctl restart containerd`"
            if kubelet == "systemd" else
            f"make containerd's cgroup driver and the kubelet's the same ({CONTAINERD_CONFIG}, "
            f"{KUBELET_CONFIG})")]
    return []


def _binaries(cluster: Cluster, name: str, roles: list[str], facts: HostFacts) -> list[Problem]:
    bins = facts.binaries
    k8s = facts.kubernetes
    if bins is None:
        return []
    want = cluster.kubernetes.version.lstrip("v")
    tools = ("kubeadm", "kubelet", "kubectl") if "master" in roles else ("kubeadm", "kubelet")
    out: list[Problem] = []
    install = (f"install kubeadm, kubelet and kubectl {want} from the Kubernetes package "
               f"repository (pkgs.k8s.io, v{'.'.join(want.split('.')[:2])}) and hold them "
               "(`apt-mark hold kubeadm kubelet kubectl`)")
    for tool in tools:
        binary = bins.get(tool)
        if binary is None:
            out.append(Problem(name, f"FileExisting-{tool}", f"{tool} is not on the PATH", install))
            continue
        if k8s is not None and k8s.joined:
            continue  # versions are not read on a joined node (hactl.facts.binaries)
        found = binary.version
        if found is None:
            out.append(Problem(
                name, f"{tool.capitalize()}Version",
                f"the version of {binary.path} could not be read", install))
        elif tool == "kubectl":
            if _older_than_skew(found, want):
                out.append(Problem(
                    name, "KubectlVersion", f"kubectl is {found}, more than one minor version "
                    f"older than Kubernetes {want} (kubectl's supported skew)", install))
        elif found != want:
            out.append(Problem(
                name, f"{tool.capitalize()}Version",
                f"{tool} is {found} ({binary.path}), the spec's kubernetes.version is {want}",
                install.replace("kubeadm, kubelet and kubectl", tool)
                .replace("`apt-mark hold kubeadm kubelet kubectl`", f"`apt-mark hold {tool}`")))
    return out


def _older_than_skew(found: str, want: str) -> bool:
    try:
        have, need = parse_version(found), parse_version(want)
    except ValueError:
        return False
    return have[0] == need[0] and have[1] < need[1] - 1


def _ports(name: str, pf: PreflightFacts, ports: dict[int, str]) -> list[Problem]:
    out: list[Problem] = []
    for port, component in ports.items():
        taken = [lst for lst in pf.listeners or () if lst.port == port]
        if not taken:
            continue
        who = sorted({lst.process for lst in taken if lst.process})
        by = f" by {', '.join(who)}" if who else ""
        where = ", ".join(sorted({f"{lst.address}:{port}" for lst in taken}))
        out.append(Problem(
            name, f"Port-{port}",
            f"port {port} is in use{by} ({where}), and {component} will listen on it here",
            f"stop what listens there (`ss -ltnp 'sport = :{port}'` names it) or move it to "
            "another port, then plan again"))
    return out


def _duplicates(cluster: Cluster, observed: Observed) -> list[Problem]:
    hostnames: dict[str, list[str]] = {}
    uuids: dict[str, list[str]] = {}
    macs: dict[str, list[str]] = {}
    for host in cluster.all_hosts():
        facts = observed.get(host.name)
        if facts is None or not facts.reachable:
            continue
        if facts.system is not None:
            hostnames.setdefault(facts.system.hostname.lower(), []).append(host.name)
        pf = facts.preflight
        if pf is None:
            continue
        if pf.product_uuid and pf.product_uuid.strip("0-"):
            uuids.setdefault(pf.product_uuid, []).append(host.name)
        for mac in set(pf.macs.values()):
            if mac.replace(":", "").strip("0"):
                macs.setdefault(mac, []).append(host.name)
    out: list[Problem] = []
    for check, seen, what, fix in (
        ("DuplicateHostname", hostnames, "host name",
         "give each machine its own host name (`hostnamectl set-hostname NAME`, and its line "
         "in /etc/hosts)"),
        ("DuplicateProductUUID", uuids, "product_uuid (/sys/class/dmi/id/product_uuid)",
         "give each virtual machine its own UUID (a clone kept its template's): Kubernetes and "
         "etcd may take the machines for one"),
        ("DuplicateMAC", macs, "MAC address",
         "give each machine's network interfaces their own MAC addresses (a clone kept its "
         "template's)"),
    ):
        for value, names in sorted(seen.items()):
            if len(names) < 2:
                continue
            for name in names:
                others = ", ".join(n for n in names if n != name)
                out.append(Problem(name, check, f"its {what} {value} is also {others}'s", fix))
    return out
