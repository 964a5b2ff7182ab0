"""RemoveEtcdMember: ``etcdctl member remove`` through another member, only when quorum holds."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import ClassVar

from hactl.diff import client_url
from hactl.errors import PlanError
from hactl.plan import commands as cmd
from hactl.plan.etcd_ops import (
    hand_over_leadership,
    health_by_endpoint,
    list_members,
    shown_hand_over,
    shown_list_members,
)
from hactl.plan.refusals import removal_problem
from hactl.plan.remote import run
from hactl.plan.step import Step, StepContext
from hactl.transport.base import check_result
from hactl.vocabulary import Action

P = cmd.placeholder


@dataclass(frozen=True)
class RemoveEtcdMember(Step):
    kind: ClassVar[str] = "remove_etcd_member"
    order: ClassVar[int] = 25
    member: str = ""
    """Name of the member to remove (or its id when it never started)."""
    member_id: str = ""
    action: Action = Action.DELETE
    timeout: float = 60.0

    def commands(self) -> list[str]:
        via = self.host or ""
        return [
            shown_list_members(via, note=f"{self.member} no longer listed: done"),
            cmd.shown(cmd.endpoint_health([P("client URL of each etcd member in the spec")]),
                      f"refused unless quorum holds without {self.member} and {via} is a healthy voter"),
            *shown_hand_over(via, self.member, stacked=False),
            cmd.shown(cmd.member_remove(P(f"client URL of {via} in the spec"),
                                        P(f"id listed for {self.member}, {self.member_id} at plan time")),
                      "retried while etcd says 'unhealthy cluster'"),
        ]

    async def run(self, ctx: StepContext) -> None:
        assert self.host is not None
        cluster = ctx.cluster
        via = cluster.host(self.host)
        members = await list_members(ctx, via)
        target = next((m for m in members if m.id == self.member_id or (m.name and m.name == self.member)), None)
        if target is None:
            ctx.log("member already gone", member=self.member)
            return
        voters = [m for m in members if not m.is_learner]
        endpoints = [client_url(cluster, h) for h in cluster.etcd_members]
        result = await run(ctx, via.name, cmd.endpoint_health(endpoints), check=False)
        health = health_by_endpoint(result.stdout)
        healthy = {h.name for h in cluster.etcd_members if health.get(client_url(cluster, h))}
        healthy_voters = sum(1 for m in voters if m.name in healthy)
        problem = removal_problem(
            self.member, len(voters), healthy_voters,
            removing_healthy=target.name in healthy and not target.is_learner,
            removing_voter=not target.is_learner,
        )
        if problem:
            raise PlanError(problem, host=self.host, step=self.id)
        # Rule 1: a member never removes itself; `via` is another started, healthy voter.
        if via.name in (self.member, target.name) or not any(
                m.name == via.name and not m.is_learner for m in members):
            raise PlanError(
                f"refusing to remove etcd member {self.member} through {via.name}: removals go "
                "through another started member, never the member itself", host=self.host, step=self.id)
        if not health.get(client_url(cluster, via)):
            raise PlanError(
                f"refusing to remove etcd member {self.member} through {via.name}: {via.name} "
                "failed its endpoint health check; removals go through another started, healthy "
                "member", host=self.host, step=self.id)
        mine = next(m for m in members if m.name == via.name)
        if target.name in healthy and not target.is_learner:
            started = [client_url(cluster, h) for h in cluster.etcd_members if h.name in healthy]
            await hand_over_leadership(ctx, via.name, started, target.id, mine.id, stacked=False)
        # etcd's strict reconfig check refuses a removal ("unhealthy cluster") until every voter
        # has been connected for 5 s (right after a start or the previous promotion): retried
        deadline = time.monotonic() + max(self.timeout - 20, 10.0)
        remove = cmd.member_remove(client_url(cluster, via), target.id)
        while True:
            result = await run(ctx, via.name, remove, check=False)
            if result.ok or "member not found" in result.stderr:
                break
            if "unhealthy cluster" not in result.stderr or time.monotonic() >= deadline:
                check_result(via.name, remove, result)
            await asyncio.sleep(1.0)
        ctx.log("member removed", member=self.member, id=target.id)
