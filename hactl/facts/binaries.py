"""Which of etcd, etcdctl, haproxy, kubeadm, kubelet, kubectl are installed, and their versions."""

from __future__ import annotations

from dataclasses import dataclass

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

_SCRIPT = r"""__hactl_nl='
'
for b in {names}; do
  p=$(command -v "$b" 2>/dev/null) || continue
  (
    case $b in
{cases}
    esac
    printf '%s\t%s\t%s\n' "$b" "$p" "${{v%%"$__hactl_nl"*}}"
  ) &
done
wait"""
"""The version commands run in parallel (one short line each, written at once); the order of
the lines does not matter to the parser."""


@dataclass(frozen=True)
class BinaryVersions(Fact[BinariesFacts]):
    section = "binaries"

    def script(self) -> str:
        cases = "\n".join(
            f'      {name}) v=$("$p" {args} 2>&1 </dev/null);;'
            for name, args in VERSION_ARGS.items()
        )
        return _SCRIPT.format(names=" ".join(BINARY_NAMES), cases=cases)

    def parse(self, stdout: str) -> BinariesFacts:
        found: dict[str, Binary | None] = dict.fromkeys(BINARY_NAMES)
        for line in stdout.splitlines():
            name, _, rest = line.partition("\t")
            path, _, version_text = rest.partition("\t")
            if name in found and path:
                found[name] = Binary(path=path, version=find_version(version_text))
        return BinariesFacts(found=found)
