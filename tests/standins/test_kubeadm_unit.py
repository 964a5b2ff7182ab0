"""Unit tests of the kubeadm stand-in's pure parts: sealing, CA pin, tokens, manifests, preflight."""

from __future__ import annotations

import base64
import datetime as dt
import os
import re
import socket
import subprocess
from pathlib import Path

import pytest
import yaml

from hactl.lab.standins import kubeadm_certs as certs
from hactl.lab.standins import kubeadm_files as files
from hactl.lab.standins import kubeadm_preflight as pf
from hactl.lab.standins import kubeadm_token as tok
from hactl.lab.standins.kubeadm_common import KubeadmError, duration_seconds, version_tuple
from hactl.lab.standins.kubeadm_config import Config, cluster_configuration, finish, from_documents
from hactl.lab.standins.pkiutil import ca_cert_hash, new_ca

# -- upload-certs sealing: AES-256-GCM, nonce prepended (Go's gcm.Seal(nonce, nonce, data, nil)) ---


def test_seal_matches_the_gcm_spec_vector() -> None:
    # "The Galois/Counter Mode of Operation", test case 14: K = 0^256, IV = 0^96, P = 0^128
    key, nonce = "00" * 32, bytes(12)
    sealed = certs.seal(bytes(16), key, nonce=nonce)
    assert sealed.hex() == ("00" * 12 + "cea7403d4d606b6e074ec5d3baf39d18"
                            + "d0d1c8a799996bf0265b98b5d48ab919")
    assert certs.unseal(sealed, key) == bytes(16)


def test_seal_round_trip_fresh_nonce_and_wrong_key_message() -> None:
    key = certs.generate_certificate_key()
    assert re.fullmatch(r"[0-9a-f]{64}", key)
    a, b = certs.seal(b"secret", key), certs.seal(b"secret", key)
    assert a[:12] != b[:12] and certs.unseal(a, key) == b"secret"
    with pytest.raises(KubeadmError, match=r"^cipher: message authentication failed$"):
        certs.unseal(a, certs.generate_certificate_key())
    with pytest.raises(KubeadmError, match="size of data is less than the nonce"):
        certs.unseal(b"short", key)
    with pytest.raises(KubeadmError, match="error decoding certificate key"):
        certs.unseal(a, "zz" * 32)


def test_files_to_transfer_names_like_kubeadm() -> None:
    stacked = certs.files_to_transfer(Config())
    assert stacked["etcd-ca.key"] == "/etc/kubernetes/pki/etcd/ca.key"
    assert set(stacked) == {"ca.crt", "ca.key", "front-proxy-ca.crt", "front-proxy-ca.key", "sa.key",
                            "sa.pub", "etcd-ca.crt", "etcd-ca.key"}
    ext = certs.files_to_transfer(Config(etcd_external={"caFile": "/a/ca.crt", "certFile": "/a/c.crt",
                                                        "keyFile": "/a/c.key"}))
    assert ext["external-etcd-ca.crt"] == "/a/ca.crt" and ext["external-etcd.key"] == "/a/c.key"
    assert "etcd-ca.crt" not in ext


# -- discovery pin ------------------------------------------------------------------------------


def test_ca_hash_is_sha256_of_spki_as_openssl_computes_it(tmp_path: Path) -> None:
    ca = new_ca("kubernetes")  # the stand-in's own PKI code (see test_pkiutil.py for more)
    (tmp_path / "ca.crt").write_bytes(ca.cert_pem())
    # the command kubeadm's docs give for computing --discovery-token-ca-cert-hash
    shell = (f"openssl x509 -pubkey -in {tmp_path / 'ca.crt'} | openssl rsa -pubin -outform der 2>/dev/null"
             " | openssl dgst -sha256 -hex | sed 's/^.* //'")
    expected = subprocess.run(["sh", "-c", shell], capture_output=True, text=True, check=True).stdout.strip()
    assert ca_cert_hash(ca.cert) == f"sha256:{expected}"


def test_jws_detached_signature_round_trip() -> None:
    jws = tok.jws_sign("payload", "abcdef", "0123456789abcdef")
    header, empty, _sig = jws.split(".")
    assert empty == "" and base64.urlsafe_b64decode(header + "==") == b'{"alg":"HS256","kid":"abcdef"}'
    assert tok.jws_verify(jws, "payload", "0123456789abcdef")
    assert not tok.jws_verify(jws, "payload2", "0123456789abcdef")
    assert not tok.jws_verify(jws, "payload", "0123456789abcdeX")


