"""The plan contract of every step kind: what the plan prints for a step (``Step.commands()``)
announces every command its ``run()`` executes (issue 12 §2).

For every kind in ``hactl.plan.steps.MODULES`` the cases below build a step, run it against
recording fake hosts that answer like healthy ones (:class:`World`), and hold each executed
command (argv, sh script or file written) to the step's plan lines with
:func:`hactl.plan.commands.announces`: the same rendering (:func:`~hactl.plan.commands.shown`,
:func:`~hactl.plan.commands.shown_put`), run-time values standing for the plan's ``<…>``
placeholders. A kind without a case fails :func:`test_every_step_kind_has_a_case`.

What a NEW step kind needs to pass (the failure message says the same):
  1. ``commands()`` built from the builders ``run()`` uses (``hactl.plan.commands`` and the
     ``shown_*`` helpers of ``etcd_ops`` / ``join_ops``), each rendered with ``cmd.shown(argv,
     note)`` or ``cmd.shown_put(path, mode, note)``; a value known only at run time is a
     ``cmd.placeholder("…")``; a note goes after ``"  # "``, never inside the command text.
  2. One or more :class:`Case` entries in :data:`CASES` under its kind: the cluster, the step,
     and the :class:`World` the fake hosts answer from (healthy hosts; adjust what its run()
     reads, e.g. ``World.present`` for ``test -e``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from stepctx import Ctx

from hactl import hostlayout
from hactl.diff import client_url, peer_url
from hactl.plan import commands as cmd
from hactl.plan import desired, remote
from hactl.plan import steps as step_kinds
from hactl.plan.step import Step
from hactl.render import etcd_pki, pki
from hactl.spec.load import load_file
from hactl.spec.models import Cluster
from hactl.spec.prepare import PrepareSettings
from hactl.transport.base import Result
from hactl.transport.fake import Call, FakeTransport

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "abcdef.0123456789abcdef"
KEY = "e" * 64
LAB = load_file(str(ROOT / "specs" / "lab.yaml")).cluster
STACKED = load_file(str(ROOT / "specs" / "stacked.yaml")).cluster
CA = etcd_pki.make_etcd_ca(key_type="ecdsa")


# -- the fake hosts ---------------------------------------------------------------------------


@dataclass
class RecordingTransport(FakeTransport):
    """A FakeTransport that also keeps every file written, in order (path, mode)."""

    puts: list[tuple[str, int]] = field(default_factory=list)

    async def put(self, path: str, data: bytes, mode: int = 0o644) -> None:
        self.puts.append((path, mode))
        await super().put(path, data, mode)


@dataclass
class RecordingCtx(Ctx):
    world: World | None = None

    def transport(self, host: str) -> RecordingTransport:
        if host not in self.fakes:
            fake = RecordingTransport(host)
            assert self.world is not None
            world = self.world
            fake.on(lambda _wire: True, respond=lambda call: world.answer(host, call))
            self.fakes[host] = fake
        found = self.fakes[host]
        assert isinstance(found, RecordingTransport)
        return found

    async def check_cluster(self, *, settle: float) -> Any:
        """What Verify asks of the apply engine's context: here a healthy report."""
        return _HealthyReport()


class _HealthyReport:
    healthy = True

    def verdict_lines(self) -> list[str]:
        return ["healthy"]


def _member(mid: int, name: str, peer: str, client: str, *, learner: bool = False,
            started: bool = True) -> dict[str, Any]:
    return {"ID": mid, "name": name if started else "", "peerURLs": [peer],
            "clientURLs": [client] if started else [], **({"isLearner": True} if learner else {})}


