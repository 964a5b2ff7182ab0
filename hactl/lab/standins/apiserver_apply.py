"""Server-side apply (``PATCH`` with ``Content-Type: application/apply-patch+yaml``), as
``kubectl apply --server-side`` uses it.

What the real API server does and this stand-in keeps: ``fieldManager`` is required (422
``PatchOptions.meta.k8s.io "" is invalid: fieldManager: Required value: is required for apply
patch``), ``force`` only on apply patches; an apply creates the object when it is absent (201);
each manager's fields are recorded in ``metadata.managedFields`` (``operation: Apply``,
``fieldsType: FieldsV1``, ``f:`` keys); a field another manager owns with another value is a
409 ``Apply failed with N conflict(s): conflict with "M" using V: .path`` unless ``force=true``
(then the applier takes it over); fields the manager applied before and leaves out now are
removed when no other manager owns them.

Simplified (docs/standins/apiserver.md): every list is atomic (the real server merges lists
with ``x-kubernetes-list-map-keys`` such as containers by ``name`` item by item); objects
written with create/update/merge patches carry no ``Update`` managers, so only appliers conflict.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import yaml

from .apiserver_resources import Resource
from .apiserver_store import ApiError, Store, now_rfc3339

APPLY_TYPE = "application/apply-patch+yaml"
Path = tuple[str, ...]
_IDENTITY: set[Path] = {("apiVersion",), ("kind",), ("metadata", "name"), ("metadata", "namespace")}


def leaves(obj: Any, prefix: Path = ()) -> dict[Path, Any]:
    """Leaf path → value (a list or an empty map is one leaf: lists are atomic here)."""
    if isinstance(obj, dict) and obj:
        out: dict[Path, Any] = {}
        for key, value in obj.items():
            out.update(leaves(value, (*prefix, str(key))))
        return out
    return {prefix: obj}


def fields_v1(paths: set[Path]) -> dict[str, Any]:
    """Paths → the FieldsV1 map the real server writes (``{"f:data": {"f:a": {}}}``)."""
    root: dict[str, Any] = {}
    for path in sorted(paths):
        node = root
        for part in path:
            node = node.setdefault(f"f:{part}", {})
    return root


def paths_of(fields: Any, prefix: Path = ()) -> set[Path]:
    """The inverse of :func:`fields_v1` (only ``f:`` keys; others, e.g. ``k:``, are skipped)."""
    out: set[Path] = set()
    if not isinstance(fields, dict):
        return out
    for key, value in fields.items():
        if key == ".":
            continue
        if not key.startswith("f:"):
            continue
        path = (*prefix, key[2:])
        if isinstance(value, dict) and any(k.startswith("f:") for k in value):
            out |= paths_of(value, path)
        else:
            out.add(path)
    return out


def _get(obj: Any, path: Path) -> Any:
    for part in path:
        if not isinstance(obj, dict) or part not in obj:
            return None
        obj = obj[part]
    return obj


def _set(obj: dict[str, Any], path: Path, value: Any) -> None:
    for part in path[:-1]:
        nxt = obj.get(part)
        if not isinstance(nxt, dict):
            nxt = obj[part] = {}
        obj = nxt
    obj[path[-1]] = copy.deepcopy(value)


def _drop(obj: dict[str, Any], path: Path) -> None:
    parents = []
    node: Any = obj
    for part in path[:-1]:
        if not isinstance(node, dict) or part not in node:
            return
        parents.append((node, part))
        node = node[part]
    if isinstance(node, dict):
        node.pop(path[-1], None)
    for parent, part in reversed(parents):  # no empty maps left behind
        if parent[part] == {}:
            del parent[part]
        else:
            break


def _map_claim(value: Any, live: Any) -> bool:
    """An applied empty map over a live map claims the map, not its keys (they stay)."""
    return value == {} and isinstance(live, dict)


def _dotted(path: Path) -> str:
    return "".join(f".{p}" for p in path)


def load_apply_body(body: bytes) -> dict[str, Any]:
    try:
        doc = yaml.safe_load(body.decode() or "{}")
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"error decoding YAML: {exc}", "BadRequest") from exc
    if not isinstance(doc, dict):
        raise ApiError(400, "the body of the request was in an unknown format", "BadRequest")
    return doc


def apply(store: Store, r: Resource, ns: str | None, name: str, body: bytes,
          query: dict[str, str]) -> tuple[int, dict[str, Any]]:
    """One server-side apply of ``body`` to ``r``/``ns``/``name``: (HTTP code, object)."""
    manager = query.get("fieldManager") or ""
    if not manager:
        raise ApiError(422, 'PatchOptions.meta.k8s.io "" is invalid: fieldManager: Required '
                       "value: is required for apply patch", "Invalid")
    force = query.get("force") in ("true", "1")
    applied = load_apply_body(body)
    if applied.get("apiVersion") != r.group_version or applied.get("kind") != r.kind:
        raise ApiError(400, f"the API version in the data ({applied.get('apiVersion')}) does not "
                       f"match the expected API version ({r.group_version})"
                       if applied.get("apiVersion") != r.group_version else
                       f"the kind in the data ({applied.get('kind')}) does not match the "
                       f"expected kind ({r.kind})", "BadRequest")
    meta = applied.get("metadata") or {}
    if meta.get("name") != name:
        raise ApiError(400, f"the name of the object ({meta.get('name')}) does not match the "
                       f"name on the URL ({name})", "BadRequest")
    if meta.get("managedFields") is not None:
        raise ApiError(400, "metadata.managedFields must be nil", "BadRequest")
    want = {p: v for p, v in leaves(applied).items() if p not in _IDENTITY}
    entry = {"manager": manager, "operation": "Apply", "apiVersion": r.group_version,
             "time": now_rfc3339(), "fieldsType": "FieldsV1", "fieldsV1": fields_v1(set(want))}
    if query.get("dryRun"):
        return 200, applied
    for _ in range(10):
        old = store.find(r, ns, name)
        if old is None:
            obj = copy.deepcopy(applied)
            obj.setdefault("metadata", {})["managedFields"] = [entry]
            try:
                return 201, store.create(r, ns, obj)
            except ApiError as exc:
                if exc.code != 409:
                    raise
                continue  # created meanwhile: apply to it
        managers = [m for m in (old["metadata"].get("managedFields") or []) if isinstance(m, dict)]
        mine_before: set[Path] = set()
        others: list[tuple[dict[str, Any], set[Path]]] = []
        for m in managers:
            owned = paths_of(m.get("fieldsV1"))
            if m.get("manager") == manager and m.get("operation") == "Apply":
                mine_before = owned
            else:
                others.append((m, owned))
        conflicts: list[tuple[str, str, Path]] = []
        for m, owned in others:
            for path in sorted(owned & set(want)):
                if _get(old, path) != want[path] and not _map_claim(want[path], _get(old, path)):
                    conflicts.append((str(m.get("manager")), str(m.get("apiVersion") or r.group_version), path))
        if conflicts and not force:
            n = len(conflicts)
            if n == 1:
                who, version, path = conflicts[0]
                text = f'Apply failed with 1 conflict: conflict with "{who}" using {version}: {_dotted(path)}'
            else:
                lines = "\n".join(f'- conflict with "{w}" using {v}: {_dotted(p)}' for w, v, p in conflicts)
                text = f"Apply failed with {n} conflicts:\n{lines}"
            raise ApiError(409, text, "Conflict")
        new = copy.deepcopy(old)
        still_owned = set().union(*(owned for _, owned in others)) if others else set()
        for path in mine_before - set(want) - still_owned:
            _drop(new, path)
        for path, value in want.items():
            if not _map_claim(value, _get(new, path)):
                _set(new, path, value)
        kept = []
        for m, owned in others:
            left = owned - set(want) if force else owned
            if left:
                kept.append({**m, "fieldsV1": fields_v1(left)})
        same = json.dumps({k: v for k, v in new.items() if k != "metadata"}, sort_keys=True) == \
            json.dumps({k: v for k, v in old.items() if k != "metadata"}, sort_keys=True) and \
            {k: v for k, v in new["metadata"].items() if k != "managedFields"} == \
            {k: v for k, v in old["metadata"].items() if k != "managedFields"} and \
            mine_before == set(want) and len(kept) == len(others)
        if same:
            return 200, old  # nothing changes: no write, the resourceVersion stays
        new["metadata"]["managedFields"] = [*kept, entry]
        try:
            return 200, store.update(r, ns, name, new, None, old=old)
        except ApiError as exc:
            if exc.code != 409 or "modified" not in str(exc):
                raise
    raise ApiError(409, f'Operation cannot be fulfilled on {r.name} "{name}"', "Conflict")
