"""The stand-ins' own X.509 (``hactl.lab.standins.pkiutil``) checked against independent judges.

The certificates are made under both interpreters that run the stand-ins — Debian's
``/usr/bin/python3`` (cryptography 38, the lab nodes) and the project's venv — and judged by the
``openssl`` command line: the chain verifies for the right purpose, the fields are kubeadm's, the
keys are traditional PEM and belong to their certificates, and the discovery pin is the one
kubeadm's docs compute with ``openssl``. hactl's own module (``hactl.render.pki``) is a second,
independent implementation: both must agree on every CA, whichever of them (or openssl) made it.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from hactl.lab.standins import pkiutil
from hactl.render import pki

REPO = Path(__file__).resolve().parents[2]
DEBIAN_PYTHON = "/usr/bin/python3"

# Run by each interpreter in a fresh directory: a small PKI like kubeadm's, plus what the
# stand-in's module reads back from it.
MAKE = """
import json, sys
from hactl.lab.standins import pkiutil as p

ca = p.new_ca("kubernetes")
eca = p.new_ca("etcd-ca", kind="ecdsa")
made = {
    "ca": ca,
    "server": p.new_signed(ca, "kube-apiserver", role="server",
                           dns_names=["master01", "kubernetes", "kubernetes", "lb.example.com"],
                           ips=["10.96.0.1", "198.18.0.11", "::1", "10.96.0.1"]),
    "client": p.new_signed(ca, "kubernetes-admin", role="client",
                           organizations=["kubeadm:cluster-admins", "system:masters"]),
    "peer": p.new_signed(ca, "master01", role="peer", dns_names=["master01", "localhost"],
                         ips=["198.18.0.11", "127.0.0.1"]),
    "eca": eca,
    "epeer": p.new_signed(eca, "etcd01", role="peer", dns_names=["etcd01"], ips=["198.18.0.21"],
                          kind="ecdsa"),
}
for name, pair in made.items():
    open(name + ".crt", "wb").write(pair.cert_pem())
    open(name + ".key", "wb").write(pair.key_pem())
sa = p.new_key("rsa")
open("sa.key", "wb").write(p.key_pem(sa))
open("sa.pub", "wb").write(p.public_pem(sa))
facts = {
    "hash": {name: p.ca_cert_hash(made[name].cert) for name in ("ca", "eca")},
    "validity": {name: [t.isoformat() for t in p.validity(pair.cert)] for name, pair in made.items()},
    "signed_by": {f"{leaf}/{ca}": p.signed_by(made[leaf].cert, made[ca].cert)
                  for leaf in made for ca in ("ca", "eca")},
    "python": sys.version, "cryptography": __import__("cryptography").__version__,
}
json.dump(facts, open("facts.json", "w"))
"""

LEAVES = {"server": "ca", "client": "ca", "peer": "ca", "epeer": "eca"}


def sh(command: str, cwd: Path, *, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["sh", "-c", command], cwd=cwd, capture_output=True, text=True,
                          timeout=60, check=check)


@pytest.fixture(scope="module", params=[DEBIAN_PYTHON, sys.executable], ids=["debian-python", "venv"])
def made(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    d = tmp_path_factory.mktemp("pkiutil")
    subprocess.run([request.param, "-W", "error", "-c", MAKE], cwd=d, check=True, timeout=120,
                   env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    facts = json.loads((d / "facts.json").read_text())
    if request.param == DEBIAN_PYTHON:
        assert facts["python"].startswith("3.11") and facts["cryptography"].startswith("38."), facts
    return d, facts


def text_of(d: Path, name: str) -> str:
    return sh(f"openssl x509 -noout -text -in {name}.crt", d).stdout


def openssl_pin(d: Path, name: str) -> str:
    """kubeadm's documented recipe for --discovery-token-ca-cert-hash."""
    out = sh(f"openssl x509 -pubkey -noout -in {name}.crt | openssl pkey -pubin -outform der"
             " | sha256sum", d).stdout
    return "sha256:" + out.split()[0]


