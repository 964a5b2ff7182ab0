"""The command line of each tool hactl runs on the hosts: one builder per tool, one flag set.

``etcdctl``, ``kubectl``, ``kubeadm`` and ``systemctl`` are invoked through these functions
only, by the facts (which render the argv into their sh snippets with the transport's joiner),
the steps and their helpers (:mod:`hactl.plan.commands` composes them) and ``hactl check``. A
flag, a certificate path or a timeout therefore changes in one place, and what the plan shows
for a step is the argv the step runs.

Pure: argv tuples only (no I/O, no joining: only the transport joins argv).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from hactl import hostlayout
from hactl.transport.base import Argv

# -- etcdctl ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class EtcdClientTLS:
    """The CA and client certificate etcdctl presents to a member."""

    cacert: str
    cert: str
    key: str


EXTERNAL_ETCD = EtcdClientTLS(hostlayout.ETCD_CA_CERT, hostlayout.ETCD_CLIENT_CERT,
                              hostlayout.ETCD_CLIENT_KEY)
"""External etcd (hactl's members): the healthcheck client hactl issues with each member."""
STACKED_ETCD = EtcdClientTLS(hostlayout.K8S_ETCD_CA, hostlayout.STACKED_ETCD_CLIENT_CERT,
                             hostlayout.STACKED_ETCD_CLIENT_KEY)
"""kubeadm's stacked etcd on the masters: kubeadm's healthcheck client."""

ETCDCTL_DIAL_TIMEOUT = "2s"
"""Connecting to one endpoint (etcdctl's own default, spelled out)."""
ETCDCTL_TIMEOUT = "10s"
"""A step's etcdctl call: membership changes wait for the raft commit of the change."""
ETCDCTL_READ_TIMEOUT = "5s"
"""Reads asked of many hosts at once or in a poll (the probe, ``hactl check``, the waits on
kubeadm's stacked etcd): a member that does not answer must not hold a plan for long."""
ETCDCTL_HEALTH_TIMEOUT = "3s"
"""``endpoint health`` in a step's wait loop: a stopped member is polled again, not waited for."""


def etcdctl(endpoints: Sequence[str], *args: str, tls: EtcdClientTLS = EXTERNAL_ETCD,
            timeout: str = ETCDCTL_TIMEOUT) -> Argv:
    """etcdctl (API v3, over TLS with ``tls``'s client certificate) against ``endpoints``,
    answering in JSON (IDs as decimal numbers; the facts' parsers read it)."""
    return (
        "etcdctl",
        f"--endpoints={','.join(endpoints)}",
        f"--cacert={tls.cacert}",
        f"--cert={tls.cert}",
        f"--key={tls.key}",
        f"--dial-timeout={ETCDCTL_DIAL_TIMEOUT}",
        f"--command-timeout={timeout}",
        "-w",
        "json",
        *args,
    )


# -- kubectl ---------------------------------------------------------------------------------

KUBECTL_TIMEOUT = "10s"
"""``--request-timeout`` of a step's or ``hactl check``'s kubectl call."""
KUBECTL_READ_TIMEOUT = "5s"
"""``--request-timeout`` of the probe's kubectl call (a plan must not wait long for an API)."""
KUBECTL_NO_CACHE = "/dev/null/hactl-no-cache"
"""A ``--cache-dir`` that cannot be created: kubectl then writes no discovery cache on the host."""


def kubectl(*args: str, timeout: str = KUBECTL_TIMEOUT,
            kubeconfig: str = hostlayout.ADMIN_CONF) -> Argv:
    """kubectl as cluster admin (``admin.conf``: its server is the control-plane endpoint, the
    load balancer) with a bounded request time and no discovery cache written."""
    return ("kubectl", "--kubeconfig", kubeconfig, f"--request-timeout={timeout}",
            f"--cache-dir={KUBECTL_NO_CACHE}", *args)


# -- kubeadm ---------------------------------------------------------------------------------


def kubeadm(*args: str) -> Argv:
    """kubeadm. It has no request timeout of its own that hactl sets: every call is bounded by
    the transport's timeout (the step's, e.g. 300 s for a phase or a reset), which kills it on
    the host when it overruns. Secrets never go in ``args``: they are in a 0600 ``--config``."""
    return ("kubeadm", *args)


# -- systemctl -------------------------------------------------------------------------------


def systemctl(*args: str) -> Argv:
    """systemctl. Starts of Type=notify units that could wait for a quorum use ``--no-block``
    (the caller waits for the member itself); other calls are bounded by the transport."""
    return ("systemctl", *args)


# -- apt (host preparation) ------------------------------------------------------------------

APT_OPTIONS = ("-q", "-y", "-o", "Dpkg::Options::=--force-confold")
"""Quiet, no questions, and a configuration file changed on the host is kept (never replaced
by the package's without the operator seeing it)."""


def apt_get(*args: str) -> Argv:
    """apt-get, non-interactive (``env DEBIAN_FRONTEND=noninteractive``: no debconf prompt)."""
    return ("env", "DEBIAN_FRONTEND=noninteractive", "apt-get", *APT_OPTIONS, *args)


def apt_mark(*args: str) -> Argv:
    return ("apt-mark", *args)
