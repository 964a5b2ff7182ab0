"""M4: a ``kubeadm init`` that stopped half-way is seen, completed phase by phase, or refused.

The facts say which of kubeadm init's phases left their results (files: pki, kubeconfigs,
manifests, kubelet config; API objects: kubeadm-config/kubelet-config, the Node's control-plane
mark, kube-public/cluster-info); the plan runs the missing phases and every later one with
``kubeadm init phase … --config F`` (CompleteInit), never a second init.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import pytest
from stepctx import Ctx

from hactl.errors import CommandError, PlanError
from hactl.facts import kubernetes as k8s
from hactl.facts.model import (
    CONTROL_PLANE_MANIFESTS,
    INIT_CERTS,
    INIT_KUBECONFIGS,
    STACKED_CERTS,
    ClusterView,
    KubernetesFacts,
    NodeInfo,
)
from hactl.plan.planner import Plan, build_plan
from hactl.plan.steps.complete_init import CompleteInit, phase_argv
from hactl.plan.synthetic import PROBED_AT, Synthetic
from hactl.spec.load import load_file
from hactl.spec.models import Cluster
from hactl.vocabulary import Intent

SPECS = Path(__file__).resolve().parents[2] / "specs"
EXTERNAL_CLIENT = ("apiserver-etcd-client.crt", "apiserver-etcd-client.key", "etcd/ca.crt")
API_PHASES = ("upload-config", "mark-control-plane", "bootstrap-token", "kubelet-finalize", "addon")


@pytest.fixture(scope="module")
def lab() -> Cluster:
    return load_file(str(SPECS / "lab.yaml")).cluster


@pytest.fixture(scope="module")
def stacked() -> Cluster:
    return load_file(str(SPECS / "stacked.yaml")).cluster


def facts(*, pki: tuple[str, ...] = (), confs: tuple[str, ...] = (), manifests: tuple[str, ...] = (),
          kubelet: bool = False) -> KubernetesFacts:
    return KubernetesFacts(
        admin_conf="admin.conf" in confs, kubelet_conf="kubelet.conf" in confs, manifests=manifests,
        pki_files=tuple(sorted(pki)), kubelet_active=kubelet, cert_expiry={}, kubelet_enabled=kubelet,
        kubeconfigs=tuple(sorted(confs)), kubelet_config=kubelet)


FULL_FILES = {"pki": INIT_CERTS + EXTERNAL_CLIENT, "confs": (*INIT_KUBECONFIGS, "super-admin.conf"),
              "manifests": CONTROL_PLANE_MANIFESTS, "kubelet": True}


def view(*, maps: tuple[str, ...] = (), public: tuple[str, ...] = (), marked: bool = False) -> ClusterView:
    labels = {"node-role.kubernetes.io/control-plane": ""} if marked else {}
    return ClusterView(nodes=(NodeInfo("master01", True, labels, "v1.30.4"),), configmaps=maps,
                       public_configmaps=public)


def half(lab: Cluster, master01: KubernetesFacts, cluster_view: ClusterView | None = None) -> Synthetic:
    """The etcd cluster and the load balancer are up; master01 holds ``master01``."""
    syn = Synthetic(lab).etcd().lb()
    if cluster_view is None:
        cluster_view = ClusterView(errors={"api": "The connection to the server k8s-api.lab:6443 was refused"})
    return syn._set("master01", kubernetes=replace(master01, cluster=cluster_view))


def plan_of(cluster: Cluster, syn: Synthetic) -> Plan:
    return build_plan(cluster, syn.observed(), now=PROBED_AT)


# -- the facts -----------------------------------------------------------------------------


def test_files_fact_lists_kubeconfigs_and_the_kubelet_config() -> None:
    script = k8s.K8sFiles().script()
    assert "/etc/kubernetes/*.conf" in script and "/var/lib/kubelet/config.yaml" in script
    parsed = k8s.K8sFiles().parse("admin_conf=1\nconf=admin.conf\nconf=super-admin.conf\npki=ca.key\n"
                                  "kubelet_config=1\n")
    assert parsed.kubeconfigs == ("admin.conf", "super-admin.conf") and parsed.kubelet_config
    assert not k8s.K8sFiles().parse("").kubelet_config


def test_api_fact_reads_configmap_names_of_kube_system_and_kube_public() -> None:
    answer = k8s.ApiState().parse("configmaps\tkubelet-config\tkubeadm-config\npublic\tcluster-info\n")
    assert answer.configmaps == ("kubeadm-config", "kubelet-config")
    assert answer.public_configmaps == ("cluster-info",)
    empty = k8s.ApiState().parse("configmaps\npublic\n")
    assert (empty.configmaps, empty.public_configmaps) == ((), ())
    assert k8s.ApiState().parse("").configmaps is None  # not asked: not "missing"
    script = k8s.ApiState().script()
    assert "kube-public" in script and "|| true" in script


# -- which phases are missing --------------------------------------------------------------


@pytest.mark.parametrize(("files", "api", "missing_from"), [
    ({"pki": ("ca.crt", "ca.key", *EXTERNAL_CLIENT)}, None, "certs"),
    ({"pki": INIT_CERTS + EXTERNAL_CLIENT, "confs": ("admin.conf",)}, None, "kubeconfig"),
    ({**FULL_FILES, "manifests": ("kube-apiserver.yaml",)}, None, "control-plane"),
    ({**FULL_FILES, "kubelet": False}, None, "kubelet-start"),
    (FULL_FILES, view(), "upload-config"),
    (FULL_FILES, view(maps=("kubeadm-config", "kubelet-config")), "mark-control-plane"),
    (FULL_FILES, view(maps=("kubeadm-config", "kubelet-config"), marked=True), "bootstrap-token"),
])
def test_the_first_missing_phase_and_all_after_it(files: dict[str, object], api: ClusterView | None,
                                                  missing_from: str) -> None:
    order = ("certs", "kubeconfig", "control-plane", "kubelet-start", *API_PHASES)
    got = facts(**files).missing_init_phases(api, "master01", stacked=False)  # type: ignore[arg-type]
    assert got == order[order.index(missing_from):]


def test_nothing_missing_or_nothing_known() -> None:
    done = view(maps=("kubeadm-config", "kubelet-config"), public=("cluster-info",), marked=True)
    assert facts(**FULL_FILES).missing_init_phases(done, "master01", stacked=False) == ()  # type: ignore[arg-type]
    # files complete and the API silent: nothing shows what is missing
    assert facts(**FULL_FILES).missing_init_phases(None, "master01", stacked=False) == ()  # type: ignore[arg-type]
    # facts of an older probe (no kubeconfig list): not checked
    old = replace(facts(pki=("ca.key",), confs=("admin.conf",)), kubeconfigs=None)
    assert old.missing_init_phases(None, "master01", stacked=False) == ()


def test_stacked_etcd_adds_its_certificates_and_manifest() -> None:
    files = {**FULL_FILES, "pki": INIT_CERTS + STACKED_CERTS}
    assert facts(**files).missing_init_phases(None, "master01", stacked=True)[0] == "etcd"  # type: ignore[arg-type]
    got = facts(**files).missing_init_phases(None, "master01", stacked=False)  # type: ignore[arg-type]
    assert got == ()


# -- the plan ------------------------------------------------------------------------------


def test_the_lab_repro_admin_conf_and_pki_without_manifests_is_completed(lab: Cluster) -> None:
    """Killed 1.5 s into init: admin.conf and pki/ on master01, no manifests, no API."""
    master01 = facts(pki=INIT_CERTS + EXTERNAL_CLIENT, confs=(*INIT_KUBECONFIGS, "super-admin.conf"))
    plan = plan_of(lab, half(lab, master01))
    change = plan.diff.get("master[master01]")
    assert change is not None and change.intents == {Intent.COMPLETE_INIT}
    assert "stopped half-way" in change.reason
    ids = [s.id for s in plan.steps()]
    assert "master[master01].init" not in ids
    step = next(s for s in plan.steps() if isinstance(s, CompleteInit))
    assert step.id == "master[master01].complete-init" and step.host == "master01"
    assert step.phases == ("control-plane", "kubelet-start", *API_PHASES)
    assert step.commands() == [
        "install -d -m 0700 /etc/hactl",
        "put /etc/hactl/kubeadm-config.yaml 0600  # InitConfiguration + ClusterConfiguration, no secret",
        "systemctl enable kubelet",
        "kubeadm init phase control-plane all --config /etc/hactl/kubeadm-config.yaml",
        "kubeadm init phase kubelet-start --config /etc/hactl/kubeadm-config.yaml",
        "check /etc/kubernetes/manifests/kube-apiserver.yaml exists and kubelet is active (else fail at once)",
        "test -e /etc/kubernetes/manifests/kube-apiserver.yaml",
        "systemctl is-active kubelet",
        "wait for /readyz through the load balancer",
        "kubectl --kubeconfig /etc/kubernetes/admin.conf --request-timeout=10s "
        "--cache-dir=/dev/null/hactl-no-cache get --raw /readyz  # every 2 s, for at most 180 s",
        "kubeadm init phase upload-config all --config /etc/hactl/kubeadm-config.yaml",
        "kubeadm init phase mark-control-plane --config /etc/hactl/kubeadm-config.yaml",
        "kubeadm init phase bootstrap-token --config /etc/hactl/kubeadm-config.yaml --skip-token-print",
        "kubeadm init phase kubelet-finalize all --config /etc/hactl/kubeadm-config.yaml",
        "kubeadm init phase addon all --config /etc/hactl/kubeadm-config.yaml",
        "cat /etc/kubernetes/pki/ca.crt  # on master01 unless this run knows it: the sha256 of its "
        "public key pins discovery",
    ]
    edges = set(plan.graph.edges())
    # joins wait for the completion; the token and key are made on master01 after it
    assert ("master[master01].complete-init", "worker[worker01].join") in edges
    assert ("cluster.bootstrap-token", "master[master02].join") in edges
    # ... after it, never alongside it: they need the API, and both steps rewrite the kubeadm
    # config on master01 (run together, one's `mv` of the shared temporary file failed: seen by
    # the SIGKILL walk of tests/lab/test_faults_lab.py)
    assert ("master[master01].complete-init", "cluster.bootstrap-token") in edges
    assert ("master[master01].complete-init", "cluster.certificate-key") in edges
    assert ("lb[lb01].haproxy", "master[master01].complete-init") not in edges  # the LB is up already
    assert plan.diff.get("cluster.bootstrap-token") is not None
    assert plan.diff.get("cluster.certificate-key") is not None
    # the step survives a saved plan
    assert CompleteInit.from_data(step.to_data()) == step


def test_api_up_without_kubeadm_config_is_completed_from_upload_config(lab: Cluster) -> None:
    plan = plan_of(lab, half(lab, facts(**FULL_FILES), view()))  # type: ignore[arg-type]
    step = next(s for s in plan.steps() if isinstance(s, CompleteInit))
    assert step.phases == API_PHASES
    assert step.commands()[3].startswith("check /etc/kubernetes/manifests/kube-apiserver.yaml")


def test_a_finished_init_plans_no_completion(lab: Cluster) -> None:
    done = view(maps=("kubeadm-config", "kubelet-config"), public=("cluster-info",), marked=True)
    plan = plan_of(lab, half(lab, facts(**FULL_FILES), done))  # type: ignore[arg-type]
    assert not any(isinstance(s, CompleteInit) for s in plan.steps())
    change = plan.diff.get("master[master01]")
    assert change is not None and Intent.COMPLETE_INIT not in change.intents
    # and a converged synthetic cluster (facts without the new fields) is untouched
    assert not plan_of(lab, Synthetic(lab).converged()).has_changes


def test_stacked_half_init_completes_the_etcd_phase(stacked: Cluster) -> None:
    master01 = facts(pki=INIT_CERTS + STACKED_CERTS, confs=INIT_KUBECONFIGS)
    syn = Synthetic(stacked).lb()._set("master01", kubernetes=replace(
        master01, cluster=ClusterView(errors={"api": "refused"})))
    step = next(s for s in plan_of(stacked, syn).steps() if isinstance(s, CompleteInit))
    assert step.phases[:3] == ("etcd", "control-plane", "kubelet-start")
    assert phase_argv("etcd") == ("kubeadm", "init", "phase", "etcd", "local", "--config",
                                  "/etc/hactl/kubeadm-config.yaml")


def test_a_ca_without_its_key_is_refused_with_the_way_out(lab: Cluster) -> None:
    master01 = facts(pki=("ca.crt", *EXTERNAL_CLIENT), confs=("admin.conf",))
    with pytest.raises(PlanError) as err:
        plan_of(lab, half(lab, master01))
    text = str(err.value)
    assert ("kubeadm init on master01 stopped half-way and cannot be completed: pki/ca.key is missing"
            in text)
    assert "nothing has joined it yet, so start over by hand: `ssh master01 kubeadm reset -f`" in text
    # once something joined it, starting over would orphan it: restore the key instead
    syn = half(lab, master01)._set("worker01", kubernetes=facts(confs=("kubelet.conf",), pki=("ca.crt",)))
    with pytest.raises(PlanError) as err:
        plan_of(lab, syn)
    assert ("worker01 already joined this cluster, so do not start over: restore pki/ca.key from a "
            "backup into /etc/kubernetes/pki on master01") in str(err.value)


# -- the step ------------------------------------------------------------------------------


async def test_the_readyz_wait_fails_at_once_without_an_apiserver_manifest(lab: Cluster) -> None:
    ctx = Ctx(lab)
    fake = ctx.transport("master01")
    fake.on(lambda wire: True)  # everything succeeds …
    fake.on(lambda wire: "kube-apiserver.yaml" in wire and "test" in wire, exit_status=1)  # … but this
    step = CompleteInit(id="master[master01].complete-init", host="master01", title="t", reason="r",
                        phases=API_PHASES)
    start = time.monotonic()
    with pytest.raises(CommandError) as err:
        await step.run(ctx)
    assert time.monotonic() - start < 5
    assert not err.value.transient
    assert "the API server cannot come up: /etc/kubernetes/manifests/kube-apiserver.yaml does not exist" \
        in str(err.value)
    assert not any("readyz" in " ".join(a) for a in ctx.argvs("master01"))
    assert not any(a[:3] == ("kubeadm", "init", "phase") for a in ctx.argvs("master01"))


async def test_the_step_runs_the_phases_in_order_with_config_only(lab: Cluster) -> None:
    ctx = Ctx(lab)
    fake = ctx.transport("master01")
    fake.on(lambda wire: True)
    fake.on(("systemctl", "is-active", "kubelet"), stdout="active\n")
    fake.on(lambda wire: "/readyz" in wire, stdout="ok")
    fake.on(lambda wire: "ca.crt" in wire and "cat" in wire, stdout=_ca_pem())
    step = CompleteInit(id="master[master01].complete-init", host="master01", title="t", reason="r",
                        phases=("control-plane", "kubelet-start", *API_PHASES))
    await step.run(ctx)
    phases = [a for a in ctx.argvs("master01") if a[:3] == ("kubeadm", "init", "phase")]
    assert phases == [phase_argv(p) for p in step.phases]
    assert all(a[a.index("--config"):][:2] == ("--config", "/etc/hactl/kubeadm-config.yaml") for a in phases)
    assert ctx.transport("master01").files["/etc/hactl/kubeadm-config.yaml"][1] == 0o600
    assert ctx.secrets.ca_cert_hash is not None and ctx.secrets.ca_cert_hash.startswith("sha256:")


def _ca_pem() -> str:
    from hactl.render import pki

    return pki.make_ca("kubernetes").cert_pem().decode()
