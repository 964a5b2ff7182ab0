"""A real OpenSSH server on 127.0.0.1 for transport tests (random port, generated host key,
temporary authorized_keys); started with ``sshd -D -f CFG -e`` and killed by its PID.

    def test_x(sshd):            # Sshd(port, dir, client_key, known_hosts, host_pub, ...)
        cluster = sshd.cluster() # a spec whose hosts all point at this sshd
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from hactl.spec.models import Cluster

SSHD = "/usr/sbin/sshd"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def keygen(path: Path) -> str:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", path.name, "-f", str(path)],
        check=True,
    )
    return (path.with_suffix(".pub") if path.suffix else Path(f"{path}.pub")).read_text().strip()


@dataclass
class Sshd:
    port: int
    dir: Path
    client_key: Path
    host_pub: str
    known_hosts: Path
    pid: int

    def known_line(self) -> str:
        return f"[127.0.0.1]:{self.port} {' '.join(self.host_pub.split()[:2])}\n"

    def trust(self) -> None:
        self.known_hosts.write_text(self.known_line())

    def cluster(
        self,
        hosts: int = 1,
        *,
        ssh: dict[str, Any] | None = None,
        extra: list[dict[str, Any]] | None = None,
    ) -> Cluster:
        names = [f"master{i:02d}" for i in range(1, hosts + 1)]
        settings = {
            "user": "root",
            "port": self.port,
            "identityFile": str(self.client_key),
            "knownHostsFile": str(self.known_hosts),
            "hostKeyPolicy": "strict",
            "connectTimeout": 5,
            "useAgent": False,
            **(ssh or {}),
        }
        return Cluster.model_validate(
            {
                "apiVersion": "hactl.dev/v1alpha1",
                "kind": "Cluster",
                "metadata": {"name": "sshtest"},
                "controlPlaneEndpoint": "127.0.0.1:6443",
                "kubernetes": {"version": "1.30.4"},
                "loadBalancer": {"hosts": [{"name": "lb01", "address": "127.0.0.1"}]},
                "masters": [{"name": n, "address": "127.0.0.1"} for n in names] + (extra or []),
                "ssh": settings,
            }
        )


def _wait_listening(port: int, proc: subprocess.Popen[bytes], deadline: float = 10.0) -> None:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"sshd exited: {proc.stderr.read().decode() if proc.stderr else ''}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"sshd did not listen on {port}")


@pytest.fixture
def sshd_factory(tmp_path: Path) -> Iterator[Callable[..., Sshd]]:
    started: list[subprocess.Popen[bytes]] = []

    def start(max_sessions: int = 10) -> Sshd:
        if os.geteuid() != 0:
            pytest.skip("the sshd transport tests run sshd as root")
        d = tmp_path / f"sshd{len(started)}"
        d.mkdir()
        host_pub = keygen(d / "host_ed25519")
        client_pub = keygen(d / "client_ed25519")
        (d / "authorized_keys").write_text(client_pub + "\n")
        port = free_port()
        (d / "sshd_config").write_text(
            f"Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host_ed25519\nPidFile none\n"
            f"AuthorizedKeysFile {d}/authorized_keys\nStrictModes no\nUsePAM no\n"
            "PermitRootLogin prohibit-password\nPasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\nLogLevel ERROR\n"
            f"MaxSessions {max_sessions}\nMaxStartups 100\nAllowTcpForwarding yes\n"
        )
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation dir
        proc = subprocess.Popen(
            [SSHD, "-D", "-e", "-f", str(d / "sshd_config")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        started.append(proc)
        _wait_listening(port, proc)
        return Sshd(port, d, d / "client_ed25519", host_pub, d / "known_hosts", proc.pid)

    try:
        yield start
    finally:
        for proc in started:
            proc.kill()  # by PID: only the sshd this fixture started
            proc.wait(timeout=10)
            if proc.stderr:
                proc.stderr.close()


@pytest.fixture
def sshd(sshd_factory: Callable[..., Sshd]) -> Sshd:
    return sshd_factory()
