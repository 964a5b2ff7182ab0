"""The running cluster's controlPlaneEndpoint (read from the kubeadm-config ConfigMap, written by
whoever ran ``kubeadm init``) is normalised like the spec's before the two are compared: the same
endpoint written in another form is not "another endpoint"."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from hactl.plan.refusals import endpoint_mismatch
from hactl.plan.synthetic import Synthetic
from hactl.spec.models import Cluster

SEED = yaml.safe_load((Path(__file__).resolve().parents[2] / "specs" / "seed.yaml").read_text())


def _cluster(endpoint: str, vip: str | None = None) -> Cluster:
    data = yaml.safe_load(yaml.safe_dump(SEED))
    data["controlPlaneEndpoint"] = endpoint
    if vip is not None:
        data["loadBalancer"]["vip"] = vip
    return Cluster.model_validate(data)


@pytest.mark.parametrize(("spec", "running", "vip"), [
    ("loadbalancer.example.com:6443", "loadbalancer.example.com", None),  # default port left out
    ("loadbalancer.example.com", "loadbalancer.example.com", None),
    ("[fd00::10]:6443", "[FD00:0::10]", "fd00::10"),  # IPv6 case, zeros, port left out
    ("[fd00::10]", "[fd00:0:0::10]:6443", "fd00::10"),
    ("LoadBalancer.Example.com:6443", "loadbalancer.example.com", None),  # DNS names: no case
    ("loadbalancer.example.com", "LOADBALANCER.EXAMPLE.COM:6443", None),
])
def test_same_endpoint_in_another_form_is_not_refused(spec: str, running: str, vip: str | None) -> None:
    cluster = _cluster(spec, vip)
    observed = Synthetic(cluster).converged().init(endpoint=running).observed()
    assert endpoint_mismatch(cluster, observed) == []


@pytest.mark.parametrize("running", [
    "other.example.com:6443",
    "loadbalancer.example.com:8443",
    "other.example.com",
    "[fd00::11]:6443",
    "not a host:port",  # does not parse: kept raw, and it is not the spec's endpoint
])
def test_really_different_endpoint_is_still_refused(running: str) -> None:
    cluster = _cluster("loadbalancer.example.com")
    observed = Synthetic(cluster).converged().init(endpoint=running).observed()
    problems = endpoint_mismatch(cluster, observed)
    assert len(problems) == 1
    assert running in problems[0]
    assert "loadbalancer.example.com:6443" in problems[0]
