"""The pod network's manifest: what ``InstallPodNetwork`` applies and the diff compares.

``flannel``: flannel's release manifest (flannel-io/flannel ``Documentation/kube-flannel.yml`` at
v0.25.7, kept unchanged in ``data/kube-flannel.yaml``) with the images of the spec's release and
``net-conf.json``'s ``Network`` set to ``kubernetes.podSubnet`` (an IPv6 pod subnet:
``EnableIPv4: false``, ``EnableIPv6: true``, ``IPv6Network``). ``manifests``: the user's files,
read here (a file that cannot be read or parsed is named in the error). ``none``: nothing.

Pure apart from reading those files: the objects are plain dicts; :func:`manifest_text` is the
multi-document YAML the step writes (0600) and ``kubectl apply --server-side -f`` reads.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from hactl.errors import PlanError
from hactl.spec.models import Cluster
from hactl.spec.network import FLANNEL_VERSIONS

DATA = Path(__file__).with_name("data") / "kube-flannel.yaml"
FLANNEL_IMAGE = "docker.io/flannel/flannel"
CNI_PLUGIN_IMAGE = "docker.io/flannel/flannel-cni-plugin"

KINDS: dict[str, tuple[str, bool]] = {
    "Namespace": ("namespaces", False),
    "ServiceAccount": ("serviceaccounts", True),
    "ClusterRole": ("clusterroles.rbac.authorization.k8s.io", False),
    "ClusterRoleBinding": ("clusterrolebindings.rbac.authorization.k8s.io", False),
    "Role": ("roles.rbac.authorization.k8s.io", True),
    "RoleBinding": ("rolebindings.rbac.authorization.k8s.io", True),
    "ConfigMap": ("configmaps", True),
    "DaemonSet": ("daemonsets.apps", True),
    "Deployment": ("deployments.apps", True),
    "Service": ("services", True),
}
"""The kinds a pod network manifest may hold → (kubectl's resource name, namespaced). The probe
reads exactly these kinds (by name) so the plan can compare them."""


MANAGED_BY = "app.kubernetes.io/managed-by"
"""The label hactl adds to every object of the pod network (value ``hactl``): the probe reads
the objects of :data:`KINDS` that carry it, whatever their names."""


class ManifestError(PlanError):
    """A manifest file of ``network.manifests`` cannot be used."""


@dataclass(frozen=True)
class NetworkObject:
    kind: str
    namespace: str | None
    name: str
    body: dict[str, Any]

    @property
    def key(self) -> str:
        """``DaemonSet/kube-flannel/kube-flannel-ds`` (``ClusterRole/flannel`` when cluster-wide)."""
        return "/".join(p for p in (self.kind, self.namespace, self.name) if p)


UPSTREAM_NETWORK = '"Network": "10.244.0.0/16"'
"""``net-conf.json``'s pod network in the release manifest."""


def _net_conf(cluster: Cluster, text: str) -> str:
    """The release's ``net-conf.json`` with the spec's pod subnet (its text kept otherwise)."""
    subnet = cluster.kubernetes.pod_subnet
    if isinstance(subnet, ipaddress.IPv4Network):
        return text.replace(UPSTREAM_NETWORK, f'"Network": "{subnet}"')
    conf = json.loads(text)
    conf.pop("Network", None)
    conf.update({"EnableIPv4": False, "EnableIPv6": True, "IPv6Network": str(subnet)})
    return json.dumps(conf, indent=2) + "\n"


def _flannel(cluster: Cluster) -> list[dict[str, Any]]:
    version = cluster.network.version
    docs = [d for d in yaml.safe_load_all(DATA.read_text()) if d]
    for doc in docs:
        if doc["kind"] == "ConfigMap" and doc["metadata"]["name"] == "kube-flannel-cfg":
            doc["data"]["net-conf.json"] = _net_conf(cluster, doc["data"]["net-conf.json"])
        if doc["kind"] == "DaemonSet":
            spec = doc["spec"]["template"]["spec"]
            for c in [*spec.get("initContainers", []), *spec.get("containers", [])]:
                if c["image"].startswith(CNI_PLUGIN_IMAGE + ":"):
                    c["image"] = f"{CNI_PLUGIN_IMAGE}:{FLANNEL_VERSIONS[version]}"
                elif c["image"].startswith(FLANNEL_IMAGE + ":"):
                    c["image"] = f"{FLANNEL_IMAGE}:{version}"
    return docs


def _user(paths: list[str]) -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in paths:
        try:
            loaded = [d for d in yaml.safe_load_all(Path(path).expanduser().read_text()) if d]
        except OSError as exc:
            raise ManifestError(f"network.manifests: cannot read {path}: {exc.strerror or exc}",
                                hint="fix the path in the spec (relative to the current directory)") from None
        except yaml.YAMLError as exc:
            raise ManifestError(f"network.manifests: {path} is not YAML: {exc}") from None
        for doc in loaded:
            if not isinstance(doc, dict) or not isinstance(doc.get("metadata"), dict) \
                    or not doc["metadata"].get("name") or not doc.get("apiVersion"):
                raise ManifestError(f"network.manifests: {path}: every document needs apiVersion, "
                                    "kind and metadata.name")
            if doc.get("kind") not in KINDS:
                raise ManifestError(
                    f"network.manifests: {path}: kind {doc.get('kind')!r} ({doc['metadata']['name']}) "
                    f"is not one hactl can compare; use {', '.join(KINDS)}")
            docs.append(doc)
    return docs


def network_objects(cluster: Cluster) -> list[NetworkObject]:
    """The objects the spec's pod network consists of (empty for ``none``), in manifest order."""
    plugin = cluster.network.plugin
    docs = _flannel(cluster) if plugin == "flannel" else _user(cluster.network.manifests) \
        if plugin == "manifests" else []
    out = []
    for doc in docs:
        doc.setdefault("metadata", {}).setdefault("labels", {})[MANAGED_BY] = "hactl"
        _, namespaced = KINDS[doc["kind"]]
        ns = (doc["metadata"].get("namespace") or "default") if namespaced else None
        out.append(NetworkObject(doc["kind"], ns, doc["metadata"]["name"], doc))
    return out


def manifest_text(objects: list[NetworkObject]) -> str:
    """The objects as one multi-document YAML (what ``kubectl apply -f`` reads)."""
    return yaml.safe_dump_all([o.body for o in objects], sort_keys=False)


def manifest_digest(objects: list[NetworkObject]) -> str:
    import hashlib

    return hashlib.sha256(manifest_text(objects).encode()).hexdigest()


# -- comparing with the live objects --------------------------------------------------------


def differences(want: Any, live: Any, path: str = "") -> list[str]:
    """Where ``live`` lacks or differs from what ``want`` sets (``want``'s fields only: the
    server adds defaults and status; a list must have the same length, item by item).
    Each difference as ``.spec.template.spec.containers[0].image: "a" -> "b"``."""
    if isinstance(want, dict):
        if not isinstance(live, dict):
            return [f"{path or '.'}: {_short(live)} -> {_short(want)}"]
        out: list[str] = []
        for key, value in want.items():
            out += differences(value, live.get(key), f"{path}.{key}")
        return out
    if isinstance(want, list):
        if not isinstance(live, list) or len(live) != len(want):
            return [f"{path}: {_short(live)} -> {_short(want)}"]
        out = []
        for i, (w, v) in enumerate(zip(want, live, strict=True)):
            out += differences(w, v, f"{path}[{i}]")
        return out
    if want != live and not (want is None and live is None):
        return [f"{path}: {_short(live)} -> {_short(want)}"]
    return []


def _short(value: Any) -> str:
    text = "(absent)" if value is None else json.dumps(value, sort_keys=True)
    return text if len(text) <= 120 else text[:117] + "..."
