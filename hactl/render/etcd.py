"""etcd member configuration: ``/etc/etcd/etcd.env`` and ``/etc/systemd/system/etcd.service``.

Every member gets full TLS on both sides (clients and peers present certificates signed by the
etcd CA: ``*_CLIENT_CERT_AUTH=true``). Certificates live under ``/etc/etcd/pki/`` with kubeadm's
file names (see :mod:`hactl.render.etcd_pki`). ``ETCD_INITIAL_CLUSTER`` lists the members the new
member must know: all of them for a ``new`` cluster; for a member added to a running cluster
(``existing``, after ``etcdctl member add``) the current members plus the new one.

A member also listens on ``https://127.0.0.1:<clientPort>`` (for etcdctl on the host), except
when its own address is a loopback address (tests), where that would be a duplicate.
"""

from __future__ import annotations

import ipaddress
import re
import shlex
from collections.abc import Sequence
from typing import Literal

from hactl import hostlayout
from hactl.render.files import RenderedFile, public
from hactl.render.net import host_port, safe_token
from hactl.spec.models import Cluster, Host

# The files, as :mod:`hactl.hostlayout` names them (one spelling for renderers, facts and steps).
ENV_PATH = hostlayout.ETCD_ENV
UNIT_PATH = hostlayout.ETCD_UNIT
BINARY = hostlayout.ETCD_BINARY
PKI_DIR = hostlayout.ETCD_PKI_DIR
CA_CERT = hostlayout.ETCD_CA_CERT
SERVER_CERT, SERVER_KEY = hostlayout.ETCD_SERVER_CERT, hostlayout.ETCD_SERVER_KEY
PEER_CERT, PEER_KEY = hostlayout.ETCD_PEER_CERT, hostlayout.ETCD_PEER_KEY
HEALTHCHECK_CERT = hostlayout.ETCD_CLIENT_CERT
HEALTHCHECK_KEY = hostlayout.ETCD_CLIENT_KEY
SNAPSHOT_COUNT = 10000  # kubeadm's value: smaller WAL replay after a restart

ClusterState = Literal["new", "existing"]


def client_url(host: Host, cluster: Cluster) -> str:
    return f"https://{host_port(host.address, cluster.etcd.client_port)}"


def peer_url(host: Host, cluster: Cluster) -> str:
    return f"https://{host_port(host.address, cluster.etcd.peer_port)}"


def client_endpoints(cluster: Cluster) -> list[str]:
    """``https://<address>:<clientPort>`` of every member, in spec order (kubeadm's
    ``etcd.external.endpoints``, etcdctl's ``--endpoints``)."""
    return [client_url(host, cluster) for host in cluster.etcd_members]


def initial_cluster(cluster: Cluster, members: Sequence[Host] | None = None) -> str:
    """``etcd01=https://10.0.0.21:2380,…`` for ``members`` (default: every etcd member)."""
    hosts = cluster.etcd_members if members is None else members
    return ",".join(f"{host.name}={peer_url(host, cluster)}" for host in hosts)


def _member(cluster: Cluster, name: str) -> Host:
    for host in cluster.etcd_members:
        if host.name == name:
            return host
    known = ", ".join(h.name for h in cluster.etcd_members) or "none"
    raise KeyError(
        f"{name!r} is not an etcd member of {cluster.metadata.name!r} (members: {known})"
    )


