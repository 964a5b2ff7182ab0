"""DrainNode: cordon a Node that leaves the cluster, then ``kubectl drain`` it (through a master).

The drain evicts the Node's pods through the eviction API, as ``kubectl drain`` does, so every
PodDisruptionBudget is respected: hactl never passes ``--force`` (which deletes pods nothing
recreates) nor ``--disable-eviction`` (which deletes pods without asking their budgets).
DaemonSet pods stay (``--ignore-daemonsets``), emptyDir data goes with its pod
(``--delete-emptydir-data``), and ``--timeout`` bounds the whole drain (the spec's
``apply.drainTimeout``).

A drain that a budget (or a pod nothing manages) blocks, or that does not finish in time, fails
the step with a :class:`~hactl.errors.PlanError` that names the pods that blocked and why
(read off kubectl's own lines), says that the Node stays cordoned, and what the operator can
do. The step ends once the Node is cordoned and drained; a Node that is gone already is done.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, ClassVar

from hactl.errors import CommandError, HactlError, PlanError
from hactl.plan import commands as cmd
from hactl.plan.remote import parse_json, run
from hactl.plan.step import Step, StepContext
from hactl.vocabulary import Action

P = cmd.placeholder

STEP_SLACK = 60.0
"""The step's own timeout is the drain's plus this (the cordon, the reads, the connection)."""
RUN_SLACK = 30.0
"""The transport's bound on the ``kubectl drain`` command is the drain's timeout plus this:
kubectl ends on its own ``--timeout`` first and prints which pods were left."""

# kubectl's own lines (staging/src/k8s.io/kubectl/pkg/drain/drain.go and filters.go):
#   error when evicting pods/"web-1" -n "default" (will retry after 5s): Cannot evict pod as it
#     would violate the pod's disruption budget.
#   error when evicting pods/"web-1" -n "default": global timeout reached: 5m0s
#   error when waiting for pod "web-1" in namespace "default" to terminate: global timeout reached: 5m0s
#   cannot delete cannot delete Pods that declare no controller (use --force to override): default/solo
_END = r"(?=\]|, error when |, continuing command\.\.\.|$)"
_EVICTING = re.compile(r'error when evicting pods/"(?P<pod>[^"]+)" -n "(?P<ns>[^"]+)"'
                       r"(?P<retry> \(will retry after \d+s\))?: (?P<why>.*?)" + _END, re.MULTILINE)
_TERMINATING = re.compile(r'error when waiting for pod "(?P<pod>[^"]+)" in namespace "(?P<ns>[^"]+)" '
                          r"to terminate: (?P<why>.*?)" + _END, re.MULTILINE)
_CANNOT = re.compile(r"^cannot delete (?P<what>.+?): (?P<pods>[^\s,]+/[^\s,]+(?:, [^\s,]+/[^\s,]+)*)$",
                     re.MULTILINE)
STILL_TERMINATING = "evicted, but still terminating when the drain ended"
UNMANAGED = "declare no controller"
"""kubectl's words for a pod that no controller recreates (deleted only with ``--force``)."""


def drain_blockers(output: str) -> dict[str, str]:
    """``namespace/pod`` → why kubectl could not evict it, from ``kubectl drain``'s output (a
    refused eviction it retried, a PodDisruptionBudget's refusal, first; else its last word on
    the pod), in the order kubectl named them."""
    retried: dict[str, str] = {}
    other: dict[str, str] = {}
    for m in _EVICTING.finditer(output):
        key, why = f"{m['ns']}/{m['pod']}", m["why"].strip()
        if m["retry"]:
            retried.setdefault(key, why)
        else:
            other[key] = why
    for m in _TERMINATING.finditer(output):
        other.setdefault(f"{m['ns']}/{m['pod']}", f"{STILL_TERMINATING} ({m['why'].strip()})")
    for m in _CANNOT.finditer(output):
        what = m["what"].removeprefix("cannot delete ")
        for key in m["pods"].split(", "):
            other.setdefault(key, f"cannot delete {what}")
    blockers = dict(retried)
    for key, why in other.items():
        blockers.setdefault(key, why)
    return blockers


def not_found(said: str) -> bool:
    """kubectl's ``Error from server (NotFound): nodes "N" not found``."""
    return "notfound" in said.lower().replace(" ", "")


