"""The kubelet stand-in's "container runtime": static Pods run as process groups.

Each static Pod's first container runs as ``command + args`` in its own session (so that it
survives the kubelet, as containers survive a kubelet restart under containerd). Its state is kept
in ``/run/hactl-kubelet/pods/<namespace>_<name>.json``: pid, the process start time (to tell a
recycled pid apart), the manifest hash and the restart count. A restarted kubelet adopts the
processes whose pid, start time and manifest hash still match.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from typing import Any

import yaml

from .kubeadm_common import P

STATE_DIR = "/run/hactl-kubelet/pods"
LOG_DIR = "/var/log/pods"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def proc_start_time(pid: int) -> str | None:
    """Field 22 of /proc/<pid>/stat (start time in clock ticks); None if gone or a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            stat = handle.read()
    except OSError:
        return None
    rest = stat.rsplit(")", 1)[-1].split()
    if not rest or rest[0] in ("Z", "X"):
        return None
    return rest[19]


@dataclass
class PodProc:
    key: str  # "<namespace>_<name>"
    name: str
    namespace: str
    manifest_hash: str
    argv: list[str]
    env: dict[str, str]
    pid: int = 0
    start_time: str = ""
    restarts: int = 0
    started_at: float = 0.0
    next_start: float = 0.0
    popen: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    pod: dict[str, Any] = field(default_factory=dict, repr=False)

    def alive(self) -> bool:
        if not self.pid:
            return False
        if self.popen is not None:
            return self.popen.poll() is None
        return proc_start_time(self.pid) == self.start_time

    def state(self) -> dict[str, Any]:
        return {"pid": self.pid, "startTime": self.start_time, "hash": self.manifest_hash,
                "restarts": self.restarts, "startedAt": self.started_at, "argv": self.argv}


def read_manifests(directory: str) -> dict[str, tuple[str, dict[str, Any]]]:
    """key -> (hash, pod) for every readable Pod manifest in ``directory``."""
    found: dict[str, tuple[str, dict[str, Any]]] = {}
    try:
        names = sorted(os.listdir(directory))
    except OSError:
        return found
    for name in names:
        if name.startswith(".") or not name.endswith((".yaml", ".yml", ".json")):
            continue
        try:
            with open(os.path.join(directory, name), "rb") as handle:
                raw = handle.read()
            pod = yaml.safe_load(raw)
        except (OSError, yaml.YAMLError):
            continue
        if not isinstance(pod, dict) or pod.get("kind") != "Pod":
            continue
        meta = pod.get("metadata") or {}
        key = f"{meta.get('namespace') or 'default'}_{meta.get('name', name)}"
        found[key] = (hashlib.sha256(raw).hexdigest()[:16], pod)
    return found


def container_argv(pod: dict[str, Any]) -> tuple[list[str], dict[str, str]]:
    containers = (pod.get("spec") or {}).get("containers") or [{}]
    c = containers[0]
    argv = [str(a) for a in (c.get("command") or [])] + [str(a) for a in (c.get("args") or [])]
    env = {str(e["name"]): str(e.get("value", "")) for e in c.get("env") or [] if "name" in e}
    return argv, env


