"""Fake lock hosts for unit tests: one FakeTransport per host whose answers come from running
the real lock script with /bin/sh (real mkdir, flock, stat) in a folder per host."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from hactl.transport.base import Result
from hactl.transport.fake import Call, FakeTransport

PLACEHOLDER = "/hactl-unit-lock-root"
"""The lock root the tests give ClusterLock; replaced by each host's folder."""


class Hosts:
    """One FakeTransport per host; each runs the lock script in its own folder."""

    def __init__(self, base: Path, names: list[str], root: str = PLACEHOLDER) -> None:
        self.base = base
        self.root = root
        """The lock root in the scripts (hactl's own /var/lib/hactl for CLI tests)."""
        self.fakes: dict[str, FakeTransport] = {}
        for name in names:
            fake = FakeTransport(name)
            fake.on(lambda wire: True, respond=self._runner(name))
            self.fakes[name] = fake

    def _runner(self, name: str):  # type: ignore[no-untyped-def]
        folder = self.base / name
        folder.mkdir(parents=True, exist_ok=True)

        def respond(call: Call) -> Result:
            script = call.wire.replace(f"root={self.root};", f"root={folder};")
            done = subprocess.run(
                ["/bin/sh", "-c", script],
                input=call.stdin or b"",
                capture_output=True,
                timeout=30,
                check=False,
            )
            return Result(done.returncode, done.stdout.decode(), done.stderr.decode())

        return respond

    def __call__(self, host: str) -> FakeTransport:
        return self.fakes[host]

    def lock_dir(self, host: str) -> Path:
        return self.base / host / "lock.d"

    def owner(self, host: str) -> dict[str, object]:
        data: dict[str, object] = json.loads((self.lock_dir(host) / "owner.json").read_text())
        return data

    def age(self, host: str, seconds: float) -> None:
        path = self.lock_dir(host) / "owner.json"
        past = path.stat().st_mtime - seconds
        os.utime(path, (past, past))
