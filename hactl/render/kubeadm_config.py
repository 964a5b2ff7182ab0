"""kubeadm configuration documents: InitConfiguration + ClusterConfiguration, JoinConfiguration.

API version by Kubernetes version: ``kubeadm.k8s.io/v1beta4`` for 1.31 and newer, ``v1beta3``
below. The field that differs in what hactl renders: ``extraArgs``/``kubeletExtraArgs`` are a
map in v1beta3 and a list of ``{name, value}`` in v1beta4.

Secrets (the bootstrap token, the certificate key) never go into the init config: hactl passes
the certificate key on the command line as a :class:`~hactl.sensitive.Sensitive` argv item. A
join config needs the token (kubeadm refuses ``--token`` next to ``--config``), so the join
documents hold ``Sensitive`` values: :func:`render_join_config` masks them for plans and logs,
:func:`join_config_file` reveals them only inside a masked 0600 :class:`RenderedFile` for the wire.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from hactl.render.etcd import client_endpoints
from hactl.render.etcd_pki import (
    APISERVER_ETCD_CLIENT_CERT,
    APISERVER_ETCD_CLIENT_KEY,
    K8S_ETCD_CA,
)
from hactl.render.files import RenderedFile, public
from hactl.sensitive import MASK, Sensitive
from hactl.spec.models import Cluster, Host

V1BETA3 = "kubeadm.k8s.io/v1beta3"
V1BETA4 = "kubeadm.k8s.io/v1beta4"
API_BIND_PORT = 6443
INIT_CONFIG_PATH = "/etc/hactl/kubeadm-config.yaml"
JOIN_CONFIG_PATH = "/etc/hactl/kubeadm-join.yaml"

Document = dict[str, Any]


def api_version(cluster: Cluster) -> str:
    """``kubeadm.k8s.io/v1beta4`` for Kubernetes >= 1.31, else ``v1beta3``."""
    major, minor, _ = cluster.kubernetes.version_tuple
    return V1BETA4 if (major, minor) >= (1, 31) else V1BETA3


def extra_args(version: str, args: Mapping[str, str]) -> Any:
    """``extraArgs`` in the shape of ``version``: a map (v1beta3) or ``[{name, value}]`` (v1beta4)."""
    if version == V1BETA3:
        return dict(args)
    return [{"name": name, "value": value} for name, value in args.items()]


def _node_registration(cluster: Cluster, host: Host) -> Document:
    # node-ip pins the kubelet to the spec's address (hosts with several interfaces).
    return {
        "name": host.name,
        "kubeletExtraArgs": extra_args(api_version(cluster), {"node-ip": str(host.address)}),
    }


def _api_endpoint(host: Host) -> Document:
    return {"advertiseAddress": str(host.address), "bindPort": API_BIND_PORT}


def _master(cluster: Cluster, name: str) -> Host:
    for host in cluster.masters:
        if host.name == name:
            return host
    raise KeyError(f"{name!r} is not a master of {cluster.metadata.name!r}")


def api_server_cert_sans(cluster: Cluster) -> list[str]:
    """Extra SANs for the API server certificate: every name and address clients may use to
    reach it through the load balancer (kubeadm adds the node's own names itself)."""
    lb = cluster.load_balancer
    names = [cluster.endpoint_host, lb.dns_name, str(lb.vip) if lb.vip else None]
    names += [str(host.address) for host in lb.hosts]
    return list(dict.fromkeys(n for n in names if n))


def cluster_configuration(cluster: Cluster) -> Document:
    if cluster.etcd.topology == "external":
        etcd: Document = {
            "external": {
                "endpoints": client_endpoints(cluster),
                "caFile": K8S_ETCD_CA,
                "certFile": APISERVER_ETCD_CLIENT_CERT,
                "keyFile": APISERVER_ETCD_CLIENT_KEY,
            }
        }
    else:
        etcd = {"local": {"dataDir": cluster.etcd.data_dir}}
    return {
        "apiVersion": api_version(cluster),
        "kind": "ClusterConfiguration",
        "clusterName": cluster.metadata.name,
        "kubernetesVersion": cluster.kubernetes.version,
        "controlPlaneEndpoint": f"{cluster.endpoint_host}:{cluster.endpoint_port}",
        "networking": {
            "podSubnet": str(cluster.kubernetes.pod_subnet),
            "serviceSubnet": str(cluster.kubernetes.service_subnet),
            "dnsDomain": cluster.kubernetes.dns_domain,
        },
        "etcd": etcd,
        "apiServer": {"certSANs": api_server_cert_sans(cluster)},
    }


def init_configuration(cluster: Cluster, master: str | None = None) -> Document:
    """InitConfiguration for ``master`` (default: the first master, where ``kubeadm init`` runs).
    No bootstrap tokens and no certificate key: those travel as Sensitive argv."""
    host = _master(cluster, master) if master else cluster.masters[0]
    return {
        "apiVersion": api_version(cluster),
        "kind": "InitConfiguration",
        "localAPIEndpoint": _api_endpoint(host),
        "nodeRegistration": _node_registration(cluster, host),
    }


def render_init_config(cluster: Cluster, master: str | None = None) -> str:
    """``InitConfiguration`` + ``ClusterConfiguration`` as one YAML stream (no secrets). The same
    file serves ``kubeadm init --config`` and, later, ``kubeadm init phase upload-certs --config``
    (required with external etcd)."""
    return dump_documents([init_configuration(cluster, master), cluster_configuration(cluster)])


def init_config_file(cluster: Cluster, master: str | None = None) -> RenderedFile:
    """:func:`render_init_config` at :data:`INIT_CONFIG_PATH` (kept on every master for later
    ``kubeadm init phase upload-certs --config``)."""
    return public(INIT_CONFIG_PATH, render_init_config(cluster, master))


@dataclass(frozen=True)
class JoinCredentials:
    """What a join needs from the running cluster. ``token`` and ``certificate_key`` are secrets."""

    token: Sensitive
    ca_cert_hashes: tuple[str, ...]
    """``sha256:<hex>`` pins of the cluster CA (:func:`hactl.render.pki.spki_sha256`)."""
    certificate_key: Sensitive | None = None
    """Only for control-plane joins: decrypts the ``kubeadm-certs`` Secret."""


def join_configuration(cluster: Cluster, node: str, credentials: JoinCredentials) -> Document:
    """JoinConfiguration for ``node``: a control-plane join for a master (needs a certificate
    key), a worker join otherwise. Secret fields hold ``Sensitive`` values."""
    host = cluster.host(node)
    is_master = "master" in cluster.roles(node)
    if not is_master and "worker" not in cluster.roles(node):
        raise ValueError(f"{node!r} is neither a master nor a worker; nothing to join")
    if not credentials.ca_cert_hashes:
        raise ValueError(
            "a join needs the CA's sha256 pin (discovery without CA pinning is unsafe)"
        )
    doc: Document = {
        "apiVersion": api_version(cluster),
        "kind": "JoinConfiguration",
        "discovery": {
            "bootstrapToken": {
                "apiServerEndpoint": f"{cluster.endpoint_host}:{cluster.endpoint_port}",
                "token": credentials.token,
                "caCertHashes": list(credentials.ca_cert_hashes),
            }
        },
        "nodeRegistration": _node_registration(cluster, host),
    }
    if is_master:
        if credentials.certificate_key is None:
            raise ValueError(f"control-plane join of {node!r} needs a certificate key")
        doc["controlPlane"] = {
            "localAPIEndpoint": _api_endpoint(host),
            "certificateKey": credentials.certificate_key,
        }
    return doc


def render_join_config(cluster: Cluster, node: str, credentials: JoinCredentials) -> str:
    """The join config as shown in plans and logs: secrets replaced by the mask."""
    return dump_documents([join_configuration(cluster, node, credentials)], reveal=False)


def join_config_file(cluster: Cluster, node: str, credentials: JoinCredentials) -> RenderedFile:
    """The join config for the wire: real secrets, but wrapped in Sensitive and mode 0600."""
    text = dump_documents([join_configuration(cluster, node, credentials)], reveal=True)
    return RenderedFile(JOIN_CONFIG_PATH, Sensitive(text), 0o600)


def _resolve(value: Any, reveal: bool) -> Any:
    if isinstance(value, Sensitive):
        return value.reveal() if reveal else MASK
    if isinstance(value, dict):
        return {key: _resolve(item, reveal) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_resolve(item, reveal) for item in value]
    return value


def dump_documents(docs: list[Document], *, reveal: bool = False) -> str:
    """YAML stream of ``docs`` in their construction order (deterministic); Sensitive values are
    masked unless ``reveal`` (the wire only)."""
    return "---\n".join(
        yaml.safe_dump(_resolve(doc, reveal), sort_keys=False, default_flow_style=False)
        for doc in docs
    )
