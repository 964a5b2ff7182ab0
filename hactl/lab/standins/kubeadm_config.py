"""kubeadm's configuration: ``--config`` documents (kubeadm.k8s.io/v1beta3 and v1beta4) + flags.

Only the fields the stand-in acts on are read; unknown fields are ignored like the real tool
ignores fields it does not know in lenient mode. ``extraArgs`` accepts both the v1beta3 map and
the v1beta4 list of ``{name, value}``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

from .kubeadm_common import (
    DEFAULT_TOKEN_TTL,
    KubeadmError,
    default_route_address,
    hostname,
    kubernetes_version,
    version_tuple,
)

API_GROUP = "kubeadm.k8s.io"
KNOWN_VERSIONS = ("v1beta3", "v1beta4")


def extra_args(value: Any) -> dict[str, str]:
    if isinstance(value, dict):
        return {str(k): str(v) for k, v in value.items()}
    if isinstance(value, list):
        return {str(i["name"]): str(i.get("value", "")) for i in value if isinstance(i, dict)}
    return {}


@dataclass
class Config:
    """InitConfiguration/JoinConfiguration + ClusterConfiguration, flattened."""

    kubernetes_version: str = ""
    control_plane_endpoint: str = ""
    cluster_name: str = "kubernetes"
    pod_subnet: str = ""
    service_subnet: str = "10.96.0.0/12"
    dns_domain: str = "cluster.local"
    cert_sans: list[str] = field(default_factory=list)
    apiserver_args: dict[str, str] = field(default_factory=dict)
    controller_manager_args: dict[str, str] = field(default_factory=dict)
    scheduler_args: dict[str, str] = field(default_factory=dict)
    etcd_external: dict[str, Any] | None = None
    etcd_local: dict[str, Any] = field(default_factory=dict)
    key_type: str = "rsa"
    image_repository: str = "registry.k8s.io"
    # local node
    node_name: str = ""
    advertise_address: str = ""
    bind_port: int = 6443
    taints: list[dict[str, str]] | None = None
    kubelet_extra_args: dict[str, str] = field(default_factory=dict)
    cri_socket: str = ""
    ignore_preflight: set[str] = field(default_factory=set)
    skip_phases: list[str] = field(default_factory=list)
    # tokens and certificate key
    tokens: list[dict[str, Any]] = field(default_factory=list)
    certificate_key: str = ""
    upload_certs: bool = False
    # join
    discovery_endpoint: str = ""
    discovery_token: str = ""
    tls_bootstrap_token: str = ""
    ca_cert_hashes: list[str] = field(default_factory=list)
    unsafe_skip_ca: bool = False
    control_plane: bool = False
    kubelet_config: dict[str, Any] = field(default_factory=dict)
    cluster_doc: dict[str, Any] = field(default_factory=dict)

    @property
    def external(self) -> bool:
        return self.etcd_external is not None

    @property
    def etcd_data_dir(self) -> str:
        return str(self.etcd_local.get("dataDir") or "/var/lib/etcd")

    def endpoint(self) -> str:
        """controlPlaneEndpoint, or the local API endpoint when none was given."""
        if self.control_plane_endpoint:
            host = self.control_plane_endpoint
            return host if ":" in host.split("]")[-1] else f"{host}:{self.bind_port}"
        return f"{self.advertise_address}:{self.bind_port}"


def load_documents(path: str) -> list[dict[str, Any]]:
    try:
        with open(path) as handle:  # a command-line path: never relocated
            docs = [d for d in yaml.safe_load_all(handle) if isinstance(d, dict)]
    except OSError as exc:
        raise KubeadmError(f"unable to read config from \"{path}\" : {exc}") from exc
    except yaml.YAMLError as exc:
        raise KubeadmError(f"error converting YAML to JSON: {exc}") from exc
    known = known_versions()
    for doc in docs:
        group, _, version = str(doc.get("apiVersion", "")).partition("/")
        if group == API_GROUP and version not in known:
            raise KubeadmError(
                f'no kind "{doc.get("kind")}" is registered for version "{doc.get("apiVersion")}" in scheme '
                '"k8s.io/kubernetes/cmd/kubeadm/app/apis/kubeadm/scheme/scheme.go:31"'
            )
    return docs


def known_versions() -> tuple[str, ...]:
    """The kubeadm.k8s.io versions this binary's scheme registers: v1beta4 exists from 1.31 on."""
    return KNOWN_VERSIONS if version_tuple(kubernetes_version()) >= (1, 31, 0) else ("v1beta3",)


