"""The cluster spec: examples load, invalid files give their exact located error, warnings."""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from hactl.cli import main
from hactl.errors import SpecError
from hactl.spec.checks import quorum, tolerated_failures
from hactl.spec.load import load_file, load_text
from hactl.spec.models import Cluster, split_endpoint, ssh_for

ROOT = Path(__file__).resolve().parents[2]
SPECS = ROOT / "specs"
INVALID = sorted((SPECS / "invalid").glob("*.yaml"))
SEED = (SPECS / "seed.yaml").read_text()


@pytest.mark.parametrize("name", ["seed", "lab", "stacked", "five-etcd"])
def test_examples_are_valid(name: str) -> None:
    loaded = load_file(SPECS / f"{name}.yaml")
    assert loaded.warnings == []
    assert len(loaded.cluster.masters) >= 3


def test_seed_is_the_reference_topology() -> None:
    cluster = load_file(SPECS / "seed.yaml").cluster
    assert cluster.control_plane_endpoint == "loadbalancer.example.com:6443"
    assert [str(h.address) for h in cluster.masters] == ["10.0.0.11", "10.0.0.12", "10.0.0.13"]
    assert [str(h.address) for h in cluster.etcd.members] == ["10.0.0.21", "10.0.0.22", "10.0.0.23"]
    assert str(cluster.kubernetes.pod_subnet) == "10.244.0.0/16"
    assert cluster.load_balancer.frontend_port == 6443


def test_lab_spec_uses_only_the_lab_range() -> None:
    cluster = load_file(SPECS / "lab.yaml").cluster
    lab_range = ipaddress.ip_network("198.18.0.0/15")
    assert all(h.address in lab_range for h in cluster.all_hosts())
    assert len(cluster.workers) == 2


def test_invalid_examples_exist() -> None:
    assert len(INVALID) >= 15


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.stem)
def test_invalid_spec_gives_its_located_error(path: Path) -> None:
    text = path.read_bytes().decode("utf-8", "replace")  # some are broken on purpose (Latin-1, NUL)
    expected = re.search(r"^# expect: (.+)$", text, re.M)
    assert expected, f"{path} has no '# expect:' line"
    result = CliRunner().invoke(main, ["validate", "-f", str(path)])
    assert result.exit_code == 1
    first = result.stderr.splitlines()[0]
    assert first == f"{path}:{expected.group(1)}"


def test_even_etcd_explains_quorum() -> None:
    with pytest.raises(SpecError) as info:
        load_file(SPECS / "invalid" / "even-etcd.yaml")
    text = str(info.value.issues[0])
    assert "quorum is 3 of 4" in text and "the same as 3" in text


def test_all_problems_are_reported_together() -> None:
    text = SEED.replace("healthCheck: https-readyz", "healthChek: https-readyz").replace(
        "version: 1.30.4", "version: 1.30"
    )
    with pytest.raises(SpecError) as info:
        load_text(text, "x.yaml")
    messages = [str(i) for i in info.value.issues]
    assert len(messages) == 2
    assert any("did you mean 'healthCheck'" in m for m in messages)
    assert any("kubernetes.version" in m for m in messages)


def _cluster_with(replace: str, by: str) -> str:
    assert replace in SEED
    return SEED.replace(replace, by)


def test_single_etcd_member_is_a_warning() -> None:
    text = _cluster_with(
        "    - {name: etcd02, address: 10.0.0.22}\n    - {name: etcd03, address: 10.0.0.23}\n", ""
    )
    loaded = load_text(text, "one.yaml")
    assert [w.severity for w in loaded.warnings] == ["warning"]
    assert "not highly available" in str(loaded.warnings[0])


def test_fewer_than_three_masters_warns_with_failures_survived() -> None:
    text = _cluster_with("  - {name: master03, address: 10.0.0.13}\n", "")
    loaded = load_text(text, "two.yaml")
    assert "survives 1 master failure" in str(loaded.warnings[0])


