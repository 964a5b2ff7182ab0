"""Issue 13 with external etcd (specs/lab.yaml), on the session's shared converged lab: masters
3 → 5 → 3 (the new ones join one at a time; then master01, which ran ``kubeadm init``, and
master02 leave: out of the load balancer first, drained, reset, their Nodes deleted), and a
re-imaged master (master05 re-installed at the same address, spec unchanged) replaced: the plan
sees the stale Node, deletes it once it is NotReady and joins the new host. During every apply a
reader asks ``/readyz`` through the load balancer every 0.5 s: zero failed requests. Each step
ends with the apply's own check passing and a second plan showing no changes. (etcd members
rotated: tests/lab/test_etcd_rotation_lab.py.)"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from membership import Day2

from hactl.journal import read_journal


@pytest.mark.timeout(1200)  # a shared lab converged first, then 3 → 5 → 3
def test_external_masters_3_5_3_and_a_reimaged_master_replaced(shared_lab: Any, tmp_path: Path) -> None:
    lab = shared_lab()
    day2 = Day2(lab, tmp_path)
    spare = [m for m in lab.spares["masters"] if m["name"] in ("master04", "master05")]
    five = lab.write_spec(lambda d: d["masters"].extend(spare), "five")
    three = lab.write_spec(lambda d: d.update(masters=[m for m in d["masters"] + spare
                                                       if m["name"] not in ("master01", "master02")]),
                           "three")

    # 3 → 5: one join at a time, the backends added by a graceful reload
    first = set((tmp_path / "state").rglob("*.jsonl"))
    day2.apply(five)
    day2.no_changes(five)
    (journal,) = set((tmp_path / "state").rglob("*.jsonl")) - first
    ends = {r["id"]: r for r in read_journal(journal) if r["event"] == "step_end"}
    joins = [ends[f"master[{m}].join"] for m in ("master04", "master05")]
    assert all(j["outcome"] == "ok" for j in joins) and joins[0]["end_mono"] <= joins[1]["start_mono"]

    # 5 → 3: master01 (init) and master02 leave, one at a time, after the LB dropped them
    res = day2.hactl("plan", "-f", three)
    assert res.returncode == 0, res.stderr
    print(f"--- plan 5 -> 3\n{res.stdout}")
    steps = [line.strip() for line in res.stdout.splitlines() if line.strip().startswith("id: ")]
    ids = [s.split()[1] for s in steps]
    assert ids.index("lb[lb01].haproxy") < ids.index("master[master01].drain") < \
        ids.index("master[master01].reset") < ids.index("master[master01].delete-node") < \
        ids.index("master[master02].drain"), ids
    seen = set((tmp_path / "state").rglob("*.jsonl"))
    res, _ = day2.apply(three)
    assert "is healthy." in res.stdout, res.stdout
    day2.no_changes(three)
    (journal,) = set((tmp_path / "state").rglob("*.jsonl")) - seen
    ends = {r["id"]: r for r in read_journal(journal) if r["event"] == "step_end"}
    assert ends["master[master01].delete-node"]["end_mono"] <= ends["master[master02].drain"]["start_mono"]
    assert sorted(day2.nodes("master03")) == ["master03", "master04", "master05", "worker01", "worker02"]
    for gone in ("master01", "master02"):
        day2.assert_reset(gone)
    cfg = lab.run("lb01", "cat /etc/haproxy/haproxy.cfg").stdout
    assert "server master01 " not in cfg and "server master02 " not in cfg

    # master05 re-imaged at the same address: new disk, new SSH host key (known_hosts updated
    # as an operator does after checking it). Refused while its stale Node is Ready; once the
    # Node is NotReady: the stale Node goes, the host joins again.
    lab.reimage("master05")
    res = day2.hactl("plan", "-f", three)
    print(f"--- plan right after the re-image (exit {res.returncode})\n{res.stdout}{res.stderr}")
    if res.returncode == 1:
        assert "master05 has none of kubeadm's files (re-imaged?) but its Node is Ready" in \
            " ".join((res.stdout + res.stderr).split()), res.stdout + res.stderr
    waited = day2.wait_not_ready("master03", "master05")
    print(f"master05's Node NotReady after {waited:.0f} s")
    res = day2.hactl("plan", "-f", three)
    assert res.returncode == 0, res.stdout + res.stderr
    print(f"--- plan re-imaged master05\n{res.stdout}")
    assert "master[master05].delete-node" in res.stdout and "master[master05].join" in res.stdout
    assert "has none of kubeadm's files (re-imaged?)" in " ".join(res.stdout.split())
    res, _ = day2.apply(three)
    assert "is healthy." in res.stdout, res.stdout
    day2.no_changes(three)
    node = day2.nodes("master03")["master05"]
    ready = [c for c in node["status"]["conditions"] if c["type"] == "Ready"]
    assert ready and ready[0]["status"] == "True"
