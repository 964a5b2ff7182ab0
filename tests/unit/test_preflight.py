"""Preflight at plan time (issue 14, section 1): the section's parser on recorded outputs, the
clock arithmetic, which checks apply where, the refusal texts, every host at once, the skip
lists, and nothing on a converged cluster."""

from __future__ import annotations

import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from hactl.diff import diff
from hactl.errors import PlanError
from hactl.facts.model import (
    BinariesFacts,
    Binary,
    Listener,
    Observed,
    PreflightFacts,
    RuntimeFacts,
)
from hactl.facts.preflight import Preflight, parse_listener, preflight_for, role_ports
from hactl.plan import refusals_preflight as rp
from hactl.plan.output import render_json, render_markdown, render_text
from hactl.plan.planner import build_plan
from hactl.plan.synthetic import PROBED_AT, Synthetic
from hactl.spec.checks import cross_checks, preflight_check_name
from hactl.spec.load import load_file
from hactl.spec.models import Cluster

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "tests" / "facts_data" / "preflight"
NOW = 1_800_000_000.0


@pytest.fixture(scope="module")
def lab() -> Cluster:
    return load_file(str(REPO / "specs" / "lab.yaml")).cluster


def healthy(**changes: object) -> PreflightFacts:
    """What a prepared host answers (runtime: a node before its join)."""
    base = PreflightFacts(
        swap=(), ip_forward="1", bridge_nf_call_iptables="1", modules=("br_netfilter", "overlay"),
        listeners=(Listener(22, "0.0.0.0", "sshd"),),
        runtime=RuntimeFacts("/run/containerd/containerd.sock", True, True, None, "1.6.20",
                             "systemd", None),
        host_time=NOW + 0.05, sent_at=NOW, received_at=NOW + 0.1)
    return replace(base, **changes)  # type: ignore[arg-type]


def with_preflight(observed: Observed, per_host: dict[str, PreflightFacts] | None = None,
                   kubectl: str | None = None) -> Observed:
    hosts = {}
    for name, facts in observed.hosts.items():
        pf = (per_host or {}).get(name, healthy())
        if facts.kubernetes is not None and facts.kubernetes.joined:
            pf = replace(pf, runtime=None, listeners=None)
        bins = facts.binaries
        if bins is not None and kubectl is not None:
            bins = BinariesFacts({**bins.found, "kubectl": Binary("/usr/bin/kubectl", kubectl)})
        hosts[name] = replace(facts, preflight=pf, binaries=bins)
    return replace(observed, hosts=hosts)


def fresh(lab: Cluster, per_host: dict[str, PreflightFacts] | None = None) -> Observed:
    return with_preflight(Synthetic(lab).observed(), per_host, kubectl="1.30.4")


def refusals(cluster: Cluster, observed: Observed) -> list[str]:
    return rp.check(cluster, observed, diff(cluster, observed, now=PROBED_AT))


def with_skips(lab: Cluster, everywhere: list[str] | None = None,
               hosts: dict[str, list[str]] | None = None) -> Cluster:
    doc = lab.model_dump(mode="json", by_alias=True, exclude_none=True)
    doc["preflight"] = {"ignoreErrors": everywhere or []}
    for key in ("masters", "workers"):
        for item in doc[key]:
            item["ignorePreflightErrors"] = (hosts or {}).get(item["name"], [])
    for item in doc["etcd"]["members"] + doc["loadBalancer"]["hosts"]:
        item["ignorePreflightErrors"] = (hosts or {}).get(item["name"], [])
    return Cluster.model_validate(doc)


# -- the section ---------------------------------------------------------------------------


