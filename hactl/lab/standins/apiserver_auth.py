"""Authentication and authorization of the stand-in kube-apiserver.

Authentication is real: X.509 client certificates verified against ``--client-ca-file``
(user = CN, groups = O), and bootstrap tokens (``Bearer <id>.<secret>`` checked against the Secret
``kube-system/bootstrap-token-<id>``, honouring ``expiration`` and ``usage-bootstrap-authentication``).

Authorization is a fixed policy that reproduces what kubeadm's RBAC bindings grant the identities
a kubeadm cluster uses (the stand-in does not evaluate RBAC objects); see docs/standins/apiserver.md.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import hmac
import re
from collections.abc import Callable
from typing import Any

from .apiserver_resources import parse_time

__all__ = ["Identity", "Unauthorized", "authenticate", "authorize"]

TOKEN_RE = re.compile(r"^([a-z0-9]{6})\.([a-z0-9]{16})$")
FULL_GROUPS = {"system:masters", "kubeadm:cluster-admins"}
FULL_USERS = {"system:kube-controller-manager", "system:kube-scheduler", "system:apiserver"}
PUBLIC_PATHS = {"/livez", "/readyz", "/healthz", "/version", "/version/"}


class Unauthorized(Exception):
    """Credentials were presented but are not valid (HTTP 401)."""


@dataclasses.dataclass(frozen=True)
class Identity:
    user: str
    groups: tuple[str, ...]

    @property
    def anonymous(self) -> bool:
        return self.user == "system:anonymous"


def _cert_identity(peercert: dict[str, Any]) -> Identity | None:
    cn, orgs = "", []
    for rdn in peercert.get("subject", ()):
        for attr, value in rdn:
            if attr == "commonName":
                cn = value
            elif attr == "organizationName":
                orgs.append(value)
    if not cn:
        return None
    return Identity(cn, (*orgs, "system:authenticated"))


def _b64(data: dict[str, str], key: str) -> str:
    raw = data.get(key)
    return base64.b64decode(raw).decode() if raw else ""


def token_identity(token: str, get_secret: Callable[[str, str], dict[str, Any] | None],
                   now: dt.datetime | None = None) -> Identity:
    m = TOKEN_RE.match(token)
    if not m:
        raise Unauthorized("invalid bearer token")
    token_id, token_secret = m.groups()
    secret = get_secret("kube-system", f"bootstrap-token-{token_id}")
    if not secret or secret.get("type") != "bootstrap.kubernetes.io/token":
        raise Unauthorized("invalid bearer token")
    if secret.get("metadata", {}).get("deletionTimestamp"):
        raise Unauthorized("invalid bearer token")
    data = secret.get("data") or {}
    if not hmac.compare_digest(_b64(data, "token-secret").encode(), token_secret.encode()):
        raise Unauthorized("invalid bearer token")
    expires = parse_time(_b64(data, "expiration"))
    if expires is not None and expires <= (now or dt.datetime.now(dt.UTC)):
        raise Unauthorized("invalid bearer token")
    if _b64(data, "usage-bootstrap-authentication") != "true":
        raise Unauthorized("invalid bearer token")
    extra = [g.strip() for g in _b64(data, "auth-extra-groups").split(",") if g.strip()]
    extra = [g for g in extra if g.startswith("system:bootstrappers:")]
    return Identity(f"system:bootstrap:{token_id}",
                    ("system:bootstrappers", *extra, "system:authenticated"))


def authenticate(peercert: dict[str, Any] | None, authorization: str | None,
                 get_secret: Callable[[str, str], dict[str, Any] | None] | None) -> Identity:
    """Client certificate first, then a bearer token (only bootstrap tokens, and only with a
    ``get_secret`` — None when ``--enable-bootstrap-token-auth`` is off), else anonymous."""
    if peercert:
        ident = _cert_identity(peercert)
        if ident is not None:
            return ident
    if authorization:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip() or get_secret is None:
            raise Unauthorized("invalid authorization header")
        return token_identity(token.strip(), get_secret)
    return Identity("system:anonymous", ("system:unauthenticated",))


# -- authorization ------------------------------------------------------------------------------

_BOOTSTRAP_CONFIGMAPS = {("kube-system", "kubeadm-config"), ("kube-system", "kubelet-config"),
                         ("kube-system", "kube-proxy"), ("kube-public", "cluster-info")}
_READ = {"get", "list", "watch"}


def authorize(ident: Identity, verb: str, resource: str | None, namespace: str | None,
              name: str | None, path: str) -> bool:
    """May ``ident`` do ``verb`` on ``resource`` (None for a non-resource ``path``)?"""
    groups = set(ident.groups)
    if groups & FULL_GROUPS or ident.user in FULL_USERS:
        return True
    if resource is None:
        if path in PUBLIC_PATHS or path.startswith(("/livez/", "/readyz/", "/healthz/")):
            return True
        return "system:authenticated" in groups and verb == "get" and (
            path in ("/api", "/apis") or path.startswith(("/api/", "/apis/", "/openapi/")))
    if resource == "selfsubjectaccessreviews":
        return verb == "create" and "system:authenticated" in groups  # system:basic-user
    target = (namespace or "", name or "")
    if resource == "configmaps" and verb == "get" and target == ("kube-public", "cluster-info"):
        return True  # kubeadm's bootstrap-signer-clusterinfo Role, bound to system:anonymous
    if "system:nodes" in groups:
        if resource in ("nodes", "pods", "certificatesigningrequests"):
            return True
        if resource == "leases" and namespace == "kube-node-lease":
            return True
        return resource in ("configmaps", "namespaces", "serviceaccounts") and verb in _READ
    if "system:bootstrappers" in groups:
        if resource == "configmaps":
            return verb == "get" and target in _BOOTSTRAP_CONFIGMAPS
        if resource == "secrets":
            return verb == "get" and target == ("kube-system", "kubeadm-certs")
        if resource == "nodes":
            return verb in {"get", "list", "create", "update", "patch"}
        if resource == "certificatesigningrequests":
            return verb in {"get", "list", "create"}
        if resource == "leases" and namespace == "kube-node-lease":
            return True
    return False


def forbidden_message(ident: Identity, verb: str, resource: str | None, group: str,
                      namespace: str | None, name: str | None, path: str) -> str:
    if resource is None:
        return (f'forbidden: User "{ident.user}" cannot {verb} path "{path}"')
    what = f'{resource} "{name}"' if name else resource
    scope = f'in the namespace "{namespace}"' if namespace else "at the cluster scope"
    return (f'{what} is forbidden: User "{ident.user}" cannot {verb} resource "{resource}" '
            f'in API group "{group}" {scope}')
