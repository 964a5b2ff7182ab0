"""The stand-in kube-scheduler's only loop: bind pods that have no ``spec.nodeName``.

Every pod in the lab is a static (mirror) pod that already names its node, so this rarely has
work: a pending pod is bound to a Ready, schedulable node without a NoSchedule taint it does not
tolerate (round robin), through the ``pods/binding`` equivalent of setting ``spec.nodeName``.
"""

from __future__ import annotations

import itertools
import threading
from typing import Any

from .kubeapi import ApiError, Client, ns_path
from .leader import log

__all__ = ["Scheduler"]


def _schedulable(node: dict[str, Any], pod: dict[str, Any]) -> bool:
    if (node.get("spec") or {}).get("unschedulable"):
        return False
    conds = (node.get("status") or {}).get("conditions") or []
    if not any(c.get("type") == "Ready" and c.get("status") == "True" for c in conds):
        return False
    tolerations = (pod.get("spec") or {}).get("tolerations") or []
    for taint in (node.get("spec") or {}).get("taints") or []:
        if taint.get("effect") not in ("NoSchedule", "NoExecute"):
            continue
        if not any((t.get("operator") == "Exists" and not t.get("key"))
                   or t.get("key") == taint.get("key") for t in tolerations):
            return False
    return True


class Scheduler:
    def __init__(self, client: Client, period: float = 1.0) -> None:
        self.client, self.period = client, period
        self._rr = itertools.count()

    def schedule_once(self) -> int:
        pods = [p for p in self.client.get("/api/v1/pods")["items"]
                if not (p.get("spec") or {}).get("nodeName")]
        if not pods:
            return 0
        nodes = self.client.get("/api/v1/nodes")["items"]
        bound = 0
        for pod in pods:
            fits = [n for n in nodes if _schedulable(n, pod)]
            if not fits:
                continue
            node = fits[next(self._rr) % len(fits)]["metadata"]["name"]
            meta = pod["metadata"]
            pod["spec"]["nodeName"] = node
            try:
                self.client.update(ns_path("pods", meta["namespace"], meta["name"]), pod)
                log(f'Successfully bound pod to node pod="{meta["namespace"]}/{meta["name"]}" '
                    f'node="{node}"')
                bound += 1
            except ApiError as exc:
                log(f"bind {meta['name']}: {exc}")
        return bound

    def run(self, lost: threading.Event) -> None:
        while not lost.is_set():
            try:
                self.schedule_once()
            except (ApiError, OSError, KeyError) as exc:
                log(f"scheduler: {exc}")
            lost.wait(self.period)
