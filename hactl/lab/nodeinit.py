"""A lab node's PID 1: set up the node's file system view and hostname, then supervise units.

Started by :mod:`hactl.lab.boot` as ``/usr/bin/python3 -m hactl.lab.nodeinit NODE.json`` inside
fresh mount, UTS, IPC and PID namespaces and the node's network namespace. Standard library only.

Boot sequence:
 1. record our PID as seen from the machine (the lab kills the node by this PID);
 2. drop the copies of the machine's ``/run/netns`` mounts (so they don't pin other namespaces);
 3. bind the node's persistent /root and /tmp and the shim dir over /usr/local/sbin, then overlay
    /etc and /var (upper dirs in the lab state dir, lower = the machine's own), a fresh tmpfs on
    /run (with the ``d`` lines of tmpfiles.d) holding a read-only bind of hactl's checkout at
    ``IN_NODE_SRC`` (the checkout may be under /tmp or /root, which the node replaces), a fresh
    /proc and /sys;
 4. apply the per-network-namespace ``net.*`` settings of sysctl.d (as systemd-sysctl does at
    boot; a prepared node has ``net.ipv4.ip_forward = 1`` there, see :mod:`hactl.lab.image`);
 5. set the hostname, then run :class:`hactl.lab.supervisor.Supervisor` (sshd first, then every
    enabled unit); the main thread reaps every zombie of the node.
"""

from __future__ import annotations

import contextlib
import ctypes
import glob
import grp
import json
import os
import pwd
import resource
import socket
import sys

#: Where the node sees hactl's source (a read-only bind of the machine's checkout). The checkout
#: may live anywhere, including /tmp or /root, which a node replaces with its own directories.
IN_NODE_SRC = "/run/hactl-lab/src"

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
MNT_DETACH = 2
_libc = ctypes.CDLL(None, use_errno=True)