@dataclass
class World:
    """Healthy hosts: etcd answers with a member list that changes as the steps change it,
    every endpoint asked is healthy, services are active, the API answers ``ok``."""

    cluster: Cluster
    members: list[dict[str, Any]] = field(default_factory=list)
    present: dict[str, set[str]] = field(default_factory=dict)
    """Host → paths ``test -e`` finds there."""
    nodes: set[str] = field(default_factory=set)
    """Registered Nodes."""
    haproxy_sha: str | None = None
    haproxy_active: bool = True
    haproxy_loaded: bool = True
    data_dir_member: set[str] = field(default_factory=set)
    """Hosts whose etcd data dir holds member data."""
    unlisted: set[str] = field(default_factory=set)
    """Spec members not in the member list (yet)."""
    learners: set[str] = field(default_factory=set)
    unstarted: set[str] = field(default_factory=set)
    extra_members: list[dict[str, Any]] = field(default_factory=list)
    kubelet_off: set[str] = field(default_factory=set)
    """Hosts whose kubelet is stopped and disabled."""
    bare: set[str] = field(default_factory=set)
    """Hosts not prepared for kubeadm: no module loaded, swap on, no containerd package."""
    cordoned: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        if not self.members:
            for i, h in enumerate(self.cluster.etcd_members, 1):
                if h.name in self.unlisted:
                    continue
                self.members.append(_member(i, h.name, peer_url(self.cluster, h), client_url(self.cluster, h),
                                            learner=h.name in self.learners, started=h.name not in self.unstarted))
            self.members += self.extra_members

    # etcdctl
    def _etcdctl(self, host: str, argv: tuple[str, ...]) -> Result:
        endpoints = next(a for a in argv if a.startswith("--endpoints=")).split("=", 1)[1].split(",")
        sub = list(argv[argv.index("json") + 1:])
        if sub[:2] == ["member", "list"]:
            return Result(0, json.dumps({"header": {"cluster_id": 1}, "members": self.members}), "")
        if sub[:2] == ["member", "add"]:
            peer = sub[3].split("=", 1)[1]
            self.members.append({"ID": 900 + len(self.members), "peerURLs": [peer],
                                 **({"isLearner": True} if "--learner" in sub else {})})
            return Result(0, "{}", "")
        if sub[:2] in (["member", "promote"], ["member", "remove"], ["member", "update"]):
            target = next((m for m in self.members if format(m["ID"], "x") == sub[2]), None)
            if target is None:
                return Result(1, "", "Error: etcdserver: member not found")
            if sub[1] == "promote":
                target.pop("isLearner", None)
            elif sub[1] == "remove":
                self.members.remove(target)
            else:
                target["peerURLs"] = [sub[3].split("=", 1)[1]]
            return Result(0, "{}", "")
        if sub[:2] == ["endpoint", "health"]:
            return Result(0, json.dumps([{"endpoint": e, "health": True, "took": "1ms"} for e in endpoints]), "")
        if sub[:2] == ["endpoint", "status"]:  # the first member leads
            leader = self.members[0]["ID"] if self.members else 0
            return Result(0, json.dumps([{"Endpoint": e, "Status": {"leader": leader}} for e in endpoints]), "")
        if sub[:1] == ["move-leader"]:
            self.members.sort(key=lambda m: format(m["ID"], "x") != sub[1])
            return Result(0, "", "")
        if sub[:1] == ["get"]:
            return Result(0, json.dumps({"header": {"revision": 1}}), "")
        raise AssertionError(f"{host}: etcdctl {sub} not scripted")

    def _started(self, host: str) -> None:
        """``systemctl (re)start etcd`` on ``host``: its never-started member starts."""
        spec = self.cluster.host(host)
        for m in self.members:
            if peer_url(self.cluster, spec) in m["peerURLs"] and not m.get("name"):
                m["name"] = host
                m["clientURLs"] = [client_url(self.cluster, spec)]

    def answer(self, host: str, call: Call) -> Result:
        if call.is_script and "admin.sock" in call.wire and "set server" in call.wire:
            return Result(0, "\n", "")  # haproxy's runtime API: an empty line when done
        if call.is_script and "show stat" in call.wire:  # every master UP
            rows = "".join(f"k8s-api-backend,{m.name},UP,L7OK\n" for m in self.cluster.masters)
            return Result(0, "# pxname,svname,status,check_status\n" + rows, "")
        if call.is_script:  # the probe's haproxy.files section, run by ConfigureHAProxy
            loaded = "loaded_sha256=" + ("x" * 64)
            return Result(0, f"config_sha256={self.haproxy_sha}  -\n{loaded}\nconfig_mtime=1000\n"
                          f"started={'90000' if self.haproxy_loaded else '100'}\nnow=2000\nuptime=1500\n", "")
        argv = call.argv
        tool = argv[0]
        if tool == "etcdctl":
            return self._etcdctl(host, argv)
        if tool == "systemctl":
            if argv[1:] == ("disable", "--now", "kubelet"):
                self.kubelet_off.add(host)
            if argv[1] in ("is-active", "is-enabled") and argv[-1] == "kubelet" and host in self.kubelet_off:
                return Result(3 if argv[1] == "is-active" else 1,
                              "inactive\n" if argv[1] == "is-active" else "disabled\n", "")
            if argv[1] == "is-enabled":
                return Result(0, "enabled\n", "")
            if argv[1] == "is-active":
                unit = argv[-1]
                if unit == "haproxy" and not self.haproxy_active:
                    return Result(3, "inactive\n", "")
                return Result(0, "active\n", "")
            if argv[1:] == ("enable", "--now", "haproxy"):
                self.haproxy_active = True
            if argv[1] in ("start", "restart") and argv[-1] == "etcd":
                self._started(host)
            return Result(0, "", "")
        if tool == "test" and argv[1] == "-d":  # a kernel module loaded?
            return Result(1 if host in self.bare else 0, "", "")
        if tool == "test":
            paths = [argv[i + 1] for i, a in enumerate(argv) if a == "-e"]
            return Result(0 if all(p in self.present.get(host, set()) for p in paths) else 1, "", "")
        if tool == "sh" and argv[1] == "-c":
            if argv[2] == cmd.kubernetes_leftovers()[2]:  # kubelet.conf and the manifests
                return Result(0, "".join(f"{p}\n" for p in sorted(self.present.get(host, set()))
                                         if p == argv[4] or p.startswith(argv[5] + "/")), "")
            if argv[2] == cmd.data_dir_members("x")[2]:
                return Result(0, f"{argv[4].rstrip('/')}/member\n" if host in self.data_dir_member else "", "")
            if argv[2] == cmd.prepare_data_dir("x", "y")[2]:  # its entries moved aside
                self.data_dir_member.discard(host)
            return Result(0, "", "")  # prepare_data_dir
        if tool == "sha256sum":
            return Result(0, f"{self.haproxy_sha}  {argv[1]}\n", "") if self.haproxy_sha else Result(1, "", "no file")
        if tool == "cat":
            if argv[1:] == (hostlayout.ETCD_CA_CERT, hostlayout.ETCD_CA_KEY):
                return Result(0, (CA.cert_pem() + CA.key_pem()).decode(), "")
            if argv[1:] == (hostlayout.K8S_CA_CERT,):
                return Result(0, CA.cert_pem().decode(), "")
            if argv[1:] == (hostlayout.APISERVER_MANIFEST,):
                return Result(0, APISERVER_POD, "")
            if argv[1:] == ("/proc/swaps",):
                swap = "/swapfile file 1048572 0 -2\n" if host in self.bare else ""
                return Result(0, "Filename\tType\tSize\tUsed\tPriority\n" + swap, "")
            if argv[1:] == (hostlayout.FSTAB,):
                return Result(0, "UUID=1 / ext4 defaults 0 1\n"
                              + ("/swapfile none swap sw 0 0\n" if host in self.bare else ""), "")
            raise AssertionError(f"{host}: cat {argv[1:]} not scripted")
        if tool == "kubeadm":
            return self._kubeadm(host, argv)
        if tool == "kubectl":
            return self._kubectl(host, argv)
        if tool in ("install", "mv", "rm", "cp", "haproxy", "env", "apt-mark", "sysctl", "modprobe",
                    "swapoff"):
            return Result(0, "", "")
        if tool == "dpkg-query":
            return Result(0, "unknown ok not-installed" if host in self.bare else "install ok installed", "")
        if tool == "ctr":
            return Result(0, "Client:\n  Version:  1.6.20\nServer:\n  Version:  1.6.20\n", "")
        raise AssertionError(f"{host}: {argv} not scripted")

    def _kubeadm(self, host: str, argv: tuple[str, ...]) -> Result:
        if argv[1:3] == ("token", "create"):
            return Result(0, f"{TOKEN}\n", "")
        if argv[1:4] == ("init", "phase", "upload-certs"):
            return Result(0, f"[upload-certs] Using certificate key:\n{KEY}\n", "")
        if argv[1] == "init" and argv[2] != "phase":
            self.present.setdefault(host, set()).add(hostlayout.APISERVER_MANIFEST)
            self.nodes.add(host)
            return Result(0, f"kubeadm join lb:6443 --token {TOKEN} \\\n --discovery-token-ca-cert-hash "
                          f"{pki.spki_sha256(CA.cert)}\n", "")
        if argv[1] == "join":
            self.nodes.add(host)
            return Result(0, "This node has joined the cluster\n", "")
        if argv[1] == "reset":
            spec = self.cluster.host(host)
            if "--skip-phases=remove-etcd-member" not in argv:
                self.members = [m for m in self.members if m.get("name") != host
                                and peer_url(self.cluster, spec) not in m["peerURLs"]]
            self.present[host] = {p for p in self.present.get(host, set())
                                  if p != hostlayout.KUBELET_CONF and not p.startswith(hostlayout.K8S_MANIFESTS)}
            return Result(0, "", "")
        return Result(0, "", "")  # init phase …

    def _kubectl(self, host: str, argv: tuple[str, ...]) -> Result:
        args = list(argv[argv.index("kubectl") + 1:])
        if "/readyz" in args:
            return Result(0, "ok", "")
        if "cordon" in args or "drain" in args:
            name = args[args.index("cordon" if "cordon" in args else "drain") + 1]
            if name not in self.nodes:
                return Result(1, "", f'Error from server (NotFound): nodes "{name}" not found')
            self.cordoned.add(name)
            return Result(0, f"node/{name} cordoned\n" + (f"node/{name} drained\n" if "drain" in args else ""), "")
        if "delete" in args and "node" in args:
            self.nodes.discard(args[args.index("node") + 1])
            return Result(0, "", "")
        if "node" in args:
            name = args[args.index("node") + 1]
            if name not in self.nodes:
                return Result(1, "", f'Error from server (NotFound): nodes "{name}" not found')
            labels = {"node-role.kubernetes.io/control-plane": ""}
            return Result(0, json.dumps({"metadata": {"name": name, "labels": labels},
                                         "spec": {"unschedulable": True} if name in self.cordoned else {}}), "")
        if "nodes" in args:
            return Result(0, json.dumps({"items": [
                {"metadata": {"name": n}, "status": {"conditions": [{"type": "Ready", "status": "True"}]}}
                for n in sorted(self.nodes)]}), "")
        if "deployment" in args:
            return Result(0, json.dumps({"metadata": {"name": "coredns"}, "spec": {"replicas": 2},
                                         "status": {"conditions": [{"type": "Available", "status": "True"}]}}), "")
        if "apply" in args:
            return Result(0, "namespace/kube-flannel serverside-applied\n", "")
        if "pod" in args:
            return Result(0, json.dumps(_mirror_pod(self.cluster)), "")
        if "configmap" in args:
            return Result(0, json.dumps(_kubeadm_config_map(self.cluster)), "")
        if "replace" in args:
            return Result(0, "configmap/kubeadm-config replaced", "")
        raise AssertionError(f"{host}: kubectl {args} not scripted")


