"""Local test hosts: every host of a spec becomes a small machine on this one computer.

``Lab(cluster)`` (see :mod:`hactl.lab.lab` and docs/lab.md) brings nodes up and down. This
package stays import-light: the node init, the supervisor and the stand-ins import it under
Debian's ``/usr/bin/python3``, so ``Lab`` (which needs cryptography, yaml and the spec) is
loaded on first use.
"""

from __future__ import annotations

TYPE_CHECKING = False  # not `from typing import …`: importing typing costs a stand-in ~15 ms
if TYPE_CHECKING:
    from typing import Any

    from hactl.lab.lab import Lab, NodeStatus

__all__ = ["Lab", "NodeStatus"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from hactl.lab import lab

        return getattr(lab, name)
    raise AttributeError(name)
