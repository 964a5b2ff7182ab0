"""haproxy.cfg: every rendered variant passes `haproxy -c`; a live HAProxy on loopback health-checks
real TLS backends through the rendered `GET /readyz` check and forwards TLS untouched."""

from __future__ import annotations

import contextlib
import http.server
import os
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from render_helpers import free_port, free_port_on_all, make_cluster

from hactl.render import pki
from hactl.render.haproxy import BACKEND, render_haproxy_cfg
from hactl.render.haproxy import haproxy_config_file as render_haproxy_config_file
from hactl.spec.models import Cluster

pytestmark = pytest.mark.skipif(shutil.which("haproxy") is None, reason="needs haproxy")


def haproxy_check(text: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(text)
    return subprocess.run(
        ["haproxy", "-c", "-f", str(cfg)], capture_output=True, text=True, check=False
    )


VARIANTS = [
    pytest.param(
        dict(masters=3, healthCheck="https-readyz", balance="roundrobin"), id="3-readyz-rr"
    ),
    pytest.param(
        dict(masters=5, healthCheck="https-readyz", balance="leastconn"), id="5-readyz-lc"
    ),
    pytest.param(dict(masters=3, healthCheck="tcp", balance="source"), id="3-tcp-source"),
    pytest.param(dict(masters=5, healthCheck="tcp", balance="first"), id="5-tcp-first"),
    pytest.param(dict(masters=3, vip="198.18.0.100", frontendPort=8443), id="vip-8443"),
]


@pytest.mark.parametrize("changes", VARIANTS)
def test_haproxy_accepts_every_variant(changes: dict[str, object], tmp_path: Path) -> None:
    masters = changes.pop("masters")
    assert isinstance(masters, int)
    cluster = make_cluster(masters=masters, **changes)
    text = render_haproxy_cfg(cluster)
    result = haproxy_check(text, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Configuration file is valid" in result.stdout
    servers = [line.split()[1:3] for line in text.splitlines() if line.startswith("    server ")]
    assert servers == [[m.name, f"{m.address}:6443"] for m in cluster.masters]
    assert f"    balance {cluster.load_balancer.balance}\n" in text
    assert text == render_haproxy_cfg(cluster)  # deterministic


@pytest.mark.parametrize("base", ["seed", "lab"])
def test_example_specs(base: str, tmp_path: Path) -> None:
    text = render_haproxy_cfg(make_cluster(base))
    assert haproxy_check(text, tmp_path).returncode == 0
    assert "    bind :6443\n" in text


def test_readyz_check_and_timeouts() -> None:
    text = render_haproxy_cfg(make_cluster())
    for line in [
        "    mode tcp",
        "    option httpchk",
        "    http-check send meth GET uri /readyz",
        "    http-check expect status 200",
        "    server master01 198.18.0.11:6443 check check-ssl verify none",
        "    stats socket /run/haproxy/admin.sock mode 600 level admin expose-fd listeners",
        "    default-server inter 2s fastinter 1s downinter 5s fall 2 rise 2 on-marked-down shutdown-sessions",
    ]:
        assert line in text.splitlines()
    assert "tcp-check" not in text
    for name in ("client", "server"):
        value = next(x for x in text.splitlines() if x.startswith(f"    timeout {name} "))
        assert value.endswith("s") and int(value.split()[-1][:-1]) >= 35


def test_tcp_check_only_when_asked() -> None:
    text = render_haproxy_cfg(make_cluster(healthCheck="tcp"))
    assert "    option tcp-check" in text
    assert "httpchk" not in text and "check-ssl" not in text


def test_ipv6_and_vip_addresses(tmp_path: Path) -> None:
    data = make_cluster(vip="fd00::100").model_dump(by_alias=True, mode="json")
    data["masters"] = [{"name": "master01", "address": "fd00::11"}]
    cluster = Cluster.model_validate(data)
    text = render_haproxy_cfg(cluster)
    assert "    bind [fd00::100]:6443" in text
    assert "    server master01 [fd00::11]:6443 check" in text
    assert haproxy_check(text, tmp_path).returncode == 0


# -- a live HAProxy on loopback ------------------------------------------------------------------


class _ReadyzHandler(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        code = self.server.readyz_status if self.path == "/readyz" else 404  # type: ignore[attr-defined]
        body = b"ok" if code == 200 else b"[-]etcd failed"
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


class _QuietServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # health checks hang up early; that is not an error here


@contextlib.contextmanager
def tls_apiserver(
    address: str, port: int, status: int, cert: pki.CertKey, tmp: Path
) -> Iterator[http.server.ThreadingHTTPServer]:
    """A tiny HTTPS server standing in for one kube-apiserver's /readyz (``readyz_status``
    can be changed while it runs)."""
    crt, key = pki.write_cert_key(str(tmp), f"apiserver-{address}", cert)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(crt, key)
    server = _QuietServer((address, port), _ReadyzHandler)
    server.readyz_status = status  # type: ignore[attr-defined]
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def servers_state(sock_path: Path) -> dict[str, int]:
    """``show servers state`` over the admin socket → {server name: srv_op_state} (2 = UP)."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(5)
        sock.connect(str(sock_path))
        sock.sendall(f"show servers state {BACKEND}\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    lines = [x for x in data.decode().splitlines()[1:] if x and not x.startswith("#")]
    return {x.split()[3]: int(x.split()[5]) for x in lines}


@dataclass
class LiveLB:
    sock_path: Path
    front: int
    apiservers: dict[str, http.server.ThreadingHTTPServer]
    ca: pki.CertKey
    cert: pki.CertKey

    def wait_state(self, expected: dict[str, int], timeout: float = 20) -> float:
        """Seconds until ``show servers state`` equals ``expected`` (fails after ``timeout``)."""
        started = time.monotonic()
        state: dict[str, int] = {}
        while time.monotonic() < started + timeout:
            if self.sock_path.exists():
                state = servers_state(self.sock_path)
                if state == expected:
                    return time.monotonic() - started
            time.sleep(0.1)
        raise AssertionError(f"backend state {state} != {expected}")

    def connect(self) -> ssl.SSLSocket:
        """A TLS connection through the frontend, verified against the API servers' CA."""
        client = ssl.create_default_context(cadata=self.ca.cert_pem().decode())
        client.check_hostname = False
        raw = socket.create_connection(("127.0.0.1", self.front), timeout=10)
        return client.wrap_socket(raw)


@contextlib.contextmanager
def live_haproxy(tmp_path: Path, health: str) -> Iterator[LiveLB]:
    """HAProxy from the rendered config in front of master01 (ready: 200), master02 (up but
    not ready: 500) and master03 (nothing listening), all on loopback."""
    addrs = ["127.0.0.11", "127.0.0.12", "127.0.0.13"]
    api_port = free_port_on_all(addrs)
    front = free_port()
    data = make_cluster(healthCheck=health, frontendPort=front).model_dump(
        by_alias=True, mode="json"
    )
    data["masters"] = [{"name": f"master0{i}", "address": a} for i, a in enumerate(addrs, 1)]
    cluster = Cluster.model_validate(data)
    sock_path = tmp_path / "admin.sock"
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(render_haproxy_cfg(cluster, api_port=api_port, admin_socket=str(sock_path)))
    ca = pki.make_ca("kubernetes")
    cert = pki.issue(ca, "kube-apiserver", usage="server", ip_addresses=addrs[:2])
    with contextlib.ExitStack() as stack:
        servers = {
            "master01": stack.enter_context(tls_apiserver(addrs[0], api_port, 200, cert, tmp_path)),
            "master02": stack.enter_context(tls_apiserver(addrs[1], api_port, 500, cert, tmp_path)),
        }
        proc = subprocess.Popen(
            ["haproxy", "-db", "-f", str(cfg)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            yield LiveLB(sock_path, front, servers, ca, cert)
        finally:
            proc.terminate()  # by PID, the one we started
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


needs_root = pytest.mark.skipif(
    os.geteuid() != 0, reason="the rendered global section chroots and drops to user haproxy"
)


@needs_root
@pytest.mark.parametrize(
    ("health", "expected"),
    [
        ("https-readyz", {"master01": 2, "master02": 0, "master03": 0}),
        ("tcp", {"master01": 2, "master02": 2, "master03": 0}),
    ],
)
def test_live_haproxy_health_checks(health: str, expected: dict[str, int], tmp_path: Path) -> None:
    """https-readyz keeps only master01; tcp is fooled by master02's open port."""
    with live_haproxy(tmp_path, health) as lb:
        lb.wait_state(expected)
        if health == "https-readyz":
            # TLS passes through untouched: the client sees the API server's own certificate.
            with lb.connect() as tls:
                tls.sendall(b"GET /readyz HTTP/1.0\r\n\r\n")
                assert tls.recv(100).startswith(b"HTTP/1.0 200")
                peer = tls.getpeercert(binary_form=True)
                assert peer == ssl.PEM_cert_to_DER_cert(lb.cert.cert_pem().decode())


@needs_root
def test_live_failover_is_fast_and_cuts_sessions(tmp_path: Path) -> None:
    """master01 stops being ready while a client holds a connection to it: HAProxy marks it down
    within a few seconds (inter 2s, fastinter 1s, fall 2) and closes that session
    (on-marked-down shutdown-sessions), so the client reconnects instead of hanging."""
    with live_haproxy(tmp_path, "https-readyz") as lb:
        lb.wait_state({"master01": 2, "master02": 0, "master03": 0})
        with lb.connect() as held:  # an idle stream to master01, like a watch
            lb.apiservers["master01"].readyz_status = 500  # type: ignore[attr-defined]
            took = lb.wait_state({"master01": 0, "master02": 0, "master03": 0})
            assert took < 8, f"marked down after {took:.1f}s"  # typically 2-4 s
            held.settimeout(5)  # a timeout here (TimeoutError) fails the test
            with contextlib.suppress(ConnectionResetError, ssl.SSLError):
                assert held.recv(100) == b""  # closed by HAProxy
        lb.apiservers["master02"].readyz_status = 200  # another master recovers
        took = lb.wait_state({"master01": 0, "master02": 2, "master03": 0})
        assert took < 10, f"back up after {took:.1f}s"


def test_config_file() -> None:
    cluster = make_cluster()
    file = render_haproxy_config_file(cluster)
    assert (file.path, file.mode, file.secret) == ("/etc/haproxy/haproxy.cfg", 0o644, False)
    assert file.reveal() == render_haproxy_cfg(cluster)
