"""M5 (issue 11): ``controlPlaneEndpoint`` is normalised once in the model and every consumer
sees the normal form: an endpoint written without its port is not "another endpoint" after
hactl's own init, and IPv6 keeps its brackets where ``host:port`` is used."""

from __future__ import annotations

from pathlib import Path

import yaml

from hactl.plan.refusals import endpoint_mismatch
from hactl.plan.synthetic import Synthetic
from hactl.spec.load import load_text
from hactl.spec.models import Cluster

ROOT = Path(__file__).resolve().parents[2]
SEED = (ROOT / "specs" / "seed.yaml").read_text()


def _seed(endpoint: str) -> Cluster:
    text = SEED.replace("controlPlaneEndpoint: loadbalancer.example.com:6443", f"controlPlaneEndpoint: {endpoint}")
    return load_text(text, "s.yaml").cluster


def test_endpoint_without_port_is_not_another_endpoint_after_init() -> None:
    cluster = _seed("loadbalancer.example.com")
    observed = Synthetic(cluster).converged().init(endpoint="loadbalancer.example.com:6443").observed()
    assert endpoint_mismatch(cluster, observed) == []


def test_a_really_different_endpoint_is_still_refused() -> None:
    cluster = _seed("loadbalancer.example.com")
    observed = Synthetic(cluster).converged().init(endpoint="other.example.com:6443").observed()
    assert endpoint_mismatch(cluster, observed)


def test_ipv6_endpoint_keeps_its_brackets_for_every_host_port_consumer() -> None:
    data = yaml.safe_load(SEED)
    data["controlPlaneEndpoint"] = "[FD00::0:10]"
    data["loadBalancer"]["vip"] = "fd00::10"
    cluster = Cluster.model_validate(data)
    assert cluster.control_plane_endpoint == "[fd00::10]:6443"  # joins, check's https:// URL
    assert cluster.endpoint_host == "fd00::10"  # certificate SANs want the bare address
    again = Cluster.model_validate(cluster.model_dump(mode="json", by_alias=True))
    assert again.control_plane_endpoint == cluster.control_plane_endpoint  # saved plans
