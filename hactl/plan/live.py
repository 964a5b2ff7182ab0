"""Plan against the live hosts: probe (one SSH connection per host), then plan (pure)."""

from __future__ import annotations

from datetime import UTC, datetime

from hactl.plan.planner import Plan, build_plan
from hactl.spec.models import Cluster


async def make_plan(cluster: Cluster, *, spec_dir: str | None = None) -> Plan:
    from hactl.probe import probe_cluster

    observed = await probe_cluster(cluster, spec_dir=spec_dir)
    return build_plan(cluster, observed, now=datetime.now(UTC))
