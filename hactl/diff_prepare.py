"""The diff of host preparation (the spec's opt-in ``prepare`` section): per master and worker,
one change per part that is not as the spec asks — ``kernel``, ``swap``, ``runtime``,
``packages`` — at ``master[NAME].<part>`` / ``worker[NAME].<part>``. A prepared host plans
nothing. The live kernel values and the runtime come from the ``preflight`` section, the files,
packages and fstab from the ``prepare`` section (:mod:`hactl.facts.prepare`).

Versions: on a node that has not joined yet, kubeadm, kubelet and kubectl are installed at the
spec's version whatever is there. On a joined node a different installed version is an upgrade
or a downgrade, which is not preparation's to do: it is left to the version refusals (the
packages part is only planned there for a missing hold, source or key)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

from hactl import hostlayout
from hactl.diff import Change, Op
from hactl.errors import PlanError
from hactl.facts.model import Observed
from hactl.spec.models import Cluster, Host
from hactl.spec.prepare import PrepareSettings
from hactl.vocabulary import Address, Aspect, Component

_KERNEL_WANT = {"ip_forward": "1", "bridge_nf_call_iptables": "1"}


def _sha(text: str | bytes) -> str:
    return hashlib.sha256(text.encode() if isinstance(text, str) else text).hexdigest()


def read_key(prepare: PrepareSettings) -> bytes:
    """The repository key named by ``prepare.packages.keyFile`` (the operator's file); a file
    that cannot be read is a configuration error naming the field and the file."""
    path = Path(prepare.packages.key_file).expanduser()
    try:
        return path.read_bytes()
    except OSError as exc:
        raise PlanError(f"prepare.packages.keyFile: cannot read {path}: {exc.strerror or exc}",
                        hint="give the APT repository's signing key (its Release.key) on this "
                        "machine; a relative path is relative to the spec file's folder") from exc


def prepare_changes(cluster: Cluster, observed: Observed) -> Iterator[Change]:
    from hactl.render import prepare as render

    prepare = cluster.prepare
    if prepare is None:
        return
    key = read_key(prepare)
    keyring = render.keyring_path(key)
    want_files = {
        hostlayout.MODULES_LOAD: _sha(render.modules_load()),
        hostlayout.SYSCTL_CONF: _sha(render.sysctl_conf()),
        hostlayout.CONTAINERD_CONFIG: _sha(render.containerd_config()),
        hostlayout.APT_SOURCE: _sha(render.apt_source(prepare, cluster.kubernetes.version_tuple,
                                                      keyring)),
        keyring: _sha(key),
    }
    version = render.package_version(cluster, prepare)
    nodes = [(h, Component.MASTER) for h in cluster.masters]
    nodes += [(h, Component.WORKER) for h in cluster.workers if h.name not in
              {m.name for m in cluster.masters}]
    for host, component in nodes:
        yield from _host(cluster, observed, host, component, want_files, keyring, version)


def _host(cluster: Cluster, observed: Observed, host: Host, component: Component,
          want_files: dict[str, str], keyring: str, version: str) -> Iterator[Change]:
    from hactl.render import prepare as render

    prepare = cluster.prepare
    assert prepare is not None
    facts = observed.get(host.name)
    state = facts.prepare if facts is not None else None
    pre = facts.preflight if facts is not None else None
    if state is None or pre is None:
        return  # not reached or not read: the probe's errors say why
    joined = facts is not None and facts.kubernetes is not None and facts.kubernetes.kubelet_conf

    def change(aspect: Aspect, before: dict[str, object], after: dict[str, object],
               why: list[str]) -> Change:
        op = Op.UPDATE if why else Op.NOOP
        return Change(op, Address(component, host.name, aspect), before, after,
                      "; ".join(why) if why else "as the spec's prepare section asks", host=host.name)

    if prepare.kernel:
        why = []
        for path in (hostlayout.MODULES_LOAD, hostlayout.SYSCTL_CONF):
            if state.files.get(path) != want_files[path]:
                why.append(f"{path} {'differs' if path in state.files else 'is missing'}")
        missing = [m for m in render.MODULES if m not in pre.modules]
        if missing:
            why.append(f"module(s) not loaded: {', '.join(missing)}")
        for field, want in _KERNEL_WANT.items():
            value = getattr(pre, field)
            if value != want:
                why.append(f"{field.replace('_', '-')} is {value if value is not None else 'absent'}")
        yield change(Aspect.KERNEL, {"settings": "as found"}, {"settings": "k8s.conf"}, why)
    if prepare.swap_off:
        why = []
        if pre.swap:
            why.append(f"swap on ({', '.join(pre.swap)}): swapoff -a")
        if state.fstab_swap:
            why.append(f"/etc/fstab turns swap on at boot ({', '.join(state.fstab_swap)}): comment "
                       "the entries out")
        yield change(Aspect.SWAP, {"swap": list(pre.swap) + list(state.fstab_swap)}, {"swap": []}, why)
    runtime = prepare.container_runtime
    why = []
    if state.installed(runtime.package) is None:
        why.append(f"{runtime.package} is not installed")
    if state.files.get(hostlayout.CONTAINERD_CONFIG) != want_files[hostlayout.CONTAINERD_CONFIG]:
        why.append(f"{hostlayout.CONTAINERD_CONFIG} "
                   + ("differs (systemd cgroup driver)" if hostlayout.CONTAINERD_CONFIG in state.files
                      else "is missing"))
    if pre.runtime is None or not pre.runtime.answers:
        why.append("its socket does not answer" + (f" ({pre.runtime.error})"
                                                   if pre.runtime and pre.runtime.error else ""))
    yield change(Aspect.RUNTIME, {"package": state.installed(runtime.package)},
                 {"package": runtime.package, "cgroup_driver": "systemd"}, why)
    why = []
    wrong = {p: state.installed(p) for p in render.PACKAGES if state.installed(p) != version}
    if wrong and not joined:
        why.append("install " + ", ".join(f"{p} {v or '(none)'} → {version}" for p, v in wrong.items()))
    unheld = [p for p in render.PACKAGES if p in state.packages and not state.packages[p].held
              and p not in wrong]
    if unheld:
        why.append(f"not held: {', '.join(unheld)}")
    for path in (hostlayout.APT_SOURCE, keyring):
        if state.files.get(path) != want_files[path]:
            why.append(f"{path} {'differs' if path in state.files else 'is missing'}")
    yield change(Aspect.PACKAGES, {p: state.installed(p) for p in render.PACKAGES},
                 {p: version for p in render.PACKAGES}, why)


def joined_version_changes(cluster: Cluster, observed: Observed) -> list[str]:
    """Refusals: a joined node whose kubeadm, kubelet or kubectl package is installed at
    another version than the spec's (``kubernetes.version`` with ``prepare.packages.revision``).
    Changing them there is an upgrade or a downgrade (drain, ``kubeadm upgrade``, one node at a
    time), not preparation."""
    from hactl.render import prepare as render

    prepare = cluster.prepare
    if prepare is None:
        return []
    version = render.package_version(cluster, prepare)
    out = []
    for host in (*cluster.masters, *cluster.workers):
        facts = observed.get(host.name)
        if facts is None or facts.prepare is None or facts.kubernetes is None \
                or not facts.kubernetes.kubelet_conf:
            continue
        other = {p: v for p in render.PACKAGES
                 if (v := facts.prepare.installed(p)) is not None and v != version}
        if other:
            have = ", ".join(f"{p} {v}" for p, v in other.items())
            out.append(
                f"{host.name} has joined the cluster with {have}; kubernetes.version and "
                f"prepare.packages.revision ask {version}: on a joined node that is an upgrade or "
                "a downgrade, which hactl does not plan yet; set the spec back to the installed "
                "version, or change the packages on the node by hand (drain it first)")
    return out
