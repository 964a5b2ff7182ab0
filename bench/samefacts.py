""""Same facts" contenders of bench/probe_bench.py: pyinfra and Ansible reading exactly the facts
hactl's probe reads (``hactl.probe.facts_for(cluster, host)``), each fact as its own command, the
way a user of that tool would write it.

A fact's snippet is a shell function body (it may ``return``; status 100 = "does not apply
here"), so each becomes a small standalone ``sh`` program: hactl's preamble (stdin closed,
``LC_ALL=C``, the sbin directories on PATH), then ``__hactl_f() { SNIPPET }; __hactl_f``. In
hactl's batched script the ``services`` section sets ``HACTL_<UNIT>_ACTIVE`` for the sections
after it (etcdctl only runs where etcd is active); a command of its own cannot see that, so a
snippet that reads such a variable first sets it with ``systemctl is-active UNIT.service`` (one
more ``systemctl`` per etcdctl fact than hactl runs; the guarded work itself is the same).

Any exit status in the fact's ``ok_statuses`` or 100 is accepted (``failed_when: false`` in
Ansible, a trailing ``printf`` of ``$?`` in pyinfra); every host must have run every fact.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any

import yaml
from benchlib import timed_run, tool
from tools import Context, Tool, _ansible_setup, _stop_masters, ansible_vars

RC_MARK = "HACTL_BENCH_RC="


def standalone(snippet: str) -> str:
    """One fact's snippet as a standalone sh program whose exit status is the section's."""
    from hactl.facts.services import UNITS, active_var
    from hactl.probe import ENVIRONMENT

    guards = "".join(f"{active_var(u)}=$(systemctl is-active {u}.service 2>/dev/null)\n"
                     for u in UNITS if f"${active_var(u)}" in snippet or f"${{{active_var(u)}" in snippet)
    return f"{ENVIRONMENT}{guards}__hactl_f() {{\n{snippet}\n}}\n__hactl_f"


def host_facts(ctx: Context) -> dict[str, list[dict[str, Any]]]:
    """host name → [{section, ok (accepted statuses), script}] in hactl's order."""
    from hactl.facts.base import SKIPPED
    from hactl.probe import facts_for

    return {h.name: [{"section": f.section, "ok": sorted(f.ok_statuses | {SKIPPED}),
                      "script": standalone(f.script())}
                     for f in facts_for(ctx.cluster, h)]
            for h in ctx.cluster.all_hosts()}


def describe(ctx: Context) -> dict[str, Any]:
    """How many fact commands the "same facts" contenders run (recorded in the results)."""
    per = {name: len(facts) for name, facts in host_facts(ctx).items()}
    return {"per_host": per, "total": sum(per.values()), "min": min(per.values()),
            "max": max(per.values())}


def check(ctx: Context, label: str, got: dict[str, dict[str, int | None]]) -> str | None:
    """None when every host ran every fact with an accepted status; else what went wrong.
    Also notes how many facts answered "does not apply" (100) in this run."""
    bad: list[str] = []
    skipped = 0
    for name, facts in host_facts(ctx).items():
        rcs = got.get(name, {})
        for fact in facts:
            rc = rcs.get(fact["section"])
            if rc not in fact["ok"]:
                bad.append(f"{name}:{fact['section']}={rc}")
            skipped += rc == 100
    ctx.notes.setdefault(f"{label}: facts skipped (status 100), all hosts", []).append(skipped)
    return f"{len(bad)} facts missing or failed: {bad[:5]}" if bad else None


# -- Ansible ----------------------------------------------------------------------------------

class _Unsafe(str):
    """A YAML ``!unsafe`` string: Ansible never templates it (snippets contain ``{#``)."""


def _unsafe(dumper: yaml.SafeDumper, value: _Unsafe) -> yaml.ScalarNode:
    return dumper.represent_scalar("!unsafe", str(value), style='"')


_CALLBACK = '''\
"""Stdout callback of the hactl benchmark: per host, per loop item (fact section), the rc."""
import json

from ansible.plugins.callback import CallbackBase


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "stdout"
    CALLBACK_NAME = "hactl_bench"

    def __init__(self):
        super().__init__()
        self.rcs = {}
        self.problems = []

    def _items(self, result, what):
        host = result.host.get_name()
        for item in result.result.get("results", []):
            section = (item.get("item") or {}).get("section", "?")
            self.rcs.setdefault(host, {})[section] = item.get("rc")
        if what != "ok":
            self.problems.append(f"{host}: {what}: {str(result.result.get('msg', ''))[:200]}")

    def v2_runner_on_ok(self, result):
        self._items(result, "ok")

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._items(result, "failed")

    def v2_runner_on_unreachable(self, result):
        self._items(result, "unreachable")

    def v2_playbook_on_stats(self, stats):
        self._display.display(json.dumps({"rcs": self.rcs, "problems": self.problems}))
'''

_TASK = {
    "command": {"ansible.builtin.command": {"argv": ["sh", "-c", "{{ item.script }}"]}},
    "raw": {"ansible.builtin.raw": "sh -c {{ item.script | quote }}"},
}


