"""Re-records tests/facts_data/kubernetes/*: the machine's real kubectl, run with exactly the
argv the probe uses (hactl.facts.kubernetes), against the lab's stand-in kube-apiserver on a real
TLS etcd, all on 127.0.0.1 with random ports (the fixtures' classes from tests/standins).
Usage (root): .venv/bin/python tests/facts_data/record_kubectl.py
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from hactl.facts import kubernetes as k8s  # noqa: E402
from hactl.lab.standins.kubeapi import Client, ns_path  # noqa: E402
from tests.standins.conftest import CA, PKI, Apiserver, _apiserver, _etcd  # noqa: E402

OUT = Path(__file__).parent / "kubernetes"
NOW = "2030-01-01T00:00:00Z"
# A fixed, obviously fake token: the recording must show that its secret part never comes out.
TOKEN_SECRET = "0123456789abcdef"


def node(name: str, ready: bool, control_plane: bool) -> dict[str, object]:
    labels = {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux"}
    if control_plane:
        labels["node-role.kubernetes.io/control-plane"] = ""
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": labels},
        "status": {
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True" if ready else "False",
                    "reason": "KubeletReady",
                    "lastHeartbeatTime": NOW,
                    "lastTransitionTime": NOW,
                }
            ],
            "nodeInfo": {"kubeletVersion": "v1.30.4"},
        },
    }


def b64(data: dict[str, str]) -> dict[str, str]:
    import base64

    return {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}


def make_pki(d: Path) -> PKI:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    ca, etcd_ca = CA(d, "ca", "kubernetes"), CA(d, "etcd-ca", "etcd-ca")
    sa_key = d / "sa.key"
    sa_key.write_bytes(
        ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return PKI(
        dir=d,
        ca=ca,
        etcd_ca=etcd_ca,
        etcd_server=etcd_ca.issue(
            "etcd-server", "localhost", server=True, sans=("localhost", "127.0.0.1")
        ),
        etcd_client=etcd_ca.issue("apiserver-etcd-client", "kube-apiserver-etcd-client"),
        apiserver=ca.issue(
            "apiserver",
            "kube-apiserver",
            server=True,
            client=False,
            sans=("localhost", "127.0.0.1", "kubernetes"),
        ),
        admin=ca.issue("admin", "kubernetes-admin", ("system:masters",)),
        kcm=ca.issue("kcm", "system:kube-controller-manager"),
        scheduler=ca.issue("scheduler", "system:kube-scheduler"),
        node=ca.issue("node", "system:node:worker01", ("system:nodes",)),
        jane=ca.issue("jane", "jane", ("developers",)),
        sa_key=sa_key,
    )


def probe_argv(fact: object, conf: Path) -> list[str]:
    """The kubectl argv of a fact's snippet, with the admin.conf path swapped for ``conf``."""
    line = fact.script().splitlines()[-1]  # type: ignore[attr-defined]
    import shlex

    return [a.replace(k8s.ADMIN_CONF, str(conf)) for a in shlex.split(line)]


def run(api: Apiserver, fact: object, name: str) -> None:
    argv = probe_argv(fact, api.admin_conf)
    res = subprocess.run(
        argv, capture_output=True, text=True, timeout=60, env=dict(os.environ, HOME="/nonexistent")
    )
    (OUT / f"{name}.out").write_text(res.stdout)
    (OUT / f"{name}.rc").write_text(f"{res.returncode}\n")
    if res.returncode:
        print(f"{name}: exit {res.returncode}: {res.stderr}", file=sys.stderr)


def main() -> None:
    OUT.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        pki = make_pki(d)
        for etcd in _etcd(pki, d, 1):
            for api in _apiserver(pki, etcd, d):
                run(api, k8s.ApiState(), "api_empty")
                c = Client.from_kubeconfig(str(api.admin_conf))
                try:
                    c.create(ns_path("nodes"), node("master01", True, True))
                    c.create(ns_path("nodes"), node("master02", False, True))
                    c.create(ns_path("nodes"), node("worker01", True, False))
                    sec = ns_path("secrets", "kube-system")
                    c.create(
                        sec,
                        {
                            "apiVersion": "v1",
                            "kind": "Secret",
                            "metadata": {
                                "name": "bootstrap-token-abcdef",
                                "namespace": "kube-system",
                            },
                            "type": "bootstrap.kubernetes.io/token",
                            "data": b64(
                                {
                                    "token-id": "abcdef",
                                    "token-secret": TOKEN_SECRET,
                                    "expiration": "2030-01-02T00:00:00Z",
                                    "usage-bootstrap-authentication": "true",
                                    "usage-bootstrap-signing": "true",
                                }
                            ),
                        },
                    )
                    c.create(
                        sec,
                        {
                            "apiVersion": "v1",
                            "kind": "Secret",
                            "metadata": {"name": "kubeadm-certs", "namespace": "kube-system"},
                            "type": "Opaque",
                            "data": {"ca.crt": "c2VhbGVk"},
                        },
                    )
                    c.create(
                        ns_path("configmaps", "kube-system"),
                        {
                            "apiVersion": "v1",
                            "kind": "ConfigMap",
                            "metadata": {"name": "kubeadm-config", "namespace": "kube-system"},
                            "data": {
                                "ClusterConfiguration": (
                                    "apiVersion: kubeadm.k8s.io/v1beta3\nkind: ClusterConfiguration\n"
                                    "kubernetesVersion: v1.30.4\ncontrolPlaneEndpoint: k8s-api.lab:6443\n"
                                    "etcd:\n  external:\n    endpoints:\n"
                                    "    - https://198.18.0.21:2379\n    - https://198.18.0.22:2379\n"
                                    "    - https://198.18.0.23:2379\n    caFile: /etc/kubernetes/pki/etcd/ca.crt\n"
                                    "networking:\n  podSubnet: 10.244.0.0/16\n"
                                )
                            },
                        },
                    )
                finally:
                    c.close()
                run(api, k8s.ApiState(), "api")
    for path in OUT.iterdir():
        text = path.read_text()
        for secret in (TOKEN_SECRET, b64({"s": TOKEN_SECRET})["s"]):
            assert secret not in text, f"{path} holds the token secret"
        path.write_text(
            re.sub(
                r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
                "00000000-0000-0000-0000-000000000000",
                text,
            )
        )
    print(f"recorded into {OUT}")


if __name__ == "__main__":
    main()
