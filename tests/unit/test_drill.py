"""hactl drill with fake hosts: the fault budget and refusals (nothing touched), the faults'
order and commands, restore on failure and on interrupt, the JSON and JUnit reports.

:class:`FakeCluster` answers every command the drill sends from a small model of the hosts:
parked manifests stop a master's API server (its LB server goes DOWN, its Leases move to another
master), ``systemctl stop etcd`` makes that member unhealthy. With stacked etcd (specs/stacked.yaml)
a parked ``etcd.yaml`` stops that master's member, and its API server with it (kubeadm's API
server asks only its local member): until the load balancers drain that master, requests through
them fail, as a TCP load balancer passes the API server's 500s on until its checks see them."""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import pytest

from hactl.check import Finding, Report
from hactl.drill import fault_budget, plan_faults
from hactl.drill.plan import DrillReport, Fault, FaultResult
from hactl.drill.run import Drill, Timings
from hactl.spec.load import load_file
from hactl.spec.models import Cluster
from hactl.transport.base import Result
from hactl.transport.fake import Call, FakeTransport

ROOT = Path(__file__).resolve().parents[2]
FAST = Timings(poll=0.002, reader_period=0.002, stop=0.3, detect=0.3, lease=0.3, recover=0.3,
               final_settle=0, drain_settle=0)
HEADER = "# pxname,svname,status,check_status\n"


@pytest.fixture(scope="module")
def cluster() -> Cluster:
    return load_file(ROOT / "specs" / "lab.yaml").cluster


@pytest.fixture(scope="module")
def stacked() -> Cluster:
    return load_file(ROOT / "specs" / "stacked.yaml").cluster