def _servers(cluster: Cluster) -> str:
    return ",".join(client_url(cluster, h) for h in cluster.etcd_members)


APISERVER_POD = """apiVersion: v1
kind: Pod
metadata:
  name: kube-apiserver
  namespace: kube-system
spec:
  containers:
  - command:
    - kube-apiserver
    - --etcd-servers=https://198.18.0.21:2379
    name: kube-apiserver
"""


def _mirror_pod(cluster: Cluster) -> dict[str, Any]:
    return {"metadata": {"name": "kube-apiserver-master01"},
            "spec": {"containers": [{"name": "kube-apiserver",
                                     "command": ["kube-apiserver", f"--etcd-servers={_servers(cluster)}"]}]},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]}}


def _kubeadm_config_map(cluster: Cluster) -> dict[str, Any]:
    config = ("apiVersion: kubeadm.k8s.io/v1beta3\nkind: ClusterConfiguration\netcd:\n  external:\n"
              "    endpoints:\n    - https://198.18.0.21:2379\n")
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "kubeadm-config", "namespace": "kube-system"},
            "data": {"ClusterConfiguration": config}}


# -- the cases --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    name: str
    cluster: Cluster
    step: Step
    world: Callable[[Cluster], World] = World
    xfail: str = ""
    """Why this kind's commands() and run() disagree still (strict: a fix makes it pass and
    then fails the test until the mark goes)."""