def test_validate_cli_prints_hosts_and_warnings() -> None:
    result = CliRunner().invoke(main, ["validate", "-f", str(SPECS / "seed.yaml")])
    assert result.exit_code == 0
    assert result.stdout.startswith(f"{SPECS / 'seed.yaml'}: valid (7 hosts: etcd01,")


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["validate", "-f", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 1
    assert "cannot read the file" in result.stderr


def test_lb_on_master_allowed_on_another_port() -> None:
    text = (
        SEED.replace("    - {name: lb01, address: 10.0.0.10}", "    - {name: master01, address: 10.0.0.11}")
        .replace("loadbalancer.example.com:6443", "master01:8443")
        .replace("  frontendPort: 6443", "  frontendPort: 8443")
    )
    cluster = load_text(text, "x.yaml").cluster
    assert cluster.roles("master01") == ["lb", "master"]


def test_relative_ssh_paths_resolve_against_the_spec(tmp_path: Path) -> None:
    text = SEED.replace("  user: root\n", "  user: root\n  identityFile: keys/id\n")
    text = text.replace(
        "{name: lb01, address: 10.0.0.10}",
        "{name: lb01, address: 10.0.0.10, ssh: {port: 2222, knownHostsFile: kh}}",
    )
    text = text.replace("10.0.0.", "198.18.0.") + "lab: {subnet: 198.18.0.0/24, stateDir: labstate}\n"
    spec = tmp_path / "c.yaml"
    spec.write_text(text)
    cluster = load_file(spec).cluster
    assert cluster.ssh.identity_file == str(tmp_path / "keys" / "id")
    assert cluster.lab is not None and cluster.lab.state_dir == str(tmp_path / "labstate")
    lb_ssh = ssh_for(cluster, cluster.load_balancer.hosts[0])
    assert (lb_ssh.port, lb_ssh.known_hosts_file) == (2222, str(tmp_path / "kh"))
    assert lb_ssh.identity_file == str(tmp_path / "keys" / "id")


def test_models_are_frozen() -> None:
    cluster = load_file(SPECS / "seed.yaml").cluster
    with pytest.raises(Exception, match="frozen"):
        cluster.masters = []  # type: ignore[misc]


def test_every_field_is_documented() -> None:
    def walk(model: type) -> None:
        for name, info in model.model_fields.items():  # type: ignore[attr-defined]
            assert info.description, f"{model.__name__}.{name} has no docstring"
            for arg in [info.annotation, *getattr(info.annotation, "__args__", ())]:
                inner = getattr(arg, "__args__", (arg,))
                for candidate in (arg, *inner):
                    if isinstance(candidate, type) and hasattr(candidate, "model_fields"):
                        walk(candidate)

    walk(Cluster)


@given(st.integers(min_value=1, max_value=99))
def test_quorum_arithmetic(n: int) -> None:
    assert quorum(n) > n / 2
    assert quorum(n) - 1 <= n / 2
    assert tolerated_failures(n) == n - quorum(n)
    if n % 2 == 1:
        assert tolerated_failures(n + 1) == tolerated_failures(n)


@given(
    st.from_regex(r"[a-z]([a-z0-9-]{0,18}[a-z0-9])?(\.[a-z][a-z0-9]{0,10}){0,2}", fullmatch=True),
    st.integers(min_value=1, max_value=65535),
)
def test_endpoint_round_trip(host: str, port: int) -> None:
    assert split_endpoint(f"{host}:{port}") == (host, port)
    assert split_endpoint(host) == (host, 6443)


def test_tcp_health_check_is_a_warning() -> None:
    loaded = load_text(_cluster_with("healthCheck: https-readyz", "healthCheck: tcp"), "t.yaml")
    assert [w.dotted for w in loaded.warnings] == ["loadBalancer.healthCheck"]
    assert "only sees an open port" in str(loaded.warnings[0])
