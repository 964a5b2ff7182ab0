"""Fault injection (issue 11, "A standing defence"): hactl and the hosts interrupted, then
``hactl plan`` + ``hactl apply`` must converge and a last plan must say "No changes".

One lab of 8 nodes (3 etcd, 1 LB, 3 masters, 1 worker) serves every scenario, in an order where
each starts from the state the previous one left:

1. **SIGKILL walk** (spec A: etcd, LB, master01, master02) from a fresh lab. ``hactl apply``
   runs as a subprocess with JSON logs and is SIGKILLed (by the PID this test started) at EVERY
   step boundary of the bring-up — each apply the moment its first step ends — and inside the
   longest steps: 1.0 s into an etcd bootstrap, inside ``kubeadm init`` once its static Pod
   manifests are written, inside master02's control-plane join once its certificates are
   downloaded. After each kill: ``hactl plan`` must work, the lock the dead run left is broken
   with ``hactl unlock`` (which must call it STALE), and the next apply must get to its own kill
   without a failed step. The walk ends with an apply that has nothing left to do; the plan after
   it says "No changes".
2. **etcd member down mid-apply** (spec B adds worker01): etcd02 powered off when worker01's
   join starts, powered on 20 s later while the apply still runs; then converge.
3. **partition during a control-plane join** (spec C adds master03): master03's cable cut 1.5 s
   into its join for 20 s; then converge.
4. **power-off during a control-plane join**: master03 taken back out by hand (``kubeadm reset``
   and ``kubectl delete node``), then powered off inside its new join, the moment kubeadm has
   fetched the certificates; powered on; converge.
5. **SSH connection dropped mid-command**: master03 taken out by hand again, and inside its new
   join (once kubeadm fetched the certificates) the sshd processes serving hactl's connection
   to it are SIGKILLed (the host stays up); converge.
6. **SIGKILL between writing haproxy.cfg and its reload** (spec D = C with ``balance:
   leastconn``, a new haproxy.cfg content; hactl is killed the moment the new file is in
   place): unless the reload already happened (hactl's loaded marker matches the file), the
   next plan must plan it.
7. **host key regenerated** on worker01, with a hand edit of haproxy.cfg pending: the apply must
   fail with the host-key error and change nothing (the edit stays, no step starts, no lock is
   left); the old key back, the next apply converges.

During every scenario a reader asks ``/readyz`` through the load balancer once a second; a
ConfigMap written once the API is up must survive every scenario. Each scenario's outcome, API
errors seen and time to converge go to out/reliability.json (docs/reliability.md is filled from
it). A failing scenario does not stop the others: the next one first converges (or, if that is
impossible, starts on a fresh lab), and the test fails at the end listing every failure.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.lab.conftest import LAB_SPEC
from tests.lab.faultlib import (
    ApiReader,
    ApplyRun,
    clip,
    hactl,
    record,
    regenerate_host_key,
    restore_host_key,
    show,
    start_record,
)

ALL_MASTERS = ("master01", "master02", "master03")
SPECS = {"A": (("master01", "master02"), ()), "B": (("master01", "master02"), ("worker01",)),
         "C": (ALL_MASTERS, ("worker01",)), "D": (ALL_MASTERS, ("worker01",))}
"""D is C with another HAProxy balance algorithm: a new haproxy.cfg content to load."""
MARKER = "hactl-fault-marker"
APPLY_LIMIT = 420.0  # seconds one apply may take before the test calls it hung


def lab_doc() -> dict[str, Any]:
    doc = yaml.safe_load(LAB_SPEC.read_text())
    doc["workers"] = [w for w in doc["workers"] if w["name"] == "worker01"]
    return doc


@dataclass
class Stage:
    """The shared lab, its three specs and the run's environment."""

    lab: Any
    specs: dict[str, str]
    env: dict[str, str]
    marker: bool = False

    def reader(self) -> ApiReader:
        lb = self.lab.cluster.load_balancer
        return ApiReader(str(lb.hosts[0].address), lb.frontend_port)

    def hactl(self, *args: str, timeout: float = APPLY_LIMIT) -> Any:
        return hactl(*args, env=self.env, timeout=timeout)

    def apply(self, spec: str, *extra: str) -> ApplyRun:
        return ApplyRun("-f", self.specs[spec], "--auto-approve", *extra, env=self.env)


