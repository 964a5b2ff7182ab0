"""Read every host of a spec, all at once, in one round trip per host → :class:`Observed`.

For each host the facts that apply to its roles (:func:`facts_for`) are put into ONE POSIX sh
script (:func:`build_script`): each fact's snippet becomes a shell function, and a runner
prints its stdout and stderr between unique markers together with its exit status. The script
is sent once; :func:`split_sections` cuts the answer back into sections and each fact's pure
parser reads its own. A section that fails only loses its own fact (``section_errors``); a host
that cannot be reached becomes ``HostFacts(reachable=False, error=…)``: the probe never aborts.

Output hactl cannot read is "bad output from host X", never "unreachable": a section whose
parser refuses its output loses only its own fact (``section_errors``); a host whose answer
passes the transport's cap (8 MiB per stream, :mod:`hactl.transport.ssh_session`) is not
read further, its script is killed, and its state counts as unknown (like an unreachable host,
with that reason).

A host that offered another SSH host key than known_hosts records (``HostKeyChangedError``,
refused under every policy) is not "unreachable": it is recorded like one plus a mark
(:mod:`hactl.facts.host_keys`) that makes the plan, the apply and ``hactl check`` refuse,
whether or not a step needs the host. An unknown key (never recorded, ``hostKeyPolicy:
strict``) stays an unreachable host.

Nothing is written on a host: the script reads files and asks services, etcd and the API; it
creates no temp file (the markers keep the sections apart on the two output streams).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from hactl import hostlayout
from hactl.concurrency import gather_each
from hactl.errors import HactlError
from hactl.facts import binaries, etcd, haproxy, kubernetes, preflight, prepare, services, system
from hactl.facts.base import SKIPPED, Fact, FactParseError
from hactl.facts.departing import departing
from hactl.facts.host_keys import mark_changed
from hactl.facts.model import ClusterView, HostFacts, Observed
from hactl.log import get_logger
from hactl.render.prepare import PACKAGES
from hactl.spec.models import Cluster, Host
from hactl.transport.base import Transport
from hactl.transport.ssh_session import OutputLimitError

PROBE_TIMEOUT = 60.0
"""Seconds the whole script may take on one host."""
CONFIG_FILES = (f"{hostlayout.HAPROXY_CFG}, {hostlayout.ETCD_ENV}, {hostlayout.K8S_PKI}/*.crt, "
                f"{hostlayout.KUBELET_CLIENT_CERT}")
"""The files whose content the probe prints (named when the output passes the cap)."""


def etcd_endpoint(cluster: Cluster, host: Host) -> str:
    """The member's own client URL for etcdctl on the host (as hactl.render.etcd listens)."""
    port = cluster.etcd.client_port
    address = ipaddress.ip_address(host.address)
    if address.is_loopback:
        return (
            f"https://[{address}]:{port}" if address.version == 6 else f"https://{address}:{port}"
        )
    return f"https://127.0.0.1:{port}"


def api_reader(cluster: Cluster, hosts: Sequence[Host] | None = None) -> str | None:
    """The master (first in spec order among ``hosts``) whose script asks the API."""
    names = {h.name for h in hosts} if hosts is not None else None
    return next((m.name for m in cluster.masters if names is None or m.name in names), None)