async def read_node(ctx: StepContext, via: str, name: str, purpose: str) -> dict[str, Any] | None:
    """The Node (``kubectl get node -o json`` through ``via``), or None for the API's NotFound;
    any other failure is a transient error (the API could not be asked, which is no answer)."""
    res = await run(ctx, via, cmd.get_node(name), check=False)
    if res.ok:
        data = parse_json(res.stdout)
        return data if isinstance(data, dict) else {}
    said = res.stderr.strip() or res.stdout.strip() or f"exit {res.exit_status}"
    if not_found(said):
        return None
    raise CommandError(f"could not ask the API on {via} about Node {name} ({purpose}): {said}",
                       host=via, transient=True)


def _selects(selector: Any, labels: dict[str, str]) -> bool:
    """A LabelSelector (``matchLabels``, ``matchExpressions``) applied to ``labels``; an empty
    selector selects every pod (policy/v1), a missing one none."""
    if not isinstance(selector, dict):
        return False
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
        ok = {"In": key in labels and labels[key] in values,
              "NotIn": key not in labels or labels[key] not in values,
              "Exists": key in labels, "DoesNotExist": key not in labels}.get(op, False)
        if not ok:
            return False
    return True


def budget_words(pdb: dict[str, Any]) -> str:
    """``PodDisruptionBudget shop/web (minAvailable: 2; 2 healthy, 0 disruptions allowed)``."""
    meta, spec, status = pdb.get("metadata") or {}, pdb.get("spec") or {}, pdb.get("status") or {}
    rule = "; ".join(f"{k}: {spec[k]}" for k in ("minAvailable", "maxUnavailable") if k in spec)
    counts = (f"{status.get('currentHealthy', '?')} healthy, "
              f"{status.get('disruptionsAllowed', '?')} disruptions allowed")
    return (f"PodDisruptionBudget {meta.get('namespace', '?')}/{meta.get('name', '?')} "
            f"({rule + '; ' if rule else ''}{counts})")


async def budgets_of(ctx: StepContext, via: str, blockers: dict[str, str]) -> dict[str, str]:
    """``namespace/pod`` → the budgets that cover it, in words, for the pods a disruption budget
    refused (best effort: what cannot be read is left out; the drain has failed already)."""
    out: dict[str, str] = {}
    budgets: dict[str, list[dict[str, Any]]] = {}
    for key, why in blockers.items():
        if "disruption budget" not in why or "/" not in key:
            continue
        namespace, pod_name = key.split("/", 1)
        pod = await run(ctx, via, cmd.get_pod(namespace, pod_name), check=False)
        data = parse_json(pod.stdout) if pod.ok else None
        if not isinstance(data, dict):
            continue
        labels = (data.get("metadata") or {}).get("labels") or {}
        if namespace not in budgets:
            listed = await run(ctx, via, cmd.get_budgets(namespace), check=False)
            items = (parse_json(listed.stdout) or {}).get("items") if listed.ok else None
            budgets[namespace] = [b for b in items or [] if isinstance(b, dict)]
        covering = [budget_words(b) for b in budgets[namespace]
                    if _selects((b.get("spec") or {}).get("selector"), labels)]
        if covering:
            out[key] = ", ".join(covering)
    return out


