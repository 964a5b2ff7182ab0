"""Safety refusals: plans that would break a rule of docs/design.md are refused, with the
arithmetic or the command that gets the user out. Pure (facts in, messages out)."""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
from urllib.parse import urlsplit

from hactl.diff import Diff, Op, bootstrap_to_finish, client_url, matching_member
from hactl.errors import PlanError
from hactl.facts.model import CA_PAIRS, EtcdFacts, Observed
from hactl.plan import commands as cmd
from hactl.plan import desired, refusals_drift, refusals_identity
from hactl.spec.checks import MIN_ETCD_FOR_K8S_131, quorum
from hactl.spec.models import Cluster, parse_version
from hactl.spec.values import normalise_endpoint
from hactl.transport import tools
from hactl.vocabulary import ETCD_CA, FRESH_MEMBER, RESTARTS, Component, Intent


def removal_problem(
    member: str, voters: int, healthy_voters: int, *, removing_healthy: bool, removing_voter: bool = True
) -> str | None:
    """Why removing ``member`` would break quorum (None when it is safe). Rule 1: never leave
    fewer healthy voters than the quorum of the cluster that remains."""
    after = voters - 1 if removing_voter else voters
    healthy_after = healthy_voters - 1 if removing_healthy else healthy_voters
    if after < 1:
        return f"refusing to remove etcd member {member}: it is the last voting member"
    need = quorum(after)
    if healthy_after < need:
        return (
            f"refusing to remove etcd member {member}: the cluster has {voters} voting members, "
            f"{healthy_voters} healthy; after the removal {after} members need a quorum of "
            f"⌊{after}/2⌋+1 = {need} healthy voters, but only {healthy_after} would be healthy. "
            "Bring the unhealthy members back first"
        )
    return None


def _version(text: str | None) -> tuple[int, int, int] | None:
    if not text:
        return None
    try:
        return parse_version(text)
    except ValueError:
        return None


def check(cluster: Cluster, observed: Observed, diff: Diff) -> None:
    """Raise one :class:`PlanError` listing every refusal."""
    from hactl.plan import refusals_membership, refusals_preflight  # membership imports from here

    problems = [*etcd_version(cluster, observed), *foreign_registry(cluster, observed, diff),
                *endpoint_mismatch(cluster, observed), *ca_mismatch(cluster, observed),
                *foreign_member_data(diff), *etcd_in_the_way(cluster, observed, diff),
                *ca_key_missing(cluster, observed, diff),
                *worker_joined_masters(diff), *half_init_stuck(cluster, observed, diff),
                *quorum_refusals(cluster, observed, diff), *removal_routes(cluster, observed, diff),
                *restart_refusals(cluster, observed, diff), *etcd_endpoints_moved(cluster, observed),
                *etcd_address_moved(cluster, observed), *half_bootstrap(cluster, observed, diff),
                *refusals_drift.check(cluster, observed),
                *refusals_drift.consumers_unknown(cluster, observed, diff),
                *refusals_identity.check(cluster, observed),
                *refusals_membership.check(cluster, observed, diff),
                *_prepare_refusals(cluster, observed),
                *refusals_preflight.check(cluster, observed, diff)]
    if problems:
        raise PlanError("the plan is refused:\n  - " + "\n  - ".join(problems))


def _prepare_refusals(cluster: Cluster, observed: Observed) -> list[str]:
    if cluster.prepare is None:
        return []
    from hactl.diff_prepare import joined_version_changes

    return joined_version_changes(cluster, observed)


def etcd_version(cluster: Cluster, observed: Observed) -> list[str]:
    """Rule 3: Kubernetes 1.31+ needs external etcd ≥ 3.5.11 (the probed version)."""
    if cluster.etcd.topology != "external" or cluster.kubernetes.version_tuple[:2] < (1, 31):
        return []
    old: dict[str, list[str]] = {}
    for host in cluster.etcd_members:
        seen = refusals_drift.running_etcd_version(observed, host.name)
        version = _version(seen)
        if seen and version is not None and version < MIN_ETCD_FOR_K8S_131:
            old.setdefault(seen, []).append(host.name)
    return [
        f"{', '.join(names)} run{'s' if len(names) == 1 else ''} etcd {seen}, but Kubernetes "
        f"{cluster.kubernetes.version} needs etcd 3.5.11 or newer (kubeadm refuses older external "
        "etcd); upgrade etcd on the members first, or use Kubernetes 1.30"
        for seen, names in sorted(old.items())
    ]


