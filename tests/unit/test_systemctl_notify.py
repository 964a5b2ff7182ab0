"""Type=notify in the lab's service manager: NOTIFY_SOCKET, READY=1, blocking start, TimeoutStartSec.

Each test runs a :class:`hactl.lab.supervisor.Supervisor` in a child process of its own (it reaps
every child of that process), with unit files, logs and the notify socket in a temporary
directory, and drives it with the ``systemctl`` verbs of :func:`hactl.lab.control.dispatch`.
No root and no lab node needed. The services are a small Python program that speaks sd_notify
as sshd, etcd and haproxy do: one datagram to ``$NOTIFY_SOCKET`` from the main process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]

NOTIFIER = textwrap.dedent("""\
    import os, socket, sys, time

    def send(text):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.connect(os.environ["NOTIFY_SOCKET"])
        sock.send(text.encode())

    mode = sys.argv[1]
    if mode == "ready":          # ready after a while, then serve
        time.sleep(float(sys.argv[2]))
        send("STATUS=serving\\nREADY=1")
    elif mode == "exit":         # dies before it is ready
        time.sleep(0.2)
        sys.exit(int(sys.argv[2]))
    elif mode == "child":        # a child process says READY=1, not the main process
        if os.fork() == 0:
            send("READY=1")
            os._exit(0)
    elif mode == "stopping":     # ready, then announces its own stop and exits
        send("READY=1")
        time.sleep(0.5)
        send("STOPPING=1")
        time.sleep(0.5)
        sys.exit(0)
    time.sleep(1000)             # "never" and the others: keep running
""")

DRIVER = textwrap.dedent("""\
    import json, os, sys, threading, time
    from hactl.lab import control, supervisor, units
    cfg = json.load(sys.stdin)
    units.UNIT_DIRS = (cfg["dir"],)
    units.ETC_DIR = cfg["dir"]
    supervisor.LOG_DIR = cfg["log"]
    sup = supervisor.Supervisor(notify_path=cfg["notify"])
    threading.Thread(target=sup.serve_notify, args=(sup.bind_notify(),), daemon=True).start()
    threading.Thread(target=sup.reap_forever, daemon=True).start()
    results, background = [], []

    def run(argv, into):
        began = time.monotonic()
        rc, out, err = control.dispatch(sup, argv)
        into.append({"argv": argv, "rc": rc, "out": out, "err": err, "secs": time.monotonic() - began})

    for step in cfg["steps"]:
        if step[0] == "sleep":
            time.sleep(step[1])
        elif step[0] == "bg":
            box = []
            thread = threading.Thread(target=run, args=(step[1:], box))
            thread.start()
            background.append((thread, box))
        elif step[0] == "join":
            thread, box = background.pop(0)
            thread.join()
            results.extend(box)
        else:
            run(step, results)
    for name in list(sup.services):
        control.dispatch(sup, ["stop", name])
    print(json.dumps(results))
    sys.stdout.flush()
    os._exit(0)