def new_stage(lab_factory: Callable[..., Any], tmp_path: Path) -> Stage:
    """A fresh lab of the 8 nodes and the specs A, B and C for it."""
    lab = lab_factory(lab_doc())
    full = yaml.safe_load(Path(lab.spec_file).read_text())
    specs = {}
    for key, (masters, workers) in SPECS.items():
        doc = dict(full)
        doc["masters"] = [m for m in full["masters"] if m["name"] in masters]
        doc["workers"] = [w for w in full["workers"] if w["name"] in workers]
        if key == "D":
            doc["loadBalancer"] = {**full["loadBalancer"], "balance": "leastconn"}
        path = tmp_path / f"{lab.name}-{key}.yaml"
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        specs[key] = str(path)
    env = {**os.environ, "HACTL_STATE_DIR": str(tmp_path / f"state-{lab.name}")}
    return Stage(lab, specs, env)


# -- steps shared by the scenarios ------------------------------------------------------------


def unlock(stage: Stage, spec: str) -> str:
    """Remove the lock a killed run left: a plain ``hactl unlock`` must see that its holder (a
    process of this machine) is gone, say so (STALE) and remove it."""
    res = stage.hactl("unlock", "-f", stage.specs[spec], timeout=120)
    assert res.returncode == 0 and "STALE" in res.stdout and "removed the lock" in res.stdout, (
        "unlock after a killed apply:\n" + show(res))
    said = [line for line in (res.stdout + res.stderr).splitlines() if "lock" in line.lower()]
    return said[-1] if said else ""


def no_lock_left(stage: Stage, spec: str) -> None:
    """Once converged, no lock is held (``hactl unlock`` without a lock id only shows it, and
    removes it only if its holder is proven gone)."""
    res = stage.hactl("unlock", "-f", stage.specs[spec], timeout=120)
    assert res.returncode == 0 and "No lock is held." in res.stdout, "a lock was left:\n" + show(res)


def plan_ok(stage: Stage, spec: str) -> int:
    res = stage.hactl("plan", "-f", stage.specs[spec], "--detailed-exitcode", timeout=240)
    assert res.returncode in (0, 2), "hactl plan failed:\n" + show(res)
    return int(res.returncode)


def converge(stage: Stage, spec: str) -> float:
    """plan, apply, plan: the last says "No changes"; seconds taken."""
    started = time.monotonic()
    if plan_ok(stage, spec) == 2:
        res = stage.hactl("apply", "-f", stage.specs[spec], "--auto-approve")
        assert res.returncode == 0, "apply did not converge:\n" + show(res)
        res = stage.hactl("plan", "-f", stage.specs[spec], "--detailed-exitcode", timeout=240)
        assert res.returncode == 0 and "No changes." in res.stdout, "not converged:\n" + show(res)
    check_marker(stage)
    return time.monotonic() - started


def kubectl(stage: Stage, *args: str) -> Any:
    return stage.lab.run("master01", ["kubectl", "--kubeconfig", "/etc/kubernetes/admin.conf", *args])


def check_marker(stage: Stage) -> None:
    """Nothing lost: the ConfigMap written once the API was up is still there."""
    if stage.marker:
        res = kubectl(stage, "-n", "default", "get", "configmap", MARKER, "-o", "jsonpath={.data.kept}")
        assert res.returncode == 0 and res.stdout == "yes", f"{MARKER} lost: {res.stdout} {res.stderr}"


def write_marker(stage: Stage) -> None:
    res = kubectl(stage, "-n", "default", "create", "configmap", MARKER, "--from-literal=kept=yes")
    assert res.returncode == 0, res.stderr
    stage.marker = True


def run_to_end(run: ApplyRun, facts: dict[str, Any]) -> int:
    """Wait for the faulted apply; its exit code, steps and last words go into ``facts``."""
    rc = run.finish(APPLY_LIMIT)
    print(f"apply ended: exit {rc} after {time.monotonic() - run.started:.1f}s")
    facts["apply_exit"] = rc
    facts["apply_steps"] = run.ended_steps()
    if rc != 0:
        facts["apply_said"] = run.human(800)
    return rc


# -- 1. SIGKILL at step boundaries and inside the longest steps -------------------------------


