"""systemd unit files for the lab's ``systemctl`` stand-in: find, parse, expand.

Runs inside lab nodes under Debian's ``/usr/bin/python3``: standard library only.

What is understood (everything else is read and ignored, as a sandbox-less systemd would):
``[Unit]`` Description, ConditionPathExists, StartLimitIntervalSec, StartLimitBurst;
``[Service]`` Type (notify waited for, see :mod:`hactl.lab.supervisor`; simple/exec/forking run as
simple; oneshot), TimeoutStartSec, TimeoutSec, NotifyAccess, ExecStartPre, ExecStart,
ExecStartPost, ExecReload, ExecStop, ExecStopPost, Environment, EnvironmentFile, User, Group,
WorkingDirectory, Restart, RestartSec, RestartPreventExitStatus, SuccessExitStatus, KillMode,
KillSignal, TimeoutStopSec, RemainAfterExit, RuntimeDirectory, RuntimeDirectoryMode;
``[Install]`` WantedBy, RequiredBy, Alias. Drop-ins (``NAME.d/*.conf``) and ``KEY=`` resets too.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import socket
from dataclasses import dataclass, field

UNIT_DIRS = ("/etc/systemd/system", "/run/systemd/system", "/lib/systemd/system", "/usr/lib/systemd/system")
ETC_DIR = "/etc/systemd/system"
LIST_KEYS = {
    "ExecStartPre", "ExecStart", "ExecStartPost", "ExecReload", "ExecStop", "ExecStopPost",
    "Environment", "EnvironmentFile", "WantedBy", "RequiredBy", "Alias", "ConditionPathExists",
    "RestartPreventExitStatus", "SuccessExitStatus", "RuntimeDirectory", "After", "Wants",
    "Requires", "Before", "Documentation",
}
_VAR_WORD = re.compile(r"^\$([A-Za-z_][A-Za-z0-9_]*)$")
_VAR_IN = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)")
_TIME_UNITS = {"ms": 0.001, "s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "us": 1e-6}


def normalize(name: str) -> str:
    """``etcd`` → ``etcd.service``; names with a known suffix stay as they are."""
    if "." in name and name.rsplit(".", 1)[1] in {"service", "target", "timer", "socket", "mount", "path"}:
        return name
    return name + ".service"


@dataclass
class UnitFile:
    """One unit as loaded from disk: merged sections of the main file and its drop-ins."""

    name: str
    path: str | None = None
    masked: bool = False
    sections: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    sources: dict[str, float] = field(default_factory=dict)  # file → mtime when loaded

    @property
    def found(self) -> bool:
        return self.path is not None or self.masked

    def get(self, section: str, key: str, default: str = "") -> str:
        values = self.sections.get(section, {}).get(key)
        return values[-1] if values else default

    def getlist(self, section: str, key: str) -> list[str]:
        return list(self.sections.get(section, {}).get(key, []))

    def changed_on_disk(self) -> bool:
        fresh = load(self.name)
        return fresh.sources != self.sources or fresh.masked != self.masked


def _parse_into(text: str, sections: dict[str, dict[str, list[str]]]) -> None:
    current: dict[str, list[str]] | None = None
    pending = ""
    for raw in text.splitlines():
        line = pending + raw.strip()
        pending = ""
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        if current is None or "=" not in line:
            continue
        key, value = (part.strip() for part in line.split("=", 1))
        if key in LIST_KEYS:
            if value == "":
                current[key] = []
            else:
                current.setdefault(key, []).append(value)
        else:
            current[key] = [value]


def _find(name: str) -> str | None:
    for directory in UNIT_DIRS:
        path = os.path.join(directory, name)
        if os.path.lexists(path):
            return path
    return None


def resolve_alias(name: str) -> str:
    """An alias symlink (``sshd.service`` → ``ssh.service``) resolves to the real unit's name."""
    path = _find(name)
    if path and os.path.islink(path):
        target = os.path.realpath(path)
        base = os.path.basename(target)
        if target != "/dev/null" and base != name and base.endswith(name.rsplit(".", 1)[1]):
            return base
    return name