""")


def _unit(exec_start: str, extra: str = "") -> str:
    return f"[Unit]\nDescription=notify test\n\n[Service]\nType=notify\nExecStart={exec_start}\n{extra}\n"


def _run(tmp_path: Path, units: dict[str, str], steps: list[list[Any]]) -> list[dict[str, Any]]:
    (tmp_path / "units").mkdir()
    (tmp_path / "log").mkdir()
    script = tmp_path / "notifier.py"
    script.write_text(NOTIFIER)
    for name, text in units.items():
        text = text.replace("NOTIFIER", f"{sys.executable} {script}")
        (tmp_path / "units" / name).write_text(text)
    cfg = {"dir": str(tmp_path / "units"), "log": str(tmp_path / "log"),
           "notify": str(tmp_path / "notify"), "steps": steps}
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", DRIVER], input=json.dumps(cfg), capture_output=True,
                          text=True, timeout=120, env=env, check=False)
    assert proc.returncode == 0, proc.stderr
    results: list[dict[str, Any]] = json.loads(proc.stdout)
    return results


def _log(tmp_path: Path, name: str) -> str:
    return (tmp_path / "log" / f"{name}.log").read_text()


def test_ready_makes_start_return_0_and_the_unit_active(tmp_path: Path) -> None:
    start, active, show, status = _run(
        tmp_path, {"ready.service": _unit("NOTIFIER ready 0.6")},
        [["start", "ready"], ["is-active", "ready"],
         ["show", "-p", "ActiveState", "-p", "SubState", "-p", "StatusText", "-p", "Result", "ready"],
         ["status", "ready"]],
    )
    assert (start["rc"], start["err"]) == (0, "")
    assert start["secs"] >= 0.6, "start returned before READY=1"
    assert (active["rc"], active["out"]) == (0, "active\n")
    assert show["out"] == "ActiveState=active\nSubState=running\nStatusText=serving\nResult=success\n"
    assert 'Status: "serving"' in status["out"]


def test_never_ready_blocks_until_timeout_start_sec_and_fails(tmp_path: Path) -> None:
    start, active, show = _run(
        tmp_path, {"never.service": _unit("NOTIFIER never", "TimeoutStartSec=1.5")},
        [["start", "never"], ["is-active", "never"], ["show", "-p", "ActiveState", "-p", "Result", "-p", "MainPID", "never"]],
    )
    assert start["rc"] == 1
    assert start["err"] == (
        "Job for never.service failed because a timeout was exceeded.\n"
        'See "systemctl status never.service" and "journalctl -xeu never.service" for details.\n'
    )
    assert 1.5 <= start["secs"] < 5
    assert (active["rc"], active["out"]) == (3, "failed\n")
    assert show["out"] == "ActiveState=failed\nResult=timeout\nMainPID=0\n"  # the service was killed
    log = _log(tmp_path, "never.service")
    assert "never.service: start operation timed out. Terminating." in log
    assert "never.service: Failed with result 'timeout'." in log


def test_no_block_returns_at_once_and_the_unit_is_activating(tmp_path: Path) -> None:
    start, active, show, stop, after = _run(
        tmp_path, {"never.service": _unit("NOTIFIER never")},  # default TimeoutStartSec: 90 s
        [["start", "--no-block", "never"], ["sleep", 0.3], ["is-active", "never"],
         ["show", "-p", "ActiveState", "-p", "SubState", "-p", "TimeoutStartUSec", "never"],
         ["stop", "never"], ["is-active", "never"]],
    )
    assert (start["rc"], start["err"]) == (0, "")
    assert start["secs"] < 0.2
    assert (active["rc"], active["out"]) == (3, "activating\n")
    assert show["out"] == "ActiveState=activating\nSubState=start\nTimeoutStartUSec=1min 30s\n"
    assert stop["rc"] == 0 and stop["secs"] < 5  # the stop job replaces the waiting start job
    assert after["out"] == "inactive\n"


def test_a_waiting_start_is_canceled_by_a_stop(tmp_path: Path) -> None:
    stop, start = _run(
        tmp_path, {"never.service": _unit("NOTIFIER never")},
        [["bg", "start", "never"], ["sleep", 0.5], ["stop", "never"], ["join"]],
    )
    assert stop["rc"] == 0
    assert (start["rc"], start["err"]) == (1, "Job for never.service canceled.\n")


@pytest.mark.parametrize(
    ("code", "result", "because"),
    [(3, "exit-code", "the control process exited with error code"),
     (0, "protocol", "the service did not take the steps required by its unit configuration")],
)
def test_exit_before_ready_fails_the_start(tmp_path: Path, code: int, result: str, because: str) -> None:
    start, active, show = _run(
        tmp_path, {"dies.service": _unit(f"NOTIFIER exit {code}")},
        [["start", "dies"], ["is-active", "dies"], ["show", "-p", "Result", "dies"]],
    )
    assert start["rc"] == 1
    assert start["err"].startswith(f"Job for dies.service failed because {because}.\n")
    assert active["out"] == "failed\n"
    assert show["out"] == f"Result={result}\n"


def test_notify_access_main_ignores_a_child_and_all_accepts_it(tmp_path: Path) -> None:
    main, every = _run(
        tmp_path,
        {"main.service": _unit("NOTIFIER child", "TimeoutStartSec=1"),
         "every.service": _unit("NOTIFIER child", "TimeoutStartSec=5\nNotifyAccess=all")},
        [["start", "main"], ["start", "every"]],
    )
    assert main["rc"] == 1 and "a timeout was exceeded" in main["err"]
    assert "but reception only permitted for main PID" in _log(tmp_path, "main.service")
    assert (every["rc"], every["err"]) == (0, "")


def test_timeout_counts_as_a_failure_for_restart(tmp_path: Path) -> None:
    start, show = _run(
        tmp_path, {"loop.service": _unit("NOTIFIER never", "TimeoutStartSec=0.5\nRestart=on-failure\nRestartSec=0.3")},
        [["start", "loop"], ["sleep", 1.3], ["show", "-p", "NRestarts", "-p", "ActiveState", "loop"]],
    )
    assert start["rc"] == 1 and "a timeout was exceeded" in start["err"]
    restarts, state = show["out"].splitlines()
    assert restarts != "NRestarts=0" and state == "ActiveState=activating"


def test_stopping_and_a_clean_exit_after_ready(tmp_path: Path) -> None:
    start, during, after = _run(
        tmp_path, {"bye.service": _unit("NOTIFIER stopping")},
        [["start", "bye"], ["sleep", 0.7], ["show", "-p", "ActiveState", "-p", "SubState", "bye"],
         ["sleep", 0.8], ["is-active", "bye"]],
    )
    assert start["rc"] == 0
    assert during["out"] == "ActiveState=deactivating\nSubState=stop-sigterm\n"
    assert after["out"] == "inactive\n"


def test_simple_units_are_not_waited_for_and_get_no_notify_socket(tmp_path: Path) -> None:
    start, active = _run(
        tmp_path,
        {"plain.service": "[Service]\nExecStart=/bin/sh -c 'env; echo listed; exec sleep 1000'\n"},
        [["start", "plain"], ["is-active", "plain"], ["sleep", 0.5]],
    )
    assert start["rc"] == 0 and start["secs"] < 1
    assert active["out"] == "active\n"
    log = _log(tmp_path, "plain.service")
    assert "listed" in log and "NOTIFY_SOCKET" not in log
