"""A small etcd v3 client over etcd's JSON gRPC gateway (stdlib only).

etcd 3.4 serves its v3 API as JSON on the client port (``POST /v3/kv/range`` and friends):
keys and values travel base64-encoded, int64 fields as decimal strings, and fields at their
zero value are left out of responses. This module speaks that dialect with ``http.client`` and
``ssl`` (client certificates, CA-pinned), fails over between endpoints the way etcd's Go client
does, and raises :class:`EtcdUnavailable` when no endpoint answers (for example when quorum is
lost and linearizable reads time out).

It runs under Debian's ``/usr/bin/python3`` on lab nodes: standard library only.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import http.client
import json
import socket
import ssl
import threading
import urllib.parse
from typing import Any

__all__ = ["KV", "EtcdClient", "EtcdError", "EtcdUnavailable", "Watch", "WatchEvent", "prefix_end"]


class EtcdError(Exception):
    """etcd answered with an error (``{"error": ..., "code": ...}``)."""

    def __init__(self, message: str, code: int = 0) -> None:
        super().__init__(message)
        self.code = code


class EtcdUnavailable(EtcdError):
    """No endpoint answered in time (down, partitioned, or without quorum)."""


@dataclasses.dataclass(frozen=True)
class KV:
    key: str
    value: bytes
    create_revision: int
    mod_revision: int
    version: int
    lease: int = 0


def _b64(data: str | bytes) -> str:
    raw = data.encode() if isinstance(data, str) else data
    return base64.b64encode(raw).decode("ascii")


def _unb64(data: str | None) -> bytes:
    return base64.b64decode(data) if data else b""


def prefix_end(prefix: str) -> bytes:
    """The ``range_end`` that selects every key starting with ``prefix``."""
    raw = bytearray(prefix.encode())
    while raw:
        if raw[-1] < 0xFF:
            raw[-1] += 1
            return bytes(raw)
        raw.pop()
    return b"\0"


def _kv(doc: dict[str, Any]) -> KV:
    return KV(
        key=_unb64(doc.get("key")).decode(),
        value=_unb64(doc.get("value")),
        create_revision=int(doc.get("create_revision", 0)),
        mod_revision=int(doc.get("mod_revision", 0)),
        version=int(doc.get("version", 0)),
        lease=int(doc.get("lease", 0)),
    )


class EtcdClient:
    """Thread-safe client; one keep-alive connection per thread and endpoint."""

    def __init__(
        self,
        endpoints: list[str],
        *,
        cafile: str | None = None,
        certfile: str | None = None,
        keyfile: str | None = None,
        timeout: float = 5.0,
    ) -> None:
        if not endpoints:
            raise ValueError("no etcd endpoints")
        self.endpoints = [e.strip().rstrip("/") for e in endpoints if e.strip()]
        self.timeout = timeout
        self._ctx: ssl.SSLContext | None = None
        if any(e.startswith("https://") for e in self.endpoints):
            ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=cafile)
            if certfile:
                ctx.load_cert_chain(certfile, keyfile)
            self._ctx = ctx
        self._preferred = 0
        self._lock = threading.Lock()
        self._idle: dict[str, list[http.client.HTTPConnection]] = {}

    def close(self) -> None:
        """Close the idle connections (connections in use close when their call ends)."""
        with self._lock:
            pools, self._idle = self._idle, {}
        for conns in pools.values():
            for conn in conns:
                conn.close()

    def __enter__(self) -> EtcdClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- transport: a small pool of keep-alive connections per endpoint ----------------------

    def _checkout(self, endpoint: str, timeout: float, fresh: bool) -> http.client.HTTPConnection:
        conn: http.client.HTTPConnection | None = None
        if not fresh:
            with self._lock:
                pool = self._idle.get(endpoint)
                if pool:
                    conn = pool.pop()
        if conn is None:
            url = urllib.parse.urlsplit(endpoint)
            host, port = url.hostname or "127.0.0.1", url.port or 2379
            if url.scheme == "https":
                conn = http.client.HTTPSConnection(host, port, timeout=timeout, context=self._ctx)
            else:
                conn = http.client.HTTPConnection(host, port, timeout=timeout)
        conn.timeout = timeout
        if conn.sock is not None:
            conn.sock.settimeout(timeout)
        return conn

    def _checkin(self, endpoint: str, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            pool = self._idle.setdefault(endpoint, [])
            if len(pool) < 16:
                pool.append(conn)
                return
        conn.close()

    def call(self, path: str, body: dict[str, Any], timeout: float | None = None) -> dict[str, Any]:
        """POST ``body`` to ``path`` on the first endpoint that answers; return the JSON reply."""
        timeout = self.timeout if timeout is None else timeout
        payload = json.dumps(body).encode()
        n = len(self.endpoints)
        start = self._preferred
        errors: list[str] = []
        for i in range(n):
            idx = (start + i) % n
            endpoint = self.endpoints[idx]
            for attempt in range(2):  # a stale keep-alive connection gets one fresh retry
                conn = self._checkout(endpoint, timeout, fresh=attempt > 0)
                try:
                    conn.request("POST", path, payload, {"Content-Type": "application/json"})
                    resp = conn.getresponse()
                    raw = resp.read()
                except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as exc:
                    conn.close()
                    if attempt == 0:
                        continue
                    errors.append(f"{endpoint}: {exc}")
                    break
                except (OSError, http.client.HTTPException) as exc:
                    conn.close()
                    errors.append(f"{endpoint}: {exc or type(exc).__name__}")
                    break
                self._checkin(endpoint, conn)
                doc: dict[str, Any] = json.loads(raw or b"{}") if raw else {}
                if resp.status != 200 or "error" in doc:
                    msg = str(doc.get("error") or doc.get("message") or f"HTTP {resp.status}")
                    code = int(doc.get("code", 0) or 0)
                    # 14 Unavailable, 4 DeadlineExceeded: try the next member, as clientv3 does
                    if code in (4, 14) or "timed out" in msg or "no leader" in msg:
                        errors.append(f"{endpoint}: {msg}")
                        break
                    raise EtcdError(msg, code)
                with self._lock:
                    self._preferred = idx
                return doc
        raise EtcdUnavailable("etcd unavailable: " + "; ".join(errors))

    # -- KV ----------------------------------------------------------------------------------

    def get(self, key: str, timeout: float | None = None) -> KV | None:
        doc = self.call("/v3/kv/range", {"key": _b64(key)}, timeout)
        kvs = doc.get("kvs") or []
        return _kv(kvs[0]) if kvs else None

    def range_prefix(self, prefix: str, timeout: float | None = None) -> tuple[list[KV], int]:
        """Every key under ``prefix`` (sorted by key) and the store revision of the read."""
        body = {"key": _b64(prefix), "range_end": _b64(prefix_end(prefix))}
        doc = self.call("/v3/kv/range", body, timeout)
        kvs = [_kv(d) for d in doc.get("kvs") or []]
        return kvs, int(doc.get("header", {}).get("revision", 0))

    def put(self, key: str, value: bytes, lease: int = 0) -> int:
        body: dict[str, Any] = {"key": _b64(key), "value": _b64(value)}
        if lease:
            body["lease"] = str(lease)
        doc = self.call("/v3/kv/put", body)
        return int(doc.get("header", {}).get("revision", 0))

    def delete(self, key: str) -> int:
        doc = self.call("/v3/kv/deleterange", {"key": _b64(key)})
        return int(doc.get("deleted", 0))

    def txn(
        self, compare: list[dict[str, Any]], success: list[dict[str, Any]],
        failure: list[dict[str, Any]] | None = None,
    ) -> tuple[bool, dict[str, Any]]:
        doc = self.call("/v3/kv/txn", {"compare": compare, "success": success,
                                       "failure": failure or []})
        return bool(doc.get("succeeded", False)), doc

    def create(self, key: str, value: bytes) -> int | None:
        """Put ``key`` only if it does not exist; the new revision, or None if it exists."""
        ok, doc = self.txn(
            [{"key": _b64(key), "target": "CREATE", "result": "EQUAL", "create_revision": "0"}],
            [{"request_put": {"key": _b64(key), "value": _b64(value)}}],
        )
        return int(doc.get("header", {}).get("revision", 0)) if ok else None

    def update(self, key: str, value: bytes, mod_revision: int | None) -> int | None:
        """Put ``key`` if it exists (and, with ``mod_revision``, is unchanged since).

        Returns the new revision, or None when the key is missing or was modified.
        """
        cmp: list[dict[str, Any]] = [
            {"key": _b64(key), "target": "CREATE", "result": "GREATER", "create_revision": "0"}]
        if mod_revision is not None:
            cmp.append({"key": _b64(key), "target": "MOD", "result": "EQUAL",
                        "mod_revision": str(mod_revision)})
        ok, doc = self.txn(cmp, [{"request_put": {"key": _b64(key), "value": _b64(value)}}])
        return int(doc.get("header", {}).get("revision", 0)) if ok else None

    def delete_if(self, key: str, mod_revision: int | None = None) -> bool:
        """Delete ``key`` if it exists (and is unchanged since ``mod_revision``)."""
        cmp: list[dict[str, Any]] = [
            {"key": _b64(key), "target": "CREATE", "result": "GREATER", "create_revision": "0"}]
        if mod_revision is not None:
            cmp.append({"key": _b64(key), "target": "MOD", "result": "EQUAL",
                        "mod_revision": str(mod_revision)})
        ok, _ = self.txn(cmp, [{"request_delete_range": {"key": _b64(key)}}])
        return ok

    def compact(self, revision: int) -> None:
        """Drop history before ``revision`` (``/v3/kv/compaction``)."""
        self.call("/v3/kv/compaction", {"revision": str(revision)})

    # -- leases and maintenance --------------------------------------------------------------

    def lease_grant(self, ttl: int) -> int:
        doc = self.call("/v3/lease/grant", {"TTL": str(ttl)})
        return int(doc["ID"])

    def status(self, endpoint: str, timeout: float = 2.0) -> dict[str, Any]:
        """``/v3/maintenance/status`` of one endpoint (no failover)."""
        single = EtcdClient.__new__(EtcdClient)
        single.__dict__.update(self.__dict__)
        single.endpoints = [endpoint]
        single._preferred = 0
        single._lock = threading.Lock()
        single._idle = {}
        try:
            return single.call("/v3/maintenance/status", {}, timeout)
        finally:
            single.close()


@dataclasses.dataclass(frozen=True)
class WatchEvent:
    type: str  # "PUT" or "DELETE"
    kv: KV
    prev: KV | None


class Watch:
    """An etcd watch over the gateway's streaming ``/v3/watch`` (newline-delimited JSON).

    ``next_batch()`` blocks until etcd sends events; ``close()`` (from any thread) ends it.
    """

    def __init__(self, client: EtcdClient, prefix: str, start_revision: int,
                 connect_timeout: float = 5.0) -> None:
        body = json.dumps({"create_request": {
            "key": _b64(prefix), "range_end": _b64(prefix_end(prefix)),
            "start_revision": str(start_revision), "prev_kv": True}}).encode()
        errors: list[str] = []
        for endpoint in client.endpoints:
            conn = client._checkout(endpoint, connect_timeout, fresh=True)
            try:
                conn.request("POST", "/v3/watch", body, {"Content-Type": "application/json"})
                resp = conn.getresponse()
                if resp.status != 200:
                    raise OSError(f"HTTP {resp.status}")
                first = json.loads(resp.readline() or b"{}").get("result") or {}
                if not first.get("created"):
                    raise OSError(f"watch not created: {first}")
            except (OSError, http.client.HTTPException, ValueError) as exc:
                conn.close()
                errors.append(f"{endpoint}: {exc}")
                continue
            if conn.sock is not None:
                conn.sock.settimeout(None)
            self.conn, self.resp = conn, resp
            return
        raise EtcdUnavailable("etcd watch unavailable: " + "; ".join(errors))

    def next_batch(self) -> list[WatchEvent] | None:
        """The next events (possibly empty for progress notifications); None when it ended."""
        try:
            line = self.resp.readline()
        except (OSError, ValueError, http.client.HTTPException):
            return None
        if not line:
            return None
        result = json.loads(line).get("result") or {}
        if result.get("canceled") or result.get("compact_revision"):
            raise EtcdError(f"etcd watch canceled (compacted at "
                            f"{result.get('compact_revision', '?')})", 11)
        return [WatchEvent(e.get("type", "PUT"), _kv(e.get("kv") or {}),
                           _kv(e["prev_kv"]) if e.get("prev_kv") else None)
                for e in result.get("events") or []]

    def close(self) -> None:
        sock = self.conn.sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self.conn.close()
