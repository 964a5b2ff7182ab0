"""``hactl apply``: the DAG engine (:mod:`hactl.apply.engine`) and the run around it
(:mod:`hactl.apply.run`: lock → probe → plan → approve → execute, journaled, whose last step is
``hactl check`` → summary and that check's report)."""

from hactl.apply.engine import Engine, plan_steps
from hactl.apply.results import (
    ApplyResult,
    NullReporter,
    Reporter,
    RetryPolicy,
    StepResult,
    StepTimeoutError,
    count_changes,
    describe_error,
    failure_report,
)

__all__ = [
    "ApplyResult",
    "Engine",
    "NullReporter",
    "Reporter",
    "RetryPolicy",
    "StepResult",
    "StepTimeoutError",
    "count_changes",
    "describe_error",
    "failure_report",
    "plan_steps",
]
