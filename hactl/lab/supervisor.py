"""The node's service manager: PID 1's other half. Starts, stops, reloads and restarts units.

Runs inside lab nodes under Debian's ``/usr/bin/python3``: standard library only. The node init
(:mod:`hactl.lab.nodeinit`) calls :meth:`Supervisor.run` as PID 1, so the main thread is the
zombie reaper for the whole node; the ``systemctl`` stand-in talks to :mod:`hactl.lab.control`
over a unix socket. Each unit's main process runs in its own session (process group): stopping a
``control-group``/``mixed`` unit signals the group, ``process`` only the main PID.
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import signal
import subprocess
import threading
import time
from collections import deque
from dataclasses import dataclass, field

from hactl.lab import units as u

LOG_DIR = "/var/log/hactl-lab"
BASE_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
CLEAN_SIGNALS = {signal.SIGHUP, signal.SIGINT, signal.SIGTERM, signal.SIGPIPE}


@dataclass
class Service:
    name: str
    unit: u.UnitFile
    state: str = "inactive"  # inactive | activating | active | deactivating | failed
    sub: str = "dead"
    main_pid: int | None = None
    result: str = "success"
    exit_code: int | None = None
    exit_signal: int | None = None
    n_restarts: int = 0
    since: float = 0.0
    stopping: bool = False
    restart_timer: threading.Timer | None = None
    starts: deque[float] = field(default_factory=lambda: deque(maxlen=64))
    job: threading.Lock = field(default_factory=threading.Lock)


class Supervisor:
    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.cond = threading.Condition(self.lock)
        self.services: dict[str, Service] = {}
        self.children: dict[int, subprocess.Popen[bytes]] = {}
        self.exited: dict[int, int] = {}
        self.by_main: dict[int, Service] = {}

    # -- processes -------------------------------------------------------------------------

    def spawn(self, svc: Service, cmd: u.Command, env: dict[str, str], main: bool) -> int:
        unit = svc.unit
        user = unit.get("Service", "User") if not cmd.privileged else ""
        group = unit.get("Service", "Group") if not cmd.privileged else ""
        kwargs: dict[str, object] = {}
        if user and user != "root":
            entry = pwd.getpwnam(user)
            kwargs["user"] = entry.pw_uid
            kwargs["group"] = grp.getgrnam(group).gr_gid if group else entry.pw_gid
            kwargs["extra_groups"] = os.getgrouplist(user, entry.pw_gid)
        elif group:
            kwargs["group"] = grp.getgrnam(group).gr_gid
        cwd = u.specifiers(unit.get("Service", "WorkingDirectory"), svc.name).lstrip("-") or "/"
        os.makedirs(LOG_DIR, exist_ok=True)
        log = os.open(os.path.join(LOG_DIR, svc.name + ".log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
        try:
            with self.lock:
                proc = subprocess.Popen(  # type: ignore[call-overload]
                    cmd.argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env,
                    cwd=cwd, start_new_session=True, close_fds=True, **kwargs,
                )
                self.children[proc.pid] = proc
                if main:
                    self.by_main[proc.pid] = svc
                pid: int = proc.pid
                return pid
        finally:
            os.close(log)

    def wait_pid(self, pid: int, timeout: float | None = None) -> int | None:
        """Exit code (negative: signal) of a helper process, or None on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self.cond:
            while pid not in self.exited:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None
                self.cond.wait(remaining)
            return self.exited.pop(pid)

    def reap_forever(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, 0)
            except ChildProcessError:
                time.sleep(0.05)
                continue
            except InterruptedError:
                continue
            code = os.waitstatus_to_exitcode(status)
            with self.cond:
                proc = self.children.pop(pid, None)
                if proc is not None:
                    proc.returncode = code
                svc = self.by_main.pop(pid, None)
                if proc is not None and svc is None:
                    self.exited[pid] = code
                if svc is not None:
                    self._main_exited(svc, code)
                self.cond.notify_all()

    # -- unit state ------------------------------------------------------------------------

    def service(self, name: str, reload: bool = False) -> Service:
        name = u.resolve_alias(u.normalize(name))
        with self.lock:
            svc = self.services.get(name)
            if svc is None:
                svc = self.services[name] = Service(name, u.load(name))
            elif reload:
                svc.unit = u.load(name)
            return svc

    def daemon_reload(self) -> None:
        with self.lock:
            for svc in self.services.values():
                svc.unit = u.load(svc.name)

    def environment(self, svc: Service) -> dict[str, str]:
        unit = svc.unit
        env = dict(BASE_ENV)
        user = unit.get("Service", "User")
        if user:
            entry = pwd.getpwnam(user)
            env.update(HOME=entry.pw_dir, USER=user, LOGNAME=user, SHELL=entry.pw_shell)
        for value in unit.getlist("Service", "Environment"):
            env.update(u.parse_env_assignments(u.specifiers(value, svc.name)))
        for value in unit.getlist("Service", "EnvironmentFile"):
            optional = value.startswith("-")
            path = u.specifiers(value.lstrip("-"), svc.name)
            try:
                env.update(u.read_env_file(path))
            except OSError:
                if not optional:
                    raise
        if svc.main_pid:
            env["MAINPID"] = str(svc.main_pid)
        return env

    def _main_exited(self, svc: Service, code: int) -> None:
        """Called with the lock held when a unit's main process ends."""
        svc.main_pid = None
        svc.exit_code = code if code >= 0 else None
        svc.exit_signal = -code if code < 0 else None
        if svc.stopping:
            return
        ok_codes, ok_signals = u.parse_status_set(svc.unit.getlist("Service", "SuccessExitStatus"))
        clean = code == 0 or code in ok_codes or (code < 0 and (-code in CLEAN_SIGNALS or -code in ok_signals))
        svc.result = "success" if clean else ("signal" if code < 0 else "exit-code")
        if self._should_restart(svc, code, clean):
            svc.state, svc.sub = "activating", "auto-restart"
            delay = u.parse_seconds(svc.unit.get("Service", "RestartSec"), 0.1)
            timer = threading.Timer(delay, self._auto_restart, (svc,))
            timer.daemon = True
            svc.restart_timer = timer
            timer.start()
        else:
            svc.state, svc.sub = ("inactive", "dead") if clean else ("failed", "failed")
        svc.since = time.time()

    def _should_restart(self, svc: Service, code: int, clean: bool) -> bool:
        policy = svc.unit.get("Service", "Restart", "no")
        prevent_codes, prevent_signals = u.parse_status_set(svc.unit.getlist("Service", "RestartPreventExitStatus"))
        if (code >= 0 and code in prevent_codes) or (code < 0 and -code in prevent_signals):
            return False
        unclean_signal = code < 0 and not clean
        return {
            "always": True,
            "on-success": clean,
            "on-failure": not clean,
            "on-abnormal": unclean_signal,
            "on-abort": unclean_signal,
            "on-watchdog": False,
        }.get(policy, False)

    def _auto_restart(self, svc: Service) -> None:
        with self.lock:
            if svc.sub != "auto-restart" or svc.stopping:
                return
            svc.n_restarts += 1
        self.start(svc.name, _auto=True)

    # -- jobs ------------------------------------------------------------------------------

    def _run_helpers(self, svc: Service, key: str) -> tuple[bool, str]:
        env = self.environment(svc)
        for line in svc.unit.getlist("Service", key):
            cmd = u.parse_command(u.specifiers(line, svc.name), env)
            try:
                pid = self.spawn(svc, cmd, env, main=False)
            except OSError as exc:
                if cmd.ignore_failure:
                    continue
                return False, f"{key} {cmd.argv[:1]}: {exc}"
            code = self.wait_pid(pid)
            if code != 0 and not cmd.ignore_failure:
                return False, f"{key} exited with status {code}"
        return True, ""

    def _start_limit_hit(self, svc: Service) -> bool:
        interval = u.parse_seconds(svc.unit.get("Unit", "StartLimitIntervalSec"), 10.0)
        burst = int(svc.unit.get("Unit", "StartLimitBurst", "5") or 5)
        now = time.monotonic()
        svc.starts.append(now)
        recent = [t for t in svc.starts if now - t <= interval]
        return interval > 0 and len(recent) > burst

    def start(self, name: str, _auto: bool = False) -> tuple[int, str]:
        svc = self.service(name)
        if svc.unit.masked:
            return 1, f"Failed to start {svc.name}: Unit {svc.name} is masked."
        if not svc.unit.found:
            return 5, f"Failed to start {svc.name}: Unit {svc.name} not found."
        with svc.job:
            with self.lock:
                if svc.main_pid is not None or (svc.state == "active" and svc.sub == "exited"):
                    return 0, ""
                if _auto and (svc.sub != "auto-restart" or svc.stopping):
                    return 0, ""  # stopped (or started) while the restart timer was firing
                if not _auto and svc.restart_timer is not None:
                    svc.restart_timer.cancel()
                svc.stopping = False
                if self._start_limit_hit(svc):
                    svc.state, svc.sub, svc.result = "failed", "failed", "start-limit-hit"
                    return 1, self._failed_msg(svc, "start")
            for cond in svc.unit.getlist("Unit", "ConditionPathExists"):
                negate = cond.startswith("!")
                if os.path.exists(cond.lstrip("!")) == negate:
                    with self.lock:
                        svc.state, svc.sub, svc.since = "inactive", "dead", time.time()
                    return 0, ""
            with self.lock:
                svc.state, svc.sub = "activating", "start-pre"
            for rdir in " ".join(svc.unit.getlist("Service", "RuntimeDirectory")).split():
                path = os.path.join("/run", rdir)
                os.makedirs(path, exist_ok=True)
                os.chmod(path, int(svc.unit.get("Service", "RuntimeDirectoryMode", "0755"), 8))
                user = svc.unit.get("Service", "User")
                if user:
                    entry = pwd.getpwnam(user)
                    os.chown(path, entry.pw_uid, entry.pw_gid)
            try:
                ok, why = self._run_helpers(svc, "ExecStartPre")
                if ok:
                    ok, why = self._exec_start(svc)
                if ok:
                    ok, why = self._run_helpers(svc, "ExecStartPost")
            except (OSError, KeyError, ValueError) as exc:
                ok, why = False, str(exc)
            with self.lock:
                svc.since = time.time()
                if not ok:
                    svc.result = "exit-code"
                    if svc.main_pid is not None:
                        self._signal(svc, signal.SIGKILL, group=True)
                    svc.state, svc.sub = "failed", "failed"
                    self._log(svc, f"start failed: {why}")
                    return 1, self._failed_msg(svc, "start")
            return 0, ""

    def _exec_start(self, svc: Service) -> tuple[bool, str]:
        env = self.environment(svc)
        lines = svc.unit.getlist("Service", "ExecStart")
        if not lines:
            return False, "no ExecStart="
        if svc.unit.get("Service", "Type", "simple") == "oneshot":
            ok, why = self._run_helpers(svc, "ExecStart")
            with self.lock:
                remain = svc.unit.get("Service", "RemainAfterExit", "no") in {"yes", "true", "1", "on"}
                if ok:
                    svc.state, svc.sub = ("active", "exited") if remain else ("inactive", "dead")
            return ok, why
        cmd = u.parse_command(u.specifiers(lines[-1], svc.name), env)
        pid = self.spawn(svc, cmd, env, main=True)
        with self.lock:
            if pid in self.by_main:
                svc.main_pid = pid
                svc.state, svc.sub = "active", "running"
            else:  # already gone: _main_exited ran
                return svc.state != "failed", "main process exited"
        return True, ""

    def _signal(self, svc: Service, sig: int, group: bool) -> None:
        pid = svc.main_pid
        if pid is None:
            return
        try:
            if group:
                os.killpg(pid, sig)
            else:
                os.kill(pid, sig)
        except ProcessLookupError:
            pass

    def stop(self, name: str) -> tuple[int, str]:
        svc = self.service(name)
        if not svc.unit.found and svc.main_pid is None:
            return 5, f"Failed to stop {svc.name}: Unit {svc.name} not loaded."
        with svc.job:
            with self.lock:
                svc.stopping = True
                if svc.restart_timer is not None:
                    svc.restart_timer.cancel()
                if svc.main_pid is None:
                    if svc.state != "failed":
                        svc.state, svc.sub = "inactive", "dead"
                    svc.stopping = False
                    return 0, ""
                svc.state, svc.sub = "deactivating", "stop"
            self._run_helpers(svc, "ExecStop")
            mode = svc.unit.get("Service", "KillMode", "control-group")
            sig = getattr(signal, svc.unit.get("Service", "KillSignal", "SIGTERM"), signal.SIGTERM)
            timeout = u.parse_seconds(svc.unit.get("Service", "TimeoutStopSec"), 90.0)
            pgid = svc.main_pid
            with self.lock:
                if mode != "none":
                    self._signal(svc, sig, group=mode == "control-group")
                    self._signal(svc, signal.SIGCONT, group=mode == "control-group")
                deadline = time.monotonic() + timeout
                while svc.main_pid is not None and time.monotonic() < deadline:
                    self.cond.wait(deadline - time.monotonic())
                if svc.main_pid is not None:
                    self._signal(svc, signal.SIGKILL, group=mode != "process")
                    while svc.main_pid is not None:
                        self.cond.wait(1.0)
            if mode in {"control-group", "mixed"} and pgid:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pgid, signal.SIGKILL)
            self._run_helpers(svc, "ExecStopPost")
            for rdir in " ".join(svc.unit.getlist("Service", "RuntimeDirectory")).split():
                subprocess.run(["rm", "-rf", "--", os.path.join("/run", rdir)], check=False)
            with self.lock:
                svc.state, svc.sub, svc.since = "inactive", "dead", time.time()
                svc.stopping = False
        return 0, ""

    def reload(self, name: str) -> tuple[int, str]:
        svc = self.service(name)
        if not svc.unit.found:
            return 5, f"Failed to reload {svc.name}: Unit {svc.name} not found."
        if not svc.unit.getlist("Service", "ExecReload"):
            return 1, f"Failed to reload {svc.name}: Job type reload is not applicable for unit {svc.name}."
        if svc.state != "active":
            return 1, f"Failed to reload {svc.name}: Unit {svc.name} is not active."
        with svc.job:
            with self.lock:
                svc.sub = "reload"
            ok, why = self._run_helpers(svc, "ExecReload")
            with self.lock:
                svc.sub = "running" if svc.main_pid else svc.sub
            if not ok:
                self._log(svc, f"reload failed: {why}")
                return 1, self._failed_msg(svc, "reload")
        return 0, ""

    def _failed_msg(self, svc: Service, verb: str) -> str:
        return (
            f"Job for {svc.name} failed because the control process exited with error code.\n"
            f'See "systemctl status {svc.name}" and "journalctl -xeu {svc.name}" for details.'
            if svc.result != "start-limit-hit"
            else f"Job for {svc.name} failed because the service was started too often ({verb})."
        )

    def _log(self, svc: Service, text: str) -> None:
        os.makedirs(LOG_DIR, exist_ok=True)
        with open(os.path.join(LOG_DIR, svc.name + ".log"), "a", encoding="utf-8") as handle:
            handle.write(f"{time.strftime('%b %d %H:%M:%S')} systemd[1]: {svc.name}: {text}\n")

    def boot(self) -> None:
        """Start ``ssh.service`` first, then every other enabled unit in parallel."""
        wanted = u.wanted_units("multi-user.target")
        first = [name for name in wanted if name in {"ssh.service", "sshd.service"}]
        for name in first:
            self.start(name)
        threads = [threading.Thread(target=self.start, args=(name,), daemon=True) for name in wanted if name not in first]
        for thread in threads:
            thread.start()

    def run(self) -> None:
        from hactl.lab.control import serve

        threading.Thread(target=serve, args=(self,), daemon=True).start()
        threading.Thread(target=self.boot, daemon=True).start()
        self.reap_forever()