# -- tokens -------------------------------------------------------------------------------------


def test_token_format_and_secret() -> None:
    token = tok.generate_token()
    assert re.fullmatch(r"[a-z0-9]{6}\.[a-z0-9]{16}", token)
    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    secret = tok.token_secret(token, 24 * 3600, description="d", now=now)
    data = tok.decode_secret_data(secret)
    assert secret["metadata"] == {"name": f"bootstrap-token-{token[:6]}", "namespace": "kube-system"}
    assert secret["type"] == "bootstrap.kubernetes.io/token"
    assert data == {"token-id": token[:6], "token-secret": token[7:], "expiration": "2026-01-02T00:00:00Z",
                    "description": "d", "usage-bootstrap-authentication": "true",
                    "usage-bootstrap-signing": "true",
                    "auth-extra-groups": "system:bootstrappers:kubeadm:default-node-token"}
    proxy = tok.decode_secret_data(tok.token_secret(token, 7200, usages=(), groups=(), now=now))
    assert proxy["expiration"] == "2026-01-01T02:00:00Z" and "auth-extra-groups" not in proxy
    assert "expiration" not in tok.decode_secret_data(tok.token_secret(token, 0))
    with pytest.raises(KubeadmError, match=r'was not of the form "\[a-z0-9\]\{6\}.\[a-z0-9\]\{16\}"'):
        tok.parse_token("ABCDEF.0123456789abcdef")


def test_durations_and_versions() -> None:
    assert duration_seconds("24h0m0s", 0) == 86400
    assert duration_seconds("2h", 0) == 7200 and duration_seconds("90s", 0) == 90
    assert duration_seconds(None, 5) == 5 and duration_seconds("0", 5) == 0
    assert [tok.short_duration(s) for s in (-5, 30, 600, 7200, 3 * 86400, 3650 * 86400)] == \
        ["<invalid>", "30s", "10m", "2h", "3d", "10y"]
    assert version_tuple("v1.31.0") >= (1, 31, 0) > version_tuple("1.30.4")
    assert pf.min_external_etcd("v1.31.2") == "3.5.11" and pf.min_external_etcd("v1.30.4") == "3.2.18"


def test_join_command_and_table() -> None:
    cmd = tok.join_command("k8s-api.lab:6443", "abcdef.0123456789abcdef", "sha256:00", "ff")
    assert cmd == ("kubeadm join k8s-api.lab:6443 --token abcdef.0123456789abcdef "
                   "--discovery-token-ca-cert-hash sha256:00 --control-plane --certificate-key ff")
    table = tok.tabulate([["CERTIFICATE", "EXPIRES", "X"], ["a", "b", "c"]]).splitlines()
    assert table == ["CERTIFICATE   EXPIRES   X", "a             b         c"]


# -- configuration and manifests ---------------------------------------------------------------


def _cfg(**docs: dict[str, object]) -> Config:
    cfg = Config()
    from_documents(cfg, [
        {"apiVersion": "kubeadm.k8s.io/v1beta4", "kind": "InitConfiguration",
         "localAPIEndpoint": {"advertiseAddress": "198.18.0.11", "bindPort": 6443},
         "nodeRegistration": {"name": "master01", "ignorePreflightErrors": ["Port-10250"]}},
        {"apiVersion": "kubeadm.k8s.io/v1beta4", "kind": "ClusterConfiguration",
         "controlPlaneEndpoint": "k8s-api.lab:6443", "networking": {"podSubnet": "10.244.0.0/16"},
         "apiServer": {"extraArgs": [{"name": "audit-log-maxage", "value": "7"}]},
         **docs},
    ])
    return finish(cfg)


