"""The etcd probe dates /etc/etcd/pki/*.crt with ``openssl x509 -enddate`` (etcd.files): the
real script and the real openssl on certificates made here, and the tolerant parser."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime
from pathlib import Path

from hactl.facts import etcd


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
