"""PrepareHost: make a master or worker ready for kubeadm (the spec's opt-in ``prepare``).

One step per host, before anything else of the plan, doing the parts the plan found missing —
each decided again on the host from fresh reads, so a rerun after an interruption does only
what is left:

1. ``kernel``: /etc/modules-load.d/k8s.conf and /etc/sysctl.d/k8s.conf written; a module not
   loaded yet (no ``/sys/module/NAME``; br_netfilter: no ``/proc/sys/net/bridge``) is loaded with
   ``modprobe``; ``sysctl -p /etc/sysctl.d/k8s.conf`` applies the file (only that file: other
   files of /etc/sysctl.d are the host's business);
2. ``swap``: ``swapoff -a`` when /proc/swaps lists an area, and the swap entries of /etc/fstab
   commented out (``# `` + the line, so a reboot does not turn swap on again);
3. ``runtime``: the container runtime's package installed when missing, its configuration with
   the systemd cgroup driver written, ``systemctl enable`` and (re)start when the configuration
   changed or it was not running, then its socket must answer (``ctr version``);
4. ``packages``: the repository's key and APT source written, ``apt-get update``, kubeadm,
   kubelet and kubectl installed at exactly the spec's version (``--allow-downgrades
   --allow-change-held-packages``: the version is the spec's, whatever was held before), then
   held (``apt-mark hold``).
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from hactl import hostlayout
from hactl.errors import CommandError
from hactl.plan import commands as cmd
from hactl.plan.remote import put, run
from hactl.plan.step import Step, StepContext
from hactl.render import prepare as render
from hactl.transport import tools
from hactl.transport.base import Argv
from hactl.vocabulary import Action

PARTS = ("kernel", "swap", "runtime", "packages")
"""In the order they run."""

SOCKET_WAIT = 30.0
"""Seconds the runtime's socket may take to answer after a (re)start."""

SWAPS = "/proc/swaps"
MODULE_MARKERS = {"br_netfilter": "/proc/sys/net/bridge"}
"""How a loaded module shows: ``/sys/module/NAME``, except br_netfilter (built in, it has no
/sys/module entry on some kernels; its sysctl directory appears when it is loaded)."""
SWAP_NOTE = "  # swap off: hactl (prepare.swapOff)"


def module_marker(module: str) -> str:
    return MODULE_MARKERS.get(module, f"/sys/module/{module}")


def fstab_without_swap(text: str) -> str:
    """/etc/fstab with its active swap entries commented out (nothing else touched)."""
    out = []
    for line in text.splitlines(keepends=True):
        fields = line.split()
        if len(fields) >= 3 and not fields[0].startswith("#") and fields[2] == "swap":
            end = "\n" if line.endswith("\n") else ""
            line = f"# {line.rstrip(chr(10))}{SWAP_NOTE}{end}"
        out.append(line)
    return "".join(out)


def _ctr_version() -> Argv:
    return ("ctr", "--address", hostlayout.CONTAINERD_SOCKET, "version")


