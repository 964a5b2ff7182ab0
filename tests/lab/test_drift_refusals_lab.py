"""Issue 12 §1 on a converged specs/lab.yaml lab (real probe over SSH, the stand-ins' kubeadm
and API server): a converged lab plans "No changes"; then spec edits that hactl cannot plan yet
are each refused, naming the field or the host — kubernetes.version, kubernetes.podSubnet, a
worker taken out of the spec, a master taken out of the spec. The lab is converged once and
every edit is planned against it (plans change nothing). And §3: etcd members the API servers
use, taken out of the spec, is refused naming each master's --etcd-servers (read over SSH off the
manifests) and kubeadm-config. And §4: certificates inside certificates.renewBeforeDays (kubeadm's
and the etcd members', dated by the real probe) are refused."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import yaml
from test_apply_lab import hactl, show


def _write(base: dict[str, Any], path: Path, edit: Any) -> str:
    doc = copy.deepcopy(base)
    edit(doc)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return str(path)


def test_spec_edits_on_a_converged_lab_are_refused_naming_the_field(lab_factory: Any,
                                                                    tmp_path: Path) -> None:
    lab = lab_factory()
    env = {**os.environ, "HACTL_STATE_DIR": str(tmp_path / "state")}
    res = hactl("apply", "-f", lab.spec_file, "--auto-approve", env=env)
    assert res.returncode == 0, show(res)
    res = hactl("plan", "-f", lab.spec_file, "--detailed-exitcode", env=env)
    assert res.returncode == 0 and "No changes" in res.stdout, show(res)

    base = yaml.safe_load(Path(lab.spec_file).read_text())
    gone = ", ".join(f"https://{m['address']}:2379" for m in base["etcd"]["members"]
                     if m["name"] in ("etcd02", "etcd03"))
    edits: dict[str, tuple[Any, list[str]]] = {
        "version": (lambda d: d["kubernetes"].update(version="1.30.9"),
                    ["kubernetes.version: live 1.30.4, spec 1.30.9: hactl cannot upgrade a cluster yet"]),
        "pod-subnet": (lambda d: d["kubernetes"].update(podSubnet="10.245.0.0/16"),
                       ["kubernetes.podSubnet cannot change after kubeadm init: live 10.244.0.0/16, "
                        "spec 10.245.0.0/16"]),
        "no-worker02": (lambda d: d.update(workers=[w for w in d["workers"] if w["name"] != "worker02"]),
                        ["worker02 is a Node of the cluster but not in the spec's masters or workers",
                         "kubectl delete node worker02"]),
        "no-master03": (lambda d: d.update(masters=[m for m in d["masters"] if m["name"] != "master03"]),
                        ["master03 is a control-plane Node of the cluster but not in the spec's "
                         "masters or workers", "kubectl drain master03"]),
        "only-etcd01": (lambda d: d["etcd"].update(
                            members=[m for m in d["etcd"]["members"] if m["name"] == "etcd01"]),
                        [f"{m}: kube-apiserver --etcd-servers lists {gone}, which are not the "
                         "client URL of any etcd member of the spec" for m in ("master01", "master02", "master03")]
                        + [f"kubeadm-config (ClusterConfiguration etcd.external.endpoints) lists {gone}"]),
        # §4: a window wider than the certificates' life: the real probe dates them over SSH
        "renew-3650": (lambda d: d.update(certificates={"renewBeforeDays": 3650}),
                       ["kubeadm certificates expire within certificates.renewBeforeDays (3650 days)",
                        "/etc/kubernetes/pki/apiserver.crt expires",
                        "etcd certificates expire within certificates.renewBeforeDays (3650 days)",
                        "/etc/etcd/pki/server.crt expires", "kubeadm certs renew all"]),
    }
    for name, (edit, expected) in edits.items():
        spec = _write(base, tmp_path / f"{name}.yaml", edit)
        res = hactl("plan", "-f", spec, env=env)
        assert res.returncode == 1, f"{name}: {show(res)}"
        out = res.stdout + res.stderr
        assert "the plan is refused" in out, f"{name}: {show(res)}"
        for text in expected:
            assert text in " ".join(out.split()), f"{name}: {text!r} not in {show(res)}"

    # the edits changed nothing: the original spec still plans no changes
    res = hactl("plan", "-f", lab.spec_file, "--detailed-exitcode", env=env)
    assert res.returncode == 0 and "No changes" in res.stdout, show(res)
