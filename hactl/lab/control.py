"""``systemctl`` verbs, executed inside the node's supervisor (server side of the stand-in).

Runs under Debian's ``/usr/bin/python3``: standard library only. The client
(:mod:`hactl.lab.standins.systemctl`) sends ``{"argv": [...]}`` as one JSON line over
:data:`SOCKET`; the answer is a ``RC LEN_OUT LEN_ERR`` line followed by the two texts
(:func:`hactl.lab.standins.systemctl.encode_reply`).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import threading
import time
from typing import TYPE_CHECKING

from hactl.lab import units as u
from hactl.lab.standins.systemctl import encode_reply

if TYPE_CHECKING:
    from hactl.lab.supervisor import Service, Supervisor

SOCKET = "/run/hactl-lab/systemctl.sock"
READ_ONLY = {"is-active", "is-enabled", "is-failed", "status", "show", "cat", "list-units", "list-unit-files",
             "is-system-running"}
Result = tuple[int, str, str]
DEFAULT_PROPS = (
    "Id", "Names", "Description", "LoadState", "ActiveState", "SubState", "UnitFileState",
    "FragmentPath", "MainPID", "ExecMainCode", "ExecMainStatus", "Result", "NRestarts",
    "NeedDaemonReload", "Restart", "Type", "ActiveEnterTimestamp",
)


def serve(sup: Supervisor) -> None:
    os.makedirs(os.path.dirname(SOCKET), exist_ok=True)
    if os.path.exists(SOCKET):
        os.unlink(SOCKET)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(SOCKET)
    os.chmod(SOCKET, 0o666)  # anyone may ask; only root may change things (see _handle)
    server.listen(128)
    while True:
        conn, _ = server.accept()
        threading.Thread(target=_handle, args=(sup, conn), daemon=True).start()


def _handle(sup: Supervisor, conn: socket.socket) -> None:
    with conn:
        data = b""
        while not data.endswith(b"\n"):
            chunk = conn.recv(65536)
            if not chunk:
                return
            data += chunk
        try:
            request = json.loads(data)
            argv = [str(a) for a in request["argv"]]
            creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
            uid = struct.unpack("3i", creds)[1]
            words = [a for a in argv if not a.startswith("-")]
            if uid != 0 and words and words[0] not in READ_ONLY:
                unit = words[1] if len(words) > 1 else ""
                rc, out, err = 1, "", f"Failed to {words[0]} {unit}: Access denied\n"
            else:
                rc, out, err = dispatch(sup, argv)
        except Exception as exc:  # a bug must not take PID 1 down
            rc, out, err = 1, "", f"systemctl: internal error: {exc!r}\n"
        conn.sendall(encode_reply(rc, out, err))


_VALUED = {"-p": "property", "--property": "property", "-t": "type", "--type": "type",
           "--state": "state", "-s": "signal", "--signal": "signal"}
_SHORT = {"q": "quiet", "a": "all", "l": "full", "f": "force"}


def _split(argv: list[str]) -> tuple[list[str], dict[str, list[str]]]:
    words: list[str] = []
    opts: dict[str, list[str]] = {}
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg in _VALUED and i + 1 < len(argv):
            opts.setdefault(_VALUED[arg], []).append(argv[i + 1])
            i += 1
        elif arg.startswith("--"):
            key, _, value = arg[2:].partition("=")
            opts.setdefault(key, []).append(value)
        elif arg.startswith("-") and len(arg) > 1:
            if arg[:2] in _VALUED and len(arg) > 2:
                opts.setdefault(_VALUED[arg[:2]], []).append(arg[2:])
            else:
                for char in arg[1:]:
                    opts.setdefault(_SHORT.get(char, char), []).append("")
        else:
            words.append(arg)
        i += 1
    return words, opts


def dispatch(sup: Supervisor, argv: list[str]) -> Result:
    words, opts = _split(argv)
    if not words:
        return list_units(sup, opts)
    verb, names = words[0], words[1:]
    quiet = "quiet" in opts
    if verb == "daemon-reload":
        sup.daemon_reload()
        return 0, "", ""
    if verb == "list-units":
        return list_units(sup, opts)
    if verb == "list-unit-files":
        return list_unit_files()
    if verb == "is-system-running":
        return 0, "" if quiet else "running\n", ""
    if not names:
        return 1, "", "Too few arguments.\n"
    if verb in {"start", "stop", "restart", "reload", "try-restart", "reload-or-restart", "try-reload-or-restart"}:
        if "no-block" in opts:  # the job is queued, not waited for; an unknown unit fails still
            for name in names:
                svc = sup.service(name)
                if not svc.unit.found and verb != "stop":
                    return 5, "", f"Failed to {verb} {svc.name}: Unit {svc.name} not found.\n"
            threading.Thread(target=_jobs, args=(sup, verb, names), daemon=True).start()
            return 0, "", ""
        return _jobs(sup, verb, names)
    if verb in {"enable", "disable", "mask", "unmask"}:
        rc, err = 0, ""
        for name in names:
            code, text = _unit_file_op(sup, verb, name)
            rc, err = max(rc, code), err + text
        if "now" in opts and rc == 0 and "no-block" in opts:
            threading.Thread(target=_jobs, args=(sup, "start" if verb == "enable" else "stop", names),
                             daemon=True).start()
        elif "now" in opts and rc == 0:
            code, _, text = _jobs(sup, "start" if verb == "enable" else "stop", names)
            rc, err = code, err + text
        return rc, "", err
    if verb in {"is-active", "is-failed", "is-enabled"}:
        return _is(sup, verb, names, quiet)
    if verb == "status":
        return status(sup, names)
    if verb == "show":
        return show(sup, names, opts)
    if verb == "cat":
        return _cat(sup, names)
    if verb == "reset-failed":
        for name in names:
            svc = sup.service(name)
            with sup.lock:
                svc.starts.clear()
                if svc.state == "failed":
                    svc.state, svc.sub, svc.result = "inactive", "dead", "success"
        return 0, "", ""
    if verb == "kill":
        sig_name = (opts.get("signal") or ["SIGTERM"])[-1].upper()
        sig = int(getattr(signal, sig_name if sig_name.startswith("SIG") else "SIG" + sig_name))
        for name in names:
            svc = sup.service(name)
            with sup.lock:
                sup._signal(svc, sig, group=True)
        return 0, "", ""
    return 1, "", f'Unknown command verb "{verb}".\n'


def _jobs(sup: Supervisor, verb: str, names: list[str]) -> Result:
    rc, err = 0, ""
    for name in names:
        svc = sup.service(name)
        if verb in {"try-restart", "try-reload-or-restart"} and svc.state != "active":
            continue
        if verb == "start":
            code, text = sup.start(name)
        elif verb == "stop":
            code, text = sup.stop(name)
        elif verb == "reload" or (verb in {"reload-or-restart", "try-reload-or-restart"} and svc.unit.getlist("Service", "ExecReload") and svc.state == "active"):
            code, text = sup.reload(name)
        else:
            code, text = sup.stop(name)
            if code == 0:
                code, text = sup.start(name)
        if code:
            rc, err = code, err + text + "\n"
    return rc, "", err


def _unit_file_op(sup: Supervisor, verb: str, name: str) -> tuple[int, str]:
    name = u.resolve_alias(u.normalize(name))
    unit = u.load(name)
    link = os.path.join(u.ETC_DIR, name)
    if verb == "mask":
        if os.path.lexists(link):
            os.unlink(link)
        os.symlink("/dev/null", link)
        sup.daemon_reload()
        return 0, f"Created symlink {link} → /dev/null.\n"
    if verb == "unmask":
        if os.path.islink(link) and os.path.realpath(link) == "/dev/null":
            os.unlink(link)
            sup.daemon_reload()
            return 0, f'Removed "{link}".\n'
        return 0, ""
    if unit.masked:
        return 1, f"Failed to {verb} unit: Unit file {link} is masked.\n"
    if unit.path is None:
        return 1, f"Failed to {verb} unit: Unit file {name} does not exist.\n"
    install = unit.sections.get("Install", {})
    text = ""
    targets = [(t, ".wants") for v in install.get("WantedBy", []) for t in v.split()]
    targets += [(t, ".requires") for v in install.get("RequiredBy", []) for t in v.split()]
    if verb == "enable":
        if not targets and not install.get("Alias"):
            return 0, (
                "The unit files have no installation config (WantedBy=, RequiredBy=, Also=,\n"
                "Alias= settings in the [Install] section, and DefaultInstance= for template\n"
                "units). This means they are not meant to be enabled or disabled using systemctl.\n"
            )
        for target, suffix in targets:
            directory = os.path.join(u.ETC_DIR, target + suffix)
            os.makedirs(directory, exist_ok=True)
            path = os.path.join(directory, name)
            if not os.path.lexists(path):
                os.symlink(unit.path, path)
                text += f"Created symlink {path} → {unit.path}.\n"
        for alias in " ".join(install.get("Alias", [])).split():
            path = os.path.join(u.ETC_DIR, alias)
            if not os.path.lexists(path):
                os.symlink(unit.path, path)
                text += f"Created symlink {path} → {unit.path}.\n"
    else:
        for entry in sorted(os.listdir(u.ETC_DIR)):
            path = os.path.join(u.ETC_DIR, entry, name)
            if entry.endswith((".wants", ".requires")) and os.path.lexists(path):
                os.unlink(path)
                text += f'Removed "{path}".\n'
        for alias in " ".join(install.get("Alias", [])).split():
            path = os.path.join(u.ETC_DIR, alias)
            if os.path.islink(path):
                os.unlink(path)
                text += f'Removed "{path}".\n'
    sup.daemon_reload()
    return 0, text


def _is(sup: Supervisor, verb: str, names: list[str], quiet: bool) -> Result:
    rc, out, err = 0, "", ""
    for name in names:
        svc = sup.service(name)
        if verb == "is-enabled":
            state = u.enablement(svc.name, u.load(svc.name))
            if state == "not-found":
                rc = 1
                err += f"Failed to get unit file state for {svc.name}: No such file or directory\n"
                continue
            ok = state in {"enabled", "static", "alias", "indirect"}
        else:
            state = svc.state
            ok = state == ("active" if verb == "is-active" else "failed")
            if verb == "is-active" and state == "activating" and svc.sub == "reload":
                ok, state = True, "reloading"
        rc = rc if ok else (3 if verb == "is-active" else 1)
        out += f"{state}\n"
    return rc, "" if quiet else out, err


def _ts(stamp: float) -> str:
    return time.strftime("%a %Y-%m-%d %H:%M:%S UTC", time.gmtime(stamp)) if stamp else ""


def properties(svc: Service) -> dict[str, str]:
    unit = svc.unit
    load_state = "masked" if unit.masked else ("loaded" if unit.path else "not-found")
    code = "killed" if svc.exit_signal else ("exited" if svc.exit_code is not None else "0")
    enabled = u.enablement(svc.name, u.load(svc.name))
    return {
        "Id": svc.name,
        "Names": svc.name,
        "Description": unit.get("Unit", "Description", svc.name),
        "LoadState": load_state,
        "ActiveState": svc.state,
        "SubState": svc.sub,
        "UnitFileState": "" if enabled == "not-found" else enabled,
        "FragmentPath": unit.path or "",
        "MainPID": str(svc.main_pid or 0),
        "ExecMainPID": str(svc.main_pid or 0),
        "ExecMainCode": code,
        "ExecMainStatus": str(svc.exit_signal or svc.exit_code or 0),
        "Result": svc.result,
        "NRestarts": str(svc.n_restarts),
        "NeedDaemonReload": "yes" if unit.found and unit.changed_on_disk() else "no",
        "Restart": unit.get("Service", "Restart", "no"),
        "Type": unit.get("Service", "Type", "simple"),
        "ActiveEnterTimestamp": _ts(svc.since) if svc.state == "active" else "",
        "StatusText": svc.status_text,
        "NotifyAccess": svc.notify_access(),
        "TimeoutStartUSec": _usec(svc.timeout_start()),
    }


def _usec(seconds: float | None) -> str:
    """systemd's timespan display: ``1min 30s``, ``5s``, ``100ms``, ``infinity``."""
    if seconds is None:
        return "infinity"
    ms = round(seconds * 1000)
    parts = []
    for size, unit in ((3_600_000, "h"), (60_000, "min"), (1000, "s"), (1, "ms")):
        if ms >= size:
            parts.append(f"{ms // size}{unit}")
            ms %= size
    return " ".join(parts) or "0"