def load(name: str) -> UnitFile:
    """Load ``name`` (already normalized and alias-resolved) from the unit directories."""
    unit = UnitFile(name)
    path = _find(name)
    if path is None:
        return unit
    if os.path.realpath(path) == "/dev/null":
        unit.masked = True
        unit.sources[path] = 0.0
        return unit
    sections: dict[str, dict[str, list[str]]] = {}
    try:
        with open(path, encoding="utf-8") as handle:
            _parse_into(handle.read(), sections)
        unit.sources[path] = os.stat(path).st_mtime
    except OSError:
        return unit
    unit.path = path
    dropins: dict[str, str] = {}
    for directory in reversed(UNIT_DIRS):
        ddir = os.path.join(directory, name + ".d")
        if os.path.isdir(ddir):
            for entry in os.listdir(ddir):
                if entry.endswith(".conf"):
                    dropins[entry] = os.path.join(ddir, entry)
    for entry in sorted(dropins):
        try:
            with open(dropins[entry], encoding="utf-8") as handle:
                _parse_into(handle.read(), sections)
            unit.sources[dropins[entry]] = os.stat(dropins[entry]).st_mtime
        except OSError:
            continue
    unit.sections = sections
    return unit


def specifiers(text: str, name: str) -> str:
    prefix = name.rsplit(".", 1)[0]
    instance = prefix.split("@", 1)[1] if "@" in prefix else ""
    table = {
        "n": name, "N": prefix, "p": prefix.split("@", 1)[0], "i": instance, "I": instance,
        "H": socket.gethostname(), "t": "/run", "h": "/root", "%": "%",
    }
    return re.sub(r"%(.)", lambda m: table.get(m.group(1), m.group(0)), text)


def parse_env_assignments(value: str) -> dict[str, str]:
    """``Environment="A=1" B=2`` → ``{"A": "1", "B": "2"}``."""
    env: dict[str, str] = {}
    for word in shlex.split(value):
        if "=" in word:
            key, val = word.split("=", 1)
            env[key] = val
    return env


def read_env_file(path: str) -> dict[str, str]:
    env: dict[str, str] = {}
    with open(path, encoding="utf-8") as handle:
        for raw in handle:
            line = raw.strip()
            if not line or line[0] in "#;" or "=" not in line:
                continue
            key, val = line.split("=", 1)
            key = key.strip().removeprefix("export ").strip()
            val = val.strip()
            if len(val) >= 2 and val[0] == val[-1] and val[0] in "\"'":
                val = val[1:-1]
            env[key] = val
    return env


@dataclass(frozen=True)
class Command:
    argv: list[str]
    ignore_failure: bool = False
    privileged: bool = False


def parse_command(line: str, env: dict[str, str]) -> Command:
    """One ``Exec*=`` line → argv with ``$VAR`` (split into words) and ``${VAR}`` expanded."""
    ignore = privileged = False
    while line and line[0] in "-@:+!":
        ignore = ignore or line[0] == "-"
        privileged = privileged or line[0] in "+!"
        line = line[1:]
    argv: list[str] = []
    for word in shlex.split(line):
        whole = _VAR_WORD.match(word)
        if whole:
            argv.extend(env.get(whole.group(1), "").split())
            continue
        argv.append(_VAR_IN.sub(lambda m: env.get(m.group(1) or m.group(2), ""), word))
    return Command(argv, ignore, privileged)


def parse_seconds(text: str, default: float) -> float:
    text = text.strip()
    if not text:
        return default
    if text == "infinity":
        return 1e9
    total = 0.0
    for number, unit in re.findall(r"([\d.]+)\s*([a-z]*)", text):
        total += float(number) * _TIME_UNITS.get(unit or "s", 1.0)
    return total


def parse_status_set(values: list[str]) -> tuple[set[int], set[int]]:
    """``SuccessExitStatus=143 SIGUSR1`` → (exit codes, signal numbers)."""
    codes: set[int] = set()
    signals: set[int] = set()
    for value in values:
        for word in value.split():
            if word.isdigit():
                codes.add(int(word))
            else:
                sig = getattr(signal, word if word.startswith("SIG") else "SIG" + word, None)
                if sig is not None:
                    signals.add(int(sig))
    return codes, signals


def enablement(name: str, unit: UnitFile) -> str:
    """``enabled``, ``disabled``, ``static``, ``masked`` or ``not-found``."""
    if unit.masked:
        return "masked"
    if unit.path is None:
        return "not-found"
    for entry in os.listdir(ETC_DIR) if os.path.isdir(ETC_DIR) else []:
        if entry.endswith((".wants", ".requires")) and os.path.lexists(os.path.join(ETC_DIR, entry, name)):
            return "enabled"
    install = unit.sections.get("Install", {})
    if any(install.get(key) for key in ("WantedBy", "RequiredBy", "Alias")):
        return "disabled"
    return "static"


def wanted_units(target: str = "multi-user.target") -> list[str]:
    wants = os.path.join(ETC_DIR, target + ".wants")
    if not os.path.isdir(wants):
        return []
    return sorted(entry for entry in os.listdir(wants) if entry.endswith(".service"))
