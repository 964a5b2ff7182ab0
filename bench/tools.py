"""The contenders of bench/probe_bench.py. Each is a callable → (wall seconds, error or None);
an error means the tool did not answer correctly for every host (the run is not timed)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchlib import timed_run, tool

Tool = Callable[[], tuple[float, str | None]]


@dataclass
class Context:
    spec_file: Path
    cluster: Any
    hosts: list[tuple[str, str]]  # (name, address)
    key: str
    known_hosts: str
    tmp: Path
    notes: dict[str, list[float]] = field(default_factory=dict)
    """Extra measurements per run, e.g. remote CPU seconds of the probe script (all hosts)."""
    converged: bool = False
    """The lab was converged first: every timed `hactl plan` must be a no-op (no steps)."""

    @classmethod
    def create(cls, spec_file: Path, lab: Any, converged: bool = False) -> Context:
        cluster = lab.cluster
        hosts = [(h.name, str(h.address)) for h in cluster.all_hosts()]
        tmp = Path(tempfile.mkdtemp(prefix=f"hactl-bench-{lab.name}-"))
        return cls(spec_file, cluster, hosts, lab.key_file, lab.known_hosts, tmp,
                   converged=converged)

    @property
    def n(self) -> int:
        return len(self.hosts)

    def cleanup(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)


def _missing(expected: set[str], got: dict[str, str]) -> str | None:
    """None when every host answered its own hostname; else what went wrong."""
    bad = sorted(h for h in expected if got.get(h) != h)
    if not bad:
        return None
    sample = ", ".join(f"{h}={got.get(h)!r}" for h in bad[:3])
    return f"{len(bad)}/{len(expected)} hosts without a correct answer ({sample})"


# -- hactl ------------------------------------------------------------------------------------

def hactl_plan(ctx: Context) -> Tool:
    """The whole CLI process: start-up, load the spec, probe every host, diff, plan, print."""
    argv = [tool("hactl"), "plan", "-f", str(ctx.spec_file), "--json"]
    names = {name for name, _ in ctx.hosts}

    def run() -> tuple[float, str | None]:
        seconds, proc = timed_run(argv)
        if proc.returncode != 0:
            return seconds, f"exit {proc.returncode}: {proc.stderr.strip()[-300:]}"
        doc = json.loads(proc.stdout)
        if doc.get("unreachable"):
            return seconds, f"unreachable hosts: {sorted(doc['unreachable'])[:5]}"
        if set(doc.get("fingerprint", {})) != names:
            return seconds, f"fingerprint covers {len(doc.get('fingerprint', {}))}/{len(names)} hosts"
        if ctx.converged and doc.get("steps"):
            return seconds, f"not a no-op: {len(doc['steps'])} steps, {doc.get('summary')}"
        return seconds, None

    return run


def hactl_probe(ctx: Context) -> Tool:
    """The probe alone through the Python API (connect, one round trip per host, close)."""
    from hactl.probe import probe_cluster

    def run() -> tuple[float, str | None]:
        started = time.perf_counter()
        observed = asyncio.run(probe_cluster(ctx.cluster, spec_dir=str(ctx.spec_file.parent)))
        seconds = time.perf_counter() - started
        down = [h for h, f in observed.hosts.items() if not f.reachable]
        if down or len(observed.hosts) != ctx.n:
            return seconds, f"{len(down)} unreachable of {len(observed.hosts)}: {down[:5]}"
        errs = {h: f.section_errors for h, f in observed.hosts.items() if f.section_errors}
        if errs:
            first = next(iter(errs.items()))
            return seconds, f"section errors on {len(errs)} hosts, e.g. {first}"
        return seconds, None

    return run


def hactl_transport_hostname(ctx: Context) -> Tool:
    """hactl's own transport (Python API) reading one fact: connect to all, `hostname`, close."""
    from hactl.transport.ssh import Connections

    async def go() -> dict[str, str]:
        async with Connections(ctx.cluster, spec_dir=str(ctx.spec_file.parent)) as conns:
            transports = await conns.open_all()
            names = [n for n, t in transports.items() if not isinstance(t, BaseException)]
            outs = await asyncio.gather(*(conns.transport(n).run(("hostname",)) for n in names))
            return {n: r.stdout.strip() for n, r in zip(names, outs, strict=True)}

    def run() -> tuple[float, str | None]:
        started = time.perf_counter()
        got = asyncio.run(go())
        return time.perf_counter() - started, _missing({n for n, _ in ctx.hosts}, got)

    return run


# -- pyinfra ----------------------------------------------------------------------------------

