"""The data ``hactl check`` evaluates and the report it produces (no I/O)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from hactl import hostlayout
from hactl.facts.model import EtcdHealth, EtcdMember, Observed

ADMIN_CONF = hostlayout.ADMIN_CONF
LEADER_LEASES = ("kube-scheduler", "kube-controller-manager")
CERT_WARN_DAYS = 30
Severity = Literal["ok", "warning", "error"]


@dataclass(frozen=True)
class Lease:
    name: str
    holder: str | None
    renew_time: datetime | None
    duration_seconds: int | None

    def valid_at(self, now: datetime) -> bool:
        if not self.holder or self.renew_time is None or self.duration_seconds is None:
            return False
        return self.renew_time + timedelta(seconds=self.duration_seconds) > now


@dataclass(frozen=True)
class ApiAnswer:
    via: str
    """The master that asked, and the URL it asked."""
    ok: bool
    detail: str


@dataclass(frozen=True)
class EtcdView:
    """Stacked etcd (kubeadm's static pods, which the probe does not read), asked from a master
    with kubeadm's etcd healthcheck-client certificate."""

    members: tuple[EtcdMember, ...] | None
    """``member list``; None when no member answered."""
    health: Mapping[str, EtcdHealth | str]
    """Member (host) name → its own ``endpoint health``, or why it could not be asked."""


@dataclass(frozen=True)
class CoreDNS:
    """Deployment kube-system/coredns as the check read it."""

    present: bool
    available: bool
    detail: str
    """``2/2 replicas available`` or why not."""


@dataclass(frozen=True)
class CheckData:
    """Everything :func:`evaluate` looks at."""

    observed: Observed
    now: datetime
    api: ApiAnswer | None = None
    leases: dict[str, Lease] | None = None
    leases_error: str | None = None
    etcd_view: EtcdView | None = None
    """Set for stacked etcd; external members come from the probe (``observed``)."""
    coredns: CoreDNS | None = None
    """The CoreDNS Deployment (None: not asked)."""


@dataclass(frozen=True)
class Finding:
    check: str
    """ssh | api | masters | workers | nodes | coredns | leases | etcd | load_balancer |
    certificates."""
    severity: Severity
    subject: str
    message: str
    hint: str | None = None


@dataclass(frozen=True)
class Report:
    cluster: str
    findings: tuple[Finding, ...]
    cert_expiry: dict[str, str] = field(default_factory=dict)
    """Host → earliest certificate notAfter (ISO)."""

    @property
    def healthy(self) -> bool:
        return not any(f.severity == "error" for f in self.findings)

    @property
    def problems(self) -> list[Finding]:
        return [f for f in self.findings if f.severity != "ok"]

    def to_data(self) -> dict[str, Any]:
        return {
            "cluster": self.cluster,
            "healthy": self.healthy,
            "findings": [asdict(f) for f in self.findings],
            "cert_expiry": self.cert_expiry,
        }

    def render_text(self) -> str:
        marks = {"ok": "ok  ", "warning": "warn", "error": "FAIL"}
        lines = [
            f"[{marks[f.severity]}] {f.check}: {f.subject}: {f.message}" for f in self.findings
        ]
        if self.cert_expiry:
            lines.append("Certificate expiry (earliest per host):")
            lines.extend(f"  {host}: {when}" for host, when in self.cert_expiry.items())
        lines.extend(self.verdict_lines())
        return "\n".join(lines)

    def verdict_lines(self) -> list[str]:
        """The verdict: healthy, or each error with what to do next (the end of
        :meth:`render_text`, and the message of an apply whose closing check failed)."""
        problems = [f for f in self.problems if f.severity == "error"]
        if not problems:
            return [f"Cluster {self.cluster!r} is healthy."]
        lines = [f"Cluster {self.cluster!r} is NOT healthy ({len(problems)} problem(s)):"]
        for f in problems:
            lines.append(f"  - {f.subject}: {f.message}")
            if f.hint:
                lines.append(f"    next: {f.hint}")
        return lines
