"""A host whose SSH host key CHANGED is not "unreachable" (pure, no I/O; light to import).

The probe records it like an unreachable host (``reachable=False``, its error in ``error``) plus
``section_errors[HOST_KEY_CHANGED]``: what the host offered and what to do. A plan, an apply (its
fresh probe) and ``hactl check`` refuse every such host, needed by a step or not: it may be
another machine answering at the host's address. An unknown key (never recorded, refused under
``hostKeyPolicy: strict``) is not this: it stays an unreachable host.
"""

from __future__ import annotations

import dataclasses

from hactl.errors import HostKeyChangedError
from hactl.facts.model import HostFacts, Observed

HOST_KEY_CHANGED = "ssh.host_key"
"""``section_errors`` key of a host whose SSH host key CHANGED: what it offered, what to do."""


def mark_changed(facts: HostFacts, error: BaseException | str) -> HostFacts:
    """``facts`` of a host that could not be read, marked when ``error`` is a changed key."""
    if not isinstance(error, HostKeyChangedError):
        return facts
    words = error.message + (f"; {error.hint}" if error.hint else "")
    return dataclasses.replace(facts, section_errors={HOST_KEY_CHANGED: words})


def host_key_problems(observed: Observed) -> dict[str, str]:
    """Host → ``"NAME (ADDRESS): the SSH host key of … CHANGED (offered SHA256:…) …; verify …"``
    for every host whose key changed, in name order (empty: none)."""
    out = {}
    for name in sorted(observed.hosts):
        facts = observed.hosts[name]
        words = facts.section_errors.get(HOST_KEY_CHANGED)
        if words is not None and not facts.reachable:
            out[name] = f"{name} ({facts.address}): {words}"
    return out