def pyinfra_fact(ctx: Context) -> Tool:
    inv = ctx.tmp / "pyinfra_inventory.py"
    data = {"ssh_user": "root", "ssh_key": ctx.key, "ssh_known_hosts_file": ctx.known_hosts,
            "ssh_strict_host_key_checking": "yes", "ssh_allow_agent": False,
            "ssh_look_for_keys": False}
    hosts = [(name, {"ssh_hostname": addr, **data}) for name, addr in ctx.hosts]
    inv.write_text(f"hosts = {hosts!r}\n", encoding="utf-8")
    argv = [tool("pyinfra"), str(inv), "fact", "server.Hostname", "-y", "--parallel", str(ctx.n)]
    names = {name for name, _ in ctx.hosts}

    def run() -> tuple[float, str | None]:
        seconds, proc = timed_run(argv, cwd=str(ctx.tmp))
        out = proc.stdout + proc.stderr
        if proc.returncode != 0:
            return seconds, f"exit {proc.returncode}: {out.strip()[-300:]}"
        m = re.search(r"^--> Fact data for: server\.Hostname\n(\{.*?^\})$", out, re.S | re.M)
        if m is None:
            return seconds, "no fact data in the output"
        return seconds, _missing(names, json.loads(m.group(1)))

    return run


# -- Ansible ----------------------------------------------------------------------------------

def ansible_vars(ctx: Context) -> dict[str, str]:
    """The inventory variables of every Ansible contender (user, key, strict known_hosts)."""
    return {"ansible_user": "root", "ansible_ssh_private_key_file": ctx.key,
            "ansible_ssh_common_args": f"-o UserKnownHostsFile={ctx.known_hosts} "
                                       "-o StrictHostKeyChecking=yes",
            "ansible_python_interpreter": "/usr/bin/python3"}


def _ansible_setup(ctx: Context) -> tuple[Path, dict[str, str]]:
    inv = ctx.tmp / "ansible_inventory.ini"
    lines = ["[all]"] + [f"{name} ansible_host={addr}" for name, addr in ctx.hosts]
    lines += ["", "[all:vars]"] + [f"{k}='{v}'" if " " in v else f"{k}={v}"
                                   for k, v in ansible_vars(ctx).items()] + [""]
    inv.write_text("\n".join(lines), encoding="utf-8")
    home = ctx.tmp / "ansible-home"
    env = dict(os.environ, ANSIBLE_HOME=str(home), ANSIBLE_LOCAL_TEMP=str(home / "tmp"),
               ANSIBLE_HOST_KEY_CHECKING="True", ANSIBLE_NOCOLOR="1",
               ANSIBLE_DEPRECATION_WARNINGS="False", ANSIBLE_RETRY_FILES_ENABLED="False",
               ANSIBLE_CONFIG=str(ctx.tmp / "no-ansible.cfg"))
    return inv, env


_ANSIBLE_HEAD = re.compile(r"^(\S+) \| (\S+)(?: \| rc=(-?\d+))? (?:>>|=>)", re.M)


def parse_ansible(out: str) -> dict[str, str]:
    """host → first output line, for hosts whose result was CHANGED/SUCCESS with rc=0."""
    got: dict[str, str] = {}
    heads = list(_ANSIBLE_HEAD.finditer(out))
    for i, m in enumerate(heads):
        body = out[m.end(): heads[i + 1].start() if i + 1 < len(heads) else len(out)]
        if m.group(2) in ("CHANGED", "SUCCESS") and m.group(3) in ("0", None):
            first = body.strip().splitlines()[0].strip() if body.strip() else ""
            got[m.group(1)] = first
        else:
            got[m.group(1)] = f"{m.group(2)} rc={m.group(3)}"
    return got


def _stop_masters(cp_dir: Path) -> None:
    """Close the ControlPersist masters this run left (ours; they would idle for 60 s)."""
    if not cp_dir.is_dir():
        return
    for sock in cp_dir.iterdir():
        subprocess.run(["ssh", "-F", "/dev/null", "-o", f"ControlPath={sock}", "-O", "exit",
                        "placeholder"], capture_output=True, timeout=30, check=False)
    shutil.rmtree(cp_dir, ignore_errors=True)


def ansible_adhoc(ctx: Context, module: str) -> Tool:
    """`ansible all -m MODULE -a hostname -f N`, Ansible's defaults otherwise (ControlPersist in
    a fresh control dir per run, so every run starts without open connections)."""
    inv, env = _ansible_setup(ctx)
    names = {name for name, _ in ctx.hosts}

    def run() -> tuple[float, str | None]:
        cp_dir = ctx.tmp / f"cp-{secrets.token_hex(4)}"
        argv = [tool("ansible"), "all", "-i", str(inv), "-f", str(ctx.n), "-m", module,
                "-a", "hostname"]
        try:
            seconds, proc = timed_run(argv, env=dict(env, ANSIBLE_SSH_CONTROL_PATH_DIR=str(cp_dir)),
                                      cwd=str(ctx.tmp))
        finally:
            _stop_masters(cp_dir)
        err = _missing(names, parse_ansible(proc.stdout))
        if err is None and proc.returncode != 0:
            err = f"exit {proc.returncode}: {proc.stderr.strip()[-300:]}"
        return seconds, err

    return run


