"""Pure command builders: every command a step runs, as an argv tuple, and how a plan shows it.

No I/O and no ``shlex.join`` of what runs here (only the transport joins argv). Secrets are
passed in as :class:`hactl.sensitive.Sensitive` and stay masked everywhere but on the wire.
Paths on the hosts come from :mod:`hactl.hostlayout` (re-exported here under the names the
steps use); each tool's flags come from its one builder in :mod:`hactl.transport.tools`.

A step's :meth:`~hactl.plan.step.Step.commands` (its plan text) is made of the same builder
calls as its ``run()``, rendered with :func:`shown`: values the step learns only at run time
(a member ID, the client URLs a member publishes) are :func:`placeholder` texts ``<…>``, and
:func:`announces` is the one rule for "this executed command is one the plan showed"
(``tests/unit/test_step_contract.py`` holds every step kind to it).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence

from hactl.hostlayout import (
    ADMIN_CONF,
    APISERVER_ETCD_CLIENT_CERT,
    APISERVER_ETCD_CLIENT_KEY,
    ETCD_BOOTSTRAP_MARKER,
    ETCD_CA_CERT,
    ETCD_CA_KEY,
    ETCD_CLIENT_CERT,
    ETCD_CLIENT_KEY,
    ETCD_ENV,
    ETCD_PEER_CERT,
    ETCD_PEER_KEY,
    ETCD_PKI_DIR,
    ETCD_SERVER_CERT,
    ETCD_SERVER_KEY,
    ETCD_UNIT,
    HACTL_RUN,
    HAPROXY_CFG,
    K8S_CA_CERT,
    K8S_ETCD_CA,
    K8S_MANIFESTS,
    K8S_PKI,
    KUBEADM_CONFIG,
    KUBEADM_INIT_CONFIG,
    KUBEADM_JOIN_CONFIG,
    KUBELET_CONF,
)
from hactl.hostlayout import HAPROXY_CFG_NEW as HAPROXY_NEW
from hactl.transport import tools
from hactl.transport.base import Argv, Command

__all__ = [
    "ADMIN_CONF", "APISERVER_ETCD_CLIENT_CERT", "APISERVER_ETCD_CLIENT_KEY",
    "ETCD_BOOTSTRAP_MARKER", "ETCD_CA_CERT", "ETCD_CA_KEY", "ETCD_CLIENT_CERT", "ETCD_CLIENT_KEY",
    "ETCD_ENV", "ETCD_PEER_CERT", "ETCD_PEER_KEY", "ETCD_PKI_DIR", "ETCD_SERVER_CERT",
    "ETCD_SERVER_KEY", "ETCD_UNIT", "HAPROXY_CFG", "HAPROXY_NEW", "K8S_CA_CERT", "K8S_ETCD_CA",
    "K8S_PKI", "KUBEADM_CONFIG", "KUBEADM_INIT_CONFIG", "KUBEADM_JOIN_CONFIG",
]

# -- how a plan shows a command ---------------------------------------------------------------

_PLACEHOLDER = re.compile(r"<[^<>]+>")


def placeholder(what: str) -> str:
    """A value the step learns at run time, as the plan shows it: ``<id of etcd04>``."""
    return f"<{what}>"


def shown(command: Command, note: str = "") -> str:
    """How the plan shows ``command``: its argv joined as a shell would read it (secrets
    masked; an argument holding a :func:`placeholder` is left unquoted so it reads as one),
    then ``  # note``. A ``str`` (an sh script) shows as ``sh -c <script: first line>``."""
    if isinstance(command, str):
        first = command.strip().splitlines()[0] if command.strip() else ""
        text = f"sh -c {placeholder('script: ' + first.replace('<', '(').replace('>', ')'))}"
    else:
        text = " ".join(a if _PLACEHOLDER.search(a) else shlex.quote(a)
                        for a in (str(arg) for arg in command))
    return f"{text}  # {note}" if note else text


def shown_put(path: str, mode: int, note: str = "") -> str:
    """How the plan shows a file a step writes (through the transport's atomic put)."""
    text = f"put {path} {mode:04o}"
    return f"{text}  # {note}" if note else text


def announces(line: str, executed: str) -> bool:
    """Whether the plan line ``line`` (:func:`shown` or :func:`shown_put` text) announces the
    command ``executed`` (the same rendering of what ran, with run-time values filled in):
    equal up to the note, each placeholder standing for non-empty text without blanks (one
    value, or part of one)."""
    command = line.split("  # ", 1)[0]
    if command == executed:
        return True
    parts = _PLACEHOLDER.split(command)
    pattern = r"\S+?".join(re.escape(p) for p in parts)
    return re.fullmatch(pattern, executed) is not None