class FakeCluster:
    def __init__(self, cluster: Cluster, holder: str = "master02") -> None:
        self.cluster = cluster
        self.masters = [m.name for m in cluster.masters]
        self.addresses = {str(h.address): h.name for h in cluster.all_hosts()}
        self.parked: set[str] = set()
        self.kubelet_stopped: set[str] = set()
        self.etcd_stopped: set[str] = set()
        self.holders = {"kube-scheduler": holder, "kube-controller-manager": holder}
        self.stacked = cluster.etcd.topology == "stacked"
        self.drained: set[str] = set()
        """Masters whose server every load balancer has in ``state drain``."""
        self.kubelet_ignores_etcd_manifest = False
        self.etcd_stopping: dict[str, float] = {}
        self.etcd_starting: dict[str, float] = {}
        """host → when its kubelet stops / starts again the etcd Pod whose manifest moved out /
        back (the kubelet's sync period)."""
        self.reads_member_down = 0
        """Reads through the load balancer answered while a stacked member was down."""
        self.lb_refuses: dict[str, str] = {}
        """state (drain, ready) → haproxy's answer refusing it."""
        self.lb_stuck_up = False
        self.take_out_fails = False
        self.lock_held = False
        self.log: list[tuple[str, str]] = []
        """(host, what) for every command that changes a host, in order."""
        self.fakes: dict[str, FakeTransport] = {}
        for host in cluster.all_hosts():
            fake = FakeTransport(host.name, strict=True)
            fake.on(lambda wire: True, respond=self._responder(host.name))
            self.fakes[host.name] = fake

    def __call__(self, host: str) -> FakeTransport:
        return self.fakes[host]

    def api_up(self, master: str) -> bool:
        return master not in self.parked

    def api_ready(self, master: str) -> bool:
        """Its API server answers ``/readyz`` ok (stacked: only with its own member up)."""
        return self.api_up(master) and not (self.stacked and master in self.etcd_stopped)

    def _responder(self, host: str) -> Any:
        def respond(call: Call) -> Result:
            return self.answer(host, call.wire)

        return respond

    def answer(self, host: str, wire: str) -> Result:
        ok = Result(0, "", "")
        for stopping, when in list(self.etcd_stopping.items()):
            if time.monotonic() >= when:
                del self.etcd_stopping[stopping]
                self.etcd_stopped.add(stopping)
        for starting, when in list(self.etcd_starting.items()):
            if time.monotonic() >= when:
                del self.etcd_starting[starting]
                self.etcd_stopped.discard(starting)
        if "lock.d" in wire:
            op = re.search(r"op=(\w+)", wire)
            kind = op.group(1) if op else "read"
            if kind == "acquire":
                self.lock_held = True
                self.log.append((host, "lock"))
                return Result(0, "now 1\nresult acquired\n", "")
            if kind == "release":
                self.lock_held = False
                return Result(0, "now 1\nresult released\n", "")
            return Result(0, "now 1\nresult refreshed\n", "")
        if "hactl-drill-parked" in wire and "rmdir" in wire:
            self.parked.discard(host)
            self.kubelet_stopped.discard(host)
            if self.stacked:
                self.etcd_stopping.pop(host, None)
                if host in self.etcd_stopped:
                    self.etcd_starting[host] = time.monotonic() + 0.1
            self.log.append((host, "put back"))
            return ok
        if "hactl-drill-parked" in wire and "etcd.yaml" in wire:
            assert self.stacked, wire
            self.log.append((host, "park etcd"))
            if not self.kubelet_ignores_etcd_manifest:
                self.etcd_stopping[host] = time.monotonic() + 0.05
            return ok
        if "set server k8s-api-backend/" in wire:
            assert "/run/haproxy/admin.sock" in wire, wire
            found = re.search(r"set server k8s-api-backend/(\w+) state (\w+)", wire)
            assert found is not None and found.group(2) in ("drain", "ready"), wire
            master, state = found.groups()
            self.log.append((host, f"{state} {master}"))
            if state in self.lb_refuses:
                return Result(0, self.lb_refuses[state] + "\n", "")
            (self.drained.add if state == "drain" else self.drained.discard)(master)
            return ok
        if "hactl-drill-parked" in wire:
            self.log.append((host, "take out"))
            if self.take_out_fails:
                return Result(1, "", "mv: cannot move: read-only file system")
            self.parked.add(host)
            for lease, holder in self.holders.items():
                if holder == host:
                    self.holders[lease] = next(m for m in self.masters if m not in self.parked)
            return ok
        if wire.startswith("systemctl stop kubelet"):
            self.kubelet_stopped.add(host)
            self.log.append((host, "stop kubelet"))
            return ok
        if wire.startswith("systemctl stop etcd"):
            self.etcd_stopped.add(host)
            self.log.append((host, "stop etcd"))
            return ok
        if wire.startswith("systemctl start --no-block etcd"):
            self.etcd_stopped.discard(host)
            self.log.append((host, "start etcd"))
            return ok
        if "show stat" in wire:
            rows = [f"k8s-api-backend,{m},{self.lb_state(m)},L7OK" for m in self.masters]
            return Result(0, HEADER + "\n".join(rows) + "\n", "")
        if "get --raw /readyz" in wire:
            target = re.search(r"--server https://([^:/ ]+)", wire)
            assert target is not None
            name = self.addresses.get(target.group(1))
            if name:  # one master's own API server
                if not self.api_up(name):
                    return Result(1, "", "connection refused")
                return Result(0, "ok", "") if self.api_ready(name) else \
                    Result(1, "[-]etcd failed: reason withheld", "")
            # through the load balancer: a refused connection is redispatched, a 500 is not
            if self.stacked and self.etcd_stopped:
                self.reads_member_down += 1
            if any(self.api_up(m) and not self.api_ready(m) and m not in self.drained
                   for m in self.masters):
                return Result(1, "", "Error from server (InternalError): [-]etcd failed")
            up = any(self.api_ready(m) for m in self.masters)
            return Result(0, "ok", "") if up else Result(1, "", "connection refused")
        if "get lease" in wire:
            items = [{"metadata": {"name": n},
                      "spec": {"holderIdentity": f"{h}_0b5c", "renewTime": "2026-12-07T11:00:00Z",
                               "leaseDurationSeconds": 15}} for n, h in self.holders.items()]
            return Result(0, json.dumps({"items": items}), "")
        if "get node" in wire:
            node = wire.split("get node ", 1)[1].split()[0]
            ready = "False" if node in self.kubelet_stopped else "True"
            return Result(0, json.dumps({"status": {"conditions": [
                {"type": "Ready", "status": ready}]}}), "")
        if "endpoint health" in wire:
            url = re.search(r"--endpoints=https://([^:]+):", wire)
            assert url is not None
            client = "/etc/kubernetes/pki/etcd/healthcheck-client.crt" if self.stacked else \
                "/etc/etcd/pki/healthcheck-client.crt"
            if f"--cert={client}" not in wire:  # stacked etcd knows kubeadm's healthcheck client only
                return Result(1, "", "remote error: tls: unknown certificate authority")
            member = self.addresses[url.group(1)]
            healthy = member not in self.etcd_stopped and host not in self.etcd_stopped
            answer = [{"endpoint": url.group(0), "health": healthy,
                       **({} if healthy else {"error": "context deadline exceeded"})}]
            return Result(0 if healthy else 1, json.dumps(answer), "")
        if "create configmap" in wire:
            self.log.append((host, "write"))
            down = len(self.etcd_stopped)
            return ok if down < 2 else Result(1, "", "etcdserver: request timed out")
        raise AssertionError(f"{host}: unexpected command {wire[:200]}")

    def lb_state(self, master: str) -> str:
        if self.lb_stuck_up:
            return "UP"
        if master in self.drained:
            return "DRAIN"
        return "UP" if self.api_ready(master) else "DOWN 1/2"

    def changes(self) -> list[tuple[str, str]]:
        return [entry for entry in self.log if entry[1] != "lock"]


