"""The probe reads certificates with the host's openssl: the etcd members' /etc/etcd/pki/*.crt
(``-enddate``, etcd.files), the kubelet's client certificate (``-startdate -enddate``) and the
API server certificate's subjectAltName (``-text``), both in k8s.files: the real scripts and the
real openssl on certificates made here, and the tolerant parsers."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime
from pathlib import Path

from hactl.facts import etcd, kubernetes
from hactl.facts.model import CertDates, ServingNames
from hactl.hostlayout import K8S_DIR, KUBELET_DIR


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


# -- k8s.files: the kubelet client certificate and the API server certificate's names ----------


def _k8s_files_script(root: Path, *, openssl: bool = True) -> str:
    """The real k8s.files snippet with its host paths moved below ``root``."""
    script = kubernetes.K8sFiles().script()
    script = script.replace(KUBELET_DIR, str(root / "kubelet")).replace(K8S_DIR, str(root / "k8s"))
    return script if openssl else script.replace("command -v openssl", "command -v no-such-openssl")


def _run(script: str) -> kubernetes.K8sFileInfo:
    out = subprocess.run(["sh", "-c", f"f() {{\n{script}\n}}\nf"], capture_output=True, text=True,
                         check=True)
    return kubernetes.K8sFiles().parse(out.stdout)


def _dates(path: Path) -> tuple[datetime, datetime]:
    out = subprocess.run(["openssl", "x509", "-in", str(path), "-noout", "-startdate", "-enddate"],
                         check=True, capture_output=True, text=True).stdout.split("\n")
    start, end = (datetime.strptime(line.partition("=")[2], "%b %d %H:%M:%S %Y GMT")
                  .replace(tzinfo=UTC) for line in out[:2])
    return start, end


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
    (as the kubelet writes it): openssl dates the certificate, the key is not in the output."""
    pki = tmp_path / "kubelet" / "pki"
    pki.mkdir(parents=True)
    make_cert(pki / "cert.crt", 20)
    key = (pki / "cert.key").read_text()
    stamped = pki / "kubelet-client-2026-12-07-10-00-00.pem"
    stamped.write_text((pki / "cert.crt").read_text() + key)
    (pki / "kubelet-client-current.pem").symlink_to(stamped)
    (tmp_path / "kubelet" / "config.yaml").write_text(
        "kind: KubeletConfiguration\nrotateCertificates: true  # kubeadm's\n")
    script = _k8s_files_script(tmp_path)
    out = subprocess.run(["sh", "-c", f"f() {{\n{script}\n}}\nf"], capture_output=True, text=True,
                         check=True).stdout
    assert "PRIVATE KEY" not in out and key.splitlines()[1] not in out
    info = kubernetes.K8sFiles().parse(out)
    start, end = _dates(pki / "cert.crt")
    assert info.kubelet_client_cert == CertDates(not_after=end, not_before=start)
    assert info.rotates_certificates is True and info.kubelet_config
    assert info.apiserver_sans is None  # no apiserver.crt here
    # the key first, then the certificate: openssl still finds the certificate
    stamped.write_text(key + (pki / "cert.crt").read_text())
    assert _run(script).kubelet_client_cert == CertDates(not_after=end, not_before=start)
    # a file that is no certificate, and no openssl at all: not dated (not compared)
    stamped.write_text(key)
    assert _run(script).kubelet_client_cert is None
    stamped.write_text((pki / "cert.crt").read_text())
    assert _run(_k8s_files_script(tmp_path, openssl=False)).kubelet_client_cert is None


def test_rotate_certificates_is_read_from_the_kubelet_config(tmp_path: Path) -> None:
    config = tmp_path / "kubelet" / "config.yaml"
    config.parent.mkdir(parents=True)
    script = _k8s_files_script(tmp_path)
    assert _run(script).rotates_certificates is None  # no config.yaml: not known
    for text, want in (("rotateCertificates: false\n", False),
                       ("rotateCertificates: \"true\"\n", True),
                       ("kind: KubeletConfiguration\n", False),  # the KubeletConfiguration default
                       ("rotateCertificates: maybe\n", None),
                       ("rotateCertificates: true\nrotateCertificates: false\n", True)):
        config.write_text(text)
        assert _run(script).rotates_certificates is want, text


def test_the_api_server_certificate_names_are_read_with_openssl(tmp_path: Path) -> None:
    pki = tmp_path / "k8s" / "pki"
    pki.mkdir(parents=True)
    _serving_cert(pki / "apiserver.crt",
                  "DNS:master01,DNS:kubernetes,DNS:K8S-API.lab,IP:10.96.0.1,IP:198.18.0.11,"
                  "IP:fd00:0:0::10,email:root@example.com,URI:https://x.example")
    script = _k8s_files_script(tmp_path)
    sans = _run(script).apiserver_sans
    assert sans == ServingNames(("master01", "kubernetes", "K8S-API.lab"),
                                ("10.96.0.1", "198.18.0.11", "fd00::10"))
    _serving_cert(pki / "apiserver.crt", None)  # no subjectAltName extension: no names at all
    assert _run(script).apiserver_sans == ServingNames((), ())
    (pki / "apiserver.crt").write_text("not a certificate\n")  # openssl cannot read it
    assert _run(script).apiserver_sans is None
    (pki / "apiserver.crt").unlink()
    assert _run(script).apiserver_sans is None
    _serving_cert(pki / "apiserver.crt", "DNS:master01")
    assert _run(_k8s_files_script(tmp_path, openssl=False)).apiserver_sans is None


def test_the_openssl_lines_are_read_tolerantly() -> None:
    end = datetime(2027, 12, 7, 10, 0, tzinfo=UTC)
    start = datetime(2026, 12, 7, 10, 0, tzinfo=UTC)
    assert kubernetes.cert_dates(
        "notBefore=Dec  7 10:00:00 2026 GMT notAfter=Dec  7 10:00:00 2027 GMT ") == CertDates(end, start)
    assert kubernetes.cert_dates("notAfter=Dec  7 10:00:00 2027 GMT") == CertDates(end, None)
    assert kubernetes.cert_dates("notBefore=garbage notAfter=Dec  7 10:00:00 2027 GMT") == CertDates(end, None)
    for bad in ("", " ", "notBefore=Dec  7 10:00:00 2026 GMT", "notAfter=tomorrow",
                "notAfter=Dec 32 10:00:00 2027 GMT", "unable to load certificate"):
        assert kubernetes.cert_dates(bad) is None, bad
    assert kubernetes.serving_names([
        "    DNS:a, IP Address:FD00:0:0:0:0:0:0:10, IP Address:10.0.0.1, DNS:, IP Address:300.1.1.1, "
        "DirName:/CN=x, odd, IP Address:10.0.0.1"]) == ServingNames(("a",), ("fd00::10", "10.0.0.1"))
    assert kubernetes.serving_names([]) == ServingNames()
    many = ", ".join(f"DNS:n{i}" for i in range(1000))
    assert len(kubernetes.serving_names([many]).dns_names) == kubernetes.MAX_SANS
    assert kubernetes.rotate_flag([" true # on"]) is True
    assert kubernetes.rotate_flag([" 'False'"]) is False
    assert kubernetes.rotate_flag([" yes"]) is None
