"""hactl.render.pki, checked by openssl and by Debian's python3 (the lab stand-ins' interpreter)."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from hactl.render import pki

REPO = Path(__file__).resolve().parents[2]
DEBIAN_PYTHON = "/usr/bin/python3"


@pytest.fixture(scope="module")
def ca() -> pki.CertKey:
    return pki.make_ca("etcd-ca")


def openssl(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["openssl", *args], input=stdin, capture_output=True, check=False)


def test_ca_is_rsa_2048_ca_ten_years(ca: pki.CertKey) -> None:
    assert isinstance(ca.key, rsa.RSAPrivateKey)
    assert ca.key.key_size == 2048
    assert pki.is_ca(ca.cert)
    assert ca.common_name == "etcd-ca"
    assert pki.issued_by(ca.cert, ca.cert)
    assert dt.timedelta(days=3649) < pki.expires_in(ca.cert) <= dt.timedelta(days=3650)
    assert pki.not_before(ca.cert) < dt.datetime.now(dt.UTC)


def test_leaf_sans_usages_subject(ca: pki.CertKey, tmp_path: Path) -> None:
    leaf = pki.issue(
        ca,
        "etcd01",
        usage="server",
        dns_names=["etcd01", "localhost", "etcd01"],
        ip_addresses=["198.18.0.21", ipaddress.ip_address("127.0.0.1")],
    )
    dns, ips = pki.subject_alt_names(leaf.cert)
    assert dns == ["etcd01", "localhost"]
    assert [str(ip) for ip in ips] == ["198.18.0.21", "127.0.0.1"]
    assert pki.usages(leaf.cert) == {"server"}
    assert not pki.is_ca(leaf.cert)
    assert pki.issued_by(leaf.cert, ca.cert)
    assert dt.timedelta(days=364) < pki.expires_in(leaf.cert) <= dt.timedelta(days=365)

    client = pki.issue(
        ca, "kube-apiserver-etcd-client", usage="client", organizations=["system:masters"]
    )
    assert pki.usages(client.cert) == {"client"}
    assert pki.organizations(client.cert) == ["system:masters"]
    assert pki.subject_alt_names(client.cert) == ([], [])
    assert pki.usages(pki.issue(ca, "p", usage="peer").cert) == {"server", "client"}

    # openssl agrees: chain, purpose, subject, SANs.
    ca_file, crt_file = tmp_path / "ca.crt", tmp_path / "leaf.crt"
    ca_file.write_bytes(ca.cert_pem())
    crt_file.write_bytes(leaf.cert_pem())
    ok = openssl("verify", "-purpose", "sslserver", "-CAfile", str(ca_file), str(crt_file))
    assert ok.returncode == 0, ok.stderr
    bad = openssl("verify", "-purpose", "sslclient", "-CAfile", str(ca_file), str(crt_file))
    assert bad.returncode != 0
    text = openssl("x509", "-noout", "-text", "-in", str(crt_file)).stdout.decode()
    assert "DNS:etcd01, DNS:localhost, IP Address:198.18.0.21, IP Address:127.0.0.1" in text
    assert "TLS Web Server Authentication" in text


def test_foreign_ca_is_not_the_issuer(ca: pki.CertKey) -> None:
    other = pki.make_ca("etcd-ca")  # same name, different key
    leaf = pki.issue(ca, "x", usage="client")
    assert not pki.issued_by(leaf.cert, other.cert)


def test_spki_sha256_matches_kubeadm_openssl_recipe(ca: pki.CertKey) -> None:
    # The recipe from the kubeadm join docs for --discovery-token-ca-cert-hash.
    pub = openssl("x509", "-pubkey", "-noout", stdin=ca.cert_pem()).stdout
    der = openssl("rsa", "-pubin", "-outform", "der", stdin=pub).stdout
    digest = openssl("dgst", "-sha256", "-hex", stdin=der).stdout.decode().split()[-1]
    assert pki.spki_sha256(ca.cert) == f"sha256:{digest}"
    assert len(digest) == 64


def test_ecdsa_keys(tmp_path: Path) -> None:
    ca = pki.make_ca("ec-ca", key_type="ecdsa")
    leaf = pki.issue(ca, "s", usage="peer", key_type="ecdsa", ip_addresses=["::1"])
    assert isinstance(leaf.key, ec.EllipticCurvePrivateKey)
    assert leaf.key.curve.name == "secp256r1"
    assert pki.issued_by(leaf.cert, ca.cert)
    assert b"BEGIN EC PRIVATE KEY" in leaf.key_pem()
    (tmp_path / "ca.crt").write_bytes(ca.cert_pem())
    (tmp_path / "s.crt").write_bytes(leaf.cert_pem())
    ok = openssl("verify", "-CAfile", str(tmp_path / "ca.crt"), str(tmp_path / "s.crt"))
    assert ok.returncode == 0, ok.stderr


def test_pem_round_trip_and_mismatch(ca: pki.CertKey) -> None:
    leaf = pki.issue(ca, "x", usage="client")
    assert leaf.key_pem().startswith(b"-----BEGIN RSA PRIVATE KEY-----")
    again = pki.CertKey.from_pem(leaf.cert_pem(), leaf.key_pem())
    assert again.cert == leaf.cert
    assert pki.key_matches_cert(again.cert, again.key)
    with pytest.raises(ValueError, match="does not belong"):
        pki.CertKey.from_pem(leaf.cert_pem(), ca.key_pem())
    assert pki.public_key_pem(leaf.key).startswith(b"-----BEGIN PUBLIC KEY-----")


def test_expiry_with_fixed_clock(ca: pki.CertKey) -> None:
    now = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    leaf = pki.issue(ca, "x", usage="client", days=10, now=now)
    assert pki.not_after(leaf.cert) == now + dt.timedelta(days=10)
    assert pki.expires_in(leaf.cert, now) == dt.timedelta(days=10)
    assert pki.expires_in(leaf.cert, now + dt.timedelta(days=11)) < dt.timedelta(0)


def test_private_keys_written_0600(ca: pki.CertKey, tmp_path: Path) -> None:
    leaf = pki.issue(ca, "x", usage="client")
    stale = tmp_path / "pki" / "x.key"
    stale.parent.mkdir()
    stale.write_bytes(b"old")
    stale.chmod(0o644)  # an existing world-readable file must be tightened
    crt, key = pki.write_cert_key(str(tmp_path / "pki"), "x", leaf)
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(crt).st_mode) == 0o644
    assert Path(key).read_bytes() == leaf.key_pem()
    pki.write_private_key(str(tmp_path / "sa.key"), leaf.key_pem())
    assert stat.S_IMODE(os.stat(tmp_path / "sa.key").st_mode) == 0o600


def test_module_is_import_light() -> None:
    code = "import sys, hactl.render.pki; print(sorted(m for m in sys.modules if m.split('.')[0] in ('pydantic', 'structlog', 'yaml', 'hactl')))"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "['hactl', 'hactl.render', 'hactl.render.pki']"


@pytest.mark.skipif(not os.path.exists(DEBIAN_PYTHON), reason="needs Debian's python3")
def test_works_under_debian_python3_and_cryptography_38(tmp_path: Path) -> None:
    """The lab's kubeadm stand-in runs this module under /usr/bin/python3 (cryptography 38)."""
    script = """
import datetime as dt, os, stat, sys, cryptography
from hactl.render import pki
ca = pki.make_ca("kubernetes")
leaf = pki.issue(ca, "kube-apiserver", usage="server", dns_names=["kubernetes"],
                 ip_addresses=["10.96.0.1"], organizations=["o"])
ec_leaf = pki.issue(pki.make_ca("e", key_type="ecdsa"), "e", usage="peer", key_type="ecdsa")
assert pki.issued_by(leaf.cert, ca.cert) and not pki.issued_by(leaf.cert, ec_leaf.cert)
again = pki.CertKey.from_pem(leaf.cert_pem(), leaf.key_pem())
assert pki.usages(again.cert) == {"server"}
assert pki.expires_in(leaf.cert) > dt.timedelta(days=364)
assert pki.not_after(ca.cert).tzinfo is not None
pki.write_cert_key(sys.argv[1], "leaf", leaf)
assert stat.S_IMODE(os.stat(os.path.join(sys.argv[1], "leaf.key")).st_mode) == 0o600
print(cryptography.__version__, pki.spki_sha256(ca.cert))
open(os.path.join(sys.argv[1], "ca.crt"), "wb").write(ca.cert_pem())
"""
    out = subprocess.run(
        [DEBIAN_PYTHON, "-c", script, str(tmp_path)],
        cwd=REPO,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    version, digest = out.stdout.split()
    assert version  # Debian bookworm ships python3-cryptography 38
    # The hash computed under cryptography 38 equals the one computed here (cryptography 50).
    ca_cert = pki.cert_from_pem((tmp_path / "ca.crt").read_bytes())
    assert digest == pki.spki_sha256(ca_cert)
