"""Stand-ins for the parts of a node that cannot be installed here (see docs/lab.md).

Each command stand-in is a module run as ``/usr/bin/python3 -m hactl.lab.standins.<module>``
through a shim that the lab bind-mounts over ``/usr/local/sbin`` in every node. The shim named
``kube-apiserver`` runs module ``kube_apiserver`` (``-`` becomes ``_``); a shim is written only
when its module exists. A module may define ``IMAGE_FILES: dict[str, tuple[str, int]]``
(absolute path in the node → (content, mode)); ``lab up`` writes them into every node. Paths
must lie under /etc or /var (the node's private, persistent directories).

This package stays import-light: stand-ins run under Debian's Python (stdlib, cryptography, yaml).
"""

from __future__ import annotations

import importlib

SHIMS = (
    "systemctl",
    "kubeadm",
    "kubelet",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
)
SCRIPT_SHIMS = ("systemctl",)
"""Stand-ins that use only the standard library's C modules: their shim runs the module's file
as a script with ``python3 -S -E`` (no site, no package imports), which saves ~20 ms a call."""
IMAGE_MODULES = (
    "kubeadm",
    "kubelet",
    "kube_apiserver",
    "kube_controller_manager",
    "kube_scheduler",
)


def module_for(shim: str) -> str:
    """``kube-apiserver`` → ``hactl.lab.standins.kube_apiserver``."""
    return f"{__name__}.{shim.replace('-', '_')}"


def shim_script(shim: str, module: str, src: str) -> str:
    """The ``/usr/local/sbin/<shim>`` text for ``module``, with hactl's checkout at ``src``."""
    if shim in SCRIPT_SHIMS:
        path = f"{src}/{module.replace('.', '/')}.py"
        return f'#!/bin/sh\nexec /usr/bin/python3 -S -E {path} "$@"\n'
    return f'#!/bin/sh\nPYTHONPATH={src} exec /usr/bin/python3 -m {module} "$@"\n'


def available_shims() -> dict[str, str]:
    """Shim name → module, for every stand-in whose module exists now."""
    import importlib.util  # here, not at the top: every stand-in start imports this package

    found: dict[str, str] = {}
    for shim in SHIMS:
        module = module_for(shim)
        if importlib.util.find_spec(module) is not None:
            found[shim] = module
    return found


def image_files() -> dict[str, tuple[str, int]]:
    """Every stand-in's ``IMAGE_FILES`` merged (a module of the list that is missing is an error,
    not skipped)."""
    files: dict[str, tuple[str, int]] = {}
    for short in IMAGE_MODULES:
        module = importlib.import_module(f"{__name__}.{short}")
        files.update(getattr(module, "IMAGE_FILES", {}))
    return files