def facts_for(cluster: Cluster, host: Host, *, ask_api: bool | None = None,
              roles: Sequence[str] | None = None) -> list[Fact[Any]]:
    """The facts read on ``host``, by its roles in the spec (order = order in the script).
    ``ask_api`` (default: ``host`` is the spec's first master) adds the API query on a master.
    ``roles`` (default: the spec's) is given for a departing host (:mod:`hactl.facts.departing`)."""
    roles = cluster.roles(host.name) if roles is None else list(roles)
    if ask_api is None:
        ask_api = host.name == api_reader(cluster)
    units = tuple(
        unit
        for unit, wanted in (
            ("etcd", "etcd" in roles),
            ("haproxy", "lb" in roles),
            ("kubelet", "master" in roles or "worker" in roles),
        )
        if wanted
    )
    out: list[Fact[Any]] = [
        system.SystemInfo(),
        binaries.BinaryVersions(names=binaries.binaries_for(roles)),
    ]
    if units:
        out.append(services.UnitStates(units))
    if "etcd" in roles:
        endpoint = etcd_endpoint(cluster, host)
        out += [
            etcd.EtcdFiles(data_dir=cluster.etcd.data_dir),
            etcd.EtcdEnv(),
            etcd.EtcdMemberList(endpoint=endpoint),
            etcd.EtcdEndpointStatus(endpoint=endpoint),
            etcd.EtcdEndpointHealth(endpoint=endpoint),
            etcd.EtcdRegistryCount(endpoint=endpoint),
        ]
    if "lb" in roles:
        out += [haproxy.HAProxyFiles(), haproxy.HAProxyConfig(), haproxy.HAProxyStats()]
    if "master" in roles or "worker" in roles:
        out += [kubernetes.K8sFiles(), kubernetes.CertExpiry()]
    if "master" in roles and ask_api:
        out.append(kubernetes.ApiState(stacked=cluster.etcd.topology == "stacked"))
    if cluster.prepare is not None and ("master" in roles or "worker" in roles):
        out.append(prepare.PrepareState(packages=(
            *PACKAGES, cluster.prepare.container_runtime.package)))
    out.append(preflight.preflight_for(cluster, roles))  # last: it reads the services' guards
    return out


ENVIRONMENT = """exec </dev/null
export LC_ALL=C
PATH="$PATH:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
"""
"""How every probe script starts: no stdin, the C locale, the sbin directories on PATH."""
_PREAMBLE = ENVIRONMENT + """__hactl_m='{marker}'
__hactl_run() {{
  printf '%s BEGIN %s\\n' "$__hactl_m" "$1"; printf '%s BEGIN %s\\n' "$__hactl_m" "$1" >&2
  __hactl_n=$1; shift
  "$@"
  __hactl_rc=$?
  printf '\\n%s END %s %s\\n' "$__hactl_m" "$__hactl_n" "$__hactl_rc"
  printf '\\n%s END %s %s\\n' "$__hactl_m" "$__hactl_n" "$__hactl_rc" >&2
}}
"""


def build_script(facts: Sequence[Fact[Any]], marker: str) -> str:
    """One sh script running every fact's snippet as a function between markers."""
    parts = [_PREAMBLE.format(marker=marker)]
    for index, fact in enumerate(facts):
        func = f"__hactl_s{index}"
        parts.append(f"{func}() {{\n{fact.script()}\n}}\n__hactl_run {fact.section} {func}\n")
    return "".join(parts)


@dataclass(frozen=True)
class SectionOutput:
    stdout: str
    stderr: str
    exit_status: int


def split_sections(stdout: str, stderr: str, marker: str) -> dict[str, SectionOutput]:
    """Cut the script's two output streams back into sections (missing END → not there)."""
    pattern = re.compile(
        rf"^{re.escape(marker)} BEGIN (\S+)\n(.*?)\n{re.escape(marker)} END \1 (\d+)$",
        re.S | re.M,
    )
    errs = {m.group(1): m.group(2) for m in pattern.finditer(stderr)}
    return {
        m.group(1): SectionOutput(m.group(2), errs.get(m.group(1), ""), int(m.group(3)))
        for m in pattern.finditer(stdout)
    }


def compose_output(sections: Mapping[str, SectionOutput], marker: str) -> tuple[str, str]:
    """The inverse of :func:`split_sections` (what a host would print): for tests and tools."""
    out, err = [], []
    for name, sec in sections.items():
        out.append(f"{marker} BEGIN {name}\n{sec.stdout}\n{marker} END {name} {sec.exit_status}\n")
        err.append(f"{marker} BEGIN {name}\n{sec.stderr}\n{marker} END {name} {sec.exit_status}\n")
    return "".join(out), "".join(err)


def _error_text(sec: SectionOutput) -> str:
    lines = [line for line in sec.stderr.strip().splitlines() if line.strip()]
    tail = lines[-1] if lines else "(no output on stderr)"
    return f"exit status {sec.exit_status}: {tail}"


def bad_output(host: str, what: object) -> str:
    """The words for output hactl could not read: distinct from "unreachable"."""
    return f"bad output from host {host}: {what}"


