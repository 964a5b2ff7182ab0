"""A changed SSH host key, against a real sshd on 127.0.0.1 (see conftest.py): `hactl plan`
(text and JSON) and `hactl check` refuse with exit 1, naming the host, the address, the key the
server offered and the way out; known_hosts is left as it was. An unknown key keeps its policy."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner, Result

from hactl.cli import main

from .conftest import Sshd, keygen


def spec_file(sshd: Sshd, tmp_path: Path) -> Path:
    """One host, master01 (stacked etcd, its own load balancer), at the sshd."""
    doc = {
        "apiVersion": "hactl.dev/v1alpha1",
        "kind": "Cluster",
        "metadata": {"name": "sshtest"},
        "controlPlaneEndpoint": "127.0.0.1:8443",
        "kubernetes": {"version": "1.30.4"},
        "etcd": {"topology": "stacked"},
        "loadBalancer": {"frontendPort": 8443,
                         "hosts": [{"name": "master01", "address": "127.0.0.1"}]},
        "masters": [{"name": "master01", "address": "127.0.0.1"}],
        "ssh": {"user": "root", "port": sshd.port, "identityFile": str(sshd.client_key),
                "knownHostsFile": str(sshd.known_hosts), "hostKeyPolicy": "strict",
                "connectTimeout": 5, "useAgent": False},
    }
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def offered(sshd: Sshd) -> str:
    """The server's key as `ssh-keygen -lf` prints it (what a person checks on the console)."""
    pub = sshd.dir / "host_ed25519.pub"
    return subprocess.run(["ssh-keygen", "-lf", str(pub)], capture_output=True, text=True,
                          check=True).stdout.split()[1]


def hactl(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


@pytest.fixture
def changed(sshd: Sshd, tmp_path: Path) -> tuple[Sshd, Path, str]:
    """known_hosts records another key for the sshd's address: the host key "changed"."""
    other = keygen(tmp_path / "old_host_key")
    line = f"[127.0.0.1]:{sshd.port} {' '.join(other.split()[:2])}\n"
    sshd.known_hosts.write_text(line)
    return sshd, spec_file(sshd, tmp_path), line


def assert_names_everything(text: str, sshd: Sshd) -> None:
    where = f"[127.0.0.1]:{sshd.port}"
    assert f"master01 (127.0.0.1): the SSH host key of {where} CHANGED (offered " in text, text
    assert f"(offered {offered(sshd)})" in text
    assert f"must print {offered(sshd)}" in text and "out of band" in text
    assert f"`ssh-keygen -R '{where}' -f {sshd.known_hosts}` (ssh.knownHostsFile)" in text


@pytest.mark.parametrize("flags", [[], ["--json"]])
def test_plan_refuses_a_changed_key(changed: tuple[Sshd, Path, str], flags: list[str]) -> None:
    sshd, spec, line = changed
    res = hactl("plan", "-f", str(spec), *flags)
    assert res.exit_code == 1, res.output
    assert res.stdout == ""
    assert "\nError: the plan is refused: the SSH host key of master01 changed" in res.stderr
    assert_names_everything(res.stderr, sshd)
    assert sshd.known_hosts.read_text() == line


def test_check_fails_on_a_changed_key(changed: tuple[Sshd, Path, str]) -> None:
    sshd, spec, line = changed
    res = hactl("check", "-f", str(spec))
    assert res.exit_code == 1, res.output
    assert "[FAIL] ssh: master01: master01 (127.0.0.1): the SSH host key of" in res.stdout
    assert_names_everything(res.stdout, sshd)
    assert sshd.known_hosts.read_text() == line


def test_an_unknown_key_keeps_its_policy(sshd: Sshd, tmp_path: Path) -> None:
    """Never recorded, strict: an unreachable host (here one the plan needs), not a changed key."""
    sshd.known_hosts.write_text("")
    res = hactl("plan", "-f", str(spec_file(sshd, tmp_path)))
    assert res.exit_code == 1, res.output
    assert "hosts that the plan needs did not answer" in res.stderr
    assert f"is not in {sshd.known_hosts}" in res.stderr and "CHANGED" not in res.stderr
