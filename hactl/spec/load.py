"""Load a spec file: YAML with line:column for every value, then pydantic, then cross-field checks.

Every problem becomes an :class:`Issue` that names ``FILE:LINE:COL``, the field path in the
spec's own (camelCase) names, what is wrong, and what to do. Nothing is lost: all issues of a file
are reported together.

Hostile input is refused before it costs anything: a spec file is at most 1 MiB of UTF-8; YAML
anchors and aliases (``&a``/``*a``, whose expansion is exponential), tags (``!foo``,
``!!python/…``, ``!!set``, ``!!binary``) and merge keys (``<<``) are refused where they occur;
nesting deeper than 32 levels is refused; numbers and dates YAML cannot build are located errors.
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
from hactl.spec.values import show
from hactl.spec.yamlsafe import (
    MAX_SPEC_BYTES,
    Refusal,
    SpecLoader,
    decode_spec,
    reader_issue,
    scalar_value,
    tag_problem,
)

__all__ = ["MAX_SPEC_BYTES", "Issue", "Loaded", "load_cluster", "load_file", "load_text"]

_SSH = TypeVar("_SSH", SSHSettings, SSHOverride)

PathT = tuple[str | int, ...]

#: At most this many problems are listed (then one line says how many more there are).
MAX_ISSUES = 50


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
        return _printable(f"{self.file}:{self.line}:{self.col}: {prefix}{where}{self.message}")


def _printable(text: str) -> str:
    """Control characters (from keys or values in the file) escaped, so that a message never
    moves the terminal's cursor or starts a new line."""
    return "".join(
        ch if ch.isprintable() or ch == " " else ch.encode("unicode_escape").decode("ascii")
        for ch in text
    )


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


class _Builder:
    """Builds plain Python data from the composed YAML tree, recording positions and refusing
    tags, merge keys and values YAML cannot construct (each as a located issue)."""

    def __init__(self, marks: _Marks, issues: list[tuple[PathT, str]]) -> None:
        self.marks = marks
        self.issues = issues
        self.replaced: set[PathT] = set()  # values refused here: pydantic need not repeat it
        self.loader = yaml.SafeLoader("")

    def refuse(self, path: PathT, message: str) -> None:
        self.issues.append((path, message))
        self.replaced.add(path)

    def build(self, node: yaml.Node, path: PathT) -> Any:
        self.marks.values[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
        problem = tag_problem(node)
        if problem:
            self.refuse(path, problem)
            return None
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, path)
        if isinstance(node, yaml.SequenceNode):
            return [self.build(item, (*path, i)) for i, item in enumerate(node.value)]
        value, error = scalar_value(self.loader, node)
        if error:
            self.refuse(path, error)
        return value

    def _mapping(self, node: yaml.MappingNode, path: PathT) -> dict[Any, Any]:
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            where = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            if key_node.tag == "tag:yaml.org,2002:merge":
                self.marks.keys[(*path, "<<")] = where
                self.issues.append(((*path, "<<"), "merge keys (<<) are not allowed in a spec; write the keys out"))
                continue
            key: Any = None
            if isinstance(key_node, yaml.ScalarNode) and not tag_problem(key_node):
                key, _error = scalar_value(self.loader, key_node)
            if not isinstance(key, str | int) or isinstance(key, bool):
                kind = type(key).__name__ if isinstance(key_node, yaml.ScalarNode) else "a YAML collection"
                self.issues.append((path, f"keys must be plain strings, not {kind}"))
                continue
            child = (*path, key)
            self.marks.keys[child] = where
            if key in out:
                self.issues.append((child, "is given twice; keep one (YAML would silently use the last)"))
            out[key] = self.build(value_node, child)
        return out


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
        return f"must be one of {expected}, got {show(err.get('input'))}"
    if kind in ("int_type", "float_type", "bool_type"):
        what = {"int_type": "a whole number", "float_type": "a number", "bool_type": "true or false"}[kind]
        return f"{show(err.get('input'))} is not {what}; write it without quotes, e.g. {_EXAMPLE[kind]}"
    message = str(err["msg"])
    if message.startswith("Value error, "):
        message = message[len("Value error, ") :]
    if "network" in kind:
        return f"{show(err.get('input'))} is not a valid CIDR like 10.244.0.0/16"
    if kind.startswith("ip_"):
        return f"{show(err.get('input'))} is not a valid IP address like 10.0.0.11"
    return message


_EXAMPLE = {"int_type": "6443", "float_type": "10", "bool_type": "true"}


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


