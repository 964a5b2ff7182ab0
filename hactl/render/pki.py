"""X.509 PKI for hactl: keys, CAs, leaf certificates, PEM, hashes.

A product module, run by hactl in the project's environment only. The lab's stand-ins do not use
it: they have their own implementation of kubeadm's contract
(:mod:`hactl.lab.standins.pkiutil`), so that a bug here cannot pass the lab's tests unseen
(docs/lab.md, "The stand-ins stand apart"); ``tests/standins/test_pkiutil.py`` checks the two
against each other and against ``openssl``. It imports nothing else of hactl.

Choices (the same as kubeadm's defaults, so that what hactl makes fits a kubeadm cluster):

- Keys are **RSA 2048** by default (kubeadm's ``encryptionAlgorithm: RSA-2048``); ECDSA P-256 is
  available with ``key_type="ecdsa"`` (kubeadm's ``ECDSA-P256``). Private keys are PEM in the
  "traditional" OpenSSL form kubeadm writes (``RSA PRIVATE KEY`` / ``EC PRIVATE KEY``).
- CAs live 10 years, leaf certificates 1 year; ``not_before`` is back-dated 5 minutes to tolerate
  clock skew between hosts.
- Usages: ``server`` → serverAuth, ``client`` → clientAuth, ``peer`` → both (etcd peers are
  servers and clients of each other).
- :func:`spki_sha256` is kubeadm's ``--discovery-token-ca-cert-hash``: SHA-256 of the DER
  SubjectPublicKeyInfo of the CA certificate, as ``sha256:<hex>``.

Everything here is pure except :func:`write_cert_key` / :func:`write_private_key`, which write
private keys with mode 0600.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import ipaddress
import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
KeyType = Literal["rsa", "ecdsa"]
Usage = Literal["server", "client", "peer"]
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_NETWORKS = (ipaddress.IPv4Network, ipaddress.IPv6Network)

RSA_KEY_SIZE = 2048
CA_DAYS = 3650
LEAF_DAYS = 365
BACKDATE = _dt.timedelta(minutes=5)

_EKU: dict[str, tuple[x509.ObjectIdentifier, ...]] = {
    "server": (ExtendedKeyUsageOID.SERVER_AUTH,),
    "client": (ExtendedKeyUsageOID.CLIENT_AUTH,),
    "peer": (ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH),
}


@dataclass(frozen=True)
class CertKey:
    """A certificate and its private key (a CA or a leaf)."""

    cert: x509.Certificate
    key: PrivateKey

    def cert_pem(self) -> bytes:
        return cert_to_pem(self.cert)

    def key_pem(self) -> bytes:
        """The private key as PEM. A secret: never log it or show it in a plan."""
        return key_to_pem(self.key)

    @property
    def common_name(self) -> str:
        return common_name(self.cert)

    @classmethod
    def from_pem(cls, cert_pem: bytes, key_pem: bytes) -> CertKey:
        cert, key = cert_from_pem(cert_pem), key_from_pem(key_pem)
        if not key_matches_cert(cert, key):
            raise ValueError(f"private key does not belong to certificate {common_name(cert)!r}")
        return cls(cert, key)


# -- keys --------------------------------------------------------------------------------------


def generate_key(key_type: KeyType = "rsa") -> PrivateKey:
    """A fresh private key: RSA 2048 (kubeadm's default) or ECDSA P-256."""
    if key_type == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=RSA_KEY_SIZE)
    if key_type == "ecdsa":
        return ec.generate_private_key(ec.SECP256R1())
    raise ValueError(f"unknown key type {key_type!r}; use 'rsa' or 'ecdsa'")


def key_to_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


def key_from_pem(data: bytes) -> PrivateKey:
    key = serialization.load_pem_private_key(data, password=None)
    if not isinstance(key, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey)):
        raise ValueError(f"unsupported private key type {type(key).__name__}; use RSA or ECDSA")
    return key


def public_key_pem(key: PrivateKey) -> bytes:
    """The public half as a PEM ``PUBLIC KEY`` (e.g. kubeadm's ``sa.pub``)."""
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


# -- certificates ------------------------------------------------------------------------------


def _utcnow() -> _dt.datetime:
    return _dt.datetime.now(_dt.UTC)


def _name(common_name: str, organizations: Iterable[str] = ()) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, org) for org in organizations]
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attrs)


def _key_usage(*, ca: bool, rsa_key: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=rsa_key and not ca,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def make_ca(
    common_name: str,
    *,
    days: int = CA_DAYS,
    key_type: KeyType = "rsa",
    key: PrivateKey | None = None,
    now: _dt.datetime | None = None,
) -> CertKey:
    """A self-signed CA (e.g. ``etcd-ca``, ``kubernetes``), valid ``days`` from ``now``."""
    key = key or generate_key(key_type)
    start = (now or _utcnow()) - BACKDATE
    subject = _name(common_name)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + BACKDATE + _dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            _key_usage(ca=True, rsa_key=isinstance(key, rsa.RSAPrivateKey)), critical=True
        )
        .add_extension(ski, critical=False)
        .sign(key, hashes.SHA256())
    )
    return CertKey(cert, key)


