"""Object storage of the stand-in kube-apiserver: JSON objects in the real etcd.

Keys follow the real layout (``/registry/<resource>/<namespace>/<name>``, nodes under
``/registry/minions/``); ``resourceVersion`` is the key's etcd ``mod_revision``; create, update and
delete are etcd transactions, so concurrent writers get 409 Conflict exactly like the real server.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import uuid
from typing import Any

from .apiserver_resources import GENERATION, RESOURCES, Resource
from .etcd_kv import KV, EtcdClient, EtcdError

__all__ = ["ApiError", "Store", "check_preconditions", "conflict", "json_patch", "merge_patch", "now_rfc3339", "status_object"]

CORE_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
_REASONS = {400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound",
            405: "MethodNotAllowed", 406: "NotAcceptable", 409: "Conflict",
            415: "UnsupportedMediaType", 422: "Invalid", 500: "InternalError",
            503: "ServiceUnavailable", 504: "Timeout"}


class ApiError(Exception):
    def __init__(self, code: int, message: str, reason: str | None = None,
                 details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason or _REASONS.get(code, "Unknown")
        self.details = details

    def status(self) -> dict[str, Any]:
        return status_object(self.code, self.reason, str(self), self.details)


def status_object(code: int, reason: str, message: str,
                  details: dict[str, Any] | None = None) -> dict[str, Any]:
    doc: dict[str, Any] = {"kind": "Status", "apiVersion": "v1", "metadata": {},
                           "status": "Success" if code < 400 else "Failure", "message": message,
                           "reason": reason, "code": code}
    if details:
        doc["details"] = details
    if code < 400:
        doc.pop("reason")
    return doc


def now_rfc3339() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge_patch(out.get(k), v)
    return out


def _not_found(r: Resource, name: str) -> ApiError:
    return ApiError(404, f'{r.name}{"." + r.group if r.group else ""} "{name}" not found',
                    details={"name": name, "group": r.group, "kind": r.name})


def conflict(r: Resource, name: str) -> ApiError:
    return ApiError(409, f'Operation cannot be fulfilled on {r.name}'
                    f'{"." + r.group if r.group else ""} "{name}": the object has been '
                    "modified; please apply your changes to the latest version and try again",
                    "Conflict", {"name": name, "group": r.group, "kind": r.name})


def check_preconditions(r: Resource, name: str, obj: dict[str, Any], uid: str | None,
                        resource_version: str | None) -> None:
    """DeleteOptions.preconditions, with the real server's messages."""
    meta = obj["metadata"]
    if uid and meta.get("uid") != uid:
        raise ApiError(409, f"Precondition failed: UID in precondition: {uid}, UID in "
                       f"object meta: {meta.get('uid')}", "Conflict",
                       {"name": name, "group": r.group, "kind": r.name})
    if resource_version and meta.get("resourceVersion") != resource_version:
        raise ApiError(409, f"Precondition failed: ResourceVersion in precondition: "
                       f"{resource_version}, ResourceVersion in object meta: "
                       f"{meta.get('resourceVersion')}", "Conflict",
                       {"name": name, "group": r.group, "kind": r.name})


def _storage_error(exc: EtcdError) -> ApiError:
    return ApiError(500, str(exc), "InternalError")