def _ansible_files(ctx: Context) -> Path:
    """The YAML inventory (each host's facts as host vars) and the callback plugin, once."""
    inv = ctx.tmp / "samefacts_inventory.yaml"
    if inv.exists():
        return inv
    common = ansible_vars(ctx)  # the same connection settings as the one-fact contenders
    facts = host_facts(ctx)
    hosts = {name: {"ansible_host": addr,
                    "hactl_facts": [{"section": f["section"], "script": _Unsafe(f["script"])}
                                    for f in facts[name]]}
             for name, addr in ctx.hosts}
    dumper = type("Dumper", (yaml.SafeDumper,), {})
    dumper.add_representer(_Unsafe, _unsafe)
    inv.write_text(yaml.dump({"all": {"vars": common, "hosts": hosts}}, Dumper=dumper,
                             sort_keys=False, width=10_000), encoding="utf-8")
    plugins = ctx.tmp / "callback_plugins"
    plugins.mkdir(exist_ok=True)
    (plugins / "hactl_bench.py").write_text(_CALLBACK, encoding="utf-8")
    return inv


def ansible_samefacts(ctx: Context, module: str) -> Tool:
    """`ansible-playbook -f N`: one play, one task looping over the host's fact commands
    (`loop: "{{ hactl_facts }}"`, `failed_when: false`), Ansible's defaults otherwise."""
    inv = _ansible_files(ctx)
    _, env = _ansible_setup(ctx)
    env = dict(env, ANSIBLE_CALLBACK_PLUGINS=str(ctx.tmp / "callback_plugins"),
               ANSIBLE_STDOUT_CALLBACK="hactl_bench")
    play = ctx.tmp / f"samefacts_{module}.yaml"
    task = {"name": f"hactl facts, one {module} each", **_TASK[module],
            "loop": "{{ hactl_facts }}", "loop_control": {"label": "{{ item.section }}"},
            "changed_when": False, "failed_when": False}
    play.write_text(yaml.safe_dump([{"hosts": "all", "gather_facts": False, "tasks": [task]}],
                                   sort_keys=False), encoding="utf-8")
    label = f"ansible -m {module}, same facts"

    def run() -> tuple[float, str | None]:
        cp_dir = ctx.tmp / f"cp-{secrets.token_hex(4)}"
        argv = [tool("ansible-playbook"), "-i", str(inv), "-f", str(ctx.n), str(play)]
        try:
            seconds, proc = timed_run(argv, env=dict(env, ANSIBLE_SSH_CONTROL_PATH_DIR=str(cp_dir)),
                                      cwd=str(ctx.tmp))
        finally:
            _stop_masters(cp_dir)
        try:
            doc = json.loads(proc.stdout.strip().splitlines()[-1])
        except (IndexError, ValueError):
            return seconds, f"exit {proc.returncode}, no result: {(proc.stdout + proc.stderr)[-300:]}"
        err = check(ctx, label, doc["rcs"])
        if err is None and (doc["problems"] or proc.returncode != 0):
            err = f"exit {proc.returncode}: {doc['problems'][:3]} {proc.stderr.strip()[-200:]}"
        return seconds, err

    return run


# -- pyinfra ----------------------------------------------------------------------------------

_DEPLOY = f'''\
"""Read every hactl fact of this host, one pyinfra fact (server.Command) per snippet."""
import json
import os
from pathlib import Path

from pyinfra import host
from pyinfra.facts.server import Command

rcs = {{}}
for section, script in host.data.hactl_facts:
    out = host.get_fact(Command, command=script) or ""
    tail = out.rstrip().rpartition("\\n")[2]
    rcs[section] = int(tail[len("{RC_MARK}"):]) if tail.startswith("{RC_MARK}") else None
Path(os.environ["HACTL_BENCH_OUT"], host.name + ".json").write_text(json.dumps(rcs))
'''


def pyinfra_samefacts(ctx: Context) -> Tool:
    """`pyinfra INV deploy.py -y --parallel N`, a deploy without operations that reads each of
    the host's facts as `host.get_fact(server.Command, command=…)`; every command ends with
    `printf` of its status (a fact whose command exits non-zero fails the host in pyinfra)."""
    inv = ctx.tmp / "pyinfra_samefacts_inventory.py"
    data = {"ssh_user": "root", "ssh_key": ctx.key, "ssh_known_hosts_file": ctx.known_hosts,
            "ssh_strict_host_key_checking": "yes", "ssh_allow_agent": False,
            "ssh_look_for_keys": False}
    facts = host_facts(ctx)
    hosts = [(name, {"ssh_hostname": addr, **data,
                     "hactl_facts": [(f["section"], f"{f['script']}\nprintf '\\n{RC_MARK}%s\\n' \"$?\"")
                                     for f in facts[name]]})
             for name, addr in ctx.hosts]
    inv.write_text(f"hosts = {hosts!r}\n", encoding="utf-8")
    deploy = ctx.tmp / "samefacts_deploy.py"
    deploy.write_text(_DEPLOY, encoding="utf-8")
    argv = [tool("pyinfra"), str(inv), str(deploy), "-y", "--parallel", str(ctx.n)]
    label = "pyinfra, same facts"

    def run() -> tuple[float, str | None]:
        out_dir = ctx.tmp / f"pyinfra-out-{secrets.token_hex(4)}"
        out_dir.mkdir()
        seconds, proc = timed_run(argv, cwd=str(ctx.tmp),
                                  env=dict(os.environ, HACTL_BENCH_OUT=str(out_dir)))
        got = {p.stem: json.loads(p.read_text()) for p in out_dir.glob("*.json")}
        err = check(ctx, label, got)
        if err is None and proc.returncode != 0:
            err = f"exit {proc.returncode}: {(proc.stdout + proc.stderr).strip()[-300:]}"
        return seconds, err

    return run

