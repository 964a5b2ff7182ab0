"""kubeadm's ``addon`` phase (``init`` and ``init phase addon all|coredns|kube-proxy``).

The objects of ``cmd/kubeadm/app/phases/addons/dns`` and ``…/proxy`` (their ``manifests.go``
templates, v1.30): CoreDNS as a Deployment of 2 replicas that tolerates the control-plane taint
(not ``node.kubernetes.io/not-ready``: it stays Pending until a Node is Ready, i.e. until a pod
network is installed), the ``kube-dns`` Service on the 10th address of the service CIDR, its
ConfigMap and RBAC; kube-proxy as a host-network DaemonSet that tolerates every taint, its
ConfigMap and RBAC. Created or updated (kubeadm's ``CreateOrUpdate``).
"""

from __future__ import annotations

import ipaddress
from typing import Any

import yaml

from .kubeadm_api import Api, ApiError
from .kubeadm_common import out
from .kubeadm_config import Config

COREDNS_IMAGE_TAG = "v1.11.1"  # kubeadm v1.30's constants.CoreDNSVersion
CONTROL_PLANE_TAINT = "node-role.kubernetes.io/control-plane"
NS = "kube-system"
RBAC = "/apis/rbac.authorization.k8s.io/v1"


def _core(resource: str) -> str:
    return f"/api/v1/namespaces/{NS}/{resource}"


def _apps(resource: str) -> str:
    return f"/apis/apps/v1/namespaces/{NS}/{resource}"


def dns_ip(service_subnet: str) -> str:
    """kubeadm's ``GetDNSIP``: the 10th address of the (first) service CIDR."""
    net = ipaddress.ip_network(service_subnet.split(",")[0].strip(), strict=False)
    return str(net.network_address + 10)


def corefile(dns_domain: str) -> str:
    return (".:53 {\n    errors\n    health {\n       lameduck 5s\n    }\n    ready\n"
            f"    kubernetes {dns_domain} in-addr.arpa ip6.arpa {{\n       pods insecure\n"
            "       fallthrough in-addr.arpa ip6.arpa\n       ttl 30\n    }\n"
            "    prometheus :9153\n    forward . /etc/resolv.conf {\n       max_concurrent 1000\n"
            "    }\n    cache 30 {\n"
            f"       disable success {dns_domain}\n       disable denial {dns_domain}\n    }}\n"
            "    loop\n    reload\n    loadbalance\n}\n")


