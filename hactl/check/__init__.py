"""``hactl check``: is the running control plane healthy, as the spec describes it?

Two parts, like the rest of hactl: :func:`gather` reads (the probe's facts for every host, plus
one extra round trip on a master for what the probe does not read: ``/readyz`` through the load
balancer endpoint and the leader-election Leases), and :func:`evaluate` is a pure function from
that data to a :class:`Report` of findings, each with what is wrong and what to do next.

Checks: the API answers ``/readyz`` through the LB endpoint; every master is a Node, Ready and
labelled control-plane; ``kube-scheduler`` and ``kube-controller-manager`` each have one holder
whose Lease has not expired; etcd members equal the spec, all started, no learners, and
``endpoint health`` is true on every member (each asked about itself, not ``--cluster`` alone);
every HAProxy backend server is UP and there is one per master; certificates are not expired
(a summary of the earliest expiry per host; under 30 days is a warning).
"""

from hactl.check.evaluate import evaluate
from hactl.check.gather import api_script, gather, parse_api_output, parse_leases
from hactl.check.model import ApiAnswer, CheckData, Finding, Lease, Report

__all__ = [
    "ApiAnswer",
    "CheckData",
    "Finding",
    "Lease",
    "Report",
    "api_script",
    "evaluate",
    "gather",
    "parse_api_output",
    "parse_leases",
]
