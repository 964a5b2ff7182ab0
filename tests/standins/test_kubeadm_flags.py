"""The kubeadm stand-in refuses every flag mix and flag spelling the real kubeadm refuses.

Real behaviour (kubernetes/kubernetes): ``ValidateMixedArguments``/``isAllowedFlag`` in
cmd/kubeadm/app/apis/kubeadm/validation/validation.go run in ``newInitData``, ``newJoinData`` and
every ``init phase`` (the workflow's data initializer); pflag has no abbreviations; kubeadm's root
command sets SilenceErrors/SilenceUsage, so ``kubeadmutil.CheckErr`` prints the bare error and
the ``--v=5`` hint on stderr, exit 1.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import yaml

from hactl.lab.standins import kubeadm
from hactl.lab.standins.kubeadm_flags import check_mixed, parse

HINT = "To see the stack trace of this error execute with --v=5 or higher\n"
REPO = Path(__file__).resolve().parents[2]
KEY = "ab" * 32


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = kubeadm.main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize(("argv", "mixed"), [
    (["init", "--config", "/nonexistent/F", "--upload-certs", "--certificate-key", KEY], "certificate-key"),
    (["init", "--certificate-key", KEY, "--config=/nonexistent/F"], "certificate-key"),
    (["init", "--config", "/nonexistent/F", "--token", "abcdef.0123456789abcdef"], "token"),
    (["init", "--config", "/nonexistent/F", "--pod-network-cidr", "10.0.0.0/8", "--cri-socket", "x"],
     "cri-socket pod-network-cidr"),
    (["join", "--config", "/nonexistent/F", "--control-plane", "--certificate-key", KEY],
     "certificate-key control-plane"),
    (["join", "--config", "/nonexistent/F", "--control-plane"], "control-plane"),
    (["join", "--config", "/nonexistent/F", "--token", "abcdef.0123456789abcdef"], "token"),
    (["join", "k8s-api.lab:6443", "--config", "/nonexistent/F", "--discovery-token-ca-cert-hash", "sha256:00",
      "--apiserver-advertise-address", "198.18.0.11"], "apiserver-advertise-address discovery-token-ca-cert-hash"),
    (["init", "phase", "upload-certs", "--upload-certs", "--certificate-key", KEY, "--config", "/nonexistent/F"],
     "certificate-key"),
    (["init", "phase", "certs", "all", "--config", "/nonexistent/F", "--apiserver-advertise-address", "1.2.3.4"],
     "apiserver-advertise-address"),
    (["init", "phase", "kubeconfig", "all", "--config", "/nonexistent/F", "--control-plane-endpoint", "x:6443"],
     "control-plane-endpoint"),
    (["token", "create", "--config", "/nonexistent/F", "--ttl", "2h", "--print-join-command",
      "--certificate-key", KEY], "certificate-key ttl"),
])
def test_config_mixes_are_refused_with_the_real_message(argv: list[str], mixed: str,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(argv, capsys)
    assert code == 1
    assert err == f"can not mix '--config' with arguments [{mixed}]\n{HINT}"
    assert out == ""


@pytest.mark.parametrize(("argv", "message"), [
    (["init", "--config", "/nonexistent/F", "--pod-net", "10.0.0.0/8"], "unknown flag: --pod-net"),
    (["init", "--pod-net=10.0.0.0/8"], "unknown flag: --pod-net"),
    (["join", "k8s-api.lab:6443", "--tok", "abcdef.0123456789abcdef", "--discovery-token-ca-cert-hash",
      "sha256:00", "--control"], "unknown flag: --tok"),
    (["join", "k8s-api.lab:6443", "--control"], "unknown flag: --control"),
    (["join", "--config", "/nonexistent/F", "--control"], "unknown flag: --control"),
    (["init", "--upload"], "unknown flag: --upload"),
    (["init", "phase", "upload-certs", "--upload"], "unknown flag: --upload"),
    (["init", "phase", "upload-certs", "--upload-certs", "--certificate-k", KEY], "unknown flag: --certificate-k"),
    (["init", "-x"], "unknown shorthand flag: 'x' in -x"),
    (["init", "--config"], "flag needs an argument: --config"),
    (["init", "--no-such-flag"], "unknown flag: --no-such-flag"),
])
def test_unknown_and_abbreviated_flags_are_refused_like_pflag(argv: list[str], message: str,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(argv, capsys)
    assert (code, out, err) == (1, "", f"{message}\n{HINT}")


def test_flags_kubeadm_allows_next_to_config_pass() -> None:
    check_mixed(["--config", "F", "--upload-certs", "--ignore-preflight-errors=all", "--skip-phases",
                 "addon/kube-proxy", "--v=5", "--node-name", "master01", "--dry-run", "--kubeconfig", "K",
                 "--skip-token-print", "--skip-certificate-key-print", "--rootfs", "/", "-v", "3"])
    check_mixed(["--certificate-key", KEY, "--control-plane"])  # no --config: nothing to check


def test_the_real_binary_path_prints_the_same(tmp_path: Path) -> None:
    """Through Debian's python3, as the lab's shim runs it."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    res = subprocess.run(["/usr/bin/python3", "-m", "hactl.lab.standins.kubeadm", "init", "--config", "F",
                          "--upload-certs", "--certificate-key", KEY], capture_output=True, text=True,
                         env=env, timeout=30, cwd=tmp_path)
    assert (res.returncode, res.stdout) == (1, "")
    assert res.stderr == f"can not mix '--config' with arguments [certificate-key]\n{HINT}"
    res = subprocess.run(["/usr/bin/python3", "-m", "hactl.lab.standins.kubeadm", "init", "--pod-net", "x"],
                         capture_output=True, text=True, env=env, timeout=30, cwd=tmp_path)
    assert (res.returncode, res.stderr) == (1, f"unknown flag: --pod-net\n{HINT}")


