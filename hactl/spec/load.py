"""Load a spec file: YAML with line:column for every value, then pydantic, then cross-field checks.

Every problem becomes an :class:`Issue` that names ``FILE:LINE:COL``, the field path in the
spec's own (camelCase) names, what is wrong, and what to do. Nothing is lost: all issues of a file
are reported together.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from hactl.errors import SpecError
from hactl.spec.checks import cross_checks
from hactl.spec.models import Cluster, Host, SSHOverride, SSHSettings

_SSH = TypeVar("_SSH", SSHSettings, SSHOverride)

PathT = tuple[str | int, ...]


@dataclass(frozen=True)
class Issue:
    """One located problem (or warning) in a spec file."""

    file: str
    line: int
    col: int
    path: PathT
    message: str
    severity: Literal["error", "warning"] = "error"

    @property
    def dotted(self) -> str:
        return dotted(self.path)

    def __str__(self) -> str:
        prefix = "" if self.severity == "error" else "warning: "
        where = f"{self.dotted}: " if self.path else ""
        return f"{self.file}:{self.line}:{self.col}: {prefix}{where}{self.message}"


@dataclass
class Loaded:
    cluster: Cluster
    path: Path
    warnings: list[Issue] = field(default_factory=list)
    text: str = ""


def dotted(path: PathT) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


class _Marks:
    """Maps a field path to the (line, col) of its key (or value) in the YAML text (1-based)."""

    def __init__(self) -> None:
        self.keys: dict[PathT, tuple[int, int]] = {}
        self.values: dict[PathT, tuple[int, int]] = {}

    def locate(self, path: PathT) -> tuple[int, int]:
        """The key's position if known, else the value's, else the nearest known parent's."""
        probe = tuple(path)
        while probe:
            if probe in self.keys:
                return self.keys[probe]
            if probe in self.values:
                return self.values[probe]
            probe = probe[:-1]
        return self.values.get((), (1, 1))


def _construct(node: yaml.Node, path: PathT, marks: _Marks, issues: list[tuple[PathT, str]]) -> Any:
    marks.values[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = yaml.SafeLoader(  # scalar keys only; construct them the YAML way
                ""
            ).construct_object(key_node, deep=True)
            if not isinstance(key, str | int):
                issues.append((path, f"keys must be plain strings, not {type(key).__name__}"))
                continue
            child = (*path, key)
            marks.keys[child] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            if key in out:
                issues.append((child, "is given twice; keep one (YAML would silently use the last)"))
            out[key] = _construct(value_node, child, marks, issues)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_construct(item, (*path, i), marks, issues) for i, item in enumerate(node.value)]
    loader = yaml.SafeLoader("")
    return loader.construct_object(node, deep=True)


def _model_at(path: PathT) -> type[BaseModel] | None:
    """The pydantic model that owns the mapping at ``path`` (in YAML names), if any."""
    model: type[BaseModel] = Cluster
    for part in path:
        if isinstance(part, int):
            continue
        info = next(
            (f for name, f in model.model_fields.items() if (f.alias or name) == part or name == part),
            None,
        )
        if info is None:
            return None
        nested = _nested_model(info.annotation)
        if nested is None:
            return None
        model = nested
    return model


def _nested_model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _nested_model(arg)
        if found is not None:
            return found
    return None


def _field_names(model: type[BaseModel]) -> list[str]:
    return [info.alias or name for name, info in model.model_fields.items()]


def _explain(err: Any) -> str:
    kind = err["type"]
    loc = err["loc"]
    if kind == "extra_forbidden":
        model = _model_at(tuple(loc[:-1]))
        names = _field_names(model) if model else []
        close = difflib.get_close_matches(str(loc[-1]), names, n=1, cutoff=0.6)
        hint = f"did you mean '{close[0]}'?" if close else f"valid keys: {', '.join(names)}"
        return f"unknown key '{loc[-1]}'; {hint}"
    if kind == "missing":
        return "is required; add it (see docs/spec.md)"
    if kind == "literal_error":
        expected = err.get("ctx", {}).get("expected", "")
        return f"must be one of {expected}, got {err.get('input')!r}"
    message = str(err["msg"])
    if message.startswith("Value error, "):
        message = message[len("Value error, ") :]
    if "network" in kind:
        return f"{err.get('input')!r} is not a valid CIDR like 10.244.0.0/16"
    if kind.startswith("ip_"):
        return f"{err.get('input')!r} is not a valid IP address like 10.0.0.11"
    return message


def _is_union_tag(part: str | int) -> bool:
    """pydantic puts union-branch names (``lax-or-strict[...]``, ``IPv4Address``) into ``loc``."""
    return isinstance(part, str) and (
        "[" in part or "(" in part or part.startswith(("IPv4", "IPv6"))
    )


