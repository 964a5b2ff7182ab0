"""The plan's vocabulary: what the diff, the refusals, the planner and the plan output share.

An :class:`Address` names what a change is about: a :class:`Component`, the host it is on (if
any) and an :class:`Aspect` of it (if any). Its ``str()`` is the address the plan prints and
saves (``etcd.member[etcd02]``, ``lb[lb01].haproxy_cfg``, ``cluster.bootstrap-token``);
:meth:`Address.parse` reads one back (a saved plan) and is the only code that splits an address
string. The planner and the refusals decide on the fields, never on the string.

Pure: imports nothing of hactl.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Component(enum.StrEnum):
    """What a change is about (the part of an address before the host)."""

    PKI_ETCD_CA = "pki.etcd-ca"
    """the etcd CA (kept on the etcd members, never on the operator)"""
    PKI_ETCD = "pki.etcd"
    """a member's CA copy and server/peer certificates"""
    ETCD_MEMBER = "etcd.member"
    """an etcd member"""
    LB = "lb"
    """a load balancer"""
    MASTER = "master"
    """a control-plane node"""
    WORKER = "worker"
    """a worker node"""
    CLUSTER = "cluster"
    """cluster-wide (a join token, the certificate key)"""
    NETWORK = "network"
    """the pod network (the CNI plugin's objects in the API)"""


class Aspect(enum.StrEnum):
    """A part of a component (the part of an address after the host)."""

    HAPROXY_CFG = "haproxy_cfg"
    SERVICE = "service"
    KUBELET = "kubelet"
    BOOTSTRAP_TOKEN = "bootstrap-token"
    CERTIFICATE_KEY = "certificate-key"
    ETCD_SERVERS = "etcd-servers"
    """a master's kube-apiserver ``--etcd-servers`` (its static Pod manifest)"""
    KUBEADM_CONFIG = "kubeadm-config"
    """kubeadm's stored ClusterConfiguration (kube-system/kubeadm-config)"""
    KERNEL = "kernel"
    """host preparation: kernel modules and settings (modules-load.d, sysctl.d)"""
    SWAP = "swap"
    """host preparation: swap off, now and at boot"""
    RUNTIME = "runtime"
    """host preparation: the container runtime (containerd, systemd cgroup driver)"""
    PACKAGES = "packages"
    """host preparation: kubeadm, kubelet and kubectl at the spec's version, held"""


class Action(enum.StrEnum):
    """What a change or a step does: one enum for both (a change's action is its ``op``; a
    step's is ``Step.action``). ``READ`` is a step's only (a wait, a check); ``NOOP`` a
    change's only (what matches the spec, left out of the plan's changes)."""

    CREATE = "create"
    UPDATE = "update"
    DELETE = "delete"
    REPLACE = "replace"
    READ = "read"
    NOOP = "no-op"

    @property
    def symbol(self) -> str:
        """The plan's sign: ``+`` create, ``~`` update, ``-`` delete, ``-/+`` replace."""
        return _SYMBOLS[self]


_SYMBOLS = {Action.CREATE: "+", Action.UPDATE: "~", Action.DELETE: "-", Action.REPLACE: "-/+",
            Action.READ: " ", Action.NOOP: " "}


@dataclass(frozen=True, order=True)
class Address:
    component: Component
    host: str | None = None
    aspect: Aspect | None = None

    def __str__(self) -> str:
        text = self.component.value
        if self.host is not None:
            text += f"[{self.host}]"
        if self.aspect is not None:
            text += f".{self.aspect.value}"
        return text

    @staticmethod
    def parse(text: str) -> Address:
        """The inverse of ``str()`` (reading a saved plan); ValueError when ``text`` is none."""
        for component in sorted(Component, key=lambda c: -len(c.value)):
            if not text.startswith(component.value):
                continue
            rest = text[len(component.value):]
            host: str | None = None
            if rest.startswith("["):
                end = rest.find("]")
                if end <= 1:
                    break
                host, rest = rest[1:end], rest[end + 1:]
            if not rest:
                return Address(component, host)
            if rest.startswith("."):
                try:
                    return Address(component, host, Aspect(rest[1:]))
                except ValueError:
                    break
        raise ValueError(f"{text!r} is not a plan address")