def foreign_registry(cluster: Cluster, observed: Observed, diff: Diff) -> list[str]:
    """Rule 4: never init against an etcd that already holds /registry data."""
    init = [c for c in diff.changes if Intent.INIT in c.intents]
    if not init or cluster.etcd.topology != "external":
        return []
    holders = sorted(
        h.name for h in cluster.etcd_members
        if (f := observed.etcd(h.name)) is not None and f.has_registry_data
    )
    if not holders:
        return []
    endpoints = [client_url(cluster, h) for h in cluster.etcd_members]
    return [
        f"kubeadm init on {init[0].host} would use an etcd that already holds another cluster's "
        f"/registry data (seen on {', '.join(holders)}); hactl never initialises over existing data. "
        "If that data is truly unwanted, delete it by hand on an etcd member: "
        + cmd.shown(tools.etcdctl(endpoints, "del", "/registry", "--prefix"))
    ]


def endpoint_mismatch(cluster: Cluster, observed: Observed) -> list[str]:
    """The running cluster's controlPlaneEndpoint, normalised like the spec's (6443 when left
    out, IPv6 compressed in brackets) and compared without regard to case (a DNS name's case
    does not matter), must be the spec's: hactl never moves an endpoint."""
    view = observed.views(cluster).api
    if view is None or view.control_plane_endpoint is None:
        return []
    running = view.control_plane_endpoint
    with contextlib.suppress(ValueError):  # what does not parse is compared as it is
        running = normalise_endpoint(running)
    # the spec's is normalised by the model; DNS names are case-insensitive (RFC 4343)
    if running.lower() == cluster.control_plane_endpoint.lower():
        return []
    return [
        f"the running cluster's controlPlaneEndpoint is {view.control_plane_endpoint}, the spec "
        f"says {cluster.control_plane_endpoint}; hactl does not move a cluster to another endpoint "
        "(certificates and kubeconfigs name it). Fix controlPlaneEndpoint in the spec"
    ]


def ca_mismatch(cluster: Cluster, observed: Observed) -> list[str]:
    found = {
        h.name: f.ca_fingerprint
        for h in cluster.etcd_members
        if (f := observed.etcd(h.name)) is not None and f.ca_fingerprint
    }
    if len(set(found.values())) <= 1:
        return []
    listing = ", ".join(f"{name}: {fp[:23]}…" for name, fp in sorted(found.items()))
    return [f"the etcd members hold different CAs ({listing}); fix /etc/etcd/pki by hand"]


def foreign_member_data(diff: Diff) -> list[str]:
    return [
        f"{c.host}: the etcd data dir holds member data that is not part of this cluster; move it "
        f"away by hand (e.g. mv /var/lib/etcd/member /var/lib/etcd/member.old) and plan again"
        for c in diff.changes if c.detail.foreign_data
    ]


def etcd_in_the_way(cluster: Cluster, observed: Observed, diff: Diff) -> list[str]:
    """Rule 4 for etcd itself: a plan that would start members from scratch (bootstrap, add,
    replace) is refused on a host whose etcd service runs while hactl cannot read it (an etcd
    built by hand, or the distro's default one), or whose data dir holds another etcd's member
    data one level down (e.g. Debian's /var/lib/etcd/default/member): either would be lost."""
    intents = {c.host: c.intents for c in diff.changes if c.addr.component is Component.ETCD_MEMBER}
    fresh = {h for h, want in intents.items() if want & FRESH_MEMBER}
    out = []
    for host in cluster.etcd_members:
        facts = observed.etcd(host.name)
        if host.name not in fresh or facts is None:
            continue
        if facts.active and facts.members is None and Intent.BOOTSTRAP in intents[host.name] \
                and own_bootstrap(cluster, host.name, facts):
            continue  # hactl's own member of this bootstrap, started by a run that stopped early
        if facts.active and facts.members is None:
            why = facts.query_error or "no answer"
            out.append(
                f"{host.name}: an etcd service is running but hactl cannot read it ({why.strip()[:200]}); "
                "hactl never starts a new member over a running etcd. If it serves a cluster built "
                f"by hand, let hactl read it: put a client certificate of that cluster's CA at "
                f"/etc/etcd/pki/healthcheck-client.crt and .key (CA at /etc/etcd/pki/ca.crt) and "
                "plan again. If it is disposable (e.g. the package's default single-member etcd), "
                "stop it (systemctl disable --now etcd), move its data dir away, and plan again")
        elif facts.data_dir_state == "nested":
            found = facts.nested_member or f"{facts.data_dir}/*/member"
            out.append(f"{host.name}: the data dir {nested_member_data(facts.data_dir, found)}")
    return out


