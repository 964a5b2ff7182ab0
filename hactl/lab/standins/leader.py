"""Leader election over coordination.k8s.io/v1 Leases, as client-go's ``leaderelection`` does it.

* acquire: GET the Lease; create it if missing; if another holder's record was last seen
  changing less than ``lease_duration`` ago (by *our* clock, never by comparing timestamps
  written by others) wait ``retry_period`` and try again; otherwise take it over with an update
  guarded by ``resourceVersion`` (a 409 means someone else won the race).
* renew: every ``retry_period``; if no renewal succeeds for ``renew_deadline`` the leader stops
  leading (the real components then exit, and so do the stand-ins).
"""

from __future__ import annotations

import datetime as dt
import random
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from .kubeapi import ApiError, Client, ns_path

__all__ = ["LeaderElector", "default_identity", "micro_time"]


def micro_time(t: dt.datetime | None = None) -> str:
    """metav1.MicroTime as JSON: RFC 3339 with microseconds."""
    t = t or dt.datetime.now(dt.UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def default_identity() -> str:
    """``<hostname>_<uuid>``, like kube-controller-manager and kube-scheduler."""
    return f"{socket.gethostname()}_{uuid.uuid4()}"


def log(msg: str) -> None:
    sys.stderr.write(time.strftime("I%m%d %H:%M:%S ") + msg + "\n")
    sys.stderr.flush()


class LeaderElector:
    def __init__(self, client: Client, namespace: str, name: str, identity: str, *,
                 lease_duration: float = 15.0, renew_deadline: float = 10.0,
                 retry_period: float = 2.0) -> None:
        if not lease_duration > renew_deadline > retry_period * 1.2:
            raise ValueError("need lease_duration > renew_deadline > 1.2 * retry_period")
        self.client, self.namespace, self.name = client, namespace, name
        self.identity = identity
        self.lease_duration, self.renew_deadline = lease_duration, renew_deadline
        self.retry_period = retry_period
        self.path = ns_path("leases", namespace, name, "coordination.k8s.io/v1")
        self._observed: dict[str, Any] | None = None
        self._observed_at = 0.0

    @property
    def lease_name(self) -> str:
        return f"{self.namespace}/{self.name}"

    def try_acquire_or_renew(self) -> bool:
        now = micro_time()
        try:
            lease = self.client.find(self.path)
        except (ApiError, OSError) as exc:
            log(f"error retrieving resource lock {self.lease_name}: {exc}")
            return False
        spec_new = {"holderIdentity": self.identity,
                    "leaseDurationSeconds": max(1, round(self.lease_duration)),
                    "acquireTime": now, "renewTime": now, "leaseTransitions": 0}
        if lease is None:
            try:
                self.client.create(ns_path("leases", self.namespace, None,
                                           "coordination.k8s.io/v1"),
                                   {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                                    "metadata": {"name": self.name,
                                                 "namespace": self.namespace},
                                    "spec": spec_new})
            except (ApiError, OSError) as exc:
                log(f"error initially creating leader election record: {exc}")
                return False
            self._observe(spec_new)
            return True
        spec = lease.get("spec") or {}
        record = {k: spec.get(k) for k in ("holderIdentity", "renewTime", "acquireTime",
                                           "leaseTransitions", "leaseDurationSeconds")}
        if record != self._observed:
            self._observe(record)
        holder = spec.get("holderIdentity") or ""
        duration = float(spec.get("leaseDurationSeconds") or self.lease_duration)
        if holder and holder != self.identity and (
                self._observed_at + duration > time.monotonic()):
            return False
        if holder == self.identity:
            spec_new["acquireTime"] = spec.get("acquireTime") or now
            spec_new["leaseTransitions"] = int(spec.get("leaseTransitions") or 0)
        else:
            spec_new["leaseTransitions"] = int(spec.get("leaseTransitions") or 0) + 1
        lease["spec"] = {**spec, **spec_new}
        try:
            self.client.update(self.path, lease)
        except (ApiError, OSError) as exc:
            log(f"failed to update lock {self.lease_name}: {exc}")
            return False
        self._observe(spec_new)
        return True

    def _observe(self, record: dict[str, Any]) -> None:
        self._observed = {k: record.get(k) for k in ("holderIdentity", "renewTime", "acquireTime",
                                                     "leaseTransitions", "leaseDurationSeconds")}
        self._observed_at = time.monotonic()

    def acquire(self, stop: threading.Event) -> bool:
        log(f"attempting to acquire leader lease {self.lease_name}...")
        while not stop.is_set():
            if self.try_acquire_or_renew():
                log(f"successfully acquired lease {self.lease_name}")
                return True
            stop.wait(self.retry_period * (1 + random.random() * 1.2))
        return False

    def renew_loop(self, stop: threading.Event) -> None:
        """Renew until ``stop`` or until no renewal succeeded within ``renew_deadline``."""
        while not stop.is_set():
            deadline = time.monotonic() + self.renew_deadline
            renewed = False
            while time.monotonic() < deadline and not stop.is_set():
                if self.try_acquire_or_renew():
                    renewed = True
                    break
                stop.wait(self.retry_period)
            if stop.is_set():
                return
            if not renewed:
                log(f"failed to renew lease {self.lease_name}: timed out waiting for the "
                    "condition")
                return
            stop.wait(self.retry_period)

    def run(self, on_started_leading: Callable[[threading.Event], None],
            stop: threading.Event) -> bool:
        """Acquire, run ``on_started_leading(lost)`` in a thread, renew; False when lost."""
        if not self.acquire(stop):
            return True
        lost = threading.Event()
        worker = threading.Thread(target=on_started_leading, args=(lost,), daemon=True)
        worker.start()
        self.renew_loop(stop)
        lost.set()
        return stop.is_set()


# -- component plumbing shared by kube-controller-manager and kube-scheduler ---------------------

_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(value: str) -> float:
    """Go ``time.ParseDuration`` ("15s", "1m0s", "500ms"; a bare number is seconds)."""
    import re

    value = value.strip()
    try:
        return float(value)
    except ValueError:
        pass
    parts = re.findall(r"([0-9.]+)(ns|us|µs|ms|s|m|h)", value)
    if not parts or "".join(n + u for n, u in parts) != value:
        raise ValueError(f"invalid duration {value!r}")
    return sum(float(n) * _UNITS[u] for n, u in parts)


def election_from_flags(flags: dict[str, str], client: Client, name: str) -> LeaderElector | None:
    """A LeaderElector for ``kube-system/<name>`` from the real ``--leader-elect*`` flags."""
    if flags.get("leader-elect", "true") == "false":
        return None
    return LeaderElector(
        client, flags.get("leader-elect-resource-namespace", "kube-system"),
        flags.get("leader-elect-resource-name", name), default_identity(),
        lease_duration=parse_duration(flags.get("leader-elect-lease-duration", "15s")),
        renew_deadline=parse_duration(flags.get("leader-elect-renew-deadline", "10s")),
        retry_period=parse_duration(flags.get("leader-elect-retry-period", "2s")),
    )


def _self_signed(cn: str) -> tuple[bytes, bytes]:
    """A throw-away serving pair, as the real components make when given no --tls-cert-file."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=1))
            .not_valid_after(now + dt.timedelta(days=365))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), False)
            .sign(key, hashes.SHA256()))
    return (cert.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()))


def serve_health(name: str, bind: str, port: int) -> Any:
    """HTTPS ``/healthz`` ``/livez`` ``/readyz`` on ``bind:port`` (the kubelet's probe target)."""
    import http.server
    import os
    import ssl
    import tempfile

    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?")[0].rstrip("/")
            ok = path in ("/healthz", "/livez", "/readyz")
            body = b"ok" if ok else b"404 page not found\n"
            self.send_response(200 if ok else 404)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    cert, key = _self_signed(f"{name}@{int(time.time())}")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    fd, path = tempfile.mkstemp(prefix=".health-")
    try:
        os.write(fd, cert + key)
        os.close(fd)
        ctx.load_cert_chain(path)
    finally:
        os.unlink(path)
    httpd = http.server.ThreadingHTTPServer((bind, port), Health)
    httpd.daemon_threads = True
    httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd


def run_component(name: str, default_port: int, argv: list[str],
                  work: Callable[[Client, dict[str, str], threading.Event], None]) -> int:
    """main() of kube-controller-manager / kube-scheduler: flags, health, election, work.

    ``work(client, flags, lost)`` runs while this instance leads (until ``lost`` is set).
    Losing the lease exits with status 1, as the real components do.
    """
    import signal

    from .kubeapi import parse_flags

    flags = parse_flags(argv)
    if flags.get("version") == "true":
        from .kube_apiserver import kubernetes_version

        print(f"Kubernetes {kubernetes_version()}")
        return 0
    conf = flags.get("kubeconfig")
    if not conf:
        sys.stderr.write("E --kubeconfig is required by the hactl lab stand-in\n")
        return 1
    client = Client.from_kubeconfig(conf, timeout=5.0)
    port = int(flags.get("secure-port", str(default_port)))
    if port:
        try:
            serve_health(name, flags.get("bind-address", "0.0.0.0"), port)
        except OSError as exc:
            sys.stderr.write(f"E failed to create listener: {exc}\n")
            return 1
    stop = threading.Event()

    def _term(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _term)
    signal.signal(signal.SIGINT, _term)
    elector = election_from_flags(flags, client, name)
    if elector is None:
        work(client, flags, stop)
        return 0
    log(f"{name}: identity {elector.identity}")
    if elector.run(lambda lost: work(client, flags, lost), stop):
        return 0
    log("leaderelection lost")
    return 1