def mount(source: str, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    rc = _libc.mount(
        source.encode(), target.encode(), fstype.encode() if fstype else None,
        ctypes.c_ulong(flags), data.encode() if data else None,
    )
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {source} on {target} ({fstype}): {os.strerror(err)}")


def umount_lazy(target: str) -> None:
    _libc.umount2(target.encode(), MNT_DETACH)


def _mounts() -> list[tuple[str, str]]:
    with open("/proc/self/mountinfo", encoding="utf-8") as handle:
        rows = []
        for line in handle:
            left, _, right = line.partition(" - ")
            rows.append((left.split()[4].replace("\\040", " "), right.split()[0]))
        return rows


def _tmpfiles_for_run() -> None:
    """Create the ``d``/``D`` directories of tmpfiles.d that live under /run (as systemd would)."""
    for path in sorted(glob.glob("/usr/lib/tmpfiles.d/*.conf") + glob.glob("/etc/tmpfiles.d/*.conf")):
        try:
            with open(path, encoding="utf-8") as handle:
                lines = handle.read().splitlines()
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            if len(parts) < 2 or parts[0] not in {"d", "D"} or not parts[1].startswith("/run/"):
                continue
            target = parts[1]
            mode = int(parts[2], 8) if len(parts) > 2 and parts[2] != "-" else 0o755
            try:
                os.makedirs(target, exist_ok=True)
                os.chmod(target, mode)
                uid = pwd.getpwnam(parts[3]).pw_uid if len(parts) > 3 and parts[3] != "-" else 0
                gid = grp.getgrnam(parts[4]).gr_gid if len(parts) > 4 and parts[4] != "-" else 0
                os.chown(target, uid, gid)
            except (OSError, KeyError, ValueError):
                continue


SYSCTL_DIRS = ("/etc/sysctl.d", "/run/sysctl.d", "/usr/local/lib/sysctl.d", "/usr/lib/sysctl.d", "/lib/sysctl.d")
#: Only these keys are applied in a node: they belong to its network namespace. Anything else
#: in sysctl.d (kernel.*, vm.*, global net.core.*) is the machine's and must not be touched.
NETNS_SYSCTLS = ("net.ipv4.ip_forward", "net.ipv4.conf.", "net.ipv6.conf.", "net.bridge.",
                 "net.ipv4.ip_nonlocal_bind", "net.ipv6.ip_nonlocal_bind", "net.ipv4.ip_local_port_range")


def apply_sysctl_d() -> None:
    """systemd-sysctl for the node's own namespace: the ``*.conf`` of :data:`SYSCTL_DIRS` by
    file name (the first directory wins), then ``/etc/sysctl.conf``; later lines win."""
    chosen: dict[str, str] = {}
    for folder in SYSCTL_DIRS:
        for path in glob.glob(f"{folder}/*.conf"):
            chosen.setdefault(os.path.basename(path), path)
    files = [chosen[name] for name in sorted(chosen)] + ["/etc/sysctl.conf"]
    for path in files:
        try:
            with open(path, encoding="utf-8") as handle:
                lines = handle.read().splitlines()
        except OSError:
            continue
        for line in lines:
            line = line.strip()
            if not line or line[0] in "#;" or "=" not in line:
                continue
            key, _, value = line.lstrip("-").partition("=")
            key = key.strip().replace("/", ".")
            if not key.startswith(NETNS_SYSCTLS):
                continue
            try:
                with open("/proc/sys/" + key.replace(".", "/"), "w", encoding="utf-8") as handle:
                    handle.write(value.strip() + "\n")
            except OSError:
                continue


def _reroot_imports(old: str, new: str) -> None:
    """Point sys.path and the already imported packages (hactl, hactl.lab) at the in-node copy."""
    old = old.rstrip("/")
    sys.path[:] = [new + p[len(old):] if p == old or p.startswith(old + "/") else p for p in sys.path]
    for module in list(sys.modules.values()):
        paths = getattr(module, "__path__", None)
        if isinstance(paths, list):
            paths[:] = [new + p[len(old):] if p.startswith(old + "/") else p for p in paths]


def setup(cfg: dict[str, object]) -> None:
    outer_pid = os.readlink("/proc/self")  # still the machine's /proc: our PID out there
    pid_file = str(cfg["pid_file"])
    with open(pid_file + ".tmp", "w", encoding="utf-8") as handle:
        handle.write(outer_pid + "\n")
    os.replace(pid_file + ".tmp", pid_file)

    mount("none", "/", None, MS_REC | MS_PRIVATE)
    for target, fstype in _mounts():
        if fstype == "nsfs":
            umount_lazy(target)
    # Hold the checkout open before /tmp, /root and /run are replaced (it may live under them).
    src_fd = os.open(str(cfg["pythonpath"]), os.O_RDONLY | os.O_DIRECTORY)
    mount(str(cfg["root_dir"]), "/root", None, MS_BIND)
    mount(str(cfg["tmp_dir"]), "/tmp", None, MS_BIND)
    mount(str(cfg["bin_dir"]), "/usr/local/sbin", None, MS_BIND)
    mount("none", "/usr/local/sbin", None, MS_REMOUNT | MS_BIND | MS_RDONLY)
    overlays = cfg["overlays"]
    assert isinstance(overlays, dict)
    for target, layer in overlays.items():
        opts = f"lowerdir={target},upperdir={layer['upper']},workdir={layer['work']}"
        mount("overlay", target, "overlay", 0, opts)
    mount("tmpfs", "/run", "tmpfs", MS_NOSUID | MS_NODEV, "mode=755")
    os.makedirs("/run/lock", exist_ok=True)
    os.chmod("/run/lock", 0o1777)
    os.makedirs(IN_NODE_SRC, mode=0o755)
    mount(f"/proc/self/fd/{src_fd}", IN_NODE_SRC, None, MS_BIND)
    mount("none", IN_NODE_SRC, None, MS_REMOUNT | MS_BIND | MS_RDONLY)
    os.close(src_fd)
    _reroot_imports(str(cfg["pythonpath"]), IN_NODE_SRC)
    mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    with contextlib.suppress(OSError):
        mount("sysfs", "/sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_RDONLY)
    _tmpfiles_for_run()
    apply_sysctl_d()
    socket.sethostname(str(cfg["name"]))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))
    os.chdir("/")
    os.environ.clear()
    os.environ.update(
        PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        LANG="C.UTF-8",
        PYTHONPATH=IN_NODE_SRC,
    )


def main() -> None:
    with open(sys.argv[1], encoding="utf-8") as handle:
        cfg = json.load(handle)
    setup(cfg)
    from hactl.lab.supervisor import Supervisor

    sys.stderr.write(f"hactl-lab: node {cfg['name']} booted\n")
    sys.stderr.flush()
    Supervisor().run()


if __name__ == "__main__":
    main()
