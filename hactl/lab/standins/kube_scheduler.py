"""Stand-in for ``kube-scheduler`` (``python3 -m hactl.lab.standins.kube_scheduler``).

Leader election on the Lease ``kube-system/kube-scheduler`` with the real defaults (15 s / 10 s /
2 s, shortened only by the same ``--leader-elect-*`` flags); ``/healthz`` on ``--secure-port``
(10259). See docs/standins/apiserver.md.
"""

from __future__ import annotations

import sys
import threading

from .kubeapi import Client
from .leader import run_component
from .scheduler import Scheduler


def _work(client: Client, flags: dict[str, str], lost: threading.Event) -> None:
    Scheduler(client).run(lost)


def main(argv: list[str] | None = None) -> int:
    return run_component("kube-scheduler", 10259, sys.argv[1:] if argv is None else argv, _work)


if __name__ == "__main__":
    sys.exit(main())
