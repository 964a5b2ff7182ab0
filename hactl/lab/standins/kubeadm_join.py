"""``kubeadm join``: token discovery with CA pinning, download-certs, control-plane and worker join."""

from __future__ import annotations

import json
import os
import subprocess
import time
from typing import Any

import yaml

from .kubeadm_api import Api, ApiError, ns_path, parse_kubeconfig
from .kubeadm_certs import download_certs
from .kubeadm_common import (
    KUBERNETES_DIR,
    KubeadmError,
    P,
    knob_seconds,
    out,
    read_file,
    wait_for,
    warn,
    write_file,
)
from .kubeadm_config import Config, apply_cluster_doc
from .kubeadm_files import (
    etcd_manifest,
    kubeconfig,
    write_control_plane_manifests,
    write_kubeconfigs,
    write_kubelet_files,
    write_manifest,
)
from .kubeadm_init import local_api, mark_control_plane, start_kubelet, wait_api
from .kubeadm_pki import create_pki
from .kubeadm_preflight import (
    init_checks,
    join_node_checks,
    preflight,
    run_checks,
)
from .kubeadm_token import jws_verify, parse_token
from .pkiutil import Pair, ca_cert_hash, load_cert

CLUSTER_INFO = "/api/v1/namespaces/kube-public/configmaps/cluster-info"


def _identity_error(message: str) -> KubeadmError:
    return KubeadmError(f"couldn't validate the identity of the API Server: {message}", phase="preflight")


def validate_discovery(cfg: Config) -> None:
    """``ValidateDiscoveryBootstrapToken`` (config validation, before any phase: exit 3, as
    kubeadm's ValidationExitCode)."""
    if not cfg.ca_cert_hashes and not cfg.unsafe_skip_ca:
        raise KubeadmError(
            'discovery.bootstrapToken.caCertHashes: Invalid value: "": using token-based discovery without '
            "caCertHashes can be unsafe. Set unsafeSkipCAVerification as true in your kubeadm config file or "
            "pass --discovery-token-unsafe-skip-ca-verification flag to continue", code=3)


def discover(cfg: Config) -> tuple[str, bytes]:
    """Token discovery: cluster-info fetched anonymously, CA pinned, JWS checked. -> (server, CA)."""
    endpoint = cfg.discovery_endpoint
    token_id, token_secret = parse_token(cfg.discovery_token)
    validate_discovery(cfg)
    insecure = Api(f"https://{endpoint}", insecure=True, timeout=5)
    timeout = knob_seconds("kubeadm", "discoveryTimeoutSeconds", 300)
    deadline = time.monotonic() + timeout
    last = ""
    while True:
        try:
            cm = insecure.get(CLUSTER_INFO)
            data = cm.get("data") or {}
            payload = data.get("kubeconfig", "")
            jws = data.get(f"jws-kubeconfig-{token_id}")
            if jws is not None:  # the bootstrap signer has signed cluster-info for this token
                break
            last = (f'could not find a JWS signature in the cluster-info ConfigMap for token ID "{token_id}"')
        except (ApiError, OSError) as exc:
            last = str(exc)
        if time.monotonic() > deadline:
            raise _identity_error(last)
        warn(f"[discovery] Failed to request cluster-info, will try again: {last}")
        time.sleep(2)
    if jws is None or not jws_verify(jws, payload, token_secret):
        raise _identity_error("failed to verify JWS signature of received cluster info object, "
                              "can't trust this API Server")
    info = parse_kubeconfig(yaml.safe_load(payload) or {})
    ca_pem: bytes = info.get("ca") or b""
    if not ca_pem:
        raise _identity_error("cluster-info kubeconfig has no certificate-authority-data")
    actual = ca_cert_hash(load_cert(ca_pem))
    if not cfg.unsafe_skip_ca and actual not in cfg.ca_cert_hashes:
        raise _identity_error(f'cluster CA found in cluster-info ConfigMap is invalid: none of the public keys '
                              f'"{actual}" are pinned')
    out(f'[discovery] Requesting info from "{endpoint}" again to validate TLS against the pinned public key')
    secure = Api(f"https://{endpoint}", ca_pem=ca_pem, timeout=10)
    try:
        again = (secure.get(CLUSTER_INFO).get("data") or {}).get("kubeconfig", "")
    except (ApiError, OSError) as exc:
        raise _identity_error(str(exc)) from exc
    if again != payload:
        raise _identity_error("cluster info changed between the insecure and the secure request")
    return str(info.get("server") or f"https://{endpoint}"), ca_pem


