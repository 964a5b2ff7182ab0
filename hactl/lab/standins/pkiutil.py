"""The stand-ins' own X.509: keys, CAs, signed certificates and the CA pin, as kubeadm makes them.

Why a module of its own: the stand-ins are the far side of hactl's tests. If they issued or
checked certificates with hactl's own PKI code (hactl/render/pki.py), a bug there would sit on both
sides of every test and pass unseen. This module is written from kubeadm's behaviour (its
``pkiutil`` package and client-go's ``certutil``/``keyutil``), not from hactl's module, and
reads the CA pin, the validity and the public key straight from the certificate's DER bytes, as
Go's ``x509.Certificate.RawSubjectPublicKeyInfo`` does. ``tests/standins/test_pkiutil.py`` checks
it against the ``openssl`` command line and against hactl's module.

It runs under Debian's ``/usr/bin/python3`` (3.11, python3-cryptography 38) in the lab nodes and
under the project's venv (cryptography 5x), so it uses only what both versions offer, and it
imports only the standard library and ``cryptography`` (see "The stand-ins stand apart" in
docs/lab.md).

What kubeadm does, and so what this module does:

- Keys: RSA 2048 (``encryptionAlgorithm: RSA-2048``, the default) or ECDSA P-256
  (``ECDSA-P256``). Private keys are PEM in the form keyutil writes: ``RSA PRIVATE KEY``
  (PKCS #1) or ``EC PRIVATE KEY`` (SEC 1), never PKCS #8; public keys (``sa.pub``) are
  ``PUBLIC KEY`` (PKIX SubjectPublicKeyInfo).
- A CA is self-signed, subject ``CN=<name>`` with a SAN ``DNS:<name>``, valid 10 years,
  basicConstraints ``CA:TRUE`` and keyUsage digitalSignature + keyCertSign (+ keyEncipherment
  for RSA), both critical, and a subjectKeyIdentifier.
- A signed certificate has subject ``O=<orgs>…, CN=<name>``, is valid 1 year, has
  basicConstraints ``CA:FALSE`` and keyUsage digitalSignature (+ keyEncipherment for RSA), both
  critical, the extended key usages of its role (server: serverAuth, client: clientAuth, peer:
  both), the issuer's key identifier and the SANs given, duplicates removed.
- Every certificate starts 5 minutes in the past (kubeadm's ``CertificateBackdate``), has a
  random serial in [1, 2⁶³ − 1] and is signed with SHA-256.
- The discovery pin (``--discovery-token-ca-cert-hash``) is ``sha256:`` + the lowercase hex
  SHA-256 of the CA certificate's DER-encoded SubjectPublicKeyInfo.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import secrets
from collections.abc import Iterable
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

Key = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey

CA_VALIDITY = dt.timedelta(days=3650)
CERT_VALIDITY = dt.timedelta(days=365)
BACKDATE = dt.timedelta(minutes=5)
ROLES = {
    "server": [ExtendedKeyUsageOID.SERVER_AUTH],
    "client": [ExtendedKeyUsageOID.CLIENT_AUTH],
    "peer": [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
}


# -- keys ----------------------------------------------------------------------------------------


def new_key(kind: str = "rsa") -> Key:
    """A private key: ``rsa`` (2048 bits, e = 65537) or ``ecdsa`` (P-256)."""
    if kind == "ecdsa":
        return ec.generate_private_key(ec.SECP256R1())
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    raise ValueError(f"unsupported key type {kind!r}")


def key_pem(key: Key) -> bytes:
    """``RSA PRIVATE KEY`` / ``EC PRIVATE KEY`` PEM, unencrypted (as kubeadm writes ``*.key``)."""
    return key.private_bytes(encoding=serialization.Encoding.PEM,
                             format=serialization.PrivateFormat.TraditionalOpenSSL,
                             encryption_algorithm=serialization.NoEncryption())


def public_pem(key: Key) -> bytes:
    """The public half as ``PUBLIC KEY`` PEM (kubeadm's ``sa.pub``)."""
    return key.public_key().public_bytes(encoding=serialization.Encoding.PEM,
                                         format=serialization.PublicFormat.SubjectPublicKeyInfo)


def load_key(pem: bytes) -> Key:
    key = serialization.load_pem_private_key(pem, password=None)
    if isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        return key
    raise ValueError(f"private key of unsupported type {type(key).__name__}")


# -- certificates --------------------------------------------------------------------------------


def load_cert(pem: bytes) -> x509.Certificate:
    """The first certificate of a PEM bundle."""
    return x509.load_pem_x509_certificate(pem)


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def cert_der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


@dataclass(frozen=True)
class Pair:
    """A certificate with its private key."""

    cert: x509.Certificate
    key: Key

    def cert_pem(self) -> bytes:
        return cert_pem(self.cert)

    def key_pem(self) -> bytes:
        """The private key's PEM: a secret, never printed."""
        return key_pem(self.key)

    @classmethod
    def from_pem(cls, cert: bytes, key: bytes) -> Pair:
        """Load ``*.crt`` + ``*.key``; a key that is not the certificate's is a ``ValueError``."""
        pair = cls(load_cert(cert), load_key(key))
        if not holds_key(pair.cert, pair.key):
            raise ValueError("the private key does not match the certificate's public key")
        return pair


def _serial() -> int:
    return secrets.randbelow(2**63 - 1) + 1


def _subject(common_name: str, organizations: Iterable[str] = ()) -> x509.Name:
    rdns = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in organizations]
    return x509.Name([*rdns, x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _key_usage(key: Key, *, ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(digital_signature=True, content_commitment=False,
                         key_encipherment=isinstance(key, rsa.RSAPrivateKey),
                         data_encipherment=False, key_agreement=False, key_cert_sign=ca,
                         crl_sign=False, encipher_only=False, decipher_only=False)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _authority_key_id(ca: Pair) -> x509.AuthorityKeyIdentifier:
    """The issuer's own subjectKeyIdentifier when it has one (as Go copies it), else one computed
    from its public key."""
    try:
        ski = ca.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound:
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key())
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


def new_ca(common_name: str, *, kind: str = "rsa") -> Pair:
    """A self-signed CA named ``common_name`` (``kubernetes``, ``etcd-ca``, ``front-proxy-ca``)."""
    key = new_key(kind)
    start = _now() - BACKDATE
    name = _subject(common_name)
    cert = (x509.CertificateBuilder()
            .serial_number(_serial())
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .not_valid_before(start)
            .not_valid_after(start + BACKDATE + CA_VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(_key_usage(key, ca=True), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(common_name)]), critical=False)
            .sign(key, hashes.SHA256()))
    return Pair(cert, key)


def new_signed(ca: Pair, common_name: str, *, role: str, organizations: Iterable[str] = (),
               dns_names: Iterable[str] = (), ips: Iterable[str] = (), kind: str = "rsa") -> Pair:
    """A certificate for ``common_name`` signed by ``ca``; ``role`` is ``server``, ``client`` or
    ``peer`` (both). SANs keep their first occurrence only, like kubeadm's RemoveDuplicateAltNames."""
    if role not in ROLES:
        raise ValueError(f"unknown certificate role {role!r}")
    key = new_key(kind)
    start = _now() - BACKDATE
    builder = (x509.CertificateBuilder()
               .serial_number(_serial())
               .subject_name(_subject(common_name, organizations))
               .issuer_name(ca.cert.subject)
               .public_key(key.public_key())
               .not_valid_before(start)
               .not_valid_after(start + BACKDATE + CERT_VALIDITY)
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(_key_usage(key, ca=False), critical=True)
               .add_extension(x509.ExtendedKeyUsage(ROLES[role]), critical=False)
               .add_extension(_authority_key_id(ca), critical=False))
    alt: list[x509.GeneralName] = []
    for dns in dict.fromkeys(dns_names):
        alt.append(x509.DNSName(dns))
    for ip in dict.fromkeys(ipaddress.ip_address(text) for text in ips):
        alt.append(x509.IPAddress(ip))
    if alt:
        builder = builder.add_extension(x509.SubjectAlternativeName(alt), critical=False)
    return Pair(builder.sign(ca.key, hashes.SHA256()), key)


# -- reading a certificate's DER -----------------------------------------------------------------
#
# Certificate ::= SEQUENCE { tbsCertificate, signatureAlgorithm, signature }
# TBSCertificate ::= SEQUENCE { [0] version OPTIONAL, serialNumber, signature, issuer,
#                               validity, subject, subjectPublicKeyInfo, ... }
# Validity ::= SEQUENCE { notBefore Time, notAfter Time }    (Time: UTCTime or GeneralizedTime)


def _element(der: bytes, pos: int) -> tuple[int, int, int]:
    """The DER element at ``pos``: (tag, start of its contents, end of the element)."""
    tag, first = der[pos], der[pos + 1]
    pos += 2
    if first < 0x80:
        length = first
    else:
        count = first & 0x7F
        if count == 0 or count > 4:
            raise ValueError("unsupported DER length")
        length = int.from_bytes(der[pos:pos + count], "big")
        pos += count
    if pos + length > len(der):
        raise ValueError("truncated DER")
    return tag, pos, pos + length


def _tbs_fields(der: bytes) -> list[tuple[int, int, int]]:
    """(tag, start, end) of each field of the TBSCertificate, the optional version dropped."""
    _, cert_body, _ = _element(der, 0)
    _, pos, tbs_end = _element(der, cert_body)
    fields: list[tuple[int, int, int]] = []
    while pos < tbs_end:
        tag, _, end = _element(der, pos)
        if not (tag == 0xA0 and not fields):
            fields.append((tag, pos, end))
        pos = end
    return fields


def raw_spki(cert: x509.Certificate) -> bytes:
    """The SubjectPublicKeyInfo exactly as encoded inside the certificate."""
    der = cert_der(cert)
    _, start, end = _tbs_fields(der)[5]
    return der[start:end]


def _time(tag: int, text: str) -> dt.datetime:
    if tag == 0x17:  # UTCTime YYMMDDHHMMSSZ; RFC 5280: YY < 50 is 20YY
        year = int(text[:2])
        text = f"{year + (2000 if year < 50 else 1900)}{text[2:]}"
    elif tag != 0x18:  # GeneralizedTime YYYYMMDDHHMMSSZ
        raise ValueError(f"unexpected time tag {tag:#x}")
    return dt.datetime.strptime(text, "%Y%m%d%H%M%SZ").replace(tzinfo=dt.UTC)


def validity(cert: x509.Certificate) -> tuple[dt.datetime, dt.datetime]:
    """(notBefore, notAfter), timezone-aware UTC."""
    der = cert_der(cert)
    _, start, _ = _tbs_fields(der)[3]
    _, pos, _ = _element(der, start)
    times = []
    for _ in range(2):
        tag, body, end = _element(der, pos)
        times.append(_time(tag, der[body:end].decode("ascii")))
        pos = end
    return times[0], times[1]


def expiry(cert: x509.Certificate) -> dt.datetime:
    return validity(cert)[1]


def ca_cert_hash(cert: x509.Certificate) -> str:
    """kubeadm's ``--discovery-token-ca-cert-hash`` for the CA ``cert``."""
    return "sha256:" + hashlib.sha256(raw_spki(cert)).hexdigest()


def holds_key(cert: x509.Certificate, key: Key) -> bool:
    """True when ``key`` is the private half of ``cert``'s public key."""
    mine = key.public_key().public_bytes(encoding=serialization.Encoding.DER,
                                         format=serialization.PublicFormat.SubjectPublicKeyInfo)
    return mine == raw_spki(cert)


def signed_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    """True when ``cert`` names ``ca`` as its issuer and ``ca``'s key made its signature."""
    algorithm = cert.signature_hash_algorithm
    if cert.issuer != ca.subject or algorithm is None:
        return False
    public = ca.public_key()
    try:
        if isinstance(public, rsa.RSAPublicKey):
            public.verify(cert.signature, cert.tbs_certificate_bytes, padding.PKCS1v15(), algorithm)
        elif isinstance(public, ec.EllipticCurvePublicKey):
            public.verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(algorithm))
        else:
            return False
    except (InvalidSignature, ValueError):
        return False
    return True