@dataclass(frozen=True)
class KillPoint:
    """A kill inside a step: ``delay`` seconds after it started, or as soon as ``appears``."""

    name: str
    step: str  # regex on the step id
    delay: float = 0.0
    appears: tuple[str, str] | None = None  # (node, path)


INSIDE_POINTS = (
    # 1.0 s into the first bootstrap: the bootstraps (each a `systemctl start --no-block`) have
    # all started by then. A kill between one member's start and the others' is the subject of
    # tests/lab/test_half_bootstrap_lab.py (made certain there, not left to timing).
    KillPoint("SIGKILL 1.0 s into an etcd bootstrap", r"\.bootstrap$", 1.0),
    KillPoint("SIGKILL inside kubeadm init, once the static Pod manifests are written",
              r"master01\]?\.init$", appears=("master01", "/etc/kubernetes/manifests/kube-apiserver.yaml")),
    KillPoint("SIGKILL inside a control-plane join, once the certificates are downloaded",
              r"master02\]?\.join$", appears=("master02", "/etc/kubernetes/pki/ca.key")),
)
"""In bring-up order. Besides these, the walk kills hactl at EVERY step boundary: each apply is
killed the moment its first step ends (unless one of these points comes first)."""
API_UP = re.compile(r"master01\]?\.(init|complete-init)$")
"""Once a step matching this ended ok, the API answers through the LB: errors count from then."""
MAX_KILLS = 40


def wait_for_file(stage: Stage, run: ApplyRun, step: str, node: str, path: str,
                  timeout: float = 180) -> bool:
    """Poll (every 20 ms, no process spawned) until ``path`` exists inside ``node``; False if the
    step ends (or hactl exits) first."""
    deadline = time.monotonic() + timeout
    rx = re.compile(step)
    while time.monotonic() < deadline and run.proc.poll() is None:
        if os.path.exists(f"/proc/{stage.lab.pid(node)}/root{path}"):
            return True
        if any(rx.search(s) for s in run.ended_steps()):
            return False
        time.sleep(0.02)
    return False


@dataclass
class Suite:
    """The shared lab (replaced by a fresh one when a scenario leaves it unusable) and every
    failure seen."""

    lab_factory: Callable[..., Any]
    tmp_path: Path
    stage: Stage | None = None
    failures: list[str] = field(default_factory=list)

    def fresh(self) -> Stage:
        self.stage = new_stage(self.lab_factory, self.tmp_path)
        return self.stage

    def fail(self, name: str, detail: str) -> None:
        self.failures.append(f"{name}: {detail}")


@dataclass
class Killed:
    name: str
    at: float
    reader: ApiReader
    api_up: bool
    plan: str = ""
    unlock: str = ""


def started_not_ended(run: ApplyRun, rx: re.Pattern[str]) -> dict[str, Any] | None:
    """The ``step.start`` of a step matching ``rx`` that has no ``step.end`` yet, if any."""
    events = run.seen()
    ended = {e.get("step") for e in events if e.get("event") == "step.end"}
    return next((e for e in events if e.get("event") == "step.start" and rx.search(str(e.get("step")))
                 and e.get("step") not in ended), None)


