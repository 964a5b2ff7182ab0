"""PodDisruptionBudgets, evictions and graceful pod deletion in the stand-in kube-apiserver, and
the disruption controller's arithmetic (run in this process against the server), without a
kubelet: what the real server and controller do, case by case."""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

import pytest

from hactl.lab.standins.controller_disruption import DisruptionController, PodGC, scaled_value
from hactl.lab.standins.kubeapi import ApiError, Client, ns_path

from .conftest import Apiserver
from .test_drain_pdb import PDB, pdb, replicaset

VIOLATION = "Cannot evict pod as it would violate the pod's disruption budget."


def ready(admin: Client, name: str, is_ready: bool = True) -> None:
    """What a kubelet reports for a running pod (no kubelet in these tests)."""
    path = ns_path("pods", "default", name)
    pod = admin.get(path)
    pod["status"] = {"phase": "Running", "conditions": [
        {"type": "Ready", "status": "True" if is_ready else "False"}]}
    admin.update(path + "/status", pod)


def evict(admin: Client, name: str) -> tuple[int, Any]:
    return admin.request("POST", ns_path("pods", "default", name) + "/eviction",
                         {"apiVersion": "policy/v1", "kind": "Eviction",
                          "metadata": {"name": name, "namespace": "default"}})


def status(admin: Client, name: str) -> dict[str, Any]:
    return dict(admin.get(f"{PDB}/{name}").get("status") or {})


def test_scaled_values_round_up() -> None:
    assert scaled_value(2, 10) == 2
    assert scaled_value("50%", 3) == 2 and scaled_value("34%", 3) == 2
    assert scaled_value("100%", 4) == 4 and scaled_value("0%", 4) == 0
    with pytest.raises(ValueError):
        scaled_value("5", 4)


def test_pdb_validation_and_generation(apiserver: Apiserver, admin: Client) -> None:
    with pytest.raises(ApiError) as err:
        pdb(admin, "both", "web", minAvailable=1, maxUnavailable=1)
    assert err.value.code == 422
    assert "minAvailable and maxUnavailable cannot be both set" in err.value.message
    with pytest.raises(ApiError) as err:
        pdb(admin, "pct", "web", minAvailable="150%")
    assert err.value.code == 422 and "must not be greater than 100%" in err.value.message
    made = pdb(admin, "web", "web", minAvailable=1)
    assert made["metadata"]["generation"] == 1
    changed = admin.patch(f"{PDB}/web", {"spec": {"minAvailable": 2}})
    assert changed["metadata"]["generation"] == 2
    same = admin.patch(f"{PDB}/web", {"metadata": {"labels": {"x": "y"}}})
    assert same["metadata"]["generation"] == 2  # metadata only: the generation stays
    res = apiserver.kubectl("get", "poddisruptionbudgets.policy", "-o", "name")
    assert res.stdout.split() == ["poddisruptionbudget.policy/web"]


def test_disruption_status_int_percent_and_max_unavailable(apiserver: Apiserver,
                                                           admin: Client) -> None:
    names = replicaset(admin, "web", 3, replicas=4)  # one replica missing
    for name in names[:2]:
        ready(admin, name)
    ready(admin, names[2], False)
    dc = DisruptionController(admin)
    cases: list[tuple[dict[str, Any], dict[str, int]]] = [
        ({"minAvailable": 1}, {"expectedPods": 3, "desiredHealthy": 1, "disruptionsAllowed": 1}),
        ({"minAvailable": "50%"}, {"expectedPods": 4, "desiredHealthy": 2,
                                   "disruptionsAllowed": 0}),
        ({"maxUnavailable": 1}, {"expectedPods": 4, "desiredHealthy": 3,
                                 "disruptionsAllowed": 0}),
        ({"maxUnavailable": "75%"}, {"expectedPods": 4, "desiredHealthy": 1,
                                     "disruptionsAllowed": 1}),
    ]
    for i, (spec, want) in enumerate(cases):
        pdb(admin, f"p{i}", "web", **spec)
        dc.sync(admin.get(f"{PDB}/p{i}"))
        got = status(admin, f"p{i}")
        assert {k: got[k] for k in want} == want, spec
        assert got["currentHealthy"] == 2 and got["observedGeneration"] == 1
        cond = got["conditions"][0]
        assert (cond["type"], cond["status"], cond["reason"]) == (
            "DisruptionAllowed", "True" if want["disruptionsAllowed"] else "False",
            "SufficientPods" if want["disruptionsAllowed"] else "InsufficientPods")


