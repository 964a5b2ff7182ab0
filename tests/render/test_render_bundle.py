"""The per-host bundle of rendered files (what `make demo` writes out)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import yaml
from render_helpers import make_cluster

from hactl.render.bundle import render_bundle


def test_lab_bundle(tmp_path: Path) -> None:
    cluster = make_cluster("lab")
    bundle = render_bundle(cluster)
    assert list(bundle) == [
        "etcd01/etc/etcd/etcd.env",
        "etcd01/etc/systemd/system/etcd.service",
        "etcd02/etc/etcd/etcd.env",
        "etcd02/etc/systemd/system/etcd.service",
        "etcd03/etc/etcd/etcd.env",
        "etcd03/etc/systemd/system/etcd.service",
        "lb01/etc/haproxy/haproxy.cfg",
        "master01/etc/hactl/kubeadm-config.yaml",
        "master02/etc/hactl/kubeadm-config.yaml",
        "master03/etc/hactl/kubeadm-config.yaml",
    ]
    assert all(not f.secret and "PRIVATE KEY" not in f.reveal() for f in bundle.values())
    init, _ = yaml.safe_load_all(bundle["master02/etc/hactl/kubeadm-config.yaml"].reveal())
    assert init["nodeRegistration"]["name"] == "master02"
    assert render_bundle(cluster) == bundle  # deterministic
    if shutil.which("haproxy"):
        cfg = tmp_path / "haproxy.cfg"
        cfg.write_text(bundle["lb01/etc/haproxy/haproxy.cfg"].reveal())
        assert (
            subprocess.run(
                ["haproxy", "-c", "-f", str(cfg)], capture_output=True, check=False
            ).returncode
            == 0
        )


def test_stacked_bundle_has_no_etcd_files() -> None:
    bundle = render_bundle(make_cluster(topology="stacked"))
    assert not any("etcd" in key.split("/")[0] or key.endswith("etcd.env") for key in bundle)