def kill_walk(suite: Suite, pending: list[KillPoint]) -> None:
    """From a fresh lab, bring up spec A by applies that are each SIGKILLed: at the first step
    boundary the run reaches (the moment a step ends ok, each step's end once), or inside the next of
    :data:`INSIDE_POINTS` when that step starts first. After each kill ``hactl plan`` must work
    and ``hactl unlock`` must see the dead holder (STALE) and remove its lock; the next apply must
    get to its own kill without a failed step. The walk ends when an apply finds nothing to do
    (exit 0); the plan then says "No changes" and the marker written once the API was up is kept."""
    stage = suite.fresh()
    previous: Killed | None = None
    api_up = False
    inside_done = 0
    boundaries: set[str] = set()
    """Steps after whose end a run was killed: each boundary once (a step that every apply does
    again, e.g. a fresh bootstrap token, would otherwise be killed after for ever)."""

    def settle(ok: bool, detail: str) -> None:
        assert previous is not None
        previous.reader.stop()
        api = previous.reader.summary() if previous.api_up else {}
        record(previous.name, outcome="recovered" if ok else "FAILED", detail=clip(detail),
               seconds_to_recover=round(time.monotonic() - previous.at, 1),
               plan_after_kill=previous.plan, unlock=previous.unlock, **api)
        if not ok:
            suite.fail(previous.name, clip(detail))

    for _ in range(MAX_KILLS):
        if previous is not None:
            try:
                previous.plan = f"exit {plan_ok(stage, 'A')}"
                previous.unlock = unlock(stage, "A")
            except AssertionError as exc:
                settle(False, f"after the kill: {exc}")
                suite.fresh()
                return
        # The spec's parallelism, as users run it: steps running beside the one that ended are
        # cut wherever they are. (One step at a time would give each boundary a moment of its
        # own; a kill between two members' bootstraps, certain then, has a test of its own:
        # tests/lab/test_half_bootstrap_lab.py.)
        run = stage.apply("A")
        inside = pending[0] if pending else None
        rx = re.compile(inside.step) if inside else None

        def due(e: dict[str, Any], rx: re.Pattern[str] | None = rx) -> bool:
            if e.get("event") == "step.end":  # a boundary not killed at yet, or a failure
                return e.get("step") not in boundaries or e.get("outcome") != "ok"
            return rx is not None and e.get("event") == "step.start" and bool(rx.search(str(e.get("step"))))

        try:
            event = run.wait_event(due, timeout=APPLY_LIMIT)
        except TimeoutError:
            run.kill()
            event, why = None, f"no step ended in {APPLY_LIMIT:g}s\n{run.human()}"
        else:
            why = ""
        if event is not None and event["event"] == "step.end" and event.get("outcome") == "ok" \
                and rx is not None:
            # The events come in batches under load: when the inside point's step has started
            # too and not ended yet, the inside point wins over the boundary (its step may be
            # done by the next run, and the point would be passed for good).
            event = started_not_ended(run, rx) or event
        if event is None:
            rc = run.finish(120) if not why else -9
            if rc == 0:  # no step to run: the bring-up is complete
                if previous is not None:
                    settle(True, "the next apply found nothing left to do")
                    previous = None
            else:
                why = why or f"the apply ended (exit {rc}) without ending a step\n{run.human()}"
                if previous is not None:
                    settle(False, f"the next apply: {why}")
                else:
                    suite.fail("kill walk", clip(why))
                suite.fresh()
                return
            break
        step = str(event.get("step"))
        if event["event"] == "step.end" and event.get("outcome") != "ok":
            run.kill()
            why = f"step {step} failed: {event.get('outcome')}\n{run.human()}"
            if previous is not None:
                settle(False, f"the next apply: {why}")
            else:
                suite.fail("kill walk", clip(why))
            suite.fresh()
            return
        if previous is not None:
            settle(True, f"the next apply got past it (to {event['event']} of {step})")
            previous = None
        if event["event"] == "step.start":
            assert inside is not None
            pending.pop(0)
            inside_done += 1
            name = inside.name
            if inside.delay:
                time.sleep(max(0.0, inside.delay - (time.monotonic() - event["_t"])))
            if inside.appears and not wait_for_file(stage, run, inside.step, *inside.appears):
                suite.fail(name, f"{inside.appears} never appeared while the step ran\n{run.human()}")
                record(name, outcome="FAILED", detail=f"{inside.appears} never appeared")
                run.kill()
                suite.fresh()
                return
        else:
            boundaries.add(step)
            name = f"SIGKILL at the step boundary after {step}"
        if run.proc.poll() is not None:
            why = f"the apply ended by itself before it was killed\n{run.human()}"
            suite.fail(name, clip(why))
            record(name, outcome="FAILED", detail=clip(why))
            suite.fresh()
            return
        reader = stage.reader().__enter__()
        run.kill()
        api_up = api_up or any(API_UP.search(s) and o == "ok" for s, o in run.ended_steps().items())
        if api_up and not stage.marker:
            write_marker(stage)
        print(f"killed hactl (pid {run.pid}) at '{name}'; steps ended in this run: {run.ended_steps()}")
        previous = Killed(name, time.monotonic(), reader, api_up)
    else:
        suite.fail("kill walk", f"not converged after {MAX_KILLS} kills")
        suite.fresh()
        return
    if pending:  # the walk passed them between two kills (they ended while another was due)
        print(f"kill walk: not reached this time: {[p.name for p in pending]}")
    try:
        converge(stage, "A")
    except AssertionError as exc:
        suite.fail("kill walk", f"after the last kill: {clip(str(exc))}")
        suite.fresh()
        return
    record(f"SIGKILL at each step boundary of a bring-up ({len(boundaries)} boundaries)",
           outcome="converged after every kill" if not suite.failures else "see the failures",
           kills=len(boundaries) + inside_done, boundaries=sorted(boundaries))
    print(f"kill walk: {len(boundaries)} boundaries and {inside_done} inside points")


