"""known_hosts: parsed once per file and shared by every connection of a run.

``strict`` refuses a host whose key is not in the file; ``accept-new`` appends it (under an
exclusive ``flock`` on the file, so parallel runs do not interleave lines); a key that differs
from the recorded one is refused under both policies ("possible man-in-the-middle").
"""

from __future__ import annotations

import fcntl
import os
import threading
from pathlib import Path
from typing import Any

import asyncssh


def host_pattern(address: str, port: int) -> str:
    """How OpenSSH writes a host in known_hosts: ``10.0.0.1`` or ``[10.0.0.1]:2222``."""
    return address if port == 22 else f"[{address}]:{port}"


class KnownHosts:
    """One known_hosts file, read once. Thread-safe append for ``accept-new``."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()
        self.db: Any = self._read()

    def _read(self) -> Any:
        try:
            text = Path(self.path).read_text()
        except FileNotFoundError:
            text = ""
        return asyncssh.import_known_hosts(text)

    def trusted(self, host: str, addr: str, port: int | None) -> list[Any]:
        """Keys recorded for this host (any algorithm)."""
        lookup_port = None if port == 22 else port
        keys: list[Any] = self.db.match(host, addr, lookup_port)[0]
        return keys

    def record(self, address: str, port: int, key: Any) -> bool:
        """Append ``key`` for ``address:port`` unless another writer recorded a key meanwhile.
        True when ``key`` is now the trusted key, False when the file holds a different one."""
        line = f"{host_pattern(address, port)} {key.export_public_key().decode().strip()}\n"
        with self._lock:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                with open(fd, closefd=False) as handle:
                    text = handle.read()
                    current = asyncssh.import_known_hosts(text)
                    found = current.match(address, address, None if port == 22 else port)[0]
                    if found:
                        self.db = current
                        return any(k == key for k in found)
                    prefix = "\n" if text and not text.endswith("\n") else ""
                    os.write(fd, (prefix + line).encode())
                self.db = asyncssh.import_known_hosts(Path(self.path).read_text())
                return True
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)


class KnownHostsCache:
    """Path → :class:`KnownHosts`, so each file is parsed once per run."""

    def __init__(self) -> None:
        self._files: dict[str, KnownHosts] = {}

    def get(self, path: str) -> KnownHosts:
        if path not in self._files:
            self._files[path] = KnownHosts(path)
        return self._files[path]
