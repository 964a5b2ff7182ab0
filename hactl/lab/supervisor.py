"""The node's service manager: PID 1's other half. Starts, stops, reloads and restarts units.

Runs inside lab nodes under Debian's ``/usr/bin/python3``: standard library only. The node init
(:mod:`hactl.lab.nodeinit`) calls :meth:`Supervisor.run` as PID 1, so the main thread is the
zombie reaper for the whole node; the ``systemctl`` stand-in talks to :mod:`hactl.lab.control`
over a unix socket. Each unit's main process runs in its own session (process group): stopping a
``control-group``/``mixed`` unit signals the group, ``process`` only the main PID.

``Type=notify`` units get ``NOTIFY_SOCKET`` (:data:`NOTIFY_SOCKET`, one datagram socket for the
node, as systemd's ``/run/systemd/notify``): their start job waits until the main process sends
``READY=1``, exits (the job fails: ``exit-code``/``signal``, ``protocol`` for a clean exit), or
``TimeoutStartSec=`` passes (default 90 s; ``0``/``infinity``: none; the job fails with
``timeout`` and the service is terminated like a stop). ``STOPPING=1``, ``MAINPID=``,
``STATUS=`` and ``NotifyAccess=`` are understood as systemd does (``service_notify_message``).
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import signal
import socket
import struct
import subprocess
import threading
import time
from collections import deque
from dataclasses import dataclass, field

from hactl.lab import units as u

LOG_DIR = "/var/log/hactl-lab"
BASE_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
CLEAN_SIGNALS = {signal.SIGHUP, signal.SIGINT, signal.SIGTERM, signal.SIGPIPE}
NOTIFY_SOCKET = "/run/systemd/notify"
DEFAULT_TIMEOUT = 90.0  # DefaultTimeoutStartSec= of systemd
CANCELED = "canceled"
#: systemctl's words for a failed job's service result (systemd's bus-wait-for-jobs.c)
EXPLANATIONS = {
    "resources": "of unavailable resources or another system error",
    "protocol": "the service did not take the steps required by its unit configuration",
    "timeout": "a timeout was exceeded",
    "exit-code": "the control process exited with error code",
    "signal": "a fatal signal was delivered to the control process",
    "core-dump": "a fatal signal was delivered causing the control process to dump core",
}


@dataclass
class StartJob:
    """A start job under way: a second ``systemctl start`` of the unit waits for its result."""

    done: threading.Event = field(default_factory=threading.Event)
    result: tuple[int, str] = (1, "")


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
    sid: int | None = None  # the session (process group) of the main process as spawned
    control_pid: int | None = None  # the running Exec*= helper, if any
    notify_state: str = ""  # "", ready, reloading, stopping: the last READY/RELOADING/STOPPING
    status_text: str = ""  # STATUS=
    cancel: bool = False  # a stop job replaced the start job that is waiting for READY=1
    start_job: StartJob | None = None  # the start job under way; another start waits for its end

    @property
    def notify_type(self) -> bool:
        return self.unit.get("Service", "Type", "simple") == "notify"

    def notify_access(self) -> str:
        return self.unit.get("Service", "NotifyAccess") or ("main" if self.notify_type else "none")

    def timeout_start(self) -> float | None:
        """TimeoutStartSec= (or TimeoutSec=), default 90 s; None for ``0``/``infinity``."""
        text = self.unit.get("Service", "TimeoutStartSec") or self.unit.get("Service", "TimeoutSec")
        seconds = u.parse_seconds(text, DEFAULT_TIMEOUT)
        return None if seconds <= 0 or text.strip() == "infinity" else seconds


class Supervisor:
    def __init__(self, notify_path: str = NOTIFY_SOCKET) -> None:
        self.notify_path = notify_path
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
                    svc.main_pid = svc.sid = proc.pid
                    svc.notify_state, svc.status_text = "", ""
                else:
                    svc.control_pid = proc.pid
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
        waiting = svc.notify_type and (svc.state, svc.sub) == ("activating", "start") and svc.notify_state != "ready"
        if waiting:
            # Type=notify: "The service has never been and will never be active" (service.c)
            self._log(svc, f"Main process exited, code={'killed' if code < 0 else 'exited'}, status={abs(code)}")
            if clean:
                svc.result = "protocol"
            self._log(svc, f"Failed with result '{svc.result}'.")
        self._settle(svc, self._should_restart(svc, code, clean and not waiting, svc.result), clean and not waiting)

    def _settle(self, svc: Service, restart: bool, clean: bool) -> None:
        """With the lock held: the main process is gone for good; dead, failed or auto-restart."""
        if restart:
            svc.state, svc.sub = "activating", "auto-restart"
            delay = u.parse_seconds(svc.unit.get("Service", "RestartSec"), 0.1)
            timer = threading.Timer(delay, self._auto_restart, (svc,))
            timer.daemon = True
            svc.restart_timer = timer
            timer.start()
        else:
            svc.state, svc.sub = ("inactive", "dead") if clean else ("failed", "failed")
        svc.since = time.time()

    def _should_restart(self, svc: Service, code: int | None, clean: bool, result: str = "") -> bool:
        policy = svc.unit.get("Service", "Restart", "no")
        if result in {"timeout", "protocol"}:  # no exit status of its own: systemd's table
            return policy in {"always", "on-failure"} or (policy == "on-abnormal" and result == "timeout")
        assert code is not None
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

    # -- sd_notify -------------------------------------------------------------------------

    def bind_notify(self) -> socket.socket:
        """The node's notify socket, bound before any unit starts (a READY=1 sent to a path that
        is not bound yet would be lost, and the start would wait for its timeout)."""
        os.makedirs(os.path.dirname(self.notify_path), exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.notify_path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        sock.bind(self.notify_path)
        os.chmod(self.notify_path, 0o777)  # etcd runs as User=etcd
        return sock

    def serve_notify(self, sock: socket.socket) -> None:
        """Receive sd_notify() datagrams (with the sender's credentials) for ever."""
        creds_size = struct.calcsize("3i")
        while True:
            try:
                # room for the credentials only: passed file descriptors (FDSTORE=1) are dropped
                data, ancdata, _, _ = sock.recvmsg(4096, socket.CMSG_SPACE(creds_size))
            except InterruptedError:
                continue
            pid = uid = -1
            for level, kind, payload in ancdata:
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS and len(payload) >= creds_size:
                    pid, uid, _ = struct.unpack("3i", payload[:creds_size])
            if pid > 0:
                try:
                    self.notify(pid, uid, data)
                except Exception:  # a bad datagram must not end the listener
                    continue

    def _notify_target(self, pid: int) -> Service | None:
        svc = self.by_main.get(pid)
        if svc is not None:
            return svc
        try:
            sid = os.getsid(pid)
        except OSError:
            sid = None  # gone already: attributed only when it was the main or a control process
        for svc in self.services.values():
            if pid == svc.control_pid or (sid is not None and svc.main_pid is not None and sid == svc.sid):
                return svc
        return None

    def notify(self, pid: int, uid: int, data: bytes) -> None:
        """One sd_notify() message from ``pid``: systemd's ``service_notify_message``."""
        tags = [t for t in data.decode("utf-8", "replace").split("\n") if t]
        with self.cond:
            svc = self._notify_target(pid)
            if svc is None:
                return
            access = svc.notify_access()
            if access == "none":
                self._log(svc, f"Got notification message from PID {pid}, but reception is disabled.")
                return
            if access in {"main", "exec"} and pid != svc.main_pid and not (access == "exec" and pid == svc.control_pid):
                known = f"main PID {svc.main_pid}" if svc.main_pid else "main PID which is currently not known"
                self._log(svc, f"Got notification message from PID {pid}, but reception only permitted for {known}")
                return
            mainpid = next((t[8:] for t in tags if t.startswith("MAINPID=")), None)
            if mainpid is not None and svc.state in {"activating", "active", "reloading"} and svc.sub != "auto-restart":
                if not mainpid.isdigit():
                    self._log(svc, f"Failed to parse MAINPID= field in notification message, ignoring: MAINPID={mainpid}")
                elif int(mainpid) != svc.main_pid and (uid == 0 or self._same_session(svc, int(mainpid))):
                    if svc.main_pid is not None:
                        self.by_main.pop(svc.main_pid, None)
                    svc.main_pid = int(mainpid)
                    self.by_main[svc.main_pid] = svc
            for tag in reversed(tags):  # READY=/STOPPING=/RELOADING=: the last one wins
                if tag in {"READY=1", "RELOADING=1", "STOPPING=1"}:
                    svc.notify_state = {"READY=1": "ready", "RELOADING=1": "reloading", "STOPPING=1": "stopping"}[tag]
                    if tag == "STOPPING=1" and (svc.state, svc.sub) == ("active", "running"):
                        svc.state, svc.sub = "deactivating", "stop-sigterm"
                    break
            status = next((t[7:] for t in reversed(tags) if t.startswith("STATUS=")), None)
            if status is not None:
                svc.status_text = status
            self.cond.notify_all()

    @staticmethod
    def _same_session(svc: Service, pid: int) -> bool:
        try:
            return svc.sid is not None and os.getsid(pid) == svc.sid
        except OSError:
            return False

    # -- jobs ------------------------------------------------------------------------------

    def _run_helpers(self, svc: Service, key: str) -> tuple[bool, str]:
        env = self.environment(svc)
        if svc.notify_access() in {"all", "exec"}:
            env["NOTIFY_SOCKET"] = self.notify_path
        for line in svc.unit.getlist("Service", key):
            cmd = u.parse_command(u.specifiers(line, svc.name), env)
            try:
                pid = self.spawn(svc, cmd, env, main=False)
            except OSError as exc:
                if cmd.ignore_failure:
                    continue
                return False, f"{key} {cmd.argv[:1]}: {exc}"
            code = self.wait_pid(pid)
            with self.lock:
                if svc.control_pid == pid:
                    svc.control_pid = None
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
        with self.lock:
            running = svc.start_job
        if running is not None and not _auto:  # a start job is under way: this one joins it
            running.done.wait()
            return running.result
        with svc.job:
            job = StartJob()
            with self.lock:
                svc.start_job = job
            try:
                job.result = self._start(svc, _auto)
            finally:
                with self.lock:
                    svc.start_job = None
                job.done.set()
            return job.result

    def _start(self, svc: Service, _auto: bool) -> tuple[int, str]:
        with self.lock:
            if svc.main_pid is not None or (svc.state == "active" and svc.sub == "exited"):
                return 0, ""
            if _auto and (svc.sub != "auto-restart" or svc.stopping):
                return 0, ""  # stopped (or started) while the restart timer was firing
            if not _auto and svc.restart_timer is not None:
                svc.restart_timer.cancel()
            svc.stopping = svc.cancel = False
            svc.result = "success"
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
        settled = False  # the notify wait already decided state and result
        try:
            ok, why = self._run_helpers(svc, "ExecStartPre")
            if ok:
                ok, why, settled = self._exec_start(svc)
            if why == CANCELED:
                return 1, f"Job for {svc.name} canceled."
            if ok:
                with self.lock:
                    if svc.main_pid is not None:
                        svc.sub = "start-post" if svc.state == "activating" else svc.sub
                ok, why = self._run_helpers(svc, "ExecStartPost")
        except (OSError, KeyError, ValueError) as exc:
            ok, why = False, str(exc)
        with self.lock:
            if ok and svc.main_pid is not None and (svc.state, svc.sub) == ("activating", "start-post"):
                svc.state, svc.sub = "active", "running"
            if settled:
                return 1, self._failed_msg(svc, "start")
            svc.since = time.time()
            if not ok:
                svc.result = "exit-code"
                if svc.main_pid is not None:
                    self._signal(svc, signal.SIGKILL, group=True)
                svc.state, svc.sub = "failed", "failed"
                self._log(svc, f"start failed: {why}")
                return 1, self._failed_msg(svc, "start")
        return 0, ""

    def _exec_start(self, svc: Service) -> tuple[bool, str, bool]:
        """(ok, why, settled): ``settled`` when a notify start failed and its state is decided."""
        env = self.environment(svc)
        lines = svc.unit.getlist("Service", "ExecStart")
        if not lines:
            return False, "no ExecStart=", False
        if svc.unit.get("Service", "Type", "simple") == "oneshot":
            ok, why = self._run_helpers(svc, "ExecStart")
            with self.lock:
                remain = svc.unit.get("Service", "RemainAfterExit", "no") in {"yes", "true", "1", "on"}
                if ok:
                    svc.state, svc.sub = ("active", "exited") if remain else ("inactive", "dead")
            return ok, why, False
        cmd = u.parse_command(u.specifiers(lines[-1], svc.name), env)
        if svc.notify_access() != "none":
            env["NOTIFY_SOCKET"] = self.notify_path
        with self.lock:
            svc.sub = "start"
        pid = self.spawn(svc, cmd, env, main=True)
        with self.lock:
            if pid not in self.by_main:  # already gone: _main_exited ran
                if svc.notify_type:  # before READY=1: failed, or failed and auto-restarting
                    return False, "main process exited", True
                return svc.state != "failed", "main process exited", False
            if not svc.notify_type:
                svc.state, svc.sub = "active", "running"
                return True, "", False
        return self._await_ready(svc)

    def _await_ready(self, svc: Service) -> tuple[bool, str, bool]:
        """Type=notify: wait for READY=1, the main process's end, a stop job, or TimeoutStartSec=."""
        timeout = svc.timeout_start()
        deadline = None if timeout is None else time.monotonic() + timeout
        with self.cond:
            while True:
                if svc.cancel:
                    return False, CANCELED, False
                if svc.notify_state == "ready":
                    if svc.main_pid is not None:
                        svc.sub = "start-post"  # READY=1 → ExecStartPost= → running
                    return True, "", False
                if svc.main_pid is None:  # exited before READY=1: _main_exited settled it
                    self._kill_leftovers(svc)
                    return False, f"main process exited ({svc.result})", True
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    break
                self.cond.wait(remaining)
            self._log(svc, "start operation timed out. Terminating.")
            svc.stopping = True
            svc.state, svc.sub = "deactivating", "stop-sigterm"
        self._terminate(svc)
        self._run_helpers(svc, "ExecStopPost")
        with self.lock:
            svc.stopping = False
            svc.result = "timeout"
            self._log(svc, "Failed with result 'timeout'.")
            self._settle(svc, self._should_restart(svc, None, False, "timeout"), clean=False)
        return False, "timeout", True

    def _kill_leftovers(self, svc: Service) -> None:
        """After the main process: the rest of its process group (systemd kills the cgroup)."""
        if svc.sid and svc.unit.get("Service", "KillMode", "control-group") in {"control-group", "mixed"}:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(svc.sid, signal.SIGKILL)

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

    def _terminate(self, svc: Service) -> None:
        """KillSignal= to the main process (or its group, per KillMode=), SIGKILL after
        TimeoutStopSec=; returns once the main process is gone. ``svc.stopping`` is set."""
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

    def stop(self, name: str) -> tuple[int, str]:
        svc = self.service(name)
        if not svc.unit.found and svc.main_pid is None:
            return 5, f"Failed to stop {svc.name}: Unit {svc.name} not loaded."
        with self.cond:  # the stop job replaces a start job still waiting for READY=1
            if svc.state == "activating" and svc.sub in {"start-pre", "start"}:
                svc.cancel = True
                self.cond.notify_all()
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
            self._terminate(svc)
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
        if svc.result == "start-limit-hit":
            return f"Job for {svc.name} failed because the service was started too often ({verb})."
        because = EXPLANATIONS.get(svc.result, EXPLANATIONS["exit-code"])
        return (
            f"Job for {svc.name} failed because {because}.\n"
            f'See "systemctl status {svc.name}" and "journalctl -xeu {svc.name}" for details.'
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
        threading.Thread(target=self.serve_notify, args=(self.bind_notify(),), daemon=True).start()
        threading.Thread(target=self.boot, daemon=True).start()
        self.reap_forever()
