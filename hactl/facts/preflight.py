"""What the plan's preflight needs from a host (docs/hosts.md), read in one section.

(Files under /proc/sys and /sys may end without a newline: ``read`` then returns 1 with the
value read, so its status is not used.)

Shell built-ins wherever one does: swap (/proc/swaps), the sysctls (/proc/sys), the kernel
modules, product_uuid and MAC addresses (/sys) are read with ``read``; the costly parts run only
where a check needs them, decided on the host:

- the host's clock: ``date +%s.%N`` (one fork; ``sh`` has no built-in clock). The probe puts it
  between its own clock at send and at arrival (:attr:`PreflightFacts.clock_skew`).
- listeners: ONE ``ss -Hltnp`` (iproute2), only on a host where a component that listens is not
  set up yet: a node without ``/etc/kubernetes/kubelet.conf``, an etcd member whose etcd service
  is not active, a load balancer whose haproxy is not active (the ``services`` section's
  ``HACTL_<UNIT>_ACTIVE``). Elsewhere the listeners are hactl's own components.
- the container runtime: only on a node without kubelet.conf (where ``kubeadm init``/``join``
  will use it): whether containerd's socket exists and answers (``ctr --address SOCKET
  version`` under ``timeout``), its version, its cgroup driver (``SystemdCgroup = true`` in
  /etc/containerd/config.toml) and the kubelet's (``cgroupDriver`` of
  /var/lib/kubelet/config.yaml).

Kernel modules (there may be no /proc/modules, e.g. in a container or a kernel built without
module support): a module counts as present when /sys/module/NAME exists (loaded modules, and
built-in ones with parameters); ``overlay`` also when /proc/filesystems lists it (built in);
``br_netfilter`` also when /proc/sys/net/bridge/bridge-nf-call-iptables exists (the module
provides that file, built in or loaded).

MAC addresses: only of interfaces backed by a device (``/sys/class/net/*/device``): cloned
virtual machines share those; virtual interfaces (veth, bridges, VXLAN, VRRP's virtual MAC) carry
addresses that are random or shared by design.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from hactl import hostlayout
from hactl.facts.base import Fact, FactParseError, find_version
from hactl.facts.model import Listener, PreflightFacts, RuntimeFacts
from hactl.facts.services import active_var

if TYPE_CHECKING:
    from hactl.spec.models import Cluster

CONTAINERD_SOCKET = "/run/containerd/containerd.sock"
CONTAINERD_CONFIG = "/etc/containerd/config.toml"
KUBELET_CONFIG = "/var/lib/kubelet/config.yaml"
CRI_TIMEOUT = 3
"""Seconds ``ctr version`` may take on a socket that accepts but does not answer."""
MODULES = ("br_netfilter", "overlay")
BRIDGE_NF = "/proc/sys/net/bridge/bridge-nf-call-iptables"
IP_FORWARD = "/proc/sys/net/ipv4/ip_forward"

_BASE = r"""if [ -r /proc/swaps ]; then
  { read -r _; while read -r dev _; do echo "swap=$dev"; done; } < /proc/swaps
fi
if [ -r {ip_forward} ]; then v=; read -r v 2>/dev/null < {ip_forward}; echo "ip_forward=$v"; fi
if [ -e {bridge_nf} ]; then v=; read -r v 2>/dev/null < {bridge_nf}; echo "bridge_nf_call_iptables=$v"; fi
for m in {modules}; do if [ -d "/sys/module/$m" ]; then echo "module=$m"; fi; done
if [ -r /proc/filesystems ]; then
  while read -r a b; do if [ "$a" = overlay ] || [ "$b" = overlay ]; then echo module=overlay; fi; done < /proc/filesystems
fi
if [ -r /sys/class/dmi/id/product_uuid ]; then v=; read -r v 2>/dev/null < /sys/class/dmi/id/product_uuid; echo "product_uuid=$v"; fi
for i in /sys/class/net/*; do
  [ -e "$i/device" ] || continue
  v=; read -r v 2>/dev/null < "$i/address"; if [ -n "$v" ]; then echo "mac=${i##*/} $v"; fi
done
echo "now=$(date +%s.%N 2>/dev/null)"
"""

_LISTENERS = r"""if [ -n "$__hactl_pf_ss" ]; then
  if command -v ss >/dev/null 2>&1; then
    ss -Hltnp 2>/dev/null | while IFS= read -r l; do echo "listen=$l"; done
    echo listeners=read
  else
    echo listeners=no-ss
  fi