def minimum_control_plane_version() -> tuple[int, int, int]:
    """kubeadm's MinimumControlPlaneVersion: its own minor - 1, patch 0."""
    major, minor, _ = version_tuple(kubernetes_version())
    return (major, minor - 1, 0)


def check_control_plane_version(version: str) -> None:
    """``NormalizeKubernetesVersion``: a control plane older than kubeadm's minor - 1 is refused."""
    minimum = minimum_control_plane_version()
    if version_tuple(version) < minimum:
        raise KubeadmError(
            "this version of kubeadm only supports deploying clusters with the control plane version >= "
            f"{'.'.join(map(str, minimum))}. Current version: {version}")


def apply_cluster_doc(cfg: Config, doc: dict[str, Any]) -> None:
    cfg.cluster_doc = doc
    cfg.kubernetes_version = str(doc.get("kubernetesVersion") or cfg.kubernetes_version)
    cfg.control_plane_endpoint = str(doc.get("controlPlaneEndpoint") or cfg.control_plane_endpoint)
    cfg.cluster_name = str(doc.get("clusterName") or cfg.cluster_name)
    net = doc.get("networking") or {}
    cfg.pod_subnet = str(net.get("podSubnet") or cfg.pod_subnet)
    cfg.service_subnet = str(net.get("serviceSubnet") or cfg.service_subnet)
    cfg.dns_domain = str(net.get("dnsDomain") or cfg.dns_domain)
    api = doc.get("apiServer") or {}
    cfg.cert_sans = [str(s) for s in api.get("certSANs") or []]
    cfg.apiserver_args.update(extra_args(api.get("extraArgs")))
    cfg.controller_manager_args.update(extra_args((doc.get("controllerManager") or {}).get("extraArgs")))
    cfg.scheduler_args.update(extra_args((doc.get("scheduler") or {}).get("extraArgs")))
    etcd = doc.get("etcd") or {}
    if etcd.get("external"):
        cfg.etcd_external = dict(etcd["external"])
    cfg.etcd_local = dict(etcd.get("local") or {})
    algo = str(doc.get("encryptionAlgorithm") or "RSA-2048")
    cfg.key_type = "ecdsa" if algo.upper().startswith("ECDSA") else "rsa"
    cfg.image_repository = str(doc.get("imageRepository") or cfg.image_repository)


def apply_node_registration(cfg: Config, reg: dict[str, Any]) -> None:
    cfg.node_name = str(reg.get("name") or cfg.node_name)
    if "taints" in reg:
        cfg.taints = list(reg.get("taints") or [])
    cfg.kubelet_extra_args.update(extra_args(reg.get("kubeletExtraArgs")))
    cfg.cri_socket = str(reg.get("criSocket") or cfg.cri_socket)
    cfg.ignore_preflight |= {str(i) for i in reg.get("ignorePreflightErrors") or []}


