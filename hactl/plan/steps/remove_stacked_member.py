"""RemoveStackedMember: ``member remove`` in kubeadm's stacked etcd, through another master.

The stacked counterpart of :class:`~hactl.plan.steps.remove_etcd_member.RemoveEtcdMember`, for a
master that leaves (or a re-imaged master whose old member must go before it joins again). It
runs on ``host``, another master whose member is a started, healthy voter, and speaks to that
master's own member (``https://127.0.0.1:2379``, kubeadm's healthcheck client):

1. a fresh member list; the target is found by its ID (as the plan saw it), else its name (the
   host's name: kubeadm names a stacked member after its node), else its peer URL; not listed:
   done;
2. every started voter's ``endpoint health``; refused (with the arithmetic) when the cluster
   that remains would have fewer healthy voters than its quorum
   (:func:`hactl.plan.refusals.removal_problem`), and when ``host``'s own member is the target,
   is not listed, is a learner or is not healthy;
3. ``member remove <id>``, retried while etcd's strict reconfig check answers "unhealthy
   cluster" (every voter must have been connected for 5 s); "member not found" is done;
4. the member list again: the target is no longer listed.

The departing master's etcd keeps running until its ``kubeadm reset`` (with
``--skip-phases=remove-etcd-member``) removes its static Pod and data.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from hactl.errors import CommandError, PlanError
from hactl.facts.model import EtcdMember
from hactl.plan import commands as cmd
from hactl.plan.etcd_ops import (
    hand_over_leadership,
    health_by_endpoint,
    list_stacked_members,
    shown_hand_over,
)
from hactl.plan.refusals import removal_problem
from hactl.plan.remote import run
from hactl.plan.step import Step, StepContext
from hactl.transport.base import check_result
from hactl.vocabulary import Action

P = cmd.placeholder


@dataclass(frozen=True)
class RemoveStackedMember(Step):
    kind: ClassVar[str] = "remove_stacked_member"
    order: ClassVar[int] = 71
    member: str = ""
    """The member's name (the departing master's host name)."""
    member_id: str = ""
    """Its ID (lower-case hex) when the plan was made."""
    peer_url: str = ""
    """Its peer URL (``https://ADDRESS:2380``; several joined with ``,``), to find a member whose
    name is not its host's (one that never started has none)."""
    action: Action = Action.DELETE
    timeout: float = 60.0

    def _which(self) -> str:
        return f"{self.member} (id {self.member_id} at plan time, else its name, else {self.peer_url})"

    def commands(self) -> list[str]:
        via = self.host or ""
        return [
            cmd.shown(cmd.member_list_stacked(), f"on {via}: {self._which()} no longer listed: done"),
            cmd.shown(cmd.stacked_endpoint_health([P("client URL of each started voter")]),
                      f"refused unless quorum holds without {self.member} and {via}'s own member "
                      "is a healthy voter"),
            *shown_hand_over(via, self.member, stacked=True),
            cmd.shown(cmd.member_remove_stacked(P(f"id listed for {self.member}, {self.member_id} "
                                                  "at plan time")),
                      "retried while etcd says 'unhealthy cluster'"),
            cmd.shown(cmd.member_list_stacked(), f"check: {self.member} no longer listed"),
        ]

    def _find(self, members: Sequence[EtcdMember]) -> EtcdMember | None:
        for match in (lambda m: bool(self.member_id) and m.id == self.member_id.lower(),
                      lambda m: bool(self.member) and m.name == self.member,
                      lambda m: bool((set(self.peer_url.split(",")) - {""}) & set(m.peer_urls))):
            found = next((m for m in members if match(m)), None)
            if found is not None:
                return found
        return None

    async def _members(self, ctx: StepContext) -> tuple[EtcdMember, ...]:
        assert self.host is not None
        members = await list_stacked_members(ctx, self.host)
        if isinstance(members, str):
            raise CommandError(f"could not list the stacked etcd's members on {self.host}: {members}",
                               host=self.host, step=self.id, transient=True)
        return members

    async def run(self, ctx: StepContext) -> None:
        assert self.host is not None
        via = self.host
        members = await self._members(ctx)
        target = self._find(members)
        if target is None:
            ctx.log("member already gone", member=self.member)
            return
        voters = [m for m in members if not m.is_learner]
        urls = {m.name: m.client_urls[0] for m in voters if m.started and m.client_urls}
        health: dict[str, bool] = {}
        if urls:
            result = await run(ctx, via, cmd.stacked_endpoint_health(list(urls.values())), check=False)
            health = health_by_endpoint(result.stdout)
        healthy = {name for name, url in urls.items() if health.get(url)}
        problem = removal_problem(
            self.member, len(voters), len(healthy),
            removing_healthy=target.name in healthy and not target.is_learner,
            removing_voter=not target.is_learner,
        )
        if problem:
            raise PlanError(problem, host=via, step=self.id)
        # Rule 1: a member never removes itself; `via` is another started, healthy voter.
        mine = next((m for m in members if m.name == via), None)
        if mine is None or mine.id == target.id or mine.is_learner:
            why = ("is the member to remove" if mine is not None and mine.id == target.id
                   else "is a learner" if mine is not None else "has no started member")
            raise PlanError(
                f"refusing to remove stacked etcd member {self.member} through {via}: {via} {why}; "
                "removals go through another master whose member is a started voter, never the "
                "member itself", host=via, step=self.id)
        if via not in healthy:
            raise PlanError(
                f"refusing to remove stacked etcd member {self.member} through {via}: {via}'s member "
                "failed its endpoint health check; removals go through another started, healthy "
                "member", host=via, step=self.id)
        if target.name in healthy:
            await hand_over_leadership(ctx, via, [urls[n] for n in sorted(healthy)], target.id,
                                       mine.id, stacked=True)
        # etcd's strict reconfig check refuses a removal ("unhealthy cluster") until every voter
        # has been connected for 5 s (right after a start or a promotion): retried
        deadline = time.monotonic() + max(self.timeout - 20, 10.0)
        remove = cmd.member_remove_stacked(target.id)
        while True:
            result = await run(ctx, via, remove, check=False)
            if result.ok or "member not found" in result.stderr:
                break
            if "unhealthy cluster" not in result.stderr or time.monotonic() >= deadline:
                check_result(via, remove, result)
            await asyncio.sleep(1.0)
        if any(m.id == target.id for m in await self._members(ctx)):
            raise CommandError(f"stacked etcd member {self.member} ({target.id}) is still listed after "
                               "`member remove`", host=via, step=self.id, transient=True)
        ctx.log("stacked member removed", member=self.member, id=target.id)
