"""etcd operations shared by the etcd step kinds: read the CA off a member, list members, wait
for health as design rule 2 defines it. Commands come from :mod:`hactl.plan.commands`; what etcd
answers is read by the facts' own parsers (:func:`hactl.facts.etcd.parse_member_list`,
:func:`~hactl.facts.etcd.parse_endpoint_health`) into the model's :class:`EtcdMember`, so a
step's fresh read and the probe's agree on learners, IDs (lower-case hex) and client URLs.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from hactl import hostlayout
from hactl.diff import client_url, peer_url
from hactl.errors import CommandError, PlanError
from hactl.facts.base import FactParseError
from hactl.facts.etcd import member_id, parse_endpoint_health, parse_member_list
from hactl.facts.model import EtcdMember
from hactl.plan import commands as cmd
from hactl.plan.refusals import nested_member_data, restart_problem
from hactl.plan.remote import run, wait_for
from hactl.plan.step import StepContext
from hactl.spec.models import Host

if TYPE_CHECKING:
    from hactl.render import pki

def health_by_endpoint(stdout: str) -> dict[str, bool]:
    """``etcdctl endpoint health`` output → {endpoint: healthy}; output that is no answer (the
    command failed before printing one) is "nothing healthy", as a poll needs it."""
    try:
        return {h.endpoint: h.healthy for h in parse_endpoint_health(stdout)}
    except FactParseError:
        return {}


def split_pem_pair(text: str) -> tuple[bytes, bytes]:
    """``cat ca.crt ca.key`` → (cert PEM, key PEM)."""
    marker = "-----BEGIN CERTIFICATE-----"
    end = "-----END CERTIFICATE-----"
    start = text.index(marker)
    stop = text.index(end, start) + len(end)
    return text[start:stop].encode() + b"\n", (text[:start] + text[stop:]).strip().encode() + b"\n"


async def read_ca(ctx: StepContext, host: str) -> pki.CertKey:
    """The etcd CA (certificate and key) from a member, into memory only."""
    from hactl.render import pki  # cryptography: imported by the steps that use it
    result = await run(ctx, host, cmd.read_files(hostlayout.ETCD_CA_CERT, hostlayout.ETCD_CA_KEY))
    cert_pem, key_pem = split_pem_pair(result.stdout)
    return pki.CertKey.from_pem(cert_pem, key_pem)


NO_CA_KEY = f"no etcd member holds the etcd CA key ({hostlayout.ETCD_CA_KEY})"
NO_CA_KEY_HINT = ("if the members hold no CA yet, plan again: the plan generates one; if the etcd "
                  f"was built by hand, copy its CA key to {hostlayout.ETCD_CA_KEY} (mode 0600) on one member")


async def find_ca_host(ctx: StepContext, preferred: str | None = None) -> str | None:
    """The first etcd member (``preferred`` first) that holds the CA: its key AND its
    certificate (GenerateEtcdCA writes the key first: a run killed between the two leaves a key
    alone, which is no CA — the next GenerateEtcdCA makes one again)."""
    names = [h.name for h in ctx.cluster.etcd_members]
    if preferred in names:
        names.remove(preferred)
        names.insert(0, preferred)
    for name in names:
        try:
            result = await run(ctx, name, cmd.etcd_ca_present(), check=False)
        except CommandError:
            continue
        except Exception:  # an unreachable member: try the next one
            continue
        if result.ok:
            return name
    return None


async def data_dir_has_member(ctx: StepContext, host: str, data_dir: str) -> bool:
    """Whether ``data_dir/member`` exists on ``host``. Member data one level down (another
    etcd's data dir inside it, e.g. Debian's ``/var/lib/etcd/default/member``) is refused:
    the caller would empty the data dir, and hactl never deletes etcd data."""
    found = (await run(ctx, host, cmd.data_dir_members(data_dir))).stdout.split("\n")
    top = f"{data_dir.rstrip('/')}/member"
    if top in found:
        return True
    nested = [d for d in found if d]
    if nested:
        raise CommandError(nested_member_data(data_dir, nested[0]), host=host)
    return False


async def prepare_data_dir(ctx: StepContext, host: str, data_dir: str, *,
                           stale_member: bool = False) -> None:
    """A new member starts on an empty data dir (C1): refuse member data in or below it, then
    move whatever else it holds aside into ``<dir>.hactl-old-<UTC time>`` (never deleted).

    ``stale_member``: member data directly in the data dir belongs to an earlier identity of a
    member that has never run (the caller checked the live member list): moved aside too.
    Member data one level down (another etcd's) is still refused."""
    if await data_dir_has_member(ctx, host, data_dir) and not stale_member:
        return
    aside = f"{data_dir.rstrip('/')}.hactl-old-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"
    result = await run(ctx, host, cmd.prepare_data_dir(data_dir, aside))
    if "moved aside" in result.stdout:
        ctx.log("data dir entries moved aside", data_dir=data_dir, into=aside)


_UNQUOTABLE = frozenset('"\\\'`$,=\n\r\t ')


def initial_cluster(ctx: StepContext, members: Sequence[EtcdMember], me: Host) -> str:
    """ETCD_INITIAL_CLUSTER for ``me`` joining (or restarting in) a running cluster: every
    listed member as the member list names it (``name=peerURL`` for each of its peer URLs,
    ``m<id>`` for one that never started), then ``me``. Members outside the spec are taken as
    listed (a DNS peer URL, a name that is no DNS label: L5), but what etcd.env cannot quote
    is refused."""
    mine = peer_url(ctx.cluster, me)
    parts: list[str] = []
    for m in sorted(members, key=lambda m: m.name or m.id):
        if m.name == me.name or mine in m.peer_urls:
            continue
        name = m.name or f"m{m.id}"
        for url in m.peer_urls:
            bad = sorted({c for c in name + url if c in _UNQUOTABLE or not c.isprintable()})
            if bad:
                raise CommandError(
                    f"the member list names member {m.id} {name!r} with peer URL {url!r}: "
                    f"{', '.join(repr(c) for c in bad)} cannot be written into {hostlayout.ETCD_ENV}",
                    host=me.name, hint="rename or update that member by hand (etcdctl member "
                    "update), then apply again")
            parts.append(f"{name}={url}")
    parts.append(f"{me.name}={mine}")
    return ",".join(parts)


def member_env(ctx: StepContext, me: Host, members: Sequence[EtcdMember]) -> str:
    """etcd.env of ``me`` with initial-cluster-state=existing and the listed members."""
    from hactl.plan import desired

    text = desired.etcd_env(ctx.cluster, me.name, state="existing", members=[me])
    wanted = initial_cluster(ctx, members, me)
    return "".join(f'ETCD_INITIAL_CLUSTER="{wanted}"\n' if line.startswith("ETCD_INITIAL_CLUSTER=")
                   else line for line in text.splitlines(keepends=True))


def voter_urls(ctx: StepContext, members: Sequence[EtcdMember]) -> dict[str, str]:
    """Started voter name → the client URL to ask about its health: the one it publishes in the
    member list (during a client-port change the members not yet restarted still serve on the
    old one), else the spec's."""
    spec = {h.name: client_url(ctx.cluster, h) for h in ctx.cluster.etcd_members}
    out = {}
    for m in members:
        if m.is_learner or not m.name:
            continue
        url = (m.client_urls[0] if m.client_urls else "") or spec.get(m.name, "")
        if url:
            out[m.name] = url
    return out


async def restart_check(ctx: StepContext, target: Host, via: Host, also: Sequence[str] = ()) -> None:
    """Rule 1 for restarts on fresh facts: every other voter healthy and healthy voters − 1 ≥
    quorum(voters) while ``target`` restarts (refused with the arithmetic otherwise)."""
    members = await list_members(ctx, via, also)
    voters = [m for m in members if not m.is_learner]
    urls = voter_urls(ctx, members)
    result = await run(ctx, via.name, cmd.endpoint_health(list(urls.values()) or
                                                          [client_url(ctx.cluster, via)]), check=False)
    health = health_by_endpoint(result.stdout)
    healthy = {name for name, url in urls.items() if health.get(url)}
    others = [f"{m.name or m.id} ({'health check failed' if m.name else 'never started'})"
              for m in voters if m.name != target.name and (m.name or m.id) not in healthy]
    problem = restart_problem(target.name, len(voters), len(healthy & {m.name for m in voters}),
                              member_healthy=target.name in healthy, unhealthy_others=others)
    if problem:
        raise PlanError(problem, host=target.name)


async def wait_started(ctx: StepContext, via: Host, name: str, *, timeout: float) -> None:
    """A learner serves no ``endpoint health`` (etcd: "rpc not supported for learner"):
    started = listed with its name (M7)."""

    async def started() -> str | None:
        listed = await list_members(ctx, via)
        return None if any(m.name == name for m in listed) else "member not started yet"

    await wait_for(f"etcd member {name} to start", started, timeout=timeout, host=name)


def list_endpoints(ctx: StepContext, via: Host, also: Sequence[str] = ()) -> list[str]:
    """Where :func:`list_members` asks: ``via``'s client URL in the spec, then ``also``."""
    return list(dict.fromkeys([client_url(ctx.cluster, via), *also]))


async def list_members(ctx: StepContext, via: Host, also: Sequence[str] = ()) -> tuple[EtcdMember, ...]:
    """The member list through ``via``: its client URL in the spec, then ``also`` (the URLs it
    listed at plan time: during a client-port change a member not yet restarted serves there)."""
    result = await run(ctx, via.name, cmd.member_list(*list_endpoints(ctx, via, also)))
    return parse_member_list(result.stdout)


def problems(members: Sequence[EtcdMember], health: dict[str, bool], expected: list[Host], ctx: StepContext) -> str | None:
    """Design rule 2: every expected member listed and started, nothing unexpected, no
    learners, and ``endpoint health`` true on each expected member."""
    names = {h.name for h in expected}
    listed = {m.name for m in members if m.name}
    missing = sorted(names - listed)
    if missing:
        return f"members not started: {', '.join(missing)}"
    extra = sorted(m.name or m.id for m in members if m.name not in names)
    if extra:
        return f"unexpected or unstarted members: {', '.join(extra)}"
    learners = sorted(m.name for m in members if m.is_learner)
    if learners:
        return f"learners not promoted: {', '.join(learners)}"
    sick = [h.name for h in expected if not health.get(client_url(ctx.cluster, h), False)]
    if sick:
        return f"endpoint health false on {', '.join(sick)}"
    return None


async def wait_healthy(
    ctx: StepContext, via: Host, expected: list[Host], *, timeout: float = 120.0,
    also: Sequence[str] | None = None,
) -> None:
    """Rule 2. With ``also`` (a restart in a chain of restarts) each member is asked on the
    client URL it publishes and ``via`` on its listed URLs too; otherwise on the spec's URLs."""

    async def probe() -> str | None:
        members = await list_members(ctx, via, also or ())
        endpoints = {client_url(ctx.cluster, h): client_url(ctx.cluster, h) for h in expected}
        if also is not None:
            endpoints.update({client_url(ctx.cluster, ctx.cluster.host(n)): url
                              for n, url in voter_urls(ctx, members).items() if n in
                              {h.name for h in expected}})
        result = await run(ctx, via.name, cmd.endpoint_health(list(endpoints.values())), check=False)
        answers = health_by_endpoint(result.stdout)
        health = {spec: answers.get(asked, False) for spec, asked in endpoints.items()}
        return problems(members, health, expected, ctx)

    await wait_for("etcd to be healthy (rule 2)", probe, timeout=timeout, interval=1.0, host=via.name)


# -- stacked etcd (kubeadm's, on the masters) ------------------------------------------------

STRICT_RECONFIG_WINDOW = 6.0
"""etcd refuses a member add ("unhealthy cluster") until every voter has been connected for 5 s."""


async def list_stacked_members(ctx: StepContext, master: str) -> tuple[EtcdMember, ...] | str:
    """kubeadm's stacked etcd's member list through the member on ``master``; the reason as a
    string when it cannot be read."""
    listed = await run(ctx, master, cmd.member_list_stacked(), check=False)
    if not listed.ok:
        return listed.stderr.strip() or listed.stdout.strip() or f"exit {listed.exit_status}"
    try:
        return parse_member_list(listed.stdout)
    except FactParseError as exc:
        return str(exc)


async def wait_stacked_etcd_settled(ctx: StepContext, master: str, *, timeout: float = 120.0) -> None:
    """Before a stacked control-plane join (which adds an etcd member): every member started,
    no learner, each endpoint healthy — and still so after etcd's strict-reconfig window."""

    async def healthy() -> str | None:
        members = await list_stacked_members(ctx, master)
        if isinstance(members, str):
            return members or "member list failed"
        if any(not m.started or m.is_learner for m in members):
            return "a member is not started or still a learner"
        urls = [m.client_urls[0] for m in members if m.client_urls]
        if not urls:
            return "no member client URLs"
        res = await run(ctx, master, cmd.stacked_endpoint_health(urls), check=False)
        health = health_by_endpoint(res.stdout)
        sick = [u for u in urls if not health.get(u)]
        return f"unhealthy: {', '.join(sick)}" if sick else None

    await wait_for("the stacked etcd to be healthy", healthy, timeout=timeout, host=master)
    await asyncio.sleep(STRICT_RECONFIG_WINDOW)
    await wait_for("the stacked etcd to stay healthy", healthy, timeout=timeout, host=master)


# -- how the plan shows these operations (the same builders as above, run-time values as
# placeholders: see hactl.plan.commands.shown) ----------------------------------------------

P = cmd.placeholder


def endpoints_shown(via: str, also: Sequence[str] = ()) -> str:
    """:func:`list_endpoints` as the plan shows it."""
    return P(f"client URL of {via} in the spec" + (f", then {', '.join(also)}" if also else ""))


def shown_list_members(via: str, also: Sequence[str] = (), note: str = "") -> str:
    return cmd.shown(cmd.member_list(endpoints_shown(via, also)), note)


def shown_find_ca(preferred: str) -> list[str]:
    return [cmd.shown(cmd.etcd_ca_present(), f"on each etcd member, {preferred} first, until one "
                      "holds the CA key and certificate")]


def shown_read_ca(planned: str) -> list[str]:
    return [cmd.shown(cmd.read_files(hostlayout.ETCD_CA_CERT, hostlayout.ETCD_CA_KEY),
                      f"on that member ({planned} at plan time): the CA into memory only")]


def shown_prepare_data_dir(note: str) -> list[str]:
    data_dir = P("dataDir")
    return [cmd.shown(cmd.data_dir_members(data_dir), "member data in it or one level down is refused"),
            cmd.shown(cmd.prepare_data_dir(data_dir, f"{data_dir}.hactl-old-{P('UTC time')}"), note)]


def shown_restart_check(via: str, also: Sequence[str] = ()) -> list[str]:
    return [shown_list_members(via, also),
            cmd.shown(cmd.endpoint_health([P("client URLs the started voters publish")]),
                      "check: every other member healthy, quorum kept without this one")]


def shown_wait_started(via: str, name: str) -> str:
    return shown_list_members(via, note=f"repeated until {name} is listed with its name (a learner "
                              "answers no health check)")


def shown_wait_healthy(via: str, also: Sequence[str] | None = None) -> list[str]:
    asked = "client URL of each member" + (" (the one it publishes)" if also is not None else " in the spec")
    return [shown_list_members(via, also or ()),
            cmd.shown(cmd.endpoint_health([P(asked)]),
                      "repeated until rule 2 holds: every member listed, started, a voter and healthy")]


def shown_wait_stacked_settled() -> list[str]:
    return [cmd.shown(cmd.member_list_stacked(), "every member started, none a learner"),
            cmd.shown(cmd.stacked_endpoint_health([P("client URL each member publishes")]),
                      f"each healthy, and still so after {STRICT_RECONFIG_WINDOW:g} s (etcd's strict "
                      "reconfig window)")]


# -- leadership ----------------------------------------------------------------------------------


def leader_of(stdout: str) -> str | None:
    """``etcdctl endpoint status -w json`` → the leader's id (hex) most answers name; None when
    no endpoint answered."""
    try:
        entries = json.loads(stdout)
    except ValueError:
        return None
    seen: dict[str, int] = {}
    for entry in entries if isinstance(entries, list) else [entries]:
        leader = ((entry or {}).get("Status") or {}).get("leader")
        if leader:
            key = member_id(leader)
            seen[key] = seen.get(key, 0) + 1
    return max(seen, key=lambda k: seen[k]) if seen else None


async def hand_over_leadership(ctx: StepContext, via: str, endpoints: Sequence[str], leaving: str,
                               to: str, *, stacked: bool, timeout: float = 15.0) -> bool:
    """Before a member is removed: when it leads, ``move-leader`` to ``to`` first (a removed
    leader makes the others elect a new one, and for that moment every API server's etcd check
    fails; measured in the lab: a 500 from ``/readyz`` through the load balancer). Returns
    whether it moved. A member that does not lead, or an endpoint status nobody answers (the
    member is down: it leads nobody), moves nothing."""
    status = await run(ctx, via, cmd.endpoint_status(endpoints, stacked=stacked), check=False)
    if leader_of(status.stdout) != leaving:
        return False
    await run(ctx, via, cmd.move_leader(endpoints, to, stacked=stacked))

    async def moved() -> str | None:
        now = await run(ctx, via, cmd.endpoint_status(endpoints, stacked=stacked), check=False)
        leader = leader_of(now.stdout)
        return None if leader is not None and leader != leaving else f"the leader is {leader}"

    await wait_for(f"etcd leadership to leave {leaving}", moved, timeout=timeout, host=via)
    ctx.log("etcd leadership moved", leaving=leaving, to=to)
    return True


def shown_hand_over(via: str, leaving: str, *, stacked: bool) -> list[str]:
    urls = [cmd.placeholder("client URL of each started voter")]
    return [cmd.shown(cmd.endpoint_status(urls, stacked=stacked), f"on {via}: does {leaving} lead?"),
            cmd.shown(cmd.move_leader(urls, cmd.placeholder(f"the member id of {via}"), stacked=stacked),
                      f"only when {leaving} leads: leadership first moves to {via}'s member "
                      "(a removed leader would leave the cluster without one until an election)")]