def show(sup: Supervisor, names: list[str], opts: dict[str, list[str]]) -> Result:
    wanted = [p for value in opts.get("property", []) for p in value.split(",") if p]
    blocks = []
    for name in names:
        props = properties(sup.service(name))
        keys = wanted or list(DEFAULT_PROPS)
        if "value" in opts:
            blocks.append("".join(f"{props.get(k, '')}\n" for k in keys))
        else:
            blocks.append("".join(f"{k}={props.get(k, '')}\n" for k in keys))
    return 0, "\n".join(blocks), ""


def status(sup: Supervisor, names: list[str]) -> Result:
    rc, out = 0, ""
    for name in names:
        svc = sup.service(name)
        props = properties(svc)
        if props["LoadState"] == "not-found":
            return 4, out, f"Unit {svc.name} could not be found.\n"
        dot = "●" if svc.state in {"active", "failed"} else "○"
        active = f"{svc.state} ({svc.sub})"
        if svc.since:
            active += f" since {_ts(svc.since)}; {int(time.time() - svc.since)}s ago"
        out += f"{dot} {svc.name} - {props['Description']}\n"
        out += f"     Loaded: {props['LoadState']} ({props['FragmentPath']}; {props['UnitFileState']})\n"
        out += f"     Active: {active}\n"
        if svc.main_pid:
            out += f"   Main PID: {svc.main_pid} ({_comm(svc.main_pid)})\n"
        if svc.status_text:
            out += f'     Status: "{svc.status_text}"\n'
        if props["NeedDaemonReload"] == "yes":
            out += f"Warning: The unit file of {svc.name} changed on disk. Run 'systemctl daemon-reload'.\n"
        try:
            with open(os.path.join("/var/log/hactl-lab", svc.name + ".log"), encoding="utf-8", errors="replace") as handle:
                tail = handle.readlines()[-10:]
            out += "\n" + "".join(tail)
        except OSError:
            pass
        rc = rc or (0 if svc.state == "active" else 3)
    return rc, out, ""


