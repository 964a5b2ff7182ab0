"""The resources the stand-in kube-apiserver serves: names, etcd keys, discovery, selectors,
and the server-side Table columns that kubectl prints.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from typing import Any

__all__ = [
    "RESOURCES",
    "Resource",
    "age",
    "by_path",
    "match_fields",
    "match_labels",
    "parse_time",
    "table",
]


ETCD_PREFIX = ["/registry"]  # --etcd-prefix (set once at start)


@dataclasses.dataclass(frozen=True)
class Resource:
    name: str  # plural, as in the URL
    kind: str
    group: str  # "" for the core group
    version: str
    namespaced: bool
    etcd: str  # the real kube-apiserver's etcd prefix segment
    short: tuple[str, ...] = ()
    subresources: tuple[str, ...] = ()

    @property
    def group_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def key(self, namespace: str | None, name: str | None) -> str:
        """etcd key (or prefix when ``name`` is None) as the real apiserver lays them out."""
        base = f"{ETCD_PREFIX[0]}/{self.etcd}/"
        if self.namespaced:
            if namespace is None:
                return base
            base += f"{namespace}/"
        return base + (name or "")


VERBS = ["create", "delete", "get", "list", "patch", "update"]

RESOURCES: tuple[Resource, ...] = (
    Resource("namespaces", "Namespace", "", "v1", False, "namespaces", ("ns",), ("status",)),
    Resource("nodes", "Node", "", "v1", False, "minions", ("no",), ("status",)),
    Resource("configmaps", "ConfigMap", "", "v1", True, "configmaps", ("cm",)),
    Resource("secrets", "Secret", "", "v1", True, "secrets"),
    Resource("pods", "Pod", "", "v1", True, "pods", ("po",), ("status", "eviction")),
    Resource("serviceaccounts", "ServiceAccount", "", "v1", True, "serviceaccounts", ("sa",)),
    Resource("leases", "Lease", "coordination.k8s.io", "v1", True, "leases"),
    Resource("certificatesigningrequests", "CertificateSigningRequest", "certificates.k8s.io",
             "v1", False, "certificatesigningrequests", ("csr",), ("status", "approval")),
    # stored and served, but no controller acts on them (kubeadm creates some of these)
    Resource("services", "Service", "", "v1", True, "services/specs", ("svc",), ("status",)),
    Resource("endpoints", "Endpoints", "", "v1", True, "services/endpoints", ("ep",)),
    Resource("events", "Event", "", "v1", True, "events", ("ev",)),
    Resource("clusterroles", "ClusterRole", "rbac.authorization.k8s.io", "v1", False,
             "clusterroles"),
    Resource("clusterrolebindings", "ClusterRoleBinding", "rbac.authorization.k8s.io", "v1",
             False, "clusterrolebindings"),
    Resource("roles", "Role", "rbac.authorization.k8s.io", "v1", True, "roles"),
    Resource("rolebindings", "RoleBinding", "rbac.authorization.k8s.io", "v1", True,
             "rolebindings"),
    Resource("deployments", "Deployment", "apps", "v1", True, "deployments", ("deploy",),
             ("status",)),
    Resource("daemonsets", "DaemonSet", "apps", "v1", True, "daemonsets", ("ds",), ("status",)),
    Resource("replicasets", "ReplicaSet", "apps", "v1", True, "replicasets", ("rs",), ("status",)),
    # status computed by the controller-manager's disruption controller; honoured by evictions
    Resource("poddisruptionbudgets", "PodDisruptionBudget", "policy", "v1", True,
             "poddisruptionbudgets", ("pdb",), ("status",)),
    # virtual: answered by the authorizer, never stored (kubectl auth can-i)
    Resource("selfsubjectaccessreviews", "SelfSubjectAccessReview", "authorization.k8s.io", "v1",
             False, ""),
)


GENERATION = frozenset({"deployments", "daemonsets", "replicasets", "poddisruptionbudgets"})
"""Resources whose ``metadata.generation`` the server keeps (1 at create, +1 on a spec change)."""


def by_path(group: str, version: str, plural: str) -> Resource | None:
    for r in RESOURCES:
        if r.group == group and r.version == version and r.name == plural:
            return r
    return None


def groups() -> dict[str, str]:
    """Non-core group name → its (only) version."""
    return {r.group: r.version for r in RESOURCES if r.group}


def resource_list(group: str, version: str) -> dict[str, Any]:
    out: list[dict[str, Any]] = []
    for r in RESOURCES:
        if r.group != group or r.version != version:
            continue
        entry: dict[str, Any] = {"name": r.name, "singularName": r.kind.lower(),
                                 "namespaced": r.namespaced, "kind": r.kind,
                                 "verbs": VERBS if r.etcd else ["create"]}
        if r.short:
            entry["shortNames"] = list(r.short)
        out.append(entry)
        for sub in r.subresources:
            if sub == "eviction":
                out.append({"name": "pods/eviction", "singularName": "", "namespaced": True,
                            "group": "policy", "version": "v1", "kind": "Eviction",
                            "verbs": ["create"]})
                continue
            out.append({"name": f"{r.name}/{sub}", "singularName": "", "namespaced": r.namespaced,
                        "kind": r.kind, "verbs": ["get", "patch", "update"]})
    gv = f"{group}/{version}" if group else version
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": out}


def openapi_v3(gv_path: str, version: str) -> dict[str, Any]:
    """A minimal OpenAPI v3 index and per-group-version documents.

    Only what kubectl looks at: each resource's PATCH operation with its
    ``x-kubernetes-group-version-kind`` and the ``fieldValidation`` query parameter, so kubectl
    picks server-side field validation instead of downloading the v2 schema.
    """
    gvs = sorted({("api/" if not r.group else f"apis/{r.group}/") + r.version for r in RESOURCES})
    if not gv_path:
        return {"paths": {gv: {"serverRelativeURL": f"/openapi/v3/{gv}?hash={version}"}
                          for gv in gvs}}
    if gv_path not in gvs:
        raise KeyError(gv_path)
    params = [{"name": n, "in": "query", "schema": {"type": "string", "uniqueItems": True}}
              for n in ("dryRun", "fieldManager", "fieldValidation", "force")]
    paths: dict[str, Any] = {}
    for r in RESOURCES:
        if ("api/" if not r.group else f"apis/{r.group}/") + r.version != gv_path:
            continue
        ns = "namespaces/{namespace}/" if r.namespaced else ""
        gvk = {"group": r.group, "version": r.version, "kind": r.kind}
        paths[f"/{gv_path}/{ns}{r.name}/{{name}}"] = {"patch": {
            "operationId": f"patch{r.kind}", "x-kubernetes-action": "patch",
            "x-kubernetes-group-version-kind": gvk, "parameters": params,
            "responses": {"200": {"description": "OK"}}}}
    return {"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": version},
            "paths": paths, "components": {"schemas": {}}}


# -- time ----------------------------------------------------------------------------------------


def parse_time(value: str | None) -> dt.datetime | None:
    if not value:
        return None
    try:
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def age(ts: str | None, now: dt.datetime | None = None) -> str:
    """kubectl's HumanDuration of the time since ``ts`` ("<unknown>" when absent)."""
    t = parse_time(ts)
    if t is None:
        return "<unknown>"
    secs = int(((now or dt.datetime.now(dt.UTC)) - t).total_seconds())
    if secs < 0:
        secs = 0
    if secs < 120:
        return f"{secs}s"
    mins = secs // 60
    if mins < 10:
        s = secs % 60
        return f"{mins}m{s}s" if s else f"{mins}m"
    if mins < 180:
        return f"{mins}m"
    hours = secs // 3600
    if hours < 8:
        m = mins % 60
        return f"{hours}h{m}m" if m else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    days = hours // 24
    return f"{days}d" if hours < 24 * 8 or days < 365 * 2 else f"{days // 365}y"


