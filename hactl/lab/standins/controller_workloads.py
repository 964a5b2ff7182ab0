"""The workload controllers of the stand-in kube-controller-manager: deployment, replicaset,
daemonset (``pkg/controller/{deployment,replicaset,daemon}``), as far as the lab needs them.

* deployment — one ReplicaSet per pod template, ``<deployment>-<pod-template-hash>``, with the
  template's labels + ``pod-template-hash``; the current one is scaled to ``spec.replicas``,
  older ones to 0 at once (no surge/unavailability budget while rolling). Status: replicas,
  updated/ready/available replicas, ``observedGeneration`` and the conditions ``Available``
  (``MinimumReplicasAvailable`` "Deployment has minimum availability." when available ≥
  replicas − maxUnavailable, else ``MinimumReplicasUnavailable`` "Deployment does not have
  minimum availability.") and ``Progressing``.
* replicaset — creates (``generateName: <rs>-``) or deletes the pods it controls (controller
  ownerReference with its uid) until their number is ``spec.replicas``; pending / not ready
  pods are deleted first. Orphans are not adopted. Status: replicas, fullyLabeledReplicas,
  readyReplicas, availableReplicas (``minReadySeconds`` ignored), observedGeneration.
* daemonset — one pod per node that should run it (``NodeShouldRunDaemonPod``: nodeSelector,
  required node affinity, taints against the template's tolerations plus the ones the real
  controller adds to every daemon pod), bound to it through the required node affinity
  ``matchFields metadata.name In [<node>]`` that the scheduler honours; pods on nodes that no
  longer qualify (gone, selector/affinity, an untolerated NoExecute taint) are deleted.
  Status: desired/current/updated scheduled, numberReady, numberAvailable, numberMisscheduled,
  observedGeneration.
"""

from __future__ import annotations

import copy
import datetime as dt
import hashlib
import json
from typing import Any

from .controller_placement import fit_failure, matches_node_affinity, tolerates
from .kubeapi import ApiError, Client, ns_path
from .leader import log

__all__ = ["WorkloadControllers", "daemon_tolerations"]

APPS = "apps/v1"
_SAFE = "bcdfghjklmnpqrstvwxz2456789"  # rand.SafeEncodeString's alphabet


def template_hash(template: dict[str, Any]) -> str:
    digest = hashlib.sha256(json.dumps(template, sort_keys=True).encode()).digest()
    return "".join(_SAFE[b % len(_SAFE)] for b in digest[:10])