def from_documents(cfg: Config, docs: list[dict[str, Any]]) -> None:
    for doc in docs:
        kind = doc.get("kind")
        if kind == "ClusterConfiguration":
            apply_cluster_doc(cfg, doc)
        elif kind == "InitConfiguration":
            apply_node_registration(cfg, doc.get("nodeRegistration") or {})
            local = doc.get("localAPIEndpoint") or {}
            cfg.advertise_address = str(local.get("advertiseAddress") or cfg.advertise_address)
            cfg.bind_port = int(local.get("bindPort") or cfg.bind_port)
            cfg.tokens = list(doc.get("bootstrapTokens") or cfg.tokens)
            cfg.certificate_key = str(doc.get("certificateKey") or cfg.certificate_key)
            cfg.skip_phases += [str(p) for p in doc.get("skipPhases") or []]
        elif kind == "JoinConfiguration":
            apply_node_registration(cfg, doc.get("nodeRegistration") or {})
            disc = doc.get("discovery") or {}
            bt = disc.get("bootstrapToken") or {}
            cfg.discovery_endpoint = str(bt.get("apiServerEndpoint") or cfg.discovery_endpoint)
            cfg.discovery_token = str(bt.get("token") or cfg.discovery_token)
            cfg.ca_cert_hashes += [str(h) for h in bt.get("caCertHashes") or []]
            cfg.unsafe_skip_ca = bool(bt.get("unsafeSkipCAVerification", cfg.unsafe_skip_ca))
            cfg.tls_bootstrap_token = str(disc.get("tlsBootstrapToken") or cfg.tls_bootstrap_token)
            cp = doc.get("controlPlane")
            if cp is not None:
                cfg.control_plane = True
                local = (cp or {}).get("localAPIEndpoint") or {}
                cfg.advertise_address = str(local.get("advertiseAddress") or cfg.advertise_address)
                cfg.bind_port = int(local.get("bindPort") or cfg.bind_port)
                cfg.certificate_key = str((cp or {}).get("certificateKey") or cfg.certificate_key)
            cfg.skip_phases += [str(p) for p in doc.get("skipPhases") or []]
        elif kind == "KubeletConfiguration":
            cfg.kubelet_config = doc


def finish(cfg: Config) -> Config:
    """Apply kubeadm's defaults to what flags and documents left empty."""
    explicit = bool(cfg.kubernetes_version)
    cfg.kubernetes_version = cfg.kubernetes_version or kubernetes_version()
    if not cfg.kubernetes_version.startswith("v"):
        cfg.kubernetes_version = "v" + cfg.kubernetes_version
    if explicit:
        check_control_plane_version(cfg.kubernetes_version)
    cfg.node_name = cfg.node_name or hostname()
    # like kubeadm: "found advertiseAddress empty; using default interface's IP address"
    cfg.advertise_address = cfg.advertise_address or default_route_address()
    if not cfg.tokens:
        cfg.tokens = [{"ttl": None}]
    for token in cfg.tokens:
        token.setdefault("ttl", None)
        if token["ttl"] is None:
            token["ttl"] = DEFAULT_TOKEN_TTL
    return cfg


def cluster_configuration(cfg: Config) -> dict[str, Any]:
    """The ClusterConfiguration kubeadm stores in the kubeadm-config ConfigMap (v1beta3)."""
    doc: dict[str, Any] = {
        "apiVersion": "kubeadm.k8s.io/v1beta3",
        "kind": "ClusterConfiguration",
        "apiServer": {"timeoutForControlPlane": "4m0s"},
        "certificatesDir": "/etc/kubernetes/pki",
        "clusterName": cfg.cluster_name,
        "controlPlaneEndpoint": cfg.control_plane_endpoint,
        "controllerManager": {},
        "dns": {},
        "imageRepository": cfg.image_repository,
        "kubernetesVersion": cfg.kubernetes_version,
        "networking": {"dnsDomain": cfg.dns_domain, "serviceSubnet": cfg.service_subnet},
        "scheduler": {},
    }
    if cfg.pod_subnet:
        doc["networking"]["podSubnet"] = cfg.pod_subnet
    if cfg.cert_sans:
        doc["apiServer"]["certSANs"] = cfg.cert_sans
    for key, args in (("apiServer", cfg.apiserver_args), ("controllerManager", cfg.controller_manager_args),
                      ("scheduler", cfg.scheduler_args)):
        if args:
            doc[key]["extraArgs"] = dict(args)
    if cfg.etcd_external is not None:
        doc["etcd"] = {"external": cfg.etcd_external}
    else:
        local = dict(cfg.etcd_local)
        local.setdefault("dataDir", "/var/lib/etcd")
        doc["etcd"] = {"local": local}
    return doc
