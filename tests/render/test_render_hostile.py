"""Defence in depth (issue 11, H3/L2/C1): a renderer refuses any value it cannot write as one
token, even when the spec's validation was bypassed (``model_construct`` / ``model_copy``)."""

from __future__ import annotations

import ipaddress
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from render_helpers import make_cluster

from hactl.errors import HactlError
from hactl.render import etcd
from hactl.render.haproxy import render_haproxy_cfg
from hactl.render.net import UnsafeValueError, host_port, safe_token
from hactl.spec.models import Cluster, Host

#: The review's payload: a master "address" whose zone carries haproxy directives.
INJECTION = (
    "fe80::1%x]:1 init-addr none disabled\nglobal\n    stats socket ipv4@0.0.0.0:9999 level admin\n"
    "listen open-relay\n    bind :2222\n    server attacker 203.0.113.66:22\n"
    "backend hactl-tail\n    server tail [::1"
)

HOSTILE_NAMES = ["master02\n", "m x", 'm"x', "m'x", "m\\x", "m$x", "m#x", "m;x", "m\x00x", "mé", "m%x", ""]


def _with_master(cluster: Cluster, name: str, address: Any) -> Cluster:
    bad = Host.model_construct(name=name, address=address, ssh=None)
    return cluster.model_copy(update={"masters": [cluster.masters[0], bad]})


def _with_etcd_member(cluster: Cluster, name: str, address: Any) -> Cluster:
    bad = Host.model_construct(name=name, address=address, ssh=None)
    members = [*cluster.etcd.members[:1], bad]
    return cluster.model_copy(update={"etcd": cluster.etcd.model_copy(update={"members": members})})


def test_unsafe_value_error_is_a_hactl_error() -> None:
    assert issubclass(UnsafeValueError, HactlError)  # the CLI prints it; never a traceback


@pytest.mark.parametrize(
    "address",
    [ipaddress.IPv6Address(INJECTION), ipaddress.IPv6Address("fe80::1%eth0"), INJECTION, "10.0.0.1\n"],
    ids=["injection", "zone", "injection-text", "newline-text"],
)
def test_haproxy_refuses_an_address_it_cannot_write(address: Any) -> None:
    cluster = _with_master(make_cluster(), "master02", address)
    with pytest.raises(UnsafeValueError):
        render_haproxy_cfg(cluster)


@pytest.mark.parametrize("name", HOSTILE_NAMES, ids=repr)
def test_haproxy_refuses_a_server_name_it_cannot_write(name: str) -> None:
    cluster = _with_master(make_cluster(), name, ipaddress.IPv4Address("198.18.0.12"))
    with pytest.raises(UnsafeValueError):
        render_haproxy_cfg(cluster)


@pytest.mark.parametrize(
    "update",
    [
        {"vip": ipaddress.IPv6Address("fe80::1%eth0")},
        {"balance": "roundrobin\nglobal"},
        {"frontend_port": "6443\nglobal"},
        {"frontend_port": 0},
    ],
    ids=repr,
)
def test_haproxy_refuses_other_fields(update: dict[str, Any]) -> None:
    cluster = make_cluster()
    lb = cluster.load_balancer.model_copy(update=update)
    with pytest.raises(UnsafeValueError):
        render_haproxy_cfg(cluster.model_copy(update={"load_balancer": lb}))


def test_haproxy_refuses_a_cluster_name_with_a_newline() -> None:
    cluster = make_cluster()
    meta = cluster.metadata.model_copy(update={"name": "lab\nglobal"})
    with pytest.raises(UnsafeValueError):
        render_haproxy_cfg(cluster.model_copy(update={"metadata": meta}))
    with pytest.raises(UnsafeValueError):
        render_haproxy_cfg(make_cluster(), admin_socket="/run/x.sock level admin\nglobal")


@pytest.mark.skipif(shutil.which("haproxy") is None, reason="needs haproxy")
def test_what_the_renderer_writes_passes_haproxy_check(tmp_path: Path) -> None:
    """The renderer's accepted output is still a valid haproxy.cfg (IPv6 bracketed, a VIP)."""
    data = make_cluster(vip="fd00::100").model_dump(by_alias=True, mode="json")
    data["masters"] = [{"name": "master01", "address": "fd00::11"}, {"name": "m-2", "address": "198.18.0.12"}]
    data["controlPlaneEndpoint"] = "[fd00::100]"
    text = render_haproxy_cfg(Cluster.model_validate(data))
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(text)
    result = subprocess.run(["haproxy", "-c", "-f", str(cfg)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert all(line.isascii() and "\t" not in line for line in text.splitlines())


@pytest.mark.parametrize(
    ("name", "address"),
    [
        ("etcd02", ipaddress.IPv6Address("fe80::1%x\"\nETCD_DEBUG=\"true")),
        ("etcd02\n", ipaddress.IPv4Address("198.18.0.22")),
        ('etcd"02', ipaddress.IPv4Address("198.18.0.22")),
    ],
    ids=["zone", "newline-name", "quote-name"],
)
def test_etcd_env_refuses_values_it_cannot_quote(name: str, address: Any) -> None:
    cluster = _with_etcd_member(make_cluster(), name, address)
    with pytest.raises(UnsafeValueError):
        etcd.render_etcd_env(cluster, cluster.etcd.members[0].name)  # the bad one is a peer


@pytest.mark.parametrize(
    "data_dir",
    ['/var/lib/etcd"\nETCD_LISTEN_METRICS_URLS="http://0.0.0.0:2381', "/var/lib/etcd x", "/var/lib/$HOME", "/x\\y"],
    ids=repr,
)
def test_etcd_env_refuses_a_data_dir_it_cannot_quote(data_dir: str) -> None:
    cluster = make_cluster()
    settings = cluster.etcd.model_copy(update={"data_dir": data_dir})
    with pytest.raises(UnsafeValueError):
        etcd.render_etcd_env(cluster.model_copy(update={"etcd": settings}), "etcd01")


def test_etcd_unit_refuses_a_cluster_name_with_a_newline() -> None:
    cluster = make_cluster()
    meta = cluster.metadata.model_copy(update={"name": "lab\nExecStartPre=/bin/sh"})
    with pytest.raises(UnsafeValueError):
        etcd.render_etcd_unit(cluster.model_copy(update={"metadata": meta}))


def test_every_rendered_etcd_value_is_a_safe_token() -> None:
    cluster = make_cluster()
    for member in cluster.etcd_members:
        env = etcd.parse_env_file(etcd.render_etcd_env(cluster, member.name))
        assert all(safe_token(v, k) == v for k, v in env.items())


@pytest.mark.parametrize(
    ("address", "port"),
    [(ipaddress.IPv6Address("fe80::1%eth0"), 6443), ("fd00::1%eth0", 1), ("nope", 1), ("10.0.0.1", 0),
     ("10.0.0.1", 65536), ("10.0.0.1", True)],
    ids=repr,
)
def test_host_port_refuses(address: Any, port: Any) -> None:
    with pytest.raises(UnsafeValueError):
        host_port(address, port)