def etcd_environment(
    cluster: Cluster,
    name: str,
    *,
    state: ClusterState = "new",
    members: Sequence[Host] | None = None,
) -> dict[str, str]:
    """The ``ETCD_*`` variables of member ``name`` (ordered as rendered)."""
    host = _member(cluster, name)
    hosts = list(cluster.etcd_members if members is None else members)
    if all(h.name != name for h in hosts):
        raise ValueError(f"ETCD_INITIAL_CLUSTER must include the member itself ({name!r})")
    listen_clients = [client_url(host, cluster)]
    if not ipaddress.ip_address(host.address).is_loopback:
        listen_clients.append(f"https://127.0.0.1:{cluster.etcd.client_port}")
    return {
        "ETCD_NAME": host.name,
        "ETCD_DATA_DIR": cluster.etcd.data_dir,
        "ETCD_LISTEN_PEER_URLS": peer_url(host, cluster),
        "ETCD_LISTEN_CLIENT_URLS": ",".join(listen_clients),
        "ETCD_INITIAL_ADVERTISE_PEER_URLS": peer_url(host, cluster),
        "ETCD_ADVERTISE_CLIENT_URLS": client_url(host, cluster),
        "ETCD_INITIAL_CLUSTER": initial_cluster(cluster, hosts),
        "ETCD_INITIAL_CLUSTER_STATE": state,
        "ETCD_INITIAL_CLUSTER_TOKEN": cluster.metadata.name,
        "ETCD_SNAPSHOT_COUNT": str(SNAPSHOT_COUNT),
        "ETCD_CERT_FILE": SERVER_CERT,
        "ETCD_KEY_FILE": SERVER_KEY,
        "ETCD_TRUSTED_CA_FILE": CA_CERT,
        "ETCD_CLIENT_CERT_AUTH": "true",
        "ETCD_PEER_CERT_FILE": PEER_CERT,
        "ETCD_PEER_KEY_FILE": PEER_KEY,
        "ETCD_PEER_TRUSTED_CA_FILE": CA_CERT,
        "ETCD_PEER_CLIENT_CERT_AUTH": "true",
    }


def render_etcd_env(
    cluster: Cluster,
    name: str,
    *,
    state: ClusterState = "new",
    members: Sequence[Host] | None = None,
) -> str:
    """``/etc/etcd/etcd.env`` for member ``name`` (a systemd ``EnvironmentFile``). Every value
    is one token inside double quotes; one that could end the quotes or the line (a newline, a
    quote, a backslash, ``$``, an IPv6 zone) raises :class:`~hactl.render.net.UnsafeValueError`."""
    env = etcd_environment(cluster, name, state=state, members=members)
    lines = [
        f"# Rendered by hactl for etcd member {safe_token(name, 'the member name')} of cluster "
        f"{safe_token(cluster.metadata.name, 'the cluster name')}."
    ]
    lines += [f'{key}="{safe_token(value, key)}"' for key, value in env.items()]
    return "\n".join(lines) + "\n"


_ENV_LINE = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)=(.*)$")


def parse_env_file(text: str) -> dict[str, str]:
    """Parse a systemd ``EnvironmentFile`` as rendered here (``KEY="value"`` or ``KEY=value``;
    comments and blank lines skipped). Used by tests and by the etcd facts."""
    env: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        match = _ENV_LINE.match(line)
        if not match:
            raise ValueError(f"line {number}: not KEY=value: {raw!r}")
        key, value = match.groups()
        parts = shlex.split(value) if value else [""]
        env[key] = " ".join(parts)
    return env


def render_etcd_unit(cluster: Cluster) -> str:
    """``/etc/systemd/system/etcd.service``. ``Type=notify``: etcd reports ready only once it has
    joined a quorum, so the members of a new cluster must be started together (``--no-block``)."""
    return "\n".join(
        [
            f"# Rendered by hactl for cluster {safe_token(cluster.metadata.name, 'the cluster name')}.",
            "[Unit]",
            "Description=etcd key-value store (managed by hactl)",
            "Documentation=https://etcd.io/docs/",
            "After=network-online.target",
            "Wants=network-online.target",
            "",
            "[Service]",
            "Type=notify",
            f"EnvironmentFile={ENV_PATH}",
            f"ExecStart={BINARY}",
            "Restart=on-failure",
            "RestartSec=5s",
            "LimitNOFILE=65536",
            "",
            "[Install]",
            "WantedBy=multi-user.target",
            "",
        ]
    )


def etcd_member_files(
    cluster: Cluster,
    name: str,
    *,
    state: ClusterState = "new",
    members: Sequence[Host] | None = None,
) -> list[RenderedFile]:
    """The env file and the unit of member ``name`` (certificates: :mod:`hactl.render.etcd_pki`)."""
    return [
        public(ENV_PATH, render_etcd_env(cluster, name, state=state, members=members)),
        public(UNIT_PATH, render_etcd_unit(cluster)),
    ]
