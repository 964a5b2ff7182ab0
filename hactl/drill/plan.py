"""``hactl drill``, the pure part: the fault budget, which faults run in which order, the sh each
fault sends, and the report (text, JSON, JUnit XML). No I/O here (:mod:`hactl.drill.run` runs it).

Faults, one at a time and in this order:

1. ``control-plane`` on one master: its control-plane static Pod manifests (kube-apiserver,
   kube-controller-manager, kube-scheduler; never etcd's) move out of
   ``/etc/kubernetes/manifests`` into :data:`PARKED` (the kubelet then stops those Pods, as
   kubeadm documents), then ``systemctl stop kubelet``. Restored by moving them back and
   ``systemctl start kubelet``.
2. ``etcd-member``: one etcd member stopped, then started again.

   - external etcd: ``systemctl stop etcd`` on the spec's first member; restored by
     ``systemctl start etcd``;
   - stacked etcd (kubeadm's etcd static Pod on every master): on the first master of the spec
     that is not the one fault 1 took out, that master's server is first drained from every load
     balancer (kubeadm points each API server at its own local member only, so the master's API
     server goes with its member), then ``etcd.yaml`` moves out of ``/etc/kubernetes/manifests``
     into :data:`PARKED` (the kubelet stops the etcd Pod). Restored by moving it back, then the
     master's server is made ``ready`` again on every load balancer.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal
from xml.etree import ElementTree

from hactl import hostlayout
from hactl.facts.haproxy import admin_script
from hactl.render.haproxy import BACKEND
from hactl.transport import tools

if TYPE_CHECKING:
    from hactl.spec.models import Cluster
    from hactl.transport.base import Argv

FaultKind = Literal["control-plane", "etcd-member"]
CONTROL_PLANE_PODS = ("kube-apiserver", "kube-controller-manager", "kube-scheduler")
"""The static Pods the control-plane fault stops (stacked etcd's etcd.yaml stays: that member is
the etcd fault's, on another master)."""
ETCD_POD = "etcd"
"""kubeadm's stacked etcd static Pod (``etcd.yaml``), which the stacked etcd fault stops."""
PARKED = f"{hostlayout.K8S_DIR}/hactl-drill-parked"
"""Where the manifests wait during the fault: outside the kubelet's manifest folder."""
DRILL_CONFIGMAP = "hactl-drill-write"
"""The ConfigMap (namespace kube-system) created and deleted to prove the API still writes."""


@dataclass(frozen=True)
class Fault:
    kind: FaultKind
    host: str
    leases_held: tuple[str, ...] = ()
    """Leader Leases (kube-scheduler, kube-controller-manager) held on ``host`` when planned:
    each must move to another master during the fault."""

    @property
    def name(self) -> str:
        return f"{self.kind} {self.host}"


def fault_budget(cluster: Cluster) -> list[str]:
    """Why the spec's topology cannot lose one master or one etcd member ([] = it can)."""
    reasons = []
    masters = len(cluster.masters)
    if masters < 2:
        reasons.append(f"{masters} master(s): taking one out leaves no API server")
    members = len(cluster.etcd_members)
    if members < 3:
        reasons.append(
            f"an etcd of {members} member(s) ({cluster.etcd.topology}): quorum is "
            f"{members // 2 + 1}, so one member down stops writes"
        )
    return reasons


def lease_host(holder: str | None) -> str | None:
    """The host of a leader Lease's holderIdentity (``<hostname>_<uuid>``)."""
    if not holder:
        return None
    return holder.split("_", 1)[0]


def plan_faults(
    cluster: Cluster, node: str | None, holders: Mapping[str, str | None]
) -> list[Fault]:
    """The faults in the order they run. ``node``: the master taken out (default: the one
    holding the most leader Leases, then the first in the spec); ``holders``: Lease name →
    holder host now. Raises ValueError for a ``node`` that is not a master."""
    masters = [m.name for m in cluster.masters]
    if node is not None and node not in masters:
        raise ValueError(f"--node {node!r} is not a master of the spec ({', '.join(masters)})")
    if node is None:
        node = max(masters, key=lambda m: sum(h == m for h in holders.values()))
    held = tuple(sorted(lease for lease, host in holders.items() if host == node))
    faults = [Fault("control-plane", node, held)]
    faults.append(Fault("etcd-member", etcd_fault_host(cluster, node)))
    return faults


def etcd_fault_host(cluster: Cluster, control_plane_node: str) -> str:
    """The etcd member the etcd fault stops: external etcd, the spec's first member; stacked,
    the first master of the spec that is not ``control_plane_node`` (fault 1's master: its
    control-plane Pods have just restarted, and a second master is drilled this way)."""
    if cluster.etcd.topology == "external":
        return cluster.etcd_members[0].name
    return next(m.name for m in cluster.masters if m.name != control_plane_node)


# -- the commands (sh built from hactl.transport.tools' argv) ----------------------------------


def _sh(argv: Argv) -> str:
    return shlex.join(str(a) for a in argv)


def take_out_script() -> str:
    """Move the control-plane manifests out of the kubelet's folder (idempotent)."""
    src, dst = shlex.quote(hostlayout.K8S_MANIFESTS), shlex.quote(PARKED)
    pods = " ".join(CONTROL_PLANE_PODS)
    return (
        f"set -e; mkdir -p {dst}; for p in {pods}; do "
        f'if [ -f {src}/"$p".yaml ]; then mv {src}/"$p".yaml {dst}/; fi; done'
    )


def park_etcd_script() -> str:
    """Move stacked etcd's manifest out of the kubelet's folder (idempotent: already parked is
    fine); fails when there is none (not kubeadm's stacked etcd)."""
    src, dst = shlex.quote(hostlayout.K8S_MANIFESTS), shlex.quote(PARKED)
    name = f"{ETCD_POD}.yaml"
    return (
        f"set -e; mkdir -p {dst}; if [ -f {src}/{name} ]; then mv {src}/{name} {dst}/; "
        f"elif [ ! -f {dst}/{name} ]; then "
        f"echo {shlex.quote(f'no {hostlayout.ETCD_MANIFEST}: not kubeadm stacked etcd')} >&2; "
        "exit 1; fi"
    )


def lb_server_command(master: str, state: Literal["drain", "ready"]) -> str:
    """HAProxy's runtime command putting ``master``'s server of the API backend in ``state``
    (``drain``: no new connection goes to it; ``ready``: back under its health checks)."""
    return f"set server {BACKEND}/{master} state {state}"


def lb_server_script(master: str, state: Literal["drain", "ready"]) -> str:
    """sh sending :func:`lb_server_command` to haproxy's admin socket (the answer is printed:
    empty on success)."""
    return admin_script(lb_server_command(master, state))


def put_back_script() -> str:
    """Move the parked manifests back (never over one written since) and start the kubelet."""
    src, dst = shlex.quote(PARKED), shlex.quote(hostlayout.K8S_MANIFESTS)
    return (
        f"set -e; if [ -d {src} ]; then for f in {src}/*.yaml; do "
        f'[ -e "$f" ] || continue; b=$(basename "$f"); '
        f'if [ -e {dst}/"$b" ]; then rm -f "$f"; else mv "$f" {dst}/; fi; done; '
        f"rmdir {src}; fi; {_sh(tools.systemctl('start', 'kubelet'))}"
    )


def stop_kubelet() -> Argv:
    return tools.systemctl("stop", "kubelet")


def stop_etcd() -> Argv:
    return tools.systemctl("stop", "etcd")


def start_etcd() -> Argv:
    return tools.systemctl("start", "--no-block", "etcd")


def write_script(run_id: str) -> str:
    """Create then delete a ConfigMap through the load balancer (admin.conf's server)."""
    name = f"{DRILL_CONFIGMAP}-{run_id}".lower()  # a DNS-1123 name
    create = tools.kubectl("-n", "kube-system", "create", "configmap", name,
                           f"--from-literal=run={run_id}")
    delete = tools.kubectl("-n", "kube-system", "delete", "configmap", name)
    return f"set -e; {_sh(create)}; {_sh(delete)}"


# -- the report ----------------------------------------------------------------------------------


@dataclass
class Check:
    name: str
    ok: bool
    detail: str = ""


@dataclass
class FaultResult:
    fault: Fault
    detect_seconds: float | None = None
    """Fault injected → the LB marked the master's backend DOWN (control-plane), or → another
    member reports the stopped one unhealthy (etcd-member; stacked: from the move of
    ``etcd.yaml``, after the drain); None: not seen in time."""
    recover_seconds: float | None = None
    """Restore started → the master Ready and its API server answering /readyz (and UP in the
    LB), or → the member healthy again (stacked: and its master's API server answering /readyz,
    its Node Ready, UP again in every LB); None: not recovered in time."""
    lease_moves: dict[str, float | None] = field(default_factory=dict)
    """Lease → seconds until another master held it (None: it did not move in time)."""
    reader_ok: int = 0
    reader_failed: int = 0
    checks: list[Check] = field(default_factory=list)
    restored: bool = False
    error: str | None = None

    @property
    def passed(self) -> bool:
        return self.restored and self.error is None and all(c.ok for c in self.checks)

    def to_data(self) -> dict[str, Any]:
        return {
            "kind": self.fault.kind,
            "host": self.fault.host,
            "passed": self.passed,
            "detect_seconds": _round(self.detect_seconds),
            "recover_seconds": _round(self.recover_seconds),
            "lease_moves": {k: _round(v) for k, v in self.lease_moves.items()},
            "reader": {"ok": self.reader_ok, "failed": self.reader_failed},
            "checks": [{"name": c.name, "ok": c.ok, "detail": c.detail} for c in self.checks],
            "restored": self.restored,
            "error": self.error,
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def _secs(value: float | None) -> str:
    return "not seen" if value is None else f"{value:.1f}s"


@dataclass
class DrillReport:
    cluster: str
    refused: str | None = None
    """Why the drill did not start (nothing was touched)."""
    faults: list[FaultResult] = field(default_factory=list)
    final_healthy: bool | None = None
    """``hactl check`` after the last restore (None: not reached)."""
    final_detail: str = ""
    interrupted: bool = False
    """Ctrl-C during a fault: that fault was restored and the drill stopped there."""

    @property
    def passed(self) -> bool:
        return (
            self.refused is None
            and bool(self.faults)
            and all(f.passed for f in self.faults)
            and self.final_healthy is True
        )

    @property
    def exit_code(self) -> int:
        """0 passed; 1 refused (nothing touched); 2 a fault's check failed (restored, the
        cluster healthy again); 3 a fault was not restored or the cluster is not healthy after
        the drill; 130 interrupted (the fault in progress restored)."""
        if self.refused is not None:
            return 1
        if self.interrupted:
            return 130 if all(f.restored for f in self.faults) else 3
        if self.final_healthy is not True or not all(f.restored for f in self.faults):
            return 3
        return 0 if self.passed else 2

    def to_data(self) -> dict[str, Any]:
        return {
            "cluster": self.cluster,
            "passed": self.passed,
            "exit_code": self.exit_code,
            "refused": self.refused,
            "faults": [f.to_data() for f in self.faults],
            "final_check_healthy": self.final_healthy,
            "interrupted": self.interrupted,
        }

    def render_text(self) -> str:
        if self.refused is not None:
            return f"Drill refused on cluster {self.cluster!r}; nothing was touched.\n{self.refused}"
        lines = []
        for f in self.faults:
            lines.append(f"[{'pass' if f.passed else 'FAIL'}] {f.fault.name}: detected "
                         f"{_secs(f.detect_seconds)}, recovered {_secs(f.recover_seconds)}, "
                         f"API through the LB {f.reader_ok} ok / {f.reader_failed} failed")
            for lease, moved in f.lease_moves.items():
                lines.append(f"    lease {lease}: moved in {_secs(moved)}")
            for c in f.checks:
                lines.append(f"    {'ok  ' if c.ok else 'FAIL'} {c.name}" +
                             (f": {c.detail}" if c.detail else ""))
            if f.error:
                lines.append(f"    error: {f.error}")
            if not f.restored:
                lines.append("    NOT RESTORED: see docs/drill.md (restoring by hand)")
        if self.final_healthy is not None:
            lines.append(f"Final hactl check: {'healthy' if self.final_healthy else 'NOT healthy'}"
                         + (f"\n{self.final_detail}" if not self.final_healthy else ""))
        if self.interrupted:
            lines.append("Interrupted: the fault in progress was restored; no further fault ran.")
        verdict = "passed" if self.passed else "FAILED"
        lines.append(f"Drill on cluster {self.cluster!r} {verdict}.")
        return "\n".join(lines)

    def to_junit(self) -> str:
        """A JUnit XML document: one testcase per fault, plus ``final-check`` (or ``refused``)."""
        suite = ElementTree.Element("testsuite", name=f"hactl drill {self.cluster}")
        cases: list[tuple[str, float, str | None]] = []
        if self.refused is not None:
            cases.append(("refused", 0.0, self.refused))
        for f in self.faults:
            failed = [c for c in f.checks if not c.ok]
            why = "; ".join(f"{c.name}: {c.detail}" for c in failed)
            if f.error:
                why = f"{why}; {f.error}" if why else f.error
            if not f.restored:
                why = f"{why}; not restored" if why else "not restored"
            cases.append((f.fault.name, (f.detect_seconds or 0) + (f.recover_seconds or 0),
                          why or None))
        if self.final_healthy is not None:
            cases.append(("final-check", 0.0,
                          None if self.final_healthy else self.final_detail or "not healthy"))
        suite.set("tests", str(len(cases)))
        suite.set("failures", str(sum(problem is not None for _, _, problem in cases)))
        for name, secs, problem in cases:
            case = ElementTree.SubElement(suite, "testcase", classname="hactl.drill",
                                          name=name, time=f"{secs:.2f}")
            if problem is not None:
                failure = ElementTree.SubElement(case, "failure", message=problem[:500])
                failure.text = problem
        return ElementTree.tostring(suite, encoding="unicode", xml_declaration=True) + "\n"