def fetch_cluster_config(api: Api, cfg: Config) -> dict[str, Any]:
    out("[preflight] Reading configuration from the cluster...")
    out("[preflight] FYI: You can look at this config file with 'kubectl -n kube-system get cm kubeadm-config -o yaml'")
    try:
        cm = api.get(ns_path("kube-system", "configmaps", "kubeadm-config"))
    except ApiError as exc:
        raise KubeadmError(f"unable to fetch the kubeadm-config ConfigMap: {exc}", phase="preflight") from exc
    doc = yaml.safe_load((cm.get("data") or {}).get("ClusterConfiguration", "")) or {}
    apply_cluster_doc(cfg, doc)
    try:
        kubelet = api.get(ns_path("kube-system", "configmaps", "kubelet-config"))
        conf = yaml.safe_load((kubelet.get("data") or {}).get("kubelet", "")) or {}
        cfg.kubelet_config = {**conf, **cfg.kubelet_config}
    except (ApiError, ValueError):
        pass
    return dict(doc)


def etcdctl(endpoints: list[str], *args: str) -> Any:
    files = {"cacert": "/etc/kubernetes/pki/etcd/ca.crt",
             "cert": "/etc/kubernetes/pki/apiserver-etcd-client.crt",
             "key": "/etc/kubernetes/pki/apiserver-etcd-client.key"}
    argv = ["etcdctl", f"--endpoints={','.join(endpoints)}", "--dial-timeout=5s", "--command-timeout=15s",
            *(f"--{k}={P(v)}" for k, v in files.items()), "-w", "json", *args]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False,
                            env={**os.environ, "ETCDCTL_API": "3"})
    if result.returncode != 0:
        raise KubeadmError(result.stderr.strip() or result.stdout.strip())
    return json.loads(result.stdout or "{}")


def etcd_endpoints(api: Api, cfg: Config) -> list[str]:
    """``etcdutil.NewFromCluster``: the etcd Pods' ``advertise-client-urls`` annotations (what
    the existing members really advertise, whatever the Nodes' InternalIPs), then every member's
    client URLs (``Sync``)."""
    from .kubeadm_reset import _etcd_endpoints

    try:
        seeds = _etcd_endpoints(api, knob_seconds("kubeadm", "etcdEndpointsTimeoutSeconds", 60))
    except RuntimeError as exc:
        raise KubeadmError(f"error creating local etcd static pod manifest file: {exc}",
                           phase="control-plane-join/etcd") from exc
    members = etcdctl(seeds, "member", "list").get("members") or []
    return [u for m in members for u in (m.get("clientURLs") or [])] or seeds


def join_etcd(api: Api, cfg: Config) -> None:
    """``CreateStackedEtcdStaticPodManifestFile`` with EtcdLearnerMode (beta, on by default since
    1.29): the new member is added as a **learner**, its manifest written, then it is promoted to a
    voting member once it has caught up (``MemberPromote``, retried like kubeadm's client does),
    then the cluster must become available."""
    endpoints = etcd_endpoints(api, cfg)
    peer = f"https://{cfg.advertise_address}:2380"
    members = etcdctl(endpoints, "member", "list").get("members") or []
    mine = next((m for m in members if peer in (m.get("peerURLs") or [])), None)
    if mine is None:
        reply = etcdctl(endpoints, "member", "add", cfg.node_name, f"--peer-urls={peer}", "--learner")
        members = reply.get("members") or []
        mine = reply.get("member") or next((m for m in members if peer in (m.get("peerURLs") or [])), None)
    learner = int(mine["ID"]) if mine and mine.get("isLearner") else None
    out("[etcd] Announced new etcd member joining to the existing etcd cluster")
    initial = []
    for member in members:
        urls = member.get("peerURLs") or []
        name = member.get("name") or (cfg.node_name if peer in urls else "")
        if name and urls:
            initial.append(f"{name}={urls[0]}")
    out('[etcd] Creating static Pod manifest for "etcd"')
    write_manifest("etcd", etcd_manifest(cfg, ",".join(initial), state="existing"))
    timeout = knob_seconds("kubeadm", "etcdWaitSeconds", 40)
    if learner is not None:
        promote_learner(endpoints, learner, timeout)
    out(f"[etcd] Waiting for the new etcd member to join the cluster. This can take up to {int(timeout)}s")
    local = [f"https://{cfg.advertise_address}:2379"]
    if not wait_for(lambda: etcdctl(local, "endpoint", "health") is not None, timeout, 1.0):
        raise KubeadmError("error creating local etcd static pod manifest file: timeout waiting for etcd "
                           "cluster to be available", phase="control-plane-join/etcd")