def own_bootstrap(cluster: Cluster, name: str, facts: EtcdFacts) -> bool:
    """The running etcd on ``name`` is the member hactl bootstraps for this spec: its env file
    and unit are exactly hactl's renders for it (``initial-cluster-state=new``). A run killed
    after starting it (and before the health wait, or before every member's certificates were
    in place) leaves it running while hactl may not read it yet (no quorum, or its client
    certificate not written): that is the bootstrap to finish, not an etcd in the way."""
    def sha(text: str) -> str:
        return hashlib.sha256(text.encode()).hexdigest()

    return (facts.env_sha256 == sha(desired.etcd_env(cluster, name, state="new"))
            and facts.unit_sha256 == sha(desired.etcd_unit(cluster)))


def half_bootstrap(cluster: Cluster, observed: Observed, diff: Diff) -> list[str]:
    """A new cluster's bootstrap that stopped between members: some members hold data written
    by hactl's own bootstrap (initial-cluster-state=new), the others never started, and no
    member answers (the started ones wait for a quorum that cannot come). When every member
    with data carries hactl's bootstrap-pending marker the diff finishes the bootstrap
    (``diff.bootstrap_to_finish``); that needs their env files to be this spec's too. Without
    the marker hactl cannot tell this state from a cluster whose other members lost their
    data: refused, with the way out, instead of a wait that never ends."""
    if observed.views(cluster).members is not None:
        return []
    facts = {h.name: observed.etcd(h.name) for h in cluster.etcd_members}
    if any(f is None for f in facts.values()):
        return []  # an unreachable member may answer later
    with_data = [n for n, f in facts.items() if f is not None and f.data_dir_state == "member"]
    without = [n for n, f in facts.items() if f is not None and f.data_dir_state in ("absent", "empty")]
    if not with_data or not without or len(with_data) + len(without) != len(facts):
        return []
    ours = all(own_bootstrap(cluster, n, facts[n]) for n in with_data)  # type: ignore[arg-type]
    data_dir = cluster.etcd.data_dir.rstrip("/")
    if bootstrap_to_finish(cluster, observed):
        if ours:
            return []  # planned: the others bootstrap, the started ones join them
        return [
            f"etcd: the bootstrap of a new cluster stopped between members ({', '.join(with_data)} "
            f"started, {', '.join(without)} did not), and the spec changed since: the started "
            f"member{'s' if len(with_data) > 1 else ''}' /etc/etcd/etcd.env is not what this spec "
            "renders, so the members would not form one cluster. Plan again with the spec that "
            "started the bootstrap, or, as this cluster never served (hactl's bootstrap-pending "
            f"marker is on {', '.join(with_data)}): on {', '.join(with_data)} run `systemctl stop "
            f"etcd` and move the data dir aside (`mv {data_dir} {data_dir}.hactl-old`), then plan "
            "again"]
    if not ours:
        return []
    return [
        f"etcd: the bootstrap of a new cluster stopped between members: {', '.join(with_data)} "
        f"hold{'s' if len(with_data) == 1 else ''} member data from hactl's bootstrap "
        f"(initial-cluster-state=new) but {', '.join(without)} never started, and no member "
        "answers, and hactl's bootstrap-pending marker (/etc/etcd/hactl-bootstrap-pending) is not "
        "on them (it proves a cluster never formed). hactl cannot tell this from a cluster whose "
        "other members lost their data, so it does not guess. If this cluster never served (an "
        f"interrupted first bring-up): on {', '.join(with_data)} run `systemctl stop etcd` and move the data dir aside (`mv "
        f"{data_dir} {data_dir}.hactl-old`), then plan again (all members are bootstrapped "
        "together). Otherwise restore the cluster from a snapshot"
    ]


