"""Pod deletion and eviction in the stand-in kube-apiserver, as the real server does them.

- Graceful deletion (``pkg/registry/core/pod/strategy.go`` CheckGracefulDelete +
  ``registry/rest/delete.go`` BeforeDelete): a pod bound to a node and not terminal gets
  ``deletionTimestamp``/``deletionGracePeriodSeconds`` (the grace period of the request, else
  ``spec.terminationGracePeriodSeconds``, default 30) and stays until its kubelet deletes it with
  grace period 0; an unbound or terminal pod, or grace period 0, is removed at once; a second
  delete may only shorten the period.
- The eviction subresource (``pkg/registry/core/pod/storage/eviction.go``): PodDisruptionBudgets
  are honoured with the real status codes and messages (429 TooManyRequests, 500 for more than
  one budget, 403 for a negative budget), the budget's ``disruptionsAllowed`` is decremented and
  the pod recorded in ``disruptedPods`` before the pod is deleted.
"""

from __future__ import annotations

import copy
import datetime as dt
from typing import Any

from .apiserver_resources import Resource, by_path
from .apiserver_store import ApiError, Store, check_preconditions, status_object
from .labelselector import InvalidSelector, selector_empty, selector_matches

__all__ = ["delete_pod", "evict", "validate_pdb"]

DEFAULT_GRACE = 30  # SetDefaults_PodSpec: terminationGracePeriodSeconds
MAX_DISRUPTED_PODS = 2000  # eviction.go MaxDisruptedPodSize
EVICTION_RETRIES = 20  # eviction.go EvictionsRetry.Steps
VIOLATION = "Cannot evict pod as it would violate the pod's disruption budget."


def _phase(pod: dict[str, Any]) -> str:
    return str((pod.get("status") or {}).get("phase") or "")


def is_ready(pod: dict[str, Any]) -> bool:
    """podutil.IsPodReady: the Ready condition is True."""
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (pod.get("status") or {}).get("conditions") or [])


def _grace_period(pod: dict[str, Any], requested: int | None) -> int:
    spec = pod.get("spec") or {}
    period = requested if requested is not None else spec.get("terminationGracePeriodSeconds")
    period = DEFAULT_GRACE if period is None else int(period)
    if not spec.get("nodeName") or _phase(pod) in ("Failed", "Succeeded"):
        period = 0  # not scheduled, or already terminated: deleted at once
    return 1 if period < 0 else period


def _int_or_none(value: Any) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ApiError(400, f"invalid gracePeriodSeconds {value!r}") from None