def make(cls_name: str, host: str | None, **fields: Any) -> Step:
    cls = getattr(step_kinds, cls_name)
    step: Step = cls(id=f"{cls.kind}[{host}]", host=host, title="t", reason="r", **fields)
    return step


def present(**paths: tuple[str, ...]) -> dict[str, set[str]]:
    return {host: set(found) for host, found in paths.items()}


ETCD_FILES = (hostlayout.ETCD_CA_CERT, hostlayout.ETCD_CA_KEY)
MASTERS_UP = {"master01"}
PREPARED = LAB.model_copy(update={"prepare": PrepareSettings.model_validate(
    {"packages": {"keyFile": str(ROOT / "tests" / "facts_data" / "prepare-release.key")}})})
EXTRA = _member(4, "etcd04", "https://198.18.0.24:2380", "https://198.18.0.24:2379")

CASES: dict[str, list[Case]] = {
    "add_etcd_member": [
        Case("a member not yet listed", LAB, make("AddEtcdMember", "etcd01", member="etcd03"),
             lambda c: World(c, unlisted={"etcd03"})),
    ],
    "bootstrap_etcd_member": [
        Case("empty data dir", LAB, make("BootstrapEtcdMember", "etcd01")),
        Case("entries to move aside", LAB, make("BootstrapEtcdMember", "etcd02", wipe_data_dir=True)),
    ],
    "complete_init": [
        Case("from the control-plane phase on", LAB, make(
            "CompleteInit", "master01", phases=("control-plane", "kubelet-start", "upload-config",
                                                "mark-control-plane", "bootstrap-token", "addon")),
             lambda c: World(c, present=present(master01=(hostlayout.APISERVER_MANIFEST,)))),
    ],
    "configure_haproxy": [
        Case("file changed, haproxy running: reload", LAB, make("ConfigureHAProxy", "lb01"),
             lambda c: World(c, haproxy_sha="0" * 64)),
        Case("haproxy not running: enable --now", LAB, make("ConfigureHAProxy", "lb01"),
             lambda c: World(c, haproxy_active=False)),
        Case("file right but never loaded: reload", LAB, make("ConfigureHAProxy", "lb01"),
             lambda c: World(c, haproxy_sha=_haproxy_sha(c), haproxy_loaded=False)),
    ],
    "create_join_token": [
        Case("token and CA hash", LAB, make("CreateJoinToken", "master01")),
    ],
    "enable_kubelet": [
        Case("enable --now", LAB, make("EnableKubelet", "worker01")),
    ],
    "generate_etcd_ca": [
        Case("no member holds a CA", LAB, make("GenerateEtcdCA", "etcd01")),
    ],
    "init_control_plane": [
        Case("external etcd", LAB, make("InitControlPlane", "master01")),
        Case("stacked etcd", STACKED, make("InitControlPlane", "master01")),
    ],
    "install_etcd_certs": [
        Case("CA on another member", LAB, make("InstallEtcdCerts", "etcd03", ca_host="etcd01"),
             lambda c: World(c, present=present(etcd01=ETCD_FILES))),
    ],
    "install_etcd_client_certs": [
        Case("first master", LAB, make("InstallEtcdClientCerts", "master01", ca_host="etcd01"),
             lambda c: World(c, present=present(etcd01=ETCD_FILES))),
    ],
    "join_control_plane": [
        Case("external etcd", LAB, make("JoinControlPlane", "master02", via="master01"),
             lambda c: World(c, nodes=set(MASTERS_UP))),
        Case("stacked etcd", STACKED, make("JoinControlPlane", "master02", via="master01", stacked_etcd=True),
             lambda c: World(c, nodes=set(MASTERS_UP), unlisted={"master02", "master03"})),
        Case("stacked reset of a failed join", STACKED, make(
            "JoinControlPlane", "master02", via="master01", reset_first=True, stacked_etcd=True),
             lambda c: World(c, nodes=set(MASTERS_UP), unlisted={"master03"},
                             present=present(master02=(hostlayout.ETCD_MANIFEST,)))),
    ],
    "join_worker": [
        Case("first join", LAB, make("JoinWorker", "worker01", via="master01"),
             lambda c: World(c, nodes=set(MASTERS_UP))),
        Case("reset of a failed join", LAB, make("JoinWorker", "worker01", via="master01", reset_first=True),
             lambda c: World(c, nodes=set(MASTERS_UP))),
    ],
    "promote_etcd_member": [
        Case("a learner", LAB, make("PromoteEtcdMember", "etcd01", member="etcd03"),
             lambda c: World(c, learners={"etcd03"})),
    ],
    "reconfigure_etcd_member": [
        Case("rewrite and restart", LAB, make("ReconfigureEtcdMember", "etcd02", via="etcd01", rewrite=True,
                                              restart=True)),
        Case("restart in a client-port chain", LAB, make(
            "ReconfigureEtcdMember", "etcd02", via="etcd01", restart=True, via_urls=("https://198.18.0.21:2389",))),
        Case("start a stopped learner", LAB, make("ReconfigureEtcdMember", "etcd03", via="etcd01", learner=True)),
        Case("start a stopped voter", LAB, make("ReconfigureEtcdMember", "etcd03", via="etcd01")),
    ],
    "refresh_certificate_key": [
        Case("upload-certs", LAB, make("RefreshCertificateKey", "master01")),
    ],
    "remove_etcd_member": [
        Case("a member outside the spec", LAB, make("RemoveEtcdMember", "etcd01", member="etcd04", member_id="4"),
             lambda c: World(c, extra_members=[EXTRA])),
    ],
    "start_etcd_member": [
        Case("an added member", LAB, make("StartEtcdMember", "etcd03", via="etcd01"),
             lambda c: World(c, unstarted={"etcd03"}, learners={"etcd03"})),
        Case("stale member data of an earlier identity", LAB, make(
            "StartEtcdMember", "etcd03", via="etcd01", stale_data=True),
             lambda c: World(c, unstarted={"etcd03"}, learners={"etcd03"}, data_dir_member={"etcd03"})),
    ],
    "update_etcd_member": [
        Case("peer URL to the spec's", LAB, make("UpdateEtcdMember", "etcd02", member="etcd01"),
             lambda c: World(c, members=[_member(1, "etcd01", "https://198.18.0.21:2390",
                                                 "https://198.18.0.21:2379"),
                                         *World(c).members[1:]])),
    ],
    "prepare_host": [
        Case("a bare host: every part", PREPARED, make(
            "PrepareHost", "worker01", parts=("kernel", "swap", "runtime", "packages"),
            version="1.30.4-1.1", keyring=hostlayout.APT_KEYRING_ASC),
             lambda c: World(c, bare={"worker01"})),
        Case("a prepared host (a rerun)", PREPARED, make(
            "PrepareHost", "worker01", parts=("kernel", "swap", "runtime", "packages"),
            version="1.30.4-1.1", keyring=hostlayout.APT_KEYRING_ASC)),
    ],
    "verify": [
        Case("the check through the run", LAB, make("Verify", None, via="master01")),
    ],
    "wait_etcd_healthy": [
        Case("a formed cluster", LAB, make("WaitEtcdHealthy", "etcd01")),
    ],
    "rewrite_etcd_servers": [
        Case("the API server's --etcd-servers", LAB, make(
            "RewriteEtcdServers", "master01", servers=tuple(client_url(LAB, h) for h in LAB.etcd_members),
            via="etcd01", address_url="https://198.18.0.11:6443")),
    ],
    "drain_node": [
        Case("a worker that leaves", LAB, make("DrainNode", "master01", node="worker01", drain_timeout=120.0),
             lambda c: World(c, nodes={"master01", "worker01"})),
        Case("a Node already gone", LAB, make("DrainNode", "master01", node="worker01"),
             lambda c: World(c, nodes={"master01"})),
    ],
    "reset_node": [
        Case("a worker that leaves", LAB, make("ResetNode", "worker01", node="worker01", control_plane=False,
                                               skip_etcd_member=False),
             lambda c: World(c, present=present(worker01=(hostlayout.KUBELET_CONF,)))),
        Case("a stacked master whose member hactl removed", STACKED, make(
            "ResetNode", "master03", node="master03", control_plane=True, skip_etcd_member=True),
             lambda c: World(c, data_dir_member={"master03"}, present=present(
                 master03=(hostlayout.KUBELET_CONF, hostlayout.ETCD_MANIFEST, hostlayout.APISERVER_MANIFEST)))),
        Case("a host already reset", LAB, make("ResetNode", "worker01", node="worker01", control_plane=False,
                                               skip_etcd_member=False)),
    ],
    "delete_node": [
        Case("a registered Node", LAB, make("DeleteNode", "master01", node="worker01"),
             lambda c: World(c, nodes={"master01", "worker01"})),
    ],
    "remove_stacked_member": [
        Case("a master outside the spec", STACKED, make(
            "RemoveStackedMember", "master01", member="master04", member_id="4",
            peer_url="https://198.18.0.14:2380"),
             lambda c: World(c, extra_members=[_member(4, "master04", "https://198.18.0.14:2380",
                                                       "https://198.18.0.14:2379")])),
        Case("already removed", STACKED, make(
            "RemoveStackedMember", "master01", member="master04", member_id="4",
            peer_url="https://198.18.0.14:2380")),
    ],
    "install_pod_network": [
        Case("flannel after init", LAB, make("InstallPodNetwork", "master01", plugin="flannel v0.25.7")),
    ],
    "wait_pod_network": [
        Case("every Node Ready, CoreDNS available", LAB, make("WaitPodNetwork", "master01"),
             lambda c: World(c, nodes={"master01", "master02", "worker01"})),
    ],
    "update_kubeadm_config": [
        Case("kubeadm-config's etcd endpoints", LAB, make(
            "UpdateKubeadmConfig", "master01", endpoints=tuple(client_url(LAB, h) for h in LAB.etcd_members))),
    ],
}


