"""Changes → a DAG of steps, in the seed's order. Pure and fast: no I/O, no clock.

    PKI ─▶ etcd members ─▶ WaitEtcdHealthy ─┐
                       load balancers ──────┼─▶ first master (kubeadm init) ─▶ token / key
                                            │        ─▶ control-plane joins, one at a time
                                            │        ─▶ worker joins, in parallel ─▶ Verify

New etcd clusters start all members together; changes to a running etcd cluster are chained one
membership change at a time (replacements first: remove → add → start → promote; then starts of
stopped members and promotions; then additions; removals; restarts of running members last, each
gated on quorum and followed by a whole-cluster health wait). The load balancers do not wait for etcd
(nothing in their config depends on it) but the first master waits for both. See docs/planning.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from hactl.diff import Change, Diff, Op, diff, etcd_servers, url
from hactl.errors import PlanError
from hactl.facts.host_keys import host_key_problems
from hactl.facts.model import Observed
from hactl.plan import refusals
from hactl.plan import steps as kinds
from hactl.plan.graph import StepGraph
from hactl.plan.step import Step
from hactl.render.kubeadm_config import API_BIND_PORT
from hactl.spec.models import Cluster
from hactl.vocabulary import (
    BOOTSTRAP_TOKEN,
    CERTIFICATE_KEY,
    ETCD_CA,
    KUBEADM_CONFIG,
    NETWORK,
    PREPARE,
    RESTARTS,
    Action,
    Aspect,
    Component,
    Intent,
)

CLIENT_CERTS = {"etcd/ca.crt", "apiserver-etcd-client.crt", "apiserver-etcd-client.key"}
"""What a first master needs under /etc/kubernetes/pki for external etcd."""


@dataclass(frozen=True)
class Plan:
    cluster: Cluster
    diff: Diff
    graph: StepGraph
    fingerprint: dict[str, str]
    unreachable: dict[str, str] = field(default_factory=dict)
    """Hosts that did not answer but that no step needs: host → why."""
    warnings: tuple[str, ...] = ()
    """What the plan does not change but the operator must know (``network.plugin: none``:
    which Nodes stay NotReady and why)."""

    def steps(self) -> list[Step]:
        return self.graph.order()

    def counts(self) -> tuple[int, int, int]:
        return self.diff.counts()

    @property
    def has_changes(self) -> bool:
        return bool(self.diff.effective()) or len(self.graph) > 0


def build_plan(cluster: Cluster, observed: Observed, *, now: datetime) -> Plan:
    """Diff, refuse what breaks a safety rule, and order the steps."""
    _changed_host_keys(observed)
    changes = diff(cluster, observed, now=now)
    refusals.check(cluster, observed, changes)
    _network_refusal(cluster, observed)
    unreachable = _unreachable(cluster, observed)
    return Plan(cluster, changes, _Builder(cluster, observed, changes).build(),
                observed.fingerprint(), unreachable, network_warnings(cluster, observed, changes))


# -- the pod network -------------------------------------------------------------------------


def _network_refusal(cluster: Cluster, observed: Observed) -> None:
    """``network.plugin: none`` while the API holds pod network objects hactl applied: hactl
    does not uninstall a CNI (its DaemonSet, its configuration on every node and the pods'
    addresses would go with it), so the plan is refused rather than leaving it half-managed."""
    if cluster.network.plugin != "none":
        return
    view = observed.views(cluster).api
    live = sorted(view.network_objects or ()) if view is not None else []
    if live:
        raise PlanError(
            "the plan is refused: network.plugin is none, but the cluster runs the pod network "
            f"hactl installed ({', '.join(live[:6])}{' …' if len(live) > 6 else ''}); hactl does "
            "not uninstall a CNI (removing it breaks every pod's network)",
            hint="set network.plugin back to what the cluster runs (flannel or manifests); to "
            "replace the CNI, remove its objects by hand (kubectl delete -f …) first")


def network_warnings(cluster: Cluster, observed: Observed, changes: Diff) -> tuple[str, ...]:
    """``plugin: none``: the Nodes that stay (or are) NotReady and why."""
    if cluster.network.plugin != "none":
        return ()
    view = observed.views(cluster).api
    names = [h.name for h in [*cluster.masters, *cluster.workers]]
    if view is not None:
        stay = [f"{n} ({view.not_ready[n]})" if n in view.not_ready else n for n in names
                if view.node(n) is None or not view.node(n).ready]  # type: ignore[union-attr]
    else:
        stay = names
    if not stay:
        return ()
    return (f"network.plugin is none: hactl installs no pod network, so these Nodes stay NotReady "
            f"until a CNI plugin is installed by other means (the kubelet reports "
            f"\"container runtime network not ready: NetworkReady=false reason:NetworkPluginNotReady "
            f"message:Network plugin returns error: cni plugin not initialized\") and CoreDNS stays "
            f"Pending: {', '.join(stay)}",)


# -- hosts that cannot be trusted ----------------------------------------------------------


def _changed_host_keys(observed: Observed) -> None:
    """Refuse the whole plan when any spec host offered another SSH host key than known_hosts
    records: unlike an unreachable host (left out when no step needs it), it may be someone
    else's machine, so nothing is planned (and an apply does nothing) until a person checks it."""
    problems = host_key_problems(observed)
    if problems:
        raise PlanError(
            "the plan is refused: the SSH host key of "
            f"{', '.join(problems)} changed; hactl plans nothing and changes no host while a "
            "host's identity is in doubt:\n  - " + "\n  - ".join(problems.values())
        )


