"""The files kubeadm writes: kubeconfigs, static Pod manifests, the kubelet's config and flags."""

from __future__ import annotations

import base64
from typing import Any

import yaml

from .kubeadm_common import (
    ADMIN_GROUP,
    KUBELET_DIR,
    KUBERNETES_DIR,
    MANIFESTS_DIR,
    P,
    hostname,
    knobs,
    out,
    write_file,
)
from .kubeadm_config import Config
from .kubeadm_pki import etcd_client_files, first_service_ip
from .pkiutil import Pair, new_signed

# file -> (user name, CN, organizations, "endpoint" | "local")
KUBECONFIGS: dict[str, tuple[str, str, tuple[str, ...], str]] = {
    "admin.conf": ("kubernetes-admin", "kubernetes-admin", (ADMIN_GROUP,), "endpoint"),
    "super-admin.conf": ("kubernetes-super-admin", "kubernetes-super-admin", ("system:masters",), "endpoint"),
    "kubelet.conf": ("system:node:{node}", "system:node:{node}", ("system:nodes",), "endpoint"),
    "controller-manager.conf": ("system:kube-controller-manager", "system:kube-controller-manager", (), "local"),
    "scheduler.conf": ("system:kube-scheduler", "system:kube-scheduler", (), "local"),
}


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def kubeconfig(server: str, ca_pem: bytes, user: str, cluster: str = "kubernetes", *,
               cert_pem: bytes | None = None, key_pem: bytes | None = None,
               token: str | None = None) -> str:
    creds: dict[str, str] = {}
    if cert_pem and key_pem:
        creds = {"client-certificate-data": b64(cert_pem), "client-key-data": b64(key_pem)}
    if token:
        creds["token"] = token
    doc = {
        "apiVersion": "v1",
        "clusters": [{"cluster": {"certificate-authority-data": b64(ca_pem), "server": server},
                      "name": cluster}],
        "contexts": [{"context": {"cluster": cluster, "user": user}, "name": f"{user}@{cluster}"}],
        "current-context": f"{user}@{cluster}",
        "kind": "Config",
        "preferences": {},
        "users": [{"name": user, "user": creds}],
    }
    return yaml.safe_dump(doc, sort_keys=False)


def write_kubeconfigs(cfg: Config, ca: Pair, names: list[str]) -> None:
    out(f'[kubeconfig] Using kubeconfig folder "{KUBERNETES_DIR}"')
    for name in names:
        user, cn, orgs, where = KUBECONFIGS[name]
        user, cn = user.format(node=cfg.node_name), cn.format(node=cfg.node_name)
        server = f"https://{cfg.endpoint()}" if where == "endpoint" else \
            f"https://{cfg.advertise_address}:{cfg.bind_port}"
        pair = new_signed(ca, cn, role="client", organizations=orgs, kind=cfg.key_type)
        out(f'[kubeconfig] Writing "{name}" kubeconfig file')
        text = kubeconfig(server, ca.cert_pem(), user, cfg.cluster_name,
                          cert_pem=pair.cert_pem(), key_pem=pair.key_pem())
        write_file(f"{KUBERNETES_DIR}/{name}", text, 0o600)


def _args(defaults: dict[str, str], *overrides: dict[str, str]) -> list[str]:
    merged = dict(defaults)
    for extra in overrides:
        merged.update(extra)
    return [f"--{k}={v}" for k, v in sorted(merged.items())]


def _pod(name: str, component: str, image: str, command: list[str], probe: dict[str, Any],
         annotations: dict[str, str], mounts: list[tuple[str, str]]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "annotations": annotations,
            "labels": {"component": component, "tier": "control-plane"},
            "name": name,
            "namespace": "kube-system",
        },
        "spec": {
            "containers": [{
                "command": command,
                "image": image,
                "imagePullPolicy": "IfNotPresent",
                "livenessProbe": {"failureThreshold": 8, "httpGet": probe, "initialDelaySeconds": 10,
                                  "periodSeconds": 10, "timeoutSeconds": 15},
                "name": name,
                "resources": {"requests": {"cpu": "250m" if component == "kube-apiserver" else "100m"}},
                "volumeMounts": [{"mountPath": path, "name": vol, "readOnly": vol != "etcd-data"}
                                 for vol, path in mounts],
            }],
            "hostNetwork": True,
            "priority": 2000001000,
            "priorityClassName": "system-node-critical",
            "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
            "volumes": [{"hostPath": {"path": path, "type": "DirectoryOrCreate"}, "name": vol}
                        for vol, path in mounts],
        },
        "status": {},
    }


def lab_extra(name: str) -> dict[str, str]:
    value = knobs("kubeadm").get(name) or {}
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}


