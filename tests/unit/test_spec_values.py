"""Value grammars of the spec (issue 11: C1, H3, M5, L2, L3): what hactl may empty, render or
connect to is refused at ``hactl validate`` with a located message, never accepted."""

from __future__ import annotations

import copy
import ipaddress
from pathlib import Path
from typing import Any

import pytest
import yaml

from hactl.errors import SpecError
from hactl.spec.load import load_text
from hactl.spec.models import Cluster, normalise_endpoint, split_endpoint

ROOT = Path(__file__).resolve().parents[2]
SEED: dict[str, Any] = yaml.safe_load((ROOT / "specs" / "seed.yaml").read_text())


def _load(change: dict[str, Any]) -> Cluster:
    """The seed with ``change`` applied: keys are dotted paths, values replace the leaf."""
    data = copy.deepcopy(SEED)
    for dotted, value in change.items():
        node: Any = data
        parts = [int(p) if p.isdigit() else p for p in dotted.split(".")]
        for part in parts[:-1]:
            if isinstance(part, str) and part not in node:
                node[part] = {}
            node = node[part]
        node[parts[-1]] = value
    return load_text(yaml.safe_dump(data), "s.yaml").cluster


def _refused(change: dict[str, Any], field: str, *fragments: str) -> str:
    with pytest.raises(SpecError) as info:
        _load(change)
    issues = [str(i) for i in info.value.issues]
    matching = [i for i in issues if f": {field}: " in i]
    assert matching, f"no issue at {field}: {issues}"
    for fragment in fragments:
        assert any(fragment in i for i in matching), (fragment, matching)
    assert all(i.startswith("s.yaml:") for i in issues)
    return matching[0]


# -- C1: etcd.dataDir -----------------------------------------------------------------------------

BAD_DATA_DIRS = [
    "/", "", ".", "etcd", "var/lib/etcd", "/var/lib", "/var", "/etc", "/usr", "/home", "/root",
    "/boot", "/proc", "/sys", "/dev", "/run", "/tmp", "/bin", "/sbin", "/lib", "/lib64", "/srv",
    "/opt", "/mnt", "/data", "/etc/kubernetes", "/etc/etcd", "/usr/local/etcd", "/home/etcd",
    "/tmp/etcd", "/var/lib/hactl", "/var/lib/hactl-etcd", "/var/lib/hactl/etcd",
    "/var/lib/kubelet", "/var/lib/kubelet/etcd", "/var/lib/docker/etcd", "/var/lib/containerd/etcd",
    "/var/lib/dpkg", "/var/lib/apt", "/opt/cni", "/mnt/disk1", "/srv/www", "/data/postgres",
    "/var/lib/etcd/", "/var/lib//etcd", "/var/lib/./etcd", "/var/lib/etcd/..", "/var/lib/../etcd",
    "/var/lib/etcd/member", "/var/lib/etcd/default/member", "/data/etcd/wal", "/data/etcd/snap",
    "/var/lib/etcd data", "/var/lib/etcd\n", "/var/lib/etcd\"x", "/var/lib/etcd'x", "/var/lib/etcd\0",
    "/var/lib/etcd\t", "/var/lib/etcd$x", "/var/lib/etcd;rm", "/var/lib/étcd", "/var/lib/etcd\\x",
    "/var/lib/-etcd", "/data/" + "e" * 300 + "/etcd",
]


@pytest.mark.parametrize("value", BAD_DATA_DIRS, ids=repr)
def test_data_dir_that_hactl_would_empty_is_refused(value: str) -> None:
    text = _refused({"etcd.dataDir": value}, "etcd.dataDir")
    assert "/var/lib/etcd" in text  # every message shows a safe example


GOOD_DATA_DIRS = [
    "/var/lib/etcd", "/var/lib/etcd/default", "/var/lib/etcd-main", "/var/lib/k8s-etcd",
    "/srv/etcd", "/data/etcd", "/mnt/etcd", "/opt/etcd/data", "/mnt/disk1/etcd", "/data/ETCD_1",
]


@pytest.mark.parametrize("value", GOOD_DATA_DIRS)
def test_dedicated_data_dirs_are_accepted(value: str) -> None:
    assert _load({"etcd.dataDir": value}).etcd.data_dir == value


def test_data_dir_message_names_the_rule() -> None:
    text = _refused({"etcd.dataDir": "/var/lib"}, "etcd.dataDir")
    assert "hactl empties" in text and "/var/lib/etcd" in text


# -- H3: addresses ------------------------------------------------------------------------------

BAD_ADDRESSES = [
    "fe80::1%eth0", "fe80::1%x]:1 init-addr none\nglobal", "fd00::11%a b;$(id)", "0.0.0.0", "::",
    "224.0.0.1", "ff02::1", "255.255.255.255", "fe80::1", False, 0, 167772171, "10.0.0.11\n", " 10.0.0.11",
]