def promote_learner(endpoints: list[str], member_id: int, timeout: float) -> None:
    """Promote the learner once it is in sync with the leader (etcd refuses before: "can only
    promote a learner member which is in sync with leader")."""
    last = ""
    deadline = time.monotonic() + timeout
    while True:
        try:
            etcdctl(endpoints, "member", "promote", f"{member_id:x}")
            return
        except KubeadmError as exc:
            last = str(exc)
            # ErrMemberNotLearner: promoted already (by an attempt whose answer was lost); the
            # not-yet-ready learner says "... which is in sync with leader" and is retried
            if "can only promote a learner member" in last and "in sync with leader" not in last:
                return
        if time.monotonic() > deadline:
            raise KubeadmError(f"error creating local etcd static pod manifest file: learner member {member_id:x} "
                               f"could not be promoted: {last}", phase="control-plane-join/etcd")
        time.sleep(1.0)


def write_kubelet_credentials(cfg: Config, server: str, ca_pem: bytes) -> None:
    if cfg.control_plane:
        # Deviation: a joining control-plane node holds the cluster CA key, so the stand-in signs the
        # kubelet's client certificate itself instead of going through the CSR TLS bootstrap.
        ca = Pair.from_pem(read_file(f"{KUBERNETES_DIR}/pki/ca.crt"),
                           read_file(f"{KUBERNETES_DIR}/pki/ca.key"))
        write_kubeconfigs(cfg, ca, ["kubelet.conf"])
        return
    text = kubeconfig(server, ca_pem, "tls-bootstrap-token-user", cfg.cluster_name,
                      token=cfg.tls_bootstrap_token or cfg.discovery_token)
    write_file(f"{KUBERNETES_DIR}/bootstrap-kubelet.conf", text, 0o600)
    write_file(f"{KUBERNETES_DIR}/pki/ca.crt", ca_pem, 0o644)


