"""``kubeadm init`` and the phases that ``kubeadm init phase …`` (:mod:`.kubeadm_phase`) runs alone."""

from __future__ import annotations

import time
import urllib.request
from typing import Any

import yaml

from .kubeadm_addons import apply_coredns, apply_kube_proxy
from .kubeadm_api import Api, ApiError, ns_path
from .kubeadm_certs import generate_certificate_key, upload_certs
from .kubeadm_common import (
    DEFAULT_TOKEN_TTL,
    KUBERNETES_DIR,
    MANIFESTS_DIR,
    KubeadmError,
    duration_seconds,
    knob_seconds,
    out,
    read_file,
    systemctl,
    wait_for,
)
from .kubeadm_config import Config, cluster_configuration
from .kubeadm_files import (
    etcd_manifest,
    kubelet_configuration,
    write_control_plane_manifests,
    write_kubeconfigs,
    write_kubelet_files,
    write_manifest,
)
from .kubeadm_pki import create_pki
from .kubeadm_preflight import init_checks, preflight
from .kubeadm_token import (
    DEFAULT_DESCRIPTION,
    create_cluster_info,
    create_token_secret,
    generate_token,
    join_command,
)
from .pkiutil import Pair, ca_cert_hash, load_cert

CP_LABEL = "node-role.kubernetes.io/control-plane"
EXCLUDE_LB_LABEL = "node.kubernetes.io/exclude-from-external-load-balancers"


def skipped(cfg: Config, phase: str) -> bool:
    return any(phase == s or phase.startswith(s + "/") for s in cfg.skip_phases)


def start_kubelet() -> None:
    out("[kubelet-start] Starting the kubelet")
    result = systemctl("restart", "kubelet")
    if result.returncode != 0:
        raise KubeadmError(f"error execution phase kubelet-start: {result.stderr.strip()}")


def wait_kubelet(cfg: Config) -> None:
    conf = kubelet_configuration(cfg)
    url = f"http://{conf.get('healthzBindAddress', '127.0.0.1')}:{conf.get('healthzPort', 10248)}/healthz"
    timeout = knob_seconds("kubeadm", "kubeletWaitSeconds", 240)
    out(f"[kubelet-check] Waiting for a healthy kubelet at {url}. This can take up to {int(timeout // 60)}m0s")
    start = time.monotonic()

    def healthy() -> bool:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return bool(resp.status == 200)

    if not wait_for(healthy, timeout):
        raise KubeadmError("The HTTP call equal to 'curl -sSL " + url + "' failed with error: "
                           "connection refused.", phase="wait-control-plane")
    out(f"[kubelet-check] The kubelet is healthy after {time.monotonic() - start:.3f}s")


def wait_api(api: Api, label: str = "api-check") -> None:
    timeout = knob_seconds("kubeadm", "apiWaitSeconds", 240)
    out(f"[{label}] Waiting for a healthy API server. This can take up to {int(timeout // 60)}m0s")
    start = time.monotonic()
    # /healthz, and the system namespaces the real server creates in a post-start hook before its
    # /healthz turns ok (the stand-in creates them right after serving)
    if not wait_for(lambda: api.get_raw("/healthz")[0] == 200
                    and api.get_raw("/api/v1/namespaces/kube-system")[0] in (200, 403), timeout):
        raise KubeadmError("could not check the health of the API server: context deadline exceeded",
                           phase="wait-control-plane")
    out(f"[{label}] The API server is healthy after {time.monotonic() - start:.3f}s")