def test_recorded_node_with_containerd_answering(lab: Cluster) -> None:
    fact = preflight_for(lab, ["master"])
    pf = fact.parse((DATA / "master_fresh_containerd.out").read_text())
    assert pf.runtime is not None
    assert pf.runtime.answers and pf.runtime.version == "1.6.20" and pf.runtime.error is None
    assert pf.runtime.cgroup_driver == "cgroupfs"  # no /etc/containerd/config.toml here
    assert pf.modules == ("br_netfilter", "overlay")
    assert pf.ip_forward == "0" and pf.bridge_nf_call_iptables == "1"
    assert pf.listeners == ()  # containerd's and sshd's ports are none of a master's
    assert pf.host_time is not None and pf.host_time > 1.7e9


def test_recorded_node_without_a_runtime_and_with_a_silent_socket(lab: Cluster) -> None:
    fact = preflight_for(lab, ["worker"])
    none = fact.parse((DATA / "master_fresh_no_runtime.out").read_text()).runtime
    assert none is not None and not none.socket_present and not none.answers
    assert none.error == "/run/containerd/containerd.sock does not exist"
    assert none.version == "1.6.20"  # containerd --version
    silent = fact.parse((DATA / "master_fresh_silent_socket.out").read_text()).runtime
    assert silent is not None and silent.socket_present and not silent.answers
    assert silent.error == "no answer within 3 s"


def test_recorded_etcd_and_lb_have_no_runtime(lab: Cluster) -> None:
    for role in ("etcd", "lb"):
        pf = preflight_for(lab, [role]).parse((DATA / f"{role}_fresh.out").read_text())
        assert pf.runtime is None and pf.listeners == ()


def test_ports_by_role(lab: Cluster) -> None:
    assert list(role_ports(lab, ["master"])) == [6443, 10250, 10257, 10259]
    assert list(role_ports(lab, ["worker"])) == [10250]
    assert list(role_ports(lab, ["etcd"])) == [2379, 2380]
    assert role_ports(lab, ["lb"]) == {lab.load_balancer.frontend_port: "haproxy"}


def test_listeners_are_kept_only_on_the_checked_ports() -> None:
    fact = Preflight(node=True, ports=(6443, 10250))
    out = ("now=1.5\nlisteners=read\n"
           "listen=LISTEN 0 4096 *:10250 *:* users:((\"kubelet\",pid=7,fd=3))\n"
           "listen=LISTEN 0 128 [::]:6443 [::]:*\n"
           "listen=LISTEN 0 128 127.0.0.53%lo:53 0.0.0.0:* users:((\"systemd-resolve\",pid=1,fd=1))\n"
           "listen=garbage\n")
    pf = fact.parse(out)
    assert pf.listeners == (Listener(10250, "*", "kubelet"), Listener(6443, "[::]", None))
    assert parse_listener("LISTEN 0 128 127.0.0.53%lo:53 0.0.0.0:*") == Listener(53, "127.0.0.53")
    assert fact.parse("now=1.5\nlisten=LISTEN 0 1 *:6443 *:*\n").listeners is None  # ss did not run


def test_clock_without_nanoseconds_and_missing_clock() -> None:
    fact = Preflight()
    assert fact.parse("now=1733000000.N\n").host_time == 1733000000.0
    with pytest.raises(ValueError, match="no clock reading"):
        fact.parse("swap=/dev/sda2\n")


def test_skew_counts_only_what_the_round_trip_cannot_explain() -> None:
    pf = PreflightFacts(host_time=105.0, sent_at=100.0, received_at=110.0)
    assert pf.clock_skew == 0.0  # inside the round trip
    assert replace(pf, host_time=112.5).clock_skew == 2.5
    assert replace(pf, host_time=97.0).clock_skew == 3.0
    assert replace(pf, sent_at=None).clock_skew is None