# -- etcd ----------------------------------------------------------------------------------


def etcdctl(endpoints: Sequence[str], *args: str, timeout: str = tools.ETCDCTL_TIMEOUT) -> Argv:
    """etcdctl against hactl's external members (:func:`hactl.transport.tools.etcdctl`)."""
    return tools.etcdctl(endpoints, *args, timeout=timeout)


def stacked_etcdctl(endpoints: Sequence[str], *args: str) -> Argv:
    """etcdctl against kubeadm's stacked etcd on a master, with kubeadm's healthcheck client;
    polled by the joins (:data:`~hactl.transport.tools.ETCDCTL_READ_TIMEOUT`)."""
    return tools.etcdctl(endpoints, *args, tls=tools.STACKED_ETCD, timeout=tools.ETCDCTL_READ_TIMEOUT)


STACKED_LOCAL = "https://127.0.0.1:2379"
"""The stacked member on the master itself (kubeadm's etcd listens on loopback too)."""


def member_list_stacked() -> Argv:
    """The stacked etcd's member list, through the member on this master."""
    return stacked_etcdctl([STACKED_LOCAL], "member", "list")


def stacked_endpoint_health(endpoints: Sequence[str]) -> Argv:
    """Each stacked member asked about itself (its published client URL)."""
    return stacked_etcdctl(endpoints, "endpoint", "health")


def member_list(*endpoints: str) -> Argv:
    """The member list, asked of ``endpoints`` in turn (etcdctl takes the first that answers)."""
    return etcdctl(endpoints, "member", "list")


def member_add(endpoint: str, name: str, peer_url: str, *, learner: bool = True) -> Argv:
    extra = ("--learner",) if learner else ()
    return etcdctl([endpoint], "member", "add", name, f"--peer-urls={peer_url}", *extra)


def member_promote(endpoint: str, member_id: str) -> Argv:
    return etcdctl([endpoint], "member", "promote", member_id)


def member_remove(endpoint: str, member_id: str) -> Argv:
    return etcdctl([endpoint], "member", "remove", member_id)


def endpoint_status(endpoints: Sequence[str], *, stacked: bool = False) -> Argv:
    """Each endpoint's status (its member id and the leader it follows), external or stacked."""
    tls = tools.STACKED_ETCD if stacked else tools.EXTERNAL_ETCD
    return tools.etcdctl(endpoints, "endpoint", "status", tls=tls, timeout=tools.ETCDCTL_HEALTH_TIMEOUT)


def move_leader(endpoints: Sequence[str], member_id: str, *, stacked: bool = False) -> Argv:
    """``etcdctl move-leader`` to ``member_id`` (etcdctl finds the leader among ``endpoints``
    and asks it to hand over; the new leader must be a started voter)."""
    tls = tools.STACKED_ETCD if stacked else tools.EXTERNAL_ETCD
    return tools.etcdctl(endpoints, "move-leader", member_id, tls=tls)


def member_update(endpoints: Sequence[str], member_id: str, peer_url: str) -> Argv:
    """Change a member's peer URL in the cluster's configuration (etcd's documented way; the
    member then restarts listening there)."""
    return etcdctl(endpoints, "member", "update", member_id, f"--peer-urls={peer_url}")


def endpoint_health(endpoints: Sequence[str]) -> Argv:
    """Each endpoint asked about itself (design rule 2: not ``--cluster`` alone); a stopped
    member must not hold the caller for long (:data:`~hactl.transport.tools.ETCDCTL_HEALTH_TIMEOUT`)."""
    return etcdctl(endpoints, "endpoint", "health", timeout=tools.ETCDCTL_HEALTH_TIMEOUT)


def registry_count(endpoint: str) -> Argv:
    """``count`` in the JSON is the number of keys under /registry (absent when 0); etcdctl 3.4
    has no ``--count-only``, so ask for at most one key."""
    return etcdctl([endpoint], "get", "/registry", "--prefix", "--keys-only", "--limit=1")


def systemctl(*args: str) -> Argv:
    return tools.systemctl(*args)


def read_files(*paths: str) -> Argv:
    """``cat`` of files that must exist (a missing one fails the command)."""
    return ("cat", *paths)


def file_exists(path: str) -> Argv:
    return ("test", "-e", path)