# -- unreachable hosts ---------------------------------------------------------------------


def _unreachable(cluster: Cluster, observed: Observed) -> dict[str, str]:
    """Refuse when a step would need an unreachable host; return the others (reported only)."""
    views = observed.views(cluster)
    view, initialised = views.api, views.initialised
    members = views.members if cluster.etcd.topology == "external" else None
    needed: list[str] = []
    reported: dict[str, str] = {}
    for host in cluster.all_hosts():
        facts = observed.get(host.name)
        if facts is not None and facts.reachable:
            continue
        error = (facts.error if facts is not None else None) or "not probed"
        why: list[str] = []
        for role in cluster.roles(host.name):
            if role == "etcd" and cluster.etcd.topology == "external":
                listed = members is not None and any(
                    (m.name == host.name and m.started and not m.is_learner) for m in members)
                if not listed:
                    why.append("it is an etcd member that is not (yet) a started voter")
            elif role == "lb" and initialised is None:
                why.append("the bring-up reaches the API through the load balancer")
            elif role in ("master", "worker") and (view is None or view.node(host.name) is None):
                why.append(f"it is a {role} whose Node is not registered")
        if why:
            needed.append(f"{host.name}: unreachable ({error}); needed because {'; '.join(why)}")
        else:
            reported[host.name] = error
    if needed:
        raise PlanError(
            "cannot plan: hosts that the plan needs did not answer:\n  - " + "\n  - ".join(needed),
            hint="fix SSH access (or power the hosts on) and run `hactl plan` again",
        )
    return reported


# -- steps ---------------------------------------------------------------------------------


