"""Pure command builders: every command a step runs, as an argv tuple.

No I/O and no ``shlex.join`` here (only the transport joins argv). Secrets are passed in as
:class:`hactl.sensitive.Sensitive` and stay masked everywhere but on the wire. File paths on the
hosts come from the renderers (``docs/renderers.md``) and are repeated here only where hactl
owns them (the kubeadm config folder).
"""

from __future__ import annotations

from collections.abc import Sequence

from hactl.transport.base import Argv

# etcd files (the same names as hactl.render.etcd; repeated so planning imports stay light)
ETCD_PKI_DIR = "/etc/etcd/pki"
ETCD_CA_CERT = f"{ETCD_PKI_DIR}/ca.crt"
ETCD_CA_KEY = f"{ETCD_PKI_DIR}/ca.key"
ETCD_SERVER_CERT, ETCD_SERVER_KEY = f"{ETCD_PKI_DIR}/server.crt", f"{ETCD_PKI_DIR}/server.key"
ETCD_PEER_CERT, ETCD_PEER_KEY = f"{ETCD_PKI_DIR}/peer.crt", f"{ETCD_PKI_DIR}/peer.key"
ETCD_CLIENT_CERT = f"{ETCD_PKI_DIR}/healthcheck-client.crt"
ETCD_CLIENT_KEY = f"{ETCD_PKI_DIR}/healthcheck-client.key"
ETCD_ENV = "/etc/etcd/etcd.env"
ETCD_UNIT = "/etc/systemd/system/etcd.service"
ETCD_BOOTSTRAP_MARKER = "/etc/etcd/hactl-bootstrap-pending"
"""Written before a new cluster's member starts, removed on every member once it is healthy."""

# HAProxy
HAPROXY_CFG = "/etc/haproxy/haproxy.cfg"
HAPROXY_NEW = "/etc/haproxy/haproxy.cfg.hactl-new"

# kubeadm / Kubernetes
K8S_PKI = "/etc/kubernetes/pki"
K8S_CA_CERT = f"{K8S_PKI}/ca.crt"
K8S_ETCD_CA = f"{K8S_PKI}/etcd/ca.crt"
APISERVER_ETCD_CLIENT_CERT = f"{K8S_PKI}/apiserver-etcd-client.crt"
APISERVER_ETCD_CLIENT_KEY = f"{K8S_PKI}/apiserver-etcd-client.key"
ADMIN_CONF = "/etc/kubernetes/admin.conf"
KUBEADM_CONFIG = "/etc/hactl/kubeadm-config.yaml"
"""The InitConfiguration + ClusterConfiguration that upload-certs reuses (no secret in it)."""
KUBEADM_INIT_CONFIG = "/run/hactl/kubeadm-init.yaml"
"""The same plus ``certificateKey``, for ``kubeadm init`` only: 0600, removed after init."""
KUBEADM_JOIN_CONFIG = "/run/hactl/kubeadm-join.yaml"
"""The JoinConfiguration (token, CA pin, certificate key): 0600, removed after the join."""


# -- etcd ----------------------------------------------------------------------------------


def etcdctl(endpoints: Sequence[str], *args: str) -> Argv:
    """etcdctl v3 over TLS with the member's client certificate."""
    return (
        "etcdctl",
        f"--endpoints={','.join(endpoints)}",
        f"--cacert={ETCD_CA_CERT}",
        f"--cert={ETCD_CLIENT_CERT}",
        f"--key={ETCD_CLIENT_KEY}",
        "--command-timeout=10s",
        *args,
    )


def member_list(endpoint: str) -> Argv:
    return etcdctl([endpoint], "member", "list", "-w", "json")


def member_add(endpoint: str, name: str, peer_url: str, *, learner: bool = True) -> Argv:
    extra = ("--learner",) if learner else ()
    return etcdctl([endpoint], "member", "add", name, f"--peer-urls={peer_url}", *extra)


def member_promote(endpoint: str, member_id: str) -> Argv:
    return etcdctl([endpoint], "member", "promote", member_id)


def member_remove(endpoint: str, member_id: str) -> Argv:
    return etcdctl([endpoint], "member", "remove", member_id)


def member_update(endpoints: Sequence[str], member_id: str, peer_url: str) -> Argv:
    """Change a member's peer URL in the cluster's configuration (etcd's documented way; the
    member then restarts listening there)."""
    return etcdctl(endpoints, "member", "update", member_id, f"--peer-urls={peer_url}")


def endpoint_health(endpoints: Sequence[str]) -> Argv:
    """Each endpoint asked about itself (design rule 2: not ``--cluster`` alone)."""
    argv = etcdctl(endpoints, "endpoint", "health", "-w", "json")
    # a stopped member must not hold the caller for long: 3 s per check
    return tuple("--command-timeout=3s" if a == "--command-timeout=10s" else a for a in argv)


def registry_count(endpoint: str) -> Argv:
    """``count`` in the JSON is the number of keys under /registry (absent when 0); etcdctl 3.4
    has no ``--count-only``, so ask for at most one key."""
    return etcdctl([endpoint], "get", "/registry", "--prefix", "--keys-only", "--limit=1", "-w", "json")


def systemctl(*args: str) -> Argv:
    return ("systemctl", *args)


def read_files(*paths: str) -> Argv:
    """``cat`` of files that must exist (a missing one fails the command)."""
    return ("cat", *paths)


def file_exists(path: str) -> Argv:
    return ("test", "-e", path)


def etcd_ca_present() -> Argv:
    """Exit 0 when this host holds the etcd CA: its key and its certificate."""
    return ("test", "-e", ETCD_CA_KEY, "-a", "-e", ETCD_CA_CERT)


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
    return ("kubeadm", "init", "--config", config, "--upload-certs")


def upload_certs(config: str = KUBEADM_CONFIG) -> Argv:
    return ("kubeadm", "init", "phase", "upload-certs", "--upload-certs", "--config", config)


def token_create(ttl: str = "2h") -> Argv:
    return ("kubeadm", "token", "create", "--ttl", ttl, "--description", "hactl apply")


def kubeadm_join(config: str = KUBEADM_JOIN_CONFIG) -> Argv:
    """``kubeadm join --config F``: endpoint, token, CA pin, node name/address and (for a master)
    the ``controlPlane`` stanza with the certificate key are all in F's JoinConfiguration (0600,
    removed after the join). Real kubeadm refuses ``--control-plane``, ``--token``,
    ``--discovery-token-ca-cert-hash`` or ``--certificate-key`` next to ``--config``."""
    return ("kubeadm", "join", "--config", config)


def kubeadm_reset() -> Argv:
    """Undo a failed join on this node (external etcd is left untouched, as kubeadm does)."""
    return ("kubeadm", "reset", "-f")


def kubectl(*args: str, kubeconfig: str = ADMIN_CONF) -> Argv:
    return ("kubectl", "--kubeconfig", kubeconfig, "--request-timeout=10s", *args)


def get_node(name: str) -> Argv:
    return kubectl("get", "node", name, "-o", "json")


def readyz() -> Argv:
    """``/readyz`` through the endpoint in admin.conf (the load balancer)."""
    return kubectl("get", "--raw", "/readyz")
