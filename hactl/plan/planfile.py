"""Saved plans (``hactl plan -o FILE``): one JSON document, mode 0600, no secrets.

It holds the plan's JSON output (see docs/plan-format.md) plus what ``hactl apply FILE`` needs to
run it without re-planning: the spec snapshot, every step's fields, the graph's edges and the
fingerprint of what was observed (``apply`` refuses a plan whose fingerprint no longer matches).
"""

from __future__ import annotations

import json
import os
import reprlib
import secrets
from typing import Any

from hactl import __version__
from hactl.diff import Change, Diff, Hints, Op
from hactl.errors import HactlError
from hactl.plan.graph import StepGraph
from hactl.plan.output import FORMAT_VERSION, plan_data
from hactl.plan.planner import Plan
from hactl.plan.step import Step
from hactl.spec.models import Cluster
from hactl.vocabulary import Address, Component, Intent

MAX_PLAN_BYTES = 64 * 2**20
"""A saved plan larger than this is refused unread (hactl's own are far smaller)."""


def to_document(plan: Plan) -> dict[str, Any]:
    doc = plan_data(plan)
    doc["saved"] = {
        "spec": plan.cluster.model_dump(mode="json", by_alias=True, exclude_none=True),
        "steps": [s.to_data() for s in plan.steps()],
        "edges": [list(e) for e in plan.graph.edges()],
        "details": {c.address: hints for c in plan.diff.effective() if (hints := c.detail.to_data())},
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


HINT = "make a new one with `hactl plan -f SPEC -o FILE` (saved plans are not meant to be edited)"
ACTIONS: dict[tuple[str, ...], Op] = {
    ("create",): Op.CREATE,
    ("update",): Op.UPDATE,
    ("delete",): Op.DELETE,
    ("delete", "create"): Op.REPLACE,
}


class _Bad(Exception):
    """What is wrong, and where in the document (``saved.steps[3]``)."""

    def __init__(self, where: str, what: str) -> None:
        super().__init__(f"{where}: {what}" if where else what)


def loads(text: str, source: str = "plan") -> Plan:
    """Read a saved plan, checking everything before anything trusts it: the JSON, the format
    version, the spec (as ``hactl validate`` would), every step (kind, fields, types), the edges
    (known steps, no cycle) and the changes. Raises :class:`HactlError` naming ``source``."""
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise HactlError(f"{source} is not a saved plan (not JSON: {exc})", hint=HINT) from exc
    if not isinstance(doc, dict) or "saved" not in doc:
        raise HactlError(f"{source} is not a saved hactl plan", hint=HINT)
    if doc.get("format_version") != FORMAT_VERSION:
        raise HactlError(
            f"{source} has plan format {_short(doc.get('format_version'))}; this hactl "
            f"({__version__}) reads format {FORMAT_VERSION!r}",
            hint="plan again with this hactl version",
        )
    try:
        return _plan(doc)
    except _Bad as exc:
        raise HactlError(f"{source} is not a valid saved plan: {exc}", hint=HINT) from None
    except RecursionError:
        raise HactlError(
            f"{source} is not a valid saved plan: nested too deeply", hint=HINT
        ) from None


def _plan(doc: dict[str, Any]) -> Plan:
    saved = _get(doc, "saved", dict, "")
    cluster = _cluster(_get(saved, "spec", dict, "saved"))
    details = _get(saved, "details", dict, "saved", {})
    changes = tuple(_change(c, i, details) for i, c in enumerate(_get(doc, "changes", list, "")))
    # a step may also act on a departing host: one the plan removes (in the cluster, not the spec)
    hosts = {h.name for h in cluster.all_hosts()} | {
        c.host for c in changes if c.host and c.op is Op.DELETE and c.addr.aspect is None
        and c.addr.component in (Component.MASTER, Component.WORKER)}
    graph = StepGraph()
    for i, data in enumerate(_get(saved, "steps", list, "saved")):
        try:
            step = Step.from_data(data)
        except HactlError as exc:
            raise _Bad(f"saved.steps[{i}]", exc.message) from None
        if step.host is not None and step.host not in hosts:
            raise _Bad(f"saved.steps[{i}]", f"host {step.host!r} is not a host of the spec")
        if step.id in graph.g:
            raise _Bad(f"saved.steps[{i}]", f"a second step with id {step.id!r}")
        graph.add(step)
    for i, edge in enumerate(_get(saved, "edges", list, "saved")):
        ok = isinstance(edge, list) and len(edge) == 2 and all(isinstance(e, str) for e in edge)
        if not ok:
            raise _Bad(f"saved.edges[{i}]", f"must be [before, after] step ids, not {_short(edge)}")
        for end in edge:
            if end not in graph.g:
                raise _Bad(f"saved.edges[{i}]", f"no step has the id {end!r}")
        if edge[0] == edge[1]:
            raise _Bad(f"saved.edges[{i}]", f"step {edge[0]!r} cannot depend on itself")
        graph.edge(graph.step(edge[0]), graph.step(edge[1]))
    if len(graph):
        import networkx as nx

        if not nx.is_directed_acyclic_graph(graph.g):
            cycle = " -> ".join(a for a, _ in nx.find_cycle(graph.g))
            raise _Bad("saved.edges", f"the steps depend on each other in a cycle: {cycle}")
    fingerprint = _str_map(_get(doc, "fingerprint", dict, ""), "fingerprint")
    unreachable = _str_map(_get(doc, "unreachable", dict, "", {}), "unreachable")
    return Plan(cluster, Diff(changes), graph, fingerprint, unreachable)


def _get(doc: dict[str, Any], key: str, kind: type, where: str, default: Any = None) -> Any:
    place = f"{where}.{key}" if where else key
    if key not in doc:
        if default is not None:
            return default
        raise _Bad(place, "is missing")
    value = doc[key]
    if not isinstance(value, kind):
        raise _Bad(
            place, f"must be {'an object' if kind is dict else 'a list'}, not {_short(value)}"
        )
    return value


def _cluster(spec: dict[str, Any]) -> Cluster:
    from pydantic import ValidationError

    from hactl.spec.checks import cross_checks

    try:
        cluster = Cluster.model_validate(spec)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise _Bad(f"saved.spec.{where}", f"{first['msg']}{more}") from None
    errors = [f for f in cross_checks(cluster) if f.severity == "error"]
    if errors:
        where = ".".join(str(p) for p in errors[0].path)
        raise _Bad(f"saved.spec.{where}", errors[0].message)
    return cluster


def _change(data: object, i: int, details: dict[str, Any]) -> Change:
    where = f"changes[{i}]"
    if not isinstance(data, dict):
        raise _Bad(where, f"must be an object, not {_short(data)}")
    actions = data.get("actions")
    op = (
        ACTIONS.get(tuple(actions))
        if isinstance(actions, list) and all(isinstance(a, str) for a in actions)
        else None
    )
    if op is None:
        raise _Bad(
            f"{where}.actions",
            f"must be one of {[list(a) for a in ACTIONS]}, not {_short(actions)}",
        )
    for key, kinds in (("address", (str,)), ("reason", (str,)), ("host", (str, type(None)))):
        if not isinstance(data.get(key), kinds) or (key != "host" and key not in data):
            raise _Bad(
                f"{where}.{key}", f"must be {'a string' if key != 'host' else 'a string or null'}"
            )
    for key in ("before", "after"):
        if not isinstance(data.get(key), dict | None):
            raise _Bad(f"{where}.{key}", f"must be an object or null, not {_short(data.get(key))}")
    if data.get("action") != op.value:
        raise _Bad(f"{where}.action", f"must be {op.value!r} (as actions say), not {_short(data.get('action'))}")
    intents = data.get("intents")
    known = [i.value for i in Intent]
    if not isinstance(intents, list) or not all(isinstance(i, str) and i in known for i in intents):
        raise _Bad(f"{where}.intents", f"must be a list of {', '.join(known)}; not {_short(intents)}")
    try:
        addr = Address.parse(data["address"])
    except ValueError as exc:
        raise _Bad(f"{where}.address", str(exc)) from None
    saved = details.get(data["address"], {})
    if not isinstance(saved, dict):
        raise _Bad(f"saved.details.{data['address']}", "must be an object")
    try:
        detail = Hints.from_data(saved)
    except ValueError as exc:
        raise _Bad(f"saved.details.{data['address']}", str(exc)) from None
    return Change(
        op=op,
        addr=addr,
        before=data.get("before"),
        after=data.get("after"),
        reason=data["reason"],
        host=data.get("host"),
        detail=detail,
        intents=frozenset(Intent(i) for i in intents),
    )


def _str_map(value: dict[str, Any], where: str) -> dict[str, str]:
    for key, item in value.items():
        if not isinstance(item, str):
            raise _Bad(f"{where}.{key}", f"must be a string, not {_short(item)}")
    return dict(value)


def _short(value: object) -> str:
    return reprlib.repr(value)


def load(path: str) -> Plan:
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_PLAN_BYTES + 1)
    except OSError as exc:
        raise HactlError(f"cannot read saved plan {path}: {exc.strerror or exc}") from exc
    if len(data) > MAX_PLAN_BYTES:
        raise HactlError(
            f"{path} is not a saved plan: larger than {MAX_PLAN_BYTES // 2**20} MiB", hint=HINT
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise HactlError(
            f"{path} is not a saved plan: not UTF-8 text (byte {exc.start})", hint=HINT
        ) from exc
    return loads(text, path)