@pytest.mark.parametrize("value", BAD_ADDRESSES, ids=repr)
def test_bad_host_address_is_refused(value: object) -> None:
    _refused({"masters.1.address": value}, "masters[1].address")


@pytest.mark.parametrize("value", ["fe80::1%eth0", "0.0.0.0", "::", "ff02::1", "224.0.0.1"])
def test_bad_vip_is_refused(value: str) -> None:
    _refused({"loadBalancer.vip": value}, "loadBalancer.vip")


def test_zone_message_says_what_to_do() -> None:
    text = _refused({"masters.1.address": "fe80::1%eth0"}, "masters[1].address")
    assert "zone" in text and "fe80::1%eth0" in text


def test_ipv6_and_loopback_addresses_still_load() -> None:
    cluster = _load({"masters.0.address": "fd00::11", "masters.1.address": "127.0.0.12"})
    assert cluster.masters[0].address == ipaddress.IPv6Address("fd00::11")


def test_python_callers_may_pass_address_objects() -> None:
    data = copy.deepcopy(SEED)
    data["masters"][0]["address"] = ipaddress.ip_address("10.0.0.11")
    assert Cluster.model_validate(data).masters[0].address == ipaddress.IPv4Address("10.0.0.11")


# -- L2: fullmatch for names -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "path"),
    [
        ("masters.1.name", "masters[1].name"),
        ("metadata.name", "metadata.name"),
        ("etcd.members.0.name", "etcd.members[0].name"),
        ("loadBalancer.dnsName", "loadBalancer.dnsName"),
    ],
)
def test_trailing_newline_in_a_name_is_refused(field: str, path: str) -> None:
    value = "loadbalancer.example.com\n" if field == "loadBalancer.dnsName" else "master02\n"
    _refused({field: value}, path)


# -- M5: controlPlaneEndpoint -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [
        ("loadbalancer.example.com", "loadbalancer.example.com:6443"),
        ("loadbalancer.example.com:6443", "loadbalancer.example.com:6443"),
        ("10.0.0.10", "10.0.0.10:6443"),
        ("[fd00::10]", "[fd00::10]:6443"),
        ("[fd00::10]:6443", "[fd00::10]:6443"),
        ("[FD00:0::10]:06443", "[fd00::10]:6443"),
    ],
)
def test_endpoint_is_normalised(raw: str, canonical: str) -> None:
    assert normalise_endpoint(raw) == canonical
    assert normalise_endpoint(canonical) == canonical  # idempotent (saved plans re-validate)


@pytest.mark.parametrize(
    "raw",
    [
        " loadbalancer.example.com:6443", "loadbalancer.example.com:6443 ", "lb .example.com",
        "loadbalancer.example.com:６４４３", "[10.0.0.10", "[10.0.0.10]:6443", "fd00::10",
        "fd00::10:6443", "[fe80::1%eth0]:6443", "[fd00::10]6443", "lb:0", "lb:65536", "lb:",
        "https://lb:6443", "lb/x:6443", "0.0.0.0:6443", "[::]:6443", "lb:+6443", "lb:6443\n",
        "a" * 64 + ".example.com", ".".join(["a" * 63] * 5), "",
    ],
    ids=repr,
)
def test_bad_endpoints_are_refused(raw: str) -> None:
    with pytest.raises(ValueError):
        normalise_endpoint(raw)


def test_endpoint_stored_canonical_and_host_port_consistent() -> None:
    cluster = _load({"controlPlaneEndpoint": "loadbalancer.example.com"})
    assert cluster.control_plane_endpoint == "loadbalancer.example.com:6443"
    assert (cluster.endpoint_host, cluster.endpoint_port) == ("loadbalancer.example.com", 6443)
    v6 = _load({"controlPlaneEndpoint": "[fd00::10]", "loadBalancer.vip": "fd00::10"})
    assert v6.control_plane_endpoint == "[fd00::10]:6443"
    assert (v6.endpoint_host, v6.endpoint_port) == ("fd00::10", 6443)
    assert split_endpoint(v6.control_plane_endpoint) == ("fd00::10", 6443)


def test_endpoint_full_width_port_is_a_located_error() -> None:
    text = _refused({"controlPlaneEndpoint": "loadbalancer.example.com:６４４３"}, "controlPlaneEndpoint")
    assert "port" in text