class _Reader:
    """Parses sections into values; remembers why a value is missing."""

    def __init__(self, sections: Mapping[str, SectionOutput], host: str = "?") -> None:
        self.sections = sections
        self.host = host
        self.errors: dict[str, str] = {}
        self.skipped: dict[str, str] = {}

    def get(self, fact: Fact[Any]) -> Any:
        sec = self.sections.get(fact.section)
        if sec is None:
            self.errors[fact.section] = "did not run (the probe script ended early)"
            return None
        if sec.exit_status == SKIPPED:
            self.skipped[fact.section] = sec.stderr.strip() or "not applicable"
            return None
        if sec.exit_status not in fact.ok_statuses:
            self.errors[fact.section] = _error_text(sec)
            return None
        try:
            return fact.parse(sec.stdout)
        except FactParseError as exc:  # parsers raise nothing else (Fact.__init_subclass__)
            self.errors[fact.section] = bad_output(self.host, exc)
            return None

    def why(self, *names: str) -> str | None:
        for name in names:
            if name in self.errors:
                return self.errors[name]
            if name in self.skipped:
                return self.skipped[name]
        return None


def read_host_facts(
    cluster: Cluster,
    host: Host,
    sections: Mapping[str, SectionOutput],
    *,
    duration: float | None = None,
    ask_api: bool | None = None,
    roles: Sequence[str] | None = None,
    clock: tuple[float, float] | None = None,
) -> HostFacts:
    """Pure: sections of one host's answer → :class:`HostFacts`. ``clock``: the operator's
    wall clock when the script was sent and when its answer had arrived (preflight's skew)."""
    facts = {type(f): f for f in facts_for(cluster, host, ask_api=ask_api, roles=roles)}
    r = _Reader(sections, host.name)

    def value(cls: type[Fact[Any]]) -> Any:
        return r.get(facts[cls]) if cls in facts else None

    sys_facts = value(system.SystemInfo)
    units = value(services.UnitStates) or {}
    bins = value(binaries.BinaryVersions)
    etcd_facts = None
    if etcd.EtcdFiles in facts and (files := value(etcd.EtcdFiles)) is not None:
        members = value(etcd.EtcdMemberList)
        status = value(etcd.EtcdEndpointStatus)
        health = value(etcd.EtcdEndpointHealth)
        registry = value(etcd.EtcdRegistryCount)
        etcd_facts = etcd.assemble(
            data_dir=cluster.etcd.data_dir,
            files=files,
            unit=units.get("etcd"),
            env=value(etcd.EtcdEnv),
            members=members,
            status=status,
            health=health,
            registry_keys=registry,
            query_error=r.why("etcd.members", "etcd.status", "etcd.health", "etcd.registry"),
        )
    lb_facts = None
    if haproxy.HAProxyFiles in facts and (lb_files := value(haproxy.HAProxyFiles)) is not None:
        config = value(haproxy.HAProxyConfig)
        servers = value(haproxy.HAProxyStats)
        lb_facts = haproxy.assemble(
            files=lb_files,
            unit=units.get("haproxy"),
            config=config,
            servers=servers,
            stats_error=r.why("haproxy.stats"),
        )
    k8s_facts = None
    if kubernetes.K8sFiles in facts and (k_files := value(kubernetes.K8sFiles)) is not None:
        view = None
        if kubernetes.ApiState in facts:
            answer = value(kubernetes.ApiState)  # first: it records a skip
            if "k8s.api" not in r.skipped:
                view = kubernetes.cluster_view(answer, r.why("k8s.api"))
        k8s_facts = kubernetes.assemble(
            files=k_files,
            kubelet=units.get("kubelet"),
            certs=value(kubernetes.CertExpiry),
            cluster=view,
        )
    checks = value(preflight.Preflight)
    if checks is not None and clock is not None:
        checks = dataclasses.replace(checks, sent_at=clock[0], received_at=clock[1])
    return HostFacts(
        name=host.name,
        address=str(host.address),
        reachable=True,
        system=sys_facts,
        binaries=bins,
        etcd=etcd_facts,
        haproxy=lb_facts,
        kubernetes=k8s_facts,
        preflight=checks,
        prepare=value(prepare.PrepareState),
        section_errors=dict(sorted(r.errors.items())),
        duration=duration,
    )