def update_node(api: Api, name: str, change: Any, timeout: float = 120) -> dict[str, Any]:
    """GET + PUT with optimistic concurrency, waiting for the kubelet to register the Node."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            node = api.get(f"/api/v1/nodes/{name}")
            change(node)
            return dict(api.replace(f"/api/v1/nodes/{name}", node))
        except (ApiError, OSError) as exc:
            if time.monotonic() > deadline:
                raise KubeadmError(f'timed out waiting for the condition: nodes "{name}": {exc}',
                                   phase="mark-control-plane") from exc
            time.sleep(0.5)


def mark_control_plane(api: Api, cfg: Config) -> None:
    labels = [CP_LABEL, EXCLUDE_LB_LABEL]
    taints = cfg.taints if cfg.taints is not None else [{"key": CP_LABEL, "effect": "NoSchedule"}]
    out(f"[mark-control-plane] Marking the node {cfg.node_name} as control-plane by adding the labels: "
        f"[{' '.join(labels)}]")
    if taints:
        out(f"[mark-control-plane] Marking the node {cfg.node_name} as control-plane by adding the taints "
            f"[{' '.join(t['key'] + ':' + t['effect'] for t in taints)}]")

    def change(node: dict[str, Any]) -> None:
        meta = node.setdefault("metadata", {})
        meta.setdefault("labels", {}).update({label: "" for label in labels})
        spec = node.setdefault("spec", {})
        have = {(t.get("key"), t.get("effect")) for t in spec.get("taints") or []}
        spec["taints"] = (spec.get("taints") or []) + [t for t in taints if (t["key"], t["effect"]) not in have]

    update_node(api, cfg.node_name, change)


def upload_config(api: Api, cfg: Config) -> None:
    out('[upload-config] Storing the configuration used in ConfigMap "kubeadm-config" in the "kube-system" Namespace')
    data = {"ClusterConfiguration": yaml.safe_dump(cluster_configuration(cfg), sort_keys=False)}
    api.apply(ns_path("kube-system", "configmaps"),
              {"apiVersion": "v1", "kind": "ConfigMap",
               "metadata": {"name": "kubeadm-config", "namespace": "kube-system"}, "data": data})
    out('[kubelet] Creating a ConfigMap "kubelet-config" in namespace kube-system with the configuration '
        "for the kubelets in the cluster")
    api.apply(ns_path("kube-system", "configmaps"),
              {"apiVersion": "v1", "kind": "ConfigMap",
               "metadata": {"name": "kubelet-config", "namespace": "kube-system"},
               "data": {"kubelet": yaml.safe_dump(kubelet_configuration(cfg, local=False), sort_keys=False)}})


def bootstrap_tokens(api: Api, cfg: Config, *, print_token: bool = True) -> str:
    first = ""
    for spec in cfg.tokens:
        token = str(spec.get("token") or generate_token())
        first = first or token
        if print_token:
            out(f"[bootstrap-token] Using token: {token}")
        create_token_secret(
            api, token, duration_seconds(spec["ttl"], DEFAULT_TOKEN_TTL),
            usages=spec.get("usages") or ("authentication", "signing"),
            groups=spec.get("groups") or ("system:bootstrappers:kubeadm:default-node-token",),
            description=spec.get("description") or DEFAULT_DESCRIPTION,
        )
    out("[bootstrap-token] Configuring bootstrap tokens, cluster-info ConfigMap, RBAC Roles")
    out("[bootstrap-token] Configured RBAC rules to allow Node Bootstrap tokens to get nodes")
    out("[bootstrap-token] Configured RBAC rules to allow Node Bootstrap tokens to post CSRs in order for "
        "nodes to get long term certificate credentials")
    out("[bootstrap-token] Configured RBAC rules to allow the csrapprover controller automatically approve "
        "CSRs from a Node Bootstrap Token")
    out("[bootstrap-token] Configured RBAC rules to allow certificate rotation for all node client "
        "certificates in the cluster")
    create_cluster_info(api, f"https://{cfg.endpoint()}", read_file(f"{KUBERNETES_DIR}/pki/ca.crt"))
    return first


def local_api(cfg: Config) -> Api:
    return Api.from_kubeconfig(f"{KUBERNETES_DIR}/admin.conf",
                               server=f"https://{cfg.advertise_address}:{cfg.bind_port}", retry_seconds=30)


def run_init(cfg: Config) -> int:
    out(f"[init] Using Kubernetes version: {cfg.kubernetes_version}")
    if not skipped(cfg, "preflight"):
        preflight(init_checks(cfg), cfg.ignore_preflight)
    cas = create_pki(cfg) if not skipped(cfg, "certs") else {}
    ca = cas.get("ca") or Pair.from_pem(read_file(f"{KUBERNETES_DIR}/pki/ca.crt"),
                                         read_file(f"{KUBERNETES_DIR}/pki/ca.key"))
    if not skipped(cfg, "kubeconfig"):
        write_kubeconfigs(cfg, ca, ["admin.conf", "super-admin.conf", "kubelet.conf",
                                    "controller-manager.conf", "scheduler.conf"])
    if not cfg.external and not skipped(cfg, "etcd"):
        out(f'[etcd] Creating static Pod manifest for local etcd in "{MANIFESTS_DIR}"')
        write_manifest("etcd", etcd_manifest(cfg, f"{cfg.node_name}=https://{cfg.advertise_address}:2380"))
    if not skipped(cfg, "control-plane"):
        write_control_plane_manifests(cfg)
    if not skipped(cfg, "kubelet-start"):
        write_kubelet_files(cfg)
        start_kubelet()
    api = local_api(cfg)
    out("[wait-control-plane] Waiting for the kubelet to boot up the control plane as static Pods from "
        f'directory "{MANIFESTS_DIR}"')
    wait_kubelet(cfg)
    wait_api(api)
    if not skipped(cfg, "upload-config"):
        upload_config(api, cfg)
    key = ""
    if cfg.upload_certs and not skipped(cfg, "upload-certs"):
        key = cfg.certificate_key or generate_certificate_key()
        upload_certs(api, cfg, key)
        out("[upload-certs] Using certificate key:")
        out(key)
    else:
        out("[upload-certs] Skipping phase. Please see --upload-certs")
    if not skipped(cfg, "mark-control-plane"):
        mark_control_plane(api, cfg)
    token = bootstrap_tokens(api, cfg) if not skipped(cfg, "bootstrap-token") else ""
    out(f'[kubelet-finalize] Updating "{KUBERNETES_DIR}/kubelet.conf" to point to a rotatable kubelet '
        "client certificate and key")
    for addon, apply in (("addon/coredns", apply_coredns), ("addon/kube-proxy", apply_kube_proxy)):
        if not skipped(cfg, addon):
            try:
                apply(api, cfg)
            except ApiError as exc:
                raise KubeadmError(str(exc), phase=addon) from exc
    if not skipped(cfg, "show-join-command"):
        print_success(cfg, token, ca_cert_hash(ca.cert), key)
    return 0


def print_success(cfg: Config, token: str, ca_hash: str, key: str) -> None:
    endpoint = cfg.endpoint()
    out("\nYour Kubernetes control-plane has initialized successfully!\n")
    out("To start using your cluster, you need to run the following as a regular user:\n")
    out("  mkdir -p $HOME/.kube")
    out("  sudo cp -i /etc/kubernetes/admin.conf $HOME/.kube/config")
    out("  sudo chown $(id -u):$(id -g) $HOME/.kube/config\n")
    out("Alternatively, if you are the root user, you can run:\n")
    out("  export KUBECONFIG=/etc/kubernetes/admin.conf\n")
    out("You should now deploy a pod network to the cluster.")
    out('Run "kubectl apply -f [podnetwork].yaml" with one of the options listed at:')
    out("  https://kubernetes.io/docs/concepts/cluster-administration/addons/\n")
    base = f"kubeadm join {endpoint} --token {token} \\\n\t--discovery-token-ca-cert-hash {ca_hash}"
    if cfg.control_plane_endpoint:
        if key:
            out("You can now join any number of control-plane nodes running the following command on each as root:\n")
            out(f"  {base} \\\n\t--control-plane --certificate-key {key}\n")
            out("Please note that the certificate-key gives access to cluster sensitive data, keep it secret!")
            out("As a safeguard, uploaded-certs will be deleted in two hours; If necessary, you can use")
            out('"kubeadm init phase upload-certs --upload-certs" to reload certs afterward.\n')
        else:
            out("You can now join any number of control-plane nodes by copying certificate authorities")
            out("and service account keys on each node and then running the following as root:\n")
            out(f"  {base} \\\n\t--control-plane \n")
    out("Then you can join any number of worker nodes by running the following on each as root:\n")
    out(f"{base} ")


def run_upload_certs_phase(cfg: Config, kubeconfig: str, skip_print: bool) -> int:
    api = Api.from_kubeconfig(kubeconfig, retry_seconds=30)
    key = cfg.certificate_key or generate_certificate_key()
    try:
        upload_certs(api, cfg, key)
    except (ApiError, OSError) as exc:
        raise KubeadmError(f"error uploading certs: {exc}", phase="upload-certs") from exc
    if not skip_print:
        out("[upload-certs] Using certificate key:")
        out(key)
    return 0


def print_join_command(api: Api, token: str, key: str, server: str) -> str:
    ca = load_cert(read_file(f"{KUBERNETES_DIR}/pki/ca.crt"))
    endpoint = server.removeprefix("https://")
    return join_command(endpoint, token, ca_cert_hash(ca), key)