def issue(
    ca: CertKey,
    common_name: str,
    *,
    usage: Usage,
    organizations: Iterable[str] = (),
    dns_names: Iterable[str] = (),
    ip_addresses: Iterable[IPAddress | str] = (),
    days: int = LEAF_DAYS,
    key_type: KeyType = "rsa",
    key: PrivateKey | None = None,
    now: _dt.datetime | None = None,
) -> CertKey:
    """A leaf certificate signed by ``ca`` with subject ``O=<organizations>, CN=<common_name>``,
    the given SANs (DNS names and IP addresses, de-duplicated in order) and usage
    (``server``, ``client`` or ``peer`` = both)."""
    if usage not in _EKU:
        raise ValueError(f"unknown usage {usage!r}; use 'server', 'client' or 'peer'")
    key = key or generate_key(key_type)
    start = (now or _utcnow()) - BACKDATE
    dns = list(dict.fromkeys(dns_names))
    ips = list(dict.fromkeys(ipaddress.ip_address(ip) for ip in ip_addresses))
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca.key.public_key())
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name, organizations))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + BACKDATE + _dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            _key_usage(ca=False, rsa_key=isinstance(key, rsa.RSAPrivateKey)), critical=True
        )
        .add_extension(x509.ExtendedKeyUsage(list(_EKU[usage])), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False
        )
    )
    if dns or ips:
        names: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
        names += [x509.IPAddress(ip) for ip in ips]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return CertKey(builder.sign(ca.key, hashes.SHA256()), key)


def cert_to_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def cert_from_pem(data: bytes) -> x509.Certificate:
    """The first certificate in ``data``."""
    return x509.load_pem_x509_certificate(data)


# -- read-outs ---------------------------------------------------------------------------------


def spki_sha256(cert: x509.Certificate) -> str:
    """kubeadm's discovery-token-ca-cert-hash: ``sha256:`` + hex SHA-256 of the DER SPKI."""
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return "sha256:" + hashlib.sha256(spki).hexdigest()


def not_before(cert: x509.Certificate) -> _dt.datetime:
    """Start of validity, timezone-aware UTC (works on cryptography 38 and 42+)."""
    value = getattr(cert, "not_valid_before_utc", None)
    if value is None:
        value = cert.not_valid_before.replace(tzinfo=_dt.UTC)
    assert isinstance(value, _dt.datetime)
    return value


def not_after(cert: x509.Certificate) -> _dt.datetime:
    """Expiry, timezone-aware UTC (works on cryptography 38 and 42+)."""
    value = getattr(cert, "not_valid_after_utc", None)
    if value is None:
        value = cert.not_valid_after.replace(tzinfo=_dt.UTC)
    assert isinstance(value, _dt.datetime)
    return value


def expires_in(cert: x509.Certificate, now: _dt.datetime | None = None) -> _dt.timedelta:
    """Time left until expiry (negative once expired)."""
    return not_after(cert) - (now or _utcnow())


def common_name(cert: x509.Certificate) -> str:
    attrs = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(attrs[0].value) if attrs else ""


def organizations(cert: x509.Certificate) -> list[str]:
    return [str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]


def subject_alt_names(cert: x509.Certificate) -> tuple[list[str], list[IPAddress]]:
    """``(dns_names, ip_addresses)`` of the SAN extension (empty when there is none)."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return [], []
    ips = [ip for ip in san.get_values_for_type(x509.IPAddress) if not isinstance(ip, _NETWORKS)]
    return list(san.get_values_for_type(x509.DNSName)), ips


def usages(cert: x509.Certificate) -> set[str]:
    """``{"server", "client"}`` subset from the extended key usage."""
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return set()
    found = set()
    if ExtendedKeyUsageOID.SERVER_AUTH in eku:
        found.add("server")
    if ExtendedKeyUsageOID.CLIENT_AUTH in eku:
        found.add("client")
    return found


def is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def key_matches_cert(cert: x509.Certificate, key: PrivateKey) -> bool:
    fmt = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return cert.public_key().public_bytes(*fmt) == key.public_key().public_bytes(*fmt)


def issued_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    """True when ``ca``'s key signed ``cert`` and the names chain (cryptography 38 compatible)."""
    if cert.issuer != ca.subject or cert.signature_hash_algorithm is None:
        return False
    public = ca.public_key()
    try:
        if isinstance(public, rsa.RSAPublicKey):
            public.verify(
                cert.signature,
                cert.tbs_certificate_bytes,
                padding.PKCS1v15(),
                cert.signature_hash_algorithm,
            )
        elif isinstance(public, ec.EllipticCurvePublicKey):
            public.verify(
                cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(cert.signature_hash_algorithm)
            )
        else:
            return False
    except Exception:  # InvalidSignature and malformed signatures alike
        return False
    return True


# -- files (the only I/O here) -----------------------------------------------------------------


def _write(path: str, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    os.fchmod(fd, mode)  # O_CREAT's mode is ignored when the file already existed
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def write_private_key(path: str, pem: bytes) -> None:
    """Write ``pem`` to ``path`` with mode 0600, also when the file already existed."""
    _write(path, pem, 0o600)


def write_cert_key(directory: str, name: str, pair: CertKey) -> tuple[str, str]:
    """Write ``<name>.crt`` (0644) and ``<name>.key`` (0600) into ``directory``; return the paths."""
    os.makedirs(directory, exist_ok=True)
    crt, key = os.path.join(directory, f"{name}.crt"), os.path.join(directory, f"{name}.key")
    _write(crt, pair.cert_pem(), 0o644)
    write_private_key(key, pair.key_pem())
    return crt, key
