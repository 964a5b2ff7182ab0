"""Helpers for the renderer tests (a unique module name: imported as ``render_helpers``): clusters built from the example specs, free loopback ports."""

from __future__ import annotations

import copy
import socket
from pathlib import Path
from typing import Any

import yaml

from hactl.spec.models import Cluster

REPO = Path(__file__).resolve().parents[2]
SPECS = REPO / "specs"


def spec_dict(name: str = "lab") -> dict[str, Any]:
    data = yaml.safe_load((SPECS / f"{name}.yaml").read_text())
    assert isinstance(data, dict)
    return data


def make_cluster(
    base: str = "lab",
    *,
    masters: int | None = None,
    etcd_members: int | None = None,
    topology: str | None = None,
    version: str | None = None,
    **load_balancer: Any,
) -> Cluster:
    """A Cluster from ``specs/<base>.yaml`` with the given changes (lab addresses 198.18.0.x)."""
    data = copy.deepcopy(spec_dict(base))
    if masters is not None:
        data["masters"] = [
            {"name": f"master{i:02d}", "address": f"198.18.0.{10 + i}"}
            for i in range(1, masters + 1)
        ]
    if etcd_members is not None:
        data["etcd"]["members"] = [
            {"name": f"etcd{i:02d}", "address": f"198.18.0.{20 + i}"}
            for i in range(1, etcd_members + 1)
        ]
    if topology == "stacked":
        data["etcd"] = {"topology": "stacked"}
    if version is not None:
        data["kubernetes"]["version"] = version
    data["loadBalancer"].update(load_balancer)
    return Cluster.model_validate(data)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def free_port_on_all(hosts: list[str]) -> int:
    """A port that is free on every loopback address in ``hosts`` right now."""
    for _ in range(50):
        port = free_port(hosts[0])
        try:
            for host in hosts[1:]:
                with socket.socket() as sock:
                    sock.bind((host, port))
        except OSError:
            continue
        return port
    raise RuntimeError("no common free port")
