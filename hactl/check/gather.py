"""Gathering for ``hactl check``: the probe's facts plus one round trip on a master for
``/readyz`` through the load balancer endpoint, the leader-election Leases and the CoreDNS
Deployment (and, for stacked
etcd, which runs as kubeadm static pods the probe does not read, the member list and each
member's own ``endpoint health`` with kubeadm's healthcheck-client certificate)."""

from __future__ import annotations

import json
import shlex
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from hactl import hostlayout
from hactl.check.model import ApiAnswer, CheckData, CoreDNS, EtcdView, Lease
from hactl.diff import client_url
from hactl.errors import HactlError
from hactl.facts.base import FactParseError
from hactl.facts.etcd import EtcdEndpointHealth, EtcdMemberList
from hactl.facts.model import EtcdHealth, Observed
from hactl.transport import tools

if TYPE_CHECKING:
    from hactl.spec.models import Cluster
    from hactl.transport.base import Argv, Transport


def api_script(cluster: Cluster) -> str:
    """sh run on a master: /readyz through the LB endpoint, then the Leases, then the time."""
    server = f"https://{cluster.control_plane_endpoint}"
    readyz = _joined(tools.kubectl("--server", server, "get", "--raw", "/readyz"))
    leases = _joined(tools.kubectl("get", "lease", "-n", "kube-system", "-o", "json"))
    coredns = _joined(tools.kubectl("get", "deployment", "coredns", "-n", "kube-system", "-o",
                                    "json", "--ignore-not-found"))
    return (
        _section("readyz", readyz)
        + _section("leases", leases)
        + _section("coredns", coredns)
        + (stacked_etcd_script(cluster) if cluster.etcd.topology == "stacked" else "")
        + "echo '@@now'; date -u +%s\n"
    )


def _section(name: str, command: str) -> str:
    return f"echo '@@{name}'; {command} 2>&1; rc=$?; echo; echo \"@@rc $rc\"\n"


def _joined(argv: Argv) -> str:
    """An argv of :mod:`hactl.transport.tools` in the script (no secret is ever in one)."""
    return shlex.join(str(arg) for arg in argv)


def _etcdctl(endpoints: list[str], *args: str) -> str:
    """kubeadm's stacked etcd, with its healthcheck client (the probe's read timeout)."""
    return "ETCDCTL_API=3 " + _joined(tools.etcdctl(endpoints, *args, tls=tools.STACKED_ETCD,
                                                    timeout=tools.ETCDCTL_READ_TIMEOUT))


def stacked_etcd_script(cluster: Cluster) -> str:
    """``member list`` through all masters, then ``endpoint health`` of each member alone."""
    urls = {m.name: client_url(cluster, m) for m in cluster.etcd_members}
    text = _section("etcd-members", _etcdctl(list(urls.values()), "member", "list"))
    for name, url in urls.items():
        text += _section(f"etcd-health:{name}", _etcdctl([url], "endpoint", "health"))
    return text


def parse_etcd_view(cluster: Cluster, sections: dict[str, tuple[int, str]]) -> EtcdView:
    rc, text = sections.get("etcd-members", (1, "no answer"))
    members = None
    if rc == 0:
        try:
            members = EtcdMemberList().parse(_json_line(text, '{"header"'))
        except (FactParseError, KeyError, TypeError):
            members = None
    health: dict[str, EtcdHealth | str] = {}
    for host in cluster.etcd_members:
        rc, text = sections.get(f"etcd-health:{host.name}", (1, "not asked"))
        try:
            health[host.name] = EtcdEndpointHealth().parse(_json_line(text, "["))
        except (FactParseError, KeyError, TypeError, IndexError):
            lines = text.strip().splitlines()
            health[host.name] = lines[-1] if lines else f"no answer (exit {rc})"
    return EtcdView(members, health)


def _json_line(text: str, opener: str) -> str:
    """etcdctl's JSON answer out of mixed stdout/stderr (its log lines are JSON objects too):
    the last line that starts with ``opener``."""
    found = [line for line in text.splitlines() if line.startswith(opener)]
    return found[-1] if found else text


