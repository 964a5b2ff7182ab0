"""Verify: the plan's last step IS ``hactl check`` (the same gather and evaluate), retried until
the freshly converged cluster is healthy or the settle window is over; an unhealthy report fails
the step (and the apply) with the report's problems. Its report is what the apply prints and
journals at the end: an apply checks once.

The check lives above the plan (``hactl.check`` imports the probe), so the step asks the run for
it: the apply engine's context offers :meth:`ChecksCluster.check_cluster`, which runs
``hactl.check.run_check`` on the run's connections and journals the report."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Protocol, runtime_checkable

from hactl.errors import HactlError
from hactl.plan.step import Step, StepContext
from hactl.vocabulary import Action

GATHER_MARGIN = 120.0
"""Seconds of the step's timeout kept for the last gather (the probe's 60 s per host, then the
check's 40 s round trip on a master): the check settles for ``timeout - GATHER_MARGIN``."""


class HealthReport(Protocol):
    """What the step needs of ``hactl.check.Report``."""

    @property
    def healthy(self) -> bool: ...

    def verdict_lines(self) -> list[str]: ...


@runtime_checkable
class ChecksCluster(Protocol):
    """A step context that runs ``hactl check`` for the run (the apply engine's does)."""

    async def check_cluster(self, *, settle: float) -> HealthReport: ...


class ClusterUnhealthyError(HactlError):
    """The closing check still found problems when its settle window was over (permanent: the
    step already waited; the engine does not run it again)."""


@dataclass(frozen=True)
class Verify(Step):
    kind: ClassVar[str] = "verify"
    order: ClassVar[int] = 90
    via: str = ""
    """The initialised master the check asks first (``/readyz`` through the load balancer, the
    Leases); when it has no ``admin.conf`` or does not answer, the next master that has one."""
    action: Action = Action.READ
    timeout: float = 300.0

    @property
    def settle(self) -> float:
        """Seconds an unhealthy check is repeated for the cluster to settle."""
        return max(0.0, self.timeout - GATHER_MARGIN)

    def commands(self) -> list[str]:
        return [
            "hactl check: probe every host (etcd members and each member's health, HAProxy "
            f"backends, Nodes, certificates), then on {self.via or 'an initialised master'} (else "
            "the next master with admin.conf): kubectl get --raw /readyz through the load "
            "balancer and the kube-system Leases",
            f"repeated until healthy, for at most {self.settle:g} s",
        ]

    async def run(self, ctx: StepContext) -> None:
        if not isinstance(ctx, ChecksCluster):
            raise HactlError(
                "this run cannot check the cluster (its step context has no check_cluster)",
                hint="report this as a bug",
            )
        report = await ctx.check_cluster(settle=self.settle)
        if not report.healthy:
            raise ClusterUnhealthyError(
                "\n".join(report.verdict_lines()),
                hint="fix what the check names (`hactl check -f SPEC` shows it again), then run "
                "`hactl apply` again: steps already done are not repeated",
            )
        ctx.log("cluster verified")
