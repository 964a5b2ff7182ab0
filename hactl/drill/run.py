"""``hactl drill``, the running: preflight (fault budget, ``hactl check``, the leader Leases) →
the cluster lock → each fault of :func:`hactl.drill.plan.plan_faults` in turn (inject, observe,
restore in ``finally``: restoring cannot be cancelled, Ctrl-C included) → ``hactl check`` again.

Every command goes through the caller's transports (one connection per host); nothing here opens
a connection. Observation while a fault is active (every ``Timings.poll`` seconds):

- a reader on another master asks ``/readyz`` through the load balancer endpoint every
  ``Timings.reader_period`` seconds and counts the answers that are not ``ok``;
- the HAProxy stats socket of every load balancer, until each marks the master's server DOWN;
- the leader Leases (kube-scheduler, kube-controller-manager) until those the master held have
  a holder on another master;
- for an etcd member: ``endpoint health`` of the stopped member asked from another member (until
  it is reported unhealthy), each other member's own health (quorum), and a ConfigMap created and
  deleted through the load balancer (the API still writes). Stacked etcd is asked with kubeadm's
  healthcheck client on the masters; the master whose member stops is drained from the load
  balancers first and made ready again when restoring (its API server uses only that member).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from hactl.check import parse_leases, run_check
from hactl.check.model import LEADER_LEASES
from hactl.diff import client_url
from hactl.drill.plan import (
    Check,
    DrillReport,
    Fault,
    FaultResult,
    fault_budget,
    lb_server_command,
    lb_server_script,
    lease_host,
    park_etcd_script,
    plan_faults,
    put_back_script,
    start_etcd,
    stop_etcd,
    stop_kubelet,
    take_out_script,
    write_script,
)
from hactl.errors import HactlError
from hactl.facts.base import FactParseError
from hactl.facts.etcd import parse_endpoint_health
from hactl.facts.haproxy import HAProxyStats
from hactl.lock import ClusterLock, LockOwner
from hactl.log import get_logger
from hactl.render.kubeadm_config import API_BIND_PORT
from hactl.transport import tools

if TYPE_CHECKING:
    from hactl.check import Report
    from hactl.spec.models import Cluster
    from hactl.transport.base import Command, Result, Transport

T = TypeVar("T")
Transports = Callable[[str], "Transport"]
CheckFn = Callable[..., Awaitable["Report"]]
COMMAND_TIMEOUT = 30.0
"""Seconds for one command of the drill on a host (moves, systemctl, one kubectl or etcdctl)."""


@dataclass(frozen=True)
class Timings:
    """How often the drill looks and how long it waits (seconds)."""

    poll: float = 1.0
    reader_period: float = 1.0
    stop: float = 60.0
    """The master's API server stops answering after its manifest moved."""
    detect: float = 45.0
    """The LB marks the backend DOWN / the etcd member is reported unhealthy."""
    lease: float = 60.0
    """A Lease held on the master moves to another master."""
    recover: float = 240.0
    """After restore: the master Ready, its API server answering and UP in the LB; the member
    healthy."""
    final_settle: float = 180.0
    """The closing ``hactl check`` is retried this long for the cluster to settle."""
    drain_settle: float = 1.0
    """Between draining a master from the load balancers and stopping its stacked etcd member:
    the requests already sent to it finish (as ``rewrite_etcd_servers`` waits)."""