def _comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm", encoding="utf-8") as handle:
            return handle.read().strip()
    except OSError:
        return "?"


def _cat(sup: Supervisor, names: list[str]) -> Result:
    out = ""
    for name in names:
        unit = sup.service(name).unit
        for path in unit.sources:
            with open(path, encoding="utf-8") as handle:
                out += f"# {path}\n{handle.read()}\n"
    return 0, out, ""


def list_units(sup: Supervisor, opts: dict[str, list[str]]) -> Result:
    states = {s for value in opts.get("state", []) for s in value.split(",") if s}
    with sup.lock:
        services = sorted(sup.services.values(), key=lambda s: s.name)
    lines = []
    for svc in services:
        if states and not states & {svc.state, svc.sub}:
            continue
        if not states and svc.state == "inactive" and "all" not in opts:
            continue
        load = "masked" if svc.unit.masked else ("loaded" if svc.unit.path else "not-found")
        lines.append(f"{svc.name} {load} {svc.state} {svc.sub} {svc.unit.get('Unit', 'Description', svc.name)}")
    return 0, "".join(line + "\n" for line in lines), ""


def list_unit_files() -> Result:
    names: set[str] = set()
    for directory in u.UNIT_DIRS:
        if os.path.isdir(directory):
            names.update(e for e in os.listdir(directory) if e.endswith(".service") and "@" not in e)
    lines = []
    for name in sorted(names):
        state = u.enablement(name, u.load(name))
        if state != "not-found":
            lines.append(f"{name} {state} enabled\n")
    return 0, "".join(lines), ""
