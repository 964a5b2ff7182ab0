"""The plan's vocabulary: what the diff, the refusals, the planner and the plan output share.

An :class:`Address` names what a change is about: a :class:`Component`, the host it is on (if
any) and an :class:`Aspect` of it (if any). Its ``str()`` is the address the plan prints and
saves (``etcd.member[etcd02]``, ``lb[lb01].haproxy_cfg``, ``cluster.bootstrap-token``);
:meth:`Address.parse` reads one back (a saved plan) and is the only code that splits an address
string. The planner and the refusals decide on the fields, never on the string.

Pure: imports nothing of hactl.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Component(enum.StrEnum):
    """What a change is about (the part of an address before the host)."""

    PKI_ETCD_CA = "pki.etcd-ca"
    """the etcd CA (kept on the etcd members, never on the operator)"""
    PKI_ETCD = "pki.etcd"
    """a member's CA copy and server/peer certificates"""
    ETCD_MEMBER = "etcd.member"
    """an etcd member"""
    LB = "lb"
    """a load balancer"""
    MASTER = "master"
    """a control-plane node"""
    WORKER = "worker"
    """a worker node"""
    CLUSTER = "cluster"
    """cluster-wide (a join token, the certificate key)"""


class Aspect(enum.StrEnum):
    """A part of a component (the part of an address after the host)."""

    HAPROXY_CFG = "haproxy_cfg"
    SERVICE = "service"
    KUBELET = "kubelet"
    BOOTSTRAP_TOKEN = "bootstrap-token"
    CERTIFICATE_KEY = "certificate-key"


@dataclass(frozen=True, order=True)
class Address:
    component: Component
    host: str | None = None
    aspect: Aspect | None = None

    def __str__(self) -> str:
        text = self.component.value
        if self.host is not None:
            text += f"[{self.host}]"
        if self.aspect is not None:
            text += f".{self.aspect.value}"
        return text

    @staticmethod
    def parse(text: str) -> Address:
        """The inverse of ``str()`` (reading a saved plan); ValueError when ``text`` is none."""
        for component in sorted(Component, key=lambda c: -len(c.value)):
            if not text.startswith(component.value):
                continue
            rest = text[len(component.value):]
            host: str | None = None
            if rest.startswith("["):
                end = rest.find("]")
                if end <= 1:
                    break
                host, rest = rest[1:end], rest[end + 1:]
            if not rest:
                return Address(component, host)
            if rest.startswith("."):
                try:
                    return Address(component, host, Aspect(rest[1:]))
                except ValueError:
                    break
        raise ValueError(f"{text!r} is not a plan address")


ETCD_CA = Address(Component.PKI_ETCD_CA)
BOOTSTRAP_TOKEN = Address(Component.CLUSTER, aspect=Aspect.BOOTSTRAP_TOKEN)
CERTIFICATE_KEY = Address(Component.CLUSTER, aspect=Aspect.CERTIFICATE_KEY)