def test_the_section_runs_in_real_sh_and_reads_this_machine(lab: Cluster) -> None:
    fact = preflight_for(lab, ["master", "etcd"])
    proc = subprocess.run(["sh", "-c", fact.script()], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    pf = fact.parse(proc.stdout)
    assert pf.ip_forward in ("0", "1") and pf.host_time is not None
    assert pf.listeners is not None and pf.runtime is not None


def test_the_section_guards_the_costly_parts(lab: Cluster) -> None:
    script = preflight_for(lab, ["worker"]).script()
    assert "if [ ! -f /etc/kubernetes/kubelet.conf ]; then __hactl_pf_ss=1; fi" in script
    assert "ctr" not in preflight_for(lab, ["etcd"]).script()
    assert "timeout 3 ctr --address /run/containerd/containerd.sock version" in script


@pytest.mark.parametrize(("state", "listed"), [
    ("active", False), ("activating", False), ("reloading", False), ("deactivating", False),
    ("inactive", True), ("failed", True), ("", True)])
def test_listeners_are_read_only_where_the_component_does_not_run(lab: Cluster, state: str,
                                                                  listed: bool) -> None:
    """In real sh with the real ss: the services section's ActiveState decides (an etcd that is
    ``activating`` while it waits for its peers already holds its ports: they are its own)."""
    fact = preflight_for(lab, ["etcd"])
    for unit in ("ETCD", "HAPROXY"):
        script = f"HACTL_{unit}_ACTIVE={state}\n{fact.script()}"
        proc = subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=30)
        assert proc.returncode == 0, proc.stderr
    pf = fact.parse(subprocess.run(["sh", "-c", f"HACTL_ETCD_ACTIVE={state}\n{fact.script()}"],
                                   capture_output=True, text=True, timeout=30).stdout)
    assert (pf.listeners is not None) is listed, (state, pf.listeners)


# -- which checks apply where ----------------------------------------------------------------


def test_a_prepared_fresh_cluster_and_a_converged_one_give_nothing(lab: Cluster) -> None:
    assert refusals(lab, fresh(lab)) == []
    converged = with_preflight(Synthetic(lab).converged().observed(),
                               {n: healthy(runtime=None) for n in ("master01",)})
    assert refusals(lab, converged) == []
    plan = build_plan(lab, converged, now=PROBED_AT)
    assert not plan.has_changes


def test_a_converged_cluster_is_not_asked_for_fresh_host_checks(lab: Cluster) -> None:
    """ip_forward off, no runtime, kubeadm's own listeners: none of it matters where nothing is
    joined or started (only swap, the clock and duplicates are checked everywhere)."""
    bad = healthy(ip_forward="0", modules=(), listeners=(Listener(6443, "*", "kube-apiserver"),
                                                         Listener(2380, "*", "etcd")))
    observed = with_preflight(Synthetic(lab).converged().observed(),
                              {h.name: bad for h in lab.all_hosts()})
    assert refusals(lab, observed) == []


def test_each_condition_is_refused_naming_host_check_and_fix(lab: Cluster) -> None:
    observed = fresh(lab, {
        "master01": healthy(swap=("/swap.img",)),
        "worker01": healthy(ip_forward="0"),
        "etcd02": healthy(listeners=(Listener(2380, "0.0.0.0", "python3"),)),
        "etcd03": healthy(host_time=NOW + 130.0),
    })
    hosts = dict(observed.hosts)
    bins = hosts["worker02"].binaries
    assert bins is not None
    hosts["worker02"] = replace(hosts["worker02"], binaries=BinariesFacts(
        {**bins.found, "kubelet": Binary("/usr/local/sbin/kubelet", "1.29.0")}))
    messages = refusals(lab, replace(observed, hosts=hosts))
    assert messages == [
        "etcd02: preflight check Port-2380: port 2380 is in use by python3 (0.0.0.0:2380), and "
        "etcd will listen on it here. Fix: stop what listens there (`ss -ltnp 'sport = :2380'` "
        "names it) or move it to another port, then plan again",
        "etcd03: preflight check ClockSkew: its clock is at least 129.9 s ahead of this machine's "
        "(preflight.maxClockSkew is 1 s); certificates that are not yet valid and etcd peers with "
        "clocks apart fail in ways that show up late. Fix: keep the clocks in sync with NTP on "
        "every host and on this machine (e.g. `timedatectl set-ntp true`, or chrony), then plan "
        "again",
        "master01: preflight check Swap: swap is on (/swap.img); the kubelet does not start with "
        "swap on (failSwapOn). Fix: run `swapoff -a` and remove the swap entries from /etc/fstab "
        "(and any swap unit), so it stays off after a reboot",
        "worker01: preflight check FileContent--proc-sys-net-ipv4-ip_forward: "
        "/proc/sys/net/ipv4/ip_forward is 0, kubeadm needs 1 (Pods' traffic is routed through the "
        "node). Fix: run `sysctl -w net.ipv4.ip_forward=1` and keep it in /etc/sysctl.d/k8s.conf "
        "(`net.ipv4.ip_forward = 1`)",
        "worker02: preflight check KubeletVersion: kubelet is 1.29.0 (/usr/local/sbin/kubelet), "
        "the spec's kubernetes.version is 1.30.4. Fix: install kubelet 1.30.4 from the Kubernetes "
        "package repository (pkgs.k8s.io, v1.30) and hold them (`apt-mark hold kubelet`)",
    ]
    # every host at once, in one refusal of the whole plan
    with pytest.raises(PlanError) as caught:
        raise PlanError("the plan is refused:\n  - " + "\n  - ".join(messages))
    assert all(m in str(caught.value) for m in messages)


