"""The contract between the planner and the apply engine.

A :class:`Step` is one idempotent action on (at most) one host. The planner builds Steps with pure
functions (no I/O); the engine (``hactl.apply``) runs ``await step.run(ctx)`` once the step's
dependencies succeeded. ``run`` checks its precondition against fresh facts, runs its commands,
and verifies its postcondition; it raises :class:`hactl.errors.HactlError` subclasses (``transient``
ones are retried by the engine with backoff). Steps never print secrets: secrets produced during a
run (certificate key, bootstrap token, CA hash) live in ``ctx.secrets`` as
:class:`hactl.sensitive.Sensitive`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol

from hactl.sensitive import Sensitive

if TYPE_CHECKING:
    from hactl.spec.models import Cluster
    from hactl.transport.base import Transport

Action = Literal["create", "update", "delete", "replace", "read"]


@dataclass
class RunSecrets:
    """Secrets made during one apply, in memory only (never written to the operator's disk)."""

    certificate_key: Sensitive | None = None
    certificate_key_uploaded_at: float | None = None
    bootstrap_token: Sensitive | None = None
    bootstrap_token_created_at: float | None = None
    """``time.monotonic()`` when this run made (or captured) the token."""
    ca_cert_hash: str | None = None  # "sha256:<hex>" is public, but kept here for convenience
    extra: dict[str, Sensitive] = field(default_factory=dict)


class StepContext(Protocol):
    """What the engine hands to ``Step.run``."""

    cluster: Cluster
    secrets: RunSecrets

    def transport(self, host: str) -> Transport:
        """The open connection to ``host`` (one per host, shared by all steps)."""
        ...

    def log(self, event: str, **fields: object) -> None:
        """A structlog event bound to the step and its host."""
        ...


@dataclass(frozen=True)
class Step:
    """Base of every step kind (one subclass per file under ``hactl/plan/steps/``)."""

    kind: ClassVar[str] = "step"
    #: Order of kinds for deterministic topological sorting (lower runs first when free).
    order: ClassVar[int] = 100
    id: str
    """Stable id, e.g. ``etcd.member[etcd01].bootstrap``."""
    host: str | None
    """The host it acts on (None for cluster-wide steps such as verify)."""
    title: str
    """Human title, e.g. ``Join control-plane node master02``."""
    reason: str
    """Why it is needed (or why not), in words."""
    action: Action = "create"
    address: str = ""
    """The change address it realises, e.g. ``master[master02]``."""
    timeout: float = 600.0
    """Seconds before the engine gives up on one attempt."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.kind != "step":
            STEP_KINDS[cls.kind] = cls

    async def run(self, ctx: StepContext) -> None:  # pragma: no cover - abstract
        raise NotImplementedError(f"{type(self).__name__}.run")

    def commands(self) -> list[str]:
        """The commands this step runs, secrets masked, for plan output (may be empty)."""
        return []

    @property
    def sort_key(self) -> tuple[int, str, str]:
        """Deterministic order among steps that are free to run: kind order, host, id."""
        return (self.order, self.host or "", self.id)

    def to_data(self) -> dict[str, Any]:
        """JSON-able fields (a saved plan); no secrets live in steps."""
        data: dict[str, Any] = {"kind": self.kind}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            data[f.name] = list(value) if isinstance(value, tuple) else value
        return data

    @staticmethod
    def from_data(data: dict[str, Any]) -> Step:
        """The inverse of :meth:`to_data` (step kinds register themselves on import)."""
        from hactl.plan.steps import load_kind

        values = dict(data)
        kind = values.pop("kind")
        if kind not in STEP_KINDS:
            load_kind(kind)  # a kind registers itself when its module is imported
        cls = STEP_KINDS[kind]
        kwargs: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f.name in values:
                value = values[f.name]
                kwargs[f.name] = tuple(value) if isinstance(value, list) else value
        return cls(**kwargs)


STEP_KINDS: dict[str, type[Step]] = {}
"""kind → class, filled by ``Step.__init_subclass__``."""
