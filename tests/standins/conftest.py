"""Fixtures for the control-plane stand-ins: a real TLS etcd on loopback, a real PKI, and the
stand-in kube-apiserver started under Debian's /usr/bin/python3 (the lab nodes' runtime).

Everything listens on 127.0.0.1 with random free ports and is torn down by PID.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import ipaddress
import os
import signal
import socket
import ssl
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from hactl.lab.standins.kubeapi import Client

REPO = Path(__file__).resolve().parents[2]
PY = "/usr/bin/python3"
KUBECTL = "/usr/bin/kubectl"


# -- PKI ---------------------------------------------------------------------------------------


@dataclasses.dataclass
class Pair:
    cert: Path
    key: Path


def _write_pair(d: Path, name: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> Pair:
    c, k = d / f"{name}.crt", d / f"{name}.key"
    c.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    k.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                    serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()))
    k.chmod(0o600)
    return Pair(c, k)


class CA:
    def __init__(self, d: Path, name: str, cn: str) -> None:
        self.dir = d
        self.key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
        self.cert = (
            x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(True, False, True, False, False, True, True, False, False),
                           critical=True)
            .sign(self.key, hashes.SHA256())
        )
        self.pair = _write_pair(d, name, self.cert, self.key)

    def issue(self, name: str, cn: str, orgs: tuple[str, ...] = (), *, server: bool = False,
              client: bool = True, sans: tuple[str, ...] = ()) -> Pair:
        key = ec.generate_private_key(ec.SECP256R1())
        attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in orgs]
        attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, cn))
        now = dt.datetime.now(dt.UTC)
        usages = ([ExtendedKeyUsageOID.SERVER_AUTH] if server else []) + (
            [ExtendedKeyUsageOID.CLIENT_AUTH] if client else [])
        b = (
            x509.CertificateBuilder().subject_name(x509.Name(attrs))
            .issuer_name(self.cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        )
        if sans:
            names: list[x509.GeneralName] = []
            for s in sans:
                try:
                    names.append(x509.IPAddress(ipaddress.ip_address(s)))
                except ValueError:
                    names.append(x509.DNSName(s))
            b = b.add_extension(x509.SubjectAlternativeName(names), critical=False)
        return _write_pair(self.dir, name, b.sign(self.key, hashes.SHA256()), key)


@dataclasses.dataclass
class PKI:
    dir: Path
    ca: CA
    etcd_ca: CA
    etcd_server: Pair
    etcd_client: Pair
    apiserver: Pair
    admin: Pair
    kcm: Pair
    scheduler: Pair
    node: Pair
    jane: Pair
    sa_key: Path

    def kubeconfig(self, name: str, server: str, pair: Pair | None = None,
                   token: str | None = None) -> Path:
        user: dict[str, str] = {}
        if pair is not None:
            user["client-certificate-data"] = base64.b64encode(pair.cert.read_bytes()).decode()
            user["client-key-data"] = base64.b64encode(pair.key.read_bytes()).decode()
        if token is not None:
            user["token"] = token
        doc = {
            "apiVersion": "v1", "kind": "Config", "current-context": "ctx",
            "clusters": [{"name": "c", "cluster": {
                "server": server,
                "certificate-authority-data": base64.b64encode(
                    self.ca.pair.cert.read_bytes()).decode()}}],
            "users": [{"name": "u", "user": user}],
            "contexts": [{"name": "ctx", "context": {"cluster": "c", "user": "u"}}],
        }
        path = self.dir / f"{name}.conf"
        path.write_text(yaml.safe_dump(doc))
        path.chmod(0o600)
        return path


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    d = tmp_path_factory.mktemp("pki")
    ca = CA(d, "ca", "kubernetes")
    etcd_ca = CA(d, "etcd-ca", "etcd-ca")
    sa = ec.generate_private_key(ec.SECP256R1())
    sa_key = d / "sa.key"
    sa_key.write_bytes(sa.private_bytes(serialization.Encoding.PEM,
                                        serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption()))
    return PKI(
        dir=d, ca=ca, etcd_ca=etcd_ca,
        etcd_server=etcd_ca.issue("etcd-server", "localhost", server=True,
                                  sans=("localhost", "127.0.0.1")),
        etcd_client=etcd_ca.issue("apiserver-etcd-client", "kube-apiserver-etcd-client"),
        apiserver=ca.issue("apiserver", "kube-apiserver", server=True, client=False,
                           sans=("localhost", "127.0.0.1", "kubernetes")),
        admin=ca.issue("admin", "kubernetes-admin", ("system:masters",)),
        kcm=ca.issue("kcm", "system:kube-controller-manager"),
        scheduler=ca.issue("scheduler", "system:kube-scheduler"),
        node=ca.issue("node", "system:node:worker01", ("system:nodes",)),
        jane=ca.issue("jane", "jane", ("developers",)),
        sa_key=sa_key,
    )


# -- processes ---------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stop_pid(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, sig)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


class EtcdMember:
    def __init__(self, pki: PKI, d: Path, name: str, client: int, peer: int, cluster: str) -> None:
        self.name, self.client_port = name, client
        self.endpoint = f"https://127.0.0.1:{client}"
        self.argv = [
            "etcd", "--name", name, "--data-dir", str(d / name),
            "--listen-client-urls", self.endpoint, "--advertise-client-urls", self.endpoint,
            "--listen-peer-urls", f"http://127.0.0.1:{peer}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
            "--initial-cluster", cluster, "--initial-cluster-state", "new",
            "--cert-file", str(pki.etcd_server.cert), "--key-file", str(pki.etcd_server.key),
            "--trusted-ca-file", str(pki.etcd_ca.pair.cert), "--client-cert-auth",
            "--heartbeat-interval", "50", "--election-timeout", "500",
        ]
        self.log = d / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT)

    def stop(self) -> None:
        if self.proc is not None:
            stop_pid(self.proc, signal.SIGKILL)
            self.proc = None


class Etcd:
    def __init__(self, pki: PKI, d: Path, n: int) -> None:
        ports = [(free_port(), free_port()) for _ in range(n)]
        cluster = ",".join(f"e{i}=http://127.0.0.1:{p}" for i, (_, p) in enumerate(ports))
        self.pki = pki
        self.members = [EtcdMember(pki, d, f"e{i}", c, p, cluster) for i, (c, p) in enumerate(ports)]

    @property
    def endpoints(self) -> str:
        return ",".join(m.endpoint for m in self.members)

    def healthy(self) -> bool:
        ctx = ssl.create_default_context(cafile=str(self.pki.etcd_ca.pair.cert))
        ctx.load_cert_chain(str(self.pki.etcd_client.cert), str(self.pki.etcd_client.key))
        try:
            req = urllib.request.Request(self.members[0].endpoint + "/v3/kv/range",
                                         data=b'{"key":"aGVhbHRo"}', method="POST")
            with urllib.request.urlopen(req, context=ctx, timeout=1) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    def client_argv(self) -> list[str]:
        return ["--etcd-servers", self.endpoints, "--etcd-cafile", str(self.pki.etcd_ca.pair.cert),
                "--etcd-certfile", str(self.pki.etcd_client.cert),
                "--etcd-keyfile", str(self.pki.etcd_client.key)]


def _etcd(pki: PKI, d: Path, n: int) -> Iterator[Etcd]:
    etcd = Etcd(pki, d, n)
    try:
        for m in etcd.members:
            m.start()
        wait_for(etcd.healthy, 60, "etcd")
        yield etcd
    finally:
        for m in etcd.members:
            m.stop()


@pytest.fixture
def etcd1(pki: PKI, tmp_path: Path) -> Iterator[Etcd]:
    yield from _etcd(pki, tmp_path, 1)


@pytest.fixture
def etcd3(pki: PKI, tmp_path: Path) -> Iterator[Etcd]:
    yield from _etcd(pki, tmp_path, 3)


class Apiserver:
    def __init__(self, pki: PKI, etcd: Etcd, d: Path, extra: tuple[str, ...] = ()) -> None:
        self.pki, self.port = pki, free_port()
        self.url = f"https://127.0.0.1:{self.port}"
        self.argv = [
            PY, "-m", "hactl.lab.standins.kube_apiserver",
            "--advertise-address=127.0.0.1", "--bind-address=127.0.0.1",
            f"--secure-port={self.port}", "--allow-privileged=true",
            "--authorization-mode=Node,RBAC", "--enable-bootstrap-token-auth=true",
            f"--client-ca-file={pki.ca.pair.cert}", f"--tls-cert-file={pki.apiserver.cert}",
            f"--tls-private-key-file={pki.apiserver.key}",
            f"--service-account-key-file={pki.sa_key}", "--service-cluster-ip-range=10.96.0.0/12",
            "--kubelet-preferred-address-types=InternalIP,ExternalIP,Hostname",
            *etcd.client_argv(), *extra,
        ]
        self.log = d / f"apiserver-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        # one kubeconfig per server: the PKI (and its folder) is shared by the whole session
        self.admin_conf = pki.kubeconfig(f"admin-{self.port}", self.url, pki.admin)

    def start(self) -> None:
        env = dict(os.environ, PYTHONPATH=str(REPO), HACTL_LAB_K8S_VERSION="v1.30.4")
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT, env=env,
                                         cwd="/")
        wait_for(self.serving, 60, f"the stand-in apiserver on port {self.port} ({self.log})")

    def serving(self) -> bool:
        """This process listens on its port (its own log line says so, written after listen())
        and answers /livez. Another process that took the port does not count; a server that
        exited (e.g. the port was taken) fails at once with its log."""
        proc = self.proc
        assert proc is not None
        if proc.poll() is not None:
            raise AssertionError(f"the stand-in apiserver on port {self.port} exited with "
                                 f"{proc.returncode}: {self.log.read_text()[-2000:]}")
        listening = f"{proc.pid} Serving securely on 127.0.0.1:{self.port} "
        return listening in self.log.read_text() and self.get("/livez")[0] != 0

    def stop(self) -> None:
        if self.proc is not None:
            stop_pid(self.proc)
            self.proc = None

    def get(self, path: str, timeout: float = 5) -> tuple[int, str]:
        ctx = ssl.create_default_context(cafile=str(self.pki.ca.pair.cert))
        try:
            with urllib.request.urlopen(self.url + path, context=ctx, timeout=timeout) as r:
                return int(r.status), r.read().decode()
        except urllib.error.HTTPError as exc:
            return int(exc.code), exc.read().decode()
        except OSError:
            return 0, ""

    def kubectl(self, *args: str, conf: Path | None = None,
                check: bool = True) -> subprocess.CompletedProcess[str]:
        argv = [KUBECTL, "--kubeconfig", str(conf or self.admin_conf), "--request-timeout=20s",
                *args]
        env = dict(os.environ, HOME=str(self.pki.dir))
        res = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env)
        if check and res.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {res.stderr}")
        return res


def _apiserver(pki: PKI, etcd: Etcd, d: Path) -> Iterator[Apiserver]:
    api = Apiserver(pki, etcd, d)
    try:
        api.start()
        wait_for(lambda: api.get("/readyz")[0] == 200, 60, "apiserver /readyz")
        yield api
    finally:
        api.stop()


@pytest.fixture
def apiserver(pki: PKI, etcd1: Etcd, tmp_path: Path) -> Iterator[Apiserver]:
    yield from _apiserver(pki, etcd1, tmp_path)


@pytest.fixture
def apiserver3(pki: PKI, etcd3: Etcd, tmp_path: Path) -> Iterator[Apiserver]:
    yield from _apiserver(pki, etcd3, tmp_path)


class Component:
    """A stand-in kube-controller-manager or kube-scheduler under /usr/bin/python3."""

    def __init__(self, module: str, conf: Path, d: Path, *flags: str) -> None:
        self.argv = [PY, "-m", f"hactl.lab.standins.{module}", f"--kubeconfig={conf}",
                     "--secure-port=0", "--leader-elect=true", *flags]
        self.log = d / f"{module}-{len(list(d.glob(module + '-*.log')))}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Component:
        env = dict(os.environ, PYTHONPATH=str(REPO))
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT,
                                         env=env, cwd="/")
        return self

    @property
    def identity(self) -> str:
        for line in self.log.read_text().splitlines():
            if ": identity " in line:
                return line.rsplit(" ", 1)[1]
        return ""

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None:
            stop_pid(self.proc, sig)


@pytest.fixture
def components(tmp_path: Path) -> Iterator[Callable[..., Component]]:
    started: list[Component] = []

    def start(module: str, conf: Path, *flags: str) -> Component:
        comp = Component(module, conf, tmp_path, *flags).start()
        started.append(comp)
        return comp

    try:
        yield start
    finally:
        for comp in started:
            comp.stop(signal.SIGKILL)


@pytest.fixture
def admin(apiserver: Apiserver) -> Iterator[Client]:
    """A client of ``apiserver`` with its admin kubeconfig (closed after the test)."""
    client = Client.from_kubeconfig(str(apiserver.admin_conf))
    try:
        yield client
    finally:
        client.close()
