"""Issue 12: every spec field is either without a live counterpart (NO_LIVE_COUNTERPART, each
justified in docs/planning.md, "What a difference in each spec field does") or, changed on the
facts of a converged cluster, planned as a change or refused naming the field.

The leaves are found by walking the models of hactl/spec/models.py, so a new field that is in
neither MUTATIONS nor NO_LIVE_COUNTERPART fails ``test_every_leaf_field_is_classified``."""

from __future__ import annotations

import copy
import types
import typing
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel
from pydantic.alias_generators import to_camel

from hactl.errors import PlanError
from hactl.facts.model import Observed
from hactl.plan import refusals_identity
from hactl.plan.planner import build_plan
from hactl.plan.synthetic import PROBED_AT, Synthetic
from hactl.spec.load import load_file
from hactl.spec.models import Cluster

SPECS = Path(__file__).resolve().parents[2] / "specs"
FACTS_DATA = Path(__file__).resolve().parents[1] / "facts_data"
PREPARE_KEY = FACTS_DATA / "prepare-release.key"
"""The repository key of the prepared baseline (``prepare.*`` fields are changed on a cluster
whose spec has a ``prepare`` section and whose hosts are prepared as it says)."""

NO_LIVE_COUNTERPART = {
    "apiVersion": "a Literal with one value: there is nothing else to change it to",
    "kind": "a Literal with one value",
    "loadBalancer.kind": "a Literal with one value (haproxy)",
    "metadata.name": "names the lock and the lab; kubeadm's clusterName and etcd's initial "
                     "cluster token are written once (an adopted cluster keeps kubeadm's default "
                     "clusterName) and are not compared",
    "loadBalancer.hosts[].name": "the spec's label of a load balancer host (not in haproxy.cfg)",
    "loadBalancer.hosts[].address": "where hactl connects: a new address is another host, "
                                    "whose own facts are probed",
    "etcd.members[].ssh.*": "how hactl connects (SSH)",
    "loadBalancer.hosts[].ssh.*": "how hactl connects (SSH)",
    "masters[].ssh.*": "how hactl connects (SSH)",
    "workers[].ssh.*": "how hactl connects (SSH)",
    "ssh.*": "how hactl connects (SSH)",
    "apply.*": "how hactl apply runs (parallelism, drain timeout)",
    "lab.*": "only hactl lab reads it",
    "network.manifests": "the paths themselves; the objects they hold are compared (network.plugin)",
    "certificates.renewBeforeDays": "a threshold of the plan itself (which certificates to refuse)",
    "preflight.*": "settings of the plan's own preflight (checks skipped, clock skew allowed)",
    "etcd.members[].ignorePreflightErrors": "preflight checks the plan skips on the host",
    "loadBalancer.hosts[].ignorePreflightErrors": "preflight checks the plan skips on the host",
    "masters[].ignorePreflightErrors": "preflight checks the plan skips on the host",
    "workers[].ignorePreflightErrors": "preflight checks the plan skips on the host",
    "prepare.containerRuntime.kind": "a Literal with one value (containerd)",
    "prepare.kernel": "whether preparation manages the kernel settings: turned off, hactl leaves "
                      "them as they are (the plan's preflight still checks them)",
    "prepare.swapOff": "whether preparation turns swap off: turned off, hactl leaves swap as it "
                       "is (the plan's preflight still checks it)",
}
"""Leaf paths (``*`` = every leaf below) whose difference has nothing live to differ from."""

MUTATIONS: dict[str, Any] = {
    "controlPlaneEndpoint": "lb01:6443",
    "kubernetes.version": "1.30.9",
    "kubernetes.podSubnet": "10.245.0.0/16",
    "kubernetes.serviceSubnet": "10.97.0.0/16",
    "kubernetes.dnsDomain": "corp.local",
    "etcd.topology": "stacked",
    "etcd.members[].name": "etcd09",
    "etcd.members[].address": "198.18.0.29",
    "etcd.version": "3.5.15",
    "etcd.dataDir": "/var/lib/etcd2",
    "etcd.clientPort": 2479,
    "etcd.peerPort": 2480,
    "loadBalancer.frontendPort": 7443,
    "loadBalancer.healthCheck": "tcp",
    "loadBalancer.balance": "leastconn",
    "loadBalancer.vip": "198.18.0.100",
    "masters[].name": "master09",
    "masters[].address": "198.18.0.19",
    "workers[].name": "worker09",
    "workers[].address": "198.18.0.39",
    "loadBalancer.dnsName": "api2.lab",
    "network.plugin": "none",
    "network.version": "v0.25.6",
    "prepare.packages.url": "http://mirror.example/kubernetes/",
    "prepare.packages.suite": "stable",
    "prepare.packages.components": ["main"],
    "prepare.packages.keyFile": str(FACTS_DATA / "prepare-other.key"),
    "prepare.packages.revision": "1.2",
    "prepare.containerRuntime.package": "containerd.io",
}
"""Leaf path → the value it is changed to (on the first item of a list)."""

IDENTITY_FIELDS = ("controlPlaneEndpoint", "loadBalancer.dnsName", "loadBalancer.vip",
                   "masters[].address", "workers[].address")
"""Fields compared with the nodes' identity (hactl/plan/refusals_identity.py): the names the API
server certificate carries and the Nodes' InternalIPs. Changed, each is refused naming it by
that module whatever else the plan does with the change (a new vip is also planned into
haproxy.cfg, and the certificate still lacks it)."""


