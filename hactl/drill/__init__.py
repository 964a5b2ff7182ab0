"""``hactl drill``: the failover test of a running cluster, one fault at a time within the
spec's fault budget, every fault restored (docs/drill.md).

:mod:`hactl.drill.plan` is pure (the budget, the faults and their order, the commands, the
report); :mod:`hactl.drill.run` runs them through the caller's transports under the cluster
lock.
"""

from hactl.drill.plan import DrillReport, Fault, FaultResult, fault_budget, plan_faults

__all__ = ["DrillReport", "Fault", "FaultResult", "fault_budget", "plan_faults"]
