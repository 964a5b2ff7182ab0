"""The lab's layout derived from a spec (pure: names, addresses, /etc/hosts, refusals)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from hactl.errors import HactlError
from hactl.lab import Lab
from hactl.lab.topology import MAX_NETNS, from_cluster
from hactl.spec.models import Cluster

SPEC = Path(__file__).resolve().parents[2] / "specs" / "lab.yaml"


def _doc() -> dict[str, Any]:
    return dict(yaml.safe_load(SPEC.read_text()))


def test_lab_spec_layout() -> None:
    topo = from_cluster(Cluster.model_validate(_doc()))
    assert str(topo.gateway) == "198.18.0.1" and topo.state_dir == "/var/lib/hactl-lab/lab"
    assert [n.name for n in topo.nodes][:4] == ["etcd01", "etcd02", "etcd03", "lb01"]
    assert topo.key_file == "/var/lib/hactl-lab/lab/id_ed25519"  # what specs/lab.yaml points at
    node = topo.node("master01")
    assert node.netns == "hl-lab-master01" and len(node.veth) <= 15 and len(topo.bridge) <= 15
    hosts = topo.hosts_file()
    assert "198.18.0.11\tmaster01\n" in hosts and "198.18.0.10\tk8s-api.lab\n" in hosts
    with pytest.raises(KeyError, match="no lab node 'nope'"):
        topo.node("nope")


def test_long_names_hash_and_vip_wins() -> None:
    doc = _doc()
    doc["metadata"]["name"] = "a-very-long-cluster-name-for-the-lab-x"
    doc["loadBalancer"]["vip"] = "198.18.0.100"
    topo = from_cluster(Cluster.model_validate(doc))
    assert all(len(n.netns) <= MAX_NETNS for n in topo.nodes)
    assert len({n.netns for n in topo.nodes}) == len(topo.nodes)
    assert "198.18.0.100\tk8s-api.lab\n" in topo.hosts_file()


def test_refuses_hosts_outside_the_lab_subnet() -> None:
    doc = _doc()
    doc["workers"][0]["address"] = "198.18.1.5"
    with pytest.raises(HactlError, match=r"worker01 has address 198\.18\.1\.5, outside the lab subnet"):
        Lab(Cluster.model_validate(doc))
    doc["workers"][0]["address"] = "198.18.0.1"
    with pytest.raises(HactlError, match="reserved"):
        Lab(Cluster.model_validate(doc))


def test_fixture_accepts_a_cluster(lab_factory: Any) -> None:
    cluster = Cluster.model_validate(_doc())
    lab = lab_factory(cluster, up=False)
    assert lab.name != "lab" and lab.topo.subnet != cluster.lab.subnet  # type: ignore[union-attr]
    moved = yaml.safe_load(Path(lab.spec_file).read_text())
    assert moved["ssh"]["identityFile"] == lab.key_file
    assert moved["ssh"]["knownHostsFile"] == lab.known_hosts