def healthy_check(healthy: bool = True) -> Any:
    calls: list[dict[str, Any]] = []

    async def check(cluster: Cluster, get: Any, opened: Any, **kwargs: Any) -> Report:
        calls.append(kwargs)
        findings = () if healthy else (
            Finding("etcd", "error", "etcd02", "endpoint health: unreachable", "start it"),)
        return Report(cluster.metadata.name, findings)

    check.calls = calls  # type: ignore[attr-defined]
    return check


def drill(cluster: Cluster, fake: FakeCluster, check: Any = None,
          timings: Timings = FAST) -> Drill:
    return Drill(cluster, fake, fake.fakes, run_id="20261207T110000Z-abc123", timings=timings,
                 check=check or healthy_check())


# -- the budget and the plan (pure) --------------------------------------------------------------


def test_fault_budget(cluster: Cluster) -> None:
    assert fault_budget(cluster) == []
    one = cluster.model_copy(update={"masters": cluster.masters[:1]})
    assert any("1 master(s)" in r for r in fault_budget(one))
    two_etcd = cluster.model_copy(update={"etcd": cluster.etcd.model_copy(
        update={"members": cluster.etcd.members[:2]})})
    assert any("etcd of 2" in r for r in fault_budget(two_etcd))


def test_plan_faults_order_and_node(cluster: Cluster) -> None:
    holders = {"kube-scheduler": "master03", "kube-controller-manager": "master03"}
    faults = plan_faults(cluster, None, holders)
    assert faults == [
        Fault("control-plane", "master03", ("kube-controller-manager", "kube-scheduler")),
        Fault("etcd-member", "etcd01"),
    ]
    assert plan_faults(cluster, "master01", holders)[0] == Fault("control-plane", "master01")
    with pytest.raises(ValueError, match="not a master"):
        plan_faults(cluster, "etcd02", holders)
    stacked = cluster.model_copy(update={"etcd": cluster.etcd.model_copy(
        update={"topology": "stacked", "members": []})})
    # stacked: the etcd member of the first master that is not fault 1's
    assert plan_faults(stacked, None, holders) == [
        Fault("control-plane", "master03", ("kube-controller-manager", "kube-scheduler")),
        Fault("etcd-member", "master01"),
    ]
    assert plan_faults(stacked, "master01", {})[1] == Fault("etcd-member", "master02")
    assert plan_faults(stacked, "master02", {})[1] == Fault("etcd-member", "master01")


def test_stacked_fault_budget_counts_the_masters(stacked: Cluster) -> None:
    assert fault_budget(stacked) == []
    two = stacked.model_copy(update={"masters": stacked.masters[:2]})
    assert fault_budget(two) == [
        "an etcd of 2 member(s) (stacked): quorum is 2, so one member down stops writes"]