def test_node_checks_runtime_modules_and_ports(lab: Cluster) -> None:
    observed = fresh(lab, {
        "master02": healthy(modules=("overlay",), bridge_nf_call_iptables=None,
                            listeners=(Listener(10259, "127.0.0.1", None),)),
        "master03": healthy(runtime=RuntimeFacts("/run/containerd/containerd.sock", False, False,
                                                 "/run/containerd/containerd.sock does not exist",
                                                 None, None, None)),
        "worker01": healthy(runtime=RuntimeFacts("/run/containerd/containerd.sock", True, True,
                                                 None, "1.6.20", "cgroupfs", None)),
        "lb01": healthy(listeners=(Listener(lab.load_balancer.frontend_port, "0.0.0.0", "nginx"),)),
    })
    checks = {(m.split(":")[0], m.split("preflight check ")[1].split(":")[0])
              for m in refusals(lab, observed)}
    assert checks == {("master02", "KernelModule-br_netfilter"), ("master02", "Port-10259"),
                      ("master03", "CRI"), ("worker01", "CgroupDriver"),
                      ("lb01", f"Port-{lab.load_balancer.frontend_port}")}


def test_duplicates_across_hosts(lab: Cluster) -> None:
    observed = fresh(lab, {
        "worker01": healthy(product_uuid="abcd-1", macs={"eth0": "52:54:00:12:34:56"}),
        "worker02": healthy(product_uuid="abcd-1", macs={"ens3": "52:54:00:12:34:56"}),
        "worker03": healthy(macs={"eth0": "00:00:00:00:00:00"}),
    })
    messages = refusals(lab, observed)
    assert [m.split(". Fix")[0] for m in messages] == [
        "worker01: preflight check DuplicateProductUUID: its product_uuid "
        "(/sys/class/dmi/id/product_uuid) abcd-1 is also worker02's",
        "worker02: preflight check DuplicateProductUUID: its product_uuid "
        "(/sys/class/dmi/id/product_uuid) abcd-1 is also worker01's",
        "worker01: preflight check DuplicateMAC: its MAC address 52:54:00:12:34:56 is also "
        "worker02's",
        "worker02: preflight check DuplicateMAC: its MAC address 52:54:00:12:34:56 is also "
        "worker01's",
    ]


