"""The controller-manager stand-in's ``disruption`` and ``podgc`` controllers.

disruption (``pkg/controller/disruption/disruption.go``): for every PodDisruptionBudget, the pods
of its namespace its selector matches (a nil or empty selector matches none), then

- ``expectedPods``/``desiredHealthy``: ``minAvailable`` as an integer → ``len(pods)`` and that
  integer; ``minAvailable`` as a percentage or ``maxUnavailable`` (integer or percentage) → the
  sum of the scales of the pods' controllers (ReplicaSet ``spec.replicas``, or the Deployment's
  when the ReplicaSet belongs to one), percentages rounded up; pods without a controller are
  left out of that sum (the real "UnmanagedPods" warning is logged); a controller the stand-in
  cannot size fails the sync;
- ``currentHealthy``: Ready pods not being deleted and not in ``disruptedPods`` (an entry
  expires after 2 minutes, DeletionTimeout);
- ``disruptionsAllowed`` = ``currentHealthy - desiredHealthy`` (0 when negative or when
  ``expectedPods`` is 0), ``observedGeneration``, and the ``DisruptionAllowed`` condition
  (SufficientPods / InsufficientPods).

A failed sync is the real failSafe: ``disruptionsAllowed`` 0 and the condition False with reason
``SyncFailed`` and the error, ``observedGeneration`` left as it was (so evictions get 429 "still
being processed" for a budget that was never computed).

podgc (``pkg/controller/podgc``, gcOrphaned): a pod bound to a Node that does not exist, seen so
for the 40 s quarantine, is deleted with grace period 0 (nobody else would finish its deletion).
"""

from __future__ import annotations

import datetime as dt
import math
import time
from typing import Any

from .kubeapi import ApiError, Client, ns_path
from .labelselector import InvalidSelector, selector_empty, selector_matches
from .leader import log

__all__ = ["DisruptionController", "PodGC", "scaled_value"]