def nested_member_data(data_dir: str, found: str) -> str:
    """What to do about another etcd's ``member`` dir ``found`` below ``data_dir`` (said by the
    plan's refusal and, on fresh facts, by the steps that would empty the data dir)."""
    parent = found.rsplit("/", 1)[0]
    return (f"{data_dir} holds another etcd's member data ({found}); hactl never deletes etcd "
            f"data: move it away by hand (e.g. mv {parent} {parent}.old) and plan again")


def ca_key_missing(cluster: Cluster, observed: Observed, diff: Diff) -> list[str]:
    """A member needs certificates issued by the existing etcd CA, but every member answered and
    none holds its key (/etc/etcd/pki/ca.key): an etcd built by hand, whose CA key lives elsewhere.
    Refused at plan time, rather than failing the apply half-way."""
    if any(c.addr == ETCD_CA and c.op is Op.CREATE for c in diff.changes):
        return []  # no CA yet: the plan generates one
    needing = sorted(c.host for c in diff.changes
                     if c.addr.component is Component.PKI_ETCD and c.op is Op.CREATE and c.host)
    if not needing:
        return []
    facts = [observed.etcd(h.name) for h in cluster.etcd_members]
    if any(f is None for f in facts) or any(f.ca_key_present for f in facts if f is not None):
        return []  # a member that did not answer may hold it: the step looks again
    return [
        f"{', '.join(needing)} need{'s' if len(needing) == 1 else ''} etcd certificates from the "
        "etcd CA (/etc/etcd/pki/ca.crt on the members), but no member holds its key "
        "(/etc/etcd/pki/ca.key); hactl issues member certificates with it. For a cluster built "
        "by hand, copy that CA's key to /etc/etcd/pki/ca.key (mode 0600) on one member and plan "
        "again"
    ]


def half_init_stuck(cluster: Cluster, observed: Observed, diff: Diff) -> list[str]:
    """M4: a ``kubeadm init`` that stopped half-way is completed phase by phase — unless a CA
    is left without its private key (kubeadm then cannot sign what is missing). Then say how to
    start over (nothing joined it yet) or what to restore (something did)."""
    out = []
    for change in diff.changes:
        if Intent.COMPLETE_INIT not in change.intents or change.host is None:
            continue
        host = change.host
        facts = observed.kubernetes(host)
        have = set(facts.pki_files) if facts is not None else set()
        lost = [f"pki/{key}" for public, key in CA_PAIRS if public in have and key not in have]
        if not lost:
            continue
        view = observed.views(cluster).api
        dependents = sorted(
            {n.name for n in (view.nodes if view is not None else ()) if n.name != host}
            | {h.name for h in (*cluster.masters, *cluster.workers) if h.name != host
               and (k := observed.kubernetes(h.name)) is not None and k.kubelet_conf})
        head = (f"kubeadm init on {host} stopped half-way and cannot be completed: "
                f"{', '.join(lost)} {'is' if len(lost) == 1 else 'are'} missing, so kubeadm cannot "
                "sign the certificates and kubeconfigs still to make")
        if dependents:
            out.append(f"{head}; {', '.join(dependents)} already joined this cluster, so do not "
                       f"start over: restore {', '.join(lost)} from a backup into "
                       f"/etc/kubernetes/pki on {host}, then run `hactl plan` again")
        else:
            out.append(f"{head}; nothing has joined it yet, so start over by hand: `ssh {host} "
                       "kubeadm reset -f` (removes /etc/kubernetes and its static Pods), then "
                       "`hactl plan` (it plans kubeadm init again; with external etcd, if the API "
                       "server ran it left /registry data in etcd and the plan says how to delete it)")
    return out


def worker_joined_masters(diff: Diff) -> list[str]:
    return [
        f"{c.host} is in masters but is joined as a worker; run `kubeadm reset -f` on it and plan again"
        for c in diff.changes if c.op is Op.UPDATE and Intent.WORKER_JOINED in c.intents
    ]


