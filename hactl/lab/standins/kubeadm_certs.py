"""kubeadm's copycerts: the certificate key, the sealed ``kube-system/kubeadm-certs`` Secret.

Format (the same as kubeadm's cmd/kubeadm/app/phases/copycerts and util/crypto):
- certificate key: 32 random bytes, hex encoded (64 characters) — an AES-256 key;
- each file is sealed with AES-256-GCM, a fresh 12-byte nonce *prepended* to the ciphertext+tag
  (Go's ``gcm.Seal(nonce, nonce, data, nil)``); the Secret's ``data`` holds those bytes (base64 on
  the wire, as any Secret);
- data keys are the file names under the certificates dir with "/" replaced by "-":
  ca.crt ca.key front-proxy-ca.crt front-proxy-ca.key sa.key sa.pub, stacked etcd: etcd-ca.crt
  etcd-ca.key; external etcd: external-etcd-ca.crt external-etcd.crt external-etcd.key;
- the Secret has an ownerReference (controller, blockOwnerDeletion) to a bootstrap-token Secret
  whose expiration is 2 h ahead: when the token expires the token cleaner deletes it and the
  garbage collector deletes kubeadm-certs with it.
"""

from __future__ import annotations

import base64
import binascii
import os
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .kubeadm_api import Api, ApiError, ns_path
from .kubeadm_common import CERTS_TTL, PKI_DIR, KubeadmError, P, knob_seconds, out, write_file
from .kubeadm_config import Config
from .kubeadm_token import create_token_secret, generate_token

SECRET = "kubeadm-certs"
NONCE_SIZE = 12


def generate_certificate_key() -> str:
    return os.urandom(32).hex()


def _aes(key_hex: str) -> AESGCM:
    try:
        key = binascii.unhexlify(key_hex)
    except (binascii.Error, ValueError) as exc:
        raise KubeadmError(f"error decoding certificate key: encoding/hex: {exc}") from exc
    if len(key) not in (16, 24, 32):
        raise KubeadmError(f"crypto/aes: invalid key size {len(key)}")
    return AESGCM(key)


def seal(data: bytes, key_hex: str, nonce: bytes | None = None) -> bytes:
    nonce = nonce if nonce is not None else os.urandom(NONCE_SIZE)
    return nonce + _aes(key_hex).encrypt(nonce, data, None)


def unseal(blob: bytes, key_hex: str) -> bytes:
    aes = _aes(key_hex)
    if len(blob) < NONCE_SIZE:
        raise KubeadmError("size of data is less than the nonce")
    try:
        return aes.decrypt(blob[:NONCE_SIZE], blob[NONCE_SIZE:], None)
    except InvalidTag as exc:
        raise KubeadmError("cipher: message authentication failed") from exc


def files_to_transfer(cfg: Config) -> dict[str, str]:
    """Secret data key -> file path, like kubeadm's certsToTransfer."""
    files = {name: f"{PKI_DIR}/{name}" for name in
             ("ca.crt", "ca.key", "front-proxy-ca.crt", "front-proxy-ca.key", "sa.key", "sa.pub")}
    if cfg.etcd_external is None:
        files["etcd-ca.crt"] = f"{PKI_DIR}/etcd/ca.crt"
        files["etcd-ca.key"] = f"{PKI_DIR}/etcd/ca.key"
    else:  # always the three entries, an empty path too (it uploads as an empty entry)
        ext = cfg.etcd_external
        for key, field in (("external-etcd-ca.crt", "caFile"), ("external-etcd.crt", "certFile"),
                           ("external-etcd.key", "keyFile")):
            files[key] = str(ext.get(field) or "")
    return files


def upload_certs(api: Api, cfg: Config, key_hex: str) -> None:
    out(f'[upload-certs] Storing the certificates in Secret "{SECRET}" in the "kube-system" Namespace')
    data: dict[str, str] = {}
    for name, path in files_to_transfer(cfg).items():
        try:
            with open(P(path), "rb") as handle:
                raw = handle.read()
        except FileNotFoundError:  # getDataFromDisk: a missing file is an empty entry
            data[name] = ""
            continue
        data[name] = base64.b64encode(seal(raw, key_hex)).decode()
    ttl = knob_seconds("kubeadm", "certsTTLSeconds", CERTS_TTL)
    token = generate_token()
    owner = create_token_secret(
        api, token, ttl, usages=(), groups=(),
        description="Proxy for managing TTL for the kubeadm-certs secret",
    )
    secret: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": SECRET,
            "namespace": "kube-system",
            "ownerReferences": [{
                "apiVersion": "v1",
                "kind": "Secret",
                "name": owner["metadata"]["name"],
                "uid": owner["metadata"].get("uid", ""),
                "controller": True,
                "blockOwnerDeletion": True,
            }],
        },
        "type": "Opaque",
        "data": data,
    }
    api.apply(ns_path("kube-system", "secrets"), secret)


def download_certs(api: Api, cfg: Config, key_hex: str) -> None:
    out(f'[download-certs] Downloading the certificates in Secret "{SECRET}" in the "kube-system" Namespace')
    try:
        secret = api.get(ns_path("kube-system", "secrets", SECRET))
    except ApiError as exc:
        if exc.status == 404:
            msg = (f'Secret "{SECRET}" was not found in the "kube-system" Namespace. This Secret might '
                   "have expired. Please, run `kubeadm init phase upload-certs --upload-certs` on a "
                   "control plane to generate a new one")
        else:
            msg = str(exc)
        raise KubeadmError(f"error downloading certs: error downloading the secret: {msg}",
                           phase="control-plane-prepare/download-certs") from exc
    try:  # getDataFromSecret: empty entries stay empty, the others are decrypted
        plain = {name: unseal(base64.b64decode(blob), key_hex) if blob else b""
                 for name, blob in (secret.get("data") or {}).items()}
    except KubeadmError as exc:
        raise KubeadmError(f"error downloading certs: error decoding secret data with provided key: {exc}",
                           phase="control-plane-prepare/download-certs") from exc
    for name, path in files_to_transfer(cfg).items():
        if name not in plain:  # DownloadCerts: a missing entry fails the join
            raise KubeadmError("error downloading certs: the Secret does not include the required certificate "
                               f"or key - name: {name}, path: {path}",
                               phase="control-plane-prepare/download-certs")
        if not plain[name]:  # "Not saving ... since it is empty in the kubeadm-certs Secret"
            continue
        mode = 0o600 if name.endswith(".key") else 0o644
        write_file(path, plain[name], mode)
    out(f"[download-certs] Saving the certificates to the folder: \"{PKI_DIR}\"")
