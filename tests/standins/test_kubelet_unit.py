"""The kubelet stand-in's runtime with real processes: start, restart, change, removal, adoption."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from hactl.lab.standins import kubelet
from hactl.lab.standins.kubelet_pods import (
    Runtime,
    proc_start_time,
    read_manifests,
    stop_all_recorded,
)


def manifest(name: str, seconds: int = 300) -> str:
    return yaml.safe_dump({"apiVersion": "v1", "kind": "Pod",
                           "metadata": {"name": name, "namespace": "kube-system"},
                           "spec": {"containers": [{"name": name, "command": ["sleep"], "args": [str(seconds)]}]}})


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("HACTL_LAB_ROOT", str(tmp_path))
    (tmp_path / "manifests").mkdir()
    try:
        yield tmp_path
    finally:
        stop_all_recorded(grace=1)


def wait(check: object, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise AssertionError("timed out")


def test_flags_from_argv_and_kubeadm_flags_env(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBELET_KUBEADM_ARGS", raising=False)
    flags_file = root / "var/lib/kubelet/kubeadm-flags.env"
    flags_file.parent.mkdir(parents=True)
    flags_file.write_text('KUBELET_KUBEADM_ARGS="--node-ip=198.18.0.11 --hostname-override=master01"\n')
    assert kubelet.env_flags() == {"node-ip": "198.18.0.11", "hostname-override": "master01"}
    assert kubelet.parse_flags(["--config=/c", "$KUBELET_EXTRA_ARGS", "--kubeconfig", "/k"]) == \
        {"config": "/c", "kubeconfig": "/k"}
    unit = kubelet.IMAGE_FILES["/etc/systemd/system/kubelet.service"][0]
    assert "ExecStart=/usr/local/sbin/kubelet --config=/var/lib/kubelet/config.yaml" in unit
    assert "Restart=always" in unit and "EnvironmentFile=-/var/lib/kubelet/kubeadm-flags.env" in unit


def test_runtime_runs_restarts_replaces_and_stops_pods(root: Path) -> None:
    mdir = root / "manifests"
    (mdir / "a.yaml").write_text(manifest("a"))
    (mdir / "notes.txt").write_text("ignored")
    rt = Runtime(backoff_base=0.2, backoff_max=0.5)
    rt.sync(read_manifests(str(mdir)))
    a = rt.pods["kube-system_a"]
    first = a.pid
    assert a.alive() and os.getpgid(first) == first  # its own process group, survives the kubelet
    os.killpg(first, signal.SIGKILL)
    wait(lambda: (rt.sync(read_manifests(str(mdir))), rt.pods["kube-system_a"].pid != first
                  and rt.pods["kube-system_a"].alive())[1])
    assert rt.pods["kube-system_a"].restarts == 1
    second = rt.pods["kube-system_a"].pid
    (mdir / "a.yaml").write_text(manifest("a", 301))  # changed manifest: replaced
    rt.sync(read_manifests(str(mdir)))
    assert rt.pods["kube-system_a"].pid != second and proc_start_time(second) is None
    third = rt.pods["kube-system_a"].pid
    (mdir / "a.yaml").unlink()  # removed manifest: stopped
    rt.sync(read_manifests(str(mdir)))
    assert "kube-system_a" not in rt.pods and proc_start_time(third) is None


def test_a_new_kubelet_adopts_running_pods(root: Path) -> None:
    mdir = root / "manifests"
    (mdir / "b.yaml").write_text(manifest("b"))
    # a kubelet in another process starts the pod and goes away (SIGTERM), the pod keeps running
    code = ("from hactl.lab.standins.kubelet_pods import Runtime, read_manifests;"
            f"Runtime().sync(read_manifests('{mdir}'))")
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    subprocess.run(["/usr/bin/python3", "-c", code], check=True, env=env, timeout=30)
    rt = Runtime()
    rt.adopt(read_manifests(str(mdir)))
    pod = rt.pods["kube-system_b"]
    assert pod.alive() and pod.popen is None
    rt.sync(read_manifests(str(mdir)))
    assert rt.pods["kube-system_b"].pid == pod.pid  # not restarted
    assert stop_all_recorded(grace=1) == ["kube-system_b"]
    wait(lambda: proc_start_time(pod.pid) is None)