ETCD_CA = Address(Component.PKI_ETCD_CA)
BOOTSTRAP_TOKEN = Address(Component.CLUSTER, aspect=Aspect.BOOTSTRAP_TOKEN)
CERTIFICATE_KEY = Address(Component.CLUSTER, aspect=Aspect.CERTIFICATE_KEY)
KUBEADM_CONFIG = Address(Component.CLUSTER, aspect=Aspect.KUBEADM_CONFIG)
NETWORK = Address(Component.NETWORK)


class Intent(enum.StrEnum):
    """What a change means to do, beyond its action: the planner builds its steps and the
    refusals check their rules from these (a change may carry several: a stopped learner is
    ``{START, PROMOTE}``)."""

    # etcd members
    BOOTSTRAP = "bootstrap"
    """start a member of a new cluster (initial-cluster-state=new), all members together"""
    ADD = "add"
    """add a member to the running cluster as a learner, start it, promote it"""
    START = "start"
    """start the etcd service of a listed member"""
    START_ADDED = "start-added"
    """start a member that was added but never started (initial-cluster-state=existing)"""
    PROMOTE = "promote"
    """promote a learner to a voter"""
    UPDATE_PEER = "update-peer"
    """``etcdctl member update`` the peer URL, then rewrite etcd.env and restart"""
    RECONFIGURE = "reconfigure"
    """rewrite etcd.env (its configuration differs) and restart"""
    RESTART = "restart"
    """restart a member that runs with another configuration than its env file's"""
    FORMED = "formed"
    """the cluster formed: remove hactl's bootstrap-pending marker"""
    REMOVE = "remove"
    """remove a member that is not in the spec"""
    REPLACE = "replace"
    """remove a member and add it back (its data dir is gone or moves)"""
    # Kubernetes nodes
    INIT = "init"
    """``kubeadm init`` on the first master"""
    COMPLETE_INIT = "complete-init"
    """run the phases of an interrupted ``kubeadm init``"""
    JOIN = "join"
    """``kubeadm join`` (control plane or worker)"""
    REJOIN = "rejoin"
    """``kubeadm reset -f``, then join again"""
    WORKER_JOINED = "worker-joined"
    """a master joined as a worker (refused)"""
    DRAIN = "drain"
    """cordon the Node and ``kubectl drain`` it (PodDisruptionBudgets respected)"""
    DELETE_NODE = "delete-node"
    """``kubectl delete node``: a Node the spec no longer names, or a re-imaged host's stale one"""
    RESET = "reset"
    """``kubeadm reset -f`` on a host leaving the cluster (and its kubelet disabled)"""
    REMOVE_STACKED = "remove-stacked"
    """remove a member of kubeadm's stacked etcd through another master"""
    # the pod network
    INSTALL_NETWORK = "install-network"
    """``kubectl apply --server-side`` the pod network's objects, then wait for Ready Nodes and
    CoreDNS"""
    # consumers of the etcd member list (external etcd)
    ETCD_CLIENTS = "etcd-clients"
    """point an API server's ``--etcd-servers`` (or kubeadm-config's
    ``etcd.external.endpoints``) at the client URLs of the spec's etcd members"""


PREPARE = frozenset({Aspect.KERNEL, Aspect.SWAP, Aspect.RUNTIME, Aspect.PACKAGES})
"""The aspects of a master or worker that host preparation (the spec's ``prepare``) changes."""

RESTARTS = frozenset({Intent.RECONFIGURE, Intent.RESTART, Intent.UPDATE_PEER})
"""Intents of an etcd member change that restart a member that may be running."""
FRESH_MEMBER = frozenset({Intent.BOOTSTRAP, Intent.ADD, Intent.REPLACE})
"""Intents that start an etcd member from scratch (a new identity, an empty data dir)."""
