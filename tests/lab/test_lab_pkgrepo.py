"""The lab's package repositories served on the lab network (hactl/lab/pkgrepo.py): a lab node
adds the repository the way the Kubernetes documentation says, ``apt-get update`` verifies it,
``apt-get install --download-only`` fetches kubeadm/kubelet/kubectl and containerd from it, and a
tampered index is refused with apt's own error.

Nothing is installed into a node: nodes share the machine's /usr (docs/lab.md), so a real
``apt-get install`` would write the machine's /usr/bin. ``update``, ``apt-cache``, ``install
--download-only`` and ``install -s`` write only the node's private /etc and /var."""

from __future__ import annotations

import gzip
import re
import subprocess
from pathlib import Path
from typing import Any

import yaml

from hactl.lab import pkgrepo

ROOT = Path(__file__).resolve().parents[2]
APT = "DEBIAN_FRONTEND=noninteractive apt-get -o Acquire::Retries=0"


def _one_master() -> dict[str, Any]:
    doc = yaml.safe_load((ROOT / "specs" / "lab.yaml").read_text())
    doc["etcd"]["members"] = doc["etcd"]["members"][:1]
    doc["masters"] = doc["masters"][:1]
    doc["workers"] = doc["workers"][:1]
    return doc


def test_node_installs_from_the_served_repositories_and_refuses_a_tampered_index(lab_factory: Any) -> None:
    lab = lab_factory(_one_master())
    node = lab.cluster.masters[0].name
    gateway = str(lab.topo.gateway)
    repo = pkgrepo.Repo(Path(lab.topo.state_dir) / "pkgrepo")
    repo.build()
    repo.serve(gateway, 80)
    try:
        url = f"http://{gateway}"

        def run(command: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
            return lab.run(node, command, timeout=timeout)  # type: ignore[no-any-return]

        # only the bridge address serves: not the machine's other addresses, not the uplink's
        listeners = subprocess.run(["ss", "-Hltn", "sport = :80"], capture_output=True, text=True, check=True).stdout
        assert f"{gateway}:80" in listeners.split()
        uplink = run(f"curl -sS -m 3 -o /dev/null http://{lab.topo.uplink_gateway}/", timeout=30)
        assert uplink.returncode != 0 and "Failed to connect" in uplink.stderr, uplink.stderr

        # the documented steps (kubernetes.io "Installing kubeadm"), with the lab's address
        setup = run(
            "mkdir -p -m 755 /etc/apt/keyrings && "
            f"curl -fsSL {url}/core:/stable:/v1.30/deb/Release.key | gpg --dearmor -o {pkgrepo.KEYRING} && "
            f"echo '{repo.sources_line(url, 'v1.30').strip()}' > /etc/apt/sources.list.d/kubernetes.list"
        )
        assert setup.returncode == 0, setup.stderr
        with open(f"/proc/{lab.pid(node)}/root{pkgrepo.KEYRING}", "rb") as handle:
            assert handle.read() == repo.keyring.read_bytes()
        # a bare host's view: Debian from the lab's mirror (deb.debian.org is unreachable) and a
        # dpkg database without the Kubernetes packages and the runtime (the machine's has them)
        lab.put(node, "/etc/apt/sources.list.d/debian.sources", repo.debian_sources(url))
        lab.put(node, pkgrepo.DEBIAN_KEYRING, repo.keyring.read_bytes())
        status = Path("/var/lib/dpkg/status").read_text()
        lab.put(node, "/var/lib/dpkg/status", pkgrepo.bare_dpkg_status(status))

        update = run(f"{APT} update")
        assert update.returncode == 0, update.stdout + update.stderr
        assert f"{url}/core:/stable:/v1.30/deb  InRelease" in update.stdout
        assert f"{url}/debian {pkgrepo.DEBIAN_SUITE} InRelease" in update.stdout
        assert "W:" not in update.stderr and "E:" not in update.stderr, update.stderr

        policy = run("apt-cache policy kubeadm").stdout
        assert re.findall(r"^\s+(1\.30\.\d-1\.1) 500$", policy, re.M) == ["1.30.4-1.1", "1.30.3-1.1", "1.30.2-1.1"]
        assert f"500 {url}/core:/stable:/v1.30/deb  Packages" in policy

        want = "kubeadm=1.30.4-1.1 kubelet=1.30.4-1.1 kubectl=1.30.4-1.1"
        simulated = run(f"{APT} install -s -y {want}")
        assert simulated.returncode == 0, simulated.stdout + simulated.stderr
        for line in ("Inst kubeadm (1.30.4-1.1", "Inst kubelet (1.30.4-1.1", "Inst kubectl (1.30.4-1.1",
                     "Inst cri-tools (1.30.0-1.1", "Inst kubernetes-cni (1.4.0-1.1", "Inst socat ("):
            assert line in simulated.stdout, simulated.stdout
        fetched = run(f"{APT} install --download-only -y {want} containerd")
        assert fetched.returncode == 0, fetched.stdout + fetched.stderr
        archives = run("ls /var/cache/apt/archives").stdout.split()
        for deb in ("kubeadm_1.30.4-1.1_amd64.deb", "kubelet_1.30.4-1.1_amd64.deb", "kubectl_1.30.4-1.1_amd64.deb",
                    "cri-tools_1.30.0-1.1_amd64.deb", "kubernetes-cni_1.4.0-1.1_amd64.deb"):
            assert deb in archives
        assert any(a.startswith("containerd_") for a in archives) and any(a.startswith("runc_") for a in archives)
        # the downloaded packages' programs work in the node (unpacked into the node's own /tmp):
        # the shims find hactl's source at the node's /run/hactl-lab/src, kubectl the real one
        unpack = " && ".join(f"dpkg-deb -x /var/cache/apt/archives/{n}_1.30.4-1.1_amd64.deb /tmp/pkg"
                             for n in ("kubeadm", "kubelet", "kubectl"))
        assert run(unpack).returncode == 0
        kubeadm = run("/tmp/pkg/usr/bin/kubeadm version -o short")
        assert kubeadm.returncode == 0 and re.fullmatch(r"v1\.\d+\.\d+\n", kubeadm.stdout), kubeadm.stderr
        kubelet = run("/tmp/pkg/usr/bin/kubelet --version")
        assert kubelet.returncode == 0 and kubelet.stdout.startswith("Kubernetes v1."), kubelet.stderr
        assert run("/tmp/pkg/usr/bin/kubectl version --client").stdout.startswith("Client Version: v1.30.4\n")
        real = run("/tmp/pkg/usr/bin/kubectl config view --kubeconfig /dev/null -o jsonpath='{.kind}'")
        assert real.returncode == 0 and real.stdout == "Config", real.stderr
        # nothing was installed: the machine's /usr is untouched
        assert run("dpkg-query -W -f='${Status}' kubeadm").stdout != "install ok installed"

        # a tampered index on the server: apt refuses it with its own error. (With the lists it
        # has, apt sees the same InRelease — "Hit" — and fetches nothing: a host that never saw
        # the good index, as a new one, is the one that would get the tampered file.)
        flat = repo.flat_dir("v1.30")
        text = (flat / "Packages").read_text().replace("Version: 1.30.4-1.1", "Version: 1.30.9-1.1")
        (flat / "Packages.gz").write_bytes(gzip.compress(text.encode(), mtime=0))
        (flat / "Packages").write_text(text)
        tampered = run(f"rm -rf /var/lib/apt/lists/* && {APT} update")
        assert tampered.returncode == 100, tampered.stdout + tampered.stderr
        assert re.search(r"E: Failed to fetch \S+/core:/stable:/v1\.30/deb/Packages\.gz\s+"
                         r"(Hash Sum mismatch|File has unexpected size)", tampered.stderr), tampered.stderr
        assert "1.30.9" not in run("apt-cache policy kubeadm").stdout
    finally:
        repo.stop()
