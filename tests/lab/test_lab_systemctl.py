"""The systemctl stand-in inside a node: unit files, Restart=, enablement, boot, drop-ins, show."""

from __future__ import annotations

import subprocess
import sys
import time
from typing import Any

CRASHER = """\
[Unit]
Description=crashes on purpose

[Service]
Environment="GREETING=hello world" COUNT=1
EnvironmentFile=-/etc/default/crasher
ExecStartPre=/bin/sh -c 'echo pre >> /var/tmp/crasher.trace'
ExecStart=/bin/sh -c 'echo "$GREETING ${EXTRA}" >> /var/tmp/crasher.trace; sleep 0.3; exit 3'
Restart=on-failure
RestartSec=100ms
StartLimitBurst=100

[Install]
WantedBy=multi-user.target
"""

SLEEPER = """\
[Unit]
Description=sleeps

[Service]
User=nobody
ExecStart=/bin/sh -c 'sleep 1000 & exec sleep 1000'
ExecReload=/bin/kill -HUP $MAINPID
Restart=always

[Install]
WantedBy=multi-user.target
"""


def _sh(lab: Any, node: str, cmd: str) -> Any:
    return lab.run(node, cmd, timeout=60)


def _wait(predicate: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_systemctl_stand_in(lab_factory: Any) -> None:
    lab = lab_factory()
    node = "worker01"
    assert "hactl-lab stand-in" in _sh(lab, node, "systemctl --version").stdout
    # outside a node it fails like the real one on a host without systemd
    outside = subprocess.run([sys.executable, "-m", "hactl.lab.standins.systemctl", "status", "x"],
                             capture_output=True, text=True, check=False)
    assert outside.returncode == 1 and "not been booted with systemd" in outside.stderr

    lab.put(node, "/etc/systemd/system/crasher.service", CRASHER)
    lab.put(node, "/etc/default/crasher", 'EXTRA="from env file"\n')
    lab.put(node, "/etc/systemd/system/sleeper.service", SLEEPER)
    assert _sh(lab, node, "systemctl is-enabled crasher").stdout == "disabled\n"
    unknown = _sh(lab, node, "systemctl start nosuch")
    assert unknown.returncode == 5 and "Unit nosuch.service not found." in unknown.stderr
    assert _sh(lab, node, "systemctl is-active nosuch").returncode == 3
    assert _sh(lab, node, "systemctl status nosuch").returncode == 4

    # Restart=on-failure: the crashing service is started again and again
    assert _sh(lab, node, "systemctl start crasher").returncode == 0
    _wait(lambda: int(_sh(lab, node, "systemctl show -p NRestarts --value crasher").stdout) >= 3)
    trace = lab.read(node, "/var/tmp/crasher.trace").splitlines()
    assert trace[:2] == ["pre", "hello world from env file"]
    assert _sh(lab, node, "systemctl stop crasher; systemctl is-active crasher").stdout == "inactive\n"
    count = len(lab.read(node, "/var/tmp/crasher.trace").splitlines())
    time.sleep(0.6)
    assert len(lab.read(node, "/var/tmp/crasher.trace").splitlines()) == count  # no more restarts

    # User=, process group, Restart=always after a kill, reload with $MAINPID
    assert _sh(lab, node, "systemctl enable --now sleeper").returncode == 0
    main = _sh(lab, node, "systemctl show -p MainPID --value sleeper").stdout.strip()
    assert _sh(lab, node, f"ps -o user= -p {main}").stdout.strip() == "nobody"
    _sh(lab, node, f"kill -9 {main}")
    _wait(lambda: _sh(lab, node, "systemctl show -p MainPID --value sleeper").stdout.strip() not in {"0", main})
    assert _sh(lab, node, "systemctl reload sleeper").returncode == 0
    _wait(lambda: _sh(lab, node, "systemctl show -p MainPID --value sleeper").stdout.strip() not in {"0", main})
    assert _sh(lab, node, "systemctl show -p ActiveState -p SubState sleeper").stdout == (
        "ActiveState=active\nSubState=running\n"
    )

    # a changed unit file needs daemon-reload; drop-ins are honoured
    lab.put(node, "/etc/systemd/system/crasher.service.d/10-ok.conf",
            "[Service]\nExecStart=\nExecStart=/bin/sleep 1000\nRestart=no\n")
    assert _sh(lab, node, "systemctl show -p NeedDaemonReload --value crasher").stdout == "yes\n"
    assert _sh(lab, node, "systemctl daemon-reload && systemctl enable crasher").returncode == 0
    assert _sh(lab, node, "systemctl is-enabled crasher").stdout == "enabled\n"

    # enabled units start at boot, in a fresh node after power off
    lab.stop(node)
    lab.start(node)
    _wait(lambda: _sh(lab, node, "systemctl is-active sleeper crasher ssh").stdout == "active\n" * 3)
    units = {s.name: s.units for s in lab.status()}[node]
    assert {"ssh.service", "sleeper.service", "crasher.service"} <= set(units)

    # stop kills the whole process group (the background sleep too); disable removes the link
    _sh(lab, node, "systemctl disable --now sleeper")
    assert _sh(lab, node, "pgrep -u nobody sleep").returncode == 1
    assert _sh(lab, node, "systemctl is-enabled sleeper").stdout == "disabled\n"
    assert _sh(lab, node, "test -e /etc/systemd/system/multi-user.target.wants/sleeper.service").returncode == 1

    # anyone may ask, only root may change things
    nobody = "setpriv --reuid=65534 --regid=65534 --clear-groups systemctl"
    assert _sh(lab, node, f"{nobody} is-active ssh").stdout == "active\n"
    denied = _sh(lab, node, f"{nobody} stop ssh")
    assert denied.returncode == 1 and "Access denied" in denied.stderr

    # the machine's enabled units are not enabled in a fresh node; ssh is
    assert _sh(lab, node, "systemctl is-enabled etcd haproxy ssh").stdout == "disabled\ndisabled\nenabled\n"
    files = _sh(lab, node, "systemctl list-unit-files --no-legend").stdout.splitlines()
    assert "etcd.service disabled enabled" in files and "ssh.service enabled enabled" in files
    assert _sh(lab, node, "systemctl is-system-running").stdout == "running\n"


NOTIFY_UNIT = """\
[Service]
Type=notify
ExecStart=/usr/bin/python3 -c "import os, socket, time; time.sleep(SECONDS); s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); s.connect(os.environ['NOTIFY_SOCKET']); s.send(b'READY=1'); time.sleep(1000)"
TimeoutStartSec=3
"""


def test_type_notify_waits_for_ready(lab_factory: Any) -> None:
    """Type=notify units as systemd runs them: start waits for READY=1 from the real programs
    (sshd: Debian's sd_notify patch; etcd: once it serves, i.e. with quorum), fails after
    TimeoutStartSec= with systemd's message, and --no-block leaves the unit activating."""
    lab = lab_factory()
    node = "etcd01"
    # sshd says READY=1 once it listens: right after `systemctl restart ssh` it does
    restart = _sh(lab, node, "systemctl restart ssh && ss -Hltnp | grep -c '\"sshd'")
    assert restart.returncode == 0 and int(restart.stdout) >= 1, restart.stderr

    lab.put(node, "/etc/systemd/system/fast.service", NOTIFY_UNIT.replace("SECONDS", "1.5"))
    lab.put(node, "/etc/systemd/system/slow.service", NOTIFY_UNIT.replace("SECONDS", "30"))
    began = time.monotonic()
    assert _sh(lab, node, "systemctl start fast").returncode == 0
    assert time.monotonic() - began >= 1.5
    assert _sh(lab, node, "systemctl is-active fast").stdout == "active\n"
    slow = _sh(lab, node, "systemctl start slow")
    assert slow.returncode == 1
    assert slow.stderr == (
        "Job for slow.service failed because a timeout was exceeded.\n"
        'See "systemctl status slow.service" and "journalctl -xeu slow.service" for details.\n'
    )
    assert _sh(lab, node, "systemctl show -p MainPID -p Result slow").stdout == "MainPID=0\nResult=timeout\n"
    queued = _sh(lab, node, "systemctl start --no-block slow; systemctl is-active slow")
    assert (queued.returncode, queued.stdout) == (3, "activating\n")
    assert _sh(lab, node, "systemctl stop slow fast").returncode == 0

    # etcd 3.4 (Debian's unit, Type=notify) is ready only with a quorum: a member of a new
    # three-member cluster started alone is still activating, and a start waits until timeout
    lab.put(node, "/etc/default/etcd", "\n".join([
        "ETCD_NAME=etcd01",
        "ETCD_LISTEN_PEER_URLS=http://127.0.0.1:2380",
        "ETCD_INITIAL_ADVERTISE_PEER_URLS=http://127.0.0.1:2380",
        "ETCD_INITIAL_CLUSTER=etcd01=http://127.0.0.1:2380,b=http://127.0.0.1:2390,c=http://127.0.0.1:2391",
    ]) + "\n")
    lab.put(node, "/etc/systemd/system/etcd.service.d/timeout.conf", "[Service]\nTimeoutStartSec=4\nRestart=no\n")
    alone = _sh(lab, node, "systemctl daemon-reload && systemctl start etcd")
    assert alone.returncode == 1 and "because a timeout was exceeded" in alone.stderr
    assert _sh(lab, node, "systemctl show -p Result --value etcd").stdout == "timeout\n"
    # a single-member cluster serves at once: start returns with etcd ready
    lab.put(node, "/etc/default/etcd", "ETCD_NAME=etcd01\nETCD_DATA_DIR=/var/lib/etcd/single\n")
    single = _sh(lab, node, "systemctl start etcd && systemctl is-active etcd")
    assert (single.returncode, single.stdout) == (0, "active\n"), single.stderr
    assert _sh(lab, node, "ETCDCTL_API=3 etcdctl endpoint health").returncode == 0