class _Builder:
    def __init__(self, cluster: Cluster, observed: Observed, changes: Diff) -> None:
        self.cluster, self.observed, self.changes = cluster, observed, changes
        self.g = StepGraph()
        self.ca: Step | None = None
        self.certs: dict[str, Step] = {}
        self.etcd_tail: Step | None = None
        self.lbs: list[Step] = []
        self.network: Step | None = None

    def build(self) -> StepGraph:
        effective = self.changes.effective()
        if not effective:
            return self.g
        if self.cluster.etcd.topology == "external":
            self._pki()
            self._etcd()
        self._load_balancers()
        self._kubernetes()
        if self.network is not None:  # after every join of the plan: every Node Ready
            via = self._api_master() or ""
            self.g.add(kinds.WaitPodNetwork(
                id="network.wait", host=via, title="Wait until every Node is Ready and CoreDNS "
                "is available", reason="the pod network makes the Nodes Ready; CoreDNS runs "
                "once they are", address="network"), self.g.sinks())
        self._prepare()
        sinks = self.g.sinks()
        if sinks:
            via = self._api_master() or ""
            self.g.add(kinds.Verify(id="cluster.verify", host=None, title="Verify the cluster",
                              reason="every apply ends by checking what it built", via=via,
                              address="cluster"), sinks)
        return self.g

    # host preparation: before anything else
    def _prepare(self) -> None:
        by_host: dict[str, list[Change]] = {}
        for c in self.changes.effective():
            if c.addr.aspect in PREPARE and c.host:
                by_host.setdefault(c.host, []).append(c)
        if not by_host:
            return
        from hactl.render import prepare as render

        prepare = self.cluster.prepare
        assert prepare is not None
        from hactl.diff_prepare import read_key

        keyring = render.keyring_path(read_key(prepare))
        roots = [self.g.step(n) for n in list(self.g.g.nodes) if self.g.g.in_degree(n) == 0]
        for host in sorted(by_host):
            cs = by_host[host]
            step = self.g.add(kinds.PrepareHost(
                id=f"{cs[0].addr.component}[{host}].prepare", host=host,
                title=f"Prepare {host} for kubeadm", reason="; ".join(c.reason for c in cs),
                address=cs[0].address, parts=tuple(str(c.addr.aspect) for c in cs),
                version=render.package_version(self.cluster, prepare), keyring=keyring,
                runtime_package=prepare.container_runtime.package))
            for root in roots:
                self.g.edge(step, root)

    # PKI
    def _ca_host(self) -> str:
        for host in self.cluster.etcd_members:
            facts = self.observed.etcd(host.name)
            if facts is not None and facts.ca_fingerprint:
                return host.name
        for host in self.cluster.etcd_members:
            if self.observed.reachable(host.name):
                return host.name
        return self.cluster.etcd_members[0].name

    def _pki(self) -> None:
        ca_host = self._ca_host()
        change = self.changes.get(ETCD_CA)
        if change is not None and change.op is Op.CREATE:
            self.ca = self.g.add(kinds.GenerateEtcdCA(
                id="pki.etcd-ca", host=ca_host, title=f"Generate the etcd CA on {ca_host}",
                reason=change.reason, address=change.address))
        for c in self.changes.effective():
            if c.addr.component is Component.PKI_ETCD and c.host:
                self.certs[c.host] = self.g.add(kinds.InstallEtcdCerts(
                    id=c.address, host=c.host, title=f"Install etcd certificates on {c.host}",
                    reason=c.reason, address=c.address, ca_host=ca_host), [self.ca])

    # etcd
    def _etcd(self) -> None:
        member_changes = [c for c in self.changes.effective() if c.addr.component is Component.ETCD_MEMBER]
        if not member_changes:
            self.etcd_tail = self._etcd_consumers(None)
            return
        first = self.cluster.etcd_members[0].name
        # members of a new cluster, or of one no member of which answers: they start together
        group = [c for c in member_changes if Intent.BOOTSTRAP in c.intents or c.detail.together]
        parallel: list[Step] = []
        # Every member of the group starts only once ALL of them have their certificates: a new
        # cluster forms only when a quorum of its members run, so they start together (a
        # member started alone waits for peers; a run stopped then leaves a state the next
        # plan must refuse, see refusals.half_bootstrap).
        all_certs = [self.certs.get(c.host) for c in group if c.host]
        for c in group:
            assert c.host is not None
            if Intent.BOOTSTRAP in c.intents:
                step: Step = kinds.BootstrapEtcdMember(
                    id=f"{c.address}.bootstrap", host=c.host, title=f"Bootstrap etcd member {c.host}",
                    reason=c.reason, address=c.address,
                    wipe_data_dir=c.detail.data_dir_entries > 0)
            else:
                step = kinds.ReconfigureEtcdMember(
                    id=f"{c.address}.start", host=c.host, title=f"Start etcd member {c.host}",
                    reason=c.reason, address=c.address)
            parallel.append(self.g.add(step, [self.ca, *all_certs]))
        prev: Step | None = None
        if parallel:
            prev = self.g.add(kinds.WaitEtcdHealthy(
                id="etcd.health.bootstrap" if len(group) < len(member_changes) else "etcd.health",
                host=first, title="Wait for etcd to be healthy",
                reason="the new members must form a quorum before anything else uses etcd",
                address="etcd"), parallel)
        # a formed cluster whose members still carry the bootstrap-pending marker: the health
        # wait removes it (as every health wait does)
        formed = [c for c in member_changes if Intent.FORMED in c.intents]
        rest = [c for c in member_changes if c not in group and c not in formed]
        rest.sort(key=lambda c: (_chain_rank(c), c.address))
        consumers = False
        for c in rest:
            if not consumers and _chain_rank(c) >= _REMOVAL_RANK:
                # the API servers leave the members about to go before they go
                prev, consumers = self._etcd_consumers(prev), True
            prev = self._membership_change(c, prev)
        if rest or (formed and not parallel):
            prev = self.g.add(kinds.WaitEtcdHealthy(
                id="etcd.health", host=self._via(None), title="Wait for etcd to be healthy",
                reason="every membership change must leave a healthy cluster (rule 2)" if rest else
                "the cluster has formed: remove the bootstrap-pending marker the bootstrap left",
                address="etcd"), [prev])
        self.etcd_tail = prev if consumers else self._etcd_consumers(prev)

    def _etcd_consumers(self, prev: Step | None) -> Step | None:
        """kubeadm-config's ``etcd.external.endpoints``, then each master's ``--etcd-servers``,
        one master at a time (each step waits for its API server and the API through the load
        balancer before the next starts). In the etcd chain they come after the additions and
        before the removals: the lists they write name only members that run, and no API server
        lists a member when it is removed."""
        changes = [c for c in self.changes.effective() if Intent.ETCD_CLIENTS in c.intents]
        if not changes:
            return prev
        servers = etcd_servers(self.cluster)
        config = next((c for c in changes if c.addr == KUBEADM_CONFIG), None)
        if config is not None:
            via = self._api_master() or ""
            prev = self.g.add(kinds.UpdateKubeadmConfig(
                id=config.address, host=via,
                title=f"Point kubeadm-config's etcd endpoints at the spec's members via {via}",
                reason=config.reason, address=config.address, endpoints=servers), [prev, self.ca])
        order = {h.name: i for i, h in enumerate(self.cluster.masters)}
        for c in sorted((c for c in changes if c.host), key=lambda c: order.get(c.host or "", 0)):
            assert c.host is not None
            own = url(self.cluster.host(c.host).address, API_BIND_PORT)
            prev = self.g.add(kinds.RewriteEtcdServers(
                id=c.address, host=c.host,
                title=f"Point the API server on {c.host} at the spec's etcd members",
                reason=c.reason, address=c.address, servers=servers, via=self._via(None),
                address_url=own), [prev, self.ca])
        return prev

    def _via(self, target: str | None) -> str:
        """A running member other than ``target`` to run etcdctl through."""
        names = [h.name for h in self.cluster.etcd_members if h.name != target]
        for name in names:
            if self.observed.etcd_healthy(name):
                return name
        for name in names:
            if self.observed.reachable(name):
                return name
        return names[0] if names else (target or "")

    def _listed_urls(self, name: str) -> tuple[str, ...]:
        """The client URLs the member list shows for ``name`` (they differ from the spec's
        while a client-port change is under way)."""
        members = self.observed.views(self.cluster).members or ()
        return next((m.client_urls for m in members if m.name == name), ())

    def _membership_change(self, c: Change, prev: Step | None) -> Step:
        intents = c.intents
        name = c.host or c.addr.host or ""
        via = self._via(name)
        deps: list[Step | None] = [prev, self.ca, self.certs.get(name)]
        if intents & {Intent.REPLACE, Intent.REMOVE}:
            member_id = c.detail.member_id
            via = refusals.removal_route(self.cluster, self.observed, name, member_id) or via
            prev = self.g.add(kinds.RemoveEtcdMember(
                id=f"{c.address}.remove", host=via, title=f"Remove etcd member {name} via {via}",
                reason=c.reason, address=c.address, action=Action.DELETE, member=name,
                member_id=member_id), deps)
            if Intent.REMOVE in intents:
                return prev
            deps = [prev]
        if intents & {Intent.REPLACE, Intent.ADD}:
            add = self.g.add(kinds.AddEtcdMember(
                id=f"{c.address}.add", host=via, title=f"Add etcd member {name} as a learner via {via}",
                reason=c.reason, address=c.address, member=name), deps)
            start = self.g.add(kinds.StartEtcdMember(
                id=f"{c.address}.start", host=name,
                title=f"Start etcd member {name} (initial-cluster-state=existing)",
                reason=c.reason, address=c.address, via=via), [add])
            return self.g.add(kinds.PromoteEtcdMember(
                id=f"{c.address}.promote", host=via, title=f"Promote etcd member {name} to voter",
                reason=c.reason, address=c.address, action=Action.UPDATE, member=name), [start])
        step: Step | None = None
        if Intent.START_ADDED in intents:
            step = self.g.add(kinds.StartEtcdMember(
                id=f"{c.address}.start", host=name,
                title=f"Start etcd member {name} (initial-cluster-state=existing)",
                reason=c.reason, address=c.address, via=via,
                stale_data=c.detail.stale_data), deps)
            deps = [step]
        if Intent.UPDATE_PEER in intents:
            step = self.g.add(kinds.UpdateEtcdMember(
                id=f"{c.address}.update-peer", host=via,
                title=f"Update the peer URL of etcd member {name} via {via}",
                reason=c.reason, address=c.address, member=name, via_urls=self._listed_urls(via)), deps)
            deps = [step]
        if intents & {Intent.START, *RESTARTS}:
            rewrite = bool(intents & {Intent.RECONFIGURE, Intent.UPDATE_PEER})
            restart = c.detail.running
            verb = "reconfigure" if rewrite else "restart" if restart else "start"
            title = {"reconfigure": "Reconfigure and restart", "restart": "Restart",
                     "start": "Start"}[verb]
            step = self.g.add(kinds.ReconfigureEtcdMember(
                id=f"{c.address}.{verb}", host=name, title=f"{title} etcd member {name}",
                reason=c.reason, address=c.address, via=via, rewrite=rewrite, restart=restart,
                learner=c.detail.learner, via_urls=self._listed_urls(via)), deps)
            deps = [step]
        if Intent.PROMOTE in intents:
            step = self.g.add(kinds.PromoteEtcdMember(
                id=f"{c.address}.promote", host=via, title=f"Promote etcd member {name} to voter",
                reason=c.reason, address=c.address, action=Action.UPDATE, member=name), deps)
        assert step is not None, f"unplanned etcd change {c.address} ({sorted(intents)})"
        return step

    # load balancers
    def _load_balancers(self) -> None:
        by_host: dict[str, list[Change]] = {}
        for c in self.changes.effective():
            if c.addr.component is Component.LB and c.host:
                by_host.setdefault(c.host, []).append(c)
        for host in sorted(by_host):
            cs = by_host[host]
            cfg = next((c for c in cs if c.addr.aspect is Aspect.HAPROXY_CFG), cs[0])
            held = tuple(s for c in cs if c.addr.aspect is Aspect.SERVICE for s in c.detail.servers)
            self.lbs.append(self.g.add(kinds.ConfigureHAProxy(
                id=f"lb[{host}].haproxy", host=host, title=f"Configure HAProxy on {host}",
                reason="; ".join(c.reason for c in cs), address=cfg.address, action=cfg.op,
                ready_servers=held)))

    # kubernetes
    def _api_master(self) -> str | None:
        init = next((c for c in self.changes.effective()
                     if c.intents & {Intent.INIT, Intent.COMPLETE_INIT}), None)
        return init.host if init else self.observed.views(self.cluster).initialised

    def _kubernetes(self) -> None:
        effective = self.changes.effective()
        infra: list[Step | None] = [self.etcd_tail, *self.lbs]
        ready: list[Step | None] = []
        via = self._api_master() or ""
        for c in effective:
            if Intent.INIT in c.intents:
                assert c.host is not None
                deps = list(infra)
                facts = self.observed.kubernetes(c.host)
                have = set(facts.pki_files) if facts is not None else set()
                if self.cluster.etcd.topology == "external" and not have >= CLIENT_CERTS:
                    deps.append(self.g.add(kinds.InstallEtcdClientCerts(
                        id=f"{c.address}.etcd-client-certs", host=c.host,
                        title=f"Install etcd client certificates on {c.host}",
                        reason="kubeadm init with external etcd needs the etcd CA and the "
                        "apiserver-etcd-client certificate in /etc/kubernetes/pki",
                        address=c.address, ca_host=self._ca_host()), [self.ca, self.etcd_tail]))
                ready.append(self.g.add(kinds.InitControlPlane(
                    id=f"{c.address}.init", host=c.host,
                    title=f"Initialise the control plane on {c.host}", reason=c.reason,
                    address=c.address), deps))
            elif Intent.COMPLETE_INIT in c.intents:
                assert c.host is not None
                ready.append(self.g.add(kinds.CompleteInit(
                    id=f"{c.address}.complete-init", host=c.host,
                    title=f"Complete the interrupted kubeadm init on {c.host}", reason=c.reason,
                    address=c.address, action=Action.UPDATE,
                    phases=c.detail.phases), list(infra)))
        network = self.changes.get(NETWORK)
        if network is not None and network.op is not Op.NOOP:
            from hactl.diff import network_plugin_text
            from hactl.render.cni import manifest_digest, network_objects

            plugin = network_plugin_text(self.cluster)
            self.network = self.g.add(kinds.InstallPodNetwork(
                id="network.install", host=via, title=f"Install the pod network ({plugin}) via {via}",
                reason=network.reason, address=network.address, action=network.op,
                plugin=plugin, digest=manifest_digest(network_objects(self.cluster))),
                list(ready) or list(infra))
        # A token and a certificate key need a working control plane: after an init that is
        # being completed, never alongside it (they would also write the same kubeadm config).
        after_init: list[Step | None] = [*infra, *ready]
        token = self.changes.get(BOOTSTRAP_TOKEN)
        token_step: Step | None = None
        if token is not None and token.op is not Op.NOOP:
            token_step = self.g.add(kinds.CreateJoinToken(
                id=token.address, host=via, title=f"Create a bootstrap token on {via}",
                reason=token.reason, address=token.address), after_init)
            ready.append(token_step)
        inits = list(ready)
        key = self.changes.get(CERTIFICATE_KEY)
        if key is not None and key.op is not Op.NOOP:
            ready.append(self.g.add(kinds.RefreshCertificateKey(
                id=key.address, host=via,
                title=f"Upload control-plane certificates under a fresh key on {via}",
                reason=key.reason, address=key.address), after_init))
        prev: list[Step | None] = list(ready) or list(infra)
        for c in effective:
            if c.addr.component is Component.MASTER and c.addr.aspect is None \
                    and c.intents & {Intent.JOIN, Intent.REJOIN}:
                assert c.host is not None
                again = Intent.REJOIN in c.intents
                prev = self._clear_stale(c, via, prev)
                step = self.g.add(kinds.JoinControlPlane(
                    id=f"{c.address}.join", host=c.host,
                    title=f"{'Reset and re-join' if again else 'Join'} control-plane node {c.host}",
                    reason=c.reason, address=c.address, action=c.op, via=via,
                    reset_first=again, stacked_etcd=self.cluster.etcd.topology == "stacked"), prev)
                prev = [step]  # one at a time (rule 6)
        for c in effective:
            if c.addr.aspect is Aspect.KUBELET:
                assert c.host is not None
                self.g.add(kinds.EnableKubelet(
                    id=c.address, host=c.host, title=f"Enable and start kubelet on {c.host}",
                    reason=c.reason, address=c.address, action=c.op))
        base = inits or list(infra)  # workers need the token, not the certificate key
        worker_joins: list[Step | None] = []
        for c in effective:
            if c.addr.component is Component.WORKER and c.addr.aspect is None \
                    and c.op is not Op.DELETE:
                assert c.host is not None
                again = Intent.REJOIN in c.intents
                worker_joins.append(self.g.add(kinds.JoinWorker(
                    id=f"{c.address}.join", host=c.host,
                    title=f"{'Reset and re-join' if again else 'Join'} worker node {c.host}",
                    reason=c.reason, address=c.address, action=c.op, via=via,
                    reset_first=again), self._clear_stale(c, via, base)))
        self._removals(via, [*prev, *self.lbs], [*prev, *worker_joins])

    def _clear_stale(self, c: Change, via: str, after: list[Step | None]) -> list[Step | None]:
        """A re-imaged host's stale etcd member and Node (``_stale`` in the diff) go before its
        join: the member through another master, then the Node."""
        if not c.intents & {Intent.REMOVE_STACKED, Intent.DELETE_NODE}:
            return after
        assert c.host is not None
        if Intent.REMOVE_STACKED in c.intents:
            after = [self._remove_stacked(c, c.host, via, after)]
        if Intent.DELETE_NODE in c.intents:
            after = [self.g.add(kinds.DeleteNode(
                id=f"{c.address}.delete-node", host=via, title=f"Delete the stale Node {c.host}",
                reason=f"{c.host} is re-imaged: its old Node goes before it joins again",
                address=c.address, node=c.host), after)]
        return after

    def _remove_stacked(self, c: Change, name: str, via: str, after: list[Step | None]) -> Step:
        view = self.observed.views(self.cluster).api
        members = (view.stacked_members or ()) if view is not None else ()
        member = next((m for m in members if m.id == c.detail.member_id), None)
        return self.g.add(kinds.RemoveStackedMember(
            id=f"{c.address}.remove-member", host=via,
            title=f"Remove the etcd member of {name} through {via}",
            reason="kubeadm's stacked etcd lists a member for it "
            f"({c.detail.member_id}); removed through another master, quorum checked",
            address=c.address, member=name, member_id=c.detail.member_id,
            peer_url=",".join(member.peer_urls) if member is not None else ""), after)

    def _removals(self, via: str, masters_after: list[Step | None],
                  workers_after: list[Step | None]) -> None:
        """Departing hosts (``_departing`` in the diff), after every join of this plan: masters
        one at a time, after the load balancers dropped them (drain → stacked member → reset →
        delete Node); workers in parallel (drain → reset → delete Node). The reset stops the
        kubelet before its Node is deleted (a running kubelet would register it again)."""
        leaving = [c for c in self.changes.effective() if c.op is Op.DELETE and c.addr.aspect is None
                   and c.addr.component in (Component.MASTER, Component.WORKER)]
        prev = masters_after
        for c in leaving:
            assert c.host is not None
            master = c.addr.component is Component.MASTER
            why = f"{c.host} leaves the cluster (not in the spec's {'masters' if master else 'workers'})"
            chain: list[Step | None] = prev if master else workers_after
            if Intent.DRAIN in c.intents:
                chain = [self.g.add(kinds.DrainNode(
                    id=f"{c.address}.drain", host=via, title=f"Cordon and drain {c.host}",
                    reason=why, address=c.address, node=c.host,
                    drain_timeout=float(self.cluster.apply.drain_timeout)), chain)]
            if Intent.REMOVE_STACKED in c.intents:
                chain = [self._remove_stacked(c, c.host, via, chain)]
            if Intent.RESET in c.intents:
                chain = [self.g.add(kinds.ResetNode(
                    id=f"{c.address}.reset", host=c.host,
                    title=f"Reset {c.host} (kubeadm reset -f) and disable its kubelet",
                    reason=why, address=c.address, node=c.host, control_plane=master,
                    skip_etcd_member=Intent.REMOVE_STACKED in c.intents,
                    external_etcd=master and self.cluster.etcd.topology == "external"), chain)]
            if Intent.DELETE_NODE in c.intents:
                chain = [self.g.add(kinds.DeleteNode(
                    id=f"{c.address}.delete-node", host=via, title=f"Delete the Node {c.host}",
                    reason=why, address=c.address, node=c.host), chain)]
            if master:
                prev = chain  # one master at a time


_REMOVAL_RANK = 3


def _chain_rank(c: Change) -> int:
    """Order of the etcd chain: replacements, repairs (start, promote), additions, removals,
    then restarts of running members (each on the membership the others left, rule 1)."""
    if c.op is Op.UPDATE:
        restarts = c.detail.running and RESTARTS & c.intents
        return 4 if restarts else 1
    return {Op.REPLACE: 0, Op.CREATE: 2, Op.DELETE: 3}.get(c.op, 5)