def _haproxy_sha(cluster: Cluster) -> str:
    import hashlib

    return hashlib.sha256(desired.haproxy_cfg(cluster).encode()).hexdigest()


NEEDS = ("give it commands() built from the same builders its run() uses (cmd.shown(argv, note), "
         "cmd.shown_put(path, mode, note), run-time values as cmd.placeholder(...)) and add a Case "
         "for it to CASES in tests/unit/test_step_contract.py (the step, and the World its fake "
         "hosts answer from)")


def _kinds() -> list[str]:
    return sorted(step_kinds.MODULES.values())


def _cases() -> list[Any]:
    out = []
    for kind in _kinds():
        for case in CASES.get(kind, []):
            marks = [pytest.mark.xfail(strict=True, reason=case.xfail)] if case.xfail else []
            out.append(pytest.param(case, id=f"{kind}: {case.name}", marks=marks))
    return out


@pytest.fixture(autouse=True)
def _no_waiting(monkeypatch: pytest.MonkeyPatch) -> None:
    async def no_sleep(_seconds: float) -> None:
        return None

    monkeypatch.setattr(remote.asyncio, "sleep", no_sleep)


@pytest.mark.parametrize("kind", _kinds())
def test_every_step_kind_has_a_case(kind: str) -> None:
    assert CASES.get(kind), f"step kind {kind!r} has no plan-contract case: {NEEDS}"


