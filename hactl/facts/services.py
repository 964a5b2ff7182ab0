"""The state of hactl's units (etcd, haproxy, kubelet) in ONE ``systemctl show`` call.

``systemctl show -p Id -p ActiveState -p UnitFileState a.service b.service`` prints one block
per unit (blank line between); the parser pairs each block's ``Id`` with its states whatever
their order. The snippet also sets ``HACTL_<UNIT>_ACTIVE`` shell variables that later sections
use as guards (e.g. etcdctl only runs when etcd is active), so no section calls systemctl again.
"""

from __future__ import annotations

from dataclasses import dataclass

from hactl.facts.base import Fact, is_active, is_enabled, sh
from hactl.transport import tools

UNITS: tuple[str, ...] = ("etcd", "haproxy", "kubelet")


def active_var(unit: str) -> str:
    """The shell variable holding ``unit``'s ActiveState (``HACTL_ETCD_ACTIVE``)."""
    return f"HACTL_{unit.upper()}_ACTIVE"


@dataclass(frozen=True)
class UnitState:
    active: bool
    enabled: bool
    active_state: str
    """``active``, ``inactive``, ``failed``, ``activating`` …"""


_SCRIPT = r"""__hactl_svc=$({show} 2>/dev/null)
printf '%s\n' "$__hactl_svc"
__hactl_id=; __hactl_st=; __hactl_ifs=$IFS
IFS='
'
set -f
for __hactl_l in $__hactl_svc; do
  case $__hactl_l in
    Id=*) __hactl_id=${{__hactl_l#Id=}};;
    ActiveState=*) __hactl_st=${{__hactl_l#ActiveState=}};;
    *) continue;;
  esac
  if [ -n "$__hactl_id" ] && [ -n "$__hactl_st" ]; then
    case $__hactl_id in
{cases}
    esac
    __hactl_id=; __hactl_st=
  fi
done
IFS=$__hactl_ifs
set +f
:"""


@dataclass(frozen=True)
class UnitStates(Fact[dict[str, UnitState]]):
    """States of ``units`` (names without ``.service``); a unit systemd does not know is
    inactive and not enabled."""

    units: tuple[str, ...] = UNITS
    section = "services"

    def script(self) -> str:
        cases = "\n".join(
            f"      {unit}.service) {active_var(unit)}=$__hactl_st;;" for unit in self.units
        )
        show = tools.systemctl("show", "-p", "Id", "-p", "ActiveState", "-p", "UnitFileState",
                               *(f"{unit}.service" for unit in self.units))
        return _SCRIPT.format(show=sh(show), cases=cases)

    def parse(self, stdout: str) -> dict[str, UnitState]:
        found: dict[str, dict[str, str]] = {}
        for block in stdout.split("\n\n"):
            props = dict(line.split("=", 1) for line in block.splitlines() if "=" in line)
            unit = props.get("Id", "").removesuffix(".service")
            if unit:
                found[unit] = props
        out = {}
        for unit in self.units:
            props = found.get(unit, {})
            state = props.get("ActiveState", "")
            out[unit] = UnitState(
                active=is_active(state),
                enabled=is_enabled(props.get("UnitFileState")),
                active_state=state or "unknown",
            )
        return out