def test_config_documents_v1beta4_and_cluster_configuration() -> None:
    cfg = _cfg(etcd={"external": {"endpoints": ["https://198.18.0.21:2379"], "caFile": "/e/ca.crt",
                                  "certFile": "/e/c.crt", "keyFile": "/e/c.key"}})
    assert cfg.node_name == "master01" and cfg.endpoint() == "k8s-api.lab:6443"
    assert cfg.apiserver_args == {"audit-log-maxage": "7"} and cfg.external
    assert cfg.ignore_preflight == {"Port-10250"}
    doc = cluster_configuration(cfg)
    assert doc["kind"] == "ClusterConfiguration" and doc["etcd"]["external"]["caFile"] == "/e/ca.crt"
    assert doc["networking"]["podSubnet"] == "10.244.0.0/16"


def test_apiserver_manifest_has_the_real_flags() -> None:
    cfg = _cfg(etcd={"external": {"endpoints": ["https://198.18.0.21:2379", "https://198.18.0.22:2379"],
                                  "caFile": "/etc/kubernetes/pki/etcd/ca.crt",
                                  "certFile": "/etc/kubernetes/pki/apiserver-etcd-client.crt",
                                  "keyFile": "/etc/kubernetes/pki/apiserver-etcd-client.key"}})
    pod = files.apiserver_manifest(cfg)
    command = pod["spec"]["containers"][0]["command"]
    assert command[0] == "kube-apiserver"
    for flag in ("--advertise-address=198.18.0.11", "--secure-port=6443", "--enable-bootstrap-token-auth=true",
                 "--client-ca-file=/etc/kubernetes/pki/ca.crt", "--tls-cert-file=/etc/kubernetes/pki/apiserver.crt",
                 "--etcd-servers=https://198.18.0.21:2379,https://198.18.0.22:2379",
                 "--etcd-cafile=/etc/kubernetes/pki/etcd/ca.crt", "--service-cluster-ip-range=10.96.0.0/12",
                 "--service-account-key-file=/etc/kubernetes/pki/sa.pub", "--audit-log-maxage=7"):
        assert flag in command
    assert pod["metadata"]["annotations"]["kubeadm.kubernetes.io/kube-apiserver.advertise-address.endpoint"] \
        == "198.18.0.11:6443"
    cm = files.controller_manager_manifest(cfg)["spec"]["containers"][0]["command"]
    assert "--cluster-cidr=10.244.0.0/16" in cm and "--controllers=*,bootstrapsigner,tokencleaner" in cm
    assert "--leader-elect=true" in files.scheduler_manifest(cfg)["spec"]["containers"][0]["command"]


def test_stacked_etcd_manifest_runs_the_real_etcd() -> None:
    cfg = _cfg()
    pod = files.etcd_manifest(cfg, "master01=https://198.18.0.11:2380,master02=https://198.18.0.12:2380",
                              state="existing")
    command = pod["spec"]["containers"][0]["command"]
    assert command[0] == "etcd"
    assert "--initial-cluster-state=existing" in command and "--name=master01" in command
    assert "--listen-client-urls=https://127.0.0.1:2379,https://198.18.0.11:2379" in command
    assert "--initial-cluster=master01=https://198.18.0.11:2380,master02=https://198.18.0.12:2380" in command
    new = files.etcd_manifest(cfg, "master01=https://198.18.0.11:2380")["spec"]["containers"][0]["command"]
    assert not any(a.startswith("--initial-cluster-state") for a in new)


def test_kubeconfig_embeds_certs() -> None:
    text = files.kubeconfig("https://k8s-api.lab:6443", b"CA", "kubernetes-admin", cert_pem=b"C", key_pem=b"K")
    doc = yaml.safe_load(text)
    assert doc["current-context"] == "kubernetes-admin@kubernetes"
    assert doc["clusters"][0]["cluster"]["certificate-authority-data"] == base64.b64encode(b"CA").decode()
    assert doc["users"][0]["user"]["client-key-data"] == base64.b64encode(b"K").decode()


# -- preflight ----------------------------------------------------------------------------------