@dataclass(frozen=True)
class DrainNode(Step):
    kind: ClassVar[str] = "drain_node"
    order: ClassVar[int] = 70
    node: str = ""
    """The Node's name (the host that leaves, or the re-imaged master's old Node)."""
    drain_timeout: float = 300.0
    """Seconds ``kubectl drain`` may take (the spec's ``apply.drainTimeout``)."""
    action: Action = Action.UPDATE
    timeout: float = 300.0 + STEP_SLACK
    """Always ``drain_timeout`` + 60 s (set from ``drain_timeout``)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "timeout", float(self.drain_timeout) + STEP_SLACK)

    def commands(self) -> list[str]:
        via = self.host or ""
        return [
            cmd.shown(cmd.get_node(self.node), f"on {via}: no such Node: already gone, done"),
            cmd.shown(cmd.cordon(self.node), "no new pods on it"),
            cmd.shown(cmd.drain(self.node, self.drain_timeout),
                      "evictions respect PodDisruptionBudgets; blocked or too slow: refused, naming "
                      "the pods (the Node stays cordoned)"),
            cmd.shown(cmd.get_node(self.node), "check: cordoned (or gone)"),
            cmd.shown(cmd.get_pod(P("namespace"), P("pod")), "only after a drain a budget blocked: each "
                      "blocked pod's labels"),
            cmd.shown(cmd.get_budgets(P("namespace")), "and the PodDisruptionBudgets of its namespace: "
                      "the error names the one that refused"),
        ]

    async def run(self, ctx: StepContext) -> None:
        assert self.host is not None
        via, name = self.host, self.node
        if await read_node(ctx, via, name, "is it still registered?") is None:
            ctx.log("Node already gone", node=name)
            return
        cordoned = await run(ctx, via, cmd.cordon(name), check=False)
        if not cordoned.ok:
            said = cordoned.stderr.strip() or cordoned.stdout.strip() or f"exit {cordoned.exit_status}"
            if not_found(said):
                ctx.log("Node already gone", node=name)
                return
            raise CommandError(f"could not cordon Node {name} through {via}: {said}", host=via,
                               step=self.id, transient=True)
        result = await run(ctx, via, cmd.drain(name, self.drain_timeout), check=False,
                           timeout=self.drain_timeout + RUN_SLACK)
        if not result.ok:
            output = result.stdout + "\n" + result.stderr
            blockers = drain_blockers(output)
            raise self._failed(output, blockers, await budgets_of(ctx, via, blockers))
        node = await read_node(ctx, via, name, "is it cordoned?")
        if node is not None and not (node.get("spec") or {}).get("unschedulable"):
            raise CommandError(f"Node {name} was drained but is not cordoned (someone uncordoned it?)",
                               host=via, step=self.id, transient=True)
        ctx.log("Node drained", node=name)

    def _failed(self, output: str, blockers: dict[str, str], budgets: dict[str, str]) -> HactlError:
        """The drain did not finish: which pods blocked it (and the budget that refused each),
        that the Node stays cordoned, and what the operator can do."""
        name = self.node
        timed_out = "global timeout reached" in output
        if not blockers and not timed_out:
            last = [line for line in output.strip().splitlines() if line.strip()]
            return CommandError(
                f"`kubectl drain {name}` failed on {self.host}: {last[-1] if last else 'no output'}; "
                f"Node {name} stays cordoned", host=self.host, step=self.id, transient=True)
        seconds = str(cmd.drain(name, self.drain_timeout)[-1]).split("=", 1)[1]
        head = (f"the drain of Node {name} did not finish within {seconds}" if timed_out
                else f"the drain of Node {name} was refused")
        pods = "".join(f"\n  - {pod}: {why}" + (f" ({budgets[pod]})" if pod in budgets else "")
                       for pod, why in blockers.items())
        message = (f"{head}; these pods blocked it:{pods}" if blockers else f"{head}.")
        message += (f"\nNode {name} stays cordoned (no new pods are scheduled on it); the pods "
                    "that were evicted stay evicted, nothing else was changed.")
        hand = f"kubectl drain {name} --ignore-daemonsets --delete-emptydir-data --disable-eviction"
        hints = [
            "fix the PodDisruptionBudget, or scale the workload up, so that the budget allows the "
            "eviction (`kubectl get pdb -A` shows ALLOWED DISRUPTIONS)",
            f"or drain it by hand: `{hand}` bypasses the budgets (the operator's decision)",
        ]
        if any(UNMANAGED in why for why in blockers.values()):
            hints.append("pods that declare no controller are never recreated: delete or move "
                         "them yourself (a hand drain needs `--force` for them)")
        if any(why.startswith(STILL_TERMINATING) for why in blockers.values()):
            hints.append(f"pods that were evicted but never terminated: is the kubelet of {name} down "
                         f"(`kubectl get node {name}`)? The pods of a dead node end only when its Node "
                         "is deleted; a hand drain with `--skip-wait-for-delete-timeout=60` does not "
                         "wait for them (the operator's decision)")
        hints.append("then run `hactl apply` again")
        if timed_out:
            hints.append(f"a drain that only needs longer: raise `apply.drainTimeout` in the spec "
                         f"(seconds; now {seconds[:-1]})")
        return PlanError(message, host=self.host, step=self.id, hint="; ".join(hints))

