"""M4's API facts with the machine's real kubectl, exactly the probe's snippet, against the lab's
stand-in kube-apiserver on a real TLS etcd: the kube-system and kube-public ConfigMap names that
say whether kubeadm init's upload-config and bootstrap-token phases ran."""

from __future__ import annotations

from pathlib import Path

from standins.conftest import Apiserver, apiserver, etcd1, pki  # noqa: F401  (fixtures)
from test_facts_kubectl import run_snippet

from hactl.facts import kubernetes as k8s
from hactl.lab.standins.kubeapi import Client, ns_path


def configmap(client: Client, namespace: str, name: str) -> None:
    client.create(ns_path("configmaps", namespace), {
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": namespace},
        "data": {"x": "y"}})


def test_init_objects_are_seen_through_real_kubectl(apiserver: Apiserver, tmp_path: Path) -> None:  # noqa: F811
    home = tmp_path / "home"
    home.mkdir()
    before = run_snippet(k8s.ApiState(), apiserver.admin_conf, home)
    assert before.returncode == 0, before.stderr
    answer = k8s.ApiState().parse(before.stdout)
    assert answer.configmaps is not None and "kubeadm-config" not in answer.configmaps
    assert answer.public_configmaps is not None and "cluster-info" not in answer.public_configmaps

    client = Client.from_kubeconfig(str(apiserver.admin_conf))
    try:
        configmap(client, "kube-system", "kubeadm-config")
        configmap(client, "kube-system", "kubelet-config")
        configmap(client, "kube-public", "cluster-info")
    finally:
        client.close()
    after = run_snippet(k8s.ApiState(), apiserver.admin_conf, home)
    assert after.returncode == 0, after.stderr
    answer = k8s.ApiState().parse(after.stdout)
    assert answer.configmaps is not None and {"kubeadm-config", "kubelet-config"} <= set(answer.configmaps)
    assert answer.public_configmaps is not None and "cluster-info" in answer.public_configmaps
    view = k8s.cluster_view(answer, None)
    assert view.configmaps == answer.configmaps and view.public_configmaps == answer.public_configmaps