async def run_case(case: Case) -> tuple[list[str], list[str]]:
    """Run the case's step; (executed commands as the plan would show them, its plan lines)."""
    ctx = await _run(case)
    executed = []
    for fake in ctx.fakes.values():
        assert isinstance(fake, RecordingTransport)
        executed += [cmd.shown(c.wire) if c.is_script else cmd.shown(c.argv) for c in fake.calls]
        executed += [cmd.shown_put(path, mode) for path, mode in fake.puts]
    return executed, case.step.commands()


async def _run(case: Case) -> RecordingCtx:
    ctx = RecordingCtx(case.cluster, world=case.world(case.cluster))
    await case.step.run(ctx)
    return ctx


def unannounced(executed: list[str], lines: list[str]) -> list[str]:
    return sorted({e for e in executed if not any(cmd.announces(line, e) for line in lines)})


@pytest.mark.parametrize("case", _cases())
async def test_the_plan_announces_every_command_run_executes(case: Case) -> None:
    assert type(case.step).kind in step_kinds.MODULES.values()
    executed, lines = await run_case(case)
    missing = unannounced(executed, lines)
    assert not missing, (
        f"{case.step.kind} ({case.name}): run() executed commands its commands() does not announce:\n  "
        + "\n  ".join(missing) + "\nits plan lines:\n  " + "\n  ".join(lines) + f"\n({NEEDS})")


