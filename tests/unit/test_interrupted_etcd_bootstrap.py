"""An etcd bootstrap that hactl's own earlier run left half-done (found by the SIGKILL walk of
tests/lab/test_faults_lab.py: killed at a step boundary while another member's certificate
install ran): the next plan finishes it instead of refusing "an etcd service is running but hactl
cannot read it", and a member whose certificate files are only partly written gets them again."""

from __future__ import annotations

import hashlib
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from hactl.diff import Hints
from hactl.errors import PlanError
from hactl.facts.etcd import MEMBER_FILES, EtcdFiles
from hactl.plan import commands as cmd
from hactl.plan import desired
from hactl.plan.planner import build_plan
from hactl.plan.synthetic import CA_FP, PROBED_AT, Synthetic
from hactl.spec.load import load_file
from hactl.spec.models import Cluster
from hactl.vocabulary import Intent

SPECS = Path(__file__).resolve().parents[2] / "specs"
NO_CLIENT_CERT = "Error: open /etc/etcd/pki/healthcheck-client.crt: no such file or directory"
NO_QUORUM = "context deadline exceeded"


@pytest.fixture(scope="module")
def lab() -> Cluster:
    return load_file(str(SPECS / "lab.yaml")).cluster


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def half_bootstrapped(lab: Cluster, *, own: bool = True) -> Synthetic:
    """Every member holds the CA and runs etcd from hactl's renders (``own``) or another env,
    just started (no member data written yet: the plan is still a bootstrap); etcd01 lacks its
    client certificate (its install was killed), the others wait for a quorum."""
    s = Synthetic(lab).lb()
    for host in lab.etcd_members:
        env = desired.etcd_env(lab, host.name, state="new") if own else "ETCD_NAME=default\n"
        s.etcd_facts(host.name, active=True, enabled=True, unit_present=True, env_present=True,
                     env_sha256=sha(env), unit_sha256=sha(desired.etcd_unit(lab)),
                     ca_fingerprint=CA_FP, ca_key_present=host.name == "etcd01",
                     data_dir_state="empty", query_error=NO_QUORUM)
    s.etcd_facts("etcd01", pki_missing=("healthcheck-client.crt", "healthcheck-client.key"),
                 query_error=NO_CLIENT_CERT)
    return s


def test_own_half_done_bootstrap_is_finished_not_refused(lab: Cluster) -> None:
    plan = build_plan(lab, half_bootstrapped(lab).observed(), now=PROBED_AT)
    changes = {c.address: c for c in plan.diff.changes}
    certs = changes["pki.etcd[etcd01]"]
    assert certs.op.value == "create"
    assert "not healthcheck-client.crt, healthcheck-client.key" in certs.reason
    for name in ("etcd02", "etcd03"):
        assert changes[f"pki.etcd[{name}]"].op.value == "no-op"
    ids = [s.id for s in plan.steps()]
    boot = "etcd.member[etcd01].bootstrap"
    assert ids.index("pki.etcd[etcd01]") < ids.index(boot)
    assert ("pki.etcd[etcd01]", boot) in set(plan.graph.edges())
    assert not any(i.startswith(("pki.etcd[etcd02]", "pki.etcd[etcd03]")) for i in ids)


def test_a_running_etcd_from_another_env_is_still_refused(lab: Cluster) -> None:
    with pytest.raises(PlanError) as info:
        build_plan(lab, half_bootstrapped(lab, own=False).observed(), now=PROBED_AT)
    assert "etcd01: an etcd service is running but hactl cannot read it" in str(info.value)


def test_the_probe_names_the_missing_member_files() -> None:
    fact = EtcdFiles()
    assert "healthcheck-client.key" in fact.script()
    out = ("data_dir=member\ndata_dir_entries=1\ndata_dir_entry=member\n"
           "pki_missing=healthcheck-client.crt\npki_missing=healthcheck-client.key\n"
           "pki_missing=../../etc/shadow\n")
    info = fact.parse(out)
    assert info.pki_missing == ("healthcheck-client.crt", "healthcheck-client.key")
    assert fact.parse("data_dir=member\n").pki_missing == ()
    assert set(MEMBER_FILES) >= set(info.pki_missing)


def unstarted(lab: Cluster, *, learner: bool) -> Synthetic:
    """etcd03 is in the member list but never started (name and client URLs empty), its data dir
    empty, its service stopped: what `member add` leaves (learner), or a new cluster's initial
    member whose bootstrap was killed before it started (voter)."""
    s = Synthetic(lab).converged()
    listed = []
    for m in s.hosts["etcd01"].etcd.members:  # type: ignore[union-attr]
        listed.append(replace(m, name="", client_urls=(), is_learner=learner)
                      if m.peer_urls[0].startswith(f"https://{lab.host('etcd03').address}") else m)
    for name in ("etcd01", "etcd02"):
        s.etcd_facts(name, members=tuple(listed))
    s.etcd_facts("etcd03", active=False, data_dir_state="empty", members=None, status=None,
                 health=None, data_dir_entries=0, data_dir_names=())
    return s