# -- 2.–7. the hosts fail --------------------------------------------------------------------


def scenario(suite: Suite, name: str, pre: str, spec: str,
             body: Callable[[Stage, dict[str, Any]], None]) -> None:
    """Converge to ``pre`` first (a fresh lab if that fails), run ``body``, converge to ``spec``,
    record."""
    stage = suite.stage or suite.fresh()
    try:
        converge(stage, pre)
    except AssertionError as exc:
        suite.fail(f"before '{name}'", f"could not converge: {clip(str(exc))}")
        stage = suite.fresh()
        try:
            converge(stage, pre)
        except AssertionError as again:
            suite.fail(name, f"not run: a fresh lab did not converge either: {clip(str(again))}")
            record(name, outcome="NOT RUN", detail=f"a fresh lab did not converge: {clip(str(again))}")
            suite.fresh()
            return
    if not stage.marker:
        write_marker(stage)
    facts: dict[str, Any] = {}
    started = time.monotonic()
    with stage.reader() as reader:
        try:
            body(stage, facts)
            took = converge(stage, spec) + facts.pop("_fault_to_end", 0.0)
            no_lock_left(stage, spec)
            record(name, outcome=facts.pop("outcome", "converged"), seconds_to_converge=round(took, 1),
                   seconds=round(time.monotonic() - started, 1), **facts, **reader.summary())
        except AssertionError as exc:
            facts.pop("_fault_to_end", None)
            record(name, outcome="FAILED", detail=clip(str(exc)), **facts, **reader.summary())
            suite.fail(name, clip(str(exc)))
            stage.hactl("unlock", "-f", stage.specs[spec], "--force", timeout=120)


def etcd_member_down(stage: Stage, facts: dict[str, Any]) -> None:
    run = stage.apply("B")
    event = run.step_event("step.start", r"worker01\]?\.join$", timeout=APPLY_LIMIT)
    assert event is not None, "worker01's join never started:\n" + run.text()
    stage.lab.stop("etcd02")
    fault = time.monotonic()
    try:
        time.sleep(20)
    finally:
        stage.lab.start("etcd02")
    run_to_end(run, facts)
    facts["_fault_to_end"] = time.monotonic() - fault


def partition_join(stage: Stage, facts: dict[str, Any]) -> None:
    run = stage.apply("C")
    event = run.step_event("step.start", r"master03\]?\.join$", timeout=APPLY_LIMIT)
    assert event is not None, "master03's join never started:\n" + run.text()
    time.sleep(1.5)
    stage.lab.partition("master03")
    fault = time.monotonic()
    try:
        time.sleep(20)
    finally:
        stage.lab.heal("master03")
    run_to_end(run, facts)
    facts["_fault_to_end"] = time.monotonic() - fault


def rejoin_master03(stage: Stage) -> ApplyRun:
    """master03 taken out by hand (``kubeadm reset``, ``kubectl delete node``), then the apply of
    spec C joining it again, returned the moment kubeadm has fetched the certificates onto it
    (so the outcome of a fault then does not depend on timing)."""
    reset = stage.lab.run("master03", "kubeadm reset -f", timeout=120)
    assert reset.returncode == 0, reset.stderr
    # real kubeadm reset removes every control-plane container: nothing may listen on their ports
    held = stage.lab.run("master03", "ss -Hltnp 'sport = :6443 or sport = :10257 or sport = :10259'",
                         timeout=60)
    assert held.returncode == 0 and not held.stdout.strip(), (
        "a control-plane port is still held on master03 after `kubeadm reset -f`:\n" + held.stdout
        + stage.lab.run("master03", "ps -eo pid,ppid,pgid,args", timeout=60).stdout
        + "\n--- reset said\n" + reset.stdout + reset.stderr)
    gone = kubectl(stage, "delete", "node", "master03")
    assert gone.returncode == 0, gone.stderr
    run = stage.apply("C")
    event = run.step_event("step.start", r"master03\]?\.join$", timeout=APPLY_LIMIT)
    assert event is not None, "master03's join never started:\n" + run.text()
    fetched = wait_for_file(stage, run, r"master03\]?\.join$", "master03", "/etc/kubernetes/pki/ca.key")
    assert fetched, "master03's join ended before its certificates were fetched:\n" + run.human(6000)
    return run