SECRET_KINDS = ("init_control_plane", "join_control_plane", "join_worker", "create_join_token",
                "refresh_certificate_key")
"""The kinds that hold a bootstrap token or a certificate key while they run."""


@pytest.mark.parametrize("case", [c for c in _cases() if c.values[0].step.kind in SECRET_KINDS])
async def test_secrets_a_step_holds_never_reach_a_command_line(case: Case) -> None:
    """The token and certificate key the fake hosts hand out travel in 0600 files only: not in
    what any host was told to run (the wire, secrets revealed), nor in the plan lines."""
    ctx = await _run(case)
    wires = [c.wire for fake in ctx.fakes.values() for c in fake.calls]
    assert wires and not any(TOKEN in w or KEY in w for w in wires)
    assert not any(TOKEN in line or KEY in line for line in case.step.commands())


# -- the rule itself can fail ------------------------------------------------------------------


def test_announces_fills_placeholders_and_ignores_notes_only() -> None:
    line = cmd.shown(cmd.member_promote(cmd.placeholder("client URL of etcd01"), cmd.placeholder("id")), "retried")
    assert cmd.announces(line, cmd.shown(cmd.member_promote("https://198.18.0.21:2379", "8e9e05c52164694d")))
    assert not cmd.announces(line, cmd.shown(cmd.member_remove("https://198.18.0.21:2379", "8e9e05c52164694d")))
    assert not cmd.announces(line, cmd.shown(cmd.etcdctl(["https://198.18.0.21:2379"], "member", "promote")))
    assert not cmd.announces(line, cmd.shown(cmd.member_promote("https://198.18.0.21:2379", "a b")))
    put = cmd.shown_put(hostlayout.ETCD_CA_KEY, 0o600, "the key")
    assert cmd.announces(put, cmd.shown_put(hostlayout.ETCD_CA_KEY, 0o600))
    assert not cmd.announces(put, cmd.shown_put(hostlayout.ETCD_CA_KEY, 0o644))
    assert not cmd.announces("systemctl enable etcd", "systemctl enable --now etcd")


async def test_a_command_the_plan_does_not_show_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    case = CASES["bootstrap_etcd_member"][0]
    executed, lines = await run_case(case)
    dropped = [line for line in lines if "daemon-reload" not in line]
    assert unannounced(executed, dropped) == ["systemctl daemon-reload"]
    assert unannounced(executed, lines) == []