class Runtime:
    def __init__(self, backoff_base: float = 1.0, backoff_max: float = 20.0) -> None:
        self.pods: dict[str, PodProc] = {}
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        os.makedirs(P(STATE_DIR), exist_ok=True)

    def _state_path(self, key: str) -> str:
        return os.path.join(P(STATE_DIR), f"{key}.json")

    def save(self, proc: PodProc) -> None:
        tmp = self._state_path(proc.key) + ".tmp"
        with open(tmp, "w") as handle:
            json.dump(proc.state(), handle)
        os.replace(tmp, self._state_path(proc.key))

    def adopt(self, manifests: dict[str, tuple[str, dict[str, Any]]]) -> None:
        """Take over pods a previous kubelet started, when they still run the same manifest."""
        for key, (digest, pod) in manifests.items():
            try:
                with open(self._state_path(key)) as handle:
                    state = json.load(handle)
            except (OSError, ValueError):
                continue
            argv, env = container_argv(pod)
            meta = pod.get("metadata") or {}
            proc = PodProc(key, str(meta.get("name")), str(meta.get("namespace") or "default"),
                           str(state.get("hash")), argv, env, int(state.get("pid") or 0),
                           str(state.get("startTime") or ""), int(state.get("restarts") or 0),
                           float(state.get("startedAt") or 0.0), pod=pod)
            if proc.alive():
                self.pods[key] = proc
                if proc.manifest_hash != digest:
                    self.stop(key)

    def start(self, key: str, digest: str, pod: dict[str, Any], restarts: int = 0) -> PodProc:
        argv, env = container_argv(pod)
        meta = pod.get("metadata") or {}
        proc = PodProc(key, str(meta.get("name")), str(meta.get("namespace") or "default"), digest,
                       argv, env, restarts=restarts, pod=pod)
        log_dir = P(f"{LOG_DIR}/{key}")
        os.makedirs(log_dir, exist_ok=True)
        container = ((pod.get("spec") or {}).get("containers") or [{}])[0].get("name", "main")
        log = open(os.path.join(log_dir, f"{container}.log"), "ab")  # noqa: SIM115 - handed to the child
        full_env = {"PATH": os.environ.get("PATH", DEFAULT_PATH), "HOME": "/root"}
        for name in ("HACTL_LAB_ROOT", "PYTHONPATH", "HACTL_LAB_KNOBS"):
            if name in os.environ:
                full_env[name] = os.environ[name]
        full_env.update(env)
        try:
            popen = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=full_env,
                                     start_new_session=True, cwd="/")
        except OSError as exc:
            log.write(f"hactl-kubelet: failed to start {argv[:1]}: {exc}\n".encode())
            log.close()
            proc.next_start = time.monotonic() + self.backoff(restarts)
            self.pods[key] = proc
            return proc
        log.close()
        proc.popen, proc.pid = popen, popen.pid
        proc.start_time = proc_start_time(popen.pid) or ""
        proc.started_at = time.time()
        self.pods[key] = proc
        self.save(proc)
        return proc

    def backoff(self, restarts: int) -> float:
        return float(min(self.backoff_max, self.backoff_base * (2 ** min(restarts, 10))))

    def stop(self, key: str, grace: float = 5.0) -> None:
        proc = self.pods.pop(key, None)
        if proc is not None and proc.alive():
            kill_group(proc.pid, grace, proc.popen)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._state_path(key))

    def sync(self, manifests: dict[str, tuple[str, dict[str, Any]]]) -> None:
        now = time.monotonic()
        for key in list(self.pods):
            if key not in manifests or self.pods[key].manifest_hash != manifests[key][0]:
                self.stop(key)
        for key, (digest, pod) in manifests.items():
            proc = self.pods.get(key)
            if proc is None:
                self.start(key, digest, pod)
            elif not proc.alive():
                if not proc.next_start:
                    ran = time.time() - proc.started_at
                    restarts = 0 if ran > 60 else proc.restarts + 1
                    proc.restarts = restarts
                    proc.next_start = now + self.backoff(restarts)
                elif now >= proc.next_start:
                    self.start(key, digest, pod, restarts=proc.restarts)


def kill_group(pid: int, grace: float = 5.0, popen: subprocess.Popen[bytes] | None = None) -> None:
    start = proc_start_time(pid)
    try:
        os.killpg(pid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if popen is not None:
            if popen.poll() is not None:
                return
        elif proc_start_time(pid) != start or start is None:
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    if popen is not None:
        popen.wait(timeout=5)


def stop_all_recorded(grace: float = 5.0) -> list[str]:
    """What ``kubeadm reset`` does to the runtime: stop every recorded static Pod process."""
    stopped: list[str] = []
    directory = P(STATE_DIR)
    try:
        names = os.listdir(directory)
    except OSError:
        return stopped
    for name in names:
        if not name.endswith(".json"):
            continue
        try:
            with open(os.path.join(directory, name)) as handle:
                state = json.load(handle)
        except (OSError, ValueError):
            continue
        pid = int(state.get("pid") or 0)
        if pid and proc_start_time(pid) == state.get("startTime"):
            kill_group(pid, grace)
            stopped.append(name[:-5])
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(directory, name))
    return stopped