class Store:
    def __init__(self, etcd: EtcdClient) -> None:
        self.etcd = etcd
        self._ns = next(r for r in RESOURCES if r.name == "namespaces")

    @staticmethod
    def decode(r: Resource, kv: KV) -> dict[str, Any]:
        obj: dict[str, Any] = json.loads(kv.value)
        obj["kind"], obj["apiVersion"] = r.kind, r.group_version
        obj.setdefault("metadata", {})["resourceVersion"] = str(kv.mod_revision)
        return obj

    @staticmethod
    def _encode(obj: dict[str, Any]) -> bytes:
        stored = copy.deepcopy(obj)
        stored.get("metadata", {}).pop("resourceVersion", None)
        return json.dumps(stored, sort_keys=True, separators=(",", ":")).encode()

    def get(self, r: Resource, namespace: str | None, name: str) -> dict[str, Any]:
        try:
            kv = self.etcd.get(r.key(namespace, name))
        except EtcdError as exc:
            raise _storage_error(exc) from exc
        if kv is None:
            raise _not_found(r, name)
        return self.decode(r, kv)

    def find(self, r: Resource, namespace: str | None, name: str) -> dict[str, Any] | None:
        try:
            return self.get(r, namespace, name)
        except ApiError as exc:
            if exc.code == 404:
                return None
            raise

    def list(self, r: Resource, namespace: str | None) -> tuple[list[dict[str, Any]], str]:
        try:
            kvs, rev = self.etcd.range_prefix(r.key(namespace, None))
        except EtcdError as exc:
            raise _storage_error(exc) from exc
        return [self.decode(r, kv) for kv in kvs], str(rev)

    def _require_namespace(self, r: Resource, namespace: str | None) -> None:
        if r.namespaced and self.find(self._ns, None, namespace or "") is None:
            raise _not_found(self._ns, namespace or "")

    def create(self, r: Resource, namespace: str | None, obj: dict[str, Any]) -> dict[str, Any]:
        meta = obj.setdefault("metadata", {})
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
        name = meta.get("name")
        if not name:
            raise ApiError(422, f"{r.kind} \"\" is invalid: metadata.name: Required value",
                           "Invalid")
        if meta.get("resourceVersion"):
            raise ApiError(400, "resourceVersion should not be set on objects to be created")
        self._require_namespace(r, namespace)
        if r.namespaced:
            meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = now_rfc3339()
        meta.pop("deletionTimestamp", None)
        meta.pop("deletionGracePeriodSeconds", None)
        if r.name in GENERATION:
            meta["generation"] = 1
        else:
            meta.pop("generation", None)
        if r.name == "namespaces":
            meta.setdefault("labels", {})["kubernetes.io/metadata.name"] = name
            obj["spec"] = {"finalizers": ["kubernetes"]}
            obj["status"] = {"phase": "Active"}
        obj["kind"], obj["apiVersion"] = r.kind, r.group_version
        try:
            rev = self.etcd.create(r.key(namespace, name), self._encode(obj))
        except EtcdError as exc:
            raise _storage_error(exc) from exc
        if rev is None:
            raise ApiError(409, f'{r.name}{"." + r.group if r.group else ""} "{name}" already '
                           "exists", "AlreadyExists",
                           {"name": name, "group": r.group, "kind": r.name})
        meta["resourceVersion"] = str(rev)
        return obj

    def update(self, r: Resource, namespace: str | None, name: str, obj: dict[str, Any],
               subresource: str | None = None, old: dict[str, Any] | None = None
               ) -> dict[str, Any]:
        """PUT semantics: optimistic concurrency on ``metadata.resourceVersion`` when given."""
        if old is None:
            old = self.get(r, namespace, name)
        meta = obj.setdefault("metadata", {})
        if meta.get("name", name) != name:
            raise ApiError(400, f"the name of the object ({meta.get('name')}) does not match "
                           f"the name on the URL ({name})")
        rv = meta.get("resourceVersion") or None
        new = copy.deepcopy(old) if subresource in ("status", "approval") else obj
        if subresource == "status":
            new["status"] = obj.get("status")
        elif subresource == "approval":  # CSR approval: only the conditions change
            new.setdefault("status", {})["conditions"] = (obj.get("status") or {}).get(
                "conditions") or []
        elif "status" in r.subresources and subresource is None:
            if "status" in old:
                new["status"] = old["status"]  # the main endpoint ignores status changes
            else:
                new.pop("status", None)
        nmeta = new.setdefault("metadata", {})
        for keep in ("uid", "creationTimestamp", "namespace", "deletionTimestamp",
                     "deletionGracePeriodSeconds", "generation"):
            if keep in old["metadata"]:
                nmeta[keep] = old["metadata"][keep]
            else:
                nmeta.pop(keep, None)
        if r.name in GENERATION and subresource is None and new.get("spec") != old.get("spec"):
            nmeta["generation"] = int(old["metadata"].get("generation") or 0) + 1
        nmeta["name"] = name
        new["kind"], new["apiVersion"] = r.kind, r.group_version
        try:
            rev = self.etcd.update(r.key(namespace, name), self._encode(new),
                                   int(rv) if rv else None)
        except EtcdError as exc:
            raise _storage_error(exc) from exc
        except ValueError as exc:
            raise ApiError(400, f"invalid resourceVersion {rv!r}") from exc
        if rev is None:
            if self.find(r, namespace, name) is None:
                raise _not_found(r, name)
            raise ApiError(409, f'Operation cannot be fulfilled on {r.name}'
                           f'{"." + r.group if r.group else ""} "{name}": the object has been '
                           "modified; please apply your changes to the latest version and try "
                           "again", "Conflict", {"name": name, "group": r.group, "kind": r.name})
        nmeta["resourceVersion"] = str(rev)
        return new

    def delete(self, r: Resource, namespace: str | None, name: str,
               uid: str | None = None, resource_version: str | None = None) -> dict[str, Any]:
        for _ in range(5):
            old = self.get(r, namespace, name)
            check_preconditions(r, name, old, uid, resource_version)
            try:
                if self.etcd.delete_if(r.key(namespace, name),
                                       int(old["metadata"]["resourceVersion"])):
                    return old
            except EtcdError as exc:
                raise _storage_error(exc) from exc
        raise ApiError(409, f'Operation cannot be fulfilled on {r.name} "{name}"', "Conflict")

    def set_deletion(self, r: Resource, namespace: str | None, name: str, old: dict[str, Any],
                     period: int) -> dict[str, Any]:
        """Graceful deletion: ``deletionTimestamp`` = now + ``period`` s and
        ``deletionGracePeriodSeconds``, written only if the object is still ``old``."""
        new = copy.deepcopy(old)
        when = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=period)
        new["metadata"]["deletionTimestamp"] = when.strftime("%Y-%m-%dT%H:%M:%SZ")
        new["metadata"]["deletionGracePeriodSeconds"] = period
        try:
            rev = self.etcd.update(r.key(namespace, name), self._encode(new),
                                   int(old["metadata"]["resourceVersion"]))
        except EtcdError as exc:
            raise _storage_error(exc) from exc
        if rev is None:
            raise conflict(r, name)
        new["metadata"]["resourceVersion"] = str(rev)
        return new

    def ensure_namespaces(self) -> None:
        for ns in CORE_NAMESPACES:
            if self.find(self._ns, None, ns) is None:
                try:
                    self.create(self._ns, None, {"metadata": {"name": ns}})
                except ApiError as exc:
                    if exc.code != 409:
                        raise