def quorum_refusals(cluster: Cluster, observed: Observed, diff: Diff) -> list[str]:
    """Rule 1 for the removals the plan would make (replacements first, then deletions), one
    after the other, on the member list most members agree on."""
    if cluster.etcd.topology != "external":
        return []
    members = observed.views(cluster).members
    if members is None:
        return []
    voters = {m.id for m in members if not m.is_learner}
    healthy = {
        m.id for m in members
        if m.id in voters and m.name and any(h.name == m.name for h in cluster.etcd_members)
        and observed.etcd_healthy(m.name)
    }
    removals = sorted(
        (c for c in diff.changes if c.op in (Op.REPLACE, Op.DELETE) and c.addr.component is Component.ETCD_MEMBER),
        key=lambda c: (c.op is Op.DELETE, c.address),
    )
    out = []
    for change in removals:
        member_id = change.detail.member_id
        name = change.addr.host or ""
        problem = removal_problem(name, len(voters), len(healthy),
                                  removing_healthy=member_id in healthy,
                                  removing_voter=member_id in voters)
        if problem:
            out.append(problem)
            break
        if change.op is Op.REPLACE:
            healthy.add(member_id)  # it comes back (learner → promoted) before the next change
        else:
            voters.discard(member_id)
            healthy.discard(member_id)
    return out


def removal_route(cluster: Cluster, observed: Observed, target: str, member_id: str = "") -> str | None:
    """Rule 1, "removals go through another member": the first spec member other than ``target``
    that the member list shows started and voting and whose own health check passed (None: none)."""
    members = observed.views(cluster).members or ()
    started = {m.name for m in members if m.name and not m.is_learner and m.id != member_id}
    for host in cluster.etcd_members:
        if host.name != target and host.name in started and observed.etcd_healthy(host.name):
            return host.name
    return None


def removal_routes(cluster: Cluster, observed: Observed, diff: Diff) -> list[str]:
    """Refuse a removal (or replacement) that no other started, healthy member can run."""
    if cluster.etcd.topology != "external":
        return []
    out = []
    for change in diff.changes:
        if change.op not in (Op.REPLACE, Op.DELETE) or change.addr.component is not Component.ETCD_MEMBER:
            continue
        name = change.addr.host or ""
        if removal_route(cluster, observed, name, change.detail.member_id) is None:
            out.append(
                f"refusing to remove etcd member {name}: no other started, healthy member to run "
                "`etcdctl member remove` through (a member never removes itself). Bring another "
                "member back first")
    return out


def restart_problem(
    member: str, voters: int, healthy_voters: int, *, member_healthy: bool, unhealthy_others: list[str]
) -> str | None:
    """Why restarting the running etcd member ``member`` would risk quorum (None when it is
    safe). Rule 1 for restarts: every other member healthy, and ``healthy voters − 1 ≥
    quorum(voters)`` while it is down (said by the plan and, on fresh facts, by the steps)."""
    if unhealthy_others:
        names = ", ".join(unhealthy_others)
        return (f"refusing to restart etcd member {member}: {names} "
                f"{'is' if len(unhealthy_others) == 1 else 'are'} not healthy, and hactl restarts "
                "a running member only while every other member is healthy. Bring "
                f"{names} back first (or remove {'it' if len(unhealthy_others) == 1 else 'them'} "
                "from the spec)")
    need = quorum(voters)
    left = healthy_voters - 1 if member_healthy else healthy_voters
    if left < need:
        single = (" (a single-member etcd cannot restart without an outage: restart it by hand, "
                  "`systemctl restart etcd`, if that is acceptable)" if voters == 1 else "")
        return (f"refusing to restart etcd member {member}: the cluster has {voters} voting "
                f"members, {healthy_voters} healthy; while {member} restarts {left} would be "
                f"healthy, below the quorum ⌊{voters}/2⌋+1 = {need}{single}")
    return None


def restart_refusals(cluster: Cluster, observed: Observed, diff: Diff) -> list[str]:
    """Rule 1 for the restarts the plan would make of running members (configuration drift,
    a stale process, a peer URL change). They run after the plan's membership changes, so the
    voters are then the spec's members; a member the plan (re)starts or adds before them counts
    as healthy (each restart step checks again on fresh facts)."""
    if cluster.etcd.topology != "external" or observed.views(cluster).members is None:
        return []
    members = [c for c in diff.changes if c.addr.component is Component.ETCD_MEMBER]
    restarts = [c for c in members if c.op is Op.UPDATE and c.detail.running
                and RESTARTS & c.intents]
    if not restarts:
        return []
    mended = {c.host for c in members if c.host and c.op is not Op.DELETE and c not in restarts}
    healthy = {h.name for h in cluster.etcd_members
               if observed.etcd_healthy(h.name) or h.name in mended}
    out = []
    for change in restarts:
        name = change.host or ""
        others = [_unhealthy(observed, h.name) for h in cluster.etcd_members
                  if h.name != name and h.name not in healthy]
        problem = restart_problem(name, len(cluster.etcd_members), len(healthy),
                                  member_healthy=name in healthy, unhealthy_others=others)
        if problem:
            out.append(problem)
    return out


