"""csrapproving + csrsigning of the stand-in kube-controller-manager (kubelet TLS bootstrap).

* approve: a CSR for signer ``kubernetes.io/kube-apiserver-client-kubelet`` whose request is
  ``O=system:nodes, CN=system:node:<name>`` with usages within {digital signature, key
  encipherment, client auth} is approved ("AutoApproved") when it was created by a bootstrap
  token (group ``system:bootstrappers``, what kubeadm's ``kubeadm:node-autoapprove-bootstrap``
  binding allows) or by the node itself (``spec.username`` equals the CN: a renewal).
* sign: approved CSRs of the client signers get a certificate from
  ``--cluster-signing-cert-file``/``--cluster-signing-key-file``, valid for
  ``spec.expirationSeconds`` or ``--cluster-signing-duration`` (8760h), never past the CA,
  backdated 5 minutes like the real signer.
"""

from __future__ import annotations

import base64
import datetime as dt
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .kubeapi import ApiError, Client
from .leader import log, parse_duration

__all__ = ["CSRController"]

CSRS = "/apis/certificates.k8s.io/v1/certificatesigningrequests"
KUBELET_CLIENT = "kubernetes.io/kube-apiserver-client-kubelet"
CLIENT_SIGNERS = (KUBELET_CLIENT, "kubernetes.io/kube-apiserver-client")
CLIENT_USAGES = {"digital signature", "key encipherment", "client auth"}


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _stamp(t: dt.datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def _request(csr: dict[str, Any]) -> x509.CertificateSigningRequest:
    raw = base64.b64decode((csr.get("spec") or {}).get("request") or "")
    return x509.load_pem_x509_csr(raw)


def _subject(req: x509.CertificateSigningRequest) -> tuple[str, list[str]]:
    cn = [a.value for a in req.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    orgs = [a.value for a in req.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]
    return (str(cn[0]) if cn else ""), [str(o) for o in orgs]


def _conditions(csr: dict[str, Any]) -> set[str]:
    return {str(c.get("type")) for c in (csr.get("status") or {}).get("conditions") or []}


class CSRController:
    def __init__(self, client: Client, flags: dict[str, str], approve: bool, sign: bool) -> None:
        self.client, self.approve, self.sign = client, approve, sign
        self.duration = parse_duration(flags.get("cluster-signing-duration", "8760h"))
        self.ca_cert: x509.Certificate | None = None
        self.ca_key: Any = None
        cert_file = flags.get("cluster-signing-cert-file")
        key_file = flags.get("cluster-signing-key-file")
        if sign and cert_file and key_file:
            with open(cert_file, "rb") as handle:
                self.ca_cert = x509.load_pem_x509_certificate(handle.read())
            with open(key_file, "rb") as handle:
                self.ca_key = serialization.load_pem_private_key(handle.read(), None)

    def reconcile(self) -> None:
        for csr in self.client.get(CSRS)["items"]:
            conds = _conditions(csr)
            if conds & {"Denied", "Failed"}:
                continue
            try:
                if self.approve and "Approved" not in conds and self._approvable(csr):
                    csr = self._do_approve(csr)
                    conds = _conditions(csr)
                if (self.sign and self.ca_key is not None and "Approved" in conds
                        and not (csr.get("status") or {}).get("certificate")
                        and csr["spec"].get("signerName") in CLIENT_SIGNERS):
                    self._do_sign(csr)
            except ApiError as exc:
                if exc.code not in (404, 409):
                    raise

    def _approvable(self, csr: dict[str, Any]) -> bool:
        spec = csr.get("spec") or {}
        if spec.get("signerName") != KUBELET_CLIENT:
            return False
        try:
            cn, orgs = _subject(_request(csr))
        except ValueError:
            return False
        if orgs != ["system:nodes"] or not cn.startswith("system:node:"):
            return False
        if not set(spec.get("usages") or []) <= CLIENT_USAGES:
            return False
        groups = set(spec.get("groups") or [])
        return "system:bootstrappers" in groups or spec.get("username") == cn

    def _do_approve(self, csr: dict[str, Any]) -> dict[str, Any]:
        now = _stamp(_now())
        csr.setdefault("status", {}).setdefault("conditions", []).append({
            "type": "Approved", "status": "True", "reason": "AutoApproved",
            "message": "Auto approving kubelet client certificate after SubjectAccessReview.",
            "lastUpdateTime": now, "lastTransitionTime": now})
        name = csr["metadata"]["name"]
        log(f"csrapproving: approved {name} ({csr['spec'].get('username')})")
        result: dict[str, Any] = self.client.update(f"{CSRS}/{name}/approval", csr)
        return result

    def _do_sign(self, csr: dict[str, Any]) -> None:
        assert self.ca_cert is not None
        req = _request(csr)
        now = _now()
        seconds = float(csr["spec"].get("expirationSeconds") or self.duration)
        not_after = min(now + dt.timedelta(seconds=seconds),
                        self.ca_cert.not_valid_after.replace(tzinfo=dt.UTC))
        usages = set(csr["spec"].get("usages") or [])
        key_enc = "key encipherment" in usages or isinstance(req.public_key(), rsa.RSAPublicKey)
        cert = (
            x509.CertificateBuilder().subject_name(req.subject)
            .issuer_name(self.ca_cert.subject).public_key(req.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(not_after)
            .add_extension(x509.KeyUsage(True, False, key_enc, False, False, False, False,
                                         False, False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                self.ca_cert.public_key()), critical=False)  # type: ignore[arg-type]
            .sign(self.ca_key, hashes.SHA256())
        )
        pem = cert.public_bytes(serialization.Encoding.PEM)
        csr["status"]["certificate"] = base64.b64encode(pem).decode()
        self.client.update(f"{CSRS}/{csr['metadata']['name']}/status", csr)
        log(f"csrsigning: signed {csr['metadata']['name']} for "
            f"{_subject(req)[0]} until {_stamp(not_after)}")