fi
"""

_RUNTIME = r"""if [ ! -f {joined} ]; then
  echo "cri_socket={socket}"
  if [ -S {socket} ]; then
    echo cri_present=1
    if command -v ctr >/dev/null 2>&1; then
      if command -v timeout >/dev/null 2>&1; then
        o=$(timeout {timeout} ctr --address {socket} version 2>&1 </dev/null); rc=$?
      else
        o=$(ctr --address {socket} version 2>&1 </dev/null); rc=$?
      fi
      echo "cri_rc=$rc"
      printf '%s\n' "$o" | while IFS= read -r l; do echo "cri_out=$l"; done
    else
      echo cri_rc=ctr-missing
    fi
  fi
  if command -v containerd >/dev/null 2>&1; then
    v=$(containerd --version 2>&1 </dev/null); echo "containerd_version=${v%%"$__hactl_pf_nl"*}"
    echo containerd=1
  fi
  if [ -r {config} ]; then
    while IFS= read -r l; do case $l in *SystemdCgroup*) echo "containerd_cgroup=$l";; esac; done < {config}
  fi
  if [ -r {kubelet_config} ]; then
    while IFS= read -r l; do case $l in cgroupDriver:*) echo "kubelet_cgroup=${l#cgroupDriver:}";; esac; done < {kubelet_config}
  fi
