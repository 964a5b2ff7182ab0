"""Plan output: text like Terraform's, one JSON document, a Markdown summary for pull requests.

Everything here is a pure function of a :class:`~hactl.plan.planner.Plan`: the same plan gives
byte-identical output. Secrets never reach this module (steps and changes carry none); any
:class:`~hactl.sensitive.Sensitive` that slips into before/after still prints as its mask.
The JSON document is described in docs/plan-format.md and docs/plan-format.schema.json.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from hactl import __version__
from hactl.diff import Change, Op
from hactl.plan import refusals_preflight
from hactl.plan.planner import Plan
from hactl.sensitive import MASK, Sensitive

FORMAT_VERSION = "2"
NO_CHANGES = "No changes. The cluster matches the spec."

# ANSI SGR colours (green, yellow, red, magenta); the bytes click.style(fg=..., bold=True) writes,
# without importing the CLI toolkit into planning.
_COLOURS = {Op.CREATE: 32, Op.UPDATE: 33, Op.DELETE: 31, Op.REPLACE: 35}
_VERBS = {
    Op.CREATE: "will be created",
    Op.UPDATE: "will be updated in place",
    Op.DELETE: "will be removed",
    Op.REPLACE: "must be replaced",
}


def summary_line(plan: Plan) -> str:
    add, change, remove = plan.counts()
    if not (add or change or remove) and len(plan.graph) == 0:
        return NO_CHANGES
    return f"Plan: {add} to add, {change} to change, {remove} to remove."


def spec_hash(plan: Plan) -> str:
    data = plan.cluster.model_dump(mode="json", by_alias=True)
    return hashlib.sha256(json.dumps(data, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def jsonable(value: Any) -> Any:
    if isinstance(value, Sensitive):
        return MASK
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in sorted(value.items())}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


# -- text ----------------------------------------------------------------------------------


def _fmt(value: Any) -> str:
    return json.dumps(jsonable(value), sort_keys=True)


def _change_lines(change: Change, colour: bool) -> list[str]:
    symbol = change.op.symbol
    head = f"{symbol} {change.address}"
    if colour:
        head = f"\x1b[{_COLOURS[change.op]}m\x1b[1m{head}\x1b[0m"
    lines = [f"  # {change.address} {_VERBS[change.op]}", f"  {head}"]
    if change.host:
        lines.append(f"      host:   {change.host}")
    lines.append(f"      reason: {change.reason}")
    keys = sorted(set(change.before or {}) | set(change.after or {}))
    for key in keys:
        old = (change.before or {}).get(key)
        new = (change.after or {}).get(key)
        if change.before is None:
            lines.append(f"      {key} = {_fmt(new)}")
        elif change.after is None:
            lines.append(f"      {key} = {_fmt(old)} -> null")
        elif old != new:
            lines.append(f"      {key}: {_fmt(old)} -> {_fmt(new)}")
    text_diff = change.detail.diff
    if isinstance(text_diff, str) and text_diff:
        lines += [f"        {line}" for line in text_diff.splitlines()]
    return [*lines, ""]


def render_text(plan: Plan, *, colour: bool = False) -> str:
    name = plan.cluster.metadata.name
    out = [f'hactl plan for cluster "{name}" (spec sha256 {spec_hash(plan)[:12]})', ""]
    if plan.unreachable:
        out.append("Unreachable hosts (no step needs them; their state is unknown):")
        out += [f"  {host}: {why}" for host, why in sorted(plan.unreachable.items())]
        out.append("")
    if (skipped := preflight_skipped(plan)):
        out += [f"Warning: {skipped}", ""]
    for warning in plan.warnings:
        out += [f"Warning: {warning}", ""]
    changes = plan.diff.effective()
    steps = plan.steps()
    if not changes and not steps:
        return "\n".join([*out, NO_CHANGES]) + "\n"
    out.append("hactl will perform the following actions:")
    out.append("")
    for change in changes:
        out += _change_lines(change, colour)
    out.append(f"Steps ({len(steps)}, in order; steps without a path between them run in parallel):")
    width = len(str(len(steps)))
    for index, step in enumerate(steps, 1):
        out.append(f"  {index:>{width}}. {step.title}")
        out.append(f"  {'':>{width}}  id: {step.id}   host: {step.host or '-'}")
        deps = plan.graph.depends_on(step.id)
        if deps:
            out.append(f"  {'':>{width}}  after: {', '.join(deps)}")
        out.append(f"  {'':>{width}}  reason: {step.reason}")
    out += ["", summary_line(plan)]
    return "\n".join(out) + "\n"


# -- JSON ----------------------------------------------------------------------------------


def preflight_skipped(plan: Plan) -> str | None:
    """The warning line of the preflight checks the spec skips, per host (None: none)."""
    skipped = refusals_preflight.skipped(plan.cluster)
    if not skipped:
        return None
    return "Preflight checks skipped (spec): " + "; ".join(
        f"{host}: {', '.join(names)}" for host, names in skipped.items())


def change_data(change: Change) -> dict[str, Any]:
    return {
        "address": change.address,
        "actions": change.actions,
        "action": change.op.value,
        "intents": sorted(i.value for i in change.intents),
        "host": change.host,
        "before": jsonable(change.before),
        "after": jsonable(change.after),
        "reason": change.reason,
    }


def plan_data(plan: Plan) -> dict[str, Any]:
    add, change, remove = plan.counts()
    return {
        "format_version": FORMAT_VERSION,
        "hactl_version": __version__,
        "spec": {"name": plan.cluster.metadata.name, "hash": spec_hash(plan)},
        "fingerprint": dict(sorted(plan.fingerprint.items())),
        "unreachable": dict(sorted(plan.unreachable.items())),
        "changes": [change_data(c) for c in plan.diff.effective()],
        "steps": [
            {
                "id": s.id,
                "kind": s.kind,
                "title": s.title,
                "host": s.host,
                "action": str(s.action),
                "address": s.address,
                "reason": s.reason,
                "depends_on": plan.graph.depends_on(s.id),
                "commands": s.commands(),
            }
            for s in plan.steps()
        ],
        "summary": {"add": add, "change": change, "remove": remove, "text": summary_line(plan)},
    } | ({"preflight_skipped": {h: list(n) for h, n in skipped.items()}}
         if (skipped := refusals_preflight.skipped(plan.cluster)) else {}) \
      | ({"warnings": list(plan.warnings)} if plan.warnings else {})


def render_json(plan: Plan) -> str:
    return json.dumps(plan_data(plan), indent=2, sort_keys=False) + "\n"


# -- Markdown ------------------------------------------------------------------------------


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(plan: Plan) -> str:
    name = plan.cluster.metadata.name
    out = [f"### hactl plan: `{name}`", "", f"**{summary_line(plan)}**", ""]
    if plan.unreachable:
        out.append("Unreachable (not needed): " + ", ".join(f"`{h}`" for h in sorted(plan.unreachable)))
        out.append("")
    if (skipped := preflight_skipped(plan)):
        out += [f"> **Warning:** {_md(skipped)}", ""]
    for warning in plan.warnings:
        out += [f"> **Warning:** {_md(warning)}", ""]
    changes = plan.diff.effective()
    if changes:
        out += ["| | Address | Host | Reason |", "|---|---|---|---|"]
        out += [
            f"| `{c.op.symbol}` | `{c.address}` | {c.host or ''} | {_md(c.reason)} |" for c in changes
        ]
        out.append("")
    steps = plan.steps()
    if steps:
        out += [f"<details><summary>{len(steps)} steps</summary>", ""]
        out += [f"{i}. {_md(s.title)} (`{s.id}`)" for i, s in enumerate(steps, 1)]
        out += ["", "</details>"]
    return "\n".join(out) + "\n"
