"""Preflight at plan time on real lab nodes (issue 14, acceptance): on a fresh lab of
specs/lab.yaml, each injected condition (hactl/lab/inject.py) — swap on a master, ip_forward off
on a worker, port 2380 taken on an etcd member, a wrong kubelet version, clock skew on an etcd
member — makes `hactl plan` refuse naming the host, the check and the fix; all five at once are
listed together; `hactl apply` changes nothing on any host; skipping one check per host in the
spec makes the refusals go and the plan says what it skipped.

One lab: each condition is injected and cleared in turn, then all at once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from click.testing import CliRunner

from hactl.cli import main

CASES = [
    ("master01", "swap", {}, "Swap", "swap is on (/swap.img)", "swapoff -a"),
    ("worker01", "ip-forward", {}, "FileContent--proc-sys-net-ipv4-ip_forward",
     "/proc/sys/net/ipv4/ip_forward is 0", "sysctl -w net.ipv4.ip_forward=1"),
    ("etcd02", "port", {"port": 2380}, "Port-2380", "port 2380 is in use by python3",
     "ss -ltnp 'sport = :2380'"),
    ("worker02", "kubelet-version", {"version": "1.29.0"}, "KubeletVersion",
     "kubelet is 1.29.0", "install kubelet 1.30.4"),
    ("etcd03", "clock-skew", {"seconds": 120}, "ClockSkew", "s ahead of this machine's",
     "NTP"),
]
LISTING = ("for p in /etc/kubernetes /var/lib/etcd /etc/haproxy/haproxy.cfg /etc/etcd; do "
           "[ -e \"$p\" ] && find \"$p\" -printf '%p %s %T@\\n'; done | sort; :")


def _plan(spec_file: str) -> Any:
    return CliRunner().invoke(main, ["plan", "-f", spec_file, "--detailed-exitcode"])


def _listing(lab: Any) -> dict[str, str]:
    out = {}
    for host in lab.cluster.all_hosts():
        done = lab.run(host.name, LISTING)
        assert done.returncode == 0, done.stderr
        out[host.name] = done.stdout
    return out


def _line(host: str, check: str, found: str, fix: str, output: str) -> None:
    lines = [ln for ln in output.splitlines() if f"{host}: preflight check {check}:" in ln]
    assert lines, f"no refusal of {check} on {host}:\n{output}"
    assert found in lines[0] and "Fix: " in lines[0] and fix in lines[0], lines[0]


def test_preflight_refuses_each_condition_all_at_once_and_skips(lab_factory: Any,
                                                                tmp_path: Path) -> None:
    from hactl.lab import inject

    lab = lab_factory()
    fresh = _plan(lab.spec_file)
    assert fresh.exit_code == 2, fresh.output  # a prepared fresh lab: the bring-up, no refusal
    assert "preflight" not in fresh.output
    before = _listing(lab)

    for host, condition, params, check, found, fix in CASES:
        inject.inject(lab, host, condition, **params)
        try:
            refused = _plan(lab.spec_file)
            assert refused.exit_code == 1, refused.output
            assert "the plan is refused" in refused.output, refused.output
            _line(host, check, found, fix, refused.output)
            assert refused.output.count("preflight check") == 1, refused.output
        finally:
            inject.clear(lab, host, condition)

    for host, condition, params, *_ in CASES:
        inject.inject(lab, host, condition, **params)
    try:
        everything = _plan(lab.spec_file)
        assert everything.exit_code == 1, everything.output
        for host, _, _, check, found, fix in CASES:
            _line(host, check, found, fix, everything.output)
        applied = CliRunner().invoke(main, ["apply", "-f", lab.spec_file, "--auto-approve"])
        assert applied.exit_code == 1 and "the plan is refused" in applied.output, applied.output
        assert _listing(lab) == before  # nothing changed on any host

        doc = yaml.safe_load(Path(lab.spec_file).read_text())
        skips = {host: [check.lower() if i % 2 else check] for i, (host, _, _, check, *_)
                 in enumerate(CASES)}
        for key in ("masters", "workers"):
            for item in doc[key]:
                item["ignorePreflightErrors"] = skips.get(item["name"], [])
        for item in doc["etcd"]["members"]:
            item["ignorePreflightErrors"] = skips.get(item["name"], [])
        skipping = tmp_path / "skipping.yaml"
        skipping.write_text(yaml.safe_dump(doc, sort_keys=False))
        skipped = _plan(str(skipping))
        assert skipped.exit_code == 2, skipped.output  # refused no more: the bring-up
        assert "preflight check" not in skipped.output
        warning = next(ln for ln in skipped.output.splitlines()
                       if ln.startswith("Warning: Preflight checks skipped (spec): "))
        for host, _, _, check, *_ in CASES:
            assert f"{host}: {check}" in warning, warning
    finally:
        for host, condition, *_ in CASES:
            inject.clear(lab, host, condition)
    assert _listing(lab) == before
