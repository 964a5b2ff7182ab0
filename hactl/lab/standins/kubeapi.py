"""A tiny Kubernetes REST client shared by the control-plane stand-ins (stdlib only).

CA-pinned HTTPS with a client certificate or a bearer token, objects addressed by their API path
(``/api/v1/nodes/master01``). Credentials usually come from a kubeconfig as kubeadm writes them
(``certificate-authority-data``, ``client-certificate-data``, ``client-key-data`` embedded
base64; file references and ``token`` also work).
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import ssl
import tempfile
import threading
import urllib.parse
from typing import Any

import yaml

__all__ = ["ApiError", "Client", "load_kubeconfig", "ns_path", "parse_flags"]


_BOOL_FLAGS = {"enable-bootstrap-token-auth", "allow-privileged", "version", "help", "h",
               "anonymous-auth", "enable-aggregator-routing", "profiling", "leader-elect",
               "use-service-account-credentials", "allocate-node-cidrs"}


def parse_flags(argv: list[str]) -> dict[str, str]:
    """Go ``pflag`` style: ``--name=value``, ``--name value`` and bare booleans."""
    flags: dict[str, str] = {}
    i = 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        if not arg.startswith("-"):
            continue
        name = arg.lstrip("-")
        if "=" in name:
            key, _, value = name.partition("=")
            flags[key] = value
        elif name in _BOOL_FLAGS or i >= len(argv) or argv[i].startswith("--"):
            flags[name] = "true"
        else:
            flags[name] = argv[i]
            i += 1
    return flags


class ApiError(Exception):
    """A non-2xx answer (``code`` is the HTTP status, ``reason`` the Status reason)."""

    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(f"{code} {reason}: {message}")
        self.code = code
        self.reason = reason
        self.message = message


def ns_path(resource: str, namespace: str | None = None, name: str | None = None,
            group_version: str = "v1") -> str:
    """``/api/v1/namespaces/<ns>/<resource>/<name>`` (or ``/apis/<g>/<v>/…``)."""
    base = "/api/v1" if group_version == "v1" else f"/apis/{group_version}"
    if namespace is not None:
        base += f"/namespaces/{namespace}"
    base += f"/{resource}"
    return base + (f"/{name}" if name else "")


def _blob(entry: dict[str, Any], key: str, base_dir: str) -> bytes | None:
    if entry.get(f"{key}-data"):
        return base64.b64decode(entry[f"{key}-data"])
    if entry.get(key):
        path = entry[key] if os.path.isabs(entry[key]) else os.path.join(base_dir, entry[key])
        with open(path, "rb") as handle:
            return handle.read()
    return None


def load_kubeconfig(path: str) -> dict[str, Any]:
    """The current context's server, CA, client certificate/key (PEM bytes) and token."""
    with open(path) as handle:
        doc: dict[str, Any] = yaml.safe_load(handle) or {}
    base_dir = os.path.dirname(os.path.abspath(path))
    contexts: dict[str, dict[str, Any]] = {c["name"]: c.get("context", {}) for c in doc.get("contexts") or []}
    ctx: dict[str, Any] = contexts.get(doc.get("current-context", "")) or next(iter(contexts.values()), {})
    clusters: dict[str, dict[str, Any]] = {c["name"]: c.get("cluster", {}) for c in doc.get("clusters") or []}
    users: dict[str, dict[str, Any]] = {u["name"]: u.get("user", {}) or {} for u in doc.get("users") or []}
    cluster: dict[str, Any] = clusters.get(ctx.get("cluster", "")) or next(iter(clusters.values()), {})
    user: dict[str, Any] = users.get(ctx.get("user", "")) or next(iter(users.values()), {})
    return {
        "server": cluster.get("server", ""),
        "ca": _blob(cluster, "certificate-authority", base_dir),
        "cert": _blob(user, "client-certificate", base_dir),
        "key": _blob(user, "client-key", base_dir),
        "token": user.get("token"),
    }


def _load_chain(ctx: ssl.SSLContext, cert: bytes, key: bytes) -> None:
    # ssl loads key pairs from files only: a private temp file that lives during the call
    fd, path = tempfile.mkstemp(prefix=".kubeapi-")
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, cert.rstrip(b"\n") + b"\n" + key)
        os.close(fd)
        ctx.load_cert_chain(path)
    finally:
        os.unlink(path)


