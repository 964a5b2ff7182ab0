"""The YAML subset a spec may use, enforced while reading (before anything is expanded).

A spec is plain data: mappings, lists and scalars (strings, numbers, booleans, null, dates).
Anchors and aliases are refused where they occur (``a: &x [...]`` / ``b: *x``): specs do not
need them, and expanding them is exponential (a 1,151-byte "billion laughs" took 90 s and 3 GiB).
Explicit tags, merge keys, nesting deeper than :data:`MAX_DEPTH` and more than :data:`MAX_NODES`
nodes are refused too; so are files over :data:`MAX_SPEC_BYTES`, text that is not UTF-8, and
characters YAML forbids (NUL, ESC …). PyYAML's pure-Python parser runs at roughly 10-30 µs per
token, so these limits keep the worst file to a few seconds and tens of MiB.
Each refusal names the line and column and what to do.
"""

from __future__ import annotations

from typing import Any

import yaml

from hactl.spec.values import show

MAX_SPEC_BYTES = 1024 * 1024
#: Deepest nesting of mappings and lists (the spec itself needs 5).
MAX_DEPTH = 32
#: Most YAML nodes (keys, values, lists) in a spec: a host takes about 5, so this allows some
#: 8,000 hosts (Kubernetes supports 5,000 nodes) and bounds the time a hostile file can take.
MAX_NODES = 40_000

_STD = "tag:yaml.org,2002:"
SCALAR_TAGS = frozenset(f"{_STD}{t}" for t in ("null", "bool", "int", "float", "str", "timestamp"))
_COLLECTION_TAG: dict[type[yaml.Node], str] = {
    yaml.MappingNode: f"{_STD}map",
    yaml.SequenceNode: f"{_STD}seq",
}


class Refusal(Exception):
    """A construct a spec may not use, at 1-based ``line``/``col``."""

    def __init__(self, mark: Any, message: str) -> None:
        super().__init__(message)
        self.line = mark.line + 1 if mark is not None else 1
        self.col = mark.column + 1 if mark is not None else 1
        self.message = message


class SpecLoader(yaml.SafeLoader):
    """SafeLoader's composer, refusing anchors, aliases and deep nesting as it meets them."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._nodes = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        event = self.peek_event()  # type: ignore[no-untyped-call]
        if isinstance(event, yaml.AliasEvent):
            raise Refusal(
                event.start_mark,
                f"uses the YAML alias *{event.anchor}; specs do not allow anchors and aliases: "
                "write the value out",
            )
        anchor = getattr(event, "anchor", None)
        if anchor is not None:
            raise Refusal(
                event.start_mark,
                f"defines the YAML anchor &{anchor}; specs do not allow anchors and aliases: "
                "write the value out",
            )
        self._depth += 1
        self._nodes += 1
        if self._nodes > MAX_NODES:
            raise Refusal(
                event.start_mark,
                f"has more than {MAX_NODES:,} YAML nodes (keys, values and lists); a spec of "
                "5,000 hosts needs about 25,000: check that this is the spec",
            )
        try:
            if self._depth > MAX_DEPTH:
                raise Refusal(
                    event.start_mark,
                    f"nests deeper than {MAX_DEPTH} levels; a spec needs 5: check the structure",
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _written(tag: str) -> str:
    return f"!!{tag[len(_STD):]}" if tag.startswith(_STD) else tag


def tag_problem(node: yaml.Node) -> str | None:
    """Why ``node``'s tag is not allowed in a spec, or None."""
    expected = _COLLECTION_TAG.get(type(node))
    allowed = node.tag == expected if expected else node.tag in SCALAR_TAGS
    if allowed or node.tag == f"{_STD}merge":
        return None
    return f"the YAML tag {show(_written(node.tag))} is not allowed in a spec; remove it"


def scalar_value(loader: yaml.SafeLoader, node: yaml.Node) -> tuple[Any, str | None]:
    """The Python value of a scalar node, or ``(None, why)`` when YAML cannot build it
    (a 5,000-digit integer, a date such as 2024-13-45)."""
    try:
        return loader.construct_object(node, deep=True), None
    except (ValueError, OverflowError, yaml.YAMLError) as exc:
        what = {f"{_STD}int": "an integer", f"{_STD}float": "a number",
                f"{_STD}timestamp": "a date"}.get(node.tag, "a value")
        detail = "too many digits" if "digits" in str(exc) else str(exc).splitlines()[0][:80]
        return None, (
            f"{show(node.value)} cannot be read as {what} ({detail}); "
            "quote it if it is text, or fix the number"
        )


def decode_spec(data: bytes) -> str | tuple[int, int, str]:
    """The text of a spec file, or ``(line, col, message)`` saying why it cannot be read."""
    if len(data) > MAX_SPEC_BYTES:
        return 1, 1, (
            f"is larger than 1 MiB ({MAX_SPEC_BYTES:,} bytes), the limit for a spec file: "
            "check that this is the spec"
        )
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return 1, 1, "is UTF-16 (or UTF-32) text; save it as UTF-8"
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        col = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        return line, col, (
            f"is not UTF-8 text (byte 0x{data[exc.start]:02x} here); save the file as UTF-8"
        )


def reader_issue(text: str, exc: yaml.reader.ReaderError) -> tuple[int, int, str]:
    """``(line, col, message)`` for a character YAML does not allow."""
    position = exc.position if isinstance(exc.position, int) else 0
    line = text.count("\n", 0, position) + 1
    col = position - (text.rfind("\n", 0, position) + 1) + 1
    char = exc.character
    code = ord(char) if isinstance(char, str) and char else int(char or 0)
    message = f"contains the character U+{code:04X}, which YAML does not allow; remove it"
    if code == 0:
        message += " (a file full of NUL bytes is UTF-16: save it as UTF-8)"
    return line, col, message