def _pydantic_issues(exc: ValidationError) -> Iterator[tuple[PathT, str]]:
    errors = exc.errors()
    # A missing field next to an unknown key that is a typo of it: report the typo only.
    typos = {
        (tuple(e["loc"][:-1]), close)
        for e in errors
        if e["type"] == "extra_forbidden"
        for close in difflib.get_close_matches(
            str(e["loc"][-1]), _field_names(_model_at(tuple(e["loc"][:-1])) or Cluster), 1, 0.6
        )
    }
    seen: set[PathT] = set()
    for err in errors:
        loc = tuple(p for p in err["loc"] if not _is_union_tag(p))
        if err["type"] == "missing" and (loc[:-1], loc[-1]) in typos:
            continue
        if loc in seen:  # unions report one error per branch; keep the first
            continue
        seen.add(loc)
        yield loc, _explain(err)


def load_text(text: str, filename: str = "<spec>") -> Loaded:
    """Parse and validate spec text; raises :class:`SpecError` listing every issue."""
    marks = _Marks()
    raw_issues: list[tuple[PathT, str]] = []
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        problem = exc.problem or str(exc)
        issue = Issue(filename, line, col, (), f"YAML syntax error: {problem}; fix the YAML")
        raise SpecError(f"{filename}: invalid YAML", [issue]) from None
    if root is None:
        issue = Issue(filename, 1, 1, (), "the file is empty; start from specs/seed.yaml")
        raise SpecError(f"{filename}: empty", [issue])
    data = _construct(root, (), marks, raw_issues)
    if not isinstance(data, dict):
        issue = Issue(filename, 1, 1, (), "the spec must be a YAML mapping (apiVersion, kind, …)")
        raise SpecError(f"{filename}: not a mapping", [issue])

    def located(path: PathT, message: str, severity: Literal["error", "warning"] = "error") -> Issue:
        line, col = marks.locate(path)
        return Issue(filename, line, col, path, message, severity)

    issues = [located(p, m) for p, m in raw_issues]
    cluster: Cluster | None = None
    try:
        cluster = Cluster.model_validate(data)
    except ValidationError as exc:
        issues.extend(located(p, m) for p, m in _pydantic_issues(exc))
    warnings: list[Issue] = []
    if cluster is not None:
        for finding in cross_checks(cluster):
            item = located(finding.path, finding.message, finding.severity)
            (warnings if finding.severity == "warning" else issues).append(item)
    if issues or cluster is None:
        issues.sort(key=lambda i: (i.line, i.col))
        count = len(issues)
        raise SpecError(f"{filename}: {count} problem{'s' if count != 1 else ''}", issues)
    return Loaded(cluster=cluster, path=Path(filename), warnings=warnings, text=text)


def load_file(path: str | Path) -> Loaded:
    """Read and validate a spec file; relative SSH paths are resolved against its folder."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        issue = Issue(str(path), 1, 1, (), f"cannot read the file: {exc.strerror}")
        raise SpecError(f"{path}: cannot read", [issue]) from exc
    loaded = load_text(text, str(path))
    loaded.cluster = _resolve_paths(loaded.cluster, file.resolve().parent)
    return loaded


def load_cluster(path: str | Path) -> Cluster:
    """Shortcut: the validated :class:`Cluster` of a spec file (warnings dropped)."""
    return load_file(path).cluster


def _resolve(value: str | None, base: Path) -> str | None:
    if value is None or value.startswith(("/", "~")):
        return value
    return str(base / value)


def _resolve_paths(cluster: Cluster, base: Path) -> Cluster:
    """Make relative paths (SSH files, per-host overrides, ``lab.stateDir``) relative to ``base``."""

    def fix(ssh: _SSH) -> _SSH:
        return ssh.model_copy(
            update={
                "identity_file": _resolve(ssh.identity_file, base),
                "known_hosts_file": _resolve(ssh.known_hosts_file, base),
            }
        )

    def fix_hosts(hosts: list[Host]) -> list[Host]:
        return [h if h.ssh is None else h.model_copy(update={"ssh": fix(h.ssh)}) for h in hosts]

    etcd = cluster.etcd.model_copy(update={"members": fix_hosts(cluster.etcd.members)})
    lb = cluster.load_balancer.model_copy(update={"hosts": fix_hosts(cluster.load_balancer.hosts)})
    lab = cluster.lab
    if lab is not None and lab.state_dir is not None:
        lab = lab.model_copy(update={"state_dir": _resolve(lab.state_dir, base)})
    return cluster.model_copy(
        update={
            "lab": lab,
            "ssh": fix(cluster.ssh),
            "etcd": etcd,
            "load_balancer": lb,
            "masters": fix_hosts(cluster.masters),
            "workers": fix_hosts(cluster.workers),
        }
    )