def all_exist(paths: Sequence[str]) -> Argv:
    """Exit 0 when every one of ``paths`` exists (one ``test``)."""
    out: tuple[str, ...] = ("test", "-e", paths[0])
    for path in paths[1:]:
        out += ("-a", "-e", path)
    return out


def etcd_ca_present() -> Argv:
    """Exit 0 when this host holds the etcd CA: its key and its certificate."""
    return all_exist((ETCD_CA_KEY, ETCD_CA_CERT))


_PREPARE_DATA_DIR = """d=$1; aside=$2
if [ ! -e "$d" ]; then exec install -d -m 0700 "$d"; fi
if [ ! -d "$d" ]; then echo "$d exists and is not a directory" >&2; exit 1; fi
if [ -n "$(ls -A "$d")" ]; then
  mkdir -m 0700 "$aside" || exit 1
  find "$d" -mindepth 1 -maxdepth 1 -exec mv -t "$aside" -- {} + || exit 1
  echo "moved aside into $aside"
fi
chmod 0700 "$d"
"""


def prepare_data_dir(path: str, aside: str) -> Argv:
    """Make ``path`` an empty 0700 directory for a new etcd member without deleting anything:
    created when absent; its entries (no member data: checked just before) moved into the new
    sibling ``aside``; chmod only once it is empty (an existing directory with content is never
    chmodded)."""
    return ("sh", "-c", _PREPARE_DATA_DIR, "sh", path, aside)


def mkdir(path: str, mode: str = "0700") -> Argv:
    return ("install", "-d", "-m", mode, path)


_MEMBER_DIRS = 'for d in "$1"/member "$1"/*/member; do if [ -d "$d" ]; then printf "%s\\n" "$d"; fi; done'


def data_dir_members(path: str) -> Argv:
    """Print every etcd ``member`` directory in ``path`` or one level down (one per line)."""
    return ("sh", "-c", _MEMBER_DIRS, "sh", path)


# -- HAProxy -------------------------------------------------------------------------------


def haproxy_check(path: str) -> Argv:
    return ("haproxy", "-c", "-f", path)


def move(src: str, dst: str) -> Argv:
    return ("mv", "-f", src, dst)


def remove(path: str) -> Argv:
    return ("rm", "-f", path)


def sha256sum(path: str) -> Argv:
    return ("sha256sum", path)


# -- kubeadm / kubectl ---------------------------------------------------------------------


def kubeadm_init(config: str = KUBEADM_INIT_CONFIG) -> Argv:
    """``kubeadm init --config F --upload-certs``: nothing else may be mixed with ``--config``
    (real kubeadm: ``can not mix '--config' with arguments [...]``). The certificate key is
    ``InitConfiguration.certificateKey`` in F (0600, removed after init), never in argv."""
    return tools.kubeadm("init", "--config", config, "--upload-certs")


def init_phase(phase: str, sub: str | None, config: str = KUBEADM_CONFIG,
               extra: Sequence[str] = ()) -> Argv:
    """``kubeadm init phase <phase> [<sub>] --config F [skip flags]`` (nothing else mixed in)."""
    return tools.kubeadm("init", "phase", phase, *((sub,) if sub else ()), "--config", config, *extra)


def upload_certs(config: str = KUBEADM_CONFIG) -> Argv:
    return tools.kubeadm("init", "phase", "upload-certs", "--upload-certs", "--config", config)


def token_create(ttl: str = "2h") -> Argv:
    return tools.kubeadm("token", "create", "--ttl", ttl, "--description", "hactl apply")


def kubeadm_join(config: str = KUBEADM_JOIN_CONFIG) -> Argv:
    """``kubeadm join --config F``: endpoint, token, CA pin, node name/address and (for a master)
    the ``controlPlane`` stanza with the certificate key are all in F's JoinConfiguration (0600,
    removed after the join). Real kubeadm refuses ``--control-plane``, ``--token``,
    ``--discovery-token-ca-cert-hash`` or ``--certificate-key`` next to ``--config``."""
    return tools.kubeadm("join", "--config", config)


def kubeadm_reset(*, external_etcd: bool = False) -> Argv:
    """Undo a failed join on this node. ``external_etcd`` (a control-plane node of a cluster
    with external etcd): kubeadm's ``remove-etcd-member`` phase is skipped — run, kubeadm v1.30
    looks for etcd Pods that do not exist for a minute, warns, and empties /var/lib/etcd on the
    node (kubernetes/kubeadm#3225); the node has no member of its own."""
    return tools.kubeadm("reset", "-f", *(("--skip-phases=remove-etcd-member",) if external_etcd else ()))


