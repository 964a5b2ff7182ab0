"""``kubeadm version`` and ``kubelet --version`` without the stand-ins' heavy imports.

The real binaries are Go programs that answer in milliseconds; hactl's probe asks both on every
host. This module uses only ``os``, ``re`` and ``json``, so the answer costs one interpreter start.
The version comes from ``/etc/hactl-lab/versions`` (a flat ``key: value`` file the lab writes).
"""

from __future__ import annotations

import json
import os
import re
import sys

VERSIONS_FILE = "/etc/hactl-lab/versions"
DEFAULT_VERSION = "v1.30.4"
BINARY_VERSION_ENV = "HACTL_LAB_BINARY_VERSION"
_BINARY_VERSION = os.environ.pop(BINARY_VERSION_ENV, "")


def _path(path: str) -> str:
    prefix = os.environ.get("HACTL_LAB_ROOT", "")
    if not prefix or path.startswith(prefix.rstrip("/") + "/"):
        return path
    return os.path.join(prefix, path.lstrip("/"))


def kubernetes_version() -> str:
    """``v1.30.4``: the ``kubernetes`` line of the versions file, or the default."""
    value = _BINARY_VERSION
    try:
        with open(_path(VERSIONS_FILE)) as handle:
            for line in handle:
                match = re.match(r"^kubernetes:\s*['\"]?([^'\"\s#]+)", line)
                if match and not _BINARY_VERSION:
                    value = match.group(1)
    except OSError:
        pass
    value = value or DEFAULT_VERSION
    return value if value.startswith("v") else "v" + value


def version_info() -> dict[str, str]:
    """kubeadm's ``version.Info`` fields for this stand-in."""
    ver = kubernetes_version()
    numbers = re.findall(r"\d+", ver)
    return {"major": numbers[0], "minor": numbers[1], "gitVersion": ver,
            "gitCommit": "0000000000000000000000000000000000000000", "gitTreeState": "clean",
            "buildDate": "2024-08-14T00:00:00Z", "goVersion": "go1.22.5", "compiler": "gc",
            "platform": "linux/amd64"}


def kubeadm_version_text(output: str) -> str | None:
    """The text of ``kubeadm version -o OUTPUT``; None for ``yaml`` (needs the yaml module)."""
    info = version_info()
    if output == "short":
        return info["gitVersion"]
    if output == "json":
        return json.dumps({"clientVersion": info}, indent=2)
    if output == "":
        fields = ", ".join(f'{k[0].upper() + k[1:]}:"{v}"' for k, v in info.items())
        return f"kubeadm version: &version.Info{{{fields}}}"
    return None


def answer_fast(binary: str, argv: list[str]) -> None:
    """Print the version and exit when ``argv`` only asks for it; return otherwise."""
    text: str | None = None
    if binary == "kubelet" and argv == ["--version"]:
        text = f"Kubernetes {kubernetes_version()}"
    elif binary == "kubeadm" and argv[:1] == ["version"]:
        rest = argv[1:]
        if rest in ([], ["-o", "short"], ["--output", "short"], ["-o", "json"], ["--output", "json"]):
            text = kubeadm_version_text(rest[1] if rest else "")
    if text is not None:
        sys.stdout.write(text + "\n")
        sys.stdout.flush()
        raise SystemExit(0)
