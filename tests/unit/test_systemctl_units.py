"""The systemctl stand-in's unit-file handling and restart policy (pure parts, no node needed)."""

from __future__ import annotations

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