def parse_api_output(stdout: str) -> dict[str, tuple[int, str]]:
    """``@@section`` blocks → (exit status, text)."""
    sections: dict[str, tuple[int, str]] = {}
    name = ""
    lines: list[str] = []
    for line in stdout.splitlines():
        if line.startswith("@@rc "):
            sections[name] = (int(line[5:].strip() or 1), "\n".join(lines).strip())
            name, lines = "", []
        elif line.startswith("@@"):
            name, lines = line[2:].strip(), []
        else:
            lines.append(line)
    if name:
        sections[name] = (0, "\n".join(lines).strip())
    return sections


def parse_coredns(sections: dict[str, tuple[int, str]]) -> CoreDNS | None:
    """``kubectl get deployment coredns`` → its availability (None: not asked or unreadable)."""
    if "coredns" not in sections:
        return None
    rc, text = sections["coredns"]
    if rc != 0:
        return CoreDNS(present=True, available=False, detail=f"unreadable: {text[-200:]}")
    if not text.strip():
        return CoreDNS(present=False, available=False, detail="no Deployment kube-system/coredns")
    try:
        doc = json.loads(text)
    except ValueError:
        return CoreDNS(present=True, available=False, detail="unreadable kubectl output")
    status = doc.get("status") or {} if isinstance(doc, dict) else {}
    cond = next((c for c in status.get("conditions") or [] if c.get("type") == "Available"), None)
    available = cond is not None and cond.get("status") == "True"
    want = (doc.get("spec") or {}).get("replicas", 1)
    detail = f"{status.get('availableReplicas') or 0}/{want} replicas available"
    if cond is not None and cond.get("message") and not available:
        detail += f": {cond['message']}"
    return CoreDNS(present=True, available=available, detail=detail)


def parse_leases(text: str) -> dict[str, Lease]:
    data = json.loads(text)
    out = {}
    for item in data.get("items", []):
        spec = item.get("spec") or {}
        renew = spec.get("renewTime")
        out[item["metadata"]["name"]] = Lease(
            item["metadata"]["name"],
            spec.get("holderIdentity") or None,
            _parse_time(renew) if renew else None,
            spec.get("leaseDurationSeconds"),
        )
    return out


def _parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


async def gather(
    cluster: Cluster,
    transports: Callable[[str], Transport],
    observe: Callable[[], Awaitable[Observed]],
    *,
    prefer: str | None = None,
) -> CheckData:
    """The probe's facts plus one round trip on the first initialised master that answers
    (``prefer`` first: the master the plan's Verify step names)."""
    observed = await observe()
    masters = sorted((m.name for m in cluster.masters), key=lambda name: name != prefer)
    candidates: Sequence[str] = [
        m for m in masters if (k := observed.kubernetes(m)) is not None and k.admin_conf
    ]
    now = datetime.now(UTC)
    errors = []
    for master in candidates:
        try:
            result = await transports(master).run(api_script(cluster), timeout=40, check=False)
        except HactlError as exc:
            errors.append(f"{master}: {exc.message}")
            continue
        sections = parse_api_output(result.stdout)
        if "@@now" not in result.stdout:
            errors.append(f"{master}: {result.stderr.strip() or 'no output'}")
            continue
        if sections.get("now", (1, ""))[1].isdigit():
            now = datetime.fromtimestamp(int(sections["now"][1]), UTC)
        rc, text = sections.get("readyz", (1, "no answer"))
        api = ApiAnswer(
            f"{master} via https://{cluster.control_plane_endpoint}", rc == 0, text[-300:]
        )
        rc, text = sections.get("leases", (1, "no answer"))
        leases, leases_error = None, None
        try:
            leases = parse_leases(text) if rc == 0 else None
            leases_error = None if rc == 0 else text[-300:]
        except (ValueError, KeyError, TypeError) as exc:
            leases_error = f"unreadable kubectl output: {exc}"
        view = parse_etcd_view(cluster, sections) if cluster.etcd.topology == "stacked" else None
        return CheckData(observed, now, api, leases, leases_error, view,
                         coredns=parse_coredns(sections))
    why = "; ".join(errors) or f"no master has {hostlayout.ADMIN_CONF}"
    return CheckData(observed, now, None, None, why)