def _compose(text: str, filename: str) -> yaml.Node | None:
    """The YAML tree of ``text``; every YAML-level problem as a located :class:`SpecError`."""

    def fail(line: int, col: int, message: str) -> SpecError:
        return SpecError(f"{filename}: invalid YAML", [Issue(filename, line, col, (), message)])

    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_SPEC_BYTES:
        raise fail(1, 1, f"is {size:,} bytes; a spec file is at most 1 MiB ({MAX_SPEC_BYTES:,} bytes): "
                         "check that this is the spec")
    loader: SpecLoader | None = None
    try:
        loader = SpecLoader(text)  # the reader refuses forbidden characters here
        return loader.get_single_node()
    except Refusal as exc:
        raise fail(exc.line, exc.col, exc.message) from None
    except yaml.reader.ReaderError as exc:
        line, col, message = reader_issue(text, exc)
        raise fail(line, col, message) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        problem = exc.problem or str(exc)
        raise fail(line, col, f"YAML syntax error: {problem}; fix the YAML") from None
    except yaml.YAMLError as exc:
        raise fail(1, 1, f"YAML error: {exc}; fix the YAML") from None
    finally:
        if loader is not None:
            loader.dispose()


def load_text(text: str, filename: str = "<spec>") -> Loaded:
    """Parse and validate spec text; raises :class:`SpecError` listing every issue."""
    marks = _Marks()
    raw_issues: list[tuple[PathT, str]] = []
    root = _compose(text, filename)
    if root is None:
        issue = Issue(filename, 1, 1, (), "the file is empty; start from specs/seed.yaml")
        raise SpecError(f"{filename}: empty", [issue])
    builder = _Builder(marks, raw_issues)
    data = builder.build(root, ())
    if not isinstance(data, dict):
        first = [Issue(filename, *marks.locate(p), p, m) for p, m in raw_issues[:1]]
        issue = Issue(filename, 1, 1, (), "the spec must be a YAML mapping (apiVersion, kind, …)")
        raise SpecError(f"{filename}: not a mapping", first or [issue])

    def located(path: PathT, message: str, severity: Literal["error", "warning"] = "error") -> Issue:
        line, col = marks.locate(path)
        return Issue(filename, line, col, path, message, severity)

    issues = [located(p, m) for p, m in raw_issues]
    cluster: Cluster | None = None
    try:
        cluster = Cluster.model_validate(data)
    except ValidationError as exc:
        issues.extend(
            located(p, m)
            for p, m in _pydantic_issues(exc)
            if not any(p[: len(r)] == r for r in builder.replaced)
        )
    warnings: list[Issue] = []
    if cluster is not None:
        for finding in cross_checks(cluster):
            item = located(finding.path, finding.message, finding.severity)
            (warnings if finding.severity == "warning" else issues).append(item)
    if issues or cluster is None:
        issues.sort(key=lambda i: (i.line, i.col))
        count = len(issues)
        if count > MAX_ISSUES:
            rest = issues[MAX_ISSUES]
            more = Issue(filename, rest.line, rest.col, (), f"… and {count - MAX_ISSUES} more problems from here on; fix the ones above first")
            issues = [*issues[:MAX_ISSUES], more]
        raise SpecError(f"{filename}: {count} problem{'s' if count != 1 else ''}", issues)
    return Loaded(cluster=cluster, path=Path(filename), warnings=warnings, text=text)


def load_file(path: str | Path) -> Loaded:
    """Read and validate a spec file; relative SSH paths are resolved against its folder."""
    file = Path(path)
    try:
        with file.open("rb") as handle:
            data = handle.read(MAX_SPEC_BYTES + 1)
    except OSError as exc:
        issue = Issue(str(path), 1, 1, (), f"cannot read the file: {exc.strerror}")
        raise SpecError(f"{path}: cannot read", [issue]) from exc
    decoded = decode_spec(data)
    if isinstance(decoded, tuple):
        line, col, message = decoded
        raise SpecError(f"{path}: cannot read", [Issue(str(path), line, col, (), message)])
    loaded = load_text(decoded, str(path))
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
    """Make relative paths (SSH files, per-host overrides, ``lab.stateDir``, ``network.manifests``,
    ``prepare.packages.keyFile``) relative to ``base``."""

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
    network = cluster.network.model_copy(
        update={"manifests": [_resolve(m, base) or m for m in cluster.network.manifests]})
    prepare = cluster.prepare
    if prepare is not None:
        packages = prepare.packages.model_copy(
            update={"key_file": _resolve(prepare.packages.key_file, base)})
        prepare = prepare.model_copy(update={"packages": packages})
    return cluster.model_copy(
        update={
            "lab": lab,
            "network": network,
            "prepare": prepare,
            "ssh": fix(cluster.ssh),
            "etcd": etcd,
            "load_balancer": lb,
            "masters": fix_hosts(cluster.masters),
            "workers": fix_hosts(cluster.workers),
        }
    )