def apiserver_manifest(cfg: Config) -> dict[str, Any]:
    etcd = etcd_client_files(cfg)
    servers = ",".join(cfg.etcd_external.get("endpoints") or []) if cfg.etcd_external else \
        "https://127.0.0.1:2379"
    pki_dir = P("/etc/kubernetes/pki")
    defaults = {
        "advertise-address": cfg.advertise_address,
        "allow-privileged": "true",
        "authorization-mode": "Node,RBAC",
        "client-ca-file": f"{pki_dir}/ca.crt",
        "enable-admission-plugins": "NodeRestriction",
        "enable-bootstrap-token-auth": "true",
        "etcd-cafile": P(etcd["ca"]),
        "etcd-certfile": P(etcd["cert"]),
        "etcd-keyfile": P(etcd["key"]),
        "etcd-servers": servers,
        "kubelet-client-certificate": f"{pki_dir}/apiserver-kubelet-client.crt",
        "kubelet-client-key": f"{pki_dir}/apiserver-kubelet-client.key",
        "kubelet-preferred-address-types": "InternalIP,ExternalIP,Hostname",
        "proxy-client-cert-file": f"{pki_dir}/front-proxy-client.crt",
        "proxy-client-key-file": f"{pki_dir}/front-proxy-client.key",
        "requestheader-allowed-names": "front-proxy-client",
        "requestheader-client-ca-file": f"{pki_dir}/front-proxy-ca.crt",
        "requestheader-extra-headers-prefix": "X-Remote-Extra-",
        "requestheader-group-headers": "X-Remote-Group",
        "requestheader-username-headers": "X-Remote-User",
        "secure-port": str(cfg.bind_port),
        "service-account-issuer": f"https://kubernetes.default.svc.{cfg.dns_domain}",
        "service-account-key-file": f"{pki_dir}/sa.pub",
        "service-account-signing-key-file": f"{pki_dir}/sa.key",
        "service-cluster-ip-range": cfg.service_subnet,
        "tls-cert-file": f"{pki_dir}/apiserver.crt",
        "tls-private-key-file": f"{pki_dir}/apiserver.key",
    }
    command = ["kube-apiserver", *_args(defaults, lab_extra("apiServerExtraArgs"), cfg.apiserver_args)]
    probe = {"host": cfg.advertise_address, "path": "/livez", "port": cfg.bind_port, "scheme": "HTTPS"}
    ann = {"kubeadm.kubernetes.io/kube-apiserver.advertise-address.endpoint":
           f"{cfg.advertise_address}:{cfg.bind_port}"}
    return _pod("kube-apiserver", "kube-apiserver", f"{cfg.image_repository}/kube-apiserver:{cfg.kubernetes_version}",
                command, probe, ann, [("ca-certs", "/etc/ssl/certs"), ("k8s-certs", pki_dir)])


def controller_manager_manifest(cfg: Config) -> dict[str, Any]:
    conf, pki_dir = P("/etc/kubernetes/controller-manager.conf"), P("/etc/kubernetes/pki")
    defaults = {
        "authentication-kubeconfig": conf,
        "authorization-kubeconfig": conf,
        "bind-address": "127.0.0.1",
        "client-ca-file": f"{pki_dir}/ca.crt",
        "cluster-name": cfg.cluster_name,
        "cluster-signing-cert-file": f"{pki_dir}/ca.crt",
        "cluster-signing-key-file": f"{pki_dir}/ca.key",
        "controllers": "*,bootstrapsigner,tokencleaner",
        "kubeconfig": conf,
        "leader-elect": "true",
        "requestheader-client-ca-file": f"{pki_dir}/front-proxy-ca.crt",
        "root-ca-file": f"{pki_dir}/ca.crt",
        "service-account-private-key-file": f"{pki_dir}/sa.key",
        "service-cluster-ip-range": cfg.service_subnet,
        "use-service-account-credentials": "true",
    }
    if cfg.pod_subnet:
        defaults["allocate-node-cidrs"] = "true"
        defaults["cluster-cidr"] = cfg.pod_subnet
    command = ["kube-controller-manager",
               *_args(defaults, lab_extra("controllerManagerExtraArgs"), cfg.controller_manager_args)]
    probe = {"host": "127.0.0.1", "path": "/healthz", "port": 10257, "scheme": "HTTPS"}
    return _pod("kube-controller-manager", "kube-controller-manager",
                f"{cfg.image_repository}/kube-controller-manager:{cfg.kubernetes_version}", command, probe, {},
                [("k8s-certs", pki_dir), ("kubeconfig", conf)])


def scheduler_manifest(cfg: Config) -> dict[str, Any]:
    conf = P("/etc/kubernetes/scheduler.conf")
    defaults = {"authentication-kubeconfig": conf, "authorization-kubeconfig": conf,
                "bind-address": "127.0.0.1", "kubeconfig": conf, "leader-elect": "true"}
    command = ["kube-scheduler", *_args(defaults, lab_extra("schedulerExtraArgs"), cfg.scheduler_args)]
    probe = {"host": "127.0.0.1", "path": "/healthz", "port": 10259, "scheme": "HTTPS"}
    return _pod("kube-scheduler", "kube-scheduler", f"{cfg.image_repository}/kube-scheduler:{cfg.kubernetes_version}",
                command, probe, {}, [("kubeconfig", conf)])


