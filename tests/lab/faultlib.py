"""Helpers for the fault-injection and secrets lab tests (tests/lab/test_faults_lab.py,
tests/lab/test_secrets_lab.py).

- :class:`ApplyRun`: ``hactl apply`` as a subprocess with JSON logs on stderr; its ``step.start``
  / ``step.end`` events (hactl/apply/engine.py) are parsed as they come, so a test can SIGKILL
  the process (by the PID it started) at a step boundary or a chosen time into a step;
- :class:`ApiReader`: ``GET /readyz`` through the load balancer once a second (bounded) while a
  scenario runs, counting the answers that are not ``200 ok``;
- :func:`record`: one scenario's measured outcome into ``out/reliability.json`` (the table of
  docs/reliability.md is filled from that file);
- :func:`scan_for_secrets`, :class:`SecretSampler`: what secret-shaped strings the hosts hold
  during a run (process argv and small files), to learn the live values a test then greps for.

Running hactl and printing its output reuse tests/lab/test_apply_lab.py (``hactl``, ``show``).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import signal
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from tests.lab.test_apply_lab import HACTL, REPO, hactl, show

OUT = REPO / "out" / "reliability.json"
TOKEN_RE = re.compile(rb"(?<![a-z0-9])([a-z0-9]{6}\.[a-z0-9]{16})(?![a-z0-9])")
HEX64_RE = re.compile(rb"(?<![0-9a-fA-F])([0-9a-f]{64})(?![0-9a-fA-F])")

__all__ = ["HACTL", "REPO", "hactl", "show"]


# -- hactl apply as a subprocess --------------------------------------------------------------


class ApplyRun:
    """``hactl --log-format json -v apply …`` started now; events parsed from stderr.

    Every run started is listed in :attr:`started_runs`; :meth:`reap_all` SIGKILLs those still
    running (a test calls it in ``finally``, so no hactl outlives its lab)."""

    started_runs: ClassVar[list[ApplyRun]] = []

    def __init__(self, *args: str, env: dict[str, str], verbose: int = 1) -> None:
        level = ["-" + "v" * verbose] if verbose else []
        self.argv = [*HACTL, "--log-format", "json", *level, "apply", *args]
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            self.argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO, env=env
        )
        self.stdout: list[bytes] = []
        self.stderr: list[bytes] = []
        self.events: list[dict[str, Any]] = []
        self.killed_at: float | None = None
        self._cond = threading.Condition()
        self._readers = [
            threading.Thread(target=self._read, args=(self.proc.stdout, self.stdout, False), daemon=True),
            threading.Thread(target=self._read, args=(self.proc.stderr, self.stderr, True), daemon=True),
        ]
        for reader in self._readers:
            reader.start()
        ApplyRun.started_runs.append(self)

    @classmethod
    def reap_all(cls) -> None:
        while cls.started_runs:
            cls.started_runs.pop().kill()

    def _read(self, stream: Any, sink: list[bytes], parse: bool) -> None:
        for line in iter(stream.readline, b""):
            with self._cond:
                sink.append(line)
                if parse and line.startswith(b"{"):
                    try:
                        event = json.loads(line)
                    except ValueError:
                        event = None
                    if isinstance(event, dict):
                        event["_t"] = time.monotonic()
                        self.events.append(event)
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_event(self, match: Callable[[dict[str, Any]], bool], timeout: float = 600) -> dict[str, Any] | None:
        """The first event ``match`` accepts (waiting for it), or None if hactl ended first."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for event in self.events:
                    if match(event):
                        return event
                if self.proc.poll() is not None and all(not r.is_alive() for r in self._readers):
                    return None
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no matching event in {timeout:g}s\n{self.text()}")
                self._cond.wait(min(left, 0.5))

    def seen(self) -> list[dict[str, Any]]:
        """Every event read so far."""
        with self._cond:
            return list(self.events)

    def step_event(self, name: str, pattern: str, timeout: float = 600) -> dict[str, Any] | None:
        """The first ``step.start``/``step.end`` (``name``) of a step whose id matches ``pattern``."""
        rx = re.compile(pattern)
        return self.wait_event(
            lambda e: e.get("event") == name and bool(rx.search(str(e.get("step", "")))), timeout
        )

    def kill(self) -> None:
        """SIGKILL hactl (the process this object started), then reap it."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.killed_at = time.monotonic()
        self.finish(60)

    def finish(self, timeout: float = 900) -> int:
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.kill(self.proc.pid, signal.SIGKILL)
            rc = self.proc.wait(timeout=60)
        for reader in self._readers:
            reader.join(timeout=30)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()
        return rc

    def text(self) -> str:
        with self._cond:
            out = b"".join(self.stdout).decode(errors="replace")
            err = b"".join(self.stderr).decode(errors="replace")
        return f"exit {self.proc.poll()}\n--- stdout\n{out[-6000:]}\n--- stderr\n{err[-6000:]}"

    def human(self, tail: int = 3000) -> str:
        """stdout and the stderr lines that are not JSON events (what an operator reads)."""
        with self._cond:
            out = b"".join(self.stdout).decode(errors="replace")
            err = b"".join(line for line in self.stderr if not line.startswith(b"{"))
        return f"exit {self.proc.poll()}\n{out[-tail:]}\n{err.decode(errors='replace')[-tail:]}"

    def ended_steps(self) -> dict[str, str]:
        """step id → outcome of every ``step.end`` seen."""
        with self._cond:
            return {str(e["step"]): str(e.get("outcome")) for e in self.events if e.get("event") == "step.end"}


# -- the API through the load balancer --------------------------------------------------------


@dataclass
class ApiReader:
    """``GET https://HOST:PORT/readyz`` every ``period`` seconds (at most ``limit`` times) from a
    thread, until :meth:`stop`. Anonymous (``/readyz`` is public), TLS not verified: the reader
    only asks whether the API answers through the load balancer."""

    host: str
    port: int
    period: float = 1.0
    limit: int = 1200
    ok: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> ApiReader:
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def once(self) -> tuple[bool, str]:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        conn = http.client.HTTPSConnection(self.host, self.port, timeout=3, context=context)
        try:
            conn.request("GET", "/readyz")
            resp = conn.getresponse()
            body = resp.read(200).decode(errors="replace").strip()
            return resp.status == 200 and body == "ok", f"{resp.status} {body[:80]}"
        except (OSError, http.client.HTTPException) as exc:
            return False, f"{type(exc).__name__}: {exc}"[:120]
        finally:
            conn.close()

    def _loop(self) -> None:
        for _ in range(self.limit):
            good, why = self.once()
            if good:
                self.ok += 1
            else:
                self.failed += 1
                if len(self.errors) < 20:
                    self.errors.append(why)
            if self._stop.wait(self.period):
                return

    def summary(self) -> dict[str, Any]:
        return {"api_ok": self.ok, "api_errors": self.failed, "api_error_samples": self.errors[:5]}


# -- results ----------------------------------------------------------------------------------


def commit() -> str:
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                          cwd=REPO, check=False).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "hactl"],
                           capture_output=True, text=True, cwd=REPO, check=False).stdout.strip()
    return head + ("+dirty" if dirty else "")


def clip(text: str, head: int = 400, tail: int = 1100) -> str:
    """The start (what failed) and the end (hactl's last words) of a long message."""
    return text if len(text) <= head + tail else f"{text[:head]}\n[…]\n{text[-tail:]}"


def start_record() -> None:
    """A new out/reliability.json for a full run."""
    OUT.unlink(missing_ok=True)


def record(scenario: str, **fields: Any) -> None:
    """Merge one scenario's measurements into out/reliability.json (keyed by scenario)."""
    OUT.parent.mkdir(parents=True, exist_ok=True)
    try:
        data = json.loads(OUT.read_text())
    except (OSError, ValueError):
        data = {}
    data.setdefault("scenarios", {})
    data["scenarios"][scenario] = {
        **fields,
        "commit": commit(),
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "load1": round(os.getloadavg()[0], 1),
    }
    OUT.write_text(json.dumps(data, indent=2) + "\n")  # scenarios in the order they ran


# -- secrets held by the hosts ----------------------------------------------------------------

SCAN_DIRS = ("/etc/hactl", "/etc/kubernetes", "/tmp", "/root", "/var/tmp", "/run", "/var/lib/hactl")
SKIP_DIRS = ("/run/hactl-lab", "/etc/kubernetes/pki")


def scan_files(root: str, limit: int = 256 * 1024) -> Iterable[bytes]:
    for base in SCAN_DIRS:
        for dirpath, dirnames, filenames in os.walk(root + base):
            inner = dirpath[len(root):]
            dirnames[:] = [d for d in dirnames if not f"{inner}/{d}".startswith(SKIP_DIRS)]
            for name in filenames:
                path = os.path.join(dirpath, name)
                try:
                    if os.path.islink(path) or not os.path.isfile(path) or os.path.getsize(path) > limit:
                        continue
                    with open(path, "rb") as handle:
                        yield handle.read()
                except OSError:
                    continue


def scan_for_secrets(node_pids: Iterable[int]) -> set[bytes]:
    """Token- and key-shaped strings in every process' argv on this machine (the nodes' processes
    are visible from here) and in small files under :data:`SCAN_DIRS` inside each node."""
    blobs: list[bytes] = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                blobs.append(Path(f"/proc/{pid}/cmdline").read_bytes())
            except OSError:
                continue
    for node_pid in node_pids:
        blobs.extend(scan_files(f"/proc/{node_pid}/root"))
    found: set[bytes] = set()
    for blob in blobs:
        found.update(m.group(1) for m in TOKEN_RE.finditer(blob))
        found.update(m.group(1) for m in HEX64_RE.finditer(blob))
    return found


class SecretSampler:
    """:func:`scan_for_secrets` every ``period`` seconds in a thread; ``found`` accumulates."""

    def __init__(self, node_pids: Callable[[], list[int]], period: float = 0.3) -> None:
        self.node_pids = node_pids
        self.period = period
        self.found: set[bytes] = set()
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> SecretSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _loop(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(Exception):  # a node going away mid-scan: next time
                self.found |= scan_for_secrets(self.node_pids())
            self.samples += 1
            self._stop.wait(self.period)


HOST_KEY = "/etc/ssh/ssh_host_ed25519_key"


def restart_sshd(lab: Any, node: str, timeout: float = 30.0) -> None:
    """``systemctl restart ssh`` in ``node``, then make sure sshd listens again. Debian's
    ssh.service is Type=notify: systemctl (the real one and the lab's) returns once sshd has
    sent READY=1, which it does once it listens; the check stays as a guard."""
    res = lab.run(node, "systemctl restart ssh")
    assert res.returncode == 0, res.stderr
    deadline = time.monotonic() + timeout
    while '"sshd' not in lab.run(node, "ss -Hltnp").stdout:
        assert time.monotonic() < deadline, f"sshd on {node} does not listen {timeout:g}s after its restart"
        time.sleep(0.1)


def regenerate_host_key(lab: Any, node: str) -> dict[str, str]:
    """A new ed25519 host key on ``node`` (sshd restarted, listening again); the old key files'
    contents are returned for :func:`restore_host_key`."""
    old = {p: lab.read(node, p) for p in (HOST_KEY, HOST_KEY + ".pub")}
    regen = lab.run(node, f"rm -f {HOST_KEY} {HOST_KEY}.pub && ssh-keygen -q -t ed25519 -N '' -f {HOST_KEY}")
    assert regen.returncode == 0, regen.stderr
    restart_sshd(lab, node)
    return old


def restore_host_key(lab: Any, node: str, old: dict[str, str]) -> None:
    for path, content in old.items():
        lab.put(node, path, content, 0o644 if path.endswith(".pub") else 0o600)
    restart_sshd(lab, node)


def pem_bodies(pem: str) -> list[str]:
    """The base64 body lines of every PEM block in ``pem`` (what a leak would carry)."""
    return [line.strip() for line in pem.splitlines()
            if line.strip() and not line.startswith("-----")]


def markdown_table(path: Path = OUT) -> str:
    """docs/reliability.md's table from out/reliability.json:
    ``python -c 'from tests.lab.faultlib import markdown_table; print(markdown_table())'``."""
    data = json.loads(path.read_text())
    rows = ["| scenario | outcome | API errors through the LB (of checks) | time to converge s "
            "| scenario s | commit |", "|---|---|---|---|---|---|"]
    for name, r in sorted(data["scenarios"].items(), key=lambda item: item[1]["when"]):
        if "api_errors" in r:
            api = f"{r['api_errors']} of {r['api_errors'] + r['api_ok']}"
        else:
            api = "n/a (API not up yet)"
        took = r.get("seconds_to_converge", r.get("seconds_to_recover", "—"))
        outcome = r["outcome"]
        if outcome in ("FAILED", "NOT RUN"):
            took = "—"
            first = next((line.strip() for line in str(r.get("detail", "")).splitlines()
                          if line.strip()), "")
            outcome += f": {first[:90]}" if first else ""
        if r.get("kill_landed"):
            outcome += f" (kill landed {r['kill_landed']})"
        if r.get("apply_exit") is not None:
            outcome += f" (the faulted apply exited {r['apply_exit']})"
        rows.append(f"| {name} | {outcome} | {api} | {took} | {r.get('seconds', '—')} | `{r['commit']}` |")
    return "\n".join(rows)
