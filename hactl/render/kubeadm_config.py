"""kubeadm configuration documents: InitConfiguration + ClusterConfiguration, JoinConfiguration.

API version by Kubernetes version: ``kubeadm.k8s.io/v1beta4`` for 1.31 and newer, ``v1beta3``
below. The field that differs in what hactl renders: ``extraArgs``/``kubeletExtraArgs`` are a
map in v1beta3 and a list of ``{name, value}`` in v1beta4.

Secrets (the bootstrap token, the certificate key) never go on a command line: real kubeadm
refuses ``--certificate-key``/``--token``/``--control-plane`` next to ``--config``, and argv is
readable by every local user (``ps``). They go into short-lived 0600 files instead:

- :func:`init_secret_config_file`: the InitConfiguration with ``certificateKey`` (+ the
  ClusterConfiguration) for ``kubeadm init --config F --upload-certs``, removed after init;
- :func:`join_config_file`: the JoinConfiguration (token, CA pin, ``controlPlane`` with the
  certificate key for a master) for ``kubeadm join --config F``, removed after the join.

The long-lived :data:`INIT_CONFIG_PATH` (:func:`render_init_config`) holds no secret: ``kubeadm
init phase upload-certs --upload-certs --config`` reuses it, and a ``certificateKey`` there would
make kubeadm re-upload under that old key instead of generating a fresh one. Secret fields hold
``Sensitive`` values: :func:`render_join_config` masks them for plans and logs; the ``*_file``
functions reveal them only inside a masked 0600 :class:`RenderedFile` for the wire.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from hactl import hostlayout
from hactl.hostlayout import APISERVER_ETCD_CLIENT_CERT, APISERVER_ETCD_CLIENT_KEY, K8S_ETCD_CA
from hactl.render.etcd import client_endpoints
from hactl.render.files import RenderedFile, public
from hactl.sensitive import MASK, Sensitive
from hactl.spec.models import Cluster, Host

V1BETA3 = "kubeadm.k8s.io/v1beta3"
V1BETA4 = "kubeadm.k8s.io/v1beta4"
API_BIND_PORT = 6443
INIT_CONFIG_PATH = hostlayout.KUBEADM_CONFIG
"""Long-lived, no secret: ``kubeadm init phase upload-certs --config`` reuses it."""
SECRET_CONFIG_DIR = hostlayout.HACTL_RUN
"""tmpfs on systemd hosts: a secret file left by a killed run never reaches a disk and is gone
at the next boot (the folder is created 0700 by the transport's ``umask 077``)."""
INIT_SECRET_CONFIG_PATH = hostlayout.KUBEADM_INIT_CONFIG
"""InitConfiguration with ``certificateKey``: written 0600 before ``kubeadm init``, removed after."""
JOIN_CONFIG_PATH = hostlayout.KUBEADM_JOIN_CONFIG
"""JoinConfiguration with the token (and key): written 0600 before ``kubeadm join``, removed after."""
CERTIFICATE_KEY_RE = re.compile(r"[0-9a-f]{64}")
"""kubeadm's certificate key: 32 bytes (AES-256), hex (``ValidateCertificateKey``)."""
TOKEN_RE = re.compile(r"[a-z0-9]{6}\.[a-z0-9]{16}")
"""kubeadm's bootstrap token format (``BootstrapTokenPattern``)."""

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
        "controlPlaneEndpoint": cluster.control_plane_endpoint,
        "networking": {
            "podSubnet": str(cluster.kubernetes.pod_subnet),
            "serviceSubnet": str(cluster.kubernetes.service_subnet),
            "dnsDomain": cluster.kubernetes.dns_domain,
        },
        "etcd": etcd,
        "apiServer": {"certSANs": api_server_cert_sans(cluster)},
    }


def _check_key(key: Sensitive) -> Sensitive:
    if not CERTIFICATE_KEY_RE.fullmatch(key.reveal()):
        raise ValueError("a certificate key must be 32 random bytes in lower-case hex (64 characters)")
    return key