@pytest.mark.parametrize("learner", [True, False], ids=["learner", "voter"])
def test_a_member_added_but_never_started_is_started_not_replaced(lab: Cluster,
                                                                  learner: bool) -> None:
    # A run killed after `member add` (or inside a bootstrap) must be finished by the next plan:
    # replacing it (remove, add) again would loop for ever under repeated kills.
    plan = build_plan(lab, unstarted(lab, learner=learner).observed(), now=PROBED_AT)
    ids = [s.id for s in plan.steps()]
    etcd_steps = [i for i in ids if i.startswith("etcd.member[")]
    assert etcd_steps == ["etcd.member[etcd03].start",
                          *(["etcd.member[etcd03].promote"] if learner else [])]
    change = next(c for c in plan.diff.changes if c.address == "etcd.member[etcd03]")
    assert "the member was added but never started" in change.reason


def test_a_ca_key_alone_is_no_ca(tmp_path: Path) -> None:
    # GenerateEtcdCA writes ca.key, then ca.crt: a run killed between the two leaves the key
    # alone. That must not count as "the CA is here" (InstallEtcdCerts would then fail reading
    # ca.crt on every later apply): the next GenerateEtcdCA makes the CA again.
    argv = [a.replace(cmd.ETCD_PKI_DIR, str(tmp_path)) for a in cmd.etcd_ca_present()]
    assert str(tmp_path / "ca.key") in argv and str(tmp_path / "ca.crt") in argv
    (tmp_path / "ca.key").write_text("key")
    assert subprocess.run(argv, check=False).returncode == 1
    (tmp_path / "ca.crt").write_text("cert")
    assert subprocess.run(argv, check=False).returncode == 0


def test_an_adopted_members_certificates_elsewhere_are_left_alone(lab: Cluster) -> None:
    # A cluster built by hand and adopted (tests/lab/test_adopt_lab.py): its etcd runs from
    # Debian's unit with its own certificates elsewhere; /etc/etcd/pki holds only the CA and the
    # healthcheck client the operator put there. That is not a half-done install of hactl's.
    s = Synthetic(lab).converged()
    for host in lab.etcd_members:
        s.etcd_facts(host.name, env_present=False, env_sha256=None, env={},
                     pki_missing=("server.crt", "server.key", "peer.crt", "peer.key"))
    plan = build_plan(lab, s.observed(), now=PROBED_AT)
    assert not [c for c in plan.diff.changes
                if c.address.startswith("pki.etcd[") and c.op.value != "no-op"]


def test_a_bootstrap_stopped_between_members_is_refused_with_the_way_out(lab: Cluster) -> None:
    # hactl killed after etcd01's bootstrap, before etcd02's and etcd03's (a kill at that step
    # boundary with one step at a time): etcd01 runs alone and waits for a quorum that cannot
    # come. The plan was "start etcd01, add the others", which waited for ever.
    s = Synthetic(lab).lb()
    s.etcd_facts("etcd01", active=True, enabled=True, unit_present=True, env_present=True,
                 env_sha256=sha(desired.etcd_env(lab, "etcd01", state="new")),
                 unit_sha256=sha(desired.etcd_unit(lab)), ca_fingerprint=CA_FP,
                 data_dir_state="member", data_dir_entries=1, data_dir_names=("member",),
                 query_error=NO_QUORUM)
    with pytest.raises(PlanError) as info:
        build_plan(lab, s.observed(), now=PROBED_AT)
    text = str(info.value)
    assert ("etcd: the bootstrap of a new cluster stopped between members: etcd01 holds member "
            "data from hactl's bootstrap") in text
    assert "etcd02, etcd03 never started" in text and "systemctl stop etcd" in text
    # members that all hold data (a cluster whose members are all down) are started, as before
    for name in ("etcd02", "etcd03"):
        s.etcd_facts(name, active=False, env_present=True, data_dir_state="member",
                     env_sha256=sha(desired.etcd_env(lab, name, state="new")),
                     unit_sha256=sha(desired.etcd_unit(lab)), ca_fingerprint=CA_FP)
    build_plan(lab, s.observed(), now=PROBED_AT)
    # data from another env (a cluster hactl did not bootstrap) is not taken for this case
    s2 = Synthetic(lab).lb()
    s2.etcd_facts("etcd01", active=True, env_present=True, env_sha256="0" * 64,
                  data_dir_state="member", query_error=NO_QUORUM)
    try:
        build_plan(lab, s2.observed(), now=PROBED_AT)
    except PlanError as exc:
        assert "stopped between members" not in str(exc)


def stopped_after_etcd01(lab: Cluster, *, marker: bool, env: str | None = None) -> Synthetic:
    """hactl killed after etcd01's bootstrap, before etcd02's and etcd03's: etcd01 runs alone
    and waits for a quorum; with ``marker`` it carries hactl's bootstrap-pending marker."""
    s = Synthetic(lab).lb()
    s.etcd_facts("etcd01", active=True, enabled=True, unit_present=True, env_present=True,
                 env_sha256=sha(env if env is not None else desired.etcd_env(lab, "etcd01", state="new")),
                 unit_sha256=sha(desired.etcd_unit(lab)), ca_fingerprint=CA_FP,
                 data_dir_state="member", data_dir_entries=1, data_dir_names=("member",),
                 query_error=NO_QUORUM, bootstrap_pending=marker, ca_key_present=True)
    for name in ("etcd02", "etcd03"):  # every member's certificates were in place (the barrier)
        s.etcd_facts(name, ca_fingerprint=CA_FP, data_dir_state="absent")
    return s


