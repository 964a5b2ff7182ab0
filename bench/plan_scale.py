"""Planning benchmark (no I/O): a synthetic 1,000-host spec against synthetic facts.

    .venv/bin/python bench/plan_scale.py [--hosts 1000] [--reps 7]

The spec (5 etcd + 2 LB + 9 masters + the rest workers, addresses in 198.18.0.0/15, nothing is
contacted) is written to a YAML file and timed through: load (YAML + validation + cross-field
checks), diff + refusals + DAG (`build_plan`, which also fingerprints the facts), and each output
(text, JSON, saved-plan document), for two observed states from hactl.plan.synthetic: fresh
hosts (full bring-up: every host gets steps) and converged (no changes).
"""

from __future__ import annotations

import argparse
import ipaddress
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchlib import machine_facts, write_results, write_spec


def big_spec(total: int) -> dict[str, Any]:
    addrs = iter(ipaddress.IPv4Network("198.18.0.0/15").hosts())
    next(addrs)

    def hosts(prefix: str, n: int) -> list[dict[str, str]]:
        return [{"name": f"{prefix}{i:04d}", "address": str(next(addrs))} for i in range(1, n + 1)]

    return {
        "apiVersion": "hactl.dev/v1alpha1", "kind": "Cluster", "metadata": {"name": "big"},
        "controlPlaneEndpoint": "api.big:6443", "kubernetes": {"version": "1.30.4"},
        "etcd": {"topology": "external", "members": hosts("etcd", 5)},
        "loadBalancer": {"dnsName": "api.big", "hosts": hosts("lb", 2)},
        "masters": hosts("master", 9), "workers": hosts("worker", total - 16),
        "ssh": {"user": "root"},
    }


def timeit(fn: Callable[[], Any], reps: int) -> tuple[dict[str, float], Any]:
    """Wall and CPU seconds of ``fn`` (CPU time is what counts on a machine that others load)."""
    wall, cpu, result = [], [], None
    for _ in range(reps):
        started, cpu0 = time.perf_counter(), time.process_time()
        result = fn()
        wall.append(time.perf_counter() - started)
        cpu.append(time.process_time() - cpu0)
    return {"median": statistics.median(wall), "min": min(wall), "max": max(wall),
            "cpu_median": statistics.median(cpu), "cpu_min": min(cpu), "cpu_max": max(cpu)}, result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hosts", type=int, default=1000)
    p.add_argument("--reps", type=int, default=7)
    args = p.parse_args(argv)

    from hactl.plan import output, planfile
    from hactl.plan.planner import build_plan
    from hactl.plan.synthetic import PROBED_AT, Synthetic
    from hactl.spec.load import load_cluster

    facts = machine_facts()
    with tempfile.TemporaryDirectory(prefix="hactl-plan-scale-") as tmp:
        spec_file = write_spec(big_spec(args.hosts), Path(tmp) / "big.yaml")
        load_t, cluster = timeit(lambda: load_cluster(spec_file), args.reps)
    assert len(cluster.all_hosts()) == args.hosts
    rows: dict[str, dict[str, float]] = {"load spec (YAML + validate + checks)": load_t}
    states = {"fresh hosts": lambda s: s, "converged": lambda s: s.converged()}
    summary: dict[str, str] = {}
    for state, make in states.items():
        observed = make(Synthetic(cluster)).observed()
        plan_t, plan = timeit(lambda o=observed: build_plan(cluster, o, now=PROBED_AT), args.reps)
        rows[f"{state}: diff + refusals + DAG"] = plan_t
        rows[f"{state}: render text"] = timeit(lambda p=plan: output.render_text(p), args.reps)[0]
        rows[f"{state}: render JSON"] = timeit(lambda p=plan: output.render_json(p), args.reps)[0]
        rows[f"{state}: saved-plan document"] = timeit(lambda p=plan: planfile.dumps(p), args.reps)[0]
        parts = [load_t] + [v for k, v in rows.items()
                            if k.startswith(state) and ("DAG" in k or "text" in k)]
        total = {key: sum(v[key] for v in parts) for key in load_t}
        rows[f"{state}: load + plan + text (sums)"] = total
        summary[state] = f"{len(plan.steps())} steps; {output.summary_line(plan)}"
    width = max(len(k) for k in rows)
    print(f"planning {args.hosts} hosts, {args.reps} reps, load avg {facts['loadavg']}")
    for state, text in summary.items():
        print(f"  {state}: {text}")
    print(f"| {'phase':{width}} | CPU ms median (min–max) | wall ms median (min–max) |")
    print(f"|{'-' * (width + 2)}|---|---|")
    for k, v in rows.items():
        print(f"| {k:{width}} | {v['cpu_median'] * 1000:7.1f} ({v['cpu_min'] * 1000:.1f}–"
              f"{v['cpu_max'] * 1000:.1f}) | {v['median'] * 1000:7.1f} ({v['min'] * 1000:.1f}–"
              f"{v['max'] * 1000:.1f}) |")
    path = write_results("plan_scale", {"benchmark": "plan_scale", "hosts": args.hosts,
                                        "reps": args.reps, "machine": facts, "summary": summary,
                                        "seconds": rows})
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