def _check_token(token: Sensitive) -> Sensitive:
    if not TOKEN_RE.fullmatch(token.reveal()):
        raise ValueError("a bootstrap token must look like [a-z0-9]{6}.[a-z0-9]{16}")
    return token


def init_configuration(
    cluster: Cluster, master: str | None = None, certificate_key: Sensitive | None = None
) -> Document:
    """InitConfiguration for ``master`` (default: the first master, where ``kubeadm init`` runs).
    No bootstrap tokens (kubeadm makes one); ``certificateKey`` only when given (the short-lived
    init file, never the long-lived one)."""
    host = _master(cluster, master) if master else cluster.masters[0]
    doc: Document = {
        "apiVersion": api_version(cluster),
        "kind": "InitConfiguration",
        "localAPIEndpoint": _api_endpoint(host),
        "nodeRegistration": _node_registration(cluster, host),
    }
    if certificate_key is not None:
        doc["certificateKey"] = _check_key(certificate_key)
    return doc


def render_init_config(cluster: Cluster, master: str | None = None) -> str:
    """``InitConfiguration`` + ``ClusterConfiguration`` as one YAML stream (no secrets). The same
    file serves ``kubeadm init --config`` and, later, ``kubeadm init phase upload-certs --config``
    (required with external etcd)."""
    return dump_documents([init_configuration(cluster, master), cluster_configuration(cluster)])


def init_config_file(cluster: Cluster, master: str | None = None) -> RenderedFile:
    """:func:`render_init_config` at :data:`INIT_CONFIG_PATH` (kept on every master for later
    ``kubeadm init phase upload-certs --config``)."""
    return public(INIT_CONFIG_PATH, render_init_config(cluster, master))


def init_secret_config_file(
    cluster: Cluster, certificate_key: Sensitive, master: str | None = None
) -> RenderedFile:
    """InitConfiguration with ``certificateKey`` + ClusterConfiguration for ``kubeadm init --config
    F --upload-certs`` (kubeadm then encrypts the ``kubeadm-certs`` Secret with hactl's key, so the
    key is known without reading it back). 0600, Sensitive content; delete it after init."""
    docs = [init_configuration(cluster, master, certificate_key), cluster_configuration(cluster)]
    return RenderedFile(INIT_SECRET_CONFIG_PATH, Sensitive(dump_documents(docs, reveal=True)), 0o600)


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
    key), a worker join otherwise. Secret fields hold ``Sensitive`` values.

    ``kubeadm join --config F`` takes no ``--control-plane``/``--token``/``--certificate-key``
    next to it: the ``controlPlane`` stanza alone makes the join a control-plane join. The node
    name, the advertise address and the kubelet's node-ip are the spec's (kubeadm would otherwise
    take the hostname and the default-route interface's address)."""
    host = cluster.host(node)
    is_master = "master" in cluster.roles(node)
    if not is_master and "worker" not in cluster.roles(node):
        raise ValueError(f"{node!r} is neither a master nor a worker; nothing to join")
    if not credentials.ca_cert_hashes:
        raise ValueError(
            "a join needs the CA's sha256 pin (discovery without CA pinning is unsafe)"
        )
    _check_token(credentials.token)
    doc: Document = {
        "apiVersion": api_version(cluster),
        "kind": "JoinConfiguration",
        "discovery": {
            "bootstrapToken": {
                "apiServerEndpoint": cluster.control_plane_endpoint,
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
            "certificateKey": _check_key(credentials.certificate_key),
        }
    return doc


def render_join_config(cluster: Cluster, node: str, credentials: JoinCredentials) -> str:
    """The join config as shown in plans and logs: secrets replaced by the mask."""
    return dump_documents([join_configuration(cluster, node, credentials)], reveal=False)


def join_config_file(cluster: Cluster, node: str, credentials: JoinCredentials) -> RenderedFile:
    """The join config for the wire: real secrets, but wrapped in Sensitive and mode 0600, at
    :data:`JOIN_CONFIG_PATH`; delete it after the join (also when the join fails)."""
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