def power_off_join(stage: Stage, facts: dict[str, Any]) -> None:
    run = rejoin_master03(stage)
    stage.lab.stop("master03")
    fault = time.monotonic()
    run_to_end(run, facts)
    stage.lab.start("master03")
    facts["_fault_to_end"] = time.monotonic() - fault


def ssh_sessions(stage: Stage, node: str) -> list[int]:
    """PIDs (as this machine sees them) of the node's sshd processes that serve a connection:
    every ``sshd:`` / ``sshd-session:`` process in the node's PID namespace but the listener.
    The lab itself enters nodes without SSH, so during an apply these are hactl's."""
    ns = os.readlink(f"/proc/{stage.lab.pid(node)}/ns/pid")
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.readlink(f"/proc/{entry}/ns/pid") != ns:
                continue
            argv = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        if argv.startswith((b"sshd:", b"sshd-session:")) and b"[listener]" not in argv:
            found.append(int(entry))
    return found


def ssh_dropped_mid_command(stage: Stage, facts: dict[str, Any]) -> None:
    """master03 taken out by hand as in the power-off scenario, then, inside its new join (the
    moment kubeadm has fetched the certificates), the sshd processes serving hactl's connection
    to master03 are SIGKILLed: the connection drops mid-command while the host stays up."""
    run = rejoin_master03(stage)
    sessions = ssh_sessions(stage, "master03")
    assert sessions, "no sshd process serves hactl's connection to master03"
    for pid in sessions:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    fault = time.monotonic()
    facts["sshd_killed"] = len(sessions)
    rc = run_to_end(run, facts)
    facts["_fault_to_end"] = time.monotonic() - fault
    # the host stayed up: the transport reconnects, stops what is left of the cut join, and the
    # step's retry (which resets that attempt's files first) finishes it in the same apply
    assert rc == 0, "the apply did not finish the join after its connection dropped:\n" + run.human()


def haproxy_written_not_loaded(stage: Stage, facts: dict[str, Any]) -> None:
    """Spec D changes haproxy.cfg's content (balance leastconn); hactl is killed the moment the
    new file is moved in place, before (or just after) its reload. Unless the reload was done
    (hactl's loaded marker holds the new file's hash), the next plan must plan the reload."""
    lab = stage.lab
    lb = lab.cluster.load_balancer.hosts[0].name
    cfg = f"/proc/{lab.pid(lb)}/root/etc/haproxy/haproxy.cfg"
    inode = os.stat(cfg).st_ino  # `mv` of the new file replaces the inode
    run = stage.apply("D")
    event = run.step_event("step.start", r"haproxy$", timeout=APPLY_LIMIT)
    assert event is not None, "ConfigureHAProxy never started:\n" + run.human()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and run.proc.poll() is None and os.stat(cfg).st_ino == inode:
        time.sleep(0.0005)
    killed = run.proc.poll() is None
    run.kill()
    fault = time.monotonic()
    assert killed, "the apply ended before the new haproxy.cfg was seen:\n" + run.human()
    written = lab.run(lb, "sha256sum /etc/haproxy/haproxy.cfg; cat /run/hactl/haproxy.sha256")
    words = written.stdout.split()
    loaded = len(words) > 2 and words[0] == words[2]
    facts["kill_landed"] = "after the reload" if loaded else "between the move and the reload"
    assert "leastconn" in lab.read(lb, "/etc/haproxy/haproxy.cfg")
    unlock(stage, "D")
    res = stage.hactl("plan", "-f", stage.specs["D"], "--detailed-exitcode", timeout=240)
    facts["plan_after_kill"] = res.returncode
    if not loaded:
        assert res.returncode == 2 and "haproxy" in res.stdout.lower(), (
            "a haproxy.cfg written but never loaded is not in the plan:\n" + show(res))
    facts["_fault_to_end"] = time.monotonic() - fault


