"""etcd env file, systemd unit (checked by systemd-analyze) and the etcd PKI set."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from render_helpers import make_cluster

from hactl.render import etcd, pki
from hactl.render.etcd_pki import build_etcd_pki
from hactl.sensitive import MASK, Sensitive

SEED_INITIAL_CLUSTER = (
    "etcd01=https://10.0.0.21:2380,etcd02=https://10.0.0.22:2380,etcd03=https://10.0.0.23:2380"
)


def test_seed_member_env_matches_the_seed() -> None:
    cluster = make_cluster("seed")
    text = etcd.render_etcd_env(cluster, "etcd01")
    assert 'ETCD_NAME="etcd01"\n' in text
    assert f'ETCD_INITIAL_CLUSTER="{SEED_INITIAL_CLUSTER}"\n' in text
    env = etcd.parse_env_file(text)
    assert env["ETCD_INITIAL_CLUSTER_STATE"] == "new"
    assert env["ETCD_INITIAL_CLUSTER_TOKEN"] == "seed"
    assert env["ETCD_LISTEN_CLIENT_URLS"] == "https://10.0.0.21:2379,https://127.0.0.1:2379"
    assert env["ETCD_ADVERTISE_CLIENT_URLS"] == "https://10.0.0.21:2379"
    assert env["ETCD_LISTEN_PEER_URLS"] == env["ETCD_INITIAL_ADVERTISE_PEER_URLS"]
    assert env["ETCD_LISTEN_PEER_URLS"] == "https://10.0.0.21:2380"
    assert env["ETCD_CLIENT_CERT_AUTH"] == env["ETCD_PEER_CLIENT_CERT_AUTH"] == "true"
    assert env["ETCD_TRUSTED_CA_FILE"] == env["ETCD_PEER_TRUSTED_CA_FILE"] == "/etc/etcd/pki/ca.crt"
    for key in ("ETCD_CERT_FILE", "ETCD_KEY_FILE", "ETCD_PEER_CERT_FILE", "ETCD_PEER_KEY_FILE"):
        assert env[key].startswith("/etc/etcd/pki/")
    assert all(
        url.startswith("https://") for k, v in env.items() if "URL" in k for url in v.split(",")
    )
    assert etcd.client_endpoints(cluster) == [
        "https://10.0.0.21:2379",
        "https://10.0.0.22:2379",
        "https://10.0.0.23:2379",
    ]
    assert text == etcd.render_etcd_env(cluster, "etcd01")  # deterministic


def test_existing_state_lists_the_given_members() -> None:
    cluster = make_cluster(etcd_members=5)
    current = cluster.etcd_members[:4]
    env = etcd.parse_env_file(
        etcd.render_etcd_env(cluster, "etcd04", state="existing", members=current)
    )
    assert env["ETCD_INITIAL_CLUSTER_STATE"] == "existing"
    assert [p.split("=")[0] for p in env["ETCD_INITIAL_CLUSTER"].split(",")] == [
        "etcd01",
        "etcd02",
        "etcd03",
        "etcd04",
    ]
    with pytest.raises(ValueError, match="include the member itself"):
        etcd.render_etcd_env(cluster, "etcd05", state="existing", members=current)


def test_stacked_members_are_the_masters_and_unknown_names_fail() -> None:
    cluster = make_cluster(topology="stacked")
    env = etcd.parse_env_file(etcd.render_etcd_env(cluster, "master02"))
    assert env["ETCD_INITIAL_CLUSTER"].split(",")[1] == "master02=https://198.18.0.12:2380"
    with pytest.raises(KeyError, match="etcd01"):
        etcd.render_etcd_env(cluster, "etcd01")


def test_parse_env_file() -> None:
    text = '# c\n\nA="x y"\nB=plain\nC=\n'
    assert etcd.parse_env_file(text) == {"A": "x y", "B": "plain", "C": ""}
    with pytest.raises(ValueError, match="line 1"):
        etcd.parse_env_file("not an assignment")


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
def test_unit_passes_systemd_analyze(tmp_path: Path) -> None:
    text = etcd.render_etcd_unit(make_cluster())
    for line in [
        "Type=notify",
        "EnvironmentFile=/etc/etcd/etcd.env",
        "ExecStart=/usr/bin/etcd",
        "Restart=on-failure",
    ]:
        assert line in text.splitlines()
    unit = tmp_path / "etcd.service"
    unit.write_text(text)
    result = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr
    unit.write_text(text.replace("Type=notify", "Type=bogus"))  # the checker does catch errors
    bad = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, check=False
    )
    assert "service type" in bad.stderr


def test_pki_set_for_a_cluster() -> None:
    cluster = make_cluster(etcd_members=3)
    ca = pki.make_ca("etcd-ca", key_type="ecdsa")  # fast; RSA is covered by the live test
    certs = build_etcd_pki(cluster, ca, key_type="ecdsa")
    assert certs.ca is ca and sorted(certs.members) == ["etcd01", "etcd02", "etcd03"]
    m = certs.members["etcd02"]
    for pair in (m.server, m.peer):
        assert pki.common_name(pair.cert) == "etcd02"
        assert pki.usages(pair.cert) == {"server", "client"}
        dns, ips = pki.subject_alt_names(pair.cert)
        assert dns == ["etcd02", "localhost"]
        assert [str(ip) for ip in ips] == ["198.18.0.22", "127.0.0.1", "::1"]
        assert pki.issued_by(pair.cert, ca.cert)
    assert pki.usages(m.healthcheck_client.cert) == {"client"}
    client = certs.apiserver_etcd_client.cert
    assert pki.common_name(client) == "kube-apiserver-etcd-client"
    assert pki.organizations(client) == ["system:masters"]
    assert pki.usages(client) == {"client"}

    files = certs.member_files("etcd02")
    assert [f.path for f in files] == [
        "/etc/etcd/pki/ca.crt",
        "/etc/etcd/pki/server.crt",
        "/etc/etcd/pki/server.key",
        "/etc/etcd/pki/peer.crt",
        "/etc/etcd/pki/peer.key",
        "/etc/etcd/pki/healthcheck-client.crt",
        "/etc/etcd/pki/healthcheck-client.key",
    ]
    for f in files:
        assert f.secret == f.path.endswith(".key")
        assert f.mode == (0o600 if f.secret else 0o644)
        if f.secret:
            assert isinstance(f.content, Sensitive)
            assert MASK in repr(f) and "PRIVATE KEY" not in repr(f) + str(f)
            assert "PRIVATE KEY" in f.reveal()
    master = {f.path: f for f in certs.master_files()}
    assert sorted(master) == [
        "/etc/kubernetes/pki/apiserver-etcd-client.crt",
        "/etc/kubernetes/pki/apiserver-etcd-client.key",
        "/etc/kubernetes/pki/etcd/ca.crt",
    ]
    assert master["/etc/kubernetes/pki/apiserver-etcd-client.key"].mode == 0o600


def test_member_files() -> None:
    cluster = make_cluster()
    files = etcd.etcd_member_files(cluster, "etcd03", state="existing")
    assert [(f.path, f.mode, f.secret) for f in files] == [
        ("/etc/etcd/etcd.env", 0o644, False),
        ("/etc/systemd/system/etcd.service", 0o644, False),
    ]
    assert 'ETCD_INITIAL_CLUSTER_STATE="existing"' in files[0].reveal()