def kubectl(*args: str, kubeconfig: str = ADMIN_CONF) -> Argv:
    return tools.kubectl(*args, kubeconfig=kubeconfig)


def get_node(name: str) -> Argv:
    return kubectl("get", "node", name, "-o", "json")


def readyz() -> Argv:
    """``/readyz`` through the endpoint in admin.conf (the load balancer)."""
    return kubectl("get", "--raw", "/readyz")


# -- removals: a host taken out of the spec, a re-imaged master (issue 13) --------------------


def _seconds(value: float) -> str:
    """A Go duration in whole seconds where it is one (``300s``), else as given (``12.5s``)."""
    return f"{int(value)}s" if float(value).is_integer() else f"{value}s"


def cordon(node: str) -> Argv:
    """Mark the Node unschedulable (``node/N cordoned``, or ``already cordoned``)."""
    return kubectl("cordon", node)


def drain(node: str, timeout: float) -> Argv:
    """``kubectl drain``: evictions through the eviction API, so PodDisruptionBudgets are
    respected (never ``--force``, never ``--disable-eviction``: bypassing a budget or deleting
    a pod nothing recreates is the operator's decision); DaemonSet pods stay, emptyDir data
    goes with its pod; ``--timeout`` bounds the whole drain (kubectl: "global timeout")."""
    return kubectl("drain", node, "--ignore-daemonsets", "--delete-emptydir-data",
                   f"--timeout={_seconds(timeout)}")


def get_pod(namespace: str, name: str) -> Argv:
    return kubectl("get", "pod", name, "-n", namespace, "-o", "json")


def get_budgets(namespace: str) -> Argv:
    """The PodDisruptionBudgets of ``namespace`` (policy/v1)."""
    return kubectl("get", "poddisruptionbudgets", "-n", namespace, "-o", "json")


def delete_node(node: str) -> Argv:
    """Delete the Node object (nothing when it is already gone)."""
    return kubectl("delete", "node", node, "--ignore-not-found")


def kubeadm_reset_node(*, skip_etcd_member: bool) -> Argv:
    """``kubeadm reset -f`` of a host that leaves the cluster. ``skip_etcd_member``: hactl has
    removed this master's stacked etcd member itself (through another master), so kubeadm's
    ``remove-etcd-member`` phase is skipped."""
    skip = ("--skip-phases=remove-etcd-member",) if skip_etcd_member else ()
    return tools.kubeadm("reset", "-f", *skip)


_LEFTOVERS = 'for f in "$1" "$2"/*; do if [ -e "$f" ]; then printf "%s\\n" "$f"; fi; done'


def kubernetes_leftovers() -> Argv:
    """Print kubelet.conf and every static Pod manifest this host still holds (one per line;
    nothing on a host that was reset or never joined)."""
    return ("sh", "-c", _LEFTOVERS, "sh", KUBELET_CONF, K8S_MANIFESTS)


def member_remove_stacked(member_id: str) -> Argv:
    """``member remove`` in kubeadm's stacked etcd, through the member on this master, with a
    step's timeout (the removal waits for its raft commit)."""
    return tools.etcdctl([STACKED_LOCAL], "member", "remove", member_id, tls=tools.STACKED_ETCD,
                         timeout=tools.ETCDCTL_TIMEOUT)


# -- the pod network (issue 14) ---------------------------------------------------------------

POD_NETWORK_MANIFEST = f"{HACTL_RUN}/pod-network.yaml"
"""The pod network's manifest on the master that applies it (0600, removed after the apply)."""
FIELD_MANAGER = "hactl"


def apply_server_side(path: str = POD_NETWORK_MANIFEST) -> Argv:
    """``kubectl apply --server-side``: the API server merges the objects and records hactl as
    their field manager; ``--force-conflicts`` takes over fields another manager set (the plan
    showed them: the spec is the truth for the objects hactl renders, as for haproxy.cfg)."""
    return kubectl("apply", "--server-side", f"--field-manager={FIELD_MANAGER}",
                   "--force-conflicts", "-f", path)


def get_nodes() -> Argv:
    return kubectl("get", "nodes", "-o", "json")


def get_deployment(namespace: str, name: str) -> Argv:
    return kubectl("get", "deployment", name, "-n", namespace, "-o", "json",
                   "--ignore-not-found")