# -- plain OpenSSH ----------------------------------------------------------------------------

def _ssh_argv(ctx: Context, address: str, command: str) -> list[str]:
    return ["ssh", "-F", "/dev/null", "-i", ctx.key, "-o", f"UserKnownHostsFile={ctx.known_hosts}",
            "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-o", "ControlMaster=no",
            "-o", "ConnectTimeout=60", f"root@{address}", command]


def _parallel(argvs: list[list[str]]) -> tuple[float, list[subprocess.CompletedProcess[str]]]:
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=len(argvs)) as pool:
        procs = list(pool.map(lambda a: timed_run(a, timeout=600)[1], argvs))
    return time.perf_counter() - started, procs


def openssh_hostname(ctx: Context) -> Tool:
    """N `ssh HOST hostname` processes at once."""
    argvs = [_ssh_argv(ctx, addr, "hostname") for _, addr in ctx.hosts]

    def run() -> tuple[float, str | None]:
        seconds, procs = _parallel(argvs)
        got = {name: p.stdout.strip() if p.returncode == 0 else
               f"exit {p.returncode}: {(p.stderr.strip().splitlines() or [''])[-1][:160]}"
               for (name, _), p in zip(ctx.hosts, procs, strict=True)}
        return seconds, _missing({name for name, _ in ctx.hosts}, got)

    return run


_TIMES = re.compile(r"(\d+)m([\d.]+)s")


def remote_cpu(stdout: str) -> float:
    """User + system seconds of the remote shell and its children (`times` after the script)."""
    tail = stdout.rstrip().splitlines()[-2:]
    return sum(int(m) * 60 + float(s) for line in tail for m, s in _TIMES.findall(line))


def openssh_probe(ctx: Context) -> Tool:
    """N `ssh HOST '<hactl's batched probe script>'` at once (same script, same sections), and
    the shell's `times` at the end: the CPU the script costs on the hosts (a builtin, no fork)."""
    from hactl.facts.base import SKIPPED
    from hactl.probe import build_script, facts_for, split_sections

    def run() -> tuple[float, str | None]:
        marker = f"HACTL-{secrets.token_hex(8)}"
        plans = []
        for host in ctx.cluster.all_hosts():
            facts = facts_for(ctx.cluster, host)
            plans.append((host.name, {f.section for f in facts},
                          _ssh_argv(ctx, str(host.address), build_script(facts, marker) + "\ntimes\n")))
        seconds, procs = _parallel([argv for _, _, argv in plans])
        bad = []
        ctx.notes.setdefault("probe script: remote CPU s, all hosts", []).append(
            round(sum(remote_cpu(p.stdout) for p in procs), 3))
        skipped = 0
        for (name, sections, _), proc in zip(plans, procs, strict=True):
            answer = split_sections(proc.stdout, proc.stderr, marker)
            skipped += sum(sec.exit_status == SKIPPED for sec in answer.values())
            got = set(answer)
            if proc.returncode != 0 or got != sections:
                why = (proc.stderr.strip().splitlines() or ["no stderr"])[-1][:160]
                bad.append(f"{name}: exit {proc.returncode}, {len(got)}/{len(sections)} "
                           f"sections ({why})")
        ctx.notes.setdefault("openssh probe script: facts skipped (status 100), all hosts",
                             []).append(skipped)
        return seconds, (f"{len(bad)} hosts: {bad[:3]}" if bad else None)

    return run


def make_tools(ctx: Context) -> dict[str, Tool]:
    return {
        "hactl plan (CLI)": hactl_plan(ctx),
        "hactl probe (Python API)": hactl_probe(ctx),
        "hactl transport hostname (Python API)": hactl_transport_hostname(ctx),
        "pyinfra fact server.Hostname": pyinfra_fact(ctx),
        "ansible -m command hostname": ansible_adhoc(ctx, "command"),
        "ansible -m raw hostname": ansible_adhoc(ctx, "raw"),
        "openssh hostname": openssh_hostname(ctx),
        "openssh probe script": openssh_probe(ctx),
        **same_facts_tools(ctx),
    }


def same_facts_tools(ctx: Context) -> dict[str, Tool]:
    """pyinfra and Ansible reading exactly hactl's facts, one command per fact (samefacts.py)."""
    from samefacts import ansible_samefacts, describe, pyinfra_samefacts

    d = describe(ctx)
    k = f"{d['min']}–{d['max']} facts/host" if d["min"] != d["max"] else f"{d['min']} facts/host"
    return {
        f"pyinfra, same facts ({k})": pyinfra_samefacts(ctx),
        f"ansible -m command, same facts ({k})": ansible_samefacts(ctx, "command"),
        f"ansible -m raw, same facts ({k})": ansible_samefacts(ctx, "raw"),
    }