def test_a_phase_with_sub_phases_needs_one(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HACTL_LAB_ROOT", str(tmp_path))
    code, out, _ = run(["init", "phase", "certs"], capsys)
    assert code == 0 and "init phase certs all" in out
    assert not (tmp_path / "etc/kubernetes/pki").exists()  # like the real one: help only, nothing done
    code, _, err = run(["init", "phase", "no-such-phase"], capsys)
    assert code == 1 and err.startswith('unknown command "no-such-phase" for "kubeadm init phase"')


def _write(path: Path, *docs: dict[str, object]) -> str:
    path.write_text(yaml.safe_dump_all(list(docs)))
    return str(path)


def test_configuration_files_carry_what_the_flags_used_to(tmp_path: Path) -> None:
    """hactl's commands: ``init --config F --upload-certs`` (key in InitConfiguration) and
    ``join --config F`` (a full JoinConfiguration)."""
    init = _write(tmp_path / "init.yaml",
                  {"apiVersion": "kubeadm.k8s.io/v1beta3", "kind": "InitConfiguration", "certificateKey": KEY,
                   "nodeRegistration": {"name": "master01"},
                   "localAPIEndpoint": {"advertiseAddress": "198.18.0.11", "bindPort": 6443}},
                  {"apiVersion": "kubeadm.k8s.io/v1beta3", "kind": "ClusterConfiguration",
                   "controlPlaneEndpoint": "k8s-api.lab:6443"})
    argv = ["init", "--config", init, "--upload-certs"]
    cfg = kubeadm.build_config(parse(kubeadm.build_parser(), argv), argv)
    assert (cfg.certificate_key, cfg.upload_certs, cfg.node_name) == (KEY, True, "master01")

    join = _write(tmp_path / "join.yaml",
                  {"apiVersion": "kubeadm.k8s.io/v1beta3", "kind": "JoinConfiguration",
                   "discovery": {"bootstrapToken": {"apiServerEndpoint": "k8s-api.lab:6443",
                                                    "token": "abcdef.0123456789abcdef",
                                                    "caCertHashes": ["sha256:" + "0" * 64]}},
                   "nodeRegistration": {"name": "master02"},
                   "controlPlane": {"localAPIEndpoint": {"advertiseAddress": "198.18.0.12"},
                                    "certificateKey": KEY}})
    argv = ["join", "--config", join]
    cfg = kubeadm.build_config(parse(kubeadm.build_parser(), argv), argv)
    assert cfg.control_plane and cfg.certificate_key == KEY and cfg.node_name == "master02"
    assert cfg.discovery_endpoint == "k8s-api.lab:6443" and cfg.ca_cert_hashes == ["sha256:" + "0" * 64]
    assert cfg.advertise_address == "198.18.0.12"
    assert (cfg.tls_bootstrap_token or cfg.discovery_token) == "abcdef.0123456789abcdef"  # tlsBootstrapToken default

    worker = _write(tmp_path / "worker.yaml",  # (v1beta3: this kubeadm is 1.30, which has no v1beta4)
                    {"apiVersion": "kubeadm.k8s.io/v1beta3", "kind": "JoinConfiguration",
                     "discovery": {"bootstrapToken": {"apiServerEndpoint": "k8s-api.lab:6443",
                                                      "token": "abcdef.0123456789abcdef",
                                                      "caCertHashes": ["sha256:" + "0" * 64]}},
                     "nodeRegistration": {"name": "worker01"}})
    argv = ["join", "--config", worker]
    cfg = kubeadm.build_config(parse(kubeadm.build_parser(), argv), argv)
    assert not cfg.control_plane and cfg.node_name == "worker01"