def etcd_manifest(cfg: Config, initial_cluster: str, state: str = "new") -> dict[str, Any]:
    ip, pki_dir = cfg.advertise_address, P("/etc/kubernetes/pki/etcd")
    defaults = {
        "advertise-client-urls": f"https://{ip}:2379",
        "cert-file": f"{pki_dir}/server.crt",
        "client-cert-auth": "true",
        "data-dir": P(cfg.etcd_data_dir),
        "initial-advertise-peer-urls": f"https://{ip}:2380",
        "initial-cluster": initial_cluster,
        "key-file": f"{pki_dir}/server.key",
        "listen-client-urls": f"https://127.0.0.1:2379,https://{ip}:2379",
        "listen-metrics-urls": "http://127.0.0.1:2381",
        "listen-peer-urls": f"https://{ip}:2380",
        "name": cfg.node_name,
        "peer-cert-file": f"{pki_dir}/peer.crt",
        "peer-client-cert-auth": "true",
        "peer-key-file": f"{pki_dir}/peer.key",
        "peer-trusted-ca-file": f"{pki_dir}/ca.crt",
        "snapshot-count": "10000",
        "trusted-ca-file": f"{pki_dir}/ca.crt",
    }
    if state == "existing":
        defaults["initial-cluster-state"] = "existing"
    extra = {str(k): str(v) for k, v in (cfg.etcd_local.get("extraArgs") or {}).items()} \
        if isinstance(cfg.etcd_local.get("extraArgs"), dict) else {}
    command = ["etcd", *_args(defaults, extra)]
    probe = {"host": "127.0.0.1", "path": "/health?exclude=NOSPACE&serializable=true", "port": 2381,
             "scheme": "HTTP"}
    ann = {"kubeadm.kubernetes.io/etcd.advertise-client-urls": f"https://{ip}:2379"}
    pod = _pod("etcd", "etcd", f"{cfg.image_repository}/etcd:3.5.12-0", command, probe, ann,
               [("etcd-certs", pki_dir), ("etcd-data", P(cfg.etcd_data_dir))])
    return pod


def write_manifest(name: str, pod: dict[str, Any]) -> None:
    write_file(f"{MANIFESTS_DIR}/{name}.yaml", yaml.safe_dump(pod, sort_keys=False), 0o600)


def write_control_plane_manifests(cfg: Config) -> None:
    out(f'[control-plane] Using manifest folder "{MANIFESTS_DIR}"')
    for name, build in (("kube-apiserver", apiserver_manifest),
                        ("kube-controller-manager", controller_manager_manifest),
                        ("kube-scheduler", scheduler_manifest)):
        out(f'[control-plane] Creating static Pod manifest for "{name}"')
        write_manifest(name, build(cfg))


def kubelet_configuration(cfg: Config, *, local: bool = True) -> dict[str, Any]:
    """The KubeletConfiguration; ``local`` relocates its paths for this node (HACTL_LAB_ROOT), the
    copy stored in the kubelet-config ConfigMap keeps the in-node paths."""
    doc: dict[str, Any] = {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "authentication": {"anonymous": {"enabled": False},
                           "webhook": {"cacheTTL": "0s", "enabled": True},
                           "x509": {"clientCAFile": "/etc/kubernetes/pki/ca.crt"}},
        "authorization": {"mode": "Webhook"},
        "cgroupDriver": "systemd",
        "clusterDNS": [first_service_ip(cfg.service_subnet).rsplit(".", 1)[0] + ".10"],
        "clusterDomain": cfg.dns_domain,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": 10248,
        "rotateCertificates": True,
        "staticPodPath": MANIFESTS_DIR,
    }
    doc.update({k: v for k, v in cfg.kubelet_config.items() if k not in ("apiVersion", "kind")})
    if local:
        doc["staticPodPath"] = P(str(doc["staticPodPath"]))
        x509 = (doc.get("authentication") or {}).get("x509") or {}
        if x509.get("clientCAFile"):
            x509["clientCAFile"] = P(str(x509["clientCAFile"]))
    return doc


def write_kubelet_files(cfg: Config) -> None:
    # kubeadm's buildKubeletArgMap: no node-ip of its own (the kubelet then resolves its host
    # name); a node-ip comes only from nodeRegistration.kubeletExtraArgs
    flags = {"container-runtime-endpoint": "unix:///var/run/containerd/containerd.sock",
             "pod-infra-container-image": f"{cfg.image_repository}/pause:3.9"}
    if cfg.node_name != hostname():
        flags["hostname-override"] = cfg.node_name
    flags.update(cfg.kubelet_extra_args)
    line = " ".join(f"--{k}={v}" for k, v in flags.items())
    out(f'[kubelet-start] Writing kubelet environment file with flags to file "{KUBELET_DIR}/kubeadm-flags.env"')
    write_file(f"{KUBELET_DIR}/kubeadm-flags.env", f'KUBELET_KUBEADM_ARGS="{line}"\n', 0o644)
    out(f'[kubelet-start] Writing kubelet configuration to file "{KUBELET_DIR}/config.yaml"')
    write_file(f"{KUBELET_DIR}/config.yaml", yaml.safe_dump(kubelet_configuration(cfg), sort_keys=False), 0o644)