DELETION_TIMEOUT = dt.timedelta(minutes=2)
QUARANTINE = 40.0  # podgc: a Node must be missing this long before its pods are deleted
PDB_GV = "policy/v1"


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _stamp(t: dt.datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse(ts: Any) -> dt.datetime | None:
    try:
        return dt.datetime.fromisoformat(str(ts).replace("Z", "+00:00"))
    except ValueError:
        return None


def scaled_value(value: int | str, total: int) -> int:
    """intstr.GetScaledValueFromIntOrPercent(value, total, roundUp=true)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    text = str(value)
    if not text.endswith("%") or not text[:-1].isdigit():
        raise ValueError("invalid value for IntOrString: invalid type: string is not a "
                         "percentage")
    return math.ceil(int(text[:-1]) * total / 100)


def is_ready(pod: dict[str, Any]) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (pod.get("status") or {}).get("conditions") or [])


def controller_of(obj: dict[str, Any]) -> dict[str, Any] | None:
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("controller"):
            return dict(ref)
    return None


class DisruptionController:
    def __init__(self, client: Client) -> None:
        self.client = client

    # -- finders (getPodReplicaSet, getPodDeployment) ------------------------------------------

    def _get(self, resource: str, namespace: str, name: str, uid: str) -> dict[str, Any] | None:
        obj = self.client.find(ns_path(resource, namespace, name, "apps/v1"))
        if obj is None or obj["metadata"].get("uid") != uid:
            return None
        return dict(obj)

    def _scale(self, ref: dict[str, Any], namespace: str) -> tuple[str, int] | None:
        """(controller uid, scale) of the pod's controller, None if no finder knows it."""
        if ref.get("kind") != "ReplicaSet" or not str(ref.get("apiVersion", "")).startswith(
                "apps/"):
            return None  # ReplicationController, StatefulSet, scale subresources: not served
        rs = self._get("replicasets", namespace, str(ref.get("name")), str(ref.get("uid")))
        if rs is None:
            return None
        owner = controller_of(rs)
        if owner is not None and owner.get("kind") == "Deployment":
            dep = self._get("deployments", namespace, str(owner.get("name")),
                            str(owner.get("uid")))
            if dep is None:
                return None
            replicas = (dep.get("spec") or {}).get("replicas")
            return str(dep["metadata"]["uid"]), 1 if replicas is None else int(replicas)
        replicas = (rs.get("spec") or {}).get("replicas")
        return str(rs["metadata"]["uid"]), 1 if replicas is None else int(replicas)

    def expected_scale(self, pdb: dict[str, Any], pods: list[dict[str, Any]]) -> int:
        scales: dict[str, int] = {}
        unmanaged: list[str] = []
        for pod in pods:
            ref = controller_of(pod)
            if ref is None:
                unmanaged.append(pod["metadata"]["name"])
                continue
            if ref.get("uid") in scales:
                continue
            found = self._scale(ref, pod["metadata"]["namespace"])
            if found is None:
                raise ValueError(f'found no controllers for pod "{pod["metadata"]["name"]}"')
            scales[found[0]] = found[1]
        if unmanaged:
            log(f"disruption: {pdb['metadata']['namespace']}/{pdb['metadata']['name']}: "
                f"UnmanagedPods: Pods selected by this PodDisruptionBudget were found to be "
                f"unmanaged ({', '.join(unmanaged)}). As a result, the status of the PDB cannot "
                f"be calculated correctly, which may result in undefined behavior. To account for "
                f'these pods please set ".spec.minAvailable" field of the PDB to an integer '
                f"value.")
        return sum(scales.values())

    def expected_pod_count(self, pdb: dict[str, Any], pods: list[dict[str, Any]]
                           ) -> tuple[int, int]:
        """(expectedCount, desiredHealthy), getExpectedPodCount."""
        spec = pdb.get("spec") or {}
        expected = desired = 0
        if spec.get("maxUnavailable") is not None:
            expected = self.expected_scale(pdb, pods)
            desired = max(0, expected - scaled_value(spec["maxUnavailable"], expected))
        elif spec.get("minAvailable") is not None:
            value = spec["minAvailable"]
            if isinstance(value, int) and not isinstance(value, bool):
                desired, expected = value, len(pods)
            else:
                expected = self.expected_scale(pdb, pods)
                desired = scaled_value(value, expected)
        return expected, desired

    # -- sync ------------------------------------------------------------------------------------

    def pods_for(self, pdb: dict[str, Any]) -> list[dict[str, Any]]:
        selector = (pdb.get("spec") or {}).get("selector")
        if selector_empty(selector):
            return []
        pods = self.client.get(ns_path("pods", pdb["metadata"]["namespace"]))["items"]
        return [p for p in pods
                if selector_matches(selector, p["metadata"].get("labels") or {})]

    def sync_all(self) -> None:
        for pdb in self.client.get(ns_path("poddisruptionbudgets", None, None, PDB_GV))["items"]:
            try:
                self.sync(pdb)
            except ApiError as exc:
                if exc.code not in (404, 409):  # conflicts: the next round sees the new one
                    raise

    def sync(self, pdb: dict[str, Any], now: dt.datetime | None = None) -> None:
        now = now or _now()
        try:
            pods = self.pods_for(pdb)
            expected, desired = self.expected_pod_count(pdb, pods)
        except (ValueError, InvalidSelector) as exc:
            log(f"disruption: {pdb['metadata']['namespace']}/{pdb['metadata']['name']}: "
                f"CalculateExpectedPodCountFailed: Failed to calculate the number of expected "
                f"pods: {exc}")
            self.fail_safe(pdb, str(exc))
            return
        old = dict(pdb.get("status") or {})
        disrupted: dict[str, str] = {}
        for pod in pods:
            if pod["metadata"].get("deletionTimestamp"):
                continue
            when = (old.get("disruptedPods") or {}).get(pod["metadata"]["name"])
            seen = _parse(when) if when else None
            if seen is not None and seen + DELETION_TIMEOUT >= now:
                disrupted[pod["metadata"]["name"]] = str(when)
        healthy = sum(1 for p in pods if not p["metadata"].get("deletionTimestamp")
                      and p["metadata"]["name"] not in disrupted and is_ready(p))
        allowed = healthy - desired
        if expected <= 0 or allowed <= 0:
            allowed = 0
        generation = int(pdb["metadata"].get("generation") or 0)
        status: dict[str, Any] = {
            "currentHealthy": healthy, "desiredHealthy": desired, "expectedPods": expected,
            "disruptionsAllowed": allowed, "observedGeneration": generation}
        if disrupted:
            status["disruptedPods"] = disrupted
        cond = self._condition(old, allowed > 0, "SufficientPods" if allowed > 0
                               else "InsufficientPods", "", generation, now)
        same = all(old.get(k, 0) == v for k, v in status.items() if k != "disruptedPods") and (
            (old.get("disruptedPods") or {}) == disrupted)
        conds = old.get("conditions") or []
        current = next((c for c in conds if c.get("type") == "DisruptionAllowed"), None)
        if same and current is not None and current.get("status") == cond["status"] and \
                current.get("reason") == cond["reason"]:
            return
        status["conditions"] = [c for c in conds if c.get("type") != "DisruptionAllowed"] + [cond]
        self._put_status(pdb, status)

    @staticmethod
    def _condition(old: dict[str, Any], ok: bool, reason: str, message: str, generation: int,
                   now: dt.datetime) -> dict[str, Any]:
        """apimeta.SetStatusCondition: lastTransitionTime moves only when the status changes."""
        want = "True" if ok else "False"
        prev = next((c for c in old.get("conditions") or []
                     if c.get("type") == "DisruptionAllowed"), None)
        since = prev.get("lastTransitionTime") if prev and prev.get("status") == want else None
        return {"type": "DisruptionAllowed", "status": want, "reason": reason,
                "message": message, "observedGeneration": generation,
                "lastTransitionTime": since or _stamp(now)}

    def fail_safe(self, pdb: dict[str, Any], error: str) -> None:
        old = dict(pdb.get("status") or {})
        status = {**old, "disruptionsAllowed": 0}
        cond = self._condition(old, False, "SyncFailed", error,
                               int(old.get("observedGeneration") or 0), _now())
        status["conditions"] = [c for c in old.get("conditions") or []
                                if c.get("type") != "DisruptionAllowed"] + [cond]
        if status != old:
            self._put_status(pdb, status)

    def _put_status(self, pdb: dict[str, Any], status: dict[str, Any]) -> None:
        meta = pdb["metadata"]
        body = {"apiVersion": PDB_GV, "kind": "PodDisruptionBudget",
                "metadata": {"name": meta["name"], "namespace": meta["namespace"],
                             "resourceVersion": meta.get("resourceVersion", "")},
                "status": status}
        self.client.update(ns_path("poddisruptionbudgets", meta["namespace"], meta["name"],
                                   PDB_GV) + "/status", body)


class PodGC:
    def __init__(self, client: Client, quarantine: float = QUARANTINE) -> None:
        self.client = client
        self.quarantine = quarantine
        self._missing: dict[str, float] = {}  # node name → when first seen missing

    def collect(self) -> None:
        nodes = {n["metadata"]["name"] for n in self.client.get("/api/v1/nodes")["items"]}
        pods = self.client.get("/api/v1/pods")["items"]
        now = time.monotonic()
        bound = {p["spec"]["nodeName"] for p in pods if (p.get("spec") or {}).get("nodeName")}
        for name in list(self._missing):
            if name in nodes or name not in bound:
                del self._missing[name]
        for pod in pods:
            node = (pod.get("spec") or {}).get("nodeName")
            if not node or node in nodes:
                continue
            first = self._missing.setdefault(node, now)
            if now - first < self.quarantine:
                continue
            meta = pod["metadata"]
            try:
                self.client.delete(ns_path("pods", meta["namespace"], meta["name"]),
                                   uid=meta.get("uid"), grace=0)
                log(f"podgc: deleted orphaned pod {meta['namespace']}/{meta['name']} (node "
                    f"{node} does not exist)")
            except (ApiError, OSError) as exc:
                log(f"podgc: {meta['namespace']}/{meta['name']}: {exc}")