class Client:
    """Thread-safe; one keep-alive connection per thread."""

    def __init__(self, server: str, *, ca: bytes | None = None, cert: bytes | None = None,
                 key: bytes | None = None, token: str | None = None,
                 timeout: float = 10.0) -> None:
        url = urllib.parse.urlsplit(server)
        self.host, self.port = url.hostname or "127.0.0.1", url.port or 443
        self.timeout = timeout
        self.token = token
        # CA-pinned: with a CA the system trust store is not even loaded
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH,
                                         cadata=ca.decode() if ca is not None else None)
        if cert is not None and key is not None:
            _load_chain(ctx, cert, key)
        self.ctx = ctx
        self._local = threading.local()
        self._lock = threading.Lock()
        self._all: list[http.client.HTTPSConnection] = []

    @classmethod
    def from_kubeconfig(cls, path: str, timeout: float = 10.0) -> Client:
        kc = load_kubeconfig(path)
        return cls(kc["server"], ca=kc["ca"], cert=kc["cert"], key=kc["key"], token=kc["token"],
                   timeout=timeout)

    def close(self) -> None:
        with self._lock:
            conns, self._all = self._all, []
        for conn in conns:
            conn.close()

    def _conn(self) -> http.client.HTTPSConnection:
        conn: http.client.HTTPSConnection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = http.client.HTTPSConnection(self.host, self.port, timeout=self.timeout,
                                               context=self.ctx)
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        return conn

    def request(self, method: str, path: str, body: Any = None,
                content_type: str = "application/json",
                accept: str = "application/json") -> tuple[int, Any]:
        """Send one request; returns (status, decoded JSON or text). Raises OSError on I/O."""
        payload = None if body is None else json.dumps(body).encode()
        headers = {"Accept": accept, "User-Agent": "hactl-lab-standin"}
        if payload is not None:
            headers["Content-Type"] = content_type
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        for attempt in range(2):
            conn = self._conn()
            try:
                conn.request(method, path, payload, headers)
                resp = conn.getresponse()
                raw = resp.read()
                break
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError,
                    http.client.CannotSendRequest):
                conn.close()
                self._local.conn = None
                if attempt:
                    raise
            except (OSError, http.client.HTTPException):
                conn.close()
                self._local.conn = None
                raise
        ctype = resp.getheader("Content-Type") or ""
        doc: Any = raw.decode(errors="replace")
        if "json" in ctype and raw:
            doc = json.loads(raw)
        return resp.status, doc

    def _call(self, method: str, path: str, body: Any = None,
              content_type: str = "application/json") -> Any:
        status, doc = self.request(method, path, body, content_type)
        if status >= 400:
            if isinstance(doc, dict):
                raise ApiError(status, str(doc.get("reason", "")), str(doc.get("message", "")))
            raise ApiError(status, "", str(doc)[:200])
        return doc

    def get(self, path: str, **query: str) -> Any:
        return self._call("GET", path + ("?" + urllib.parse.urlencode(query) if query else ""))

    def find(self, path: str) -> Any:
        """GET, or None on 404."""
        try:
            return self.get(path)
        except ApiError as exc:
            if exc.code == 404:
                return None
            raise

    def create(self, collection: str, obj: dict[str, Any]) -> Any:
        return self._call("POST", collection, obj)

    def update(self, path: str, obj: dict[str, Any]) -> Any:
        return self._call("PUT", path, obj)

    def patch(self, path: str, patch: Any,
              content_type: str = "application/merge-patch+json") -> Any:
        return self._call("PATCH", path, patch, content_type)

    def delete(self, path: str, uid: str | None = None, grace: int | None = None) -> Any:
        body: dict[str, Any] | None = None
        if uid or grace is not None:
            body = {"kind": "DeleteOptions", "apiVersion": "v1"}
            if uid:
                body["preconditions"] = {"uid": uid}
            if grace is not None:
                body["gracePeriodSeconds"] = grace
        return self._call("DELETE", path, body)