def test_a_bootstrap_stopped_between_members_with_the_marker_is_finished(lab: Cluster) -> None:
    # The marker (written before each member's start, removed once the cluster was healthy)
    # proves the cluster never formed: the others are bootstrapped and etcd01 started with them.
    plan = build_plan(lab, stopped_after_etcd01(lab, marker=True).observed(), now=PROBED_AT)
    changes = {c.address: c for c in plan.diff.changes}
    assert changes["etcd.member[etcd01]"].detail == Hints(finish_bootstrap=True, together=True)
    assert changes["etcd.member[etcd01]"].intents == {Intent.START}
    assert "start it with them (it runs)" in changes["etcd.member[etcd01]"].reason
    for name in ("etcd02", "etcd03"):
        change = changes[f"etcd.member[{name}]"]
        assert change.op.value == "create" and change.intents == {Intent.BOOTSTRAP}
        assert "bootstrap-pending marker proves the cluster never formed" in change.reason
    steps = {s.id: s for s in plan.steps()}
    assert {"etcd.member[etcd01].start", "etcd.member[etcd02].bootstrap",
            "etcd.member[etcd03].bootstrap", "etcd.health"} <= set(steps)
    # they start together, and the health wait (which removes the markers) follows all three
    assert {"etcd.member[etcd01].start", "etcd.member[etcd02].bootstrap",
            "etcd.member[etcd03].bootstrap"} <= set(plan.graph.depends_on("etcd.health"))
    assert any(cmd.ETCD_BOOTSTRAP_MARKER in line for line in steps["etcd.health"].commands())
    assert any(cmd.ETCD_BOOTSTRAP_MARKER in line for line in steps["etcd.member[etcd02].bootstrap"].commands())


def test_a_bootstrap_stopped_between_members_under_another_spec_is_refused(lab: Cluster) -> None:
    other = desired.etcd_env(lab, "etcd01", state="new") + "ETCD_EXTRA=1\n"
    with pytest.raises(PlanError) as info:
        build_plan(lab, stopped_after_etcd01(lab, marker=True, env=other).observed(), now=PROBED_AT)
    text = str(info.value)
    assert "and the spec changed since" in text and "etcd02, etcd03 did not" in text
    # without the marker the refusal says what is missing
    with pytest.raises(PlanError) as info:
        build_plan(lab, stopped_after_etcd01(lab, marker=False).observed(), now=PROBED_AT)
    assert "bootstrap-pending marker (/etc/etcd/hactl-bootstrap-pending) is not on them" in str(info.value)


def test_a_formed_cluster_with_the_marker_left_plans_its_removal(lab: Cluster) -> None:
    # killed after the cluster formed, before the health wait removed the markers: a marker left
    # on a formed cluster would later let a member that lost its data be bootstrapped anew, so
    # it is a difference the plan removes (a health wait), not "No changes".
    s = Synthetic(lab).converged()
    assert not [c for c in build_plan(lab, s.observed(), now=PROBED_AT).diff.changes
                if c.op.value != "no-op" and c.address.startswith("etcd")]
    s.etcd_facts("etcd02", bootstrap_pending=True)
    plan = build_plan(lab, s.observed(), now=PROBED_AT)
    change = next(c for c in plan.diff.changes if c.address == "etcd.member[etcd02]")
    assert change.op.value == "update" and change.intents == {Intent.FORMED}
    assert "bootstrap-pending marker" in change.reason
    ids = [st.id for st in plan.steps()]
    assert "etcd.health" in ids and not [i for i in ids if i.startswith("etcd.member[")]


def test_the_probe_reads_the_bootstrap_marker(tmp_path: Path) -> None:
    fact = EtcdFiles(data_dir="/var/lib/etcd")
    assert cmd.ETCD_BOOTSTRAP_MARKER in fact.script()
    assert fact.parse("data_dir=member\nbootstrap_pending=1\n").bootstrap_pending
    assert not fact.parse("data_dir=member\n").bootstrap_pending
    # the script run for real: the marker's path as the probe tests it
    script = fact.script().replace(cmd.ETCD_BOOTSTRAP_MARKER, str(tmp_path / "marker"))
    script = script.replace("/etc/etcd", str(tmp_path)).replace("/var/lib/etcd", str(tmp_path / "data"))
    out = subprocess.run(["sh", "-c", script], capture_output=True, text=True, check=True).stdout
    assert "bootstrap_pending" not in out
    (tmp_path / "marker").write_text("x")
    out = subprocess.run(["sh", "-c", script], capture_output=True, text=True, check=True).stdout
    assert fact.parse(out).bootstrap_pending