def test_a_deployment_gives_the_scale_and_unknown_controllers_fail_safe(
        apiserver: Apiserver, admin: Client) -> None:
    dep = admin.create("/apis/apps/v1/namespaces/default/deployments", {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"replicas": 5, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}}, "spec": {}}}})
    names = replicaset(admin, "web", 2)
    rs = admin.get("/apis/apps/v1/namespaces/default/replicasets/web")
    rs["metadata"]["ownerReferences"] = [{"apiVersion": "apps/v1", "kind": "Deployment",
                                          "name": "web", "uid": dep["metadata"]["uid"],
                                          "controller": True}]
    admin.update("/apis/apps/v1/namespaces/default/replicasets/web", rs)
    for name in names:
        ready(admin, name)
    dc = DisruptionController(admin)
    pdb(admin, "web", "web", maxUnavailable="20%")
    dc.sync(admin.get(f"{PDB}/web"))
    got = status(admin, "web")
    assert (got["expectedPods"], got["desiredHealthy"], got["disruptionsAllowed"]) == (5, 4, 0)
    # a pod whose controller the stand-in cannot size (StatefulSet): the real failSafe
    admin.create(ns_path("pods", "default"), {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "db-0", "labels": {"app": "db"}, "ownerReferences": [
            {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "db", "uid": "u-1",
             "controller": True}]},
        "spec": {"nodeName": "worker01", "containers": [{"name": "c", "image": "x"}]}})
    ready(admin, "db-0")
    pdb(admin, "db", "db", maxUnavailable=1)
    dc.sync(admin.get(f"{PDB}/db"))
    got = status(admin, "db")
    assert got["disruptionsAllowed"] == 0 and got.get("observedGeneration", 0) == 0
    cond = got["conditions"][0]
    assert (cond["status"], cond["reason"], cond["message"]) == (
        "False", "SyncFailed", 'found no controllers for pod "db-0"')
    code, doc = evict(admin, "db-0")  # never computed: "still being processed"
    assert code == 429 and doc["message"] == VIOLATION
    assert doc["details"]["causes"] == [{"reason": "DisruptionBudget", "message":
                                         "The disruption budget db is still being processed "
                                         "by the server."}]


def test_eviction_decrements_and_records_then_refuses(apiserver: Apiserver,
                                                      admin: Client) -> None:
    names = replicaset(admin, "web", 3)
    for name in names:
        ready(admin, name)
    dc = DisruptionController(admin)
    pdb(admin, "web", "web", minAvailable=2)
    dc.sync(admin.get(f"{PDB}/web"))
    assert status(admin, "web")["disruptionsAllowed"] == 1
    code, doc = evict(admin, "web-0")
    assert (code, doc["status"]) == (201, "Success")
    got = status(admin, "web")
    assert got["disruptionsAllowed"] == 0 and list(got["disruptedPods"]) == ["web-0"]
    assert got["conditions"][0]["reason"] == "InsufficientPods"
    # bound to a node: graceful deletion, the pod stays until its kubelet finishes it
    pod = admin.get(ns_path("pods", "default", "web-0"))
    assert pod["metadata"]["deletionTimestamp"] and pod["metadata"][
        "deletionGracePeriodSeconds"] == 30
    code, doc = evict(admin, "web-1")
    assert code == 429 and doc["reason"] == "TooManyRequests" and doc["message"] == VIOLATION
    assert doc["details"]["causes"][0]["message"] == (
        "The disruption budget web needs 2 healthy pods and has 3 currently")  # not recounted yet
    # evicting a pod already being deleted is a plain delete (no budget needed)
    assert evict(admin, "web-0")[0] == 201
    # the controller: the terminating pod is not healthy and its entry is dropped
    dc.sync(admin.get(f"{PDB}/web"))
    got = status(admin, "web")
    assert (got["currentHealthy"], got["disruptionsAllowed"]) == (2, 0)
    assert "disruptedPods" not in got
    # the kubelet would now delete with grace period 0; a forced delete does the same
    admin.delete(ns_path("pods", "default", "web-0"), grace=0)
    assert admin.find(ns_path("pods", "default", "web-0")) is None


def test_an_unready_pod_is_evicted_without_using_the_budget(apiserver: Apiserver,
                                                            admin: Client) -> None:
    names = replicaset(admin, "web", 3)
    ready(admin, names[0])
    ready(admin, names[1])
    ready(admin, names[2], False)
    dc = DisruptionController(admin)
    pdb(admin, "web", "web", minAvailable=2)
    dc.sync(admin.get(f"{PDB}/web"))
    assert status(admin, "web")["disruptionsAllowed"] == 0
    assert evict(admin, names[0])[0] == 429  # a Ready pod: the budget says no
    assert evict(admin, names[2])[0] == 201  # not Ready, budget healthy: allowed, no decrement
    assert status(admin, "web").get("disruptedPods") is None
    # Pending pods are deleted without looking at budgets
    admin.create(ns_path("pods", "default"), {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web-p", "labels": {"app": "web"}},
        "spec": {"nodeName": "worker01", "containers": [{"name": "c", "image": "x"}]},
        "status": {"phase": "Pending"}})
    assert evict(admin, "web-p")[0] == 201