@dataclass(frozen=True)
class PrepareHost(Step):
    kind: ClassVar[str] = "prepare_host"
    order: ClassVar[int] = 5
    action: Action = Action.UPDATE
    timeout: float = 1800.0
    parts: tuple[str, ...] = ()
    """Which of :data:`PARTS` the plan found to do here."""
    version: str = ""
    """The packages' version (``1.30.4-1.1``)."""
    keyring: str = ""
    """Where the repository key goes (``.asc`` or ``.gpg``, by the key's form)."""
    runtime_package: str = "containerd"

    def _install(self) -> Argv:
        return tools.apt_get("install", "--allow-downgrades", "--allow-change-held-packages",
                             *(f"{p}={self.version}" for p in render.PACKAGES))

    def commands(self) -> list[str]:
        out: list[str] = []
        if "kernel" in self.parts:
            out.append(cmd.shown(cmd.mkdir(str(Path(hostlayout.MODULES_LOAD).parent), "0755")))
            out.append(cmd.shown_put(hostlayout.MODULES_LOAD, 0o644, ", ".join(render.MODULES)))
            for m in render.MODULES:
                out += [cmd.shown(("test", "-d", module_marker(m)), f"{m} loaded?"),
                        cmd.shown(("modprobe", m), "when not loaded")]
            out.append(cmd.shown(cmd.mkdir(str(Path(hostlayout.SYSCTL_CONF).parent), "0755")))
            out.append(cmd.shown_put(hostlayout.SYSCTL_CONF, 0o644,
                                     ", ".join(f"{k} = {v}" for k, v in render.SYSCTLS)))
            out.append(cmd.shown(("sysctl", "-p", hostlayout.SYSCTL_CONF)))
        if "swap" in self.parts:
            out += [cmd.shown(("cat", SWAPS)),
                    cmd.shown(("swapoff", "-a"), "when it lists a swap area"),
                    cmd.shown(("cat", hostlayout.FSTAB)),
                    cmd.shown_put(hostlayout.FSTAB, 0o644, "when it has active swap entries: "
                                  "commented out")]
        if "runtime" in self.parts:
            out += [
                cmd.shown(("dpkg-query", "-W", "-f=${Status}", self.runtime_package), "installed?"),
                cmd.shown(tools.apt_get("update"), "when it is not"),
                cmd.shown(tools.apt_get("install", self.runtime_package), "when it is not"),
                cmd.shown(("sha256sum", hostlayout.CONTAINERD_CONFIG)),
                cmd.shown(cmd.mkdir(str(Path(hostlayout.CONTAINERD_CONFIG).parent), "0755")),
                cmd.shown_put(hostlayout.CONTAINERD_CONFIG, 0o644,
                              "when it differs: runc with SystemdCgroup = true"),
                cmd.shown(tools.systemctl("enable", "containerd")),
                cmd.shown(tools.systemctl("is-active", "--quiet", "containerd")),
                cmd.shown(tools.systemctl("restart", "containerd"),
                          "when its configuration changed or it is not running"),
                cmd.shown(_ctr_version(), f"until the server answers, at most {SOCKET_WAIT:g} s"),
            ]
        if "packages" in self.parts:
            out += [
                cmd.shown(cmd.mkdir(hostlayout.APT_KEYRING_DIR, "0755")),
                cmd.shown_put(self.keyring, 0o644, "prepare.packages.keyFile"),
                cmd.shown_put(hostlayout.APT_SOURCE, 0o644),
                cmd.shown(tools.apt_get("update")),
                cmd.shown(self._install()),
                cmd.shown(tools.apt_mark("hold", *render.PACKAGES)),
            ]
        return out

    async def run(self, ctx: StepContext) -> None:
        assert self.host is not None and ctx.cluster.prepare is not None
        for part in PARTS:
            if part in self.parts:
                await getattr(self, f"_{part}")(ctx)
        ctx.log("host prepared", parts=list(self.parts))

    async def _must(self, ctx: StepContext, argv: Argv, *, timeout: float = 120.0) -> str:
        """Run ``argv``; a failure names the command and its last line of output."""
        assert self.host is not None
        res = await run(ctx, self.host, argv, timeout=timeout, check=False)
        if not res.ok:
            last = ((res.stderr or res.stdout).strip().splitlines() or ["(no output)"])[-1]
            raise CommandError(f"`{cmd.shown(argv)}` failed: {last}", host=self.host, step=self.id,
                               stderr=res.stderr, exit_status=res.exit_status)
        return res.stdout

    async def _kernel(self, ctx: StepContext) -> None:
        assert self.host is not None
        await self._must(ctx, cmd.mkdir(str(Path(hostlayout.MODULES_LOAD).parent), "0755"))
        await put(ctx, self.host, hostlayout.MODULES_LOAD, render.modules_load(), 0o644)
        for module in render.MODULES:
            loaded = await run(ctx, self.host, ("test", "-d", module_marker(module)), check=False)
            if not loaded.ok:
                await self._must(ctx, ("modprobe", module))
        await self._must(ctx, cmd.mkdir(str(Path(hostlayout.SYSCTL_CONF).parent), "0755"))
        await put(ctx, self.host, hostlayout.SYSCTL_CONF, render.sysctl_conf(), 0o644)
        await self._must(ctx, ("sysctl", "-p", hostlayout.SYSCTL_CONF))

    async def _swap(self, ctx: StepContext) -> None:
        assert self.host is not None
        swaps = await self._must(ctx, ("cat", SWAPS))
        if len(swaps.strip().splitlines()) > 1:  # a header line, then one line per area
            await self._must(ctx, ("swapoff", "-a"))
        fstab = await self._must(ctx, ("cat", hostlayout.FSTAB))
        wanted = fstab_without_swap(fstab)
        if wanted != fstab:
            await put(ctx, self.host, hostlayout.FSTAB, wanted, 0o644)

    async def _runtime(self, ctx: StepContext) -> None:
        assert self.host is not None
        status = await run(ctx, self.host, ("dpkg-query", "-W", "-f=${Status}", self.runtime_package),
                           check=False)
        if not status.stdout.strip().endswith(" installed"):
            await self._must(ctx, tools.apt_get("update"), timeout=600)
            await self._must(ctx, tools.apt_get("install", self.runtime_package), timeout=900)
        want = render.containerd_config()
        now = await run(ctx, self.host, ("sha256sum", hostlayout.CONTAINERD_CONFIG), check=False)
        changed = now.stdout.split()[:1] != [hashlib.sha256(want.encode()).hexdigest()]
        if changed:
            await self._must(ctx, cmd.mkdir(str(Path(hostlayout.CONTAINERD_CONFIG).parent), "0755"))
            await put(ctx, self.host, hostlayout.CONTAINERD_CONFIG, want, 0o644)
        await self._must(ctx, tools.systemctl("enable", "containerd"))
        active = await run(ctx, self.host, tools.systemctl("is-active", "--quiet", "containerd"),
                           check=False)
        if changed or not active.ok:
            await self._must(ctx, tools.systemctl("restart", "containerd"))
        deadline = time.monotonic() + SOCKET_WAIT
        while True:
            res = await run(ctx, self.host, _ctr_version(), check=False, timeout=10)
            if res.ok and "Server:" in res.stdout:
                return
            if time.monotonic() >= deadline:
                last = ((res.stderr or res.stdout).strip().splitlines() or ["(no output)"])[-1]
                raise CommandError(
                    f"containerd's socket {hostlayout.CONTAINERD_SOCKET} does not answer "
                    f"{SOCKET_WAIT:g} s after its start: {last}", host=self.host, step=self.id,
                    transient=True, hint="look at `journalctl -u containerd` on the host")
            await asyncio.sleep(1.0)

    async def _packages(self, ctx: StepContext) -> None:
        assert self.host is not None and ctx.cluster.prepare is not None
        prepare = ctx.cluster.prepare
        key = Path(prepare.packages.key_file).expanduser().read_bytes()
        if render.keyring_path(key) != self.keyring:
            raise CommandError(f"{prepare.packages.key_file} changed since the plan (it is now "
                               f"{'ASCII-armoured' if key.lstrip().startswith(b'-----') else 'binary'})",
                               host=self.host, step=self.id, hint="run `hactl plan` again")
        await self._must(ctx, cmd.mkdir(hostlayout.APT_KEYRING_DIR, "0755"))
        await put(ctx, self.host, self.keyring, key, 0o644)
        source = render.apt_source(prepare, ctx.cluster.kubernetes.version_tuple, self.keyring)
        await put(ctx, self.host, hostlayout.APT_SOURCE, source, 0o644)
        await self._must(ctx, tools.apt_get("update"), timeout=600)
        await self._must(ctx, self._install(), timeout=900)
        await self._must(ctx, tools.apt_mark("hold", *render.PACKAGES))
