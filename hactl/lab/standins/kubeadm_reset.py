"""``kubeadm reset``: the real phases ``preflight``, ``remove-etcd-member``, ``cleanup-node``
(``--skip-phases``), their messages and their effects, as kubeadm v1.30 has them (see
docs/standins/kubeadm.md)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from typing import Any

import yaml
from cryptography.x509.oid import NameOID

from .kubeadm_api import Api, ApiError, load_kubeconfig, ns_path
from .kubeadm_common import (
    ETCD_DATA_DIR,
    KUBELET_DIR,
    KUBERNETES_DIR,
    MANIFESTS_DIR,
    PKI_DIR,
    KubeadmError,
    P,
    knob_seconds,
    kubernetes_version,
    out,
    port_in_use,
    root,
    systemctl,
    version_tuple,
    warn,
)
from .kubelet_pods import kill_group, stop_all_recorded
from .pkiutil import load_cert

KUBECONFIG_FILES = ["admin.conf", "super-admin.conf", "kubelet.conf", "bootstrap-kubelet.conf",
                    "controller-manager.conf", "scheduler.conf"]


def _cluster_doc() -> dict[str, object] | None:
    """The cluster's ClusterConfiguration through admin.conf (None when unreadable)."""
    try:
        api = Api.from_kubeconfig(f"{KUBERNETES_DIR}/admin.conf", timeout=5)
        cm = api.get(ns_path("kube-system", "configmaps", "kubeadm-config"))
        doc = yaml.safe_load((cm.get("data") or {}).get("ClusterConfiguration", "")) or {}
        return doc if isinstance(doc, dict) else None
    except (ApiError, OSError, ValueError, KeyError):
        return None


PHASES = ("preflight", "remove-etcd-member", "cleanup-node")
ETCD_ENDPOINTS_ANNOTATION = "kubeadm.kubernetes.io/etcd.advertise-client-urls"
APISERVER_ENDPOINT_ANNOTATION = "kubeadm.kubernetes.io/kube-apiserver.advertise-address.endpoint"


class ResetConfig:
    """What ``FetchInitConfigurationFromCluster`` gives reset: the ClusterConfiguration, this
    node's name (from kubelet.conf's client certificate) and its API endpoint (from its
    kube-apiserver Pod's annotation)."""

    def __init__(self, api: Api, doc: dict[str, Any], node: str, advertise: str) -> None:
        self.api, self.doc, self.node, self.advertise = api, doc, node, advertise

    @property
    def local_etcd(self) -> dict[str, Any] | None:
        etcd = self.doc.get("etcd") or {}
        if isinstance(etcd, dict) and "external" not in etcd:
            local = etcd.get("local")
            return dict(local) if isinstance(local, dict) else {}  # defaulted: local
        return None


def _klog_warning(source: str, message: str) -> None:
    warn(time.strftime("W%m%d %H:%M:%S.000000") + f" {os.getpid():>7} {source}] {message}")


def _node_name() -> str:
    cfg = load_kubeconfig(f"{KUBERNETES_DIR}/kubelet.conf")
    if not cfg.get("cert"):
        raise ValueError(f"failed to get node registration: could not find a client certificate "
                         f"in {KUBERNETES_DIR}/kubelet.conf")
    cert = load_cert(cfg["cert"])
    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    return str(cn).removeprefix("system:node:")


def fetch_config() -> ResetConfig | None:
    """newResetData: with a client from admin.conf, the cluster's configuration; None (and the
    real warning) when it cannot be read; None silently without admin.conf (a worker)."""
    if not os.path.exists(P(f"{KUBERNETES_DIR}/admin.conf")):
        return None
    out("[reset] Reading configuration from the cluster...")
    out("[reset] FYI: You can look at this config file with 'kubectl -n kube-system get cm kubeadm-config -o yaml'")
    try:
        api = Api.from_kubeconfig(f"{KUBERNETES_DIR}/admin.conf", timeout=5)
        cm = api.get(ns_path("kube-system", "configmaps", "kubeadm-config"))
        doc = yaml.safe_load((cm.get("data") or {}).get("ClusterConfiguration", "")) or {}
        try:
            node = _node_name()
        except (OSError, ValueError, IndexError) as exc:
            raise ValueError(f"failed to get node registration: {exc}") from exc
        try:
            pod = api.get(ns_path("kube-system", "pods", f"kube-apiserver-{node}"))
            endpoint = (pod["metadata"].get("annotations") or {})[APISERVER_ENDPOINT_ANNOTATION]
        except (ApiError, KeyError) as exc:
            raise ValueError(f'could not retrieve API endpoints for node "{node}" using pod '
                             f"annotations: {exc}") from exc
        advertise = endpoint.rsplit(":", 1)[0].strip("[]")
        return ResetConfig(api, doc if isinstance(doc, dict) else {}, node, advertise)
    except (ApiError, OSError, ValueError) as exc:
        _klog_warning("reset.go:124", f"[reset] Unable to fetch the kubeadm-config ConfigMap "
                      f"from cluster: failed to get config map: {exc}")
        return None


