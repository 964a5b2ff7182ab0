"""Probe benchmark: hactl's full probe vs pyinfra, Ansible and plain OpenSSH on N lab hosts.

    .venv/bin/python bench/probe_bench.py --nodes 9 50 [--reps 5] [--warmup 1] [--converge]   (root)

For each N a lab of N hosts (3 etcd + 1 LB + 3 masters + N-7 workers, its own name, subnet in
198.18.0.0/15 and state dir) is brought up, every tool runs against the same hosts, side by side
in one run (the tools' order rotates every repetition, so load swings hit all of them), and the
lab is taken down again. Every run is checked: a tool that did not answer for all N hosts is
counted as failed, never timed. Results: a table on stdout, JSON under bench/results/.

Two kinds of contenders: ONE fact (`hostname`) with each tool, and the SAME facts as hactl's
probe (`hactl.probe.facts_for`), one command per fact, with pyinfra and Ansible (samefacts.py).
`--converge` first converges each lab with `hactl apply` (and checks `hactl plan
--detailed-exitcode` exits 0), so the timed `hactl plan` is a true no-op plan and the facts
include etcd's and the API's answers; without it the hosts are freshly booted.
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchlib import (
    RESULTS,
    Series,
    bench_spec,
    converge,
    idle_rate,
    lab_session,
    local_cpu,
    machine_cpu,
    machine_facts,
    write_results,
    write_spec,
)
from tools import Context, make_tools

BASE = "hactl plan (CLI)"
NO_RATIO = (BASE, "hactl probe (Python API)")


def run_rounds(tools: dict[str, Callable[[], tuple[float, str | None]]], n: int, reps: int,
               warmup: int) -> dict[str, Series]:
    """Warm-up rounds, then timed rounds; the tools' order rotates every round."""
    series = {label: Series(label, n) for label in tools}
    for rnd in range(warmup + reps):
        labels = list(tools)
        shift = rnd % len(labels)
        for label in labels[shift:] + labels[:shift]:
            seconds, cpu, machine, error = _one(tools[label])
            kind = "warm-up" if rnd < warmup else f"rep {rnd - warmup + 1}"
            status = "ok" if error is None else f"FAILED: {error}"
            print(f"N={n} {kind:7} {label:30} {seconds:7.2f}s cpu {cpu:6.2f}s "
                  f"load {os.getloadavg()[0]:5.1f} {status}", file=sys.stderr, flush=True)
            if rnd >= warmup:
                series[label].add(seconds, cpu, error, machine)
    return series


def run_n(n: int, subnet: str, reps: int, warmup: int, only: list[str] | None,
          converged: bool = False) -> dict[str, Any]:
    from samefacts import describe

    name = f"bench-probe-{n}"
    spec_file = write_spec(bench_spec(n, name, subnet), RESULTS / "specs" / f"{name}.yaml")
    out: dict[str, Any] = {"n": n, "spec": str(spec_file),
                           "mode": "converged" if converged else "fresh"}
    series: dict[str, Series] = {}
    with lab_session(spec_file) as lab:
        if converged:
            out["converge"] = converge(spec_file)
            print(f"N={n} converge: {out['converge']}", file=sys.stderr, flush=True)
        ctx = Context.create(spec_file, lab, converged=converged)
        try:
            out["same_facts"] = describe(ctx)
            out["idle_cpu_per_second"] = round(idle_rate(), 3)
            if converged and not out["converge"]["ok"]:
                out["error"] = "not converged, nothing timed: " + out["converge"]["error"]
            else:
                tools = make_tools(ctx)
                if only:
                    tools = {k: v for k, v in tools.items() if any(o in k for o in only)}
                series = run_rounds(tools, n, reps, warmup)
        finally:
            ctx.cleanup()
    out.update(series={k: v.data() for k, v in series.items()}, notes=ctx.notes, _series=series)
    return out


def _one(fn: Callable[[], tuple[float, str | None]]) -> tuple[float, float, float, str | None]:
    """(wall seconds, local CPU seconds of the tool and its children, machine-wide CPU
    seconds meanwhile, error or None)."""
    cpu0, machine0 = local_cpu(), machine_cpu()
    try:
        seconds, error = fn()
    except Exception as exc:  # a tool that crashes is a failed run, never a timing
        seconds, error = 0.0, f"{type(exc).__name__}: {exc}"
    return seconds, local_cpu() - cpu0, machine_cpu() - machine0, error


