"""The systemctl stand-in's unit-file handling and restart policy (pure parts, no node needed)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from hactl.lab import units as u
from hactl.lab.control import _split
from hactl.lab.supervisor import Service, Supervisor

HAPROXY_ENV = 'Environment="CONFIG=/etc/haproxy/haproxy.cfg" "PIDFILE=/run/haproxy.pid" "EXTRAOPTS=-S /run/haproxy-master.sock"'


def _unit(text: str, name: str = "x.service") -> u.UnitFile:
    unit = u.UnitFile(name, path="/lib/systemd/system/" + name)
    u._parse_into(text, unit.sections)
    return unit


def test_haproxy_exec_lines_expand_like_systemd() -> None:
    env = u.parse_env_assignments(HAPROXY_ENV.split("=", 1)[1])
    assert env["EXTRAOPTS"] == "-S /run/haproxy-master.sock"
    start = u.parse_command("/usr/sbin/haproxy -Ws -f $CONFIG -p $PIDFILE $EXTRAOPTS", env)
    assert start.argv == ["/usr/sbin/haproxy", "-Ws", "-f", "/etc/haproxy/haproxy.cfg", "-p",
                          "/run/haproxy.pid", "-S", "/run/haproxy-master.sock"]
    reload = u.parse_command("/bin/kill -USR2 $MAINPID", {**env, "MAINPID": "42"})
    assert reload.argv == ["/bin/kill", "-USR2", "42"]


def test_exec_prefixes_quotes_and_braced_variables() -> None:
    cmd = u.parse_command("-/bin/sh -c 'echo ${A}-$B' $EMPTY", {"A": "x y", "B": "z"})
    assert cmd.ignore_failure and not cmd.privileged
    assert cmd.argv == ["/bin/sh", "-c", "echo x y-z"]
    assert u.parse_command("+/bin/true", {}).privileged


def test_sections_lists_resets_and_continuations() -> None:
    unit = _unit(
        "[Service]\nExecStart=/bin/a\n# comment\nExecStart=\nExecStart=/bin/b \\\n  --flag\n"
        "Restart=always\nRestart=no\n[Install]\nWantedBy=multi-user.target\n"
    )
    assert unit.getlist("Service", "ExecStart") == ["/bin/b  --flag"]
    assert unit.get("Service", "Restart") == "no"
    assert unit.getlist("Install", "WantedBy") == ["multi-user.target"]


def test_env_file_and_specifiers(tmp_path: Path) -> None:
    path = tmp_path / "etcd"
    path.write_text('# c\nETCD_NAME="etcd01"\nexport DAEMON_ARGS=--x\nBAD LINE\nQ=\'a b\'\n')
    assert u.read_env_file(str(path)) == {"ETCD_NAME": "etcd01", "DAEMON_ARGS": "--x", "Q": "a b"}
    assert u.specifiers("/etc/default/%p %n %%", "etcd.service") == "/etc/default/etcd etcd.service %"
    assert u.normalize("etcd") == "etcd.service" and u.normalize("multi-user.target") == "multi-user.target"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("", 7.0), ("100ms", 0.1), ("5", 5.0), ("1min 30s", 90.0), ("infinity", 1e9)],
)
def test_time_spans(text: str, seconds: float) -> None:
    assert u.parse_seconds(text, 7.0) == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("policy", "code", "restarts"),
    [
        ("on-failure", 1, True),
        ("on-failure", 0, False),
        ("on-failure", -signal.SIGTERM, False),  # a clean signal
        ("on-failure", -signal.SIGKILL, True),
        ("on-abnormal", 1, False),
        ("on-abnormal", -signal.SIGKILL, True),
        ("always", 0, True),
        ("no", -signal.SIGKILL, False),
        ("on-failure", 255, False),  # RestartPreventExitStatus
    ],
)
def test_restart_policy(policy: str, code: int, restarts: bool) -> None:
    unit = _unit(f"[Service]\nRestart={policy}\nRestartPreventExitStatus=255\nSuccessExitStatus=143\n")
    svc = Service("x.service", unit)
    ok_codes, ok_signals = u.parse_status_set(unit.getlist("Service", "SuccessExitStatus"))
    clean = code == 0 or code in ok_codes or (code < 0 and -code in {1, 2, 13, 15} | ok_signals)
    assert Supervisor()._should_restart(svc, code, clean) is restarts


def test_status_sets_and_cli_options() -> None:
    assert u.parse_status_set(["143 SIGUSR1", "2"]) == ({143, 2}, {int(signal.SIGUSR1)})
    words, opts = _split(["show", "-p", "MainPID", "--property=ActiveState", "--value", "etcd", "-q"])
    assert words == ["show", "etcd"]
    assert opts["property"] == ["MainPID", "ActiveState"] and "value" in opts and "quiet" in opts


@pytest.mark.parametrize(
    ("policy", "result", "restarts"),
    [("on-failure", "timeout", True), ("on-abnormal", "timeout", True), ("on-abort", "timeout", False),
     ("always", "protocol", True), ("on-failure", "protocol", True), ("on-abnormal", "protocol", False),
     ("no", "timeout", False), ("on-success", "timeout", False)],
)
def test_restart_policy_for_results_without_exit_status(policy: str, result: str, restarts: bool) -> None:
    svc = Service("x.service", _unit(f"[Service]\nType=notify\nRestart={policy}\n"))
    assert Supervisor()._should_restart(svc, None, False, result) is restarts


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("", 90.0), ("TimeoutStartSec=5s", 5.0), ("TimeoutSec=2min", 120.0), ("TimeoutStartSec=0", None),
     ("TimeoutStartSec=infinity", None), ("TimeoutSec=1\nTimeoutStartSec=3", 3.0)],
)
def test_timeout_start_sec(text: str, seconds: float | None) -> None:
    assert Service("x.service", _unit(f"[Service]\nType=notify\n{text}\n")).timeout_start() == seconds


def test_notify_messages_as_systemd_reads_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import hactl.lab.supervisor as sup_mod

    monkeypatch.setattr(sup_mod, "LOG_DIR", str(tmp_path))
    sup = Supervisor(notify_path=str(tmp_path / "notify"))
    svc = sup.services["n.service"] = Service("n.service", _unit("[Service]\nType=notify\n", "n.service"))
    plain = sup.services["p.service"] = Service("p.service", _unit("[Service]\n", "p.service"))
    main = os.getpid()  # a live PID of a session the test process is in
    svc.main_pid, svc.sid, svc.state, svc.sub = main, os.getsid(0), "activating", "start"
    sup.by_main[main] = svc
    assert svc.notify_access() == "main" and plain.notify_access() == "none"

    sup.notify(main, 0, b"STATUS=warming up\nRELOADING=1\nREADY=1\n")  # the last of the three wins
    assert (svc.notify_state, svc.status_text) == ("ready", "warming up")
    sup.notify(main, 0, b"READY=1\nSTOPPING=1")
    assert svc.notify_state == "stopping"
    svc.notify_state = ""
    sup.notify(424242, 0, b"READY=1")  # no unit has this PID: dropped
    assert svc.notify_state == ""
    svc.sid = None
    svc.control_pid = 4242
    sup.notify(4242, 0, b"READY=1")  # NotifyAccess=main: a control process is refused, and logged
    assert svc.notify_state == ""
    assert "n.service: Got notification message from PID 4242, but reception only permitted for main PID " \
        f"{main}" in (tmp_path / "n.service.log").read_text()
    sup.notify(main, 0, b"MAINPID=x")
    assert "Failed to parse MAINPID= field" in (tmp_path / "n.service.log").read_text()
