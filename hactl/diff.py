"""Cluster × Observed → changes. Pure: no I/O, no clock (``now`` is passed in).

The diff is data (after kopf's ``structs/diffs.py``): an enum of operations :class:`Op`, a small
record :class:`Change` ``(op, addr, before, after, reason, host)`` (``addr`` a typed
:class:`~hactl.vocabulary.Address`), a generator
:func:`iter_changes` and a collecting wrapper :func:`diff`. Addresses name what changes:

    pki.etcd-ca                 the etcd CA (kept on the etcd members, never on the operator)
    pki.etcd[etcd02]            a member's CA copy and server/peer certificates
    etcd.member[etcd02]         an etcd member (bootstrap / add / start / promote / replace / remove)
    lb[lb01].haproxy_cfg        /etc/haproxy/haproxy.cfg on a load balancer
    lb[lb01].service            the haproxy service on a load balancer
    master[master01]            ``kubeadm init`` (the first master) or a control-plane join
    master[master01].kubelet    the kubelet service of a joined node (enabled at boot, running)
    worker[worker01]            a worker join
    cluster.bootstrap-token     a join token for this run (the secret is never read back)
    cluster.certificate-key     a fresh certificate key for this run's control-plane join batch
    network                     the pod network's objects in the API (flannel or the user's)

Safety refusals (a :class:`hactl.errors.PlanError`) live in :mod:`hactl.plan.refusals`; this
module only reports what differs. Unreachable hosts produce no changes here: the planner decides
whether the plan needs them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

from hactl.facts.departing import departing, member_of
from hactl.facts.etcd import MEMBER_FILES
from hactl.facts.model import (
    ClusterView,
    EtcdFacts,
    EtcdMember,
    HAProxyFacts,
    KubernetesFacts,
    Observed,
)
from hactl.spec.models import Cluster, Host
from hactl.vocabulary import (
    BOOTSTRAP_TOKEN,
    CERTIFICATE_KEY,
    ETCD_CA,
    KUBEADM_CONFIG,
    NETWORK,
    Action,
    Address,
    Aspect,
    Component,
    Intent,
)

#: The certificate key's Secret lives 2 h; a key older than TTL - margin is refreshed.
CERTIFICATE_KEY_TTL = 2 * 3600.0
CERTIFICATE_KEY_MARGIN = 45 * 60.0


Op = Action
"""A change's action (create, update, delete, replace, no-op): the one
:class:`~hactl.vocabulary.Action` enum that steps share; ``Op`` names it where the diff uses it."""


@dataclass(frozen=True)
class Hints:
    """What the planner and the refusals need of a change besides its intents, as typed fields
    (never text to parse). Every field's default means "not said"; :meth:`to_data` keeps only
    the others (a saved plan's ``saved.details``)."""

    member_id: str = ""
    """the etcd member's ID (lower-case hex), for removals, replacements and promotions"""
    running: bool = False
    """the member's etcd runs now (a change to it is a restart)"""
    learner: bool = False
    """the member is a learner"""
    stale_data: bool = False
    """a never-started member's data dir holds an earlier identity's data (moved aside)"""
    foreign_data: bool = False
    """the host's data dir holds another cluster's member data (refused)"""
    together: bool = False
    """started with the other members of its group (no member answers)"""
    finish_bootstrap: bool = False
    """part of a bootstrap that stopped between members"""
    data_dir_entries: int = 0
    """entries of a data dir without member data that a bootstrap moves aside"""
    phases: tuple[str, ...] = ()
    """the kubeadm init phases an interrupted init still needs"""
    interrupted: bool = False
    """a join that was interrupted (its leftovers are reset first)"""
    diff: str = ""
    """haproxy.cfg's text diff, shown by the text output"""
    address: str = ""
    """where a departing host is reached (its Node's InternalIP, or its member's peer URL host)"""
    node_ready: bool = False
    """the Node this change deletes is Ready"""
    servers: tuple[str, ...] = ()
    """masters' servers a load balancer holds out of rotation at runtime (``DRAIN``/``MAINT`` set
    through its admin socket, e.g. by a drill or an apply killed between drain and ready)"""

    def to_data(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value != f.default:
                out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    @staticmethod
    def from_data(data: Mapping[str, Any]) -> Hints:
        """The inverse of :meth:`to_data`; ValueError naming the field that is unknown or of
        the wrong type (a saved plan is input)."""
        known = {f.name: f for f in fields(Hints)}
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            f = known.get(key)
            if f is None:
                raise ValueError(f"unknown hint {key!r}")
            want = type(f.default)
            if want is tuple:
                if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                    raise ValueError(f"{key}: must be a list of strings")
                value = tuple(value)
            elif not isinstance(value, want) or (want is int and isinstance(value, bool)):
                raise ValueError(f"{key}: must be {want.__name__}, not {type(value).__name__}")
            kwargs[key] = value
        return Hints(**kwargs)


@dataclass(frozen=True)
class Change:
    op: Op
    addr: Address
    before: Mapping[str, Any] | None
    after: Mapping[str, Any] | None
    reason: str
    host: str | None = None
    detail: Hints = Hints()
    """Planner hints that are not shown as before/after (:class:`Hints`)."""
    intents: frozenset[Intent] = frozenset()
    """What the change means to do (:class:`~hactl.vocabulary.Intent`): the planner and the
    refusals decide on these, never on the reason text."""

    @property
    def address(self) -> str:
        """The address as the plan prints and saves it (``etcd.member[etcd02]``)."""
        return str(self.addr)

    @property
    def actions(self) -> list[str]:
        if self.op is Op.REPLACE:
            return ["delete", "create"]
        return [self.op.value]


@dataclass(frozen=True)
class Diff:
    changes: tuple[Change, ...]

    def effective(self) -> tuple[Change, ...]:
        return tuple(c for c in self.changes if c.op is not Op.NOOP)

    def get(self, address: Address | str) -> Change | None:
        if isinstance(address, str):
            return next((c for c in self.changes if c.address == address), None)
        return next((c for c in self.changes if c.addr == address), None)

    def counts(self) -> tuple[int, int, int]:
        """(add, change, remove) like Terraform: a replace counts as one add and one remove."""
        add = sum(1 for c in self.changes if c.op in (Op.CREATE, Op.REPLACE))
        change = sum(1 for c in self.changes if c.op is Op.UPDATE)
        remove = sum(1 for c in self.changes if c.op in (Op.DELETE, Op.REPLACE))
        return add, change, remove


def diff(cluster: Cluster, observed: Observed, *, now: datetime) -> Diff:
    return Diff(tuple(iter_changes(cluster, observed, now=now)))


def iter_changes(cluster: Cluster, observed: Observed, *, now: datetime) -> Iterator[Change]:
    if cluster.prepare is not None:
        from hactl.diff_prepare import prepare_changes

        yield from prepare_changes(cluster, observed)
    if cluster.etcd.topology == "external":
        yield from _pki(cluster, observed)
        yield from _etcd(cluster, observed)
    yield from _load_balancers(cluster, observed)
    yield from _kubernetes(cluster, observed, now)
    yield from _network(cluster, observed)
    yield from _departing(cluster, observed)
    if cluster.etcd.topology == "external":
        yield from _etcd_consumers(cluster, observed)


# -- helpers -------------------------------------------------------------------------------


def url(address: object, port: int) -> str:
    text = str(address)
    return f"https://[{text}]:{port}" if ":" in text else f"https://{text}:{port}"


def peer_url(cluster: Cluster, host: Host) -> str:
    return url(host.address, cluster.etcd.peer_port)


def client_url(cluster: Cluster, host: Host) -> str:
    return url(host.address, cluster.etcd.client_port)


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def matching_member(cluster: Cluster, host: Host, members: tuple[EtcdMember, ...]) -> EtcdMember | None:
    """The listed member that is ``host``: same name, or (unstarted) same peer URL."""
    purl = peer_url(cluster, host)
    for member in members:
        if member.name == host.name or purl in member.peer_urls:
            return member
    return None


def extra_members(cluster: Cluster, members: tuple[EtcdMember, ...]) -> list[EtcdMember]:
    """Listed members that match no spec member, by name (then id)."""
    return sorted(
        (m for m in members if not any(matching_member(cluster, h, (m,)) for h in cluster.etcd_members)),
        key=lambda m: (m.name, m.id),
    )


def desired_haproxy_cfg(cluster: Cluster) -> str:
    from hactl.render.haproxy import render_haproxy_cfg

    return render_haproxy_cfg(cluster)


# -- PKI -----------------------------------------------------------------------------------


def _pki(cluster: Cluster, observed: Observed) -> Iterator[Change]:
    fingerprints = {
        h.name: f.ca_fingerprint
        for h in cluster.etcd_members
        if (f := observed.etcd(h.name)) is not None
    }
    present = sorted({fp for fp in fingerprints.values() if fp})
    if not present:
        yield Change(
            Op.CREATE, ETCD_CA, None, {"kept_on": "etcd members"},
            "no etcd member holds an etcd CA yet; generate one (in memory) and keep it on the members",
        )
    else:
        yield Change(Op.NOOP, ETCD_CA, {"fingerprint": present[0]}, {"fingerprint": present[0]},
                     "the etcd members hold the CA")
    for host in cluster.etcd_members:
        if host.name not in fingerprints:
            continue  # unreachable: the planner decides
        facts = observed.etcd(host.name)
        # hactl's own member files: where hactl configured etcd (its env file), or where no
        # member ran yet. A cluster adopted from hand (Debian's unit, its certificates elsewhere,
        # only a CA and a healthcheck client under /etc/etcd/pki) keeps its certificates.
        ours = facts is not None and (facts.env_present or facts.data_dir_state in ("absent", "empty"))
        missing = facts.pki_missing if facts is not None and ours else ()
        if fingerprints[host.name] and missing:
            yield Change(
                Op.CREATE, Address(Component.PKI_ETCD, host.name), {"missing": list(missing)},
                {"files": ["ca.crt", *MEMBER_FILES]},
                f"{host.name} has the etcd CA but not {', '.join(missing)} under /etc/etcd/pki (an "
                "earlier run stopped while installing them); issue its certificates again",
                host=host.name,
            )
        elif fingerprints[host.name]:
            yield Change(Op.NOOP, Address(Component.PKI_ETCD, host.name), {"ca": "present"}, {"ca": "present"},
                         "CA and member certificates present", host=host.name)
        else:
            yield Change(
                Op.CREATE, Address(Component.PKI_ETCD, host.name), None,
                {"files": ["ca.crt", "server.crt", "server.key", "peer.crt", "peer.key"]},
                f"{host.name} has no /etc/etcd/pki/ca.crt; install the CA and issue its server and peer certificates",
                host=host.name,
            )


# -- etcd ----------------------------------------------------------------------------------


def _etcd(cluster: Cluster, observed: Observed) -> Iterator[Change]:
    members = observed.views(cluster).members
    if members is None:
        yield from _etcd_no_cluster(cluster, observed)
        return
    for host in cluster.etcd_members:
        facts = observed.etcd(host.name)
        member = matching_member(cluster, host, members)
        address = Address(Component.ETCD_MEMBER, host.name)
        after = {"name": host.name, "peer_url": peer_url(cluster, host), "voter": True}
        if facts is None:
            continue  # unreachable: the planner decides
        if member is None:
            if facts.data_dir_state == "member":
                # The planner refuses this (data of a member that is not in this cluster).
                yield Change(Op.CREATE, address, None, after,
                             f"{host.name} is not a member; its data dir {facts.data_dir} holds "
                             "another cluster's member data", host=host.name,
                             detail=Hints(foreign_data=True), intents=frozenset({Intent.ADD}))
                continue
            yield Change(Op.CREATE, address, None, after,
                         f"{host.name} is not in the member list of the running cluster; add it "
                         "as a learner, start it with initial-cluster-state=existing, promote it"
                         + data_dir_note(facts),
                         host=host.name,
                         intents=frozenset({Intent.ADD}))
            continue
        before = {"name": member.name or "(unstarted)", "id": member.id,
                  "peer_url": ",".join(member.peer_urls), "voter": not member.is_learner}
        moved_from = data_dir_move(cluster, facts)
        # An empty data dir is a rebuilt host only for a member that once ran: a member added
        # (or listed in a new cluster's initial set) but never started has no data yet — it is
        # started (``existing``), not removed and added again, which a run killed between the
        # two would repeat for ever.
        if (facts.data_dir_state in ("absent", "empty") and not facts.active and member.started) \
                or moved_from:
            why = (f"its data dir moves from {moved_from} to {facts.data_dir} (etcd keeps a "
                   "member's identity in its data dir: a restart on a new one would crash it; "
                   f"the old {moved_from} is left as it is)" if moved_from
                   else f"its data dir is {facts.data_dir_state} (host rebuilt?)")
            yield Change(Op.REPLACE, address, before, after,
                         f"{host.name} is listed as member {member.id} but {why}; remove the member "
                         "through another member, then add it back"
                         + data_dir_note(facts),
                         host=host.name, detail=Hints(member_id=member.id),
                         intents=frozenset({Intent.REPLACE}))
            continue
        if not member.started:
            # Added (or in a new cluster's initial set) but never started: no data of its own
            # anywhere. StartEtcdMember writes the existing-cluster env from the live member list
            # and starts it; member data on its host is an earlier identity's (a member that was
            # removed): etcd would refuse to start on it, so it is moved aside.
            old_data = facts.data_dir_state == "member"
            note = (f"; its data dir {facts.data_dir} holds member data of an earlier identity "
                    "(this member has never run): it will be moved aside into "
                    f"{facts.data_dir.rstrip('/')}.hactl-old-<UTC time> (nothing is deleted) and "
                    "the member starts on the emptied directory" if old_data else data_dir_note(facts))
            yield Change(Op.UPDATE, address, before, after,
                         "the member was added but never started; start it with "
                         "initial-cluster-state=existing"
                         + ("; the member is still a learner" if member.is_learner else "") + note,
                         host=host.name,
                         detail=Hints(member_id=member.id, running=False,
                                 learner=member.is_learner, stale_data=old_data),
                         intents=frozenset({Intent.START_ADDED}
                                           | ({Intent.PROMOTE} if member.is_learner else set())))
            continue
        reasons = []
        intents: set[Intent] = set()
        running = member.started and facts.active
        if not running:
            reasons.append("the etcd service is not running" if member.started
                           else "the member was added but never started")
            intents.add(Intent.START)
        if member.is_learner:
            reasons.append("the member is still a learner")
            intents.add(Intent.PROMOTE)
        if member.started and facts.env_present and peer_url(cluster, host) not in member.peer_urls:
            # (an etcd set up by other means, without hactl's env file, is left as it runs)
            reasons.append(f"the member list has its peer URL as {','.join(member.peer_urls)}, the "
                           f"spec says {peer_url(cluster, host)}: `etcdctl member update` through "
                           "another member, then rewrite etcd.env and restart it")
            intents.add(Intent.UPDATE_PEER)
        drift = _env_drift(cluster, host, facts.env) if facts.env_present else []
        if drift:
            reasons.append("configuration differs: " + ", ".join(drift))
            intents.add(Intent.RECONFIGURE)
        stale = stale_env(facts) if running else []
        if stale and not drift:
            reasons.append("the running etcd was started before /etc/etcd/etcd.env was last "
                           f"written (it runs with other {', '.join(stale)}); restart it")
            intents.add(Intent.RESTART)
        if reasons:
            yield Change(Op.UPDATE, address, before, after, "; ".join(reasons), host=host.name,
                         detail=Hints(member_id=member.id, running=running,
                                 learner=member.is_learner), intents=frozenset(intents))
        elif facts.bootstrap_pending:
            yield Change(Op.UPDATE, address, before, after,
                         "hactl's bootstrap-pending marker (/etc/etcd/hactl-bootstrap-pending) is "
                         "still on it: the run that bootstrapped the cluster stopped before its "
                         "health wait; wait for a healthy cluster and remove it", host=host.name,
                         detail=Hints(member_id=member.id),
                         intents=frozenset({Intent.FORMED}))
        else:
            yield Change(Op.NOOP, address, before, after, "started voting member", host=host.name)
    for member in extra_members(cluster, members):
        name = member.name or member.id
        yield Change(Op.DELETE, Address(Component.ETCD_MEMBER, name),
                     {"name": member.name or "(unstarted)", "id": member.id,
                      "peer_url": ",".join(member.peer_urls), "voter": not member.is_learner},
                     None, f"member {name} ({member.id}) is not in the spec; remove it through "
                     "another member", detail=Hints(member_id=member.id),
                     intents=frozenset({Intent.REMOVE}))


# -- consumers of the etcd member list -------------------------------------------------------


def url_key(url: str) -> str:
    """A client URL as compared (scheme and host are case-insensitive; a trailing / is not part
    of it)."""
    return url.strip().rstrip("/").lower()


def etcd_servers(cluster: Cluster) -> tuple[str, ...]:
    """What the API servers should list: the client URLs of the spec's etcd members, in the
    spec's order (kubeadm's ``etcd.external.endpoints`` and every ``--etcd-servers``)."""
    return tuple(client_url(cluster, h) for h in cluster.etcd_members)


def same_servers(live: tuple[str, ...], wanted: tuple[str, ...]) -> bool:
    """Two endpoint lists name the same members (the order is the etcd client's to choose)."""
    return {url_key(u) for u in live} == {url_key(u) for u in wanted}


def _etcd_consumers(cluster: Cluster, observed: Observed) -> Iterator[Change]:
    """External etcd: kubeadm-config's ``etcd.external.endpoints`` and the ``--etcd-servers`` of
    every running master's kube-apiserver against the spec's members. A master that this plan
    initialises or (re-)joins is left out: kubeadm writes its manifest from kubeadm-config,
    which is rewritten first."""
    wanted = etcd_servers(cluster)
    wanted_keys = {url_key(u) for u in wanted}
    after = {"etcd_servers": ",".join(wanted)}
    masters = [h.name for h in cluster.masters]
    view = observed.views(cluster).api
    if view is None:
        return  # no initialised cluster: nothing uses etcd yet
    if view.etcd_endpoints and not same_servers(view.etcd_endpoints, wanted):
        yield Change(Op.UPDATE, KUBEADM_CONFIG, {"etcd_servers": ",".join(view.etcd_endpoints)},
                     after, "kubeadm's stored ClusterConfiguration (kube-system/kubeadm-config) "
                     "lists other etcd endpoints than the spec's members; the next join or kubeadm "
                     "upgrade writes them into a kube-apiserver manifest", intents=frozenset(
                         {Intent.ETCD_CLIENTS}))
    nodes = _Nodes(view, masters)
    for host in cluster.masters:
        facts = observed.kubernetes(host.name)
        if facts is None or not facts.initialised or nodes.lost(host.name) \
                or facts.etcd_servers is None or same_servers(facts.etcd_servers, wanted):
            continue
        live = {url_key(u) for u in facts.etcd_servers}
        gone = [u for u in facts.etcd_servers if url_key(u) not in wanted_keys]
        new = [u for u in wanted if url_key(u) not in live]
        why = "; ".join(part for part in (
            f"it lists {', '.join(gone)}, not the client URL of any etcd member of the spec"
            if gone else "",
            f"it does not list {', '.join(new)}" if new else "") if part)
        yield Change(Op.UPDATE, Address(Component.MASTER, host.name, Aspect.ETCD_SERVERS),
                     {"etcd_servers": ",".join(facts.etcd_servers)}, after,
                     f"kube-apiserver --etcd-servers on {host.name}: {why}; rewrite its static Pod "
                     "manifest (the kubelet restarts the API server) and wait until it is ready",
                     host=host.name, intents=frozenset({Intent.ETCD_CLIENTS}))


def data_dir_note(facts: EtcdFacts) -> str:
    """What starting a new member does to the data dir, in the plan's words (C1)."""
    data_dir, entries, names = facts.data_dir, facts.data_dir_entries, facts.data_dir_names
    if facts.data_dir_state != "other":
        return ""
    if entries <= 0 or not names:  # facts without the listing (older saved data)
        what = "entries (not listed by the probe)"
    else:
        shown = ", ".join(repr(n) for n in names)
        more = f", and {entries - len(names)} more" if entries > len(names) else ""
        what = f"{entries} entr{'y' if entries == 1 else 'ies'} ({shown}{more})"
    return (f"; its data dir {data_dir} holds {what} but no member data: they will be moved aside into "
            f"{data_dir.rstrip('/')}.hactl-old-<UTC time> (nothing is deleted) and the member "
            "starts on the emptied directory")


def data_dir_move(cluster: Cluster, facts: EtcdFacts) -> str | None:
    """The data dir etcd uses now when the spec names another one that holds no member data
    (a spec edit of ``etcd.dataDir``): that member must be replaced, not restarted. Only for
    an etcd that runs from hactl's env file: one set up by other means (adopted, e.g. Debian's
    ``/var/lib/etcd/default``) is left as it runs, like the rest of its configuration."""
    if not facts.env_present:
        return None
    env = facts.running_env if facts.running_env is not None else facts.env
    current = env.get("ETCD_DATA_DIR")
    if not current or current == cluster.etcd.data_dir or facts.data_dir_state == "member":
        return None
    return current


def stale_env(facts: EtcdFacts) -> list[str]:
    """``ETCD_*`` keys whose value in the running process differs from the env file (the file
    was written, the process never restarted: M3)."""
    if facts.running_env is None or not facts.env_present:
        return []
    return [k for k in sorted(facts.env) if facts.env[k] != facts.running_env.get(k)]


def _etcd_no_cluster(cluster: Cluster, observed: Observed) -> Iterator[Change]:
    """No member answered: a fresh bootstrap, or members with data that are all down."""
    with_data = [
        h.name for h in cluster.etcd_members
        if (f := observed.etcd(h.name)) is not None and f.data_dir_state == "member"
    ]
    size = len(cluster.etcd_members)
    pending = bootstrap_to_finish(cluster, observed)
    for host in cluster.etcd_members:
        facts = observed.etcd(host.name)
        if facts is None:
            continue
        address = Address(Component.ETCD_MEMBER, host.name)
        after = {"name": host.name, "peer_url": peer_url(cluster, host), "voter": True}
        if pending and host.name in with_data:
            yield Change(Op.UPDATE, address, {"name": host.name, "running": facts.active}, after,
                         "started by hactl's bootstrap of this new cluster, which stopped before the "
                         "other members started; start it with them (" + (
                             "it runs" if facts.active else
                             "systemd shows a member of a new cluster as activating until a quorum "
                             "runs, or it is stopped") + ")", host=host.name,
                         detail=Hints(finish_bootstrap=True, together=True),
                         intents=frozenset({Intent.START}))
        elif pending:
            yield Change(Op.CREATE, address, None, after,
                         "the bootstrap of this new cluster stopped before this member started "
                         f"({', '.join(with_data)} started and wait for a quorum; hactl's "
                         "bootstrap-pending marker proves the cluster never formed); bootstrap it "
                         "with initial-cluster-state=new" + data_dir_note(facts),
                         host=host.name, detail=Hints(finish_bootstrap=True, together=True,
                                                 data_dir_entries=facts.data_dir_entries
                                                 or int(facts.data_dir_state == "other")),
                         intents=frozenset({Intent.BOOTSTRAP}))
        elif not with_data:
            yield Change(Op.CREATE, address, None, after,
                         f"no etcd cluster yet; bootstrap all {size} members together with "
                         "initial-cluster-state=new"
                         + data_dir_note(facts),
                         host=host.name, detail=Hints(together=True,
                                                 data_dir_entries=facts.data_dir_entries
                                                 or int(facts.data_dir_state == "other")),
                         intents=frozenset({Intent.BOOTSTRAP}))
        elif host.name in with_data:
            yield Change(Op.UPDATE, address, {"name": host.name, "running": False}, after,
                         "holds member data but no member answers; start the etcd service",
                         host=host.name, detail=Hints(together=True),
                         intents=frozenset({Intent.START}))
        else:
            yield Change(Op.CREATE, address, None, after,
                         f"not a member; add it once the members holding data "
                         f"({', '.join(with_data)}) are back", host=host.name,
                         intents=frozenset({Intent.ADD}))


def bootstrap_to_finish(cluster: Cluster, observed: Observed) -> list[str]:
    """The members started by a new cluster's bootstrap that stopped between members, when the
    next plan can finish it: no member answers, every member was probed, some hold member data
    and carry hactl's bootstrap-pending marker (written before their start, removed on every
    member once the cluster was seen healthy), the others have no data at all. The marker is
    the proof that the cluster never formed: without it (a cluster whose other members lost
    their data, or a bootstrap by an older hactl) the plan refuses instead
    (``refusals.half_bootstrap``), as it does when the members' env files are not this spec's."""
    if observed.views(cluster).members is not None:
        return []
    facts = [(h.name, observed.etcd(h.name)) for h in cluster.etcd_members]
    if any(f is None for _, f in facts):
        return []
    with_data = [n for n, f in facts if f is not None and f.data_dir_state == "member"]
    without = [n for n, f in facts if f is not None and f.data_dir_state in ("absent", "empty")]
    if not with_data or not without or len(with_data) + len(without) != len(facts):
        return []
    if not all(f is not None and f.bootstrap_pending for n, f in facts if n in with_data):
        return []
    return with_data


_ENV_KEYS = ("ETCD_NAME", "ETCD_DATA_DIR", "ETCD_INITIAL_ADVERTISE_PEER_URLS", "ETCD_ADVERTISE_CLIENT_URLS")


def desired_env_subset(cluster: Cluster, host: Host) -> dict[str, str]:
    return {
        "ETCD_NAME": host.name,
        "ETCD_DATA_DIR": cluster.etcd.data_dir,
        "ETCD_INITIAL_ADVERTISE_PEER_URLS": peer_url(cluster, host),
        "ETCD_ADVERTISE_CLIENT_URLS": client_url(cluster, host),
    }


def _env_drift(cluster: Cluster, host: Host, env: Mapping[str, str]) -> list[str]:
    want = desired_env_subset(cluster, host)
    return [k for k in _ENV_KEYS if k in env and env[k] != want[k]]


# -- load balancers ------------------------------------------------------------------------


def _load_balancers(cluster: Cluster, observed: Observed) -> Iterator[Change]:
    from hactl.render.haproxy import BACKEND

    desired = desired_haproxy_cfg(cluster)
    want = sha256_text(desired)
    for host in cluster.load_balancer.hosts:
        facts = observed.haproxy(host.name)
        if facts is None:
            continue
        address = Address(Component.LB, host.name, Aspect.HAPROXY_CFG)
        after = {"sha256": want}
        if not facts.config_present:
            yield Change(Op.CREATE, address, None, after,
                         "/etc/haproxy/haproxy.cfg is missing", host=host.name)
        elif facts.config_sha256 != want:
            yield Change(Op.UPDATE, address, {"sha256": facts.config_sha256}, after,
                         "/etc/haproxy/haproxy.cfg differs from the rendered configuration "
                         f"({_line_delta(facts.config or '', desired)})"
                         + ("; haproxy is not running" if not facts.active else ""), host=host.name,
                         detail=Hints(diff=_unified(facts.config or "", desired)))
        else:
            yield Change(Op.NOOP, address, after, after, "configuration matches", host=host.name)
        service = Address(Component.LB, host.name, Aspect.SERVICE)
        if not facts.config_present or facts.config_sha256 != want:
            continue  # installing the config starts (or reloads) the service
        if not facts.active:
            yield Change(Op.UPDATE, service, {"active": False}, {"active": True},
                         "haproxy is not running", host=host.name)
        elif not facts.config_loaded:  # written but never loaded: reload (graceful), never restart
            yield Change(Op.UPDATE, service, {"active": True, "loaded": False},
                         {"active": True, "loaded": True},
                         f"{facts.loaded_why}; reload haproxy (graceful) to load it", host=host.name)
        elif held := _held_out(cluster, facts):
            yield Change(Op.UPDATE, service, {"active": True, "held_out": list(held)},
                         {"active": True, "held_out": []},
                         f"{', '.join(held)} held out of {BACKEND} at runtime ("
                         + ", ".join(f"{s} {facts.backend(BACKEND)[s]}" for s in held)
                         + ": a drill or an apply stopped between drain and ready); "
                         "put back in rotation (state ready)", host=host.name,
                         detail=Hints(servers=held))
        else:
            yield Change(Op.NOOP, service, {"active": True}, {"active": True}, "haproxy is running",
                         host=host.name)


def _held_out(cluster: Cluster, facts: HAProxyFacts) -> tuple[str, ...]:
    """The spec's masters whose API-backend server this load balancer holds in ``DRAIN`` or
    ``MAINT`` set at runtime (the rendered configuration sets neither; ``MAINT (via …)`` follows
    another server and is not its own)."""
    from hactl.render.haproxy import BACKEND

    masters = {h.name for h in cluster.masters}
    return tuple(sorted(
        s.server for s in facts.servers
        if s.backend == BACKEND and s.server in masters and s.status in ("DRAIN", "MAINT")
        and "via" not in s.raw_status))


def _line_delta(old: str, new: str) -> str:
    import difflib

    added = removed = 0
    for line in difflib.unified_diff(old.splitlines(), new.splitlines(), lineterm="", n=0):
        if line.startswith("+") and not line.startswith("+++"):
            added += 1
        elif line.startswith("-") and not line.startswith("---"):
            removed += 1
    return f"{added} line(s) to add, {removed} to remove"


def _unified(old: str, new: str) -> str:
    import difflib

    return "\n".join(difflib.unified_diff(old.splitlines(), new.splitlines(), "on host", "rendered",
                                          lineterm="", n=1))


# -- kubernetes ----------------------------------------------------------------------------


def _kubernetes(cluster: Cluster, observed: Observed, now: datetime) -> Iterator[Change]:
    master_names = [h.name for h in cluster.masters]
    views = observed.views(cluster)
    half = views.half
    initialised = views.initialised or (half[0] if half else None)
    view = views.api
    nodes = _Nodes(view, master_names)
    cp_joins = worker_joins = 0
    for index, host in enumerate(cluster.masters):
        facts = observed.kubernetes(host.name)
        address = Address(Component.MASTER, host.name)
        if facts is None:
            continue
        if half is not None and half[0] == host.name:
            yield _complete_init(host.name, half[1])
        elif facts.initialised and nodes.lost(host.name):
            cp_joins += 1
            yield Change(Op.REPLACE, address, {"control_plane": "files only, no Node"},
                         {"control_plane": True}, f"{host.name} has control-plane files but no "
                         "registered Node (a failed join?); kubeadm reset -f, then join again",
                         host=host.name, intents=frozenset({Intent.REJOIN}))
        elif facts.initialised:
            yield Change(Op.NOOP, address, {"control_plane": True}, {"control_plane": True},
                         "control plane running", host=host.name)
            yield _kubelet_service(address, host.name, facts.kubelet_enabled, facts.kubelet_active)
        elif facts.joined:
            yield Change(Op.UPDATE, address, {"control_plane": False, "joined": True},
                         {"control_plane": True}, f"{host.name} is joined as a worker, not as a "
                         "control-plane node", host=host.name,
                         intents=frozenset({Intent.WORKER_JOINED}))
        elif initialised is None and half is None and index == 0:
            yield Change(Op.CREATE, address, None, {"control_plane": True, "init": True},
                         "no control plane yet; kubeadm init --upload-certs on the first master",
                         host=host.name, intents=frozenset({Intent.INIT}))
        elif (left := join_leftovers(facts)) and not nodes.registered(host.name):
            cp_joins += 1
            yield _interrupted_join(address, host.name, left, nodes, {"control_plane": True})
        elif not join_leftovers(facts) and \
                (stale := _stale(cluster, host, view, "control_plane")) is not None:
            cp_joins += 1
            yield stale
        else:
            cp_joins += 1
            yield Change(Op.CREATE, address, None, {"control_plane": True},
                         "not part of the cluster; join as a control-plane node", host=host.name,
                         intents=frozenset({Intent.JOIN}))
    for host in cluster.workers:
        facts = observed.kubernetes(host.name)
        address = Address(Component.WORKER, host.name)
        if facts is None:
            continue
        if facts.joined and nodes.lost(host.name):
            worker_joins += 1
            yield Change(Op.REPLACE, address, {"joined": "files only, no Node"}, {"joined": True},
                         f"{host.name} has kubelet.conf but no registered Node (a failed join?); "
                         "kubeadm reset -f, then join again", host=host.name,
                         intents=frozenset({Intent.REJOIN}))
        elif facts.joined:
            yield Change(Op.NOOP, address, {"joined": True}, {"joined": True}, "joined",
                         host=host.name)
            yield _kubelet_service(address, host.name, facts.kubelet_enabled, facts.kubelet_active)
        elif (left := join_leftovers(facts)) and not nodes.registered(host.name):
            worker_joins += 1
            yield _interrupted_join(address, host.name, left, nodes, {"joined": True})
        elif not join_leftovers(facts) and \
                (stale := _stale(cluster, host, view, "joined")) is not None:
            worker_joins += 1
            yield stale
        else:
            worker_joins += 1
            yield Change(Op.CREATE, address, None, {"joined": True},
                         "not part of the cluster; join as a worker", host=host.name,
                         intents=frozenset({Intent.JOIN}))
    if initialised is None or not (cp_joins or worker_joins):
        return  # an init makes a token and a key; no join → nothing to prepare
    yield Change(Op.CREATE, BOOTSTRAP_TOKEN, None, {"token": "(sensitive value)", "ttl": "2h"},
                 "bootstrap token secrets are never read back from the cluster; create one for "
                 "this run's joins", host=initialised)
    if cp_joins:
        age = view.kubeadm_certs_age(now) if view is not None else None
        if age is None:
            why = "the kubeadm-certs Secret is absent"
        elif age > CERTIFICATE_KEY_TTL - CERTIFICATE_KEY_MARGIN:
            why = f"the kubeadm-certs Secret is {int(age // 60)} min old (expires after 120 min)"
        else:
            why = (f"the kubeadm-certs Secret is {int(age // 60)} min old, but its key is never read "
                   "back from the cluster")
        yield Change(Op.UPDATE, CERTIFICATE_KEY, {"key": "(sensitive value)"},
                     {"key": "(sensitive value)"},
                     f"{why}; upload the control-plane certificates under a fresh key for this "
                     "join batch", host=initialised)


def _complete_init(host: str, phases: tuple[str, ...]) -> Change:
    """A ``kubeadm init`` that stopped half-way (M4): the phases whose results are missing, and
    every phase after them, are run one by one (``kubeadm init phase …``); init is never re-run."""
    return Change(Op.UPDATE, Address(Component.MASTER, host), {"control_plane": "half-initialised", "missing": list(phases)},
                  {"control_plane": True},
                  f"kubeadm init on {host} stopped half-way (nothing shows that its {phases[0]} "
                  f"phase ran); run init's phases from there on, one by one: {', '.join(phases)} "
                  "(kubeadm init phase … --config; init itself is never re-run)",
                  host=host, detail=Hints(phases=tuple(str(p) for p in phases)),
                  intents=frozenset({Intent.COMPLETE_INIT}))


EXTERNAL_ETCD_CLIENT_FILES = frozenset({"etcd/ca.crt", "apiserver-etcd-client.crt", "apiserver-etcd-client.key"})
"""What hactl itself puts under /etc/kubernetes/pki for external etcd (not kubeadm's)."""


def join_leftovers(facts: KubernetesFacts) -> list[str]:
    """kubeadm's files on a node that has no kubelet.conf: what a ``kubeadm join`` stopped
    after its download-certs (or a later) phase leaves behind, and what the next join's
    preflight refuses (FileAvailable pki/ca.crt, DirAvailable manifests, bootstrap-kubelet.conf,
    the control-plane manifests). Empty when the node holds kubelet.conf (a joined kubelet: not
    this case) or none of kubeadm's files (hactl's own etcd client files are not kubeadm's)."""
    if facts.kubelet_conf:
        return []
    pki = [f"pki/{p}" for p in facts.pki_files if p not in EXTERNAL_ETCD_CLIENT_FILES]
    confs = sorted(set(facts.kubeconfigs or ()) | ({"admin.conf"} if facts.admin_conf else set()))
    return [*pki, *confs, *(f"manifests/{m}" for m in facts.manifests)]


def _interrupted_join(address: Address, host: str, leftovers: list[str], nodes: _Nodes,
                      after: Mapping[str, Any]) -> Change:
    """A join that stopped after kubeadm wrote its files, before kubelet.conf: a plain join
    would be refused by kubeadm's preflight for ever, so the node is reset and joined again
    (the step checks again, just before ``kubeadm reset -f``, that no Node registered)."""
    shown = ", ".join(f"/etc/kubernetes/{f}" for f in leftovers[:4])
    more = f" and {len(leftovers) - 4} more" if len(leftovers) > 4 else ""
    node = "no Node" if nodes.known else "no Node known (the API did not answer; checked again before the reset)"
    before = {key: "kubeadm files of an interrupted join, no kubelet.conf" for key in after}
    return Change(Op.REPLACE, address, before, after,
                  f"{host} holds kubeadm files from an interrupted join, no kubelet.conf, "
                  f"{node}: reset then join (kubeadm reset -f, then kubeadm join: a plain join's "
                  f"preflight refuses {shown}{more})", host=host,
                  detail=Hints(interrupted=True),
                  intents=frozenset({Intent.REJOIN}))


def _kubelet_service(node: Address, host: str, enabled: bool, active: bool) -> Change:
    """A joined node's kubelet must run and be enabled, or the node stays down after a reboot."""
    address = Address(node.component, node.host, Aspect.KUBELET)
    state = {"enabled": enabled, "active": active}
    want = {"enabled": True, "active": True}
    if enabled and active:
        return Change(Op.NOOP, address, state, want, "kubelet enabled and running", host=host)
    problems = [text for ok, text in ((enabled, "not enabled at boot (the node would not come back "
                                       "after a reboot)"), (active, "not running")) if not ok]
    return Change(Op.UPDATE, address, state, want, "kubelet is " + " and ".join(problems)
                  + "; systemctl enable --now kubelet", host=host)


def _stale(cluster: Cluster, host: Host, view: ClusterView | None, key: str) -> Change | None:
    """A spec host that has none of kubeadm's files (re-imaged, or replaced by a new machine at
    its address) while the cluster still has its Node and, with stacked etcd, its etcd member:
    the stale Node is deleted and the stale member removed through another master, then the host
    joins (kubeadm's join refuses a Ready Node of its name; etcd's ``member add`` refuses a peer
    URL that is already listed). None when the cluster holds nothing of it."""
    if view is None:
        return None
    node = view.node(host.name)
    master = key == "control_plane"
    member = None
    if master and cluster.etcd.topology == "stacked" and view.stacked_members:
        member = member_of(cluster, host, view.stacked_members)
    if node is None and member is None:
        return None
    intents = {Intent.JOIN}
    held, then = [], []
    if node is not None:
        intents.add(Intent.DELETE_NODE)
        held.append(f"its Node ({'Ready' if node.ready else 'NotReady'})")
        then.append(f"kubectl delete node {host.name}")
    if member is not None:
        intents.add(Intent.REMOVE_STACKED)
        held.append(f"its etcd member {member.id}" + ("" if member.started else " (never started)"))
        then.append("remove the member through another master "
                    + stacked_quorum(view, [member]))
    role = "control-plane node" if master else "worker"
    before = {key: "stale: " + " and ".join(held)}
    return Change(Op.REPLACE, Address(Component.MASTER if master else Component.WORKER, host.name),
                  before, {key: True},
                  f"{host.name} has none of kubeadm's files (re-imaged?) but the cluster still has "
                  f"{' and '.join(held)}: {'; '.join(then)}; then join it as a {role}",
                  host=host.name,
                  detail=Hints(member_id=member.id if member is not None else "",
                               node_ready=node is not None and node.ready),
                  intents=frozenset(intents))


def stacked_quorum(view: ClusterView, removing: list[EtcdMember]) -> str:
    """The quorum arithmetic of removing ``removing`` from kubeadm's stacked etcd, in words:
    ``(5 voting members, 5 healthy; without master05: 4 members need ⌊4/2⌋+1 = 3 healthy, 4 are)``."""
    members = view.stacked_members or ()
    voters = [m for m in members if not m.is_learner]
    health = view.stacked_health or {}
    healthy = {m.id for m in voters if any(health.get(u) for u in m.client_urls)}
    gone = {m.id for m in removing}
    after = [m for m in voters if m.id not in gone]
    need = len(after) // 2 + 1
    left = sum(1 for m in after if m.id in healthy)
    names = ", ".join(m.name or m.id for m in removing)
    known = "" if view.stacked_health is not None else " (health not known)"
    return (f"({len(voters)} voting members, {len(healthy)} healthy{known}; without {names}: "
            f"{len(after)} members need ⌊{len(after)}/2⌋+1 = {need} healthy, {left} "
            f"{'is' if left == 1 else 'are'})")


def _departing(cluster: Cluster, observed: Observed) -> Iterator[Change]:
    """Every departing host (:mod:`hactl.facts.departing`): a machine the cluster has, the spec
    no longer names. Its Node is drained when Ready (a NotReady Node's pods cannot leave
    gracefully: they are rescheduled once the Node is deleted), its stacked etcd member removed
    through another master, the host reset (``kubeadm reset -f``, kubelet disabled) when hactl
    reaches it and it holds kubeadm's files, and its Node deleted."""
    view = observed.views(cluster).api
    gone: list[EtcdMember] = []  # removed one at a time, in this order: the arithmetic adds up
    for d in departing(cluster, view):
        facts = observed.get(d.name)
        k8s = facts.kubernetes if facts is not None and facts.reachable else None
        intents: set[Intent] = set()
        said: list[str] = []
        if d.node is not None and d.node.ready:
            intents.add(Intent.DRAIN)
            said.append("cordon and drain it (kubectl drain, PodDisruptionBudgets respected)")
        if d.member is not None and view is not None:
            intents.add(Intent.REMOVE_STACKED)
            gone.append(d.member)
            said.append("remove its etcd member through another master "
                        + stacked_quorum(view, list(gone)))
        if k8s is not None and (k8s.kubelet_conf or k8s.admin_conf or k8s.manifests
                                or k8s.kubelet_active or k8s.kubelet_enabled):
            intents.add(Intent.RESET)
            said.append(f"kubeadm reset -f on it (at {d.address}) and disable its kubelet")
        elif facts is not None and not facts.reachable:
            said.append(f"it does not answer at {d.address} ({facts.error}), so it is not reset")
        elif d.address is None:
            said.append("the cluster records no address for it, so it is not reset")
        if d.node is not None:
            intents.add(Intent.DELETE_NODE)
            said.append(f"kubectl delete node {d.name}")
        role = "a control-plane Node" if d.control_plane and d.node is not None else (
            "an etcd member" if d.node is None else "a Node")
        before: dict[str, Any] = {"node": d.node is not None, "control_plane": d.control_plane,
                                  "address": d.address}
        if d.member is not None:
            before["etcd_member"] = d.member.id
        where = "masters" if d.control_plane else "workers"
        yield Change(Op.DELETE, Address(Component.MASTER if d.control_plane else Component.WORKER, d.name),
                     before, None,
                     f"{d.name} is {role} of the cluster but not in the spec's {where}: "
                     + "; ".join(said), host=d.name,
                     detail=Hints(member_id=d.member.id if d.member is not None else "",
                                  address=d.address or "",
                                  node_ready=d.node is not None and d.node.ready),
                     intents=frozenset(intents))


# -- the pod network -------------------------------------------------------------------------


def network_plugin_text(cluster: Cluster) -> str:
    """``flannel v0.25.7`` / ``manifests a.yaml, b.yaml`` / ``none``."""
    net = cluster.network
    if net.plugin == "flannel":
        return f"flannel {net.version}"
    return f"manifests {', '.join(net.manifests)}" if net.plugin == "manifests" else "none"


def _network(cluster: Cluster, observed: Observed) -> Iterator[Change]:
    """The pod network's objects (:func:`hactl.render.cni.network_objects`) against the live
    ones the probe read (those carrying hactl's managed-by label): ``+ network`` when none is
    there, ``~ network`` with each differing field when some differ or are missing, nothing
    when they match. Only the fields the rendered objects set are compared (the server adds
    defaults and status). With ``plugin: none`` nothing is planned (the planner warns, and
    refuses a change to ``none`` while hactl's objects run)."""
    if cluster.network.plugin == "none":
        return
    from hactl.render.cni import differences, network_objects

    views = observed.views(cluster)
    view = views.api
    plugin = network_plugin_text(cluster)
    want = network_objects(cluster)
    after = {"plugin": plugin, "objects": [o.key for o in want]}
    why = ("kubectl apply --server-side through the first master, then wait until every Node is "
           "Ready and CoreDNS is available")
    if view is None or view.network_objects is None:
        if views.initialised is None:  # no cluster yet: the bring-up installs it after init
            yield Change(Op.CREATE, NETWORK, None, after,
                         f"no pod network yet: install {plugin} right after kubeadm init ({why})",
                         intents=frozenset({Intent.INSTALL_NETWORK}))
        return  # an API that did not answer (or an older probe): nothing is known
    live = view.network_objects
    missing = [o.key for o in want if o.key not in live]
    lines: list[str] = []
    for o in want:
        if o.key in live:
            lines += [f"{o.key} {d}" for d in differences(o.body, live[o.key])]
    if view.pod_subnet is None and cluster.network.plugin == "flannel":
        # the cluster's podSubnet is not known: flannel's Network (rendered from the spec's)
        # is not compared (a spec edit of podSubnet must not rewrite the running network)
        lines = [line for line in lines if ".data.net-conf.json" not in line]
    extra = sorted(set(live) - {o.key for o in want})
    if not missing and not lines:
        yield Change(Op.NOOP, NETWORK, {"plugin": plugin}, {"plugin": plugin},
                     f"{plugin}: every object as rendered")
        return
    note = (f"; hactl's objects not in the manifest are left as they are: {', '.join(extra)}"
            if extra else "")
    if len(missing) == len(want):
        yield Change(Op.CREATE, NETWORK, None, after,
                     f"no pod network objects of hactl's in the API: install {plugin} ({why})"
                     + note, intents=frozenset({Intent.INSTALL_NETWORK}))
        return
    said = [f"{len(lines)} field(s) differ"] if lines else []
    if missing:
        said.append(f"missing: {', '.join(missing)}")
    yield Change(Op.UPDATE, NETWORK, {"plugin": plugin, "objects": sorted(live)}, after,
                 f"{plugin}: {'; '.join(said)}; apply the rendered objects ({why})" + note,
                 detail=Hints(diff="\n".join(lines)), intents=frozenset({Intent.INSTALL_NETWORK}))


class _Nodes:
    """The API's Node names, indexed once (a 1,000-host plan asks about every host)."""

    def __init__(self, view: ClusterView | None, masters: list[str]) -> None:
        self.known = view is not None
        nodes = view.nodes if view is not None else ()
        self.names = {n.name for n in nodes}
        wanted = set(masters)
        self.control_plane = {n.name for n in nodes if n.control_plane and n.name in wanted}

    def registered(self, name: str) -> bool:
        """The API answered and has a Node called ``name``."""
        return self.known and name in self.names

    def lost(self, name: str) -> bool:
        """Joined files on ``name`` but the API (answering, with other control-plane Nodes)
        has no Node for it: the leftovers of a failed join."""
        if not self.known or name in self.names:
            return False
        return bool(self.control_plane - {name})