def check_no_ready_node(api: Api, name: str) -> None:
    """kubelet-start (cmd/kubeadm/app/cmd/phases/join/kubelet.go): exit before the TLS bootstrap
    when a Node of this name exists and is Ready; a NotReady one is taken over."""
    try:
        node = api.get(f"/api/v1/nodes/{name}")
    except ApiError as exc:
        if exc.status == 404:
            return
        raise KubeadmError(f'cannot get Node "{name}": {exc}', phase="kubelet-start") from exc
    for cond in (node.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready" and cond.get("status") == "True":
            raise KubeadmError(f'a Node with name "{name}" and status "Ready" already exists in the '
                               "cluster. You must delete the existing Node or change the name of "
                               "this new joining Node", phase="kubelet-start")


def check_can_host_control_plane(cfg: Config) -> None:
    """kubeadm's join preflight for a control-plane node: a stable endpoint, and shared certificates
    either downloadable (a certificate key) or already on disk."""
    problems = []
    if not cfg.control_plane_endpoint:
        problems.append("unable to add a new control plane instance to a cluster that doesn't have a stable "
                        "controlPlaneEndpoint address")
    if not cfg.certificate_key:
        missing = [f"{KUBERNETES_DIR}/pki/{name}" for name in ("ca.crt", "ca.key", "sa.key", "sa.pub",
                                                              "front-proxy-ca.crt", "front-proxy-ca.key")
                   if not os.path.exists(P(f"{KUBERNETES_DIR}/pki/{name}"))]
        if missing:
            problems.append("[" + ", ".join(f"failure loading {path}: open {path}: no such file or directory"
                                            for path in missing) + "]")
    if problems:
        raise KubeadmError(
            "\nOne or more conditions for hosting a new control plane instance is not satisfied.\n\n"
            + "\n".join(problems)
            + "\n\nPlease ensure that:\n* The cluster has a stable controlPlaneEndpoint address.\n"
            "* The certificates that must be shared among control plane instances are provided.\n",
            phase="preflight")


def run_join(cfg: Config) -> int:
    validate_discovery(cfg)
    preflight(join_node_checks(cfg), cfg.ignore_preflight)
    server, ca_pem = discover(cfg)
    token_api = Api(server, ca_pem=ca_pem, token=cfg.tls_bootstrap_token or cfg.discovery_token,
                    retry_seconds=30)
    fetch_cluster_config(token_api, cfg)
    if cfg.control_plane:
        check_can_host_control_plane(cfg)
        out("[preflight] Running pre-flight checks before initializing the new control plane instance")
        checks = init_checks(cfg, secondary=True, download_certs=bool(cfg.certificate_key))
        run_checks(checks[1:], cfg.ignore_preflight)  # (IsPrivilegedUser ran with the join checks)
        if cfg.certificate_key:
            download_certs(token_api, cfg, cfg.certificate_key)
        try:
            create_pki(cfg, have_cas=True)
        except FileNotFoundError as exc:
            raise KubeadmError(f"couldn't load the CA certificate authority: {exc}: no such file or directory",
                               phase="control-plane-prepare/certs") from exc
        ca = Pair.from_pem(read_file(f"{KUBERNETES_DIR}/pki/ca.crt"), read_file(f"{KUBERNETES_DIR}/pki/ca.key"))
        write_kubeconfigs(cfg, ca, ["admin.conf", "controller-manager.conf", "scheduler.conf"])
        write_control_plane_manifests(cfg)
    out('[kubelet-start] Downloading configuration for the kubelet from the "kubelet-config" ConfigMap in the '
        "kube-system namespace")
    if not cfg.control_plane and not os.path.exists(P(f"{KUBERNETES_DIR}/pki/ca.crt")):
        write_file(f"{KUBERNETES_DIR}/pki/ca.crt", ca_pem, 0o644)  # written before the check
    check_no_ready_node(token_api, cfg.node_name)
    write_kubelet_credentials(cfg, server, ca_pem)
    write_kubelet_files(cfg)
    start_kubelet()
    out("[kubelet-check] Waiting for a healthy kubelet. This can take up to 4m0s")
    out("[kubelet-start] Waiting for the kubelet to perform the TLS Bootstrap")
    check_api = Api.from_kubeconfig(f"{KUBERNETES_DIR}/admin.conf") if cfg.control_plane else token_api
    timeout = knob_seconds("kubeadm", "kubeletWaitSeconds", 240)
    if not wait_for(lambda: os.path.exists(P(f"{KUBERNETES_DIR}/kubelet.conf"))
                    and check_api.get(f"/api/v1/nodes/{cfg.node_name}") is not None, timeout):
        raise KubeadmError("error waiting for the kubelet to perform the TLS Bootstrap: timed out waiting for "
                           "the condition", phase="kubelet-start")
    if cfg.control_plane:
        admin = Api.from_kubeconfig(f"{KUBERNETES_DIR}/admin.conf", retry_seconds=30)
        if not cfg.external:
            join_etcd(admin, cfg)
        mark_control_plane(admin, cfg)
        wait_api(local_api(cfg), "control-plane-check")
        print_cp_success(cfg)
    else:
        out("\nThis node has joined the cluster:")
        out("* Certificate signing request was sent to apiserver and a response was received.")
        out("* The Kubelet was informed of the new secure connection details.\n")
        out("Run 'kubectl get nodes' on the control-plane to see this node join the cluster.\n")
    return 0


def print_cp_success(cfg: Config) -> None:
    out("\nThis node has joined the cluster and a new control plane instance was created:\n")
    out("* Certificate signing request was sent to apiserver and approval was received.")
    out("* The Kubelet was informed of the new secure connection details.")
    out("* Control plane label and taint were applied to the new node.")
    out("* The Kubernetes control plane instances scaled up.")
    if not cfg.external:
        out("* A new etcd member was added to the local/stacked etcd cluster.")
    out("\nTo start administering your cluster from this node, you need to run the following as a regular user:\n")
    out("\tmkdir -p $HOME/.kube")
    out("\tsudo cp -i /etc/kubernetes/admin.conf $HOME/.kube/config")
    out("\tsudo chown $(id -u):$(id -g) $HOME/.kube/config\n")
    out("Run 'kubectl get nodes' to see this node join the cluster.\n")
