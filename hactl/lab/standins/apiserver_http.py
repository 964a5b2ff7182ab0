"""HTTP layer of the stand-in kube-apiserver: routing, health, discovery, REST verbs, patches."""

from __future__ import annotations

import http.server
import json
import socket
import ssl
import sys
import threading
import urllib.parse
from typing import Any

from . import apiserver_resources as res
from .apiserver_apply import APPLY_TYPE
from .apiserver_apply import apply as apply_patch
from .apiserver_auth import Identity, Unauthorized, authenticate, authorize, forbidden_message
from .apiserver_pods import delete_pod, evict, validate_pdb
from .apiserver_store import ApiError, Store, json_patch, merge_patch
from .apiserver_watch import stream_watch
from .etcd_kv import EtcdClient, EtcdError

__all__ = ["Server", "TLSServer"]


class Server:
    """Everything a request handler needs (shared by all handler threads)."""

    def __init__(self, etcd: EtcdClient, version: str, advertise: str, port: int) -> None:
        self.etcd = etcd
        self.store = Store(etcd)
        self.version = version
        self.advertise = f"{advertise}:{port}"

    def get_secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        r = res.by_path("", "v1", "secrets")
        assert r is not None
        return self.store.find(r, namespace, name)

    bootstrap_auth = False  # --enable-bootstrap-token-auth (false by default, as in the real one)
    anonymous_auth = True  # --anonymous-auth
    always_allow = False  # --authorization-mode contains AlwaysAllow

    def allowed(self, ident: Identity, verb: str, resource: str | None, namespace: str | None,
                name: str | None, path: str) -> bool:
        return self.always_allow or authorize(ident, verb, resource, namespace, name, path)

    health_timeout = 2.0  # --etcd-healthcheck-timeout (livez, healthz)
    ready_timeout = 2.0  # --etcd-readycheck-timeout (readyz)

    def etcd_ok(self, timeout: float) -> bool:
        try:
            self.etcd.get("health", timeout=timeout)
            return True
        except (EtcdError, OSError):
            return False

    def version_doc(self) -> dict[str, Any]:
        parts = self.version.lstrip("v").split(".")
        return {"major": parts[0], "minor": parts[1] if len(parts) > 1 else "0",
                "gitVersion": self.version, "gitCommit": "hactl-lab-standin",
                "gitTreeState": "clean", "buildDate": "2024-08-14T19:00:00Z",
                "goVersion": "go1.22.5", "compiler": "gc", "platform": "linux/amd64"}


class TLSServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, addr: tuple[str, int], ctx: ssl.SSLContext, app: Server) -> None:
        self.ctx, self.app = ctx, app
        self.inflight = 0
        """Requests being served that are not watches (the real server drains them on SIGTERM)."""
        self._inflight_lock = threading.Condition()
        super().__init__(addr, Handler)

    def begin(self) -> None:
        with self._inflight_lock:
            self.inflight += 1

    def end(self) -> None:
        with self._inflight_lock:
            self.inflight -= 1
            self._inflight_lock.notify_all()

    def drain(self, timeout: float) -> int:
        """Wait until no request but watches is being served (at most ``timeout`` s), as the
        real kube-apiserver does after SIGTERM; the number still in flight."""
        with self._inflight_lock:
            self._inflight_lock.wait_for(lambda: self.inflight <= 0, timeout)
            return self.inflight

    def get_request(self) -> tuple[Any, Any]:
        sock, addr = self.socket.accept()
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # no Nagle/delayed-ACK stalls
        return self.ctx.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), addr

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if not isinstance(exc, (OSError, ssl.SSLError)):
            super().handle_error(request, client_address)


_HEALTH = {"/livez": ("ping", "log", "etcd"),
           "/readyz": ("ping", "log", "etcd", "etcd-readiness", "informer-sync",
                       "poststarthook/start-system-namespaces-controller"),
           "/healthz": ("ping", "log", "etcd")}


