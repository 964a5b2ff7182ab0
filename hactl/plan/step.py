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
import enum
import math
import reprlib
import types
import typing
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from hactl.errors import HactlError
from hactl.sensitive import Sensitive
from hactl.vocabulary import Action as Action

if TYPE_CHECKING:
    from hactl.spec.models import Cluster
    from hactl.transport.base import Transport

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
    joins_started: set[str] = field(default_factory=set)
    """Hosts whose ``kubeadm join`` this run started (not secret: the run's memory). A retry of
    that join resets what the interrupted attempt left (kubeadm's preflight refuses its files)."""


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
    action: Action = Action.CREATE
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
            if isinstance(value, enum.Enum):
                value = value.value
            data[f.name] = list(value) if isinstance(value, tuple) else value
        return data

    @staticmethod
    def from_data(data: object) -> Step:
        """The inverse of :meth:`to_data` (step kinds register themselves on import).

        A saved plan is input like a spec: every field is checked against the kind's dataclass
        field types (``timeout: "soon"`` is refused), unknown kinds and fields and missing
        required fields are refused, ``timeout`` must be a positive finite number of seconds.
        Raises :class:`StepDataError` naming the field and what is wrong."""
        from hactl.plan.steps import load_kind

        if not isinstance(data, dict):
            raise StepDataError(f"a step must be an object, not {_kind_of(data)}")
        kind = data.get("kind")
        if not isinstance(kind, str):
            raise StepDataError("the step has no 'kind' (a string such as 'join_worker')")
        if kind not in STEP_KINDS:
            load_kind(kind)  # a kind registers itself when its module is imported
        cls = STEP_KINDS.get(kind)
        if cls is None:
            raise StepDataError(f"unknown step kind {kind!r}")
        fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
        unknown = sorted(str(k) for k in data if k != "kind" and k not in fields)
        if unknown:
            raise StepDataError(f"unknown field(s) for kind {kind!r}: {', '.join(unknown)}")
        hints = typing.get_type_hints(cls)
        kwargs: dict[str, Any] = {}
        for name, f in fields.items():
            if name not in data:
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                    raise StepDataError(f"kind {kind!r}: the required field {name!r} is missing")
                continue
            try:
                kwargs[name] = _typed(data[name], hints[name])
            except _WrongType as exc:
                raise StepDataError(f"kind {kind!r}: field {name!r}: {exc}") from None
        timeout = kwargs.get("timeout", 1.0)
        if not (math.isfinite(timeout) and timeout > 0):
            raise StepDataError(f"kind {kind!r}: field 'timeout' must be a positive number")
        return cls(**kwargs)


class StepDataError(HactlError):
    """A step in a saved plan is not what its kind says it must be."""


class _WrongType(ValueError):
    pass


def _kind_of(value: object) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}
    names.update({int: "an integer", float: "a number", type(None): "null"})
    return names.get(type(value), type(value).__name__)


def _typed(value: object, hint: Any) -> Any:
    """``value`` (from JSON) as the field type ``hint``, or :class:`_WrongType` saying why not."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any or hint is object:
        return value
    if hint is type(None) or hint is None:
        if value is None:
            return None
    elif isinstance(hint, type) and issubclass(hint, enum.Enum):
        values = [m.value for m in hint]
        if isinstance(value, str) and value in values:
            return hint(value)
        raise _WrongType(f"must be one of {', '.join(map(repr, values))}, not {_short(value)}")
    elif origin is typing.Literal:
        if value in args and all(type(value) is type(a) for a in args if a == value):
            return value
        raise _WrongType(f"must be one of {', '.join(map(repr, args))}, not {value!r}")
    elif origin is typing.Union or origin is types.UnionType:
        for option in args:
            try:
                return _typed(value, option)
            except _WrongType:
                continue
    elif hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    elif hint is str:
        if isinstance(value, str):
            return value
    elif origin in (tuple, list):
        if isinstance(value, list):
            if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
                if len(value) != len(args):
                    raise _WrongType(f"must be a list of {len(args)} items, not {len(value)}")
                return tuple(_typed(v, a) for v, a in zip(value, args, strict=True))
            items = [_typed(v, args[0] if args else Any) for v in value]
            return tuple(items) if origin is tuple else items
    elif origin is dict:
        if isinstance(value, dict) and all(isinstance(k, str) for k in value):
            return {k: _typed(v, args[1] if args else Any) for k, v in value.items()}
    else:
        raise _WrongType(f"has a type ({hint}) that a saved plan cannot carry")
    raise _WrongType(f"must be {_describe(hint)}, not {_kind_of(value)} {_short(value)}")


def _describe(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Union or origin is types.UnionType:
        return " or ".join(_describe(a) for a in args)
    simple = {str: "a string", bool: "true or false", int: "an integer", float: "a number"}
    if hint in simple:
        return simple[hint]
    if hint is type(None):
        return "null"
    if origin in (tuple, list):
        return "a list"
    return "an object" if origin is dict else str(hint)


def _short(value: object) -> str:
    return reprlib.repr(value)  # bounded in length and depth


STEP_KINDS: dict[str, type[Step]] = {}
"""kind → class, filled by ``Step.__init_subclass__``."""
