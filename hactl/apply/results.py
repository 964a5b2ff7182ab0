"""What an apply produces: step and run results, the retry policy, the progress protocol, and
the masked failure report (no I/O; see :mod:`hactl.apply.engine` for the executor)."""

from __future__ import annotations

import random
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, Protocol

from hactl.errors import ApplyError, CommandError, HactlError
from hactl.plan.step import RunSecrets, Step
from hactl.sensitive import Sensitive, mask_text
from hactl.vocabulary import Action

if TYPE_CHECKING:
    from hactl.check import Report

Outcome = Literal["ok", "failed", "skipped"]
STDERR_LINES = 20


class StepTimeoutError(TimeoutError):
    """One attempt of a step overran ``step.timeout`` (permanent: not retried)."""


@dataclass(frozen=True)
class RetryPolicy:
    """How transient failures are retried: ``attempts`` tries at most, within ``budget`` seconds
    (attempt time plus waits), waiting ``base_delay * 2**(n-1)`` capped at ``max_delay``, of
    which a random ``jitter`` share is drawn uniformly (so parallel retries spread out)."""

    attempts: int = 6
    base_delay: float = 1.0
    max_delay: float = 15.0
    budget: float = 300.0
    jitter: float = 0.5

    def delay(self, attempt: int, rng: random.Random) -> float:
        raw = min(self.max_delay, self.base_delay * 2.0 ** (attempt - 1))
        return raw * (1 - self.jitter) + rng.uniform(0, raw * self.jitter)


@dataclass
class StepResult:
    step: Step
    outcome: Outcome
    attempts: int = 0
    start: float | None = None
    """``time.monotonic()`` at the first attempt."""
    end: float | None = None
    error: str = ""
    """What went wrong, masked, with command and stderr when a command failed."""
    exception: BaseException | None = field(default=None, repr=False)
    skipped_because: str | None = None
    """The failed step that made this one unreachable."""

    @property
    def duration(self) -> float:
        if self.start is None or self.end is None:
            return 0.0
        return self.end - self.start


@dataclass
class ApplyResult:
    run_id: str
    results: dict[str, StepResult]
    """Step id → result, in the order the steps finished (skipped ones when they were skipped)."""
    duration: float
    added: int = 0
    changed: int = 0
    removed: int = 0
    stopped: str | None = None
    """Why the run stopped starting steps (the cluster lock was lost), or None."""
    not_started: list[str] = field(default_factory=list)
    """Step ids that never started (only when the run stopped, or after failures)."""
    report: Report | None = None
    """The closing ``hactl check`` (the plan's Verify step), or None when it did not run."""

    @property
    def failed(self) -> list[StepResult]:
        return [r for r in self.results.values() if r.outcome == "failed"]

    @property
    def skipped(self) -> list[StepResult]:
        return [r for r in self.results.values() if r.outcome == "skipped"]

    @property
    def ok(self) -> bool:
        return not self.failed and not self.skipped and self.stopped is None

    def summary(self) -> str:
        counts = f"{self.added} added, {self.changed} changed, {self.removed} removed"
        if self.stopped is not None:
            return (
                f"Apply STOPPED (the cluster lock was lost): {len(self.not_started)} step(s) not "
                f"started, {len(self.failed)} failed; {counts} in {self.duration:.1f}s."
            )
        if self.ok:
            return f"Apply complete: {counts} in {self.duration:.1f}s."
        return (
            f"Apply failed: {len(self.failed)} failed, {len(self.skipped)} skipped; "
            f"{counts} in {self.duration:.1f}s."
        )


class Reporter(Protocol):
    """Progress sink (a live view on a TTY, plain lines otherwise)."""

    def started(self, step: Step, attempt: int) -> None: ...

    def retrying(self, step: Step, attempt: int, delay: float, error: str) -> None: ...

    def still_running(self, step: Step, elapsed: float) -> None: ...

    def finished(self, result: StepResult) -> None: ...


class NullReporter:
    def started(self, step: Step, attempt: int) -> None:
        pass

    def retrying(self, step: Step, attempt: int, delay: float, error: str) -> None:
        pass

    def still_running(self, step: Step, elapsed: float) -> None:
        pass

    def finished(self, result: StepResult) -> None:
        pass


