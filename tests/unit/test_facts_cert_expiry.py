"""Certificates the probe reads: the etcd members' /etc/etcd/pki/*.crt dated with the host's
``openssl x509 -enddate`` (etcd.files); the kubelet's client certificate and the API server
certificate's subjectAltName sent back by k8s.certs's awk (certificate blocks only) and read
here; rotateCertificates from the kubelet's config (k8s.files). The real scripts on
certificates made here with openssl, and the tolerant parsers."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hactl.facts import etcd, kubernetes
from hactl.facts.base import SKIPPED
from hactl.facts.model import CertDates, ServingNames
from hactl.hostlayout import K8S_DIR, KUBELET_CLIENT_CERT, KUBELET_DIR


def make_cert(path: Path, days: int) -> datetime:
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-keyout", str(path.with_suffix(".key")), "-out", str(path), "-days", str(days),
         "-subj", f"/CN={path.stem}"],
        check=True, capture_output=True,
    )  # fmt: skip
    out = subprocess.run(["openssl", "x509", "-in", str(path), "-noout", "-enddate"],
                         check=True, capture_output=True, text=True).stdout
    return datetime.strptime(out.strip().partition("=")[2], "%b %d %H:%M:%S %Y GMT").replace(tzinfo=UTC)


def test_etcd_certificates_are_dated_by_the_real_script(tmp_path: Path) -> None:
    pki = tmp_path / "pki"
    pki.mkdir()
    ends = {name: make_cert(pki / f"{name}.crt", days) for name, days in (("ca", 3650), ("server", 2))}
    (pki / "broken.crt").write_text("not a certificate\n")
    fact = etcd.EtcdFiles(data_dir=str(tmp_path / "data"))
    script = fact.script().replace(etcd.PKI_DIR, str(pki))
    out = subprocess.run(["sh", "-c", script], capture_output=True, text=True, check=True)
    info = fact.parse(out.stdout)
    assert info.cert_expiry == {f"{pki}/ca.crt": ends["ca"], f"{pki}/server.crt": ends["server"]}
    assert (info.cert_expiry[f"{pki}/server.crt"] - datetime.now(UTC)).days in (1, 2)
    without = script.replace("command -v openssl", "command -v no-such-openssl")
    out = subprocess.run(["sh", "-c", without], capture_output=True, text=True, check=True)
    assert fact.parse(out.stdout).cert_expiry == {}


def test_cert_end_lines_are_read_tolerantly() -> None:
    assert etcd.cert_ends([
        "/etc/etcd/pki/ca.crt notAfter=Jan  1 12:00:00 2036 GMT",
        "/etc/etcd/pki/peer.crt notAfter=Dec 24 09:05:01 2027 GMT",
        "/etc/etcd/pki/bad.crt ",
        "/etc/etcd/pki/odd.crt notAfter=yesterday",
        "relative.crt notAfter=Jan  1 12:00:00 2036 GMT",
    ]) == {
        "/etc/etcd/pki/ca.crt": datetime(2036, 1, 1, 12, tzinfo=UTC),
        "/etc/etcd/pki/peer.crt": datetime(2027, 12, 24, 9, 5, 1, tzinfo=UTC),
    }
    many = [f"/etc/etcd/pki/c{i}.crt notAfter=Jan  1 12:00:00 2036 GMT" for i in range(40)]
    assert len(etcd.cert_ends(many)) == etcd.MAX_CERTS


# -- k8s.certs: the kubelet client certificate and the API server certificate's names ----------


def _script(fact: Any, root: Path) -> str:
    """The real snippet with its host paths moved below ``root``."""
    script = str(fact.script())
    return script.replace(KUBELET_DIR, str(root / "kubelet")).replace(K8S_DIR, str(root / "k8s"))


def _out(script: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["sh", "-c", f"f() {{\n{script}\n}}\nf"], capture_output=True,
                          text=True, check=False)


def _dates(path: Path) -> CertDates:
    out = subprocess.run(["openssl", "x509", "-in", str(path), "-noout", "-startdate", "-enddate"],
                         check=True, capture_output=True, text=True).stdout.split("\n")
    start, end = (datetime.strptime(line.partition("=")[2], "%b %d %H:%M:%S %Y GMT")
                  .replace(tzinfo=UTC) for line in out[:2])
    return CertDates(not_after=end, not_before=start)


def _serving_cert(path: Path, sans: str | None) -> None:
    extra = ["-addext", f"subjectAltName={sans}"] if sans else []
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-keyout", str(path.with_suffix(".key")), "-out", str(path), "-days", "365",
         "-subj", "/CN=kube-apiserver", *extra],
        check=True, capture_output=True,
    )  # fmt: skip


def test_the_kubelet_client_certificate_is_dated_and_its_key_never_leaves(tmp_path: Path) -> None:
    """kubelet-client-current.pem is a symlink to a file holding the certificate AND its key
    (as the kubelet writes it): only the certificate block is sent back and dated; it is kept
    apart from kubeadm's certificates (its own rule, not kubeadm's renewal)."""
    pki = tmp_path / "kubelet" / "pki"
    pki.mkdir(parents=True)
    make_cert(pki / "cert.crt", 20)
    cert, key = (pki / "cert.crt").read_text(), (pki / "cert.key").read_text()
    stamped = pki / "kubelet-client-2026-12-07-10-00-00.pem"
    stamped.write_text(cert + key)
    (pki / "kubelet-client-current.pem").symlink_to(stamped)
    (tmp_path / "kubelet" / "config.yaml").write_text(
        "kind: KubeletConfiguration\nrotateCertificates: true  # kubeadm's\n")
    out = _out(_script(kubernetes.CertExpiry(), tmp_path))
    assert out.returncode == 0, out.stderr  # no /etc/kubernetes/pki yet: still read
    assert "PRIVATE KEY" not in out.stdout and key.splitlines()[1] not in out.stdout
    assert "BEGIN CERTIFICATE" in out.stdout
    path = str(pki / "kubelet-client-current.pem")
    readings = kubernetes.CertExpiry().parse(out.stdout)
    assert readings.dates(path) == _dates(pki / "cert.crt") and list(readings) == [path]
    # the key first, then the certificate: still only the certificate
    stamped.write_text(key + cert)
    out = _out(_script(kubernetes.CertExpiry(), tmp_path))
    assert "PRIVATE KEY" not in out.stdout
    assert kubernetes.CertExpiry().parse(out.stdout).dates(path) == _dates(pki / "cert.crt")
    # a file with no certificate: not dated (not compared)
    stamped.write_text(key)
    out = _out(_script(kubernetes.CertExpiry(), tmp_path))
    assert "PRIVATE KEY" not in out.stdout and kubernetes.CertExpiry().parse(out.stdout).dates(path) is None
    # neither /etc/kubernetes/pki nor the kubelet's certificate: the section does not apply
    (pki / "kubelet-client-current.pem").unlink()
    assert _out(_script(kubernetes.CertExpiry(), tmp_path)).returncode == SKIPPED


def test_the_probe_keeps_the_kubelet_certificate_apart(tmp_path: Path) -> None:
    """assemble(): /etc/kubernetes/pki's certificates are cert_expiry (kubeadm's renewal), the
    kubelet's is kubelet_client_cert with its start; apiserver.crt's names are apiserver_sans."""
    end, start = datetime(2027, 1, 1, tzinfo=UTC), datetime(2026, 1, 1, tzinfo=UTC)
    names = ServingNames(("master01",), ("198.18.0.11",))
    readings = kubernetes.CertReadings(
        {KUBELET_CLIENT_CERT: end, kubernetes.APISERVER_CERT: end},
        {KUBELET_CLIENT_CERT: start, kubernetes.APISERVER_CERT: start},
        {KUBELET_CLIENT_CERT: ServingNames(), kubernetes.APISERVER_CERT: names})
    files = kubernetes.K8sFiles().parse("kubelet_config=1\nrotate= false\n")
    facts = kubernetes.assemble(files=files, kubelet=None, certs=readings, cluster=None)
    assert facts.cert_expiry == {kubernetes.APISERVER_CERT: end}
    assert facts.kubelet_client_cert == CertDates(not_after=end, not_before=start)
    assert facts.apiserver_sans == names and facts.kubelet_rotates_certificates is False
    bare = kubernetes.assemble(files=kubernetes.K8sFiles().parse(""), kubelet=None, certs=None,
                               cluster=None)
    assert (bare.cert_expiry, bare.kubelet_client_cert, bare.apiserver_sans,
            bare.kubelet_rotates_certificates) == ({}, None, None, None)


def test_rotate_certificates_is_read_from_the_kubelet_config(tmp_path: Path) -> None:
    config = tmp_path / "kubelet" / "config.yaml"
    config.parent.mkdir(parents=True)
    fact = kubernetes.K8sFiles()
    script = _script(fact, tmp_path)
    assert fact.parse(_out(script).stdout).rotates_certificates is None  # no config.yaml
    for text, want in (("rotateCertificates: false\n", False),
                       ("rotateCertificates: \"true\"\n", True),
                       ("kind: KubeletConfiguration\n", False),  # the KubeletConfiguration default
                       ("rotateCertificates: maybe\n", None),
                       ("rotateCertificates: true\nrotateCertificates: false\n", True)):
        config.write_text(text)
        assert fact.parse(_out(script).stdout).rotates_certificates is want, text
    assert kubernetes.rotate_flag([" true # on"]) is True
    assert kubernetes.rotate_flag([" 'False'"]) is False


def test_the_api_server_certificate_names_are_read_here(tmp_path: Path) -> None:
    pki = tmp_path / "k8s" / "pki"
    pki.mkdir(parents=True)
    path = str(pki / "apiserver.crt")
    _serving_cert(pki / "apiserver.crt",
                  "DNS:master01,DNS:kubernetes,DNS:K8S-API.lab,IP:10.96.0.1,IP:198.18.0.11,"
                  "IP:fd00:0:0::10,email:root@example.com,URI:https://x.example")
    script = _script(kubernetes.CertExpiry(), tmp_path)
    names = kubernetes.CertExpiry().parse(_out(script).stdout).names
    assert names[path] == ServingNames(("master01", "kubernetes", "K8S-API.lab"),
                                       ("10.96.0.1", "198.18.0.11", "fd00::10"))
    _serving_cert(pki / "apiserver.crt", None)  # no subjectAltName extension: no names at all
    assert kubernetes.CertExpiry().parse(_out(script).stdout).names[path] == ServingNames()
    (pki / "apiserver.crt").write_text("not a certificate\n")  # not read: not compared
    assert path not in kubernetes.CertExpiry().parse(_out(script).stdout).names
    many = ",".join(f"DNS:n{i}.example" for i in range(300))
    _serving_cert(pki / "apiserver.crt", many)
    sans = kubernetes.CertExpiry().parse(_out(script).stdout).names[path]
    assert len(sans.dns_names) == kubernetes.MAX_SANS


def test_malformed_certificate_blocks_are_left_out() -> None:
    mark = kubernetes.CERT_FILE_MARK
    body = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
    readings = kubernetes.CertExpiry().parse(
        f"{mark}/etc/kubernetes/pki/a.crt\n{body}{mark}/etc/kubernetes/pki/b.crt\n\n"
        f"{mark}{KUBELET_CLIENT_CERT}\n-----BEGIN CERTIFICATE-----\n")
    assert (dict(readings), dict(readings.names), readings.dates(KUBELET_CLIENT_CERT)) == ({}, {}, None)