class Handler(http.server.BaseHTTPRequestHandler):
    server: TLSServer
    protocol_version = "HTTP/1.1"
    server_version = "hactl-lab-kube-apiserver"
    sys_version = ""
    timeout = 300

    def setup(self) -> None:
        self.request.settimeout(10)
        self.request.do_handshake()
        super().setup()

    def log_message(self, format: str, *args: Any) -> None:
        pass

    # -- responses --------------------------------------------------------------------------

    def _send(self, code: int, body: bytes, ctype: str = "application/json") -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-cache, private")
        buffer: list[bytes] = self._headers_buffer  # type: ignore[attr-defined]
        buffer.append(b"\r\n")  # headers and body in one write
        if self.command != "HEAD":
            buffer.append(body)
        self.flush_headers()

    def _json(self, code: int, doc: Any) -> None:
        self._send(code, json.dumps(doc).encode())

    def _error(self, exc: ApiError) -> None:
        self._json(exc.code, exc.status())

    # -- dispatch ---------------------------------------------------------------------------

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def _body(self) -> bytes:
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _dispatch(self, method: str) -> None:
        url = urllib.parse.urlsplit(self.path)
        query = {k: v[-1] for k, v in urllib.parse.parse_qs(url.query, keep_blank_values=True).items()}
        if query.get("watch") in ("1", "true"):
            self._serve(method, url, query)
            return
        self.server.begin()
        try:
            self._serve(method, url, query)
        finally:
            self.server.end()

    def _serve(self, method: str, url: urllib.parse.SplitResult, query: dict[str, str]) -> None:
        app = self.server.app
        path = url.path.rstrip("/") or "/"
        body = self._body() if method in ("POST", "PUT", "PATCH", "DELETE") else b""
        try:
            try:
                peer = self.request.getpeercert()
            except (ValueError, ssl.SSLError):
                peer = None
            try:
                ident = authenticate(peer, self.headers.get("Authorization"),
                                     app.get_secret if app.bootstrap_auth else None)
            except Unauthorized:
                raise ApiError(401, "Unauthorized") from None
            except ApiError:
                raise ApiError(401, "Unauthorized") from None
            if ident.anonymous and not app.anonymous_auth:
                raise ApiError(401, "Unauthorized")
            route = self._route(path)
            if route is None:
                self._nonresource(method, path, query, ident)
                return
            self._resource(method, route, query, body, ident)
        except ApiError as exc:
            self._error(exc)
        except Exception as exc:  # pragma: no cover - last resort, like the real panic handler
            sys.stderr.write(f"E internal error on {method} {path}: {exc!r}\n")
            self._error(ApiError(500, f"Internal error occurred: {exc}"))

    # -- non-resource paths -------------------------------------------------------------------

    def _nonresource(self, method: str, path: str, query: dict[str, str], ident: Identity) -> None:
        app = self.server.app
        if not app.allowed(ident, method.lower(), None, None, None, path):
            raise ApiError(403, forbidden_message(ident, method.lower(), None, "", None, None, path))
        if method != "GET":
            raise ApiError(405, "the server does not allow this method on the requested resource")
        base = "/" + path.strip("/").split("/")[0]
        if base in _HEALTH:
            self._health(base, path, query)
        elif path == "/version":
            self._json(200, app.version_doc())
        elif path == "/api":
            self._json(200, {"kind": "APIVersions", "versions": ["v1"],
                             "serverAddressByClientCIDRs": [
                                 {"clientCIDR": "0.0.0.0/0", "serverAddress": app.advertise}]})
        elif path == "/api/v1":
            self._json(200, res.resource_list("", "v1"))
        elif path == "/apis":
            self._json(200, {"kind": "APIGroupList", "apiVersion": "v1",
                             "groups": [_group(g, v) for g, v in res.groups().items()]})
        elif path.startswith("/apis/") and path.count("/") == 2:
            g = path.split("/")[2]
            if g not in res.groups():
                raise ApiError(404, "the server could not find the requested resource")
            self._json(200, {"kind": "APIGroup", "apiVersion": "v1", **_group(g, res.groups()[g])})
        elif path.startswith("/apis/") and path.count("/") == 3:
            _, _, g, v = path.split("/")
            if res.groups().get(g) != v:
                raise ApiError(404, "the server could not find the requested resource")
            self._json(200, res.resource_list(g, v))
        elif path == "/openapi/v3" or path.startswith("/openapi/v3/"):
            try:
                self._json(200, res.openapi_v3(path[len("/openapi/v3/"):], app.version))
            except KeyError:
                raise ApiError(404, "the server could not find the requested resource") from None
        else:
            raise ApiError(404, "the server could not find the requested resource")

    def _health(self, base: str, path: str, query: dict[str, str]) -> None:
        checks = _HEALTH[base]
        only = path[len(base) + 1:] if path != base else ""
        if only and only not in checks:
            raise ApiError(404, "the server could not find the requested resource")
        app = self.server.app
        timeout = app.ready_timeout if base == "/readyz" else app.health_timeout
        etcd_ok = app.etcd_ok(timeout) if (not only or "etcd" in only) else True
        results = [(c, etcd_ok if c.startswith("etcd") else True)
                   for c in checks if not only or c == only]
        ok = all(r for _, r in results)
        name = base.strip("/")
        if only:
            text = "ok" if ok else "internal server error: etcd client connection not yet established"
        elif ok and "verbose" not in query:
            text = "ok"
        else:
            lines = [f"[+]{c} ok" if r else f"[-]{c} failed: reason withheld" for c, r in results]
            lines.append(f"{name} check passed" if ok else f"{name} check failed")
            text = "\n".join(lines)
        self._send(200 if ok else 500, (text + ("\n" if not ok else "")).encode(),
                   "text/plain; charset=utf-8")

    # -- resources --------------------------------------------------------------------------

    @staticmethod
    def _route(path: str) -> tuple[res.Resource, str | None, str | None, str | None] | None:
        parts = path.strip("/").split("/")
        if parts[0] == "api" and len(parts) >= 3:
            group, version, rest = "", parts[1], parts[2:]
        elif parts[0] == "apis" and len(parts) >= 4:
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            return None
        not_found = ApiError(404, "the server could not find the requested resource")
        namespaces = res.by_path("", "v1", "namespaces")
        assert namespaces is not None
        if rest[0] == "namespaces" and group == "" and (
                len(rest) == 2 or (len(rest) == 3 and rest[2] in namespaces.subresources)):
            return namespaces, None, rest[1], rest[2] if len(rest) == 3 else None
        ns: str | None = None
        if rest[0] == "namespaces" and len(rest) >= 3:
            ns, rest = rest[1], rest[2:]
        r = res.by_path(group, version, rest[0])
        if r is None or len(rest) > 3 or (ns is not None and not r.namespaced):
            raise not_found
        name = rest[1] if len(rest) >= 2 else None
        sub = rest[2] if len(rest) == 3 else None
        if sub is not None and sub not in r.subresources:
            raise not_found
        return r, ns, name, sub

    def _resource(self, method: str, route: tuple[res.Resource, str | None, str | None, str | None],
                  query: dict[str, str], body: bytes, ident: Identity) -> None:
        r, ns, name, sub = route
        store = self.server.app.store
        verb = {"GET": "get" if name else "list", "POST": "create", "PUT": "update",
                "PATCH": "patch", "DELETE": "delete"}[method]
        if query.get("watch") in ("true", "1"):
            verb = "watch"
        if not self.server.app.allowed(ident, verb, r.name, ns, name, self.path):
            raise ApiError(403, forbidden_message(ident, verb, r.name, r.group, ns, name, self.path),
                           details={"name": name or "", "group": r.group, "kind": r.name})
        if verb == "watch":
            self._watch(r, ns, name, query)
            return
        if r.name == "selfsubjectaccessreviews":
            if verb != "create":
                raise ApiError(405, "the server does not allow this method on the requested "
                               "resource")
            self._json(201, _access_review(_load(body), ident))
            return
        if verb == "list":
            self._list(r, ns, query)
        elif verb == "get":
            assert name is not None
            obj = store.get(r, ns, name)
            if "as=Table" in (self.headers.get("Accept") or "") and sub is None:
                self._json(200, res.table(r, [obj], obj["metadata"]["resourceVersion"]))
            else:
                self._json(200, obj)
        elif verb == "create" and sub == "eviction":
            assert name is not None  # PodDisruptionBudgets honoured as by the real server
            self._json(*evict(store, r, ns, name, _load(body), query))
        elif verb == "create":
            if name is not None:
                raise ApiError(405, "the server does not allow this method on the requested resource")
            if r.namespaced and ns is None:
                raise ApiError(404, "the server could not find the requested resource")
            obj = _load(body)
            if obj.get("kind") not in (None, r.kind):
                raise ApiError(400, f"the body of the request was in an unknown format - "
                               f"kind {obj.get('kind')} is not {r.kind}")
            if r.name == "certificatesigningrequests":
                # the requester's identity is recorded by the server, never taken from the body
                spec = obj.setdefault("spec", {})
                spec.update(username=ident.user, groups=list(ident.groups))
                spec.pop("uid", None)
                obj.pop("status", None)
            if r.name == "poddisruptionbudgets":
                validate_pdb(obj)
            if query.get("dryRun"):
                self._json(201, obj)
                return
            self._json(201, store.create(r, ns, obj))
        elif verb == "update":
            assert name is not None
            obj = _load(body)
            if r.name == "poddisruptionbudgets" and sub is None:
                validate_pdb(obj)
            self._json(200, store.update(r, ns, name, obj, sub))
        elif verb == "patch":
            assert name is not None
            ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip()
            if ctype == APPLY_TYPE and sub is None:
                self._json(*apply_patch(store, r, ns, name, body, query))
            elif "force" in query:
                raise ApiError(422, 'PatchOptions.meta.k8s.io "" is invalid: force: Forbidden: '
                               "may not be specified for non-apply patch", "Invalid")
            else:
                self._json(200, self._patch(r, ns, name, sub, body))
        else:
            if name is None:
                raise ApiError(405, "deletecollection is not supported by the hactl lab stand-in")
            opts = _load(body) if body.strip() else {}
            if "gracePeriodSeconds" in query and "gracePeriodSeconds" not in opts:
                opts["gracePeriodSeconds"] = query["gracePeriodSeconds"]
            if r.name == "pods":  # graceful deletion: the pod's kubelet finishes it
                self._json(*delete_pod(store, r, ns, name, opts))
                return
            pre = opts.get("preconditions") or {}
            self._json(200, store.delete(r, ns, name, pre.get("uid"), pre.get("resourceVersion")))

    def _watch(self, r: res.Resource, ns: str | None, name: str | None,
               query: dict[str, str]) -> None:
        if name is not None:
            query = {**query, "fieldSelector": ",".join(
                x for x in (query.get("fieldSelector"), f"metadata.name={name}") if x)}
        try:  # reject a malformed selector before the stream starts
            res.match_labels(query.get("labelSelector", ""), {})
            res.match_fields(query.get("fieldSelector", ""), {})
        except ValueError as exc:
            raise ApiError(400, str(exc)) from exc
        def begin() -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Transfer-Encoding", "chunked")
            self.send_header("Cache-Control", "no-cache, private")
            self.end_headers()

        def write(data: bytes) -> None:
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()

        try:
            stream_watch(self.server.app.store, r, ns, query,
                         "as=Table" in (self.headers.get("Accept") or ""), begin, write,
                         self.connection)
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except (OSError, ValueError):
            self.close_connection = True

    def _list(self, r: res.Resource, ns: str | None, query: dict[str, str]) -> None:
        items, rv = self.server.app.store.list(r, ns)
        try:
            if query.get("labelSelector"):
                items = [o for o in items if res.match_labels(
                    query["labelSelector"], o["metadata"].get("labels") or {})]
            if query.get("fieldSelector"):
                items = [o for o in items if res.match_fields(query["fieldSelector"], o)]
        except ValueError as exc:
            raise ApiError(400, str(exc)) from exc
        if "as=Table" in (self.headers.get("Accept") or ""):
            self._json(200, res.table(r, items, rv))
            return
        self._json(200, {"kind": f"{r.kind}List", "apiVersion": r.group_version,
                         "metadata": {"resourceVersion": rv}, "items": items})

    def _patch(self, r: res.Resource, ns: str | None, name: str, sub: str | None,
               body: bytes) -> dict[str, Any]:
        store = self.server.app.store
        ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip()
        patch = _load(body, allow_list=ctype == "application/json-patch+json")
        for _ in range(10):
            old = store.get(r, ns, name)
            if ctype in ("application/merge-patch+json", "application/strategic-merge-patch+json"):
                new = merge_patch(old, patch)
            elif ctype == "application/json-patch+json":
                new = json_patch(old, patch)
            else:
                raise ApiError(415, f"the body of the request was in an unknown format - "
                               f"accepted media types include: application/json-patch+json, "
                               f"application/apply-patch+yaml, "
                               f"application/merge-patch+json, "
                               f"application/strategic-merge-patch+json (got {ctype})")
            if r.name == "poddisruptionbudgets" and sub is None:
                validate_pdb(new)
            meta = new.setdefault("metadata", {})
            want_rv = (patch.get("metadata") or {}).get("resourceVersion") if isinstance(
                patch, dict) else None
            meta["resourceVersion"] = want_rv or old["metadata"]["resourceVersion"]
            try:
                return store.update(r, ns, name, new, sub, old=old)
            except ApiError as exc:
                if exc.code != 409 or want_rv:
                    raise
        raise ApiError(409, f'Operation cannot be fulfilled on {r.name} "{name}"', "Conflict")


