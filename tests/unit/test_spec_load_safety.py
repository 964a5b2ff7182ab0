"""Malformed spec files (issue 11: M6, L1): each gives a located message and exit 1 from
``hactl validate``, quickly, and never a traceback."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from hactl.cli import main
from hactl.errors import SpecError
from hactl.spec.load import MAX_SPEC_BYTES, load_file, load_text

ROOT = Path(__file__).resolve().parents[2]
SEED = (ROOT / "specs" / "seed.yaml").read_text()


def _validate(tmp_path: Path, data: bytes) -> tuple[list[str], float]:
    spec = tmp_path / "bad.yaml"
    spec.write_bytes(data)
    started = time.monotonic()
    result = CliRunner().invoke(main, ["validate", "-f", str(spec)])
    elapsed = time.monotonic() - started
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exc_info
    assert result.exit_code == 1, result.output
    lines = result.stderr.splitlines()
    assert lines and all(line.startswith(f"{spec}:") for line in lines), lines
    assert "Traceback" not in result.output
    return lines, elapsed


def _bomb(depth: int) -> str:
    out = SEED + "x0: &x0 [" + ",".join(["x"] * 10) + "]\n"
    for i in range(1, depth + 1):
        out += f"x{i}: &x{i} [" + ",".join([f"*x{i - 1}"] * 10) + "]\n"
    return out


def test_alias_bomb_is_refused_at_once(tmp_path: Path) -> None:
    text = _bomb(6)
    assert len(text.encode()) < 2000
    lines, elapsed = _validate(tmp_path, text.encode())
    assert elapsed < 2
    assert "anchor" in lines[0] and "write the value out" in lines[0]
    assert lines[0].split(":")[1:3] == ["32", "5"]  # the first anchor (&x0)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("a: &a [*a]\n", "anchor"),
        ("kind: *nothing\n", "alias"),
        ("apiVersion: !foo x\n", "tag '!foo'"),
        ("apiVersion: !!python/name:os.system x\n", "tag"),
        ("metadata:\n  <<: {name: x}\n", "merge key"),
        ("metadata: !!set {a, b}\n", "tag"),
        ("metadata: !!binary aGVsbG8=\n", "tag"),
        ("!foo {kind: Cluster}\n", "tag '!foo'"),
        ("--- !!set {a}\n", "tag '!!set'"),
        ("!!python/object/apply:os.system [id]\n", "tag"),
        ("kind: " + "9" * 5000 + "\n", "number"),
        ("kind: 2024-13-45\n", ""),
        ("x: " + "[" * 3000 + "]" * 3000 + "\n", "deeper than"),
        ("x:\n" + "".join(" " * i + "- \n" for i in range(1, 400)), "deeper than"),
        ("a: 1\n\ta: 2\n", "YAML"),
    ],
    ids=lambda v: v[:30] if isinstance(v, str) else v,
)
def test_malformed_yaml_is_a_located_error(tmp_path: Path, text: str, fragment: str) -> None:
    lines, elapsed = _validate(tmp_path, text.encode())
    assert elapsed < 5
    assert fragment in "\n".join(lines)


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (SEED.encode("latin-1").replace(b"seed", b"s\xe9ed"), "UTF-8"),
        (SEED.encode("utf-16"), "UTF-16"),
        (SEED.encode("utf-16-be"), "UTF-8"),
        (SEED.encode().replace(b"kind: Cluster", b"kind: Clu\x00ster"), "U+0000"),
        (SEED.encode().replace(b"kind: Cluster", b"kind: Clu\x1bster"), "U+001B"),
        (b"\xff\xfe\xfd", "UTF-8"),
    ],
    ids=["latin-1", "utf-16", "utf-16-be", "nul", "escape", "junk"],
)
def test_bad_bytes_are_a_located_error(tmp_path: Path, data: bytes, fragment: str) -> None:
    lines, _ = _validate(tmp_path, data)
    assert fragment in lines[0]


def test_nul_is_located_on_its_line(tmp_path: Path) -> None:
    data = SEED.encode().replace(b"kind: Cluster", b"kind: Clu\x00ster")
    lines, _ = _validate(tmp_path, data)
    assert lines[0].split(":")[1:3] == ["3", "10"]  # line 3: kind


def test_utf8_bom_is_fine(tmp_path: Path) -> None:
    spec = tmp_path / "bom.yaml"
    spec.write_bytes(b"\xef\xbb\xbf" + SEED.encode())
    assert load_file(spec).cluster.metadata.name == "seed"


def test_a_spec_file_is_at_most_1_mib(tmp_path: Path) -> None:
    assert MAX_SPEC_BYTES == 1024 * 1024
    data = (SEED + "#" * (MAX_SPEC_BYTES + 10) + "\n").encode()
    lines, elapsed = _validate(tmp_path, data)
    assert "1 MiB" in lines[0]
    assert elapsed < 2
    with pytest.raises(SpecError) as info:
        load_text(SEED + "#" * MAX_SPEC_BYTES, "big.yaml")
    assert "1 MiB" in str(info.value.issues[0])


def test_spec_just_under_the_cap_loads(tmp_path: Path) -> None:
    spec = tmp_path / "big.yaml"
    spec.write_text(SEED + "#" * (MAX_SPEC_BYTES - len(SEED) - 10) + "\n")
    assert load_file(spec).cluster.metadata.name == "seed"


def test_version_with_spaces_is_an_error_not_a_traceback(tmp_path: Path) -> None:
    for version in ('" 1.30.4"', '"\\t1.30.4"', '" v1.30.4"'):
        lines, _ = _validate(tmp_path, SEED.replace("version: 1.30.4", f"version: {version}").encode())
        assert any("kubernetes.version" in line for line in lines)


def test_lab_subnet_32_is_an_error_not_a_traceback(tmp_path: Path) -> None:
    text = SEED.replace("10.0.0.", "198.18.0.") + "lab: {subnet: 198.18.0.10/32}\n"
    lines, _ = _validate(tmp_path, text.encode())
    assert any("lab.subnet" in line for line in lines)


def test_control_characters_in_messages_are_escaped(tmp_path: Path) -> None:
    lines, _ = _validate(tmp_path, (SEED + '"x\\e[2Jy": 1\n').encode())
    assert "\x1b" not in "\n".join(lines)