def _pointer(path: str) -> list[str]:
    return [p.replace("~1", "/").replace("~0", "~") for p in path.split("/")[1:]]


def json_patch(doc: dict[str, Any], ops: list[dict[str, Any]]) -> dict[str, Any]:
    """RFC 6902 (add, remove, replace, test) — enough for kubectl and client-go users."""
    out = copy.deepcopy(doc)
    for op in ops:
        parts = _pointer(str(op.get("path", "")))
        if not parts:
            raise ApiError(422, "json patch: empty path", "Invalid")
        parent: Any = out
        for p in parts[:-1]:
            parent = parent[int(p)] if isinstance(parent, list) else parent.setdefault(p, {})
        last, kind = parts[-1], op.get("op")
        try:
            if kind == "test":
                cur = parent[int(last)] if isinstance(parent, list) else parent.get(last)
                if cur != op.get("value"):
                    raise ApiError(422, f"json patch: test failed at {op.get('path')}", "Invalid")
            elif kind in ("add", "replace"):
                if isinstance(parent, list):
                    idx = len(parent) if last == "-" else int(last)
                    if kind == "add":
                        parent.insert(idx, op.get("value"))
                    else:
                        parent[idx] = op.get("value")
                else:
                    parent[last] = op.get("value")
            elif kind == "remove":
                del parent[int(last) if isinstance(parent, list) else last]
            else:
                raise ApiError(422, f"json patch: unsupported op {kind!r}", "Invalid")
        except (KeyError, IndexError, ValueError, TypeError) as exc:
            raise ApiError(422, f"json patch: cannot {kind} {op.get('path')}: {exc}",
                           "Invalid") from exc
    return out


