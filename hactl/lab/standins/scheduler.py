"""The stand-in kube-scheduler's only loop: bind pods that have no ``spec.nodeName``.

A pending pod goes to a node that passes the real filters the lab needs
(:mod:`controller_placement`: unschedulable, nodeSelector/required node affinity — which is how
DaemonSet pods name their node —, taints against tolerations), round robin, through the
``pods/binding`` equivalent of setting ``spec.nodeName``. Like the real scheduler it does not
look at the Ready condition: a NotReady node keeps pods away through its
``node.kubernetes.io/not-ready`` taint. A pod no node fits stays Pending with the real
``PodScheduled=False``/``Unschedulable`` condition and a ``FailedScheduling`` Event, e.g.
``0/1 nodes are available: 1 node(s) had untolerated taint {node.kubernetes.io/not-ready: }.
preemption: 0/1 nodes are available: 1 Preemption is not helpful for scheduling.``
"""

from __future__ import annotations

import datetime as dt
import itertools
import threading
import time
from typing import Any

from .controller_placement import fit_failure, unschedulable_message
from .kubeapi import ApiError, Client, ns_path
from .leader import log

__all__ = ["Scheduler"]


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Scheduler:
    def __init__(self, client: Client, period: float = 1.0) -> None:
        self.client, self.period = client, period
        self._rr = itertools.count()
        self._reported: dict[str, str] = {}  # pod uid → last FailedScheduling message

    def schedule_once(self) -> int:
        pods = [p for p in self.client.get("/api/v1/pods")["items"]
                if not (p.get("spec") or {}).get("nodeName")
                and not (p.get("metadata") or {}).get("deletionTimestamp")]
        if not pods:
            return 0
        nodes = self.client.get("/api/v1/nodes")["items"]
        bound = 0
        for pod in pods:
            failures = [fit_failure(pod, n) for n in nodes]
            fits = [n for n, why in zip(nodes, failures, strict=True) if not why]
            if not fits:
                self._unschedulable(pod, unschedulable_message([f for f in failures if f], len(nodes)))
                continue
            node = fits[next(self._rr) % len(fits)]["metadata"]["name"]
            meta = pod["metadata"]
            pod["spec"]["nodeName"] = node
            try:
                self.client.update(ns_path("pods", meta["namespace"], meta["name"]), pod)
                log(f'Successfully bound pod to node pod="{meta["namespace"]}/{meta["name"]}" '
                    f'node="{node}"')
                self._reported.pop(str(meta.get("uid")), None)
                self._event(pod, "Normal", "Scheduled",
                            f"Successfully assigned {meta['namespace']}/{meta['name']} to {node}")
                bound += 1
            except ApiError as exc:
                log(f"bind {meta['name']}: {exc}")
        return bound

    def _unschedulable(self, pod: dict[str, Any], message: str) -> None:
        meta = pod["metadata"]
        uid = str(meta.get("uid"))
        if self._reported.get(uid) == message:
            return
        status = pod.setdefault("status", {})
        status["phase"] = status.get("phase") or "Pending"
        conds = [c for c in status.get("conditions") or [] if c.get("type") != "PodScheduled"]
        conds.append({"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                      "message": message, "lastProbeTime": None, "lastTransitionTime": _now()})
        status["conditions"] = conds
        try:
            self.client.update(ns_path("pods", meta["namespace"], meta["name"]) + "/status", pod)
        except ApiError as exc:
            if exc.code not in (404, 409):
                raise
            return
        self._event(pod, "Warning", "FailedScheduling", message)
        log(f'Unable to schedule pod; no fit; waiting pod="{meta["namespace"]}/{meta["name"]}" '
            f'err="{message}"')
        self._reported[uid] = message

    def _event(self, pod: dict[str, Any], kind: str, reason: str, message: str) -> None:
        meta = pod["metadata"]
        stamp = _now()
        try:
            self.client.create(ns_path("events", meta["namespace"]), {
                "apiVersion": "v1", "kind": "Event",
                "metadata": {"name": f"{meta['name']}.{time.time_ns():x}",
                             "namespace": meta["namespace"]},
                "involvedObject": {"kind": "Pod", "apiVersion": "v1", "namespace": meta["namespace"],
                                   "name": meta["name"], "uid": meta.get("uid")},
                "reason": reason, "message": message, "type": kind, "count": 1,
                "source": {"component": "default-scheduler"}, "reportingComponent": "default-scheduler",
                "firstTimestamp": stamp, "lastTimestamp": stamp})
        except ApiError as exc:  # events are best effort, as for real
            log(f"event {reason} for {meta['name']}: {exc}")

    def run(self, lost: threading.Event) -> None:
        while not lost.is_set():
            try:
                self.schedule_once()
            except (ApiError, OSError, KeyError) as exc:
                log(f"scheduler: {exc}")
            lost.wait(self.period)
