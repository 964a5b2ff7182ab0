"""The API facts with the machine's real kubectl, exactly the probe's snippets, against the
lab's stand-in kube-apiserver on a real TLS etcd (fixtures from tests/standins, loopback)."""

from __future__ import annotations

import base64
import os
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from standins.conftest import Apiserver, apiserver, etcd1, pki  # noqa: F401  (fixtures)

from hactl.facts import kubernetes as k8s
from hactl.facts.base import SKIPPED, Fact
from hactl.lab.standins.kubeapi import Client, ns_path

TOKEN_SECRET = "0123456789abcdef"


def run_snippet(fact: Fact[Any], admin_conf: Path, home: Path) -> subprocess.CompletedProcess[str]:
    body = fact.script().replace(k8s.ADMIN_CONF, str(admin_conf))
    env = {"PATH": os.environ["PATH"], "HOME": str(home)}
    return subprocess.run(
        ["sh", "-c", f"f() {{\n{body}\n}}\nf"], capture_output=True, text=True, env=env, timeout=60
    )


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def test_api_facts_through_real_kubectl(apiserver: Apiserver, tmp_path: Path) -> None:  # noqa: F811
    home = tmp_path / "home"
    home.mkdir()
    empty = run_snippet(k8s.ApiState(), apiserver.admin_conf, home)
    assert empty.returncode == 0, empty.stderr
    assert k8s.ApiState().parse(empty.stdout).config is None

    client = Client.from_kubeconfig(str(apiserver.admin_conf))
    try:
        client.create(
            ns_path("nodes"),
            {
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {
                    "name": "master01",
                    "labels": {"node-role.kubernetes.io/control-plane": ""},
                },
                "status": {"conditions": [{"type": "Ready", "status": "True"}],
                           "addresses": [{"type": "InternalIP", "address": "198.18.0.11"},
                                         {"type": "Hostname", "address": "master01"},
                                         {"type": "InternalIP", "address": "fd00::11"}]},
            },
        )
        client.create(
            ns_path("nodes"),
            {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "worker01"},
             "status": {"conditions": [{"type": "Ready", "status": "False"}]}},
        )
        client.create(
            ns_path("secrets", "kube-system"),
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "bootstrap-token-q1w2e3", "namespace": "kube-system"},
                "type": "bootstrap.kubernetes.io/token",
                "data": {
                    "token-id": b64("q1w2e3"),
                    "token-secret": b64(TOKEN_SECRET),
                    "expiration": b64("2030-01-02T03:04:05Z"),
                    "usage-bootstrap-authentication": b64("true"),
                },
            },
        )
        client.create(
            ns_path("configmaps", "kube-system"),
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "kubeadm-config", "namespace": "kube-system"},
                "data": {
                    "ClusterConfiguration": "kind: ClusterConfiguration\n"
                    "controlPlaneEndpoint: lb.example.com:6443\n"
                    "etcd:\n  external:\n    endpoints: [https://10.0.0.21:2379]\n"
                },
            },
        )
    finally:
        client.close()

    proc = run_snippet(k8s.ApiState(), apiserver.admin_conf, home)
    assert proc.returncode == 0, proc.stderr
    assert TOKEN_SECRET not in proc.stdout and b64(TOKEN_SECRET) not in proc.stdout
    answer = k8s.ApiState().parse(proc.stdout)
    node, worker = answer.nodes
    assert node.name == "master01" and node.ready and node.control_plane
    assert node.internal_ips == ("198.18.0.11", "fd00::11")  # dual stack: both, in the API's order
    assert worker.name == "worker01" and not worker.ready and worker.internal_ips == ()
    secrets = answer.secrets
    assert [(t.token_id, t.expiration, t.usages) for t in secrets.tokens] == [
        ("q1w2e3", datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC), ("authentication",))
    ]
    assert secrets.kubeadm_certs_created is None
    config = answer.config
    assert config is not None
    assert config.control_plane_endpoint == "lb.example.com:6443"
    assert config.etcd_endpoints == ("https://10.0.0.21:2379",)
    assert list(home.iterdir()) == []  # kubectl wrote no discovery cache


def test_api_facts_are_skipped_without_admin_conf(tmp_path: Path) -> None:
    proc = run_snippet(k8s.ApiState(), tmp_path / "absent.conf", tmp_path)
    assert proc.returncode == SKIPPED and "absent.conf" in proc.stderr


def test_node_lines_with_and_without_internal_ips() -> None:
    """The node line's fifth field: InternalIPs separated by spaces (kubectl's jsonpath joins a
    filter's results so); an old four-field line reads as none; more than MAX_NODE_IPS are cut."""
    many = " ".join(f"10.0.0.{i}" for i in range(1, 20))
    answer = k8s.ApiState().parse(
        "node\tm1\tTrue\tv1.30.4\t{}\t198.18.0.11 fd00::11\n"
        "node\tm2\tTrue\tv1.30.4\t{}\n"
        f"node\tm3\tFalse\t\t{{}}\t{many}\n"
    )
    m1, m2, m3 = answer.nodes
    assert m1.internal_ips == ("198.18.0.11", "fd00::11")
    assert m2.internal_ips == ()
    assert m3.internal_ips == tuple(f"10.0.0.{i}" for i in range(1, k8s.MAX_NODE_IPS + 1))
