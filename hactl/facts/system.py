"""OS, init system, hostname, kernel, login user (every host)."""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from hactl import hostlayout
from hactl.facts.base import Fact, FactParseError, key_values
from hactl.facts.model import SystemFacts

_SCRIPT = r"""if read -r h < /proc/sys/kernel/hostname 2>/dev/null; then echo "hostname=$h"; else echo "hostname=$(hostname)"; fi
if read -r k < /proc/sys/kernel/osrelease 2>/dev/null; then echo "kernel=$k"; fi
echo "user=$(id -un)"
if command -v systemctl >/dev/null 2>&1; then echo init=systemd; fi
if [ -r /proc/uptime ]; then read -r up _ < /proc/uptime; echo "uptime=$up"; fi
if [ -r {os_release} ]; then
  while IFS= read -r line; do
    case $line in ID=*|VERSION_ID=*|PRETTY_NAME=*) echo "os.$line";; esac
  done < {os_release}
fi
:""".replace("{os_release}", shlex.quote(hostlayout.OS_RELEASE))
"""Shell built-ins only where possible: each fork costs on a busy host."""


def _unquote(value: str) -> str:
    try:
        parts = shlex.split(value)
    except ValueError:
        return value
    return parts[0] if len(parts) == 1 else value


@dataclass(frozen=True)
class SystemInfo(Fact[SystemFacts]):
    section = "system"

    def script(self) -> str:
        return _SCRIPT

    def parse(self, stdout: str) -> SystemFacts:
        kv = key_values(stdout)
        if not kv.get("hostname"):
            raise FactParseError("no hostname in the output")
        uptime = kv.get("uptime")
        return SystemFacts(
            hostname=kv["hostname"],
            os_id=_unquote(kv["os.ID"]) if "os.ID" in kv else None,
            os_version=_unquote(kv["os.VERSION_ID"]) if "os.VERSION_ID" in kv else None,
            os_pretty=_unquote(kv["os.PRETTY_NAME"]) if "os.PRETTY_NAME" in kv else None,
            init_system=kv.get("init", "unknown"),
            kernel=kv.get("kernel") or None,
            user=kv.get("user") or None,
            uptime_seconds=float(uptime) if uptime else None,
        )