def test_a_host_without_the_section_is_not_checked(lab: Cluster) -> None:
    assert refusals(lab, Synthetic(lab).observed()) == []
    assert refusals(lab, with_preflight(Synthetic(lab).observed())) == []  # kubectl 1.32 is newer
    old = with_preflight(Synthetic(lab).observed(), kubectl="1.28.2")
    assert refusals(lab, replace(old, hosts={n: replace(h, preflight=None)
                                             for n, h in old.hosts.items()})) == []
    assert [m.split(":")[0] for m in refusals(lab, old)] == ["master01", "master02", "master03"]
    assert "KubectlVersion: kubectl is 1.28.2" in refusals(lab, old)[0]


# -- skipping ---------------------------------------------------------------------------------


def test_skips_per_host_everywhere_case_insensitive_and_all(lab: Cluster) -> None:
    observed = fresh(lab, {"master01": healthy(swap=("/swap.img",)),
                           "worker01": healthy(ip_forward="0", swap=("/dev/sdb",))})
    assert len(refusals(lab, observed)) == 3
    one = with_skips(lab, hosts={"master01": ["swap"]})
    assert [m.split(":")[0] for m in refusals(one, observed)] == ["worker01", "worker01"]
    assert rp.skipped(one) == {"master01": ("Swap",)}
    everywhere = with_skips(lab, everywhere=["SWAP"], hosts={"worker01": ["all"]})
    assert refusals(everywhere, observed) == []
    assert rp.skipped(everywhere)["worker01"] == ("all",)
    assert rp.skipped(everywhere)["etcd01"] == ("Swap",)


def test_the_plan_shows_what_is_skipped_where(lab: Cluster) -> None:
    cluster = with_skips(lab, hosts={"master01": ["swap", "Port-6443"]})
    plan = build_plan(cluster, Synthetic(cluster).converged().observed(), now=PROBED_AT)
    line = "Preflight checks skipped (spec): master01: Swap, Port-6443"
    assert line in render_text(plan)
    assert line in render_markdown(plan)
    assert '"preflight_skipped": {\n    "master01": [\n      "Swap",\n      "Port-6443"' in \
        render_json(plan)
    assert "Preflight" not in render_text(build_plan(lab, Synthetic(lab).converged().observed(),
                                                     now=PROBED_AT))


def test_unknown_check_names_are_validation_errors_with_a_suggestion(lab: Cluster) -> None:
    assert preflight_check_name("port-02380") == "Port-2380"
    assert preflight_check_name("kubeletversion") == "KubeletVersion"
    assert preflight_check_name("Port-70000") is None
    cluster = with_skips(lab, everywhere=["Swp"], hosts={"worker01": ["KubeletVersoin", "all"]})
    findings = [(f.path, f.message.split(" (names")[0]) for f in cross_checks(cluster)
                if "preflight" in f.message]
    assert findings == [
        (("preflight", "ignoreErrors", 0), "'Swp' is not a preflight check; did you mean 'Swap'?"),
        (("workers", 0, "ignorePreflightErrors", 0),
         "'KubeletVersoin' is not a preflight check; did you mean 'KubeletVersion'?"),
    ]


def test_what_the_plans_own_preparation_fixes_is_not_refused(lab: Cluster) -> None:
    from hactl.diff import Change, Diff, Op
    from hactl.vocabulary import Address, Aspect, Component

    observed = fresh(lab, {"worker01": healthy(ip_forward="0", swap=("/swap.img",)),
                           "worker02": healthy(ip_forward="0")})
    changes = diff(lab, observed, now=PROBED_AT)
    assert len(rp.check(lab, observed, changes)) == 3
    kernel = Change(Op.UPDATE, Address(Component.WORKER, "worker01", Aspect.KERNEL), None, None,
                    "ip-forward is 0", host="worker01")
    swap = Change(Op.UPDATE, Address(Component.WORKER, "worker01", Aspect.SWAP), None, None,
                  "swap on", host="worker01")
    prepared = Diff((*changes.changes, kernel, swap))
    assert rp.prepared(prepared) == {"worker01": {*rp.PREPARED_BY[Aspect.KERNEL], "Swap"}}
    assert [m.split(":")[0] for m in rp.check(lab, observed, prepared)] == ["worker02"]