# -- refusals: nothing touched -------------------------------------------------------------------


def test_refuses_without_fault_budget_and_touches_nothing(cluster: Cluster) -> None:
    one = cluster.model_copy(update={"masters": cluster.masters[:1]})
    fake = FakeCluster(cluster)
    check = healthy_check()
    report = asyncio.run(drill(one, fake, check).run())
    assert report.refused is not None and "no fault budget" in report.refused
    assert report.exit_code == 1
    assert all(not f.calls for f in fake.fakes.values())
    assert check.calls == []


def test_refuses_on_degraded_cluster_and_touches_nothing(cluster: Cluster) -> None:
    fake = FakeCluster(cluster)
    report = asyncio.run(drill(cluster, fake, healthy_check(False)).run())
    assert report.exit_code == 1
    assert report.refused is not None and "degraded" in report.refused
    assert "etcd02" in report.refused
    assert all(not f.calls for f in fake.fakes.values())
    assert "nothing was touched" in report.render_text()


def test_unknown_node_is_refused_before_anything_changes(cluster: Cluster) -> None:
    fake = FakeCluster(cluster)
    report = asyncio.run(drill(cluster, fake).run("worker01"))
    assert report.exit_code == 1 and "not a master" in (report.refused or "")
    assert fake.log == [] and not fake.lock_held


# -- a drill that passes -------------------------------------------------------------------------


def test_drill_runs_faults_one_at_a_time_and_restores(cluster: Cluster) -> None:
    fake = FakeCluster(cluster, holder="master02")
    check = healthy_check()
    report = asyncio.run(drill(cluster, fake, check).run())
    assert report.exit_code == 0, report.render_text()
    assert fake.log[0] == ("etcd01", "lock")  # the lock before any change
    assert fake.changes() == [
        ("master02", "take out"), ("master02", "stop kubelet"), ("master02", "put back"),
        ("etcd01", "stop etcd"), ("master01", "write"), ("etcd01", "start etcd"),
    ]
    assert not fake.lock_held and not fake.parked and not fake.etcd_stopped
    cp, member = report.faults
    assert set(cp.lease_moves) == {"kube-scheduler", "kube-controller-manager"}
    assert all(v is not None for v in cp.lease_moves.values())
    assert cp.detect_seconds is not None and cp.recover_seconds is not None
    assert cp.reader_ok > 0 and cp.reader_failed == 0
    assert fake.holders["kube-scheduler"] != "master02"
    assert member.passed and member.detect_seconds is not None
    # the preflight check, then the closing one (given time to settle)
    assert [c.get("settle") for c in check.calls] == [None, FAST.final_settle]
    assert report.final_healthy is True


def test_leader_elsewhere_is_not_required_to_move(cluster: Cluster) -> None:
    fake = FakeCluster(cluster, holder="master01")
    report = asyncio.run(drill(cluster, fake).run("master03"))
    assert report.exit_code == 0, report.render_text()
    assert report.faults[0].lease_moves == {}
    assert fake.holders["kube-scheduler"] == "master01"


# -- failures and interrupts: restored --------------------------------------------------------------


def test_failed_check_is_reported_and_restored(cluster: Cluster) -> None:
    fake = FakeCluster(cluster)
    fake.lb_stuck_up = True  # the LB never marks the master down
    report = asyncio.run(drill(cluster, fake).run())
    assert report.exit_code == 2, report.render_text()
    cp = report.faults[0]
    assert cp.restored and not cp.passed and cp.detect_seconds is None
    assert any(not c.ok and "marked master02 DOWN" in c.name for c in cp.checks)
    assert ("master02", "put back") in fake.log and not fake.parked
    assert report.faults[1].passed  # restored, so the next fault still ran


def test_error_while_injecting_restores(cluster: Cluster) -> None:
    fake = FakeCluster(cluster)
    fake.take_out_fails = True
    report = asyncio.run(drill(cluster, fake).run())
    cp = report.faults[0]
    assert cp.error is not None and "read-only" in cp.error
    assert cp.restored
    assert fake.changes()[:2] == [("master02", "take out"), ("master02", "put back")]
    assert report.exit_code == 2
    assert not fake.lock_held