def coredns_objects(cfg: Config) -> list[tuple[str, dict[str, Any]]]:
    """(collection, object) in the order kubeadm's ``createCoreDNSAddon`` creates them."""
    labels = {"k8s-app": "kube-dns"}
    deployment = {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "coredns", "namespace": NS, "labels": dict(labels)},
        "spec": {
            "replicas": 2,
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}},
            "selector": {"matchLabels": dict(labels)},
            "template": {
                "metadata": {"labels": dict(labels)},
                "spec": {
                    "priorityClassName": "system-cluster-critical",
                    "serviceAccountName": "coredns",
                    "affinity": {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                        {"weight": 100, "podAffinityTerm": {
                            "labelSelector": {"matchExpressions": [
                                {"key": "k8s-app", "operator": "In", "values": ["kube-dns"]}]},
                            "topologyKey": "kubernetes.io/hostname"}}]}},
                    "tolerations": [{"key": "CriticalAddonsOnly", "operator": "Exists"},
                                    {"key": CONTROL_PLANE_TAINT, "effect": "NoSchedule"}],
                    "nodeSelector": {"kubernetes.io/os": "linux"},
                    "containers": [{
                        "name": "coredns",
                        "image": f"{cfg.image_repository}/coredns/coredns:{COREDNS_IMAGE_TAG}",
                        "imagePullPolicy": "IfNotPresent",
                        "resources": {"limits": {"memory": "170Mi"},
                                      "requests": {"cpu": "100m", "memory": "70Mi"}},
                        "args": ["-conf", "/etc/coredns/Corefile"],
                        "volumeMounts": [{"name": "config-volume", "mountPath": "/etc/coredns",
                                          "readOnly": True}],
                        "ports": [{"containerPort": 53, "name": "dns", "protocol": "UDP"},
                                  {"containerPort": 53, "name": "dns-tcp", "protocol": "TCP"},
                                  {"containerPort": 9153, "name": "metrics", "protocol": "TCP"},
                                  {"containerPort": 8080, "name": "liveness-probe", "protocol": "TCP"},
                                  {"containerPort": 8181, "name": "readiness-probe", "protocol": "TCP"}],
                        "livenessProbe": {"httpGet": {"path": "/health", "port": "liveness-probe",
                                                      "scheme": "HTTP"},
                                          "initialDelaySeconds": 60, "timeoutSeconds": 5,
                                          "successThreshold": 1, "failureThreshold": 5},
                        "readinessProbe": {"httpGet": {"path": "/ready", "port": "readiness-probe",
                                                       "scheme": "HTTP"}},
                        "securityContext": {"allowPrivilegeEscalation": False,
                                            "capabilities": {"add": ["NET_BIND_SERVICE"], "drop": ["ALL"]},
                                            "readOnlyRootFilesystem": True},
                    }],
                    "dnsPolicy": "Default",
                    "volumes": [{"name": "config-volume", "configMap": {
                        "name": "coredns", "items": [{"key": "Corefile", "path": "Corefile"}]}}],
                },
            },
        },
    }
    service = {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "kube-dns", "namespace": NS,
                     "labels": {**labels, "kubernetes.io/cluster-service": "true",
                                "kubernetes.io/name": "CoreDNS"},
                     "annotations": {"prometheus.io/port": "9153", "prometheus.io/scrape": "true"}},
        "spec": {"clusterIP": dns_ip(cfg.service_subnet),
                 "ports": [{"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
                           {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53},
                           {"name": "metrics", "port": 9153, "protocol": "TCP", "targetPort": 9153}],
                 "selector": dict(labels)},
    }
    return [
        (_core("configmaps"), {"apiVersion": "v1", "kind": "ConfigMap",
                               "metadata": {"name": "coredns", "namespace": NS},
                               "data": {"Corefile": corefile(cfg.dns_domain)}}),
        (f"{RBAC}/clusterroles", {
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": "system:coredns"},
            "rules": [{"apiGroups": [""], "resources": ["endpoints", "services", "pods", "namespaces"],
                       "verbs": ["list", "watch"]},
                      {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"],
                       "verbs": ["list", "watch"]}]}),
        (f"{RBAC}/clusterrolebindings", {
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": "system:coredns"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                        "name": "system:coredns"},
            "subjects": [{"kind": "ServiceAccount", "name": "coredns", "namespace": NS}]}),
        (_core("serviceaccounts"), {"apiVersion": "v1", "kind": "ServiceAccount",
                                    "metadata": {"name": "coredns", "namespace": NS}}),
        (_apps("deployments"), deployment),
        (_core("services"), service),
    ]


def kube_proxy_configuration(cfg: Config) -> dict[str, Any]:
    return {"apiVersion": "kubeproxy.config.k8s.io/v1alpha1", "kind": "KubeProxyConfiguration",
            "bindAddress": "0.0.0.0", "clientConnection": {"kubeconfig": "/var/lib/kube-proxy/kubeconfig.conf"},
            "clusterCIDR": cfg.pod_subnet or "", "mode": "",
            "conntrack": {"maxPerCore": None, "min": None}, "metricsBindAddress": ""}