# -- selectors ------------------------------------------------------------------------------------

_REQ = re.compile(
    r"^\s*(?P<neg>!)?\s*(?P<key>[A-Za-z0-9._/-]+)\s*"
    r"(?:(?P<op>==|=|!=|\s+in\s+|\s+notin\s+)\s*(?P<val>\([^)]*\)|[A-Za-z0-9._-]*))?\s*$"
)


def _split(selector: str) -> list[str]:
    parts, depth, cur = [], 0, ""
    for ch in selector:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    if cur.strip():
        parts.append(cur)
    return parts


def match_labels(selector: str, labels: dict[str, str]) -> bool:
    """Kubernetes label-selector semantics: ``k``, ``!k``, ``k=v``, ``k!=v``, ``k in (a,b)``…"""
    for req in _split(selector):
        m = _REQ.match(req)
        if not m:
            raise ValueError(f"unable to parse requirement: {req!r}")
        key, op, val = m["key"], (m["op"] or "").strip(), m["val"]
        if m["neg"]:
            if key in labels:
                return False
            continue
        if not op:
            if key not in labels:
                return False
            continue
        if op in ("=", "=="):
            if labels.get(key) != val:
                return False
        elif op == "!=":
            if key in labels and labels[key] == val:
                return False
        else:
            values = {v.strip() for v in (val or "").strip("()").split(",")}
            if op == "in" and labels.get(key) not in values:
                return False
            if op == "notin" and key in labels and labels[key] in values:
                return False
    return True


def _field(obj: dict[str, Any], path: str) -> str:
    cur: Any = obj
    for part in path.split("."):
        cur = cur.get(part) if isinstance(cur, dict) else None
    return "" if cur is None else str(cur)


def match_fields(selector: str, obj: dict[str, Any]) -> bool:
    """Field selectors (``metadata.name=x``, ``spec.nodeName!=y``, ``type=...``)."""
    for req in _split(selector):
        if "!=" in req:
            k, v = req.split("!=", 1)
            if _field(obj, k.strip()) == v.strip():
                return False
        elif "=" in req:
            k, v = req.replace("==", "=").split("=", 1)
            if _field(obj, k.strip()) != v.strip():
                return False
        else:
            raise ValueError(f"invalid field selector: {req!r}")
    return True


# -- tables -------------------------------------------------------------------------------------