def test_graceful_deletion_rules(apiserver: Apiserver, admin: Client) -> None:
    def pod(name: str, node: str | None, phase: str = "Running", grace: int | None = None) -> str:
        spec: dict[str, Any] = {"containers": [{"name": "c", "image": "x"}]}
        if node:
            spec["nodeName"] = node
        if grace is not None:
            spec["terminationGracePeriodSeconds"] = grace
        admin.create(ns_path("pods", "default"), {"apiVersion": "v1", "kind": "Pod",
                                                  "metadata": {"name": name}, "spec": spec,
                                                  "status": {"phase": phase}})
        return ns_path("pods", "default", name)

    unbound = pod("unbound", None)
    admin.delete(unbound)
    assert admin.find(unbound) is None  # not scheduled: deleted at once
    done = pod("done", "worker01", "Succeeded")
    admin.delete(done)
    assert admin.find(done) is None  # terminal: deleted at once
    slow = pod("slow", "worker01", grace=120)
    admin.delete(slow)
    meta = admin.get(slow)["metadata"]
    assert meta["deletionGracePeriodSeconds"] == 120
    first = dt.datetime.fromisoformat(meta["deletionTimestamp"].replace("Z", "+00:00"))
    admin.delete(slow)  # a second delete without a shorter period changes nothing
    assert admin.get(slow)["metadata"]["deletionTimestamp"] == meta["deletionTimestamp"]
    admin.delete(slow, grace=10)  # only a shorter one is taken
    shorter = admin.get(slow)["metadata"]
    assert shorter["deletionGracePeriodSeconds"] == 10
    assert dt.datetime.fromisoformat(shorter["deletionTimestamp"].replace("Z", "+00:00")) < first
    res = apiserver.kubectl("delete", "pod", "slow", "--grace-period=0", "--force")
    assert res.returncode == 0 and admin.find(slow) is None
    with pytest.raises(ApiError) as err:  # a stale uid precondition
        admin.delete(pod("p", "worker01"), uid="not-the-uid")
    assert err.value.code == 409 and "Precondition failed: UID in precondition" in err.value.message


def test_podgc_force_deletes_pods_of_a_missing_node(apiserver: Apiserver, admin: Client) -> None:
    replicaset(admin, "web", 1, node="gone01")
    path = ns_path("pods", "default", "web-0")
    admin.delete(path)  # graceful: no kubelet of gone01 will ever finish it
    assert admin.get(path)["metadata"]["deletionTimestamp"]
    gc = PodGC(admin, quarantine=0.5)
    gc.collect()
    assert admin.find(path) is not None  # quarantine: the node may only be late
    time.sleep(0.6)
    gc.collect()
    assert admin.find(path) is None


def test_kubectl_apply_get_delete_a_pdb(apiserver: Apiserver, tmp_path: Any) -> None:
    manifest = tmp_path / "pdb.yaml"
    manifest.write_text(
        "apiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata:\n  name: web\n"
        "spec:\n  minAvailable: 2\n  selector:\n    matchLabels:\n      app: web\n")
    assert "poddisruptionbudget.policy/web created" in apiserver.kubectl(
        "apply", "-f", str(manifest)).stdout
    manifest.write_text(manifest.read_text().replace("minAvailable: 2", "maxUnavailable: 1"))
    assert "poddisruptionbudget.policy/web configured" in apiserver.kubectl(
        "apply", "-f", str(manifest)).stdout
    got = apiserver.kubectl("get", "pdb", "web", "-o", "jsonpath={.spec}").stdout
    assert '"maxUnavailable":1' in got and "minAvailable" not in got
    assert apiserver.kubectl("get", "pdb", "web", "-o",
                             "jsonpath={.metadata.generation}").stdout == "2"
    table = apiserver.kubectl("get", "pdb").stdout.splitlines()
    assert table[0].split() == ["NAME", "MIN", "AVAILABLE", "MAX", "UNAVAILABLE", "ALLOWED",
                                "DISRUPTIONS", "AGE"]
    assert table[1].split()[:4] == ["web", "N/A", "1", "0"]
    assert 'poddisruptionbudget.policy "web" deleted' in apiserver.kubectl(
        "delete", "pdb", "web").stdout


def test_always_allow_and_a_negative_budget(apiserver: Apiserver, admin: Client) -> None:
    names = replicaset(admin, "web", 2)
    ready(admin, names[0])
    ready(admin, names[1], False)
    pdb(admin, "web", "web", minAvailable=2, unhealthyPodEvictionPolicy="AlwaysAllow")
    DisruptionController(admin).sync(admin.get(f"{PDB}/web"))
    got = status(admin, "web")
    assert (got["currentHealthy"], got["desiredHealthy"], got["disruptionsAllowed"]) == (1, 2, 0)
    assert evict(admin, names[0])[0] == 429  # Ready: the budget says no
    assert evict(admin, names[1])[0] == 201  # unhealthy + AlwaysAllow: evicted anyway
    # a status nobody computed this way: the real server answers 403
    obj = admin.get(f"{PDB}/web")
    obj["status"]["disruptionsAllowed"] = -1
    admin.update(f"{PDB}/web/status", obj)
    code, doc = evict(admin, names[0])
    assert (code, doc["reason"], doc["message"]) == (
        403, "Forbidden", 'poddisruptionbudget.policy "web" is forbidden: pdb disruptions '
        "allowed is negative")
