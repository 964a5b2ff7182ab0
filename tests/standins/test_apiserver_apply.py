"""Server-side apply on the stand-in kube-apiserver, driven by the real /usr/bin/kubectl
(``kubectl apply --server-side``) with hactl's rendered flannel manifest: create when absent,
managedFields, idempotent re-apply, conflicts (409 with the real message) unless forced, the
required fieldManager (422), fields a manager drops are removed."""

from __future__ import annotations

from pathlib import Path

import yaml

from hactl.lab.standins.kubeapi import Client
from hactl.render.cni import manifest_text, network_objects
from hactl.spec.load import load_file

from .conftest import Apiserver

REPO = Path(__file__).resolve().parents[2]
LAB = load_file(str(REPO / "specs" / "lab.yaml")).cluster


def _cm(data: dict[str, str], name: str = "cfg") -> str:
    return yaml.safe_dump({"apiVersion": "v1", "kind": "ConfigMap",
                           "metadata": {"name": name, "namespace": "default"}, "data": data})


def test_the_flannel_manifest_applies_server_side_and_again_changes_nothing(
        apiserver: Apiserver, admin: Client, tmp_path: Path) -> None:
    manifest = tmp_path / "flannel.yaml"
    manifest.write_text(manifest_text(network_objects(LAB)))
    argv = ("apply", "--server-side", "--field-manager=hactl", "--force-conflicts", "-f", str(manifest))
    out = apiserver.kubectl(*argv).stdout
    for line in ("namespace/kube-flannel serverside-applied", "clusterrole.rbac.authorization.k8s.io/flannel "
                 "serverside-applied", "configmap/kube-flannel-cfg serverside-applied",
                 "daemonset.apps/kube-flannel-ds serverside-applied"):
        assert line in out, out
    ds = admin.get("/apis/apps/v1/namespaces/kube-flannel/daemonsets/kube-flannel-ds")
    [entry] = ds["metadata"]["managedFields"]
    assert (entry["manager"], entry["operation"], entry["fieldsType"]) == ("hactl", "Apply", "FieldsV1")
    assert "f:initContainers" in entry["fieldsV1"]["f:spec"]["f:template"]["f:spec"]
    init = ds["spec"]["template"]["spec"]["initContainers"]
    assert init[1]["name"] == "install-cni" and init[1]["args"][-1] == "/etc/cni/net.d/10-flannel.conflist"
    cm = admin.get("/api/v1/namespaces/kube-flannel/configmaps/kube-flannel-cfg")
    assert '"Network": "10.244.0.0/16"' in cm["data"]["net-conf.json"]
    rv = cm["metadata"]["resourceVersion"]
    apiserver.kubectl(*argv)  # idempotent: nothing is written again
    assert admin.get("/api/v1/namespaces/kube-flannel/configmaps/kube-flannel-cfg")[
        "metadata"]["resourceVersion"] == rv
    listed = apiserver.kubectl("get", "configmaps,daemonsets.apps", "--all-namespaces", "-l",
                               "app.kubernetes.io/managed-by=hactl", "-o", "name").stdout.split()
    assert listed == ["configmap/kube-flannel-cfg", "daemonset.apps/kube-flannel-ds"]


def test_a_conflict_is_refused_with_the_real_message_unless_forced(
        apiserver: Apiserver, admin: Client, tmp_path: Path) -> None:
    first, second = tmp_path / "a.yaml", tmp_path / "b.yaml"
    first.write_text(_cm({"a": "1", "b": "2"}))
    second.write_text(_cm({"a": "9"}))
    apiserver.kubectl("apply", "--server-side", "--field-manager=alice", "-f", str(first))
    res = apiserver.kubectl("apply", "--server-side", "--field-manager=bob", "-f", str(second), check=False)
    assert res.returncode != 0
    assert 'Apply failed with 1 conflict: conflict with "alice" using v1: .data.a' in res.stderr
    apiserver.kubectl("apply", "--server-side", "--field-manager=bob", "--force-conflicts", "-f", str(second))
    cm = admin.get("/api/v1/namespaces/default/configmaps/cfg")
    assert cm["data"] == {"a": "9", "b": "2"}
    owners = {m["manager"]: m["fieldsV1"] for m in cm["metadata"]["managedFields"]}
    assert owners == {"alice": {"f:data": {"f:b": {}}}, "bob": {"f:data": {"f:a": {}}}}
    # alice applies without b: b is hers alone, so it goes
    first.write_text(_cm({}))
    apiserver.kubectl("apply", "--server-side", "--field-manager=alice", "-f", str(first))
    assert admin.get("/api/v1/namespaces/default/configmaps/cfg")["data"] == {"a": "9"}


def test_apply_needs_a_field_manager_and_force_needs_apply(apiserver: Apiserver, admin: Client) -> None:
    body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x", "namespace": "default"}}
    code, doc = admin.request("PATCH", "/api/v1/namespaces/default/configmaps/x", body,
                              content_type="application/apply-patch+yaml")
    assert code == 422 and doc["message"] == ('PatchOptions.meta.k8s.io "" is invalid: fieldManager: '
                                              "Required value: is required for apply patch")
    code, doc = admin.request("PATCH", "/api/v1/namespaces/default/configmaps/x?fieldManager=m", body,
                              content_type="application/apply-patch+yaml")
    assert code == 201 and doc["metadata"]["managedFields"][0]["manager"] == "m"
    code, doc = admin.request("PATCH", "/api/v1/namespaces/default/configmaps/x?force=true",
                              {"data": {"k": "v"}}, content_type="application/merge-patch+json")
    assert code == 422 and "force: Forbidden: may not be specified for non-apply patch" in doc["message"]