def _models(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models inside an annotation (``X | None``, ``list[X]``, ``Annotated``)."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _models(typing.get_args(annotation)[0])
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    if origin in (list, typing.Union, types.UnionType):
        return [m for arg in typing.get_args(annotation) for m in _models(arg)]
    return []


def _is_list(annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _is_list(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return any(_is_list(a) for a in typing.get_args(annotation))
    return origin is list


def leaves(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Every leaf field's path as the YAML writes it (``etcd.members[].address``)."""
    out: list[str] = []
    for name, info in model.model_fields.items():
        key = info.alias or to_camel(name)
        path = f"{prefix}{key}"
        inner = _models(info.annotation)
        if inner:
            child = f"{path}[]." if _is_list(info.annotation) else f"{path}."
            for sub in inner:
                out += leaves(sub, child)
        else:
            out.append(path)
    return sorted(set(out))


def _covered(path: str) -> bool:
    return path in NO_LIVE_COUNTERPART or any(
        k.endswith(".*") and path.startswith(k[:-1]) for k in NO_LIVE_COUNTERPART)


def test_every_leaf_field_is_classified() -> None:
    every = leaves(Cluster)
    unclassified = [p for p in every if not _covered(p) and p not in MUTATIONS]
    assert not unclassified, (
        f"spec fields with no entry in MUTATIONS or NO_LIVE_COUNTERPART: {unclassified}; a new "
        "field's difference must be planned or refused (or justified as having no live "
        "counterpart, in docs/planning.md)")
    assert not [p for p in MUTATIONS if p not in every], "MUTATIONS names fields that do not exist"
    assert not [p for p in MUTATIONS if _covered(p)], "a field is in both registries"


def test_every_field_is_in_docs_planning() -> None:
    text = (Path(__file__).resolve().parents[2] / "docs" / "planning.md").read_text()
    table = text.partition("## What a difference in each spec field does")[2]
    assert table, "docs/planning.md lacks the field table"
    missing = [p for p in [*MUTATIONS, *NO_LIVE_COUNTERPART] if f"`{p}`" not in table]
    assert not missing, f"fields not in the table of docs/planning.md: {missing}"


@pytest.fixture(scope="module")
def lab() -> Cluster:
    return load_file(str(SPECS / "lab.yaml")).cluster


def _set(doc: dict[str, Any], path: str, value: Any) -> str | None:
    """Set ``path`` in the YAML data (first item of a list); return the renamed host, if any."""
    parts = path.split(".")
    node: Any = doc
    for part in parts[:-1]:
        node = node[part[:-2]][0] if part.endswith("[]") else node[part]
    old = node.get(parts[-1])
    node[parts[-1]] = value
    return str(old) if parts[-1] == "name" and "[]" in path else None


def _renamed(observed: Observed, old: str, new: str) -> Observed:
    """The probe asks a renamed host at its address: the same host's facts, under its new name."""
    hosts = dict(observed.hosts)
    hosts[new] = replace(hosts.pop(old), name=new)
    return replace(observed, hosts=hosts)


def _mutated(lab: Cluster, path: str) -> tuple[Cluster, Observed, set[str]]:
    """The spec with ``path`` changed, the converged cluster's facts, and the names a refusal
    of it may use (a list item's field may be named by its list: a renamed host is "not in the
    spec's masters")."""
    doc = copy.deepcopy(lab.model_dump(mode="json", by_alias=True, exclude_none=True))
    prepared = path.startswith("prepare.")
    if prepared:
        doc["prepare"] = {"packages": {"keyFile": str(PREPARE_KEY)},
                          "containerRuntime": {"package": "containerd"}}
        lab = Cluster.model_validate(doc)
        doc = copy.deepcopy(doc)
    renamed = _set(doc, path, MUTATIONS[path])
    if path == "etcd.topology":
        doc["etcd"]["members"] = []
    changed = Cluster.model_validate(doc)
    synthetic = Synthetic(lab).converged()
    observed = (synthetic.prepared(PREPARE_KEY.read_bytes()) if prepared else synthetic).observed()
    if renamed is not None:
        observed = _renamed(observed, renamed, MUTATIONS[path])
    return changed, observed, {path.replace("[]", "[0]"), path.split("[]")[0]}


@pytest.mark.parametrize("path", sorted(MUTATIONS))
def test_a_changed_field_is_planned_or_refused_naming_it(lab: Cluster, path: str) -> None:
    changed, observed, names = _mutated(lab, path)
    try:
        plan = build_plan(changed, observed, now=PROBED_AT)
    except PlanError as exc:
        assert any(n in str(exc) for n in names), f"{path}: refused without naming it: {exc}"
        return
    assert plan.counts() != (0, 0, 0), f"{path}: a difference planned as 'No changes'"


@pytest.mark.parametrize("path", IDENTITY_FIELDS)
def test_a_changed_identity_field_is_refused_naming_it(lab: Cluster, path: str) -> None:
    changed, observed, _ = _mutated(lab, path)
    assert refusals_identity.check(lab, observed) == []  # converged: nothing to refuse
    wanted = path.replace("[]", "[0]")
    messages = refusals_identity.check(changed, observed)
    assert any(wanted in m and str(MUTATIONS[path]).split(":")[0] in m for m in messages), (
        f"{path}: not refused naming it and its new value: {messages}")
    with pytest.raises(PlanError) as caught:  # and the plan refuses with it
        build_plan(changed, observed, now=PROBED_AT)
    assert any(m in str(caught.value) for m in messages)


def test_a_new_field_would_be_caught() -> None:
    from hactl.spec.models import KubernetesSettings

    class NewSettings(KubernetesSettings):
        proxy_mode: str = "iptables"

    class NewCluster(Cluster):
        kubernetes: NewSettings  # type: ignore[assignment]
        backup_bucket: str | None = None

    new = set(leaves(NewCluster)) - set(leaves(Cluster))
    assert new == {"kubernetes.proxyMode", "backupBucket"}
    assert not any(_covered(p) or p in MUTATIONS for p in new)
