"""The kubelet stand-in's view of the container runtime's network, and the host effects of the
containers it "runs".

Network readiness is containerd's (CRI plugin + go-cni ``loadFromConfDir``, libcni
``ConfFiles``/``ConfFromFile``/``ConfListFromFile``): the files of ``/etc/cni/net.d`` ending in
``.conf``, ``.conflist`` or ``.json``, sorted by name; the first one is loaded — a
``.conflist`` must be a JSON object with a ``name`` and a non-empty ``plugins`` list whose
entries each have a ``type``; any other must be a JSON object with a ``type``. A first file that
does not load leaves the network not ready (containerd logs the load error and keeps no network);
no file at all: ``cni plugin not initialized``. The runtime's answer reaches the Node as the real
kubelet words it (``pkg/kubelet/kubelet.go`` ``updateRuntimeUp``,
``container.RuntimeCondition.String``): ``container runtime network not ready:
NetworkReady=false reason:NetworkPluginNotReady message:Network plugin returns error: cni plugin
not initialized``.

Host effects: the stand-in runs no images, so a container does exactly what its manifest says it
does to the host and nothing else. Implemented: ``cp [-f] SRC… DEST`` (``command`` + ``args``),
where each path is resolved through the container's ``volumeMounts``: a ``configMap`` or
``secret`` volume is materialised from the API (the key, or the ``items`` path it is mapped to),
a ``hostPath`` volume is the node's own filesystem. The copy is performed on the node when the
destination is under a hostPath mount. A source that is in no mount is inside the image, which
does not exist here: nothing is copied (a documented deviation; flannel's ``install-cni-plugin``
copies ``/flannel`` this way, and the stand-in runtime never needs a CNI binary). Every other
command has no host effect.
"""

from __future__ import annotations

import base64
import json
import os
import posixpath
from collections.abc import Callable
from typing import Any

from .kubeadm_common import P

CNI_DIR = "/etc/cni/net.d"
NOT_INITIALIZED = "cni plugin not initialized"

#: The kubelet requires a CNI configuration before it reports Ready, as the real one does with
#: containerd (hactl installs a pod network right after init).
REQUIRE_CNI = True


def _load_conf(path: str) -> str:
    """"" when libcni loads ``path`` as go-cni does, else the error."""
    try:
        with open(path, "rb") as handle:
            doc = json.loads(handle.read() or b"null")
    except (OSError, ValueError) as exc:
        return f"failed to load CNI config file {path}: {exc}"
    if not isinstance(doc, dict):
        return f"failed to load CNI config file {path}: not a JSON object"
    if path.endswith(".conflist"):
        if not doc.get("name"):
            return f"failed to load CNI config list file {path}: error parsing configuration list: no name"
        plugins = doc.get("plugins")
        if not isinstance(plugins, list):
            return f"failed to load CNI config list file {path}: error parsing configuration list: no 'plugins' key"
        if not plugins:
            return f"CNI config list in config file {path} has no networks, skipping"
        if any(not isinstance(p, dict) or not p.get("type") for p in plugins):
            return (f"failed to load CNI config list file {path}: failed to parse plugin config: "
                    "error parsing configuration: missing 'type'")
        return ""
    if not doc.get("type"):
        return f"network type not found in {path}"
    return ""


def cni_status(conf_dir: str = CNI_DIR) -> tuple[bool, str]:
    """(ready, load error or the not-initialized text) for ``conf_dir``."""
    directory = P(conf_dir)
    try:
        names = sorted(n for n in os.listdir(directory) if n.endswith((".conf", ".conflist", ".json")))
    except OSError:
        names = []
    if not names:
        return False, NOT_INITIALIZED
    error = _load_conf(os.path.join(directory, names[0]))
    return (not error), error or ""


def network_error(conf_dir: str = CNI_DIR) -> str:
    """The kubelet's runtime network error ("" when ready), as ``updateRuntimeUp`` words it."""
    if not REQUIRE_CNI:
        return ""
    ready, _ = cni_status(conf_dir)
    if ready:
        return ""
    return ("container runtime network not ready: NetworkReady=false reason:NetworkPluginNotReady "
            f"message:Network plugin returns error: {NOT_INITIALIZED}")


# -- host effects ---------------------------------------------------------------------------------

class EffectError(Exception):
    """The container would fail (exit 1) with this message."""


Fetch = Callable[[str, str], dict[str, Any] | None]  # (resource, name) in the pod's namespace


