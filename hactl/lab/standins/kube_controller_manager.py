"""Stand-in for ``kube-controller-manager`` (``python3 -m hactl.lab.standins.kube_controller_manager``).

Leader election on the Lease ``kube-system/kube-controller-manager`` with the real defaults
(``--leader-elect-lease-duration=15s``, ``--leader-elect-renew-deadline=10s``,
``--leader-elect-retry-period=2s``); while leading it runs the controllers of
:mod:`controller_manager`. ``/healthz`` is served on ``--secure-port`` (10257). See
docs/standins/apiserver.md.
"""

from __future__ import annotations

import sys
import threading

from .controller_manager import ControllerManager
from .kubeapi import Client
from .leader import run_component


def _work(client: Client, flags: dict[str, str], lost: threading.Event) -> None:
    ControllerManager(client, flags).run(lost)


def main(argv: list[str] | None = None) -> int:
    return run_component("kube-controller-manager", 10257,
                         sys.argv[1:] if argv is None else argv, _work)


if __name__ == "__main__":
    sys.exit(main())
