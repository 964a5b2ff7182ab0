"""A TLS etcd cluster of 3, configured by hand on the lab's etcd nodes and run by the stand-in
systemctl; power and network faults: quorum kept with one member down, lost with two, healed."""

from __future__ import annotations

import datetime as dt
import ipaddress
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

MEMBERS = ("etcd01", "etcd02", "etcd03")
PKI = "/etc/etcd/pki"


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _cert(cn: str, key: ec.EllipticCurvePrivateKey, issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None,
          ips: tuple[str, ...] = (), dns: tuple[str, ...] = ()) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer[0].subject if issuer else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
    )
    if issuer is None:
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        return builder.sign(key, hashes.SHA256())
    builder = builder.add_extension(
        x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
    )
    sans: list[x509.GeneralName] = [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
    sans += [x509.DNSName(d) for d in dns]
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(issuer[1], hashes.SHA256())


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _etcdctl(lab: Any, node: str, args: str, endpoints: str | None = None) -> Any:
    address = lab.node(node).address
    endpoint = endpoints or f"https://{address}:2379"
    return lab.run(
        node,
        f"ETCDCTL_API=3 etcdctl --endpoints={endpoint} --cacert={PKI}/ca.crt --cert=/root/client.crt "
        f"--key=/root/client.key --dial-timeout=2s --command-timeout=3s {args}",
        timeout=30,
    )


def _wait(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last is True:
            return
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}: {last}")


def _healthy(lab: Any, node: str, cluster: bool = True) -> Any:
    proc = _etcdctl(lab, node, "endpoint health" + (" --cluster" if cluster else ""))
    text = proc.stdout + proc.stderr  # etcdctl 3.4 reports health on stderr
    if proc.returncode == 0 and text.count(" is healthy") == (3 if cluster else 1):
        return True
    return text


def _put(lab: Any, node: str, key: str, value: str) -> None:
    """A write that succeeds once the cluster has a leader (a new election takes a moment)."""

    def attempt() -> Any:
        proc = _etcdctl(lab, node, f"put {key} {value}")
        return True if proc.returncode == 0 else proc.stderr[-300:]

    _wait(attempt, 20, f"a write through {node}")


def _configure(lab: Any) -> None:
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _cert("etcd-ca", ca_key, None)
    client_key = ec.generate_private_key(ec.SECP256R1())
    client = _cert("etcdctl", client_key, (ca, ca_key))
    initial = ",".join(f"{m}=https://{lab.node(m).address}:2380" for m in MEMBERS)

    def one(member: str) -> None:
        address = str(lab.node(member).address)
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _cert(member, key, (ca, ca_key), ips=(address, "127.0.0.1"), dns=(member, "localhost"))
        lab.put(member, f"{PKI}/ca.crt", _pem(ca))
        lab.put(member, f"{PKI}/server.crt", _pem(cert))
        lab.put(member, f"{PKI}/server.key", _key_pem(key), 0o600)
        lab.put(member, "/root/client.crt", _pem(client))
        lab.put(member, "/root/client.key", _key_pem(client_key), 0o600)
        lab.put(member, "/etc/default/etcd", "\n".join([
            f"ETCD_NAME={member}",
            f"ETCD_LISTEN_PEER_URLS=https://{address}:2380",
            f"ETCD_LISTEN_CLIENT_URLS=https://{address}:2379,https://127.0.0.1:2379",
            f"ETCD_ADVERTISE_CLIENT_URLS=https://{address}:2379",
            f"ETCD_INITIAL_ADVERTISE_PEER_URLS=https://{address}:2380",
            f"ETCD_INITIAL_CLUSTER={initial}",
            "ETCD_INITIAL_CLUSTER_STATE=new",
            "ETCD_INITIAL_CLUSTER_TOKEN=hactl-lab",
            f"ETCD_CERT_FILE={PKI}/server.crt",
            f"ETCD_KEY_FILE={PKI}/server.key",
            f"ETCD_TRUSTED_CA_FILE={PKI}/ca.crt",
            "ETCD_CLIENT_CERT_AUTH=true",
            f"ETCD_PEER_CERT_FILE={PKI}/server.crt",
            f"ETCD_PEER_KEY_FILE={PKI}/server.key",
            f"ETCD_PEER_TRUSTED_CA_FILE={PKI}/ca.crt",
            "ETCD_PEER_CLIENT_CERT_AUTH=true",
        ]) + "\n")
        lab.run(member, f"chown -R etcd:etcd {PKI}", check=True)
        # as an operator would: over ssh, with the node's systemctl
        lab.run(member, "systemctl enable --now etcd", via="ssh", check=True)

    with ThreadPoolExecutor(max_workers=3) as pool:
        list(pool.map(one, MEMBERS))


def test_tls_etcd_cluster_survives_one_fault_not_two(lab_factory: Any) -> None:
    lab = lab_factory()
    _configure(lab)
    _wait(lambda: _healthy(lab, "etcd01"), 40, "a healthy etcd cluster")

    listed = _etcdctl(lab, "etcd02", "member list -w simple")
    assert listed.returncode == 0, listed.stderr
    assert sorted(line.split(", ")[2] for line in listed.stdout.splitlines()) == list(MEMBERS)
    assert all(", started, " in line for line in listed.stdout.splitlines())
    assert lab.run("etcd01", "systemctl is-active etcd").stdout == "active\n"
    assert lab.run("etcd01", "systemctl is-enabled etcd").stdout == "enabled\n"
    pid = lab.run("etcd01", "systemctl show -p MainPID --value etcd").stdout.strip()
    assert lab.run("etcd01", f"ps -o user= -o comm= -p {pid}").stdout.split() == ["etcd", "etcd"]
    assert _etcdctl(lab, "etcd01", "put /lab/one 1").returncode == 0

    # power: one member down keeps quorum, two lose it, booting them back heals with the data
    lab.stop("etcd01")
    _put(lab, "etcd02", "/lab/two", "2")
    assert _healthy(lab, "etcd03", cluster=False) is True
    lab.stop("etcd02")
    lost = _etcdctl(lab, "etcd03", "put /lab/three 3")
    assert lost.returncode != 0
    assert _healthy(lab, "etcd03", cluster=False) is not True
    lab.start("etcd01")  # etcd is enabled: it starts at boot, with its data dir
    _wait(lambda: _healthy(lab, "etcd03", cluster=False), 30, "quorum back with etcd01")
    got = _etcdctl(lab, "etcd01", "get /lab --prefix")
    # (a write that timed out without quorum may still commit later, as in real etcd)
    assert {"/lab/one", "/lab/two"} <= set(got.stdout.split()[::2]), got.stderr
    lab.start("etcd02")
    _wait(lambda: _healthy(lab, "etcd02"), 30, "all three members healthy")

    # network: the same with partitions
    lab.partition("etcd03")
    _put(lab, "etcd01", "/lab/four", "4")
    lab.partition("etcd02")
    assert _etcdctl(lab, "etcd01", "put /lab/five 5").returncode != 0
    lab.heal("etcd02")
    lab.heal("etcd03")
    _wait(lambda: _healthy(lab, "etcd03"), 30, "the partitioned cluster to heal")
    got = _etcdctl(lab, "etcd03", "get /lab --prefix")
    assert {"/lab/one", "/lab/two", "/lab/four"} <= set(got.stdout.split()[::2]), got.stderr