fi
"""


@dataclass(frozen=True)
class Preflight(Fact[PreflightFacts]):
    """The preflight section. ``node``: a master or worker (runtime, and listeners until it has
    joined); ``etcd``/``lb``: listeners while etcd/haproxy is not active; ``ports``: the ports
    whose listeners are kept (every other listener is left out of the facts)."""

    node: bool = False
    etcd: bool = False
    lb: bool = False
    ports: tuple[int, ...] = ()

    section = "preflight"

    def script(self) -> str:
        q = shlex.quote
        parts = ["__hactl_pf_nl='\n'\n__hactl_pf_ss=\n",
                 _BASE.replace("{ip_forward}", q(IP_FORWARD)).replace("{bridge_nf}", q(BRIDGE_NF))
                 .replace("{modules}", " ".join(MODULES))]
        if self.ports:
            guards = []
            if self.node:
                guards.append(f"if [ ! -f {q(hostlayout.KUBELET_CONF)} ]; then __hactl_pf_ss=1; fi")
            # the services section leaves each unit's ActiveState in HACTL_<UNIT>_ACTIVE; a unit
            # that runs in any state (an etcd ``activating`` while it waits for its peers holds
            # its ports already) is the component itself, not "something else"
            for unit, wanted in (("etcd", self.etcd), ("haproxy", self.lb)):
                if wanted:
                    guards.append(f'case "${active_var(unit)}" in active|activating|reloading|'
                                  'deactivating) ;; *) __hactl_pf_ss=1;; esac')
            parts.append("\n".join(guards) + "\n" + _LISTENERS)
        if self.node:
            parts.append(
                _RUNTIME.replace("{joined}", q(hostlayout.KUBELET_CONF))
                .replace("{socket}", q(CONTAINERD_SOCKET)).replace("{timeout}", str(CRI_TIMEOUT))
                .replace("{config}", q(CONTAINERD_CONFIG))
                .replace("{kubelet_config}", q(KUBELET_CONFIG)))
        return "".join(parts) + ":"

    def parse(self, stdout: str) -> PreflightFacts:
        swap: list[str] = []
        modules: set[str] = set()
        macs: dict[str, str] = {}
        listens: list[str] = []
        cri_out: list[str] = []
        values: dict[str, str] = {}
        containerd_cgroup: list[str] = []
        for line in stdout.splitlines():
            key, found, value = line.partition("=")
            if not found:
                continue
            if key == "swap":
                swap.append(value.strip())
            elif key == "module":
                modules.add(value.strip())
            elif key == "mac":
                name, _, mac = value.partition(" ")
                macs[name] = mac.strip().lower()
            elif key == "listen":
                listens.append(value)
            elif key == "cri_out":
                cri_out.append(value)
            elif key == "containerd_cgroup":
                containerd_cgroup.append(value)
            else:
                values[key] = value.strip()
        if "now" not in values:
            raise FactParseError("no clock reading (now=) in the output")
        if "bridge_nf_call_iptables" in values:
            modules.add("br_netfilter")
        listeners = None
        if values.get("listeners") == "read":
            listeners = tuple(lst for line in listens
                              if (lst := parse_listener(line)) is not None and lst.port in self.ports)
        return PreflightFacts(
            swap=tuple(swap),
            ip_forward=values.get("ip_forward"),
            bridge_nf_call_iptables=values.get("bridge_nf_call_iptables"),
            modules=tuple(m for m in MODULES if m in modules),
            product_uuid=(values.get("product_uuid") or "").lower() or None,
            macs=dict(sorted(macs.items())),
            listeners=listeners,
            runtime=_runtime(values, cri_out, containerd_cgroup),
            host_time=_clock(values["now"]),
        )


def _clock(text: str) -> float | None:
    """``1733590000.123456789`` → seconds; a ``date`` without ``%N`` prints ``…N``: whole seconds."""
    match = re.fullmatch(r"(\d+)(?:\.(\d+)|\.N)?", text.strip())
    if not match:
        return None
    return float(f"{match.group(1)}.{match.group(2) or 0}")


_USERS = re.compile(r'users:\(\("((?:[^"\\]|\\.)*)"')


def parse_listener(line: str) -> Listener | None:
    """One line of ``ss -Hltnp`` → :class:`Listener` (None when it does not read as one):
    ``LISTEN 0 4096 0.0.0.0:6443 0.0.0.0:* users:(("kube-apiserver",pid=1,fd=3))``."""
    fields = line.split()
    if len(fields) < 4:
        return None
    local = fields[3]
    address, sep, port = local.rpartition(":")
    if not sep or not port.isdigit():
        return None
    users = _USERS.search(line)
    return Listener(port=int(port), address=address.split("%")[0],
                    process=users.group(1) if users else None)


def _runtime(values: dict[str, str], out: list[str], cgroup_lines: list[str]) -> RuntimeFacts | None:
    socket = values.get("cri_socket")
    if socket is None:
        return None
    present = values.get("cri_present") == "1"
    rc = values.get("cri_rc")
    server = _server_version(out)
    answers = present and rc == "0" and server is not None
    error = None
    if not present:
        error = f"{socket} does not exist"
    elif rc == "ctr-missing":
        error = "ctr (containerd's client) is not installed, so hactl cannot ask the socket"
    elif rc == "124":
        error = f"no answer within {CRI_TIMEOUT} s"
    elif not answers:
        tail = [line.strip() for line in out if line.strip()]
        error = tail[-1][:200] if tail else f"ctr exited with status {rc}"
    containerd = values.get("containerd") == "1"
    version = server or (find_version(values.get("containerd_version", "")) if containerd else None)
    driver = None
    if containerd or present:
        driver = "cgroupfs"
        for line in cgroup_lines:
            setting = line.split("#", 1)[0]
            name, found, value = setting.partition("=")
            if found and name.strip() == "SystemdCgroup":
                driver = "systemd" if value.strip().lower() == "true" else "cgroupfs"
    kubelet = values.get("kubelet_cgroup", "").strip().strip("'\"") or None
    return RuntimeFacts(socket=socket, socket_present=present, answers=answers, error=error,
                        version=version, cgroup_driver=driver, kubelet_cgroup_driver=kubelet)


def _server_version(out: list[str]) -> str | None:
    """``Server:`` then ``  Version:  1.6.20~ds1`` in ``ctr version`` → ``1.6.20``."""
    in_server = False
    for line in out:
        text = line.strip()
        if text == "Server:":
            in_server = True
        elif in_server and text.startswith("Version:"):
            return find_version(text) or text.partition(":")[2].strip() or None
    return None


KUBELET_PORT = 10250
CONTROLLER_MANAGER_PORT = 10257
SCHEDULER_PORT = 10259


def role_ports(cluster: Cluster, roles: Sequence[str]) -> dict[int, str]:
    """The ports a host of these roles will listen on → the component that listens: what
    preflight looks for a listener on (docs/hosts.md)."""
    from hactl.render.kubeadm_config import API_BIND_PORT

    ports: dict[int, str] = {}
    if "lb" in roles:
        ports[cluster.load_balancer.frontend_port] = "haproxy"
    if "etcd" in roles:
        ports[cluster.etcd.client_port] = "etcd"
        ports[cluster.etcd.peer_port] = "etcd"
    if "master" in roles:
        ports[API_BIND_PORT] = "kube-apiserver"
        ports[CONTROLLER_MANAGER_PORT] = "kube-controller-manager"
        ports[SCHEDULER_PORT] = "kube-scheduler"
    if "master" in roles or "worker" in roles:
        ports[KUBELET_PORT] = "kubelet"
    return dict(sorted(ports.items()))


def preflight_for(cluster: Cluster, roles: Sequence[str]) -> Preflight:
    """The section for a host of these roles."""
    node = "master" in roles or "worker" in roles
    return Preflight(node=node, etcd="etcd" in roles and cluster.etcd.topology == "external",
                     lb="lb" in roles, ports=tuple(role_ports(cluster, roles)))