def test_interrupt_restores_the_fault_and_stops(cluster: Cluster) -> None:
    fake = FakeCluster(cluster)
    fake.lb_stuck_up = True
    slow = Timings(poll=0.005, reader_period=0.005, stop=5, detect=30, lease=30, recover=5,
                   final_settle=0)

    async def scenario() -> DrillReport:
        task = asyncio.create_task(drill(cluster, fake, timings=slow).run())
        while ("master02", "stop kubelet") not in fake.log:
            await asyncio.sleep(0.005)
        task.cancel()  # Ctrl-C
        await asyncio.sleep(0)
        while ("master02", "put back") not in fake.log:
            await asyncio.sleep(0.001)
        task.cancel()  # Ctrl-C again, while restoring: the restore still finishes
        return await task

    report = asyncio.run(scenario())
    assert report.interrupted and report.exit_code == 130, report.render_text()
    assert len(report.faults) == 1 and report.faults[0].restored
    assert not fake.parked and not fake.kubelet_stopped and not fake.lock_held
    assert ("etcd01", "stop etcd") not in fake.log  # no further fault
    assert "Interrupted" in report.render_text()


def test_etcd_member_not_back_stops_the_drill_and_says_so(cluster: Cluster) -> None:
    fake = FakeCluster(cluster)
    original = fake.answer

    def never_starts(host: str, wire: str) -> Result:
        if wire.startswith("systemctl start --no-block etcd"):
            fake.log.append((host, "start etcd"))
            return Result(0, "", "")
        return original(host, wire)

    fake.answer = never_starts  # type: ignore[method-assign]
    report = asyncio.run(drill(cluster, fake).run())
    assert report.exit_code == 3
    assert not report.faults[1].restored
    assert "NOT RESTORED" in report.render_text()


# -- output ----------------------------------------------------------------------------------


def test_json_and_junit(cluster: Cluster) -> None:
    fake = FakeCluster(cluster)
    report = asyncio.run(drill(cluster, fake).run())
    data = json.loads(json.dumps(report.to_data()))
    assert data["passed"] is True and data["exit_code"] == 0
    assert [(f["kind"], f["host"]) for f in data["faults"]] == [
        ("control-plane", "master02"), ("etcd-member", "etcd01")]
    assert data["faults"][0]["reader"]["failed"] == 0
    suite = ElementTree.fromstring(report.to_junit())
    assert suite.tag == "testsuite" and suite.get("failures") == "0"
    assert [c.get("name") for c in suite.iter("testcase")] == [
        "control-plane master02", "etcd-member etcd01", "final-check"]

    failed = DrillReport("lab", faults=[FaultResult(Fault("etcd-member", "etcd01"),
                                                    restored=False, error="boom")])
    failed.final_healthy = False
    failed.final_detail = "etcd01 unhealthy"
    suite = ElementTree.fromstring(failed.to_junit())
    assert suite.get("failures") == "2"
    messages = [f.get("message") for f in suite.iter("failure")]
    assert messages == ["boom; not restored", "etcd01 unhealthy"]
    refused = DrillReport("lab", refused="degraded")
    assert ElementTree.fromstring(refused.to_junit()).get("failures") == "1"
    assert json.loads(json.dumps(refused.to_data()))["exit_code"] == 1


def test_interrupt_outside_a_fault_ends_cleanly(cluster: Cluster) -> None:
    fake = FakeCluster(cluster)
    started = asyncio.Event()

    async def slow_final_check(cluster: Cluster, get: Any, opened: Any, **kwargs: Any) -> Report:
        if "settle" in kwargs:  # the closing check, after every fault was restored
            started.set()
            await asyncio.sleep(30)
        return Report(cluster.metadata.name, ())

    async def scenario() -> DrillReport:
        task = asyncio.create_task(drill(cluster, fake, slow_final_check).run())
        await started.wait()
        task.cancel()
        return await task

    report = asyncio.run(scenario())
    assert report.interrupted and report.exit_code == 130
    assert [f.restored for f in report.faults] == [True, True]
    assert report.final_healthy is None and not fake.lock_held


