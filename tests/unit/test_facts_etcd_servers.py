"""The probe reads kube-apiserver's ``--etcd-servers`` off each master's static Pod manifest
(k8s.files): the real script on a real kubeadm manifest, and the tolerant parser."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from hactl.facts import kubernetes as k8s

# as kubeadm 1.30 writes /etc/kubernetes/manifests/kube-apiserver.yaml for external etcd
MANIFEST = """apiVersion: v1
kind: Pod
metadata:
  annotations:
    kubeadm.kubernetes.io/kube-apiserver.advertise-address.endpoint: 198.18.0.11:6443
  labels:
    component: kube-apiserver
    tier: control-plane
  name: kube-apiserver
  namespace: kube-system
spec:
  containers:
  - command:
    - kube-apiserver
    - --advertise-address=198.18.0.11
    - --allow-privileged=true
    - --authorization-mode=Node,RBAC
    - --client-ca-file=/etc/kubernetes/pki/ca.crt
    - --enable-admission-plugins=NodeRestriction
    - --enable-bootstrap-token-auth=true
    - --etcd-cafile=/etc/kubernetes/pki/etcd/ca.crt
    - --etcd-certfile=/etc/kubernetes/pki/apiserver-etcd-client.crt
    - --etcd-keyfile=/etc/kubernetes/pki/apiserver-etcd-client.key
    - --etcd-servers=https://198.18.0.21:2379,https://198.18.0.22:2379,https://198.18.0.23:2379
    - --kubelet-client-certificate=/etc/kubernetes/pki/apiserver-kubelet-client.crt
    image: registry.k8s.io/kube-apiserver:v1.30.4
    name: kube-apiserver
"""
URLS = ("https://198.18.0.21:2379", "https://198.18.0.22:2379", "https://198.18.0.23:2379")


def run_files(root: Path) -> str:
    script = k8s.K8sFiles().script().replace("/etc/kubernetes", str(root / "etc/kubernetes")) \
        .replace("/var/lib/kubelet", str(root / "var/lib/kubelet"))
    proc = subprocess.run(["sh", "-c", f"f() {{\n{script}\n}}\nf"], capture_output=True, text=True,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_etcd_servers_read_off_a_kubeadm_manifest(tmp_path: Path) -> None:
    manifests = tmp_path / "etc/kubernetes/manifests"
    manifests.mkdir(parents=True)
    (manifests / "kube-apiserver.yaml").write_text(MANIFEST)
    out = run_files(tmp_path)
    info = k8s.K8sFiles().parse(out)
    assert info.etcd_servers == URLS
    assert info.manifests == ("kube-apiserver.yaml",)
    facts = k8s.assemble(files=info, kubelet=None, certs=None, cluster=None)
    assert facts.etcd_servers == URLS


def test_no_manifest_or_no_flag_is_not_read(tmp_path: Path) -> None:
    assert k8s.K8sFiles().parse(run_files(tmp_path)).etcd_servers is None
    manifests = tmp_path / "etc/kubernetes/manifests"
    manifests.mkdir(parents=True)
    (manifests / "kube-apiserver.yaml").write_text(MANIFEST.replace("--etcd-servers", "--etcd-other"))
    assert k8s.K8sFiles().parse(run_files(tmp_path)).etcd_servers is None


@pytest.mark.parametrize(("line", "expected"), [
    ("flag=etcd-servers=https://a:2379", ("https://a:2379",)),
    ("flag=etcd-servers=\"https://a:2379,https://b:2379\"", ("https://a:2379", "https://b:2379")),
    ("flag=etcd-servers='https://a:2379,'", ("https://a:2379",)),
    ("flag=etcd-servers=", None),
    ("flag=etcd-servers=" + ",".join(["https://a:2379"] * 65), None),
    ("flag=etcd-servers=https://" + "a" * 9000, None),
    ("flag=other=x", None),
])
def test_etcd_servers_flag_is_parsed_tolerantly(line: str, expected: tuple[str, ...] | None) -> None:
    assert k8s.K8sFiles().parse(line + "\n").etcd_servers == expected


def test_etcd_servers_of_a_json_style_manifest() -> None:
    line = 'flag=etcd-servers=https://a:2379,https://b:2379",'
    assert k8s.K8sFiles().parse(line + "\n").etcd_servers == ("https://a:2379", "https://b:2379")
