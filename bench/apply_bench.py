"""Apply benchmark: converge wall time vs the DAG's critical path, and --parallelism 1 vs default.

    .venv/bin/python bench/apply_bench.py [--nodes 9] [--reps 1] [--modes default 1]   (root)

Each run brings up a FRESH lab (3 etcd + 1 LB + 3 masters + N-7 workers, name `bench-apply-N`,
its own /24 in 198.18.0.0/15), runs `hactl apply -f SPEC --auto-approve [--parallelism P]` with
the journal in a temp dir (HACTL_STATE_DIR), checks that it converged (exit 0, journal
`run_end.outcome`, then `hactl plan --detailed-exitcode` exits 0), and takes the lab down.

From the journal (docs/apply.md): `run_end.duration` = wall time of the DAG's execution, and
`hactl.journal.journal_critical_path` = the chain with the largest sum of measured step
durations. Target: run duration ≤ 1.10 × critical path. The whole CLI process (connect, lock,
probe, plan, DAG, check, unlock) is timed too.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from benchlib import (
    RESULTS,
    bench_spec,
    lab_session,
    machine_facts,
    timed_run,
    tool,
    write_results,
    write_spec,
)


def compare(spec_file: Path, lab: Any, n: int, reps: int) -> dict[str, Any]:
    """The probe contenders (bench/tools.py) on the CONVERGED cluster: a true no-op plan, whose
    probe also asks etcd (etcdctl) and the API (kubectl) on the hosts."""
    from probe_bench import run_rounds
    from tools import Context, make_tools

    ctx = Context.create(spec_file, lab, converged=True)  # every timed plan must be a no-op
    try:
        series = run_rounds(make_tools(ctx), n, reps, 0)
    finally:
        ctx.cleanup()
    return {"series": {k: v.data() for k, v in series.items()}, "notes": ctx.notes}


def one_run(n: int, subnet: str, parallelism: str, compare_reps: int = 0) -> dict[str, Any]:
    from hactl.journal import journal_critical_path, read_journal

    name = f"bench-apply-{n}"
    spec_file = write_spec(bench_spec(n, name, subnet), RESULTS / "specs" / f"{name}.yaml")
    out: dict[str, Any] = {"n": n, "parallelism": parallelism, "ok": False}
    with lab_session(spec_file) as lab, \
            tempfile.TemporaryDirectory(prefix="hactl-bench-apply-") as state:
        env = dict(os.environ, HACTL_STATE_DIR=state)
        argv = [tool("hactl"), "apply", "-f", str(spec_file), "--auto-approve"]
        if parallelism != "default":
            argv += ["--parallelism", parallelism]
        load0 = os.getloadavg()[0]
        seconds, proc = timed_run(argv, env=env, timeout=1800)
        out.update(cli_seconds=round(seconds, 2), exit=proc.returncode,
                   load1=[round(load0, 1), round(os.getloadavg()[0], 1)])
        journals = sorted(Path(state).glob("journal/*/*.jsonl"))
        if not journals:
            out["error"] = f"no journal; exit {proc.returncode}: {proc.stderr.strip()[-500:]}"
            return out
        records = read_journal(journals[-1])
        end = next((r for r in records if r.get("event") == "run_end"), None)
        cp = journal_critical_path(records)
        steps = [r for r in records if r.get("event") == "step_end"]
        out.update(steps=len(steps), critical_path_seconds=round(cp.length, 2),
                   critical_path=list(cp.steps),
                   step_seconds_sum=round(sum(float(r.get("duration") or 0) for r in steps), 2))
        if end is not None:
            out.update(run_seconds=round(float(end["duration"]), 2), outcome=end.get("outcome"))
            if cp.length:
                out["ratio"] = round(float(end["duration"]) / cp.length, 3)
        if proc.returncode != 0 or end is None or end.get("outcome") not in ("ok", "success"):
            out["error"] = f"exit {proc.returncode}, outcome {end and end.get('outcome')}: " \
                           f"{proc.stderr.strip()[-500:]}"
            return out
        noop, again = timed_run([tool("hactl"), "plan", "-f", str(spec_file),
                                 "--detailed-exitcode"], env=env)
        if again.returncode != 0:
            out["error"] = f"second plan exit {again.returncode}: {again.stdout.strip()[-300:]}"
            return out
        out.update(ok=True, noop_plan_seconds=round(noop, 2))
        if compare_reps:
            out["converged_probe"] = compare(spec_file, lab, n, compare_reps)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nodes", type=int, default=9)
    p.add_argument("--reps", type=int, default=1)
    p.add_argument("--modes", nargs="+", default=["default", "1"],
                   help="parallelism values to compare ('default' = the spec's, 10)")
    p.add_argument("--subnet", default="198.18.110.0/24")
    p.add_argument("--compare-reps", type=int, default=3,
                   help="after the first converge, time the probe contenders of probe_bench.py "
                        "on the converged cluster this many rounds (0: skip)")
    args = p.parse_args(argv)
    from hactl.log import configure_logging

    configure_logging("auto", 0)
    facts = machine_facts()
    runs: list[dict[str, Any]] = []
    for rep in range(args.reps):
        for mode in args.modes:
            first = rep == 0 and mode == args.modes[0]
            run = one_run(args.nodes, args.subnet, mode, args.compare_reps if first else 0)
            runs.append(run)
            print(f"rep {rep + 1} parallelism={mode}: " + ", ".join(
                f"{k}={run.get(k)}" for k in ("ok", "cli_seconds", "run_seconds",
                                              "critical_path_seconds", "ratio", "steps",
                                              "noop_plan_seconds",
                                              "load1", "error") if k in run),
                  file=sys.stderr, flush=True)
    print("| parallelism | runs ok | apply CLI wall s | DAG run s | critical path s | "
          "run / critical path | load avg |\n|---|---|---|---|---|---|---|")
    for mode in args.modes:
        ok = [r for r in runs if r["parallelism"] == mode and r["ok"]]
        total = sum(1 for r in runs if r["parallelism"] == mode)

        def med(key: str, rows: list[dict[str, Any]] = ok) -> str:
            vals = [r[key] for r in rows if key in r]
            return f"{statistics.median(vals):.2f}" if vals else "–"

        loads = [x for r in runs if r["parallelism"] == mode for x in r.get("load1", [])]
        print(f"| {mode} | {len(ok)}/{total} | {med('cli_seconds')} | {med('run_seconds')} | "
              f"{med('critical_path_seconds')} | {med('ratio')} | "
              f"{min(loads, default=0):.0f}–{max(loads, default=0):.0f} |")
    for run in runs:
        if "converged_probe" in run:
            print("\nprobe contenders on the converged cluster: wall s median (min–max); local CPU s")
            for label, d in run["converged_probe"]["series"].items():
                cell = (f"{d['median']:.2f} ({d['min']:.2f}–{d['max']:.2f}); cpu {d['cpu_median']:.2f}"
                        if d["median"] is not None else f"FAILED {d['failures'][:1]}")
                print(f"| {label} | {cell} |")
            print(f"notes: {run['converged_probe']['notes']}")
    facts["loadavg_end"] = machine_facts()["loadavg"]
    path = write_results("apply", {"benchmark": "apply", "argv": sys.argv, "machine": facts,
                                   "runs": runs})
    print(f"results: {path}")
    return 0 if runs and all(r["ok"] for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
