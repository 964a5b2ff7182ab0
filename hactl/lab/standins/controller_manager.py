"""The controllers of the stand-in kube-controller-manager (they run while it leads).

* nodelifecycle — a Node whose kubelet heartbeat (the Node's Ready ``lastHeartbeatTime`` or its
  Lease ``kube-node-lease/<node>`` ``renewTime``) has not changed for
  ``--node-monitor-grace-period`` (40 s) gets its conditions set to ``Unknown``
  ("Kubelet stopped posting node status.") and the ``node.kubernetes.io/unreachable`` taints;
  the taints go when the kubelet reports Ready again. As in the real controller, "has not
  changed" is judged by this process's clock from the moment it last saw a change.
* tokencleaner — deletes ``bootstrap.kubernetes.io/token`` Secrets past their ``expiration``.
* garbagecollector — deletes objects all of whose ``ownerReferences`` point at objects that no
  longer exist (or exist with another uid); this is what removes ``kubeadm-certs`` after its
  owner token expires.
* bootstrapsigner — keeps ``jws-kubeconfig-<token-id>`` signatures in ``kube-public/cluster-info``
  for every token with ``usage-bootstrap-signing: "true"``.

* disruption / podgc — PodDisruptionBudget status and orphaned pods, see
  :mod:`controller_disruption`.
* csrapproving / csrsigning — kubelet TLS bootstrap, see :mod:`controller_csr`.
* serviceaccount / root-ca-cert-publisher — a ``default`` ServiceAccount and a
  ``kube-root-ca.crt`` ConfigMap (from ``--root-ca-file``) in every namespace.

``--controllers`` is honoured like the real flag: ``*`` enables the default set
(nodelifecycle, garbagecollector, csrapproving, csrsigning, serviceaccount,
root-ca-cert-publisher, disruption, podgc); tokencleaner and bootstrapsigner are off unless named (kubeadm
names them: ``--controllers=*,bootstrapsigner,tokencleaner``); ``-name`` disables one.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import threading
import time
from collections.abc import Callable
from typing import Any

from .controller_csr import CSRController
from .controller_disruption import DisruptionController, PodGC
from .controller_workloads import WorkloadControllers
from .kubeapi import ApiError, Client, ns_path
from .leader import log, parse_duration

__all__ = ["ControllerManager", "enabled_controllers"]

DEFAULT_ON = ("nodelifecycle", "garbagecollector", "csrapproving", "csrsigning",
              "serviceaccount", "root-ca-cert-publisher", "disruption", "podgc",
              "deployment", "replicaset", "daemonset")
ALL = (*DEFAULT_ON, "tokencleaner", "bootstrapsigner")
UNREACHABLE = "node.kubernetes.io/unreachable"
NOT_READY = "node.kubernetes.io/not-ready"
TOKEN_TYPE = "bootstrap.kubernetes.io/token"
_KIND_PATH: dict[tuple[str, str], tuple[str, str, bool]] = {
    ("v1", "Secret"): ("secrets", "v1", True),
    ("v1", "ConfigMap"): ("configmaps", "v1", True),
    ("v1", "Pod"): ("pods", "v1", True),
    ("v1", "ServiceAccount"): ("serviceaccounts", "v1", True),
    ("v1", "Node"): ("nodes", "v1", False),
    ("v1", "Namespace"): ("namespaces", "v1", False),
    ("coordination.k8s.io/v1", "Lease"): ("leases", "coordination.k8s.io/v1", True),
    ("apps/v1", "ReplicaSet"): ("replicasets", "apps/v1", True),
    ("apps/v1", "Deployment"): ("deployments", "apps/v1", True),
    ("apps/v1", "DaemonSet"): ("daemonsets", "apps/v1", True),
}
ROOT_CA_DESCRIPTION = (
    "Contains a CA bundle that can be used to verify the kube-apiserver when using internal "
    "endpoints such as the internal service IP or kubernetes.default.svc. No other usage is "
    "guaranteed across distributions of Kubernetes clusters.")
_GC_SCAN = (("secrets", "v1"), ("configmaps", "v1"), ("pods", "v1"),
            ("leases", "coordination.k8s.io/v1"), ("replicasets", "apps/v1"))


def enabled_controllers(spec: str) -> set[str]:
    on: set[str] = set()
    for item in (s.strip() for s in (spec or "*").split(",")):
        if item == "*":
            on |= set(DEFAULT_ON)
        elif item.startswith("-"):
            on.discard(item[1:])
        elif item in ALL:
            on.add(item)
    return on


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _rfc3339(t: dt.datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse(ts: str | None) -> dt.datetime | None:
    if not ts:
        return None
    try:
        return dt.datetime.fromisoformat(ts.replace("Z", "+00:00"))
    except ValueError:
        return None


def _b64(data: dict[str, str], key: str) -> str:
    return base64.b64decode(data[key]).decode() if data.get(key) else ""


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def jws_detached(payload: str, token_id: str, secret: str) -> str:
    """Compact JWS (HS256, ``kid`` = token id) with a detached payload: ``header..signature``."""
    header = _b64url(('{"alg":"HS256","kid":"' + token_id + '"}').encode())
    signing_input = f"{header}.{_b64url(payload.encode())}".encode()
    return f"{header}..{_b64url(hmac.new(secret.encode(), signing_input, hashlib.sha256).digest())}"


class ControllerManager:
    def __init__(self, client: Client, flags: dict[str, str]) -> None:
        self.client = client
        self.enabled = enabled_controllers(flags.get("controllers", "*"))
        self.grace = parse_duration(flags.get("node-monitor-grace-period", "40s"))
        self.monitor_period = parse_duration(flags.get("node-monitor-period", "5s"))
        self._probe: dict[str, tuple[Any, float]] = {}  # node → (heartbeat seen, when seen)
        self.root_ca = ""
        if flags.get("root-ca-file"):
            with open(flags["root-ca-file"]) as handle:
                self.root_ca = handle.read()
        self.disruption = DisruptionController(client)
        self.podgc = PodGC(client)
        self.workloads = WorkloadControllers(client)
        self.csr = CSRController(client, flags, "csrapproving" in self.enabled,
                                 "csrsigning" in self.enabled)

    # -- driver -------------------------------------------------------------------------------

    def run(self, lost: threading.Event) -> None:
        log(f"controllers enabled: {', '.join(sorted(self.enabled)) or '<none>'}")
        loops: list[tuple[str, float, Callable[[], None]]] = [
            ("nodelifecycle", self.monitor_period, self.monitor_nodes),
            ("tokencleaner", 1.0, self.clean_tokens),
            ("garbagecollector", 2.0, self.collect_garbage),
            ("bootstrapsigner", 1.0, self.sign_cluster_info),
            ("csr", 1.0, self.csr.reconcile),
            ("serviceaccount", 5.0, self.default_service_accounts),
            ("root-ca-cert-publisher", 5.0, self.publish_root_ca),
            ("disruption", 1.0, self.disruption.sync_all),
            ("podgc", 5.0, self.podgc.collect),
            ("deployment", 1.0, self.workloads.sync_deployments),
            ("replicaset", 1.0, self.workloads.sync_replicasets),
            ("daemonset", 1.0, self.workloads.sync_daemonsets),
        ]
        due = {name: 0.0 for name, _, _ in loops}
        while not lost.is_set():
            for name, period, fn in loops:
                on = name in self.enabled or (name == "csr" and (self.csr.approve or self.csr.sign))
                if not on or time.monotonic() < due[name]:
                    continue
                try:
                    fn()
                except (ApiError, OSError, ValueError, KeyError) as exc:
                    log(f"{name}: {exc}")
                due[name] = time.monotonic() + period
            lost.wait(min(0.5, self.monitor_period))

    # -- nodelifecycle --------------------------------------------------------------------------

    def monitor_nodes(self) -> None:
        nodes = self.client.get("/api/v1/nodes")["items"]
        leases = {le["metadata"]["name"]: le for le in self.client.get(
            ns_path("leases", "kube-node-lease", None, "coordination.k8s.io/v1"))["items"]}
        now_m, now = time.monotonic(), _now()
        for node in nodes:
            name = node["metadata"]["name"]
            conds = node.get("status", {}).get("conditions") or []
            ready = next((c for c in conds if c.get("type") == "Ready"), None)
            beat = ((ready or {}).get("lastHeartbeatTime"),
                    (leases.get(name, {}).get("spec") or {}).get("renewTime"))
            seen = self._probe.get(name)
            if seen is None or seen[0] != beat:
                self._probe[name] = (beat, now_m)
                seen = self._probe[name]
            if ready is not None and ready.get("status") == "True":
                if now_m - seen[1] <= self.grace:
                    self._untaint(node)
                    continue
            elif ready is not None and ready.get("status") == "Unknown":
                continue  # already marked; wait for the kubelet
            elif ready is not None and ready.get("status") == "False":
                self._taint_not_ready(node, now)
            if now_m - seen[1] <= self.grace:
                continue
            self._mark_unknown(node, ready is None, now)
        for gone in set(self._probe) - {n["metadata"]["name"] for n in nodes}:
            self._probe.pop(gone, None)

    def _mark_unknown(self, node: dict[str, Any], never: bool, now: dt.datetime) -> None:
        name = node["metadata"]["name"]
        status = node.setdefault("status", {})
        conds = status.setdefault("conditions", [])
        reason = "NodeStatusNeverUpdated" if never else "NodeStatusUnknown"
        message = "Kubelet never posted node status." if never else \
            "Kubelet stopped posting node status."
        types = [c.get("type") for c in conds]
        for t in ("Ready", "MemoryPressure", "DiskPressure", "PIDPressure"):
            if t not in types:
                conds.append({"type": t, "lastHeartbeatTime": _rfc3339(now)})
        for c in conds:
            if c.get("type") in ("Ready", "MemoryPressure", "DiskPressure", "PIDPressure"):
                c.update(status="Unknown", reason=reason, message=message,
                         lastTransitionTime=_rfc3339(now))
        self.client.update(f"/api/v1/nodes/{name}/status", node)
        log(f"node {name}: Ready → Unknown ({message})")
        fresh = self.client.get(f"/api/v1/nodes/{name}")
        taints = fresh.setdefault("spec", {}).setdefault("taints", [])
        for effect in ("NoSchedule", "NoExecute"):
            if not any(t.get("key") == UNREACHABLE and t.get("effect") == effect for t in taints):
                taints.append({"key": UNREACHABLE, "effect": effect, "timeAdded": _rfc3339(now)})
        self.client.update(f"/api/v1/nodes/{name}", fresh)

    def _taint_not_ready(self, node: dict[str, Any], now: dt.datetime) -> None:
        """Ready=False (the kubelet says so): ``node.kubernetes.io/not-ready:NoSchedule``
        (TaintNodesByCondition) and ``…:NoExecute`` (the NoExecute taint manager's taint),
        replacing unreachable ones."""
        spec = node.setdefault("spec", {})
        taints = [t for t in spec.get("taints") or [] if t.get("key") != UNREACHABLE]
        changed = len(taints) != len(spec.get("taints") or [])
        for effect in ("NoSchedule", "NoExecute"):
            if not any(t.get("key") == NOT_READY and t.get("effect") == effect for t in taints):
                taint: dict[str, Any] = {"key": NOT_READY, "effect": effect}
                if effect == "NoExecute":
                    taint["timeAdded"] = _rfc3339(now)
                taints.append(taint)
                changed = True
        if changed:
            spec["taints"] = taints
            self.client.update(f"/api/v1/nodes/{node['metadata']['name']}", node)
            log(f"node {node['metadata']['name']}: tainted {NOT_READY} (Ready=False)")

    def _untaint(self, node: dict[str, Any]) -> None:
        taints = (node.get("spec") or {}).get("taints") or []
        keep = [t for t in taints if t.get("key") not in (UNREACHABLE, NOT_READY)]
        if len(keep) != len(taints):
            node["spec"]["taints"] = keep
            self.client.update(f"/api/v1/nodes/{node['metadata']['name']}", node)

    # -- serviceaccount / root-ca-cert-publisher -----------------------------------------------

    def _namespaces(self) -> list[str]:
        return [n["metadata"]["name"] for n in self.client.get("/api/v1/namespaces")["items"]
                if (n.get("status") or {}).get("phase", "Active") == "Active"]

    def default_service_accounts(self) -> None:
        for ns in self._namespaces():
            if self.client.find(ns_path("serviceaccounts", ns, "default")) is None:
                self._create(ns_path("serviceaccounts", ns), {"metadata": {"name": "default"}})

    def publish_root_ca(self) -> None:
        if not self.root_ca:
            return
        for ns in self._namespaces():
            path = ns_path("configmaps", ns, "kube-root-ca.crt")
            cm = self.client.find(path)
            if cm is None:
                self._create(ns_path("configmaps", ns), {
                    "metadata": {"name": "kube-root-ca.crt", "annotations": {
                        "kubernetes.io/description": ROOT_CA_DESCRIPTION}},
                    "data": {"ca.crt": self.root_ca}})
            elif (cm.get("data") or {}).get("ca.crt") != self.root_ca:
                cm["data"] = {"ca.crt": self.root_ca}
                self.client.update(path, cm)

    def _create(self, collection: str, obj: dict[str, Any]) -> None:
        try:
            self.client.create(collection, obj)
        except ApiError as exc:
            if exc.code != 409:
                raise

    # -- tokencleaner ---------------------------------------------------------------------------

    def _tokens(self) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.client.get(
            ns_path("secrets", "kube-system"), fieldSelector=f"type={TOKEN_TYPE}")["items"]
        return items

    def clean_tokens(self) -> None:
        now = _now()
        for secret in self._tokens():
            expires = _parse(_b64(secret.get("data") or {}, "expiration"))
            if expires is not None and expires <= now:
                name, uid = secret["metadata"]["name"], secret["metadata"].get("uid")
                try:
                    self.client.delete(ns_path("secrets", "kube-system", name), uid=uid)
                    log(f"tokencleaner: deleted expired bootstrap token secret {name}")
                except ApiError as exc:
                    if exc.code not in (404, 409):
                        raise

    # -- garbagecollector -----------------------------------------------------------------------

    def _owner_exists(self, ref: dict[str, Any], namespace: str | None) -> bool | None:
        target = _KIND_PATH.get((ref.get("apiVersion", ""), ref.get("kind", "")))
        if target is None:
            return None  # unknown kind: leave the dependent alone
        resource, gv, namespaced = target
        owner = self.client.find(ns_path(resource, namespace if namespaced else None,
                                         ref.get("name"), gv))
        return owner is not None and owner["metadata"].get("uid") == ref.get("uid")

    def collect_garbage(self) -> None:
        for resource, gv in _GC_SCAN:
            for obj in self.client.get(ns_path(resource, None, None, gv))["items"]:
                meta = obj["metadata"]
                refs = meta.get("ownerReferences") or []
                if not refs:
                    continue
                exists = [self._owner_exists(r, meta.get("namespace")) for r in refs]
                if any(e is None or e for e in exists):
                    continue
                try:
                    self.client.delete(ns_path(resource, meta.get("namespace"), meta["name"], gv),
                                       uid=meta.get("uid"))
                    log(f"garbagecollector: deleted {resource} {meta.get('namespace')}/"
                        f"{meta['name']} (owner gone)")
                except ApiError as exc:
                    if exc.code not in (404, 409):
                        raise

    # -- bootstrapsigner ------------------------------------------------------------------------

    def sign_cluster_info(self) -> None:
        path = ns_path("configmaps", "kube-public", "cluster-info")
        cm = self.client.find(path)
        if cm is None:
            return
        data = cm.setdefault("data", {})
        payload = data.get("kubeconfig", "")
        now = _now()
        want: dict[str, str] = {}
        for secret in self._tokens():
            d = secret.get("data") or {}
            expires = _parse(_b64(d, "expiration"))
            if _b64(d, "usage-bootstrap-signing") != "true" or (expires and expires <= now):
                continue
            token_id, token_secret = _b64(d, "token-id"), _b64(d, "token-secret")
            if token_id and token_secret:
                want[f"jws-kubeconfig-{token_id}"] = jws_detached(payload, token_id, token_secret)
        have = {k: v for k, v in data.items() if k.startswith("jws-kubeconfig-")}
        if have == want:
            return
        for k in have:
            data.pop(k)
        data.update(want)
        self.client.update(path, cm)
        log(f"bootstrapsigner: cluster-info signed for {len(want)} token(s)")