def _group(g: str, v: str) -> dict[str, Any]:
    gv = {"groupVersion": f"{g}/{v}", "version": v}
    return {"name": g, "versions": [gv], "preferredVersion": gv}


def _load(body: bytes, allow_list: bool = False) -> Any:
    try:
        doc = json.loads(body or b"{}")
    except ValueError as exc:
        raise ApiError(400, f"the body of the request was in an unknown format: {exc}") from exc
    if not isinstance(doc, dict) and not (allow_list and isinstance(doc, list)):
        raise ApiError(400, "the body of the request was in an unknown format")
    return doc


def _access_review(review: dict[str, Any], ident: Identity) -> dict[str, Any]:
    """SelfSubjectAccessReview answered by the stand-in's fixed policy."""
    spec = review.get("spec") or {}
    attrs = spec.get("resourceAttributes")
    if attrs:
        verb, resource = attrs.get("verb", ""), attrs.get("resource") or None
        if attrs.get("subresource"):
            resource = f"{resource}/{attrs['subresource']}"
        allowed = authorize(ident, verb, resource, attrs.get("namespace") or None,
                            attrs.get("name") or None, "")
    else:
        nonres = spec.get("nonResourceAttributes") or {}
        allowed = authorize(ident, nonres.get("verb", "get"), None, None, None,
                            nonres.get("path", ""))
    reason = "hactl lab stand-in policy" if allowed else ""
    return {"kind": "SelfSubjectAccessReview", "apiVersion": "authorization.k8s.io/v1",
            "metadata": {"creationTimestamp": None}, "spec": spec,
            "status": {"allowed": allowed, **({"reason": reason} if reason else {})}}
