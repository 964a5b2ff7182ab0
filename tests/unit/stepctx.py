"""A StepContext for unit tests: fake transports per host, in-memory secrets, recorded events."""

from __future__ import annotations

from dataclasses import dataclass, field

from hactl.plan.step import RunSecrets
from hactl.spec.models import Cluster
from hactl.transport.fake import FakeTransport


@dataclass
class Ctx:
    cluster: Cluster
    fakes: dict[str, FakeTransport] = field(default_factory=dict)
    secrets: RunSecrets = field(default_factory=RunSecrets)
    events: list[tuple[str, dict[str, object]]] = field(default_factory=list)

    def transport(self, host: str) -> FakeTransport:
        return self.fakes.setdefault(host, FakeTransport(host))

    def log(self, event: str, **fields: object) -> None:
        self.events.append((event, fields))

    def argvs(self, host: str) -> list[tuple[str, ...]]:
        return [c.argv for c in self.transport(host).calls]