def kube_proxy_objects(cfg: Config) -> list[tuple[str, dict[str, Any]]]:
    labels = {"k8s-app": "kube-proxy"}
    kubeconfig = ("apiVersion: v1\nkind: Config\nclusters:\n- cluster:\n"
                  "    certificate-authority: /var/run/secrets/kubernetes.io/serviceaccount/ca.crt\n"
                  f"    server: https://{cfg.endpoint()}\n  name: default\ncontexts:\n- context:\n"
                  "    cluster: default\n    namespace: default\n    user: default\n  name: default\n"
                  "current-context: default\nusers:\n- name: default\n  user:\n"
                  "    tokenFile: /var/run/secrets/kubernetes.io/serviceaccount/token")
    daemonset = {
        "apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": "kube-proxy", "namespace": NS, "labels": dict(labels)},
        "spec": {
            "selector": {"matchLabels": dict(labels)},
            "updateStrategy": {"type": "RollingUpdate"},
            "template": {
                "metadata": {"labels": dict(labels)},
                "spec": {
                    "priorityClassName": "system-node-critical",
                    "containers": [{
                        "name": "kube-proxy",
                        "image": f"{cfg.image_repository}/kube-proxy:{cfg.kubernetes_version}",
                        "imagePullPolicy": "IfNotPresent",
                        "command": ["/usr/local/bin/kube-proxy", "--config=/var/lib/kube-proxy/config.conf",
                                    "--hostname-override=$(NODE_NAME)"],
                        "securityContext": {"privileged": True},
                        "volumeMounts": [{"mountPath": "/var/lib/kube-proxy", "name": "kube-proxy"},
                                         {"mountPath": "/run/xtables.lock", "name": "xtables-lock",
                                          "readOnly": False},
                                         {"mountPath": "/lib/modules", "name": "lib-modules",
                                          "readOnly": True}],
                        "env": [{"name": "NODE_NAME",
                                 "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}],
                    }],
                    "hostNetwork": True,
                    "serviceAccountName": "kube-proxy",
                    "volumes": [{"name": "kube-proxy", "configMap": {"name": "kube-proxy"}},
                                {"name": "xtables-lock", "hostPath": {"path": "/run/xtables.lock",
                                                                      "type": "FileOrCreate"}},
                                {"name": "lib-modules", "hostPath": {"path": "/lib/modules"}}],
                    "tolerations": [{"operator": "Exists"}],
                    "nodeSelector": {"kubernetes.io/os": "linux"},
                },
            },
        },
    }
    return [
        (_core("serviceaccounts"), {"apiVersion": "v1", "kind": "ServiceAccount",
                                    "metadata": {"name": "kube-proxy", "namespace": NS}}),
        (f"{RBAC}/clusterrolebindings", {
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": "kubeadm:node-proxier"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                        "name": "system:node-proxier"},
            "subjects": [{"kind": "ServiceAccount", "name": "kube-proxy", "namespace": NS}]}),
        (f"{RBAC}/namespaces/{NS}/roles", {
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": {"name": "kube-proxy", "namespace": NS},
            "rules": [{"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["kube-proxy"],
                       "verbs": ["get"]}]}),
        (f"{RBAC}/namespaces/{NS}/rolebindings", {
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": "kube-proxy", "namespace": NS},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "kube-proxy"},
            "subjects": [{"kind": "Group", "name": "system:bootstrappers:kubeadm:default-node-token"}]}),
        (_core("configmaps"), {"apiVersion": "v1", "kind": "ConfigMap",
                               "metadata": {"name": "kube-proxy", "namespace": NS,
                                            "labels": {"app": "kube-proxy"}},
                               "data": {"kubeconfig.conf": kubeconfig,
                                        "config.conf": yaml.safe_dump(kube_proxy_configuration(cfg),
                                                                      sort_keys=False)}}),
        (_apps("daemonsets"), daemonset),
    ]


def create_or_update(api: Api, collection: str, obj: dict[str, Any]) -> None:
    """kubeadm's ``apiclient.CreateOrUpdate*``: create, or on AlreadyExists replace (names such as
    ``system:coredns`` go into the path as they are, as client-go sends them)."""
    try:
        api.create(collection, obj)
        return
    except ApiError as exc:
        if exc.status != 409:
            raise
    path = f"{collection}/{obj['metadata']['name']}"
    current = api.get(path)
    obj = {**obj, "metadata": {**obj["metadata"],
                               "resourceVersion": current.get("metadata", {}).get("resourceVersion", "")}}
    api.replace(path, obj)


def apply_coredns(api: Api, cfg: Config) -> None:
    for collection, obj in coredns_objects(cfg):
        create_or_update(api, collection, obj)
    out("[addons] Applied essential addon: CoreDNS")


def apply_kube_proxy(api: Api, cfg: Config) -> None:
    for collection, obj in kube_proxy_objects(cfg):
        create_or_update(api, collection, obj)
    out("[addons] Applied essential addon: kube-proxy")


def apply_addons(api: Api, cfg: Config, which: str = "all") -> None:
    if which in ("all", "coredns"):
        apply_coredns(api, cfg)
    if which in ("all", "kube-proxy"):
        apply_kube_proxy(api, cfg)