def daemon_tolerations(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """``util.AddOrUpdateDaemonPodTolerations``: what every daemon pod tolerates."""
    add = [("node.kubernetes.io/not-ready", "NoExecute"), ("node.kubernetes.io/unreachable", "NoExecute"),
           ("node.kubernetes.io/disk-pressure", "NoSchedule"),
           ("node.kubernetes.io/memory-pressure", "NoSchedule"),
           ("node.kubernetes.io/pid-pressure", "NoSchedule"),
           ("node.kubernetes.io/unschedulable", "NoSchedule")]
    if spec.get("hostNetwork"):
        add.append(("node.kubernetes.io/network-unavailable", "NoSchedule"))
    tolerations = list(spec.get("tolerations") or [])
    for key, effect in add:
        if not any(t.get("key") == key and t.get("effect") == effect for t in tolerations):
            tolerations.append({"key": key, "operator": "Exists", "effect": effect})
    return tolerations


def _controller_uid(obj: dict[str, Any]) -> str:
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("controller"):
            return str(ref.get("uid"))
    return ""


def _owner(kind: str, obj: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": APPS, "kind": kind, "name": obj["metadata"]["name"],
            "uid": obj["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True}


def pod_ready(pod: dict[str, Any]) -> bool:
    status = pod.get("status") or {}
    return status.get("phase") == "Running" and any(
        c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])


def _alive(pod: dict[str, Any]) -> bool:
    return not (pod.get("metadata") or {}).get("deletionTimestamp") and \
        (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed")


class WorkloadControllers:
    def __init__(self, client: Client) -> None:
        self.client = client

    # -- helpers --------------------------------------------------------------------------------

    def _list(self, resource: str, gv: str = "v1") -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.client.get(ns_path(resource, None, None, gv))["items"]
        return items

    def _status(self, resource: str, obj: dict[str, Any], status: dict[str, Any]) -> None:
        old = obj.get("status") or {}
        if all(old.get(k) == v for k, v in status.items()):
            return
        obj["status"] = {**old, **status}
        meta = obj["metadata"]
        try:
            self.client.update(ns_path(resource, meta["namespace"], meta["name"], APPS) + "/status", obj)
        except ApiError as exc:
            if exc.code not in (404, 409):
                raise

    def _create_pod(self, namespace: str, template: dict[str, Any], owner: dict[str, Any],
                    prefix: str, labels: dict[str, str] | None = None,
                    spec_change: Any = None) -> None:
        meta = copy.deepcopy(template.get("metadata") or {})
        meta["labels"] = {**(meta.get("labels") or {}), **(labels or {})}
        meta.pop("name", None)
        meta["generateName"] = f"{prefix}-"
        meta["namespace"] = namespace
        meta["ownerReferences"] = [owner]
        spec = copy.deepcopy(template.get("spec") or {})
        if spec_change is not None:
            spec_change(spec)
        self.client.create(ns_path("pods", namespace), {"apiVersion": "v1", "kind": "Pod",
                                                        "metadata": meta, "spec": spec})

    def _delete_pod(self, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        try:
            self.client.delete(ns_path("pods", meta["namespace"], meta["name"]), uid=meta.get("uid"))
        except ApiError as exc:
            if exc.code not in (404, 409):
                raise

    # -- replicaset -----------------------------------------------------------------------------

    def sync_replicasets(self) -> None:
        pods = self._list("pods")
        for rs in self._list("replicasets", APPS):
            meta = rs["metadata"]
            uid = meta.get("uid")
            spec = rs.get("spec") or {}
            want = int(spec.get("replicas", 1))
            mine = [p for p in pods if _controller_uid(p) == uid and
                    (p.get("metadata") or {}).get("namespace") == meta["namespace"] and _alive(p)]
            if len(mine) < want:
                for _ in range(want - len(mine)):
                    self._create_pod(meta["namespace"], spec.get("template") or {},
                                     _owner("ReplicaSet", rs), meta["name"])
                log(f"replicaset {meta['namespace']}/{meta['name']}: created {want - len(mine)} pod(s)")
            elif len(mine) > want:
                # unscheduled first, then not ready, then the rest (getPodsToDelete's ranking)
                ranked = sorted(mine, key=lambda p: (bool((p.get("spec") or {}).get("nodeName")),
                                                     pod_ready(p)))
                for pod in ranked[:len(mine) - want]:
                    self._delete_pod(pod)
                log(f"replicaset {meta['namespace']}/{meta['name']}: deleted {len(mine) - want} pod(s)")
            labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
            ready = sum(1 for p in mine if pod_ready(p))
            self._status("replicasets", rs, {
                "replicas": len(mine),
                "fullyLabeledReplicas": sum(1 for p in mine if all(
                    ((p.get("metadata") or {}).get("labels") or {}).get(k) == v for k, v in labels.items())),
                "readyReplicas": ready, "availableReplicas": ready,
                "observedGeneration": meta.get("generation", 1)})

    # -- deployment -----------------------------------------------------------------------------

    def sync_deployments(self) -> None:
        replicasets = self._list("replicasets", APPS)
        for dep in self._list("deployments", APPS):
            meta = dep["metadata"]
            spec = dep.get("spec") or {}
            want = int(spec.get("replicas", 1))
            template = spec.get("template") or {}
            digest = template_hash(template)
            owned = [rs for rs in replicasets if _controller_uid(rs) == meta.get("uid")]
            current = next((rs for rs in owned if ((rs["metadata"].get("labels") or {})
                                                    .get("pod-template-hash") == digest)), None)
            if current is None:
                tmpl = copy.deepcopy(template)
                tmeta = tmpl.setdefault("metadata", {})
                tmeta["labels"] = {**(tmeta.get("labels") or {}), "pod-template-hash": digest}
                selector = copy.deepcopy(spec.get("selector") or {})
                selector["matchLabels"] = {**(selector.get("matchLabels") or {}), "pod-template-hash": digest}
                current = self.client.create(ns_path("replicasets", meta["namespace"], None, APPS), {
                    "apiVersion": APPS, "kind": "ReplicaSet",
                    "metadata": {"name": f"{meta['name']}-{digest}", "namespace": meta["namespace"],
                                 "labels": dict(tmeta["labels"]),
                                 "annotations": {"deployment.kubernetes.io/desired-replicas": str(want),
                                                 "deployment.kubernetes.io/revision": str(len(owned) + 1)},
                                 "ownerReferences": [_owner("Deployment", dep)]},
                    "spec": {"replicas": want, "selector": selector, "template": tmpl}})
                log(f"deployment {meta['namespace']}/{meta['name']}: created replicaset "
                    f"{current['metadata']['name']}")
            for rs in owned:
                target = want if rs["metadata"]["uid"] == current["metadata"]["uid"] else 0
                if int((rs.get("spec") or {}).get("replicas", 1)) != target:
                    rs["spec"]["replicas"] = target
                    self.client.update(ns_path("replicasets", meta["namespace"], rs["metadata"]["name"],
                                               APPS), rs)
            self._deployment_status(dep, [*owned, current] if current not in owned else owned, current)

    def _deployment_status(self, dep: dict[str, Any], owned: list[dict[str, Any]],
                           current: dict[str, Any]) -> None:
        spec = dep.get("spec") or {}
        want = int(spec.get("replicas", 1))
        unavailable = ((spec.get("strategy") or {}).get("rollingUpdate") or {}).get("maxUnavailable", "25%")
        if isinstance(unavailable, str) and unavailable.endswith("%"):
            max_unavailable = want * int(unavailable[:-1]) // 100  # rounded down, as for real
        else:
            max_unavailable = int(unavailable)
        stats = [(rs.get("status") or {}) for rs in owned]
        available = sum(int(s.get("availableReplicas", 0)) for s in stats)
        ok = available >= want - max_unavailable
        old = {c.get("type"): c for c in (dep.get("status") or {}).get("conditions") or []}

        def cond(kind: str, status: str, reason: str, message: str) -> dict[str, Any]:
            before = old.get(kind) or {}
            if before.get("status") == status and before.get("reason") == reason:
                return before
            stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            return {"type": kind, "status": status, "reason": reason, "message": message,
                    "lastUpdateTime": stamp, "lastTransitionTime": stamp}

        name = current["metadata"]["name"]
        current_ready = int((current.get("status") or {}).get("availableReplicas", 0))
        progressing = cond("Progressing", "True", "NewReplicaSetAvailable",
                           f'ReplicaSet "{name}" has successfully progressed.') \
            if current_ready >= want else \
            cond("Progressing", "True", "ReplicaSetUpdated", f'ReplicaSet "{name}" is progressing.')
        available_cond = cond("Available", "True", "MinimumReplicasAvailable",
                              "Deployment has minimum availability.") if ok else \
            cond("Available", "False", "MinimumReplicasUnavailable",
                 "Deployment does not have minimum availability.")
        total = sum(int(s.get("replicas", 0)) for s in stats)
        self._status("deployments", dep, {
            "observedGeneration": dep["metadata"].get("generation", 1),
            "replicas": total,
            "updatedReplicas": int((current.get("status") or {}).get("replicas", 0)),
            "readyReplicas": sum(int(s.get("readyReplicas", 0)) for s in stats),
            "availableReplicas": available,
            "unavailableReplicas": max(0, total - available),
            "conditions": [available_cond, progressing]})

    # -- daemonset ------------------------------------------------------------------------------

    def sync_daemonsets(self) -> None:
        nodes = {n["metadata"]["name"]: n for n in self._list("nodes")}
        pods = self._list("pods")
        for ds in self._list("daemonsets", APPS):
            meta = ds["metadata"]
            spec = ds.get("spec") or {}
            template = copy.deepcopy(spec.get("template") or {})
            tspec = template.setdefault("spec", {})
            tspec["tolerations"] = daemon_tolerations(tspec)
            digest = template_hash(spec.get("template") or {})
            mine = [p for p in pods if _controller_uid(p) == meta.get("uid") and _alive(p)]
            by_node: dict[str, list[dict[str, Any]]] = {}
            for pod in mine:
                by_node.setdefault(self._target(pod), []).append(pod)
            should: list[str] = []
            for name, node in nodes.items():
                if not fit_failure({"spec": tspec}, node):
                    should.append(name)
            for name in should:
                if name not in by_node:
                    self._create_pod(meta["namespace"], template, _owner("DaemonSet", ds), meta["name"],
                                     {"controller-revision-hash": digest,
                                      "pod-template-generation": str(meta.get("generation", 1))},
                                     lambda s, n=name: _pin(s, n))
                    log(f"daemonset {meta['namespace']}/{meta['name']}: created a pod for node {name}")
            for name, node_pods in by_node.items():
                on = nodes.get(name)
                if on is None or not self._may_continue(tspec, on):
                    for pod in node_pods:
                        self._delete_pod(pod)
                else:
                    for pod in node_pods[1:]:  # one per node
                        self._delete_pod(pod)
            scheduled = [p for p in mine if (p.get("spec") or {}).get("nodeName") in should]
            ready = sum(1 for p in scheduled if pod_ready(p))
            self._status("daemonsets", ds, {
                "desiredNumberScheduled": len(should),
                "currentNumberScheduled": len({self._target(p) for p in mine} & set(should)),
                "updatedNumberScheduled": sum(1 for p in scheduled if (p["metadata"].get("labels") or {})
                                              .get("controller-revision-hash") == digest),
                "numberMisscheduled": len({self._target(p) for p in mine} - set(should)),
                "numberReady": ready, "numberAvailable": ready,
                "numberUnavailable": max(0, len(should) - ready),
                "observedGeneration": meta.get("generation", 1)})

    @staticmethod
    def _target(pod: dict[str, Any]) -> str:
        spec = pod.get("spec") or {}
        if spec.get("nodeName"):
            return str(spec["nodeName"])
        terms = ((((spec.get("affinity") or {}).get("nodeAffinity") or {})
                  .get("requiredDuringSchedulingIgnoredDuringExecution") or {}).get("nodeSelectorTerms") or [])
        for term in terms:
            for field in term.get("matchFields") or []:
                if field.get("key") == "metadata.name" and field.get("values"):
                    return str(field["values"][0])
        return ""

    @staticmethod
    def _may_continue(tspec: dict[str, Any], node: dict[str, Any]) -> bool:
        if not matches_node_affinity({"spec": tspec}, node):
            return False
        return all(any(tolerates(t, taint) for t in tspec.get("tolerations") or [])
                   for taint in (node.get("spec") or {}).get("taints") or []
                   if taint.get("effect") == "NoExecute")


def _pin(spec: dict[str, Any], node: str) -> None:
    """``ReplaceDaemonSetPodNodeNameNodeAffinity``: the required node affinity becomes one
    term ``matchFields metadata.name In [node]``."""
    affinity = spec.setdefault("affinity", {})
    node_affinity = affinity.setdefault("nodeAffinity", {})
    node_affinity["requiredDuringSchedulingIgnoredDuringExecution"] = {"nodeSelectorTerms": [
        {"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}]}]}
