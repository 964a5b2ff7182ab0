"""Changes to a running etcd in the lab (real etcd 3.4 in real nodes, the real probe over SSH):
an etcd.env written but never loaded is seen and restarted (M3); a ``peerPort`` edit is applied
as etcd documents it — ``member update`` through another member, then a restart — one member at
a time, and the cluster ends with the new peer URLs and no changes left (H1)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from test_plan_lab import _etcd_changes, _plan_and_run_etcd_steps

ETCDCTL = ("etcdctl --endpoints=https://127.0.0.1:2379 --cacert=/etc/etcd/pki/ca.crt "
           "--cert=/etc/etcd/pki/healthcheck-client.crt --key=/etc/etcd/pki/healthcheck-client.key ")


async def test_stale_env_is_restarted_and_peer_port_edit_keeps_the_cluster(lab_factory: Any) -> None:
    lab = lab_factory()
    await _plan_and_run_etcd_steps(lab.spec_file)
    assert await _etcd_changes(lab.spec_file) == []

    # M3: etcd.env changed on etcd02 but etcd never restarted: written is not active
    edit = "sed -i 's/^ETCD_SNAPSHOT_COUNT=.*/ETCD_SNAPSHOT_COUNT=\"10001\"/' /etc/etcd/etcd.env"
    assert lab.run("etcd02", edit).returncode == 0
    assert await _etcd_changes(lab.spec_file) == ["etcd.member[etcd02]"]
    done = await _plan_and_run_etcd_steps(lab.spec_file)
    assert done == ["etcd.member[etcd02].restart", "etcd.health"]
    assert await _etcd_changes(lab.spec_file) == []

    # H1: peerPort 2380 → 2390, as member update + restart, one member at a time
    data = yaml.safe_load(Path(lab.spec_file).read_text())
    data["etcd"]["peerPort"] = 2390
    moved = Path(lab.spec_file).with_name("moved.yaml")
    moved.write_text(yaml.safe_dump(data))
    done = await _plan_and_run_etcd_steps(str(moved))
    assert done == [f"etcd.member[{n}].{k}" for n in ("etcd01", "etcd02", "etcd03")
                    for k in ("update-peer", "reconfigure")] + ["etcd.health"]
    assert await _etcd_changes(str(moved)) == []
    listed = lab.run("etcd01", ETCDCTL + "member list")
    assert listed.returncode == 0 and listed.stdout.count(":2390") == 3, listed.stdout
    health = lab.run("etcd03", ETCDCTL + "endpoint health")
    assert health.returncode == 0 and "is healthy" in health.stdout + health.stderr