def _col(name: str, typ: str = "string", fmt: str = "", priority: int = 0) -> dict[str, Any]:
    return {"name": name, "type": typ, "format": fmt, "description": name, "priority": priority}


def _node_row(o: dict[str, Any]) -> list[Any]:
    conds = {c.get("type"): c.get("status") for c in o.get("status", {}).get("conditions", [])}
    status = "Ready" if conds.get("Ready") == "True" else "NotReady" if "Ready" in conds else "Unknown"
    if o.get("spec", {}).get("unschedulable"):
        status += ",SchedulingDisabled"
    labels = o.get("metadata", {}).get("labels", {}) or {}
    roles = sorted(k.split("/", 1)[1] for k in labels
                   if k.startswith("node-role.kubernetes.io/") and "/" in k)
    roles += [v for k, v in labels.items() if k == "kubernetes.io/role"]
    info = o.get("status", {}).get("nodeInfo", {}) or {}
    addrs = {a.get("type"): a.get("address") for a in o.get("status", {}).get("addresses", [])}
    return [status, ",".join(roles) or "<none>", age(o["metadata"].get("creationTimestamp")),
            info.get("kubeletVersion", ""), addrs.get("InternalIP", "<none>"),
            addrs.get("ExternalIP", "<none>"), info.get("osImage", "<unknown>"),
            info.get("kernelVersion", "<unknown>"), info.get("containerRuntimeVersion", "<unknown>")]


def _pod_row(o: dict[str, Any]) -> list[Any]:
    spec, st = o.get("spec", {}), o.get("status", {})
    containers = spec.get("containers", []) or []
    cstat = st.get("containerStatuses", []) or []
    ready = sum(1 for c in cstat if c.get("ready"))
    restarts = sum(int(c.get("restartCount", 0)) for c in cstat)
    return [f"{ready}/{len(containers)}", st.get("phase", "Pending"), restarts,
            age(o["metadata"].get("creationTimestamp")), st.get("podIP", "<none>"),
            spec.get("nodeName", "<none>")]


def _pdb_row(o: dict[str, Any]) -> list[Any]:
    spec = o.get("spec", {})
    return [str(spec["minAvailable"]) if spec.get("minAvailable") is not None else "N/A",
            str(spec["maxUnavailable"]) if spec.get("maxUnavailable") is not None else "N/A",
            int(o.get("status", {}).get("disruptionsAllowed", 0)),
            age(o["metadata"].get("creationTimestamp"))]


_TABLES: dict[str, tuple[list[dict[str, Any]], Any]] = {
    "nodes": ([_col("Status"), _col("Roles"), _col("Age"), _col("Version"),
               _col("Internal-IP", priority=1), _col("External-IP", priority=1),
               _col("OS-Image", priority=1), _col("Kernel-Version", priority=1),
               _col("Container-Runtime", priority=1)], _node_row),
    "pods": ([_col("Ready"), _col("Status"), _col("Restarts", "integer"), _col("Age"),
              _col("IP", priority=1), _col("Node", priority=1)], _pod_row),
    "namespaces": ([_col("Status"), _col("Age")],
                   lambda o: [o.get("status", {}).get("phase", "Active"),
                              age(o["metadata"].get("creationTimestamp"))]),
    "configmaps": ([_col("Data", "integer"), _col("Age")],
                   lambda o: [len(o.get("data") or {}) + len(o.get("binaryData") or {}),
                              age(o["metadata"].get("creationTimestamp"))]),
    "secrets": ([_col("Type"), _col("Data", "integer"), _col("Age")],
                lambda o: [o.get("type", "Opaque"), len(o.get("data") or {}),
                           age(o["metadata"].get("creationTimestamp"))]),
    "poddisruptionbudgets": ([_col("Min Available"), _col("Max Unavailable"),
                              _col("Allowed Disruptions", "integer"), _col("Age")], _pdb_row),
    "replicasets": ([_col("Desired", "integer"), _col("Current", "integer"),
                     _col("Ready", "integer"), _col("Age")],
                    lambda o: [o.get("spec", {}).get("replicas", 1),
                               o.get("status", {}).get("replicas", 0),
                               o.get("status", {}).get("readyReplicas", 0),
                               age(o["metadata"].get("creationTimestamp"))]),
    "leases": ([_col("Holder"), _col("Age")],
               lambda o: [o.get("spec", {}).get("holderIdentity", ""),
                          age(o["metadata"].get("creationTimestamp"))]),
}


def table(resource: Resource, objects: list[dict[str, Any]], rv: str) -> dict[str, Any]:
    """A meta.k8s.io/v1 Table like the real server's printers produce."""
    cols, row = _TABLES.get(resource.name, ([_col("Age")],
                                            lambda o: [age(o["metadata"].get("creationTimestamp"))]))
    defs = [_col("Name", fmt="name"), *cols]
    rows = [{"cells": [o["metadata"]["name"], *row(o)], "object": _partial(o)} for o in objects]
    return {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {"resourceVersion": rv},
            "columnDefinitions": defs, "rows": rows}


def _partial(o: dict[str, Any]) -> dict[str, Any]:
    return {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
            "metadata": o.get("metadata", {})}
