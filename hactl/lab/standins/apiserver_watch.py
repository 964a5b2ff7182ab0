"""``?watch=true`` for the stand-in kube-apiserver, on a real etcd watch.

Like the real server: with ``resourceVersion`` unset or "0" the stream starts with an ADDED
event per existing object, then follows etcd from the list's revision; with a resourceVersion N
it replays every change after N (etcd history), then follows. With a selector, an object that
stops matching is sent as DELETED and one that starts matching as ADDED. Events are JSON
documents, one per HTTP chunk; the stream ends after ``timeoutSeconds`` (default 1800), when
etcd fails, or when the client goes away.
"""

from __future__ import annotations

import json
import queue
import select
import threading
import time
from collections.abc import Callable
from typing import Any

from . import apiserver_resources as res
from .apiserver_store import ApiError, Store
from .etcd_kv import EtcdError, Watch, WatchEvent

__all__ = ["stream_watch"]


def _matches(obj: dict[str, Any], query: dict[str, str]) -> bool:
    if query.get("labelSelector") and not res.match_labels(
            query["labelSelector"], obj["metadata"].get("labels") or {}):
        return False
    return not (query.get("fieldSelector") and not res.match_fields(query["fieldSelector"], obj))


def _client_gone(sock: Any) -> bool:
    """The client closed its side (a watch client never sends anything after its request)."""
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)


def stream_watch(store: Store, r: res.Resource, ns: str | None, query: dict[str, str],
                 as_table: bool, begin: Callable[[], None], write: Callable[[bytes], None],
                 sock: Any) -> None:
    """Stream events through ``write`` (after ``begin()`` sent the response headers)."""
    deadline = time.monotonic() + float(query.get("timeoutSeconds") or 1800)

    def emit(kind: str, obj: dict[str, Any]) -> None:
        body = res.table(r, [obj], obj["metadata"]["resourceVersion"]) if as_table else obj
        write(json.dumps({"type": kind, "object": body}).encode() + b"\n")

    since = query.get("resourceVersion") or "0"
    try:
        since_rev = int(since)
    except ValueError as exc:
        raise ApiError(400, f"invalid resourceVersion {since!r}") from exc
    if since_rev == 0:
        items, rev = store.list(r, ns)
        initial = [o for o in items if _matches(o, query)]
        start = int(rev) + 1
    else:
        initial, start = [], since_rev + 1
    try:
        watch = Watch(store.etcd, r.key(ns, None), start)
    except EtcdError as exc:
        raise ApiError(500, str(exc)) from exc
    events: queue.Queue[list[WatchEvent] | Exception | None] = queue.Queue()

    def reader() -> None:
        try:
            while True:
                batch = watch.next_batch()
                events.put(batch)
                if batch is None:
                    return
        except (EtcdError, ValueError) as exc:
            events.put(exc)

    threading.Thread(target=reader, daemon=True).start()
    try:
        begin()
        for obj in initial:
            emit("ADDED", obj)
        while time.monotonic() < deadline:
            try:
                batch = events.get(timeout=1.0)
            except queue.Empty:
                if _client_gone(sock):
                    return
                continue
            if batch is None:
                return
            if isinstance(batch, Exception):
                if isinstance(batch, EtcdError) and batch.code == 11:
                    emit_error(write, 410, "Expired", f"too old resource version: {since}")
                return
            for ev in batch:
                _dispatch(store, r, ev, query, emit)
    finally:
        watch.close()


def _dispatch(store: Store, r: res.Resource, ev: WatchEvent, query: dict[str, str],
              emit: Callable[[str, dict[str, Any]], None]) -> None:
    prev = store.decode(r, ev.prev) if ev.prev is not None else None
    if ev.type == "DELETE":
        if prev is not None and _matches(prev, query):
            prev["metadata"]["resourceVersion"] = str(ev.kv.mod_revision)
            emit("DELETED", prev)
        return
    obj = store.decode(r, ev.kv)
    now_in = _matches(obj, query)
    was_in = prev is not None and _matches(prev, query)
    if now_in and was_in:
        emit("MODIFIED", obj)
    elif now_in:
        emit("ADDED", obj)
    elif was_in:
        emit("DELETED", obj)


def emit_error(write: Callable[[bytes], None], code: int, reason: str, message: str) -> None:
    status = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
              "message": message, "reason": reason, "code": code}
    write(json.dumps({"type": "ERROR", "object": status}).encode() + b"\n")
