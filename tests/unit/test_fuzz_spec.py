"""Standing defence (issue 11): random YAML, random bytes and random edits of a real spec go
through the real loader and the ``hactl validate`` command. Never a traceback, a bounded time per
input (hypothesis ``deadline``) and bounded memory (tracemalloc on the worst shapes); every error
is a located ``FILE:LINE:COL: …`` line and exit code 1."""

from __future__ import annotations

import copy
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hactl.cli import main
from hactl.errors import SpecError
from hactl.spec.load import Issue, load_text

ROOT = Path(__file__).resolve().parents[2]
SEED_TEXT = (ROOT / "specs" / "seed.yaml").read_text()
SEED: dict[str, Any] = yaml.safe_load(SEED_TEXT)

# Modest and time-bounded: the whole file stays well under 30 s on a loaded 2-core machine.
settings.register_profile(
    "hactl-fuzz",
    max_examples=100,
    deadline=timedelta(seconds=3),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
FUZZ = settings.get_profile("hactl-fuzz")

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
    st.sampled_from(["10.0.0.11", "fe80::1%eth0", "::", "0", "/", "/var/lib", "1.30.4 ", "x\n",
                     "lb:６４４３", "[10.0.0.10", "a@b:notaport", "", "\x00", "9" * 5000]),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5),
        st.dictionaries(st.one_of(st.text(max_size=12), st.integers()), inner, max_size=5),
    ),
    max_leaves=25,
)

# Pieces of YAML that exercise the reader, scanner and composer: anchors, aliases, tags, merge
# keys, flow and block nesting, control characters, odd indentation.
TOKENS = [
    "&a ", "*a", "&b [*a, *a]", "!foo ", "!!python/name:os.system ", "!!python/object/apply:os.system ",
    "!!binary aGk=", "!!set {a}", "<<: ", "[", "]", "{", "}", ": ", "- ", "\n", "  ", "\t", "'", '"',
    "\x00", "\x1b", "\ufeff", "é", "kind: Cluster\n", "metadata:\n  name: x\n", "? ", "|\n  ", "%YAML 1.1\n",
    "---\n", "...\n", "9" * 4400, "2024-13-45", "1e999", "0x_", "~", "masters:\n  - ",
]
yaml_soup = st.lists(st.sampled_from(TOKENS), max_size=40).map("".join)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _paths(value, (*prefix, i))


SEED_PATHS = [p for p in _paths(SEED) if p]


@st.composite
def mutated_seed(draw: st.DrawFn) -> str:
    data = copy.deepcopy(SEED)
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        path = draw(st.sampled_from(SEED_PATHS))
        node: Any = data
        try:
            for part in path[:-1]:
                node = node[part]
            node[path[-1]] = draw(values)
        except (KeyError, IndexError, TypeError):
            continue
    return yaml.safe_dump(data, allow_unicode=draw(st.booleans()))


def _check_loader(text: str) -> None:
    try:
        load_text(text, "fuzz.yaml")
    except SpecError as exc:
        assert exc.issues, exc
        for issue in exc.issues:
            assert isinstance(issue, Issue)
            assert issue.line >= 1 and issue.col >= 1
            line = str(issue)
            assert line.startswith("fuzz.yaml:") and "\n" not in line and "\x1b" not in line


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


def _check_cli(folder: Path, data: bytes) -> None:
    spec = folder / "spec.yaml"
    spec.write_bytes(data)
    result = CliRunner().invoke(main, ["validate", "-f", str(spec)])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exc_info
    assert result.exit_code in (0, 1), result.output
    if result.exit_code == 1:
        lines = result.stderr.splitlines()
        assert lines, result.output
        assert all(line.startswith(f"{spec}:") for line in lines), lines
    assert "Traceback" not in result.output


@FUZZ
@given(values)
def test_random_yaml_documents(fuzz_dir: Path, doc: Any) -> None:
    text = yaml.safe_dump(doc, allow_unicode=True)
    _check_loader(text)
    _check_cli(fuzz_dir, text.encode())


@FUZZ
@given(mutated_seed())
def test_random_edits_of_a_real_spec(fuzz_dir: Path, text: str) -> None:
    _check_loader(text)
    _check_cli(fuzz_dir, text.encode())


@FUZZ
@given(yaml_soup)
def test_yaml_soup_with_aliases_tags_and_control_characters(fuzz_dir: Path, text: str) -> None:
    _check_loader(text)
    _check_loader(SEED_TEXT + text)
    _check_cli(fuzz_dir, (SEED_TEXT + text).encode("utf-8", "surrogatepass"))


@FUZZ
@given(st.binary(max_size=3000))
def test_random_bytes(fuzz_dir: Path, data: bytes) -> None:
    _check_cli(fuzz_dir, data)
    _check_cli(fuzz_dir, SEED_TEXT.encode() + data)


WORST_SHAPES = r"""
import resource, sys, time
resource.setrlimit(resource.RLIMIT_AS, (MEMLIMIT, MEMLIMIT))
from hactl.errors import SpecError
from hactl.spec.load import load_text
seed = open(sys.argv[1]).read()
bomb = "x0: &x0 [" + ",".join(["x"] * 10) + "]\n" + "".join(
    f"x{i}: &x{i} [" + ",".join([f"*x{i - 1}"] * 10) + "]\n" for i in range(1, 10))
shapes = {
    "bomb": seed + bomb,
    "recursive": "a: &a [*a]\n",
    "deep-flow": "x: " + "[" * 100_000 + "]" * 100_000 + "\n",
    "deep-block": "x:\n" + "".join(" " * i + "- \n" for i in range(1, 1400)),
    "keys": "".join(f"k{i}: 1\n" for i in range(100_000)),
    "long-scalar": seed + "x: " + "a" * 1_000_000 + "\n",
    "huge-int": seed + "x: " + "9" * 200_000 + "\n",
    "many-issues": seed.replace("masters:", "masters:\n" + "".join(
        f"  - {{name: m{i}, address: 10.0.0.11}}\n" for i in range(1_000))),
}
for name, text in shapes.items():
    started = time.process_time()  # CPU seconds: the work, not how busy the machine is
    try:
        load_text(text, "worst.yaml")
        print(name, "accepted", flush=True)
    except SpecError as exc:
        print(name, f"{time.process_time() - started:.2f}", len(exc.issues), flush=True)
"""


def test_worst_shapes_are_refused_in_bounded_time_and_memory() -> None:
    """Each hostile shape (alias bomb, 100,000-deep nesting, 100,000 keys, 1 MB scalar, 1,000
    problems) in a child process limited to 1 GiB of address space: refused, each within 15 s
    of CPU time (the child's own CPU, so a loaded test machine does not fail it)."""
    limit = 1024 * 1024 * 1024
    result = subprocess.run(
        [sys.executable, "-c", WORST_SHAPES.replace("MEMLIMIT", str(limit)), str(ROOT / "specs" / "seed.yaml")],
        capture_output=True, text=True, timeout=120, cwd=ROOT, check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    rows = [line.split() for line in result.stdout.splitlines()]
    assert [r[0] for r in rows] == ["bomb", "recursive", "deep-flow", "deep-block", "keys",
                                    "long-scalar", "huge-int", "many-issues"], result.stdout
    for name, seconds, issues in rows:
        assert float(seconds) < 15, (name, seconds)
        assert 1 <= int(issues) <= 51, (name, issues)