def test_unreachable_host_refuses_without_waiting_for_check(cluster: Cluster) -> None:
    from hactl.errors import UnreachableError

    fake = FakeCluster(cluster)
    check = healthy_check()
    opened: dict[str, Any] = dict(fake.fakes)
    opened["etcd02"] = UnreachableError("connect timed out after 5s", host="etcd02")
    report = asyncio.run(Drill(cluster, fake, opened, run_id="r", timings=FAST,
                               check=check).run())
    assert report.exit_code == 1
    assert report.refused is not None and "etcd02: connect timed out" in report.refused
    assert check.calls == [] and all(not f.calls for f in fake.fakes.values())


def test_restore_that_cannot_reach_the_host_is_reported_not_raised(cluster: Cluster) -> None:
    from hactl.errors import UnreachableError

    fake = FakeCluster(cluster)
    original = fake.answer

    def cut_off_when_restoring(host: str, wire: str) -> Result:
        if "rmdir" in wire:
            raise UnreachableError("connection lost", host=host)
        return original(host, wire)

    fake.answer = cut_off_when_restoring  # type: ignore[method-assign]
    report = asyncio.run(drill(cluster, fake).run())
    assert report.exit_code == 3 and len(report.faults) == 1  # the etcd fault never ran
    cp = report.faults[0]
    assert not cp.restored and cp.error is not None and "restoring" in cp.error
    assert "connection lost" in cp.error and not fake.lock_held
    assert "NOT RESTORED" in report.render_text()


# -- stacked etcd: the member on a master ----------------------------------------------------------


def test_stacked_drill_stops_a_member_on_another_master_drained_first(stacked: Cluster) -> None:
    fake = FakeCluster(stacked, holder="master02")
    check = healthy_check()
    report = asyncio.run(drill(stacked, fake, check).run())
    assert report.exit_code == 0, report.render_text()
    assert fake.changes() == [
        ("master02", "take out"), ("master02", "stop kubelet"), ("master02", "put back"),
        # the member of another master: out of the LB first, then its etcd.yaml parked
        ("lb01", "drain master01"), ("master01", "park etcd"),
        ("master02", "write"),
        ("master01", "put back"), ("lb01", "ready master01"),
    ]
    assert not fake.parked and not fake.etcd_stopped and not fake.drained and not fake.lock_held
    cp, member = report.faults
    assert (member.fault.kind, member.fault.host) == ("etcd-member", "master01")
    assert member.passed and member.restored
    assert member.detect_seconds is not None and member.recover_seconds is not None
    assert [c.name for c in member.checks] == [
        "master02 reports master01's etcd member unhealthy",
        "quorum holds: every other member healthy",
        "the API writes (a ConfigMap created and deleted)",
        "the API through the load balancer answered every request",
    ]
    assert member.checks[1].detail == "master02, master03"
    assert member.reader_ok > 0 and member.reader_failed == 0
    assert fake.reads_member_down > 0  # the reader did read while the member was down
    assert cp.passed and set(cp.lease_moves) == {"kube-scheduler", "kube-controller-manager"}
    assert report.final_healthy is True
    assert "[pass] etcd-member master01" in report.render_text()


def test_stacked_member_with_its_master_taken_out_first(stacked: Cluster) -> None:
    fake = FakeCluster(stacked, holder="master01")
    report = asyncio.run(drill(stacked, fake).run())
    assert report.exit_code == 0, report.render_text()
    assert [(f.fault.kind, f.fault.host) for f in report.faults] == [
        ("control-plane", "master01"), ("etcd-member", "master02")]
    assert ("master02", "park etcd") in fake.log and ("master01", "park etcd") not in fake.log


def test_stacked_member_that_keeps_running_fails_the_check(stacked: Cluster) -> None:
    """The manifest moved but the member still answers: reported, not assumed stopped."""
    fake = FakeCluster(stacked)
    fake.kubelet_ignores_etcd_manifest = True
    report = asyncio.run(drill(stacked, fake).run())
    assert report.exit_code == 2, report.render_text()
    member = report.faults[1]
    assert member.restored and member.detect_seconds is None
    (failed,) = [c for c in member.checks if not c.ok]
    assert failed.name == "master02 reports master01's etcd member unhealthy"
    assert not fake.parked and not fake.drained