def openssl_dates(d: Path, name: str) -> tuple[dt.datetime, dt.datetime]:
    out = sh(f"openssl x509 -noout -startdate -enddate -in {name}.crt", d).stdout
    found = dict(line.split("=", 1) for line in out.splitlines())

    def parse(value: str) -> dt.datetime:
        return dt.datetime.strptime(" ".join(value.split()), "%b %d %H:%M:%S %Y GMT").replace(tzinfo=dt.UTC)

    return parse(found["notBefore"]), parse(found["notAfter"])


# -- the chain -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("leaf", "purposes"), [
    ("server", ["sslserver"]), ("client", ["sslclient"]), ("peer", ["sslserver", "sslclient"]),
    ("epeer", ["sslserver", "sslclient"]),
])
def test_openssl_verifies_each_certificate_for_its_role(made: tuple[Path, dict], leaf: str,
                                                        purposes: list[str]) -> None:
    d, facts = made
    ca = LEAVES[leaf]
    for purpose in purposes:
        done = sh(f"openssl verify -x509_strict -CAfile {ca}.crt -purpose {purpose} {leaf}.crt", d)
        assert done.stdout.strip() == f"{leaf}.crt: OK", done
    assert facts["signed_by"][f"{leaf}/{ca}"] is True
    assert pki.issued_by(pki.cert_from_pem((d / f"{leaf}.crt").read_bytes()),
                         pki.cert_from_pem((d / f"{ca}.crt").read_bytes()))


@pytest.mark.parametrize(("leaf", "purpose"), [("server", "sslclient"), ("client", "sslserver")])
def test_openssl_refuses_a_certificate_outside_its_role(made: tuple[Path, dict], leaf: str,
                                                        purpose: str) -> None:
    d, _ = made
    assert sh(f"openssl verify -CAfile ca.crt -purpose {purpose} {leaf}.crt", d, check=False).returncode != 0


def test_a_certificate_under_another_ca_is_refused_by_openssl_and_by_the_standin(
        made: tuple[Path, dict]) -> None:
    d, facts = made
    assert sh("openssl verify -CAfile eca.crt server.crt", d, check=False).returncode != 0
    assert sh("openssl verify -CAfile ca.crt epeer.crt", d, check=False).returncode != 0
    assert facts["signed_by"]["server/eca"] is False
    assert facts["signed_by"]["epeer/ca"] is False
    assert facts["signed_by"]["ca/ca"] is True  # a self-signed CA signs itself
    assert facts["signed_by"]["eca/ca"] is False


# -- the discovery pin -----------------------------------------------------------------------------


@pytest.mark.parametrize("ca", ["ca", "eca"])
def test_ca_hash_is_openssls_and_hactls(made: tuple[Path, dict], ca: str) -> None:
    d, facts = made
    ours = facts["hash"][ca]
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", ours)
    assert ours == openssl_pin(d, ca)
    assert ours == pki.spki_sha256(pki.cert_from_pem((d / f"{ca}.crt").read_bytes()))