def host_key_changed(stage: Stage, facts: dict[str, Any]) -> None:
    lab = stage.lab
    lb = lab.cluster.load_balancer.hosts[0].name
    edit = lab.run(lb, "echo '# edited by hand' >> /etc/haproxy/haproxy.cfg")
    assert edit.returncode == 0, edit.stderr
    old = regenerate_host_key(lab, "worker01")
    try:
        ssh = lab.run("worker01", "true", via="ssh")  # OpenSSH with the same known_hosts refuses
        assert ssh.returncode != 0 and "Host key verification failed" in ssh.stderr, (
            f"the host key did not change: ssh exit {ssh.returncode} {ssh.stderr}")
        run = stage.apply("C")
        rc = run_to_end(run, facts)
        said = run.human()
        started = [e["step"] for e in run.events if e.get("event") == "step.start"]
        about = [line for line in run.human(10**6).splitlines() if "worker01" in line]
        facts["said_about_worker01"] = about[:5]
        assert not started, f"steps ran although worker01's host key changed: {started}; " \
            f"hactl said about worker01: {about[:5]}"
        assert rc != 0, "apply with a changed host key succeeded:\n" + said
        assert "host key" in said and "worker01" in said and "CHANGED" in said, said
        still = lab.run(lb, "tail -n 1 /etc/haproxy/haproxy.cfg").stdout.strip()
        assert still == "# edited by hand", f"haproxy.cfg was changed: last line {still!r}"
        lock = stage.hactl("unlock", "-f", stage.specs["C"], timeout=120)
        assert "removed the lock" not in lock.stdout, "the refused apply left its lock:\n" + show(lock)
        facts["outcome"] = "refused, nothing changed"
    finally:
        restore_host_key(lab, "worker01", old)


SCENARIOS = (
    ("etcd", "etcd member powered off 20 s mid-apply (worker join)", "A", "B", etcd_member_down),
    ("partition", "control-plane node partitioned 20 s during its join", "B", "C", partition_join),
    ("poweroff", "control-plane node powered off during its join", "C", "C", power_off_join),
    ("sshdrop", "SSH connection dropped mid-command (inside a control-plane join)", "C", "C",
     ssh_dropped_mid_command),
    ("haproxy", "SIGKILL between writing haproxy.cfg and reloading it", "C", "D",
     haproxy_written_not_loaded),
    ("hostkey", "host key regenerated on a node (must be refused)", "C", "C", host_key_changed),
)


@pytest.mark.timeout(3600)
def test_faults_converge(lab_factory: Any, tmp_path: Path) -> None:
    """Every scenario; ``HACTL_FAULTS=chain,etcd,…`` runs only those named (while developing)."""
    only = set(filter(None, os.environ.get("HACTL_FAULTS", "").split(",")))
    if not only:
        start_record()
    suite = Suite(lab_factory, tmp_path)
    t0 = time.monotonic()
    try:
        if not only or "chain" in only:
            pending = list(INSIDE_POINTS)
            for _ in range(2):  # a second walk, on a fresh lab, for inside points the first passed
                kill_walk(suite, pending)
                if not pending or suite.failures:
                    break
            if pending:  # KNOWN WEAKNESS (docs/reliability.md): recorded, not yet a failure
                record("kill walk: inside points not reached", outcome="NOT REACHED",
                       detail=str([p.name for p in pending]))
                print(f"kill walk: NOT REACHED: {[p.name for p in pending]}")
            print(f"kill walk: {time.monotonic() - t0:.0f}s")
        for key, name, pre, spec, body in SCENARIOS:
            if only and key not in only:
                continue
            t1 = time.monotonic()
            scenario(suite, name, pre, spec, body)
            print(f"{name}: {time.monotonic() - t1:.0f}s")
        print(f"all scenarios: {time.monotonic() - t0:.0f}s")
    finally:
        ApplyRun.reap_all()
    assert not suite.failures, "\n\n".join(suite.failures)
