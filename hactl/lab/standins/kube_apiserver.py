"""Stand-in for ``kube-apiserver`` (run as ``python3 -m hactl.lab.standins.kube_apiserver``).

Accepts the flags kubeadm writes into /etc/kubernetes/manifests/kube-apiserver.yaml, serves
HTTPS with the given certificate, and keeps every object in the real etcd named by
``--etcd-servers``. The contract and every deviation from the real server are in
docs/standins/apiserver.md.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import socket
import ssl
import sys
import threading
import time
from typing import Any

from .apiserver_http import Server, TLSServer
from .apiserver_resources import ETCD_PREFIX, by_path
from .apiserver_store import ApiError
from .etcd_kv import EtcdClient, EtcdError
from .kubeapi import parse_flags
from .leader import parse_duration

DEFAULT_VERSION = "v1.30.4"
VERSIONS_FILE = "/etc/hactl-lab/versions"
def kubernetes_version() -> str:
    """The version the lab installed: $HACTL_LAB_K8S_VERSION, /etc/hactl-lab/versions, default."""
    env = os.environ.get("HACTL_LAB_K8S_VERSION")
    if env:
        return env if env.startswith("v") else "v" + env
    path = os.path.join(os.environ.get("HACTL_LAB_ROOT", "/"), VERSIONS_FILE.lstrip("/"))
    try:
        import yaml

        with open(path) as handle:
            doc = yaml.safe_load(handle) or {}
        value = str(doc.get("kubernetes") or DEFAULT_VERSION) if isinstance(doc, dict) else ""
    except (OSError, ValueError, ImportError):
        value = DEFAULT_VERSION
    value = value or DEFAULT_VERSION
    return value if value.startswith("v") else "v" + value


def log(msg: str) -> None:
    sys.stderr.write(time.strftime("I%m%d %H:%M:%S ") + f"{os.getpid()} {msg}\n")
    sys.stderr.flush()


def _identity_lease(app: Server, holder: str, renew: bool) -> None:
    """The apiserver identity Lease (kube-system/apiserver-<hash>) the real server keeps."""
    r = by_path("coordination.k8s.io", "v1", "leases")
    assert r is not None
    name = "apiserver-" + hashlib.sha256(holder.encode()).hexdigest()[:26]
    now = time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime())
    spec = {"holderIdentity": holder, "leaseDurationSeconds": 3600, "renewTime": now}
    old = app.store.find(r, "kube-system", name)
    if old is None:
        app.store.create(r, "kube-system", {"metadata": {
            "name": name, "labels": {"apiserver.kubernetes.io/identity": "kube-apiserver",
                                     "kubernetes.io/hostname": socket.gethostname()}},
            "spec": {**spec, "acquireTime": now}})
    elif renew:
        old["spec"] = {**old.get("spec", {}), **spec}
        app.store.update(r, "kube-system", name, old)


def _housekeeping(app: Server, holder: str, stop: threading.Event) -> None:
    """Create the system namespaces once etcd answers; renew the identity lease every 10 s."""
    created = False
    while not stop.is_set():
        try:
            if not created:
                app.store.ensure_namespaces()
                created = True
                log("created system namespaces")
            _identity_lease(app, holder, renew=True)
        except (ApiError, EtcdError, OSError) as exc:
            log(f"housekeeping: {exc}")
        stop.wait(10 if created else 1)


def _compactor(app: Server, interval: float, stop: threading.Event) -> None:
    """Compact etcd every ``interval`` to the revision seen one interval earlier, like the real
    server's ``--etcd-compaction-interval`` (watches older than that get 410 Gone)."""
    previous = 0
    while not stop.wait(interval):
        try:
            _, current = app.etcd.range_prefix("compact_rev_key")
            if previous:
                app.etcd.compact(previous)
                log(f"compacted etcd at revision {previous}")
            previous = current
        except EtcdError as exc:
            if "compacted" not in str(exc):
                log(f"compaction: {exc}")
            previous = 0


DRAIN_TIMEOUT = 4.0
"""Seconds the requests in flight (not watches) may take to finish after SIGTERM; the kubelet
stand-in kills the pod 5 s after SIGTERM (its grace period)."""


def main(argv: list[str] | None = None) -> int:
    flags = parse_flags(sys.argv[1:] if argv is None else argv)
    version = kubernetes_version()
    if flags.get("version") == "true":
        print(f"Kubernetes {version}")
        return 0
    missing = [f for f in ("etcd-servers", "tls-cert-file", "tls-private-key-file")
               if not flags.get(f)]
    if missing:
        sys.stderr.write(f"Error: missing required flags: {', '.join('--' + f for f in missing)}\n")
        return 1
    etcd = EtcdClient(flags["etcd-servers"].split(","), cafile=flags.get("etcd-cafile"),
                      certfile=flags.get("etcd-certfile"), keyfile=flags.get("etcd-keyfile"),
                      timeout=float(os.environ.get("HACTL_LAB_ETCD_TIMEOUT", "5")))
    port = int(flags.get("secure-port", "6443"))
    bind = flags.get("bind-address", "0.0.0.0")
    advertise = flags.get("advertise-address") or bind
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(flags["tls-cert-file"], flags["tls-private-key-file"])
    if flags.get("client-ca-file"):
        ctx.load_verify_locations(flags["client-ca-file"])
        ctx.verify_mode = ssl.CERT_OPTIONAL
    ETCD_PREFIX[0] = "/" + flags.get("etcd-prefix", "/registry").strip("/")
    app = Server(etcd, version, advertise, port)
    app.anonymous_auth = flags.get("anonymous-auth", "true") != "false"
    app.always_allow = "AlwaysAllow" in flags.get("authorization-mode", "").split(",")
    app.bootstrap_auth = flags.get("enable-bootstrap-token-auth", "false") == "true"
    app.health_timeout = parse_duration(flags.get("etcd-healthcheck-timeout", "2s"))
    app.ready_timeout = parse_duration(flags.get("etcd-readycheck-timeout", "2s"))
    try:
        httpd = TLSServer((bind, port), ctx, app)
    except OSError as exc:
        sys.stderr.write(f"E failed to listen on {bind}:{port}: {exc}\n")
        return 1
    stop = threading.Event()
    holder = f"apiserver-{socket.gethostname()}-{advertise}-{port}"
    threading.Thread(target=_housekeeping, args=(app, holder, stop), daemon=True).start()
    compaction = parse_duration(flags.get("etcd-compaction-interval", "5m"))
    if compaction > 0:
        threading.Thread(target=_compactor, args=(app, compaction, stop), daemon=True).start()

    def _term(signum: int, frame: Any) -> None:
        # The real server (Go's http.Server.Shutdown, with kubeadm's shutdown-delay-duration of
        # 0) closes its listener at once: a connection that arrives after SIGTERM is refused,
        # and HAProxy's next try goes to another master. Left listening until the accept loop
        # notices (its poll interval), it would be accepted by the kernel and reset at the
        # close: the client would see a TLS EOF through the load balancer.
        stop.set()
        with contextlib.suppress(OSError):
            httpd.socket.shutdown(socket.SHUT_RDWR)
        threading.Thread(target=httpd.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, _term)
    signal.signal(signal.SIGINT, _term)
    log(f"Serving securely on {bind}:{port} (version {version}, etcd {flags['etcd-servers']})")
    try:
        httpd.serve_forever(poll_interval=0.2)
    finally:
        httpd.server_close()  # no new connections: the load balancer's next try goes elsewhere
        left = httpd.drain(DRAIN_TIMEOUT)
        if left:
            log(f"shutting down with {left} request(s) still in flight")
        etcd.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
