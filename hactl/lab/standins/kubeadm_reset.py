"""``kubeadm reset``: undo init/join on this host; external etcd is never touched."""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import time

import yaml

from .kubeadm_api import Api, ApiError, ns_path
from .kubeadm_common import (
    ETCD_DATA_DIR,
    KUBELET_DIR,
    KUBERNETES_DIR,
    MANIFESTS_DIR,
    PKI_DIR,
    P,
    out,
    port_in_use,
    root,
    systemctl,
    warn,
)
from .kubelet_pods import kill_group, stop_all_recorded

KUBECONFIG_FILES = ["admin.conf", "super-admin.conf", "kubelet.conf", "bootstrap-kubelet.conf",
                    "controller-manager.conf", "scheduler.conf"]


def _cluster_doc() -> dict[str, object] | None:
    try:
        api = Api.from_kubeconfig(f"{KUBERNETES_DIR}/admin.conf", timeout=5)
        cm = api.get(ns_path("kube-system", "configmaps", "kubeadm-config"))
        doc = yaml.safe_load((cm.get("data") or {}).get("ClusterConfiguration", "")) or {}
        return doc if isinstance(doc, dict) else None
    except (ApiError, OSError, ValueError, KeyError):
        return None


def _remove_local_etcd_member() -> None:
    from .kubeadm_join import etcdctl

    manifest = P(f"{MANIFESTS_DIR}/etcd.yaml")
    try:
        with open(manifest) as handle:
            pod = yaml.safe_load(handle) or {}
        command = pod["spec"]["containers"][0]["command"]
        flags = dict(a[2:].split("=", 1) for a in command if a.startswith("--") and "=" in a)
        local = flags["advertise-client-urls"].split(",")
        peer = flags["initial-advertise-peer-urls"].split(",")[0]
        members = etcdctl(local, "member", "list").get("members") or []
        mine = [m for m in members if peer in (m.get("peerURLs") or [])]
        others = [u for m in members if m not in mine for u in (m.get("clientURLs") or [])]
        for member in mine:
            if not others:
                warn("[reset] No other etcd members remain; skipping member removal")
                continue
            etcdctl(others, "member", "remove", format(int(member["ID"]), "x"))
            out(f"[reset] Removed etcd member {member.get('name', '')} from the cluster")
    except Exception as exc:
        warn(f"[reset] Failed to remove etcd member: {exc}, please manually remove this etcd member using etcdctl")


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


def run_reset(force: bool) -> int:
    out("[reset] Reading configuration from the cluster...")
    out("[reset] FYI: You can look at this config file with 'kubectl -n kube-system get cm kubeadm-config -o yaml'")
    doc = _cluster_doc()
    if doc is None:
        warn("W0000 reset.go:124] [reset] Unable to fetch the kubeadm-config ConfigMap from cluster: failed to get "
             "config map: the cluster is unreachable or kubeadm-config is missing")
    stacked = os.path.exists(P(f"{MANIFESTS_DIR}/etcd.yaml"))
    if not force:
        out("[reset] WARNING: Changes made to this host by 'kubeadm init' or 'kubeadm join' will be reverted.")
        sys.stdout.write("[reset] Are you sure you want to proceed? [y/N]: ")
        sys.stdout.flush()
        answer = sys.stdin.readline().strip().lower()
        if answer not in ("y", "yes"):
            out("error execution phase preflight: won't proceed; the user didn't answer (Y|y) in order to continue")
            return 1
    out("[preflight] Running pre-flight checks")
    if stacked:
        _remove_local_etcd_member()
    else:
        out("[reset] No etcd config found. Assuming external etcd")
        out("[reset] Please, manually reset etcd to prevent further issues")
    out("[reset] Stopping the kubelet service")
    systemctl("stop", "kubelet")
    out("[reset] Unmounting mounted directories in \"/var/lib/kubelet\"")
    stop_all_recorded()
    _stop_strays()
    dirs = [MANIFESTS_DIR, KUBELET_DIR, PKI_DIR]
    if stacked:
        data_dir = ETCD_DATA_DIR
        etcd = ((doc or {}).get("etcd") or {}) if doc else {}
        if isinstance(etcd, dict) and isinstance(etcd.get("local"), dict):
            data_dir = str(etcd["local"].get("dataDir") or data_dir)
        dirs.insert(0, data_dir)
    out(f"[reset] Deleting contents of directories: [{' '.join(dirs)}]")
    for path in dirs:
        _clear_dir(path)
    files = [f"{KUBERNETES_DIR}/{name}" for name in KUBECONFIG_FILES]
    out(f"[reset] Deleting files: [{' '.join(files)}]")
    for path in files:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(P(path))
    out("\nThe reset process does not clean CNI configuration. To do so, you must remove /etc/cni/net.d\n")
    out("The reset process does not reset or clean up iptables rules or IPVS tables.")
    out("If you wish to reset iptables, you must do so manually by using the \"iptables\" command.\n")
    out("If your cluster was setup to utilize IPVS, run ipvsadm --clear (or similar)")
    out("to reset your system's IPVS tables.\n")
    out("The reset process does not clean your kubeconfig files and you must remove them manually.")
    out("Please, check the contents of the $HOME/.kube/config file.")
    return 0