def unreachable(host: Host, error: BaseException | str) -> HostFacts:
    """A host that could not be read; a changed SSH host key is marked (:mod:`hactl.facts.host_keys`)."""
    facts = HostFacts(name=host.name, address=str(host.address), reachable=False, error=str(error))
    return mark_changed(facts, error)


def unreadable(host: Host, what: object) -> HostFacts:
    """A host that answered with output hactl cannot use (more than the transport's cap, or a
    reader bug): its state is unknown, so it counts as not answering (never healthy, needed
    hosts make the plan refuse), with "bad output from host X" as the reason."""
    log = get_logger(host=host.name)
    log.warning("probe output unusable", error=str(what))
    return unreachable(host, bad_output(host.name, what))


async def probe_host(
    transport: Transport,
    cluster: Cluster,
    host: Host,
    *,
    timeout: float = PROBE_TIMEOUT,
    ask_api: bool | None = None,
    roles: Sequence[str] | None = None,
) -> HostFacts:
    """All facts of one host in one round trip. Transport errors become an unreachable host."""
    log = get_logger(host=host.name)
    marker = f"HACTL-{secrets.token_hex(8)}"
    script = build_script(facts_for(cluster, host, ask_api=ask_api, roles=roles), marker)
    started = time.monotonic()
    sent_at = time.time()
    try:
        # read-only: no backstop on the host (a timeout or a cancel still kills the script)
        result = await transport.run(script, timeout=timeout, check=False, backstop=False)
    except OutputLimitError as exc:
        return unreadable(host, f"{exc.message} (the probe reads {CONFIG_FILES})")
    except HactlError as exc:
        log.warning("probe failed", error=exc.message)
        return unreachable(host, exc)
    received_at = time.time()
    sections = split_sections(result.stdout, result.stderr, marker)
    duration = time.monotonic() - started
    try:
        facts = read_host_facts(cluster, host, sections, duration=duration, ask_api=ask_api,
                                roles=roles, clock=(sent_at, received_at))
    except Exception as exc:  # a reader bug must not look like an unreachable host
        return unreadable(host, f"{type(exc).__name__}: {exc}"[:300])
    if not sections:
        tail = result.stderr.strip().splitlines()[-1:] or ["(no output)"]
        facts = dataclasses.replace(
            facts,
            section_errors={"script": f"exit status {result.exit_status}: {tail[0]}"},
        )
    log.debug("probed", seconds=round(duration, 3), errors=len(facts.section_errors))
    return facts


async def query_api(
    transport: Transport, host: Host, *, timeout: float = PROBE_TIMEOUT, stacked: bool = False
) -> ClusterView | None:
    """The API query alone, on ``host`` (the second round); None where it was skipped."""
    marker = f"HACTL-{secrets.token_hex(8)}"
    fact = kubernetes.ApiState(stacked=stacked)
    try:
        result = await transport.run(
            build_script([fact], marker), timeout=timeout, check=False, backstop=False
        )
    except HactlError as exc:
        return ClusterView(errors={"api": exc.message})
    reader = _Reader(split_sections(result.stdout, result.stderr, marker), host.name)
    answer = reader.get(fact)
    if fact.section in reader.skipped:
        return None
    return kubernetes.cluster_view(answer, reader.why(fact.section))


async def _api_fallback(
    cluster: Cluster,
    transports: Mapping[str, Transport | BaseException],
    hosts_facts: dict[str, HostFacts],
    reader: str,
    timeout: float,
) -> None:
    """When the API reader gave no view, ask every other master with an admin.conf at once
    (one more round trip, only in that case) and put their answers into ``hosts_facts``."""
    probed = Observed(hosts=hosts_facts, probed_at=datetime.now(UTC))
    if probed.cluster_view([reader]) is not None:
        return
    backups: list[tuple[Host, Transport]] = []
    for master in cluster.masters:
        k8s = probed.kubernetes(master.name)
        transport = transports.get(master.name)
        if transport is None or isinstance(transport, BaseException):
            continue
        if master.name != reader and k8s is not None and k8s.admin_conf:
            backups.append((master, transport))
    if not backups:
        return
    get_logger().debug("asking the API from other masters", reader=reader)
    views = await gather_each(
        backups,
        lambda pair: query_api(pair[1], pair[0], timeout=timeout,
                               stacked=cluster.etcd.topology == "stacked"),
        limit=len(backups),
        name=lambda pair: pair[0].name,
    )
    for master, _ in backups:
        view = views[master.name]
        facts = hosts_facts[master.name]
        if isinstance(view, Exception) or view is None or facts.kubernetes is None:
            continue
        errors = dict(facts.section_errors)
        if view.errors:
            errors["k8s.api"] = view.errors["api"]
        hosts_facts[master.name] = dataclasses.replace(
            facts,
            kubernetes=dataclasses.replace(facts.kubernetes, cluster=view),
            section_errors=dict(sorted(errors.items())),
        )


