"""``hactl check``: is the running control plane healthy, as the spec describes it?

Two parts, like the rest of hactl: :func:`gather` reads (the probe's facts for every host, plus
one extra round trip on a master for what the probe does not read: ``/readyz`` through the load
balancer endpoint and the leader-election Leases), and :func:`evaluate` is a pure function from
that data to a :class:`Report` of findings, each with what is wrong and what to do next.
:func:`run_check` is the one loop around them: ``hactl check`` runs it once, and ``hactl apply``
runs it as the plan's last step (``Verify``), retried until healthy for the cluster to settle.

Checks: the API answers ``/readyz`` through the LB endpoint; every master is a Node, Ready and
labelled control-plane; every worker is a Node (NotReady is a warning); ``kube-scheduler`` and
``kube-controller-manager`` each have one holder whose Lease has not expired; etcd members equal
the spec, all started, no learners, and ``endpoint health`` is true on every member (each asked
about itself, not ``--cluster`` alone); every HAProxy backend server is UP and there is one per
master; certificates are not expired (a summary of the earliest expiry per host; under 30 days
is a warning).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING

from hactl.check.evaluate import evaluate
from hactl.check.gather import api_script, gather, parse_api_output, parse_leases
from hactl.check.model import ApiAnswer, CheckData, Finding, Lease, Report

if TYPE_CHECKING:
    from hactl.facts.model import Observed
    from hactl.spec.models import Cluster
    from hactl.transport.base import Transport

SETTLE_INTERVAL = 3.0
"""Seconds between two checks while an unhealthy cluster is given time to settle."""


async def run_check(
    cluster: Cluster,
    transports: Callable[[str], Transport],
    opened: Mapping[str, Transport | BaseException],
    *,
    settle: float = 0.0,
    observed: Observed | None = None,
    on_report: Callable[[Report], None] | None = None,
    interval: float = SETTLE_INTERVAL,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    prefer: str | None = None,
) -> Report:
    """Gather and evaluate. With ``settle``, an unhealthy report is gathered again every
    ``interval`` seconds until it is healthy or ``settle`` seconds have passed; the last report
    is returned. ``observed``: facts probed moments ago (the plan's), used for the first gather
    instead of probing again. ``on_report`` sees every report (one per gather). ``prefer``: the
    master to ask the API first (the Verify step's ``via``)."""
    from hactl.probe import probe

    reuse = observed

    async def observe() -> Observed:
        nonlocal reuse
        if reuse is not None:
            facts, reuse = reuse, None
            return facts
        return await probe(cluster, opened)

    deadline = time.monotonic() + settle
    while True:
        report = evaluate(cluster, await gather(cluster, transports, observe, prefer=prefer))
        if on_report is not None:
            on_report(report)
        if report.healthy or time.monotonic() + interval > deadline:
            return report
        await sleep(interval)


__all__ = [
    "SETTLE_INTERVAL",
    "ApiAnswer",
    "CheckData",
    "Finding",
    "Lease",
    "Report",
    "api_script",
    "evaluate",
    "gather",
    "parse_api_output",
    "parse_leases",
    "run_check",
]