def test_the_standin_pins_cas_that_hactl_and_openssl_made(tmp_path: Path) -> None:
    """The other direction: CAs not made by the stand-in (hactl's PKI step makes the CAs of an
    external etcd; an operator may bring one from openssl), read by the stand-in's module."""
    for key_type in ("rsa", "ecdsa"):
        ca = pki.make_ca("kubernetes", key_type=key_type)
        (tmp_path / f"hactl-{key_type}.crt").write_bytes(ca.cert_pem())
        theirs = pkiutil.load_cert(ca.cert_pem())
        assert pkiutil.ca_cert_hash(theirs) == pki.spki_sha256(ca.cert) == openssl_pin(tmp_path, f"hactl-{key_type}")
        assert pkiutil.validity(theirs) == (pki.not_before(ca.cert), pki.not_after(ca.cert))
        leaf = pki.issue(ca, "kube-apiserver", usage="server", key_type=key_type)
        assert pkiutil.signed_by(pkiutil.load_cert(leaf.cert_pem()), theirs)
        assert not pkiutil.signed_by(pkiutil.load_cert(leaf.cert_pem()), pkiutil.new_ca("kubernetes").cert)
    # openssl's own CA, valid past 2049 (notAfter is a GeneralizedTime there, not a UTCTime)
    sh("openssl req -x509 -newkey rsa:2048 -nodes -keyout old.key -out old.crt -days 36500"
       " -subj /CN=kubernetes 2>/dev/null", tmp_path)
    cert = pkiutil.load_cert((tmp_path / "old.crt").read_bytes())
    assert pkiutil.ca_cert_hash(cert) == openssl_pin(tmp_path, "old") == pki.spki_sha256(cert)
    assert pkiutil.validity(cert) == openssl_dates(tmp_path, "old")
    assert pkiutil.expiry(cert).year > 2049
    pair = pkiutil.Pair.from_pem((tmp_path / "old.crt").read_bytes(), (tmp_path / "old.key").read_bytes())
    signed = pkiutil.new_signed(pair, "kube-apiserver", role="server")
    (tmp_path / "signed.crt").write_bytes(signed.cert_pem())
    assert sh("openssl verify -CAfile old.crt signed.crt", tmp_path).stdout.strip() == "signed.crt: OK"


# -- what the certificates say ---------------------------------------------------------------------


def test_cas_are_kubeadms(made: tuple[Path, dict]) -> None:
    d, _ = made
    for name, cn, rsa in (("ca", "kubernetes", True), ("eca", "etcd-ca", False)):
        text = text_of(d, name)
        assert f"Subject: CN = {cn}\n" in text and f"Issuer: CN = {cn}\n" in text
        assert re.search(r"X509v3 Basic Constraints: critical\n\s+CA:TRUE\n", text)
        usage = "Digital Signature, Key Encipherment, Certificate Sign" if rsa else \
            "Digital Signature, Certificate Sign"
        assert re.search(rf"X509v3 Key Usage: critical\n\s+{usage}\n", text), text
        assert "X509v3 Subject Key Identifier" in text
        assert re.search(rf"X509v3 Subject Alternative Name: \n\s+DNS:{cn}\n", text)
        assert ("Public-Key: (2048 bit)" in text) if rsa else ("ASN1 OID: prime256v1" in text)
        assert ("sha256WithRSAEncryption" if rsa else "ecdsa-with-SHA256") in text


def test_leaves_are_kubeadms(made: tuple[Path, dict]) -> None:
    d, _ = made
    server = text_of(d, "server")
    assert "Subject: CN = kube-apiserver\n" in server and "Issuer: CN = kubernetes\n" in server
    assert re.search(r"X509v3 Basic Constraints: critical\n\s+CA:FALSE\n", server)
    assert re.search(r"X509v3 Key Usage: critical\n\s+Digital Signature, Key Encipherment\n", server)
    assert re.search(r"X509v3 Extended Key Usage: \n\s+TLS Web Server Authentication\n", server)
    assert re.search(r"X509v3 Subject Alternative Name: \n\s+DNS:master01, DNS:kubernetes, "
                     r"DNS:lb.example.com, IP Address:10.96.0.1, IP Address:198.18.0.11, "
                     r"IP Address:0:0:0:0:0:0:0:1\n", server), server
    client = text_of(d, "client")
    assert "Subject: O = kubeadm:cluster-admins, O = system:masters, CN = kubernetes-admin\n" in client
    assert re.search(r"X509v3 Extended Key Usage: \n\s+TLS Web Client Authentication\n", client)
    assert "Subject Alternative Name" not in client
    peer = text_of(d, "peer")
    assert re.search(r"X509v3 Extended Key Usage: \n\s+TLS Web Server Authentication, "
                     r"TLS Web Client Authentication\n", peer)
    epeer = text_of(d, "epeer")
    assert re.search(r"X509v3 Key Usage: critical\n\s+Digital Signature\n", epeer)
    assert "ASN1 OID: prime256v1" in epeer and "ecdsa-with-SHA256" in epeer
    # the authority key identifier names the CA's subject key identifier
    for leaf, ca in LEAVES.items():
        ski = re.search(r"Subject Key Identifier: \n\s+(\S+)\n", text_of(d, ca))
        aki = re.search(r"Authority Key Identifier: \n\s+(?:keyid:)?(\S+)\n", text_of(d, leaf))
        assert ski and aki and ski.group(1) == aki.group(1), leaf