def _unhealthy(observed: Observed, name: str) -> str:
    facts = observed.etcd(name)
    if facts is None:
        return f"{name} (unreachable)"
    if facts.health is not None and facts.health.error:
        return f"{name} ({facts.health.error.strip()[:120]})"
    return f"{name} ({(facts.query_error or 'its health check failed').strip()[:120]})"


def etcd_endpoints_moved(cluster: Cluster, observed: Observed) -> list[str]:
    """M8: the API servers of an initialised cluster reach etcd at the client URLs in
    kubeadm-config (``etcd.external.endpoints``, the manifests' ``--etcd-servers``); a spec
    change of ``etcd.clientPort`` or of a member's address would move an endpoint they use.
    hactl does not update the API servers yet, so such a change is refused."""
    view = observed.views(cluster).api
    if cluster.etcd.topology != "external" or view is None or not view.etcd_endpoints:
        return []
    used = set(view.etcd_endpoints)
    members = observed.views(cluster).members or ()
    out = []
    for index, host in enumerate(cluster.etcd_members):
        facts = observed.etcd(host.name)
        member = matching_member(cluster, host, members)
        live = set(member.client_urls) if member is not None and member.client_urls else set()
        if not live and facts is not None and facts.env.get("ETCD_ADVERTISE_CLIENT_URLS"):
            live = set(facts.env["ETCD_ADVERTISE_CLIENT_URLS"].split(","))
        want = client_url(cluster, host)
        old = sorted(live & used)
        if not old or want in live:
            continue
        try:
            parts = urlsplit(old[0])
            live_port, live_host = parts.port, parts.hostname
        except ValueError:
            live_port, live_host = None, None
        if live_port is not None and live_port != cluster.etcd.client_port:
            field = f"etcd.clientPort (live {live_port}, wanted {cluster.etcd.client_port})"
        else:
            field = (f"etcd.members[{index}].address of {host.name} (live {live_host}, "
                     f"wanted {host.address})")
        out.append(
            f"{field}: the API servers reach etcd at {old[0]} (kubeadm-config "
            f"etcd.external.endpoints, kube-apiserver --etcd-servers), the spec would move it to "
            f"{want}. Put the live value "
            "back in the spec (hactl points the API servers at other members, but does not move a "
            "running member's client URL yet)")
    return out


def _same_address(a: str | None, b: str) -> bool:
    try:
        return a is not None and ipaddress.ip_address(a) == ipaddress.ip_address(b)
    except ValueError:
        return a == b


def etcd_address_moved(cluster: Cluster, observed: Observed) -> list[str]:
    """A spec member whose address differs from the one in its listed peer URL: its server and
    peer certificates name the old address (hactl issues certificates only where none exist),
    so a `member update` and restart would leave it cut off by TLS. Refused, with the way."""
    if cluster.etcd.topology != "external":
        return []
    members = observed.views(cluster).members or ()
    out = []
    for index, host in enumerate(cluster.etcd_members):
        facts = observed.etcd(host.name)
        member = next((m for m in members if m.name == host.name), None)
        if member is None or not member.peer_urls or facts is None or not facts.env_present:
            continue
        try:
            live = urlsplit(member.peer_urls[0]).hostname
        except ValueError:
            continue
        if _same_address(live, str(host.address)):
            continue
        out.append(
            f"etcd.members[{index}].address of {host.name} (live {live}, wanted {host.address}): "
            "hactl does not move an etcd member to another address (its certificates in "
            "/etc/etcd/pki name the old one). Put the live address back in the spec; to move the "
            "member, take it out of the spec (hactl removes it), clear /etc/etcd/pki on the host, "
            "then add it back under its new address")
    return out
