"""What host preparation (the spec's ``prepare`` section) needs to know of a master or worker,
read in one section only when the spec asks for preparation:

- the Debian packages kubeadm, kubelet, kubectl and the container runtime's: installed version
  and whether they are held (``dpkg-query``; a package dpkg does not know is absent);
- the sha256 of each file preparation writes (APT source and keyring, modules-load.d,
  sysctl.d, containerd's configuration), absent ones left out;
- the swap entries of /etc/fstab that are not commented out (``swapoff -a`` alone would not
  survive a reboot).

The live kernel values (swap in use, ``ip_forward``, the bridge setting, loaded modules) and the
runtime's socket come from the ``preflight`` section, containerd's unit state from
``services``: nothing is read twice.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from hactl import hostlayout
from hactl.facts.base import Fact, FactParseError
from hactl.facts.model import Package, PrepareFacts
from hactl.render.prepare import PACKAGES as KUBERNETES_PACKAGES

FILES: tuple[str, ...] = (
    hostlayout.APT_SOURCE,
    hostlayout.APT_KEYRING_ASC,
    hostlayout.APT_KEYRING_GPG,
    hostlayout.MODULES_LOAD,
    hostlayout.SYSCTL_CONF,
    hostlayout.CONTAINERD_CONFIG,
)


_SCRIPT = r"""dpkg-query -W -f='package\t${{Package}}\t${{Version}}\t${{Status}}\n' {packages} 2>/dev/null
for __hactl_f in {files}; do
  if [ -f "$__hactl_f" ]; then __hactl_s=$(sha256sum < "$__hactl_f") && printf 'file\t%s\t%s\n' "$__hactl_f" "${{__hactl_s%% *}}"; fi
done
if [ -r {fstab} ]; then
  while read -r __hactl_dev __hactl_mp __hactl_type __hactl_rest; do
    case $__hactl_dev in ''|\#*) continue;; esac
    if [ "$__hactl_type" = swap ]; then printf 'swap\t%s\n' "$__hactl_dev"; fi
  done < {fstab}
fi
:"""


@dataclass(frozen=True)
class PrepareState(Fact[PrepareFacts]):
    """``packages``: the Debian packages to look at (kubeadm, kubelet, kubectl, the runtime's)."""

    packages: tuple[str, ...] = (*KUBERNETES_PACKAGES, "containerd")
    section = "prepare"

    def script(self) -> str:
        return _SCRIPT.format(
            packages=" ".join(shlex.quote(p) for p in self.packages),
            files=" ".join(shlex.quote(f) for f in FILES),
            fstab=shlex.quote(hostlayout.FSTAB),
        )

    def parse(self, stdout: str) -> PrepareFacts:
        packages: dict[str, Package] = {}
        files: dict[str, str] = {}
        swap: list[str] = []
        for line in stdout.splitlines():
            kind, _, rest = line.partition("\t")
            parts = rest.split("\t")
            if kind == "package":
                name, version, status = parts
                words = status.split()
                if len(words) != 3:
                    raise FactParseError(f"prepare: dpkg status {status!r} is not 'WANT ERROR STATUS'")
                if words[2] in ("installed", "half-configured", "unpacked", "half-installed",
                                "triggers-awaited", "triggers-pending") and version:
                    packages[name] = Package(version=version, held=words[0] == "hold")
            elif kind == "file":
                path, digest = parts
                if len(digest) != 64:
                    raise FactParseError(f"prepare: {path}: {digest!r} is not a sha256")
                files[path] = digest
            elif kind == "swap":
                swap.append(parts[0])
            elif line.strip():
                raise FactParseError(f"prepare: unexpected line {line[:80]!r}")
        return PrepareFacts(packages=packages, files=files, fstab_swap=tuple(swap))