Opener = Callable[[Sequence[Host]], Awaitable[Mapping[str, "Transport | BaseException"]]]
"""Opens connections to more hosts (``Connections.open_all``): name → transport or error."""


async def probe(
    cluster: Cluster,
    transports: Mapping[str, Transport | BaseException],
    *,
    hosts: Sequence[Host] | None = None,
    timeout: float = PROBE_TIMEOUT,
    connect: Opener | None = None,
) -> Observed:
    """Probe ``hosts`` (default: every host of the spec) at once. ``transports`` maps a host
    name to its open transport, or to the error that kept it from connecting. The API is asked
    from one master (:func:`api_reader`); from the others only when it gave no answer. With
    ``connect``, the departing hosts (:mod:`hactl.facts.departing`: in the cluster, not in the
    spec) are connected and probed in one more round, only when there are any."""
    targets = list(cluster.all_hosts() if hosts is None else hosts)
    probed_at = datetime.now(UTC)
    reader = api_reader(cluster, targets)

    async def one(host: Host) -> HostFacts:
        transport = transports.get(host.name)
        if transport is None:
            return unreachable(host, HactlError("no connection was opened", host=host.name))
        if isinstance(transport, BaseException):
            return unreachable(host, transport)
        return await probe_host(
            transport, cluster, host, timeout=timeout, ask_api=host.name == reader
        )

    outcomes = await gather_each(targets, one, limit=max(1, len(targets)), name=lambda h: h.name)
    hosts_facts: dict[str, HostFacts] = {}
    for host in targets:
        out = outcomes[host.name]
        hosts_facts[host.name] = unreachable(host, out) if isinstance(out, Exception) else out
    if reader is not None:
        await _api_fallback(cluster, transports, hosts_facts, reader, timeout)
    if connect is not None and hosts is None:
        await _probe_departing(cluster, hosts_facts, connect, timeout)
    return Observed(hosts=hosts_facts, probed_at=probed_at)


async def _probe_departing(cluster: Cluster, hosts_facts: dict[str, HostFacts], connect: Opener,
                           timeout: float) -> None:
    """Connect to every departing host with an address and probe it as its role (its kubelet,
    kubeadm's files); one that cannot be reached is recorded as unreachable."""
    api = Observed(hosts=hosts_facts, probed_at=datetime.now(UTC)).views(cluster).api
    targets = [(d.host(), d.role) for d in departing(cluster, api)
               if d.address is not None and d.clash is None and d.name not in hosts_facts]
    if not targets:
        return
    opened = await connect([h for h, _ in targets])

    async def one(pair: tuple[Host, str]) -> HostFacts:
        host, role = pair
        transport = opened.get(host.name)
        if transport is None or isinstance(transport, BaseException):
            return unreachable(host, transport or HactlError("no connection was opened", host=host.name))
        return await probe_host(transport, cluster, host, timeout=timeout, ask_api=False,
                                roles=(role,))

    outcomes = await gather_each(targets, one, limit=len(targets), name=lambda p: p[0].name)
    for host, _ in targets:
        out = outcomes[host.name]
        hosts_facts[host.name] = unreachable(host, out) if isinstance(out, Exception) else out


async def probe_cluster(
    cluster: Cluster, *, spec_dir: str | None = None, timeout: float = PROBE_TIMEOUT
) -> Observed:
    """Open one SSH connection per host, probe them all, close. (``plan`` uses this.)"""
    from hactl.transport.ssh import Connections

    async with Connections(cluster, spec_dir=spec_dir) as conns:
        transports = await conns.open_all()
        return await probe(cluster, transports, timeout=timeout, connect=conns.open_all)
