"""Has the running HAProxy loaded /etc/haproxy/haproxy.cfg as it is now ("written" vs "active")?

An apply killed between ``mv haproxy.cfg`` and ``systemctl reload haproxy`` (or a reload that
failed) leaves a new file and an old running configuration, which the file's hash alone cannot
show. The ``haproxy.files`` section therefore also prints, while haproxy is active:

- ``loaded_sha256``: :data:`~hactl.facts.haproxy.LOADED_MARKER`, which ``ConfigureHAProxy``
  writes after each successful start or reload (the hash of the file it loaded);
- ``config_mtime``: the file's modification time (``date -r``, nanoseconds);
- ``started``: the start time (clock ticks since boot, ``/proc/PID/stat``) of the haproxy
  master and of its workers (a start or a graceful reload forks a new worker; the master of
  ``-Ws`` keeps its PID), with ``now`` and ``uptime`` read together to put them on the wall
  clock.

:func:`loaded_state` decides: the marker equals the file's hash → loaded (hactl loaded exactly
this file; this does not depend on clocks). Otherwise the newest haproxy process started after
the file was written (a boot, which empties /run, or a reload by hand) → loaded. Otherwise the
file was written after the last (re)load: not loaded, a graceful reload is due.
"""

from __future__ import annotations

from hactl import hostlayout
from hactl.facts.base import key_values, sh
from hactl.transport import tools

CLOCK_TICKS = 100
"""USER_HZ: the unit of /proc/PID/stat start times (100 on every Linux architecture's ABI)."""
SLACK = 0.05
"""Seconds of clock resolution (10 ms ticks, /proc/uptime's 2 decimals, the time between the
``date`` and ``uptime`` reads) granted in favour of "loaded": a reload is never planned
because of rounding; a file written less than this after the last (re)load is not told apart."""

_FILES = r"""if [ -f {cfg} ]; then
  echo "config_sha256=$(sha256sum < {cfg})"
  if [ "${active}" = active ]; then
    if [ -r {marker} ]; then read -r __hactl_hp_m __hactl_hp_x < {marker}; echo "loaded_sha256=$__hactl_hp_m"; fi
    echo "config_mtime=$(date -r {cfg} +%s.%N 2>/dev/null)"
    __hactl_hp_pid=$(@MAIN_PID@ 2>/dev/null)
    if [ -n "$__hactl_hp_pid" ] && [ "$__hactl_hp_pid" != 0 ]; then
      __hactl_hp_ps=$__hactl_hp_pid
      for __hactl_hp_t in /proc/"$__hactl_hp_pid"/task/*/children; do
        __hactl_hp_c=; {{ read -r __hactl_hp_c < "$__hactl_hp_t"; }} 2>/dev/null; __hactl_hp_ps="$__hactl_hp_ps $__hactl_hp_c"
      done
      for __hactl_hp_p in $__hactl_hp_ps; do
        if {{ read -r __hactl_hp_l < /proc/"$__hactl_hp_p"/stat; }} 2>/dev/null; then
          __hactl_hp_l=${{__hactl_hp_l##*") "}}; set -f; set -- $__hactl_hp_l; set +f; echo "started=${{20}}"
        fi
      done
      echo "now=$(date +%s.%N)"; read -r __hactl_hp_up __hactl_hp_x < /proc/uptime; echo "uptime=$__hactl_hp_up"
    fi
  fi
fi
:""".replace("@MAIN_PID@", sh(tools.systemctl("show", "-p", "MainPID", "--value", "haproxy.service")))


def _number(text: str | None) -> float | None:
    try:
        return float(text) if text else None
    except ValueError:
        return None


def loaded_state(config: str | None, marker: str | None, stdout: str) -> tuple[bool | None, str]:
    """``(loaded, why)`` from the section's output; ``loaded`` None when it cannot be told
    (no file, haproxy not running, no start times)."""
    if config is None:
        return None, ""
    if marker is not None and marker == config:
        return True, "hactl reloaded haproxy with this file"
    kv = key_values(stdout)
    starts = [
        s for line in stdout.splitlines() if line.startswith("started=")
        if (s := _number(line[len("started="):])) is not None
    ]  # fmt: skip
    mtime, now, uptime = (_number(kv.get(k)) for k in ("config_mtime", "now", "uptime"))
    if not starts or mtime is None or now is None or uptime is None:
        return None, ""  # not running (starting it loads the file), or nothing to read
    last_load = now - uptime + max(starts) / CLOCK_TICKS
    if last_load + SLACK >= mtime:
        return True, "haproxy (re)started after the file was written"
    return False, (
        f"{hostlayout.HAPROXY_CFG} was written after haproxy last (re)loaded"
        + (", and hactl's reload marker names another file" if marker else "")
        + ": the running haproxy has not loaded it (an apply interrupted before its reload, "
        "or a reload that failed)"
    )