def table(runs: list[dict[str, Any]]) -> str:
    labels: list[str] = []
    for run in runs:
        labels += [k for k in run["_series"] if k not in labels]
    ns = [run["n"] for run in runs]
    head = "| tool | " + " | ".join(f"N={n}: wall s median (min–max); local CPU s; machine CPU s"
                                    for n in ns) + " |"
    lines = [head, "|" + "---|" * (len(ns) + 1)]
    for label in labels:
        cells = [run["_series"][label].cell() if label in run["_series"] else "–" for run in runs]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += ["", f"| ratio: other / `{BASE}`, medians, wall (local CPU) | "
              + " | ".join(f"N={n}" for n in ns) + " |", "|" + "---|" * (len(ns) + 1)]
    for other in (label for label in labels if label not in NO_RATIO):
        cells = []
        for run in runs:
            s = run["_series"]
            base = s.get(BASE)
            o = s.get(other)
            if base is None or o is None or base.median is None or o.median is None:
                cells.append("–")
            else:
                cpu = (f" ({o.cpu_median / base.cpu_median:.2f}×)"
                       if o.cpu_median and base.cpu_median else "")
                cells.append(f"{o.median / base.median:.2f}×{cpu}")
        lines.append(f"| {other} | " + " | ".join(cells) + " |")
    lines.append("")
    for run in runs:
        sf = run.get("same_facts", {})
        lines.append(f"N={run['n']} ({run['mode']} hosts): \"same facts\" = {sf.get('total')} fact "
                     f"commands in all ({sf.get('min')}–{sf.get('max')} per host)"
                     + (f"; lab idle: {run['idle_cpu_per_second']} CPU-s/s"
                        if "idle_cpu_per_second" in run else "")
                     + (f"; converge: {run['converge']}" if "converge" in run else "")
                     + (f"; ERROR: {run['error']}" if "error" in run else ""))
    return "\n".join(lines)


def per_host(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Marginal seconds per extra host between successive N (linear growth check)."""
    out: dict[str, Any] = {}
    for a, b in itertools.pairwise(runs):
        for label, sb in b["_series"].items():
            sa = a["_series"].get(label)
            if sa is None or sa.median is None or sb.median is None:
                continue
            slope = (sb.median - sa.median) / (b["n"] - a["n"])
            out.setdefault(label, {})[f"{a['n']}->{b['n']}"] = round(slope, 4)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nodes", type=int, nargs="+", default=[9, 50])
    p.add_argument("--reps", type=int, default=5, help="timed repetitions per tool (default 5)")
    p.add_argument("--warmup", type=int, default=1, help="untimed rounds first (default 1)")
    p.add_argument("--subnet-base", default="198.18.100.0",
                   help="first /24 to use; N-th lab size gets the next /24 (inside 198.18.0.0/15)")
    p.add_argument("--only", nargs="*", help="run only tools whose label contains one of these")
    p.add_argument("--converge", action="store_true",
                   help="converge each lab with `hactl apply` before timing (a no-op plan)")
    args = p.parse_args(argv)
    base = int.from_bytes(bytes(int(x) for x in args.subnet_base.split(".")), "big")
    from hactl.log import configure_logging

    configure_logging("auto", 0)
    facts = machine_facts()
    print(f"machine: {facts}", file=sys.stderr)
    runs = []
    started = time.monotonic()
    for i, n in enumerate(args.nodes):
        net = ".".join(str(b) for b in (base + 256 * i).to_bytes(4, "big")) + "/24"
        runs.append(run_n(n, net, args.reps, args.warmup, args.only, args.converge))
    facts["loadavg_end"] = machine_facts()["loadavg"]
    facts["wall_seconds"] = round(time.monotonic() - started, 1)
    text = table(runs)
    slopes = per_host(runs)
    print(text)
    print("\nmarginal seconds per extra host (median):")
    for label, pairs in slopes.items():
        print(f"  {label}: " + ", ".join(f"{k}: {v * 1000:.1f} ms" for k, v in pairs.items()))
    data = {"benchmark": "probe", "argv": sys.argv, "machine": facts,
            "mode": "converged" if args.converge else "fresh", "reps": args.reps,
            "warmup": args.warmup, "runs": [{k: v for k, v in r.items() if k != "_series"}
                                            for r in runs],
            "per_host_seconds": slopes, "table_markdown": text}
    path = write_results("probe", data)
    print(f"\nresults: {Path(path).relative_to(RESULTS.parents[1])}")
    failed = any(s.failures for r in runs for s in r["_series"].values()) or any(
        "error" in r for r in runs)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