def _mount_for(path: str, container: dict[str, Any],
               volumes: dict[str, dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any], str] | None:
    """(mount, volume, path below the mount) for the longest mountPath containing ``path``."""
    best = None
    for mount in container.get("volumeMounts") or []:
        mpath = str(mount.get("mountPath") or "").rstrip("/") or "/"
        inside = path == mpath or path.startswith(mpath.rstrip("/") + "/")
        if inside and (best is None or len(mpath) > len(best[0])):
            best = (mpath, mount)
    if best is None:
        return None
    mpath, mount = best
    volume = volumes.get(str(mount.get("name")))
    if volume is None:
        return None
    rest = path[len(mpath):].lstrip("/")
    if mount.get("subPath"):
        rest = posixpath.join(str(mount["subPath"]), rest) if rest else str(mount["subPath"])
    return mount, volume, rest


def _projected_key(source: dict[str, Any], rest: str, keys: list[str]) -> str | None:
    """The ConfigMap/Secret key shown at ``rest`` inside the volume (``items`` or all keys)."""
    items = source.get("items")
    if items:
        for item in items:
            if str(item.get("path")) == rest:
                return str(item.get("key"))
        return None
    return rest if rest in keys else None


class HostEffects:
    def __init__(self, fetch: Fetch, log: Callable[[str], None]) -> None:
        self.fetch = fetch
        self.log = log

    def run_container(self, pod: dict[str, Any], container: dict[str, Any]) -> None:
        argv = [str(a) for a in (container.get("command") or [])] + \
            [str(a) for a in (container.get("args") or [])]
        if argv and posixpath.basename(argv[0]) == "cp":
            self._cp(pod, container, argv[1:])

    def _read(self, pod: dict[str, Any], container: dict[str, Any], path: str) -> bytes | None:
        """The file's bytes; None when it is in the image (no mount)."""
        volumes = {str(v.get("name")): v for v in (pod.get("spec") or {}).get("volumes") or []}
        found = _mount_for(path, container, volumes)
        if found is None:
            return None
        _, volume, rest = found
        if "hostPath" in volume:
            host = posixpath.join(str(volume["hostPath"].get("path") or "/"), rest)
            try:
                with open(P(host), "rb") as handle:
                    return handle.read()
            except OSError as exc:
                raise EffectError(f"cp: cannot stat '{path}': {exc.strerror}") from exc
        for kind, resource in (("configMap", "configmaps"), ("secret", "secrets")):
            if kind not in volume:
                continue
            source = volume[kind] or {}
            name = str(source.get("name") or source.get("secretName") or "")
            obj = self.fetch(resource, name)
            if obj is None:
                raise EffectError(f'{resource[:-1]} "{name}" not found')  # the volume cannot mount
            data = {str(k): str(v).encode() for k, v in (obj.get("data") or {}).items()} \
                if resource == "configmaps" else \
                {str(k): base64.b64decode(v) for k, v in (obj.get("data") or {}).items()}
            key = _projected_key(source, rest, list(data))
            if key is None or key not in data:
                raise EffectError(f"cp: cannot stat '{path}': No such file or directory")
            return data[key]
        raise EffectError(f"cp: cannot stat '{path}': volume type not supported by the lab's kubelet")

    def _host_path(self, pod: dict[str, Any], container: dict[str, Any], path: str) -> str | None:
        volumes = {str(v.get("name")): v for v in (pod.get("spec") or {}).get("volumes") or []}
        found = _mount_for(path, container, volumes)
        if found is None or "hostPath" not in found[1]:
            return None
        mount, volume, rest = found
        if mount.get("readOnly"):
            raise EffectError(f"cp: cannot create regular file '{path}': Read-only file system")
        return posixpath.join(str(volume["hostPath"].get("path") or "/"), rest)

    def _cp(self, pod: dict[str, Any], container: dict[str, Any], args: list[str]) -> None:
        paths = [a for a in args if not a.startswith("-")]
        if len(paths) < 2:
            raise EffectError("cp: missing destination file operand")
        *sources, dest = paths
        name = f"{(pod.get('metadata') or {}).get('name')}/{container.get('name')}"
        target = self._host_path(pod, container, dest)
        if target is None:
            self.log(f"kubelet: {name}: cp to {dest} stays inside the container (not a hostPath mount)")
            return
        for source in sources:
            data = self._read(pod, container, source)
            if data is None:
                self.log(f"kubelet: {name}: {source} is in the image, which the lab does not have: "
                         "not copied")
                continue
            out = P(target)
            if os.path.isdir(out) or len(sources) > 1:
                out = os.path.join(out, posixpath.basename(source))
            os.makedirs(os.path.dirname(out), exist_ok=True)
            tmp = f"{out}.hactl-cp"
            with open(tmp, "wb") as handle:
                handle.write(data)
            os.chmod(tmp, 0o644)
            os.replace(tmp, out)
            self.log(f"kubelet: {name}: copied {source} to {target}")
