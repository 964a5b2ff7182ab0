"""Saved plans (``hactl plan -o FILE``): one JSON document, mode 0600, no secrets.

It holds the plan's JSON output (see docs/plan-format.md) plus what ``hactl apply FILE`` needs to
run it without re-planning: the spec snapshot, every step's fields, the graph's edges and the
fingerprint of what was observed (``apply`` refuses a plan whose fingerprint no longer matches).
"""

from __future__ import annotations

import json
import os
import secrets
from typing import Any

from hactl import __version__
from hactl.diff import Change, Diff, Op
from hactl.errors import HactlError
from hactl.plan.graph import StepGraph
from hactl.plan.output import FORMAT_VERSION, jsonable, plan_data
from hactl.plan.planner import Plan
from hactl.plan.step import Step
from hactl.spec.models import Cluster


def to_document(plan: Plan) -> dict[str, Any]:
    doc = plan_data(plan)
    doc["saved"] = {
        "spec": plan.cluster.model_dump(mode="json", by_alias=True, exclude_none=True),
        "steps": [s.to_data() for s in plan.steps()],
        "edges": [list(e) for e in plan.graph.edges()],
        "details": {c.address: jsonable(c.detail) for c in plan.diff.effective() if c.detail},
    }
    return doc


def dumps(plan: Plan) -> str:
    return json.dumps(to_document(plan), indent=2) + "\n"


def save(plan: Plan, path: str) -> None:
    """Write the plan with mode 0600 (also when the file existed), atomically: a new temporary
    file next to it (``O_EXCL | O_NOFOLLOW``, an unguessable name: nothing planted there is
    followed or reused), then ``rename`` over ``path``."""
    text = dumps(plan)
    folder = os.path.dirname(os.path.abspath(path))
    tmp = f"{path}.tmp-{os.getpid()}-{secrets.token_hex(6)}"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    created = False
    try:
        os.makedirs(folder, exist_ok=True)
        fd = os.open(tmp, flags, 0o600)
        created = True
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except OSError as exc:
        raise HactlError(
            f"cannot write the saved plan {path}: {exc.strerror or exc}",
            hint="choose a path in a folder you can write to",
        ) from exc
    finally:
        if created and os.path.lexists(tmp):
            os.unlink(tmp)


def loads(text: str, source: str = "plan") -> Plan:
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise HactlError(f"{source} is not a saved plan (not JSON: {exc})") from exc
    if not isinstance(doc, dict) or "saved" not in doc:
        raise HactlError(f"{source} is not a saved hactl plan", hint="make one with `hactl plan -o FILE`")
    if doc.get("format_version") != FORMAT_VERSION:
        raise HactlError(
            f"{source} has plan format {doc.get('format_version')!r}; this hactl ({__version__}) "
            f"reads format {FORMAT_VERSION!r}", hint="plan again with this hactl version")
    saved = doc["saved"]
    cluster = Cluster.model_validate(saved["spec"])
    graph = StepGraph()
    for data in saved["steps"]:
        graph.add(Step.from_data(data))
    for before, after in saved["edges"]:
        graph.edge(graph.step(before), graph.step(after))
    changes = tuple(
        Change(
            op=Op.REPLACE if c["actions"] == ["delete", "create"] else Op(c["actions"][0]),
            address=c["address"], before=c["before"], after=c["after"], reason=c["reason"],
            host=c["host"], detail=saved.get("details", {}).get(c["address"], {}),
        )
        for c in doc["changes"]
    )
    return Plan(cluster, Diff(changes), graph, dict(doc["fingerprint"]), dict(doc.get("unreachable", {})))


def load(path: str) -> Plan:
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except OSError as exc:
        raise HactlError(f"cannot read saved plan {path}: {exc.strerror}") from exc
    return loads(text, path)