def test_stacked_drain_refused_stops_nothing_and_undoes_the_drain(stacked: Cluster) -> None:
    fake = FakeCluster(stacked)
    fake.lb_refuses = {"drain": "Server is not in a state that allows drain."}
    report = asyncio.run(drill(stacked, fake).run("master02"))
    assert report.exit_code == 2, report.render_text()
    member = report.faults[1]
    assert member.error is not None and "allows drain" in member.error
    assert "set server k8s-api-backend/master01 state drain` failed on lb01" in member.error
    assert member.restored  # nothing was stopped, and `ready` was still sent
    assert ("master01", "park etcd") not in fake.log
    assert fake.changes()[-3:] == [
        ("lb01", "drain master01"), ("master01", "put back"), ("lb01", "ready master01")]


def test_stacked_ready_refused_is_not_restored(stacked: Cluster) -> None:
    fake = FakeCluster(stacked)
    fake.lb_refuses = {"ready": "No such server."}
    report = asyncio.run(drill(stacked, fake).run("master02"))
    assert report.exit_code == 3, report.render_text()
    member = report.faults[1]
    assert not member.restored
    assert member.error is not None and member.error.startswith("restoring: ")
    assert "state ready` failed on lb01: No such server." in member.error
    assert "NOT RESTORED" in report.render_text()


def test_stacked_interrupt_restores_member_and_load_balancer(stacked: Cluster) -> None:
    fake = FakeCluster(stacked)
    slow = Timings(poll=0.005, reader_period=0.005, stop=5, detect=30, lease=30, recover=5,
                   final_settle=0, drain_settle=0)
    # the member keeps answering: the fault stays in its observation (detect: 30 s)
    fake.kubelet_ignores_etcd_manifest = True

    async def scenario() -> DrillReport:
        task = asyncio.create_task(drill(stacked, fake, timings=slow).run())
        while ("master01", "park etcd") not in fake.log:
            await asyncio.sleep(0.005)
        assert fake.drained == {"master01"}
        task.cancel()  # Ctrl-C during the etcd fault
        await asyncio.sleep(0)
        while ("master01", "put back") not in fake.log:
            await asyncio.sleep(0.001)
        task.cancel()  # again, while restoring
        return await task

    report = asyncio.run(scenario())
    assert report.interrupted and report.exit_code == 130, report.render_text()
    assert [f.restored for f in report.faults] == [True, True]
    assert report.faults[1].error == "interrupted"
    assert not fake.parked and not fake.drained and not fake.lock_held
    assert fake.changes()[-2:] == [("master01", "put back"), ("lb01", "ready master01")]
    assert "Interrupted" in report.render_text()


def test_stacked_member_not_back_is_not_restored_but_the_lb_is_made_ready(
    stacked: Cluster,
) -> None:
    fake = FakeCluster(stacked)
    original = fake.answer

    def etcd_stays_down(host: str, wire: str) -> Result:
        result = original(host, wire)
        if "rmdir" in wire and host == "master01":
            fake.etcd_starting.pop(host, None)  # the manifest is back, the member does not start
            fake.etcd_stopped.add(host)
        return result

    fake.answer = etcd_stays_down  # type: ignore[method-assign]
    report = asyncio.run(drill(stacked, fake).run("master02"))
    assert report.exit_code == 3, report.render_text()
    member = report.faults[1]
    assert not member.restored and member.recover_seconds is None
    assert fake.changes()[-1] == ("lb01", "ready master01") and not fake.drained
    assert "NOT RESTORED" in report.render_text()


def test_the_fake_lb_fails_reads_to_an_undrained_master_without_its_member(
    stacked: Cluster,
) -> None:
    """Why the stacked fault drains: the model answers 500 through the LB otherwise."""
    fake = FakeCluster(stacked)
    lb = f"--server https://{stacked.control_plane_endpoint} get --raw /readyz"
    assert fake.answer("master02", lb).ok
    fake.etcd_stopped.add("master01")
    assert not fake.answer("master02", lb).ok
    fake.drained.add("master01")
    assert fake.answer("master02", lb).ok