def delete_pod(store: Store, r: Resource, ns: str | None, name: str,
               opts: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """DELETE of a pod with ``opts`` (DeleteOptions): (HTTP code, body)."""
    requested = _int_or_none(opts.get("gracePeriodSeconds"))
    pre = opts.get("preconditions") or {}
    for _ in range(5):
        pod = store.get(r, ns, name)
        check_preconditions(r, name, pod, pre.get("uid"), pre.get("resourceVersion"))
        meta = pod["metadata"]
        if meta.get("deletionTimestamp"):
            current = meta.get("deletionGracePeriodSeconds")
            if current is None:
                period = 0
            elif requested is None or requested >= int(current):
                return 202, pod  # graceful deletion under way: nothing changes
            else:
                period = max(requested, 0)
        else:
            period = _grace_period(pod, requested)
        if period == 0:
            return 200, store.delete(r, ns, name, meta.get("uid"), meta.get("resourceVersion"))
        try:
            return 202, store.set_deletion(r, ns, name, pod, period)
        except ApiError as exc:
            if exc.code != 409:
                raise
    raise ApiError(409, f'Operation cannot be fulfilled on {r.name} "{name}"', "Conflict")


def validate_pdb(obj: dict[str, Any]) -> None:
    """The parts of ValidatePodDisruptionBudgetSpec that change what the budget means."""
    name = (obj.get("metadata") or {}).get("name", "")
    spec = obj.get("spec") or {}
    errors = []
    if spec.get("minAvailable") is not None and spec.get("maxUnavailable") is not None:
        errors.append("spec: Invalid value: minAvailable and maxUnavailable cannot be both set")
    for field in ("minAvailable", "maxUnavailable"):
        value = spec.get(field)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            errors.append(f"spec.{field}: Invalid value: {value!r}: must be an integer or "
                          "percentage (e.g '5%')")
        elif isinstance(value, int):
            if value < 0:
                errors.append(f"spec.{field}: Invalid value: {value}: must be greater than or "
                              "equal to 0")
        elif not (value.endswith("%") and value[:-1].isdigit()):
            errors.append(f'spec.{field}: Invalid value: "{value}": a valid percent string '
                          "must be a numeric string followed by an ending '%' (e.g. '1%',  or "
                          "'93%', regex used for validation is '[0-9]+%')")
        elif int(value[:-1]) > 100:
            errors.append(f'spec.{field}: Invalid value: "{value}": must not be greater than '
                          "100%")
    try:
        selector_empty(spec.get("selector"))
    except InvalidSelector as exc:
        errors.append(f"spec.selector: Invalid value: {exc}")
    if spec.get("unhealthyPodEvictionPolicy") not in (None, "IfHealthyBudget", "AlwaysAllow"):
        errors.append(f'spec.unhealthyPodEvictionPolicy: Unsupported value: '
                      f'"{spec["unhealthyPodEvictionPolicy"]}": supported values: '
                      '"AlwaysAllow", "IfHealthyBudget"')
    if errors:
        detail = errors[0] if len(errors) == 1 else "[" + ", ".join(errors) + "]"
        raise ApiError(422, f'PodDisruptionBudget.policy "{name}" is invalid: {detail}',
                       "Invalid", {"name": name, "group": "policy",
                                   "kind": "PodDisruptionBudget"})


# -- eviction ----------------------------------------------------------------------------------


def _too_many(name: str, message: str, retry_after: int) -> ApiError:
    details: dict[str, Any] = {"causes": [{"reason": "DisruptionBudget", "message": message}]}
    if retry_after:
        details["retryAfterSeconds"] = retry_after
    return ApiError(429, VIOLATION, "TooManyRequests", details)


def _still_processing(name: str) -> ApiError:
    return _too_many(name, f"The disruption budget {name} is still being processed by the "
                     "server.", 10)


def _forbidden(name: str, why: str) -> ApiError:
    return ApiError(403, f'poddisruptionbudget.policy "{name}" is forbidden: {why}', "Forbidden",
                    {"name": name, "group": "policy", "kind": "poddisruptionbudget"})


def _can_ignore_pdb(pod: dict[str, Any]) -> bool:
    return _phase(pod) in ("Succeeded", "Failed", "Pending") or bool(
        pod["metadata"].get("deletionTimestamp"))


def _pdbs_for(store: Store, pod: dict[str, Any]) -> list[dict[str, Any]]:
    pdb_r = by_path("policy", "v1", "poddisruptionbudgets")
    assert pdb_r is not None
    ns = pod["metadata"].get("namespace")
    labels = pod["metadata"].get("labels") or {}
    found = []
    for pdb in store.list(pdb_r, ns)[0]:
        selector = (pdb.get("spec") or {}).get("selector")
        try:  # an invalid selector matches nothing; a nil or empty one matches nothing either
            if selector_empty(selector) or not selector_matches(selector, labels):
                continue
        except InvalidSelector:
            continue
        found.append(pdb)
    return found


def _set_condition(status: dict[str, Any], allowed: bool) -> None:
    """pdbhelper.UpdateDisruptionAllowedCondition."""
    conds = [c for c in status.get("conditions") or [] if c.get("type") != "DisruptionAllowed"]
    old = next((c for c in status.get("conditions") or [] if c.get("type") == "DisruptionAllowed"),
               None)
    want = "True" if allowed else "False"
    since = old.get("lastTransitionTime") if old and old.get("status") == want else None
    conds.append({"type": "DisruptionAllowed", "status": want,
                  "reason": "SufficientPods" if allowed else "InsufficientPods", "message": "",
                  "observedGeneration": status.get("observedGeneration", 0),
                  "lastTransitionTime": since or dt.datetime.now(dt.UTC).strftime(
                      "%Y-%m-%dT%H:%M:%SZ")})
    status["conditions"] = conds


def _check_and_decrement(store: Store, pdb: dict[str, Any], pod_name: str, dry_run: bool) -> None:
    name = pdb["metadata"]["name"]
    status = pdb.get("status") or {}
    if int(status.get("observedGeneration") or 0) < int(pdb["metadata"].get("generation") or 0):
        raise _still_processing(name)
    allowed = int(status.get("disruptionsAllowed") or 0)
    if allowed < 0:
        raise _forbidden(name, "pdb disruptions allowed is negative")
    if len(status.get("disruptedPods") or {}) > MAX_DISRUPTED_PODS:
        raise _forbidden(name, "DisruptedPods map too big - too many evictions not confirmed by "
                         "PDB controller")
    if allowed == 0:
        raise _too_many(name, f"The disruption budget {name} needs "
                        f"{int(status.get('desiredHealthy') or 0)} healthy pods and has "
                        f"{int(status.get('currentHealthy') or 0)} currently", 0)
    if dry_run:
        return
    new = copy.deepcopy(pdb)
    nstatus = new.setdefault("status", {})
    nstatus["disruptionsAllowed"] = allowed - 1
    if allowed - 1 == 0:
        _set_condition(nstatus, False)
    nstatus.setdefault("disruptedPods", {})[pod_name] = dt.datetime.now(dt.UTC).strftime(
        "%Y-%m-%dT%H:%M:%SZ")
    pdb_r = by_path("policy", "v1", "poddisruptionbudgets")
    assert pdb_r is not None
    store.update(pdb_r, pdb["metadata"].get("namespace"), name, new, "status")


def evict(store: Store, r: Resource, ns: str | None, name: str, body: dict[str, Any],
          query: dict[str, str]) -> tuple[int, dict[str, Any]]:
    """POST …/pods/NAME/eviction: (HTTP code, body)."""
    if (body.get("metadata") or {}).get("name", name) != name:
        raise ApiError(400, "name in URL does not match name in Eviction object")
    opts = dict(body.get("deleteOptions") or {})
    dry_run = bool(opts.get("dryRun") or query.get("dryRun"))
    pre = opts.get("preconditions") or {}
    pod = store.get(r, ns, name)
    if _can_ignore_pdb(pod):  # terminal, pending or already terminating: a plain delete
        if not dry_run:
            if _phase(pod) not in ("Succeeded", "Failed") and not pod["metadata"].get(
                    "deletionTimestamp") and not pre.get("resourceVersion"):
                opts["preconditions"] = {**pre, "resourceVersion": pod["metadata"][
                    "resourceVersion"]}
            delete_pod(store, r, ns, name, opts)
        return 201, status_object(201, "", "")
    pdbs = _pdbs_for(store, pod)
    if len(pdbs) > 1:
        doc = status_object(500, "", "This pod has more than one PodDisruptionBudget, which the "
                            "eviction subresource does not support.")
        doc.pop("reason", None)
        return 500, doc
    guard_rv = False
    if pdbs:
        pdb = pdbs[0]
        pdb_r = by_path("policy", "v1", "poddisruptionbudgets")
        assert pdb_r is not None
        status = pdb.get("status") or {}
        policy = (pdb.get("spec") or {}).get("unhealthyPodEvictionPolicy")
        healthy_enough = (int(status.get("currentHealthy") or 0)
                          >= int(status.get("desiredHealthy") or 0)
                          and int(status.get("desiredHealthy") or 0) > 0)
        if not is_ready(pod) and (policy == "AlwaysAllow" or healthy_enough):
            guard_rv = True  # an unready pod does not count: deleted without a decrement
        else:
            for attempt in range(EVICTION_RETRIES):
                if attempt:
                    pdb = store.get(pdb_r, ns, pdb["metadata"]["name"])
                try:
                    _check_and_decrement(store, pdb, name, dry_run)
                    break
                except ApiError as exc:
                    if exc.code != 409:
                        raise
            else:
                raise ApiError(504, f"couldn't update PodDisruptionBudget "
                               f"\"{pdb['metadata']['name']}\" due to conflicts", "Timeout",
                               {"retryAfterSeconds": 10})
    if dry_run:
        return 201, status_object(201, "", "")
    if guard_rv and not pre.get("resourceVersion"):
        opts["preconditions"] = {**pre, "resourceVersion": pod["metadata"]["resourceVersion"]}
        try:
            delete_pod(store, r, ns, name, opts)
        except ApiError as exc:
            if exc.code == 409:
                raise _still_processing(pdbs[0]["metadata"]["name"]) from exc
            raise
    else:
        delete_pod(store, r, ns, name, opts)
    return 201, status_object(201, "", "")
