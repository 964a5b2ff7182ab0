"""An IPv6 controlPlaneEndpoint keeps its brackets wherever hactl renders ``host:port``
(ClusterConfiguration.controlPlaneEndpoint, JoinConfiguration's apiServerEndpoint): without
them ``fd00::10:6443`` is a different, port-less IPv6 address that kubeadm rejects. The
certificate SANs take the bare address."""

from __future__ import annotations

import copy
import re

import pytest
import yaml
from render_helpers import spec_dict

from hactl.render import kubeadm_config as kc
from hactl.render import pki
from hactl.render.bundle import render_bundle
from hactl.sensitive import Sensitive
from hactl.spec.models import Cluster

BARE = re.compile(r"(?<!\[)fd00::10:\d+")  # the bracket-less form, anywhere in a rendered file


def _ipv6_cluster(endpoint: str = "[fd00::10]", version: str = "1.30.4") -> Cluster:
    data = copy.deepcopy(spec_dict("lab"))
    data["controlPlaneEndpoint"] = endpoint
    data["kubernetes"]["version"] = version
    data["loadBalancer"]["vip"] = "fd00::10"
    data["loadBalancer"].pop("dnsName", None)
    return Cluster.model_validate(data)


def _creds(control_plane: bool) -> kc.JoinCredentials:
    ca = pki.make_ca("kubernetes", key_type="ecdsa")
    return kc.JoinCredentials(
        token=Sensitive("abcdef.0123456789abcdef"),
        ca_cert_hashes=(pki.spki_sha256(ca.cert),),
        certificate_key=Sensitive("f" * 64) if control_plane else None,
    )


@pytest.mark.parametrize("version", ["1.30.4", "1.31.0"])
@pytest.mark.parametrize("endpoint", ["[fd00::10]", "[fd00::10]:6443", "[FD00:0::10]"])
def test_cluster_configuration_brackets_an_ipv6_endpoint(endpoint: str, version: str) -> None:
    cluster = _ipv6_cluster(endpoint, version)
    text = kc.render_init_config(cluster)
    _, config = yaml.safe_load_all(text)
    assert config["controlPlaneEndpoint"] == "[fd00::10]:6443"
    assert not BARE.search(text), text
    assert "fd00::10" in config["apiServer"]["certSANs"]  # SANs: the bare address
    secret = kc.init_secret_config_file(cluster, Sensitive("f" * 64)).reveal()
    assert list(yaml.safe_load_all(secret))[1]["controlPlaneEndpoint"] == "[fd00::10]:6443"


@pytest.mark.parametrize(("node", "control_plane"), [("master02", True), ("worker01", False)])
def test_join_configuration_brackets_an_ipv6_endpoint(node: str, control_plane: bool) -> None:
    cluster = _ipv6_cluster()
    shown = kc.render_join_config(cluster, node, _creds(control_plane))
    wire = kc.join_config_file(cluster, node, _creds(control_plane)).reveal()
    for text in (shown, wire):
        doc = yaml.safe_load(text)
        assert doc["discovery"]["bootstrapToken"]["apiServerEndpoint"] == "[fd00::10]:6443"
        assert not BARE.search(text), text


def test_no_rendered_file_has_a_bracketless_ipv6_endpoint() -> None:
    bundle = render_bundle(_ipv6_cluster())
    assert bundle
    for key, file in bundle.items():
        assert not BARE.search(file.reveal()), key
