"""Which of etcd, etcdctl, haproxy, kubeadm, kubelet, kubectl a host has, and their versions.

Each host looks only for the binaries of its roles (:data:`ROLE_BINARIES`): an LB is not asked
for kubelet. Finding a binary is the shell built-in ``command -v`` (no process); asking its
version starts it, which costs tens of milliseconds of CPU for the Kubernetes tools, so:

- the versions of the node tools (kubeadm, kubelet, kubectl) are asked only on a node that has
  not joined a cluster yet (no ``/etc/kubernetes/kubelet.conf``): that is where the next
  ``kubeadm init``/``join`` runs them. On a joined node the version that matters is the RUNNING
  kubelet's, which its Node object reports (``status.nodeInfo.kubeletVersion``, read from a
  master); the binaries' are ``None`` there (:data:`UNTIL_JOINED`).
- every other binary of the host's roles is asked each time.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from hactl import hostlayout
from hactl.facts.base import Fact, find_version
from hactl.facts.model import BINARY_NAMES, BinariesFacts, Binary

VERSION_ARGS: dict[str, str] = {
    "etcd": "--version",
    "etcdctl": "version",
    "haproxy": "-v",
    "kubeadm": "version -o short",
    "kubelet": "--version",
    "kubectl": "version --client",
}
"""How each binary prints its version (first line holds it)."""

ROLE_BINARIES: dict[str, tuple[str, ...]] = {
    "etcd": ("etcd", "etcdctl"),
    "lb": ("haproxy",),
    "master": ("kubeadm", "kubelet", "kubectl"),
    "worker": ("kubeadm", "kubelet"),
}
"""The binaries a host of each role is asked about."""

UNTIL_JOINED: tuple[str, ...] = ("kubeadm", "kubelet", "kubectl")
"""Versions asked only while the node has no kubelet.conf (see the module doc)."""

JOINED_MARK = hostlayout.KUBELET_CONF

_SCRIPT = r"""__hactl_nl='
'
__hactl_joined=
if [ -f {joined_mark} ]; then __hactl_joined=1; fi
for b in {names}; do
  p=$(command -v "$b" 2>/dev/null) || continue
  case $b in
    {until_joined}) if [ -n "$__hactl_joined" ]; then printf '%s\t%s\t\n' "$b" "$p"; continue; fi;;
  esac
  (
    case $b in
{cases}
    esac
    printf '%s\t%s\t%s\n' "$b" "$p" "${{v%%"$__hactl_nl"*}}"
  ) &
done
wait"""
"""The version commands run in parallel (one short line each, written at once); the order of
the lines does not matter to the parser. An empty version column = not asked."""


def binaries_for(roles: Iterable[str]) -> tuple[str, ...]:
    """The binaries of these roles, in :data:`BINARY_NAMES` order."""
    wanted = {name for role in roles for name in ROLE_BINARIES.get(role, ())}
    return tuple(name for name in BINARY_NAMES if name in wanted)


@dataclass(frozen=True)
class BinaryVersions(Fact[BinariesFacts]):
    names: tuple[str, ...] = BINARY_NAMES
    """The binaries looked for (the host's roles' :func:`binaries_for`)."""
    until_joined: tuple[str, ...] = UNTIL_JOINED

    section = "binaries"

    def script(self) -> str:
        cases = "\n".join(
            f'      {name}) v=$("$p" {VERSION_ARGS[name]} 2>&1 </dev/null);;' for name in self.names
        )
        until = "|".join(self.until_joined) or "__hactl_none"
        return _SCRIPT.format(
            names=" ".join(self.names), cases=cases, until_joined=until, joined_mark=JOINED_MARK
        )

    def parse(self, stdout: str) -> BinariesFacts:
        found: dict[str, Binary | None] = dict.fromkeys(self.names)
        for line in stdout.splitlines():
            name, _, rest = line.partition("\t")
            path, _, version_text = rest.partition("\t")
            if name in found and path:
                found[name] = Binary(path=path, version=find_version(version_text))
        return BinariesFacts(found=found)