def run_secrets(secrets: RunSecrets) -> list[Sensitive]:
    values = [secrets.certificate_key, secrets.bootstrap_token, *secrets.extra.values()]
    return [v for v in values if v is not None]


def describe_error(exc: BaseException, secrets: RunSecrets) -> str:
    """One masked text for a failure: the message, and for a command its argv and stderr."""
    if isinstance(exc, HactlError):
        lines = [exc.message]
        if isinstance(exc, CommandError):
            if exc.argv:
                lines.append(f"command: {shlex.join(str(a) for a in exc.argv)}")
            if exc.exit_status is not None:
                lines.append(f"exit status: {exc.exit_status}")
            stderr = exc.stderr.strip().splitlines()[-STDERR_LINES:]
            if stderr:
                lines.append("stderr:")
                lines.extend(f"  {line}" for line in stderr)
        if exc.hint:
            lines.append(f"hint: {exc.hint}")
        text = "\n".join(lines)
    elif isinstance(exc, StepTimeoutError):
        text = str(exc)
    else:
        text = f"{type(exc).__name__}: {exc}"
    return mask_text(text, run_secrets(secrets))


def count_changes(results: Mapping[str, StepResult]) -> tuple[int, int, int]:
    """(added, changed, removed): one per change address whose steps all succeeded.

    A ``replace`` (or an address with both create and delete steps) counts as added and removed;
    ``read`` steps (verification) count nothing. Steps without an address count by id."""
    by_address: dict[str, list[StepResult]] = {}
    for result in results.values():
        if result.step.action is not Action.READ:
            by_address.setdefault(result.step.address or result.step.id, []).append(result)
    added = changed = removed = 0
    for group in by_address.values():
        if any(r.outcome != "ok" for r in group):
            continue
        actions = {r.step.action for r in group}
        if Action.REPLACE in actions or {Action.CREATE, Action.DELETE} <= actions:
            added, removed = added + 1, removed + 1
        elif Action.CREATE in actions:
            added += 1
        elif Action.DELETE in actions:
            removed += 1
        elif Action.UPDATE in actions:
            changed += 1
    return added, changed, removed


def failure_report(result: ApplyResult) -> ApplyError:
    """One error for the whole run: each failed step with host, command, stderr (masked); a run
    that stopped because its lock was lost says so first, with what to do."""
    if result.stopped is not None:
        return _stopped_report(result)
    lines = [f"{len(result.failed)} step(s) failed:"]
    for failed in result.failed:
        step = failed.step
        lines.append(
            f"- {step.host or 'cluster'}: {step.title} [{step.id}]"
            f" (after {failed.attempts} attempt(s))"
        )
        lines.extend(f"    {line}" for line in failed.error.splitlines())
    if result.skipped:
        lines.append(f"{len(result.skipped)} step(s) skipped because a step before them failed:")
        lines.extend(
            f"- {r.step.host or 'cluster'}: {r.step.title} [{r.step.id}]" for r in result.skipped
        )
    return ApplyError(
        "\n".join(lines),
        hint="fix the cause above and run hactl apply again: steps already done are not repeated",
    )


class LockLostApplyError(ApplyError):
    """The apply stopped at a step boundary because its cluster lock was lost."""


def _stopped_report(result: ApplyResult) -> ApplyError:
    lines = [
        "the apply STOPPED because its cluster lock was lost: " + str(result.stopped),
        "Steps that were running finished; no step was started after the lock was lost.",
    ]
    done = [r for r in result.results.values() if r.outcome == "ok"]
    lines.append(f"{len(done)} step(s) done, {len(result.not_started)} not started:")
    lines.extend(f"- {step_id}" for step_id in result.not_started)
    for failed in result.failed:
        step = failed.step
        lines.append(f"failed: {step.host or 'cluster'}: {step.title} [{step.id}]")
        lines.extend(f"    {line}" for line in failed.error.splitlines())
    return LockLostApplyError(
        "\n".join(lines),
        hint="another apply may be running now: see who holds the lock with `hactl unlock -f "
        "SPEC` (it breaks nothing without a lock id), let that apply finish, then run "
        "`hactl plan` and `hactl apply` again (steps already done are not repeated)",
    )
