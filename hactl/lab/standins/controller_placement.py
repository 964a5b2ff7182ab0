"""Node placement rules shared by the stand-in scheduler and the DaemonSet controller.

The filter plugins of the real kube-scheduler the lab needs, in their order and with their
reasons (``pkg/scheduler/framework/plugins``): NodeUnschedulable ("node(s) were
unschedulable"), NodeName, NodeAffinity (``nodeSelector`` + required node affinity:
"node(s) didn't match Pod's node affinity/selector"), TaintToleration ("node(s) had
untolerated taint {key: value}"). Toleration matching is ``v1.Toleration.ToleratesTaint``.
Resources, ports, volumes and inter-pod affinity are not checked (docs/standins/kubeadm.md).
"""

from __future__ import annotations

from typing import Any

__all__ = ["fit_failure", "tolerates", "unschedulable_message"]

NOT_READY = "node.kubernetes.io/not-ready"
UNSCHEDULABLE = "node.kubernetes.io/unschedulable"


def tolerates(toleration: dict[str, Any], taint: dict[str, Any]) -> bool:
    """``Toleration.ToleratesTaint``: effect (empty = all), key (empty + Exists = all),
    operator Exists or Equal (the default) with the value."""
    effect = toleration.get("effect") or ""
    if effect and effect != taint.get("effect"):
        return False
    key = toleration.get("key") or ""
    if key and key != taint.get("key"):
        return False
    op = toleration.get("operator") or "Equal"
    if op == "Exists":
        return True
    if not key:
        return False  # an empty key needs Exists
    return str(toleration.get("value") or "") == str(taint.get("value") or "")


def _expr_matches(expr: dict[str, Any], value: str | None) -> bool:
    op, values = expr.get("operator"), [str(v) for v in expr.get("values") or []]
    if op == "In":
        return value is not None and value in values
    if op == "NotIn":
        return value is None or value not in values
    if op == "Exists":
        return value is not None
    if op == "DoesNotExist":
        return value is None
    if op in ("Gt", "Lt") and value is not None and values:
        try:
            return int(value) > int(values[0]) if op == "Gt" else int(value) < int(values[0])
        except ValueError:
            return False
    return False


def _term_matches(term: dict[str, Any], node: dict[str, Any]) -> bool:
    labels = (node.get("metadata") or {}).get("labels") or {}
    fields = {"metadata.name": (node.get("metadata") or {}).get("name")}
    exprs = term.get("matchExpressions") or []
    mfields = term.get("matchFields") or []
    if not exprs and not mfields:
        return False  # an empty term matches nothing
    return (all(_expr_matches(e, labels.get(e.get("key"))) for e in exprs)
            and all(_expr_matches(e, fields.get(e.get("key"))) for e in mfields))


def matches_node_affinity(pod: dict[str, Any], node: dict[str, Any]) -> bool:
    spec = pod.get("spec") or {}
    labels = (node.get("metadata") or {}).get("labels") or {}
    for key, value in (spec.get("nodeSelector") or {}).items():
        if labels.get(key) != str(value):
            return False
    required = (((spec.get("affinity") or {}).get("nodeAffinity") or {})
                .get("requiredDuringSchedulingIgnoredDuringExecution") or {})
    terms = required.get("nodeSelectorTerms")
    if terms is not None:
        return any(_term_matches(t or {}, node) for t in terms)
    return True


def fit_failure(pod: dict[str, Any], node: dict[str, Any]) -> str:
    """"" when ``pod`` may go on ``node``, else the real filter's reason."""
    spec = pod.get("spec") or {}
    tolerations = spec.get("tolerations") or []
    if (node.get("spec") or {}).get("unschedulable") and not any(
            tolerates(t, {"key": UNSCHEDULABLE, "effect": "NoSchedule"}) for t in tolerations):
        return "node(s) were unschedulable"
    if not matches_node_affinity(pod, node):
        return "node(s) didn't match Pod's node affinity/selector"
    for taint in (node.get("spec") or {}).get("taints") or []:
        if taint.get("effect") not in ("NoSchedule", "NoExecute"):
            continue
        if not any(tolerates(t, taint) for t in tolerations):
            return f"node(s) had untolerated taint {{{taint.get('key')}: {taint.get('value') or ''}}}"
    return ""


def unschedulable_message(reasons: list[str], total: int) -> str:
    """The scheduler's FitError text: ``0/N nodes are available: <count> <reason>, …`` sorted,
    then the preemption part."""
    counts: dict[str, int] = {}
    for reason in reasons:
        counts[reason] = counts.get(reason, 0) + 1
    parts = sorted(f"{n} {reason}" for reason, n in counts.items())
    head = f"0/{total} nodes are available"
    text = f"{head}: {', '.join(parts)}." if parts else f"{head}."
    return (f"{text} preemption: 0/{total} nodes are available: {total} Preemption is not helpful "
            "for scheduling.")