class Drill:
    def __init__(
        self,
        cluster: Cluster,
        transports: Transports,
        opened: Mapping[str, Transport | BaseException],
        *,
        run_id: str,
        timings: Timings = Timings(),
        check: CheckFn = run_check,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        lock_owner: LockOwner | None = None,
    ) -> None:
        self.cluster = cluster
        self.get = transports
        self.opened = opened
        self.run_id = run_id
        self.t = timings
        self.check = check
        self.clock = clock
        self.sleep = sleep
        self.lock_owner = lock_owner or LockOwner.new(run_id=run_id, command="hactl drill")
        self.log = get_logger(run_id=run_id, cluster=cluster.metadata.name)
        self.interrupted = False
        """Ctrl-C (a cancellation) arrived: the fault in progress is restored, no other runs."""
        self.address = {h.name: str(h.address) for h in (*cluster.masters, *cluster.etcd_members)}
        self.stacked = cluster.etcd.topology == "stacked"
        self.etcd_tls = tools.STACKED_ETCD if self.stacked else tools.EXTERNAL_ETCD
        """Stacked etcd is asked on a master with kubeadm's healthcheck client."""

    # -- small I/O helpers -------------------------------------------------------------------

    async def sh(self, host: str, command: Command, timeout: float = COMMAND_TIMEOUT) -> Result:
        return await self.get(host).run(command, timeout=timeout, check=False)

    async def until(self, predicate: Callable[[], Awaitable[bool]], timeout: float) -> bool:
        """Poll ``predicate`` (an error counts as False) until true or ``timeout`` passed."""
        start = self.clock()
        while True:
            try:
                if await predicate():
                    return True
            except (HactlError, FactParseError, ValueError, KeyError, TypeError):
                pass
            if self.clock() - start >= timeout:
                return False
            await self.sleep(self.t.poll)

    async def lb_readyz(self, via: str) -> bool:
        server = f"https://{self.cluster.control_plane_endpoint}"
        res = await self.sh(via, tools.kubectl("--server", server, "get", "--raw", "/readyz"))
        return res.ok and res.stdout.strip() == "ok"

    async def own_readyz(self, master: str) -> bool:
        """The master's own API server (not through the LB), asked on the master."""
        server = f"https://{self.address[master]}:{API_BIND_PORT}"
        res = await self.sh(master, tools.kubectl("--server", server, "get", "--raw", "/readyz",
                                                  timeout=tools.KUBECTL_READ_TIMEOUT))
        return res.ok and res.stdout.strip() == "ok"

    async def holders(self, via: str) -> dict[str, str | None]:
        res = await self.sh(via, tools.kubectl("get", "lease", "-n", "kube-system", "-o", "json"))
        if not res.ok:
            raise HactlError(f"reading the leader Leases failed: {res.stderr.strip()[-200:]}",
                             host=via)
        leases = parse_leases(res.stdout)
        return {name: lease_host(leases[name].holder) if name in leases else None
                for name in LEADER_LEASES}

    async def lb_states(self, master: str) -> list[str | None]:
        """The status of ``master``'s server on every load balancer (None: not read)."""
        fact = HAProxyStats()
        script = f"__hactl_drill_stats() {{\n{fact.script()}\n}}\n__hactl_drill_stats"
        states: list[str | None] = []
        for lb in (h.name for h in self.cluster.load_balancer.hosts):
            try:
                res = await self.sh(lb, script)
                servers = fact.parse(res.stdout) if res.ok else ()
            except (HactlError, FactParseError):
                servers = ()
            found = [s.status for s in servers if s.server == master]
            states.append(found[0] if found else None)
        return states

    async def lb_set(self, master: str, state: Literal["drain", "ready"]) -> None:
        """``master``'s server to ``state`` on every load balancer (each is asked even when one
        refuses); HactlError naming those that refused."""
        script = lb_server_script(master, state)
        refused = []
        for lb in (h.name for h in self.cluster.load_balancer.hosts):
            try:
                res = await self.sh(lb, script)
                answer = (res.stdout + res.stderr).strip()
                if not res.ok or answer:
                    refused.append(f"{lb}: {answer or f'exit {res.exit_status}'}")
            except HactlError as exc:
                refused.append(f"{lb}: {exc}")
        if refused:
            raise HactlError(f"`{lb_server_command(master, state)}` failed on "
                             + "; ".join(refused)[-300:])

    async def lb_all_up(self, master: str) -> bool:
        states = await self.lb_states(master)
        return bool(states) and all(s == "UP" for s in states)

    async def node_ready(self, via: str, node: str) -> bool:
        res = await self.sh(via, tools.kubectl("get", "node", node, "-o", "json"))
        if not res.ok:
            return False
        conditions = json.loads(res.stdout).get("status", {}).get("conditions") or []
        return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)

    async def etcd_healthy(self, asker: str, member: str) -> bool:
        url = client_url(self.cluster, next(h for h in self.cluster.etcd_members
                                            if h.name == member))
        res = await self.sh(asker, tools.etcdctl([url], "endpoint", "health", tls=self.etcd_tls,
                                                 timeout=tools.ETCDCTL_HEALTH_TIMEOUT))
        answers = parse_endpoint_health(res.stdout) if res.stdout.strip() else ()
        return bool(answers) and all(a.healthy for a in answers)

    # -- the reader ----------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def reader(self, via: str, result: FaultResult) -> Any:
        """``/readyz`` through the LB every ``reader_period`` s while the block runs."""
        stop = asyncio.Event()

        async def loop() -> None:
            while not stop.is_set():
                try:
                    good = await self.lb_readyz(via)
                except HactlError:
                    good = False
                if good:
                    result.reader_ok += 1
                else:
                    result.reader_failed += 1
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.t.reader_period)

        task = asyncio.create_task(loop(), name="drill-reader")
        try:
            yield
        finally:
            stop.set()
            if await _finish(task):
                self.interrupted = True
            result.checks.append(Check(
                "the API through the load balancer answered every request",
                result.reader_failed == 0,
                f"{result.reader_ok} ok, {result.reader_failed} failed",
            ))

    # -- faults --------------------------------------------------------------------------------

    def other_master(self, host: str) -> str:
        return next(m.name for m in self.cluster.masters if m.name != host)

    async def control_plane(self, fault: Fault) -> FaultResult:
        res = FaultResult(fault)
        host, via = fault.host, self.other_master(fault.host)

        async def restore() -> None:
            await self.sh(host, put_back_script(), timeout=60)
            started = self.clock()

            async def back() -> bool:
                return (await self.node_ready(via, host) and await self.own_readyz(host)
                        and all(s == "UP" for s in await self.lb_states(host)))

            if await self.until(back, self.t.recover):
                res.recover_seconds = self.clock() - started
                res.restored = True

        async def inject() -> None:
            started = self.clock()
            out = await self.sh(host, take_out_script())
            if not out.ok:
                raise HactlError(f"moving the manifests failed: {out.stderr.strip()[-200:]}",
                                 host=host)

            async def api_gone() -> bool:
                return not await self.own_readyz(host)

            res.checks.append(Check(f"the API server on {host} stopped",
                                    await self.until(api_gone, self.t.stop)))
            await self.sh(host, stop_kubelet())

            async def lb_down() -> bool:
                states = await self.lb_states(host)
                return bool(states) and all(s in ("DOWN", "MAINT") for s in states)

            async def moved(lease: str) -> None:
                async def away() -> bool:
                    now = (await self.holders(via)).get(lease)
                    return now is not None and now != host

                ok = await self.until(away, self.t.lease)
                res.lease_moves[lease] = self.clock() - started if ok else None
                res.checks.append(Check(f"lease {lease} moved off {host}", ok,
                                        "" if ok else f"still on {host} after {self.t.lease:g}s"))

            async def detect() -> None:
                ok = await self.until(lb_down, self.t.detect)
                res.detect_seconds = self.clock() - started if ok else None
                res.checks.append(Check(f"the load balancer marked {host} DOWN", ok))

            await asyncio.gather(detect(), *(moved(lease) for lease in fault.leases_held))

        return await self._fault(res, via, inject, restore)

    async def etcd_member(self, fault: Fault) -> FaultResult:
        if self.stacked:
            return await self.stacked_etcd_member(fault)
        res = FaultResult(fault)
        member = fault.host
        others = [h.name for h in self.cluster.etcd_members if h.name != member]
        via = self.cluster.masters[0].name

        async def restore() -> None:
            await self.sh(member, start_etcd())
            started = self.clock()

            async def healthy() -> bool:
                return await self.etcd_healthy(member, member)

            if await self.until(healthy, self.t.recover):
                res.recover_seconds = self.clock() - started
                res.restored = True

        async def inject() -> None:
            started = self.clock()
            out = await self.sh(member, stop_etcd(), timeout=60)
            if not out.ok:
                raise HactlError(f"systemctl stop etcd failed: {out.stderr.strip()[-200:]}",
                                 host=member)

            async def seen_down() -> bool:
                return not await self.etcd_healthy(others[0], member)

            ok = await self.until(seen_down, self.t.detect)
            res.detect_seconds = self.clock() - started if ok else None
            res.checks.append(Check(f"{others[0]} reports {member} unhealthy", ok))
            bad = [o for o in others if not await self.etcd_healthy(o, o)]
            res.checks.append(Check("quorum holds: every other member healthy", not bad,
                                    f"unhealthy: {', '.join(bad)}" if bad else ", ".join(others)))
            wrote = await self.sh(via, write_script(self.run_id))
            res.checks.append(Check("the API writes (a ConfigMap created and deleted)",
                                    wrote.ok, wrote.stderr.strip()[-200:] if not wrote.ok else ""))

        return await self._fault(res, via, inject, restore)

    async def stacked_etcd_member(self, fault: Fault) -> FaultResult:
        """Stop kubeadm's etcd static Pod on one master (its manifest parked), the master
        drained from the load balancers first: kubeadm's API server there uses only its local
        member (``--etcd-servers=https://127.0.0.1:2379``), so it goes with it, and the load
        balancers (TCP) would pass its errors on until their checks mark it DOWN."""
        res = FaultResult(fault)
        member = fault.host
        others = [m.name for m in self.cluster.masters if m.name != member]
        via = others[0]

        async def restore() -> None:
            started = self.clock()
            try:
                out = await self.sh(member, put_back_script(), timeout=60)
                if not out.ok:
                    raise HactlError(f"moving etcd.yaml back failed: {out.stderr.strip()[-200:]}",
                                     host=member)

                async def back() -> bool:
                    return (await self.etcd_healthy(via, member)
                            and await self.own_readyz(member)
                            and await self.node_ready(via, member))

                ok = await self.until(back, self.t.recover)
            finally:
                # always (a drain is undone even when the member did not come back: its API
                # server then stays out through the load balancers' health checks)
                await self.lb_set(member, "ready")
            if ok and await self.until(lambda: self.lb_all_up(member), self.t.recover):
                res.recover_seconds = self.clock() - started
                res.restored = True

        async def inject() -> None:
            await self.lb_set(member, "drain")
            await self.sleep(self.t.drain_settle)
            started = self.clock()
            out = await self.sh(member, park_etcd_script())
            if not out.ok:
                raise HactlError(f"moving etcd.yaml failed: {out.stderr.strip()[-200:]}",
                                 host=member)

            async def seen_down() -> bool:
                return not await self.etcd_healthy(via, member)

            ok = await self.until(seen_down, self.t.detect)
            res.detect_seconds = self.clock() - started if ok else None
            res.checks.append(Check(f"{via} reports {member}'s etcd member unhealthy", ok,
                                    "" if ok else f"still healthy after {self.t.detect:g}s"))
            bad = [o for o in others if not await self.etcd_healthy(o, o)]
            res.checks.append(Check("quorum holds: every other member healthy", not bad,
                                    f"unhealthy: {', '.join(bad)}" if bad else ", ".join(others)))
            wrote = await self.sh(via, write_script(self.run_id))
            res.checks.append(Check("the API writes (a ConfigMap created and deleted)",
                                    wrote.ok, wrote.stderr.strip()[-200:] if not wrote.ok else ""))

        return await self._fault(res, via, inject, restore)

    async def _fault(
        self,
        res: FaultResult,
        via: str,
        inject: Callable[[], Awaitable[None]],
        restore: Callable[[], Coroutine[Any, Any, None]],
    ) -> FaultResult:
        """Inject and observe under the reader; restore whatever happened (not cancellable).
        A cancellation (Ctrl-C) sets :attr:`interrupted` instead of propagating."""
        self.log.info("drill.fault", kind=res.fault.kind, host=res.fault.host)
        async with self.reader(via, res):
            try:
                await inject()
            except asyncio.CancelledError:
                self.interrupted = True
                res.error = "interrupted"
                _uncancel()
            except (HactlError, FactParseError, ValueError, KeyError, TypeError) as exc:
                res.error = str(exc)
            finally:
                self.log.info("drill.restore", kind=res.fault.kind, host=res.fault.host)
                try:
                    if await _finish(restore()):
                        self.interrupted = True
                except (HactlError, FactParseError, ValueError, KeyError, TypeError) as exc:
                    res.error = f"{res.error}; restoring: {exc}" if res.error else \
                        f"restoring: {exc}"
        self.log.info("drill.fault_done", kind=res.fault.kind, host=res.fault.host,
                      passed=res.passed, restored=res.restored)
        return res

    # -- the whole drill -------------------------------------------------------------------

    async def preflight(self, node: str | None) -> tuple[list[Fault] | None, str | None]:
        """The faults to run, or why the drill must not start (nothing is touched here)."""
        reasons = fault_budget(self.cluster)
        if reasons:
            return None, "The spec's topology has no fault budget:\n" + "\n".join(
                f"  - {r}" for r in reasons)
        down = {h: v for h, v in self.opened.items() if isinstance(v, BaseException)}
        if down:  # what hactl check would find first, without its minutes of timeouts
            return None, "The cluster is degraded: hosts that could not be reached:\n" + "\n".join(
                f"  - {h}: {getattr(e, 'message', None) or e}" for h, e in sorted(down.items()))
        report = await self.check(self.cluster, self.get, self.opened)
        if not report.healthy:
            return None, "The cluster is degraded (hactl check):\n" + "\n".join(
                report.verdict_lines())
        holders: dict[str, str | None] = {}
        for master in (m.name for m in self.cluster.masters):
            try:
                holders = await self.holders(master)
                break
            except (HactlError, ValueError, KeyError, TypeError):
                continue
        try:
            return plan_faults(self.cluster, node, holders), None
        except ValueError as exc:
            return None, str(exc)

    async def run(self, node: str | None = None) -> DrillReport:
        report = DrillReport(self.cluster.metadata.name)
        faults, refused = await self.preflight(node)
        if faults is None:
            report.refused = refused
            return report
        with _sigint_cancels():
            try:
                async with ClusterLock(self.cluster, self.get, self.lock_owner):
                    for fault in faults:
                        run = self.control_plane if fault.kind == "control-plane" else \
                            self.etcd_member
                        report.faults.append(await run(fault))
                        if self.interrupted or not report.faults[-1].restored:
                            break  # never stack a second fault on one not undone
                if self.interrupted:
                    report.interrupted = True
                    return report
                final = await self.check(self.cluster, self.get, self.opened,
                                         settle=self.t.final_settle)
            except asyncio.CancelledError:  # Ctrl-C outside a fault: nothing is out
                _uncancel()
                report.interrupted = True
                return report
        report.final_healthy = final.healthy
        report.final_detail = "\n".join(final.verdict_lines())
        return report


def _uncancel() -> None:
    task = asyncio.current_task()
    if task is not None:
        task.uncancel()


async def _finish(coro: Awaitable[None]) -> bool:
    """Run ``coro`` to its end even if the caller is cancelled (again and again); True when a
    cancellation arrived meanwhile."""
    task = asyncio.ensure_future(coro)
    cancelled = False
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            if task.cancelled():
                raise
            cancelled = True
            _uncancel()
    task.result()
    return cancelled


@contextlib.contextmanager
def _sigint_cancels() -> Iterator[None]:
    """Ctrl-C cancels the drill's task (each time), so the fault being run is restored, instead
    of asyncio's second Ctrl-C ending the process mid-restore."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    try:
        loop.add_signal_handler(signal.SIGINT, lambda: task.cancel() if task else None)
    except (NotImplementedError, RuntimeError, ValueError):  # not the main thread
        yield
        return
    try:
        yield
    finally:
        loop.remove_signal_handler(signal.SIGINT)


__all__ = ["Drill", "Timings"]