def test_serials_are_positive_63_bit_and_distinct(made: tuple[Path, dict]) -> None:
    d, _ = made
    serials = [int(sh(f"openssl x509 -noout -serial -in {name}.crt", d).stdout.split("=")[1], 16)
               for name in ("ca", "server", "client", "peer", "eca", "epeer")]
    assert all(0 < s < 2**63 for s in serials) and len(set(serials)) == len(serials)


def test_validity_is_kubeadms_and_reads_back_as_openssl_prints_it(made: tuple[Path, dict]) -> None:
    d, facts = made
    now = dt.datetime.now(dt.UTC)
    for name in ("ca", "server", "client", "peer", "eca", "epeer"):
        start, end = openssl_dates(d, name)
        assert [start.isoformat(), end.isoformat()] == facts["validity"][name]
        days = 3650 if name in ("ca", "eca") else 365
        assert end - start == dt.timedelta(days=days, minutes=5), name
        assert dt.timedelta(minutes=4) < now - start < dt.timedelta(minutes=15), name
        assert sh(f"openssl x509 -noout -checkend 0 -in {name}.crt", d).returncode == 0


# -- keys ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "header", "check"), [
    ("ca", "RSA PRIVATE KEY", "openssl rsa -check -noout"),
    ("server", "RSA PRIVATE KEY", "openssl rsa -check -noout"),
    ("eca", "EC PRIVATE KEY", "openssl ec -check -noout"),
    ("epeer", "EC PRIVATE KEY", "openssl ec -check -noout"),
])
def test_private_keys_are_traditional_pem_and_belong_to_their_certificate(
        made: tuple[Path, dict], name: str, header: str, check: str) -> None:
    d, _ = made
    assert (d / f"{name}.key").read_text().startswith(f"-----BEGIN {header}-----\n")
    sh(f"{check} -in {name}.key", d)
    from_key = sh(f"openssl pkey -in {name}.key -pubout", d).stdout
    from_cert = sh(f"openssl x509 -pubkey -noout -in {name}.crt", d).stdout
    assert from_key == from_cert
    if header.startswith("RSA"):
        assert "Private-Key: (2048 bit" in sh(f"openssl rsa -noout -text -in {name}.key", d).stdout


def test_service_account_key_pair(made: tuple[Path, dict]) -> None:
    d, _ = made
    assert (d / "sa.key").read_text().startswith("-----BEGIN RSA PRIVATE KEY-----\n")
    assert (d / "sa.pub").read_text().startswith("-----BEGIN PUBLIC KEY-----\n")
    assert sh("openssl pkey -in sa.key -pubout", d).stdout == (d / "sa.pub").read_text()


def test_a_pair_refuses_a_key_that_is_not_its_certificates() -> None:
    ca, other = pkiutil.new_ca("kubernetes"), pkiutil.new_ca("kubernetes", kind="ecdsa")
    assert pkiutil.Pair.from_pem(ca.cert_pem(), ca.key_pem()).cert == ca.cert
    for wrong in (other.key_pem(), pkiutil.key_pem(pkiutil.new_key("rsa"))):
        with pytest.raises(ValueError, match="does not match"):
            pkiutil.Pair.from_pem(ca.cert_pem(), wrong)
    with pytest.raises(ValueError, match="role"):
        pkiutil.new_signed(ca, "x", role="both")
    with pytest.raises(ValueError, match="key type"):
        pkiutil.new_key("dsa")