def test_preflight_messages_exit_and_ignore(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("HACTL_LAB_ROOT", str(tmp_path))
    manifests = tmp_path / "etc/kubernetes/manifests"
    manifests.mkdir(parents=True)
    (manifests / "kube-apiserver.yaml").write_text("x")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        checks = [pf.port_check(port), pf.file_available("/etc/kubernetes/manifests/kube-apiserver.yaml"),
                  pf.dir_available("/etc/kubernetes/manifests"), pf.dir_available("/var/lib/etcd")]
        with pytest.raises(KubeadmError) as err:
            pf.run_checks(checks, set())
        assert err.value.render() == (
            "error execution phase preflight: [preflight] Some fatal errors occurred:\n"
            f"\t[ERROR Port-{port}]: Port {port} is in use\n"
            "\t[ERROR FileAvailable--etc-kubernetes-manifests-kube-apiserver.yaml]: "
            "/etc/kubernetes/manifests/kube-apiserver.yaml already exists\n"
            "\t[ERROR DirAvailable--etc-kubernetes-manifests]: /etc/kubernetes/manifests is not empty\n"
            "[preflight] If you know what you are doing, you can make a check non-fatal with "
            "`--ignore-preflight-errors=...`\nTo see the stack trace of this error execute with --v=5 or higher")
        pf.run_checks(checks, {f"port-{port}", "FileAvailable--etc-kubernetes-manifests-kube-apiserver.yaml",
                               "DirAvailable--etc-kubernetes-manifests"})
        assert f"[WARNING Port-{port}]: Port {port} is in use" in capsys.readouterr().err
        pf.run_checks(checks, {"all"})


def test_port_check_ignores_time_wait_like_go_net_listen() -> None:
    """kubeadm's Port-N check is Go's ``net.Listen`` (SO_REUSEADDR): a port whose server was
    stopped, with a connection left in TIME_WAIT, is free; a listening port is in use."""
    with socket.socket() as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        assert pf.port_check(port)[1]() == f"Port {port} is in use"
        client = socket.create_connection(("127.0.0.1", port))
        accepted, _ = server.accept()
        accepted.close()  # the server side closes first: it is the side that keeps TIME_WAIT
        client.recv(1)
        client.close()
    states = subprocess.run(["ss", "-Htan", f"sport = :{port}"], capture_output=True, text=True).stdout
    assert "TIME-WAIT" in states, states
    assert pf.port_check(port)[1]() is None


def test_external_etcd_version_check_message(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pf, "etcd_version", lambda *a: "3.4.23")
    cfg = _cfg(kubernetesVersion="v1.31.0", etcd={"external": {"endpoints": ["https://198.18.0.21:2379"]}})
    with pytest.raises(KubeadmError, match=re.escape(
            "[ERROR ExternalEtcdVersion]: this version of kubeadm only supports external etcd version >= "
            "3.5.11. Current version: 3.4.23")):
        pf.run_checks(pf.external_etcd_checks(cfg), set())
    cfg = _cfg(kubernetesVersion="v1.30.4", etcd={"external": {"endpoints": ["https://198.18.0.21:2379"]}})
    pf.run_checks(pf.external_etcd_checks(cfg), set())


def test_cli_errors_exit_1_like_cobra() -> None:
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    res = subprocess.run(["/usr/bin/python3", "-m", "hactl.lab.standins.kubeadm", "init", "--no-such-flag"],
                         capture_output=True, text=True, env=env, timeout=30)
    assert (res.returncode, res.stdout) == (1, "")
    assert res.stderr == ("unknown flag: --no-such-flag\n"
                          "To see the stack trace of this error execute with --v=5 or higher\n")
    short = subprocess.run(["/usr/bin/python3", "-m", "hactl.lab.standins.kubeadm", "version", "-o", "short"],
                           capture_output=True, text=True, env=env, timeout=30)
    assert short.returncode == 0 and re.fullmatch(r"v1\.\d+\.\d+\n", short.stdout)


def test_control_plane_join_needs_endpoint_and_shared_certs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from hactl.lab.standins.kubeadm_join import check_can_host_control_plane

    monkeypatch.setenv("HACTL_LAB_ROOT", str(tmp_path))
    with pytest.raises(KubeadmError) as err:
        check_can_host_control_plane(Config(control_plane=True))
    text = err.value.render()
    assert text.startswith("error execution phase preflight: \nOne or more conditions for hosting a new "
                           "control plane instance is not satisfied.")
    assert "doesn't have a stable controlPlaneEndpoint address" in text
    assert "failure loading /etc/kubernetes/pki/ca.crt" in text
    check_can_host_control_plane(Config(control_plane=True, control_plane_endpoint="k8s-api.lab:6443",
                                        certificate_key="00" * 32))