# -- L3: other accepted-invalid values ----------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "field", "fragment"),
    [
        ({"etcd.clientPort": 2380}, "etcd.peerPort", "clientPort"),
        ({"kubernetes.podSubnet": "::"}, "kubernetes.podSubnet", "prefix"),
        ({"kubernetes.podSubnet": "10.244.0.0"}, "kubernetes.podSubnet", "prefix"),
        ({"kubernetes.podSubnet": "fd00::%eth0/64"}, "kubernetes.podSubnet", ""),
        ({"kubernetes.serviceSubnet": "10.96.0.1/32"}, "kubernetes.serviceSubnet", ""),
        ({"kubernetes.dnsDomain": "cluster local"}, "kubernetes.dnsDomain", "DNS"),
        ({"kubernetes.dnsDomain": "Cluster.Local"}, "kubernetes.dnsDomain", "DNS"),
        ({"kubernetes.version": "1.30.4 "}, "kubernetes.version", "1.30.4"),
        ({"kubernetes.version": " 1.30.4"}, "kubernetes.version", "1.30.4"),
        ({"kubernetes.version": "\t1.30.4"}, "kubernetes.version", "1.30.4"),
        ({"kubernetes.version": " v1.30.4"}, "kubernetes.version", "1.30.4"),
        ({"kubernetes.version": "1.30.٤"}, "kubernetes.version", "1.30.4"),
        ({"kubernetes.version": "1.30." + "9" * 5000}, "kubernetes.version", "1.30.4"),
        ({"etcd.version": "3.5.15\n"}, "etcd.version", "3.5"),
        ({"loadBalancer.dnsName": ".".join(["a" * 63] * 5)}, "loadBalancer.dnsName", "253"),
        ({"ssh.bastion": "a@b:notaport"}, "ssh.bastion", "port"),
        ({"ssh.bastion": "a@b:70000"}, "ssh.bastion", "port"),
        ({"ssh.bastion": "user@"}, "ssh.bastion", ""),
        ({"ssh.bastion": "b c"}, "ssh.bastion", ""),
        ({"ssh.user": ""}, "ssh.user", "user"),
        ({"ssh.user": "root\n"}, "ssh.user", "user"),
        ({"ssh.user": "ro ot"}, "ssh.user", "user"),
        ({"ssh.identityFile": "/root/.ssh/id\0x"}, "ssh.identityFile", "control"),
        ({"ssh.knownHostsFile": "kh\nx"}, "ssh.knownHostsFile", "control"),
        ({"masters.0.ssh": {"identityFile": "a\0"}}, "masters[0].ssh.identityFile", "control"),
        ({"masters.0.ssh": {"bastion": "x@y:z"}}, "masters[0].ssh.bastion", "port"),
        ({"masters.0.ssh": {"user": ""}}, "masters[0].ssh.user", "user"),
    ],
    ids=repr,
)
def test_accepted_invalid_values_are_now_refused(change: dict[str, Any], field: str, fragment: str) -> None:
    _refused(change, field, fragment)


@pytest.mark.parametrize(
    ("field", "path", "value"),
    [
        ("etcd.clientPort", "etcd.clientPort", True),
        ("ssh.port", "ssh.port", "22"),
        ("ssh.port", "ssh.port", 22.0),
        ("loadBalancer.frontendPort", "loadBalancer.frontendPort", "6443"),
        ("ssh.connectTimeout", "ssh.connectTimeout", True),
        ("ssh.useAgent", "ssh.useAgent", "yes"),
        ("apply.parallelism", "apply.parallelism", False),
        ("masters.0.ssh", "masters[0].ssh.port", {"port": True}),
    ],
    ids=repr,
)
def test_numbers_and_booleans_are_not_coerced(field: str, path: str, value: object) -> None:
    _refused({field: value}, path, "without quotes")


def test_address_false_is_not_0_0_0_0() -> None:
    _refused({"masters.0.address": False}, "masters[0].address", "IP address")


def test_lab_subnet_of_one_address_is_a_located_error() -> None:
    data = copy.deepcopy(SEED)
    text = yaml.safe_dump(data).replace("10.0.0.", "198.18.0.") + "lab: {subnet: 198.18.0.5/32}\n"
    with pytest.raises(SpecError) as info:
        load_text(text, "s.yaml")
    assert any(": lab.subnet: " in str(i) for i in info.value.issues)


@pytest.mark.parametrize(
    "change",
    [
        {"ssh.bastion": "jump.example.com"},
        {"ssh.bastion": "ops@jump.example.com:2222"},
        {"ssh.bastion": "[fd00::1]:22"},
        {"ssh.bastion": "10.0.0.5"},
        {"masters.0.ssh": {"bastion": ""}},
        {"ssh.user": "deploy-user_1"},
        {"kubernetes.version": "v1.30.4"},
        {"kubernetes.dnsDomain": "k8s.example.internal"},
        {"kubernetes.podSubnet": "fd00:10:244::/56", "kubernetes.serviceSubnet": "fd00:10:96::/112"},
        {"ssh.identityFile": "keys/id ed25519 (old)"},
    ],
    ids=repr,
)
def test_valid_values_stay_valid(change: dict[str, Any]) -> None:
    _load(change)
