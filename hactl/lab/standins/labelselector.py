"""``metav1.LabelSelector`` objects (``matchLabels`` + ``matchExpressions``), as
``metav1.LabelSelectorAsSelector`` reads them. Shared by the stand-in kube-apiserver (evictions)
and kube-controller-manager (the disruption controller)."""

from __future__ import annotations

from typing import Any

__all__ = ["InvalidSelector", "selector_empty", "selector_matches"]

_OPS = ("In", "NotIn", "Exists", "DoesNotExist")


class InvalidSelector(ValueError):
    pass


def _requirements(selector: dict[str, Any] | None) -> list[tuple[str, str, list[str]]]:
    if not selector:
        return []
    if not isinstance(selector, dict):
        raise InvalidSelector(f"invalid label selector: {selector!r}")
    reqs: list[tuple[str, str, list[str]]] = []
    for key, value in (selector.get("matchLabels") or {}).items():
        reqs.append((str(key), "In", [str(value)]))
    for expr in selector.get("matchExpressions") or []:
        op = str((expr or {}).get("operator", ""))
        values = [str(v) for v in (expr or {}).get("values") or []]
        if op not in _OPS:
            raise InvalidSelector(f'"{op}" is not a valid label selector operator')
        if op in ("In", "NotIn") and not values:
            raise InvalidSelector("for 'in', 'notin' operators, values set can't be empty")
        if op in ("Exists", "DoesNotExist") and values:
            raise InvalidSelector("values set must be empty for exists and does not exist")
        reqs.append((str(expr.get("key", "")), op, values))
    return reqs


def selector_empty(selector: dict[str, Any] | None) -> bool:
    """A nil or empty selector (``selector.Empty()``); an invalid one raises InvalidSelector."""
    return not _requirements(selector)


def selector_matches(selector: dict[str, Any] | None, labels: dict[str, str]) -> bool:
    for key, op, values in _requirements(selector):
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and key in labels and labels[key] in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True
