"""A tiny Kubernetes REST client for the kubeadm and kubelet stand-ins (stdlib ssl + http.client).

Speaks the real API paths (``/api/v1/namespaces/kube-system/secrets/...``) with the three kinds of
credentials kubeadm uses: a client certificate from a kubeconfig, a bootstrap token (bearer), or
nothing (anonymous discovery of ``kube-public/cluster-info``, optionally without verifying the
server, exactly like kubeadm's first, insecure discovery request).
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import ssl
import tempfile
import time
from typing import Any
from urllib.parse import quote, urlencode

import yaml

from .kubeadm_common import P, split_hostport

RETRY_STATUS = {429, 500, 502, 503, 504}


class ApiError(Exception):
    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


def _load_chain(ctx: ssl.SSLContext, cert_pem: bytes, key_pem: bytes) -> None:
    # ssl wants files: write the pair to a private temp file that lives only during the call.
    fd, path = tempfile.mkstemp(prefix=".kubeadm-client-", dir=os.environ.get("TMPDIR", "/tmp"))
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, cert_pem + b"\n" + key_pem)
        os.close(fd)
        ctx.load_cert_chain(path)
    finally:
        os.unlink(path)


class Api:
    def __init__(
        self,
        server: str,
        *,
        ca_pem: bytes | None = None,
        cert_pem: bytes | None = None,
        key_pem: bytes | None = None,
        token: str | None = None,
        insecure: bool = False,
        timeout: float = 10.0,
        retry_seconds: float = 0.0,
    ) -> None:
        self.server = server.rstrip("/")
        self.host, self.port = split_hostport(self.server)
        self.token = token
        self.timeout = timeout
        self.retry_seconds = retry_seconds
        if insecure or ca_pem is None:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        else:
            ctx = ssl.create_default_context(cadata=ca_pem.decode())
        if cert_pem and key_pem:
            _load_chain(ctx, cert_pem, key_pem)
        self.ctx = ctx
        self._conn: http.client.HTTPSConnection | None = None

    @classmethod
    def from_kubeconfig(cls, path: str, *, server: str | None = None, timeout: float = 10.0,
                        retry_seconds: float = 0.0) -> Api:
        try:
            cfg = load_kubeconfig(path)
        except FileNotFoundError as exc:
            raise FileNotFoundError(f"failed to load admin kubeconfig: open {path}: no such file or directory") \
                from exc
        return cls(
            server or cfg["server"],
            ca_pem=cfg.get("ca"),
            cert_pem=cfg.get("cert"),
            key_pem=cfg.get("key"),
            token=cfg.get("token"),
            timeout=timeout,
            retry_seconds=retry_seconds,
        )

    def _connection(self) -> http.client.HTTPSConnection:
        if self._conn is None:
            self._conn = http.client.HTTPSConnection(self.host, self.port, context=self.ctx,
                                                     timeout=self.timeout)
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _send(self, method: str, url: str, data: bytes | None,
              headers: dict[str, str]) -> tuple[int, bytes]:
        """One request on the kept-alive connection; a connection the server closed while idle
        is reopened once."""
        for attempt in (0, 1):
            conn = self._connection()
            try:
                conn.request(method, url, body=data, headers=headers)
                resp = conn.getresponse()
                raw = resp.read()
                if resp.getheader("Connection", "").lower() == "close":
                    self.close()
                return resp.status, raw
            except (http.client.RemoteDisconnected, http.client.CannotSendRequest,
                    BrokenPipeError, ConnectionResetError):
                self.close()
                if attempt:
                    raise
            except (OSError, http.client.HTTPException):
                self.close()
                raise
        raise AssertionError("unreachable")

    def request(
        self, method: str, path: str, body: Any = None, *, query: dict[str, str] | None = None,
        content_type: str = "application/json",
    ) -> Any:
        headers = {"Accept": "application/json", "User-Agent": "kubeadm/hactl-lab"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = content_type
        url = path + ("?" + urlencode(query) if query else "")
        deadline = time.monotonic() + self.retry_seconds
        while True:  # like kubeadm's API client: transient failures are retried for a while
            try:
                status, raw = self._send(method, url, data, headers)
                if status not in RETRY_STATUS or time.monotonic() >= deadline:
                    break
            except OSError:
                if time.monotonic() >= deadline:
                    raise
            time.sleep(1.0)
        try:
            obj = json.loads(raw) if raw else {}
        except ValueError:
            obj = {"message": raw.decode(errors="replace").strip()}
        if status >= 400:
            message = obj.get("message") if isinstance(obj, dict) else None
            reason = obj.get("reason", "") if isinstance(obj, dict) else ""
            raise ApiError(status, str(reason), str(message or f"HTTP {status}"))
        return obj

    def get_raw(self, path: str) -> tuple[int, str]:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        status, raw = self._send("GET", path, None, headers)
        return status, raw.decode(errors="replace")

    # -- typed helpers ----------------------------------------------------------------------
    def get(self, path: str, **query: str) -> Any:
        return self.request("GET", path, query=query or None)

    def create(self, collection: str, obj: dict[str, Any]) -> Any:
        return self.request("POST", collection, obj)

    def replace(self, path: str, obj: dict[str, Any]) -> Any:
        return self.request("PUT", path, obj)

    def delete(self, path: str, options: dict[str, Any] | None = None) -> Any:
        """DELETE with optional DeleteOptions (``gracePeriodSeconds``, ``preconditions``)."""
        body = {"kind": "DeleteOptions", "apiVersion": "v1", **options} if options else None
        return self.request("DELETE", path, body)

    def apply(self, collection: str, obj: dict[str, Any]) -> Any:
        """Create ``obj`` in ``collection`` or replace the existing one (kubeadm's CreateOrUpdate)."""
        try:
            return self.create(collection, obj)
        except ApiError as exc:
            if exc.status != 409:
                raise
        path = f"{collection}/{quote(obj['metadata']['name'])}"
        current = self.get(path)
        obj = dict(obj)
        obj["metadata"] = dict(obj["metadata"])
        obj["metadata"]["resourceVersion"] = current.get("metadata", {}).get("resourceVersion", "")
        return self.replace(path, obj)


def ns_path(namespace: str, resource: str, name: str | None = None) -> str:
    base = f"/api/v1/namespaces/{namespace}/{resource}"
    return f"{base}/{quote(name)}" if name else base


def load_kubeconfig(path: str) -> dict[str, Any]:
    """``{server, ca, cert, key, token}`` of the current context of the kubeconfig at ``path``."""
    with open(P(path)) as handle:
        doc = yaml.safe_load(handle) or {}
    return parse_kubeconfig(doc)


def parse_kubeconfig(doc: dict[str, Any]) -> dict[str, Any]:
    contexts = {c["name"]: c.get("context", {}) for c in doc.get("contexts") or []}
    ctx = contexts.get(doc.get("current-context", ""), next(iter(contexts.values()), {}))
    clusters = {c["name"]: c.get("cluster", {}) for c in doc.get("clusters") or []}
    users = {u["name"]: u.get("user", {}) for u in doc.get("users") or []}
    cluster = clusters.get(ctx.get("cluster", ""), next(iter(clusters.values()), {}))
    user = users.get(ctx.get("user", ""), {})
    result: dict[str, Any] = {"server": cluster.get("server", "")}

    def blob(data_key: str, file_key: str, src: dict[str, Any]) -> bytes | None:
        if src.get(data_key):
            return base64.b64decode(src[data_key])
        if src.get(file_key):
            with open(P(src[file_key]), "rb") as handle:
                return handle.read()
        return None

    result["ca"] = blob("certificate-authority-data", "certificate-authority", cluster)
    result["cert"] = blob("client-certificate-data", "client-certificate", user)
    result["key"] = blob("client-key-data", "client-key", user)
    result["token"] = user.get("token")
    return result