def _etcdctl(endpoints: list[str], *args: str) -> Any:
    """The real etcdctl with kubeadm's etcd client identity (etcd/healthcheck-client)."""
    pki = f"{KUBERNETES_DIR}/pki/etcd"
    argv = ["etcdctl", f"--endpoints={','.join(endpoints)}", "--dial-timeout=2s",
            "--command-timeout=10s", f"--cacert={P(pki + '/ca.crt')}",
            f"--cert={P(pki + '/healthcheck-client.crt')}",
            f"--key={P(pki + '/healthcheck-client.key')}", "-w", "json", *args]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False,
                            env={**os.environ, "ETCDCTL_API": "3"})
    if result.returncode != 0:
        lines = (result.stderr.strip() or result.stdout.strip()).splitlines()
        raise RuntimeError(lines[-1].removeprefix("Error: ") if lines else "etcdctl failed")
    return json.loads(result.stdout or "{}")


def _etcd_endpoints(api: Api, timeout: float) -> list[str]:
    """getEtcdEndpoints: the etcd Pods' advertise-client-urls annotations, polled until
    ``timeout`` (the real KubernetesAPICall timeout, 1 min)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            pods = api.get(ns_path("kube-system", "pods"),
                           labelSelector="component=etcd,tier=control-plane").get("items") or []
            urls = [str((p["metadata"].get("annotations") or {}).get(ETCD_ENDPOINTS_ANNOTATION))
                    for p in pods
                    if (p["metadata"].get("annotations") or {}).get(ETCD_ENDPOINTS_ANNOTATION)]
            if urls and len(urls) == len(pods):  # every etcd Pod annotated, else wait
                return urls
        except (ApiError, OSError):
            pass
        if time.monotonic() >= deadline:
            raise RuntimeError("could not retrieve the list of etcd endpoints: context deadline "
                               "exceeded")
        time.sleep(1.0)


def remove_stacked_member(cfg: ResetConfig) -> None:
    """RemoveStackedEtcdMemberFromCluster (cmd/kubeadm/app/phases/etcd/local.go)."""
    seeds = _etcd_endpoints(cfg.api, knob_seconds("kubeadm", "etcdEndpointsTimeoutSeconds", 60))
    members = _etcdctl(seeds, "member", "list").get("members") or []
    endpoints = [u for m in members for u in (m.get("clientURLs") or [])] or seeds  # Sync()
    local_client = f"https://{cfg.advertise}:2379"
    if len(members) == 1 and local_client in endpoints:
        return  # the only remaining member: nothing to remove it from
    peer = f"https://{cfg.advertise}:2380"
    found = [m for m in members if (m.get("peerURLs") or [""])[0] == peer]
    if not found and member_id_checked():
        return  # ErrNoMemberIDForPeerURL: already gone
    # before kubernetes#127491 GetMemberID answered 0 for a member that is gone, and
    # RemoveMember(0) retried etcd's "member not found" until its timeout
    member_id = int(found[0]["ID"]) if found else 0
    timeout = knob_seconds("kubeadm", "etcdAPICallTimeoutSeconds", 120)
    deadline = time.monotonic() + timeout
    while True:
        try:
            _etcdctl(endpoints, "member", "remove", format(member_id, "x"))
            return
        except RuntimeError:
            if time.monotonic() >= deadline:
                raise
        time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))


MEMBER_ID_FIX = {(1, 28): 15, (1, 29): 10, (1, 30): 6, (1, 31): 2}
"""kubernetes#127491 (reset removes a member only if its ID exists; join adds one only if its
peer URL is not listed): in v1.32, cherry-picked into these patch releases."""


def member_id_checked(version: str | None = None) -> bool:
    v = version_tuple(version or kubernetes_version())
    minor = (v[0], v[1])
    if minor >= (1, 32):
        return True
    return minor in MEMBER_ID_FIX and v[2] >= MEMBER_ID_FIX[minor]


def _data_dir_from_manifest(cfg: ResetConfig | None) -> str | None:
    """getEtcdDataDir; None when the etcd manifest is there but has no etcd-data volume."""
    local = cfg.local_etcd if cfg is not None else None
    if local is not None:
        return str(local.get("dataDir") or ETCD_DATA_DIR)
    _klog_warning("removeetcdmember.go:106",
                  "[reset] No kubeadm config, using etcd pod spec to get data directory")
    manifest = P(f"{MANIFESTS_DIR}/etcd.yaml")
    if not os.path.exists(manifest):
        return ETCD_DATA_DIR  # the default ClusterConfiguration's
    try:
        with open(manifest) as handle:
            pod = yaml.safe_load(handle) or {}
        for vol in (pod.get("spec") or {}).get("volumes") or []:
            if vol.get("name") == "etcd-data":
                return str((vol.get("hostPath") or {}).get("path") or "") or None
    except (OSError, yaml.YAMLError):
        pass
    return None


def phase_remove_etcd_member(cfg: ResetConfig | None) -> None:
    """runRemoveETCDMemberPhase (cmd/kubeadm/app/cmd/phases/reset/removeetcdmember.go)."""
    data_dir = _data_dir_from_manifest(cfg)
    if data_dir is None:
        out("[reset] No etcd config found. Assuming external etcd")
        out("[reset] Please, manually reset etcd to prevent further issues")
        return
    shown = _unrelocate(data_dir)
    if cfg is not None:
        try:
            remove_stacked_member(cfg)
        except (RuntimeError, OSError, ValueError, subprocess.SubprocessError) as exc:
            _klog_warning("removeetcdmember.go:68", f"[reset] Failed to remove etcd member: {exc}, "
                          "please manually remove this etcd member using etcdctl")
        else:
            _clear_dir(shown)
            out(f"[reset] Deleted contents of the etcd data directory: {shown}")
    real = P(shown)
    empty = os.path.isdir(real) and not os.listdir(real)
    if not empty:  # IsDirEmpty: a missing directory is "not empty" too
        _clear_dir(shown)
        out(f"[reset] Deleted contents of the etcd data directory: {shown}")


def _unrelocate(path: str) -> str:
    prefix = root().rstrip("/")
    return path[len(prefix):] if prefix and path.startswith(prefix + "/") else path


CONTROL_PLANE = (b"hactl.lab.standins.kube_apiserver", b"hactl.lab.standins.kube_controller_manager",
                 b"hactl.lab.standins.kube_scheduler")
CONTROL_PLANE_PORTS = (6443, 10257, 10259)


def _stop_strays(wait: float = 10.0) -> None:
    """Real ``kubeadm reset`` removes every Kubernetes container through the CRI, not only those
    the kubelet has a record of. Inside a lab node (its own PID namespace: no HACTL_LAB_ROOT),
    a control-plane stand-in left running (started by a kubelet between its last record and
    its stop) is stopped too, and reset returns only once the control-plane ports are free: a
    join right after it must not find ``Port 6443 is in use``."""
    if root():
        return
    try:  # only where PID 1 is a lab node's init: never another machine's (or a test's) processes
        with open("/proc/1/cmdline", "rb") as handle:
            if b"hactl.lab.nodeinit" not in handle.read():
                return
    except OSError:
        return
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                argv = handle.read()
        except OSError:
            continue
        if any(name in argv for name in CONTROL_PLANE):
            kill_group(int(entry), 2.0)
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline and any(port_in_use(port) for port in CONTROL_PLANE_PORTS):
        time.sleep(0.1)


def _clear_dir(path: str) -> None:
    real = P(path)
    if not os.path.isdir(real):
        return
    for name in os.listdir(real):
        target = os.path.join(real, name)
        if os.path.isdir(target) and not os.path.islink(target):
            shutil.rmtree(target, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(target)


def run_reset(force: bool, skip_phases: list[str] | None = None) -> int:
    skip = set()
    for phase in skip_phases or []:
        if phase not in PHASES and phase != "pre-flight" and phase != "cleanupnode":
            raise KubeadmError(f"invalid phase name: {phase}")
        skip.add({"pre-flight": "preflight", "cleanupnode": "cleanup-node"}.get(phase, phase))
    cfg = fetch_config()
    if "preflight" not in skip:
        if not force:
            _klog_warning("preflight.go:56", "[reset] WARNING: Changes made to this host by "
                          "'kubeadm init' or 'kubeadm join' will be reverted.")
            sys.stdout.write("[reset] Are you sure you want to proceed? [y/N]: ")
            sys.stdout.flush()
            answer = sys.stdin.readline().strip().lower()
            if answer not in ("y", "yes"):
                raise KubeadmError("won't proceed; the user didn't answer (Y|y) in order to "
                                   "continue", phase="preflight")
        out("[preflight] Running pre-flight checks")
    if "remove-etcd-member" not in skip:
        phase_remove_etcd_member(cfg)
    if "cleanup-node" not in skip:
        phase_cleanup_node()
    out("\nThe reset process does not clean CNI configuration. To do so, you must remove /etc/cni/net.d\n")
    out("The reset process does not reset or clean up iptables rules or IPVS tables.")
    out("If you wish to reset iptables, you must do so manually by using the \"iptables\" command.\n")
    out("If your cluster was setup to utilize IPVS, run ipvsadm --clear (or similar)")
    out("to reset your system's IPVS tables.\n")
    out("The reset process does not clean your kubeconfig files and you must remove them manually.")
    out("Please, check the contents of the $HOME/.kube/config file.")
    return 0


def phase_cleanup_node() -> None:
    """runCleanupNode (cmd/kubeadm/app/cmd/phases/reset/cleanupnode.go)."""
    out("[reset] Stopping the kubelet service")
    systemctl("stop", "kubelet")
    out("[reset] Unmounting mounted directories in \"/var/lib/kubelet\"")
    stop_all_recorded()
    _stop_strays()
    dirs = [MANIFESTS_DIR, KUBELET_DIR, PKI_DIR]
    out(f"[reset] Deleting contents of directories: [{' '.join(dirs)}]")
    for path in dirs:
        _clear_dir(path)
    files = [f"{KUBERNETES_DIR}/{name}" for name in KUBECONFIG_FILES]
    out(f"[reset] Deleting files: [{' '.join(files)}]")
    for path in files:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(P(path))
