"""The seed's HA control plane built by hand on lab nodes, with the kubeadm/kubelet stand-ins.

External TLS etcd of 3 under the stand-in systemctl, HAProxy (the seed's config) on lb01,
``kubeadm init --config … --upload-certs`` on master01 through the LB endpoint, ``kubeadm join
--control-plane --certificate-key`` on master02 and master03, then the machine's real kubectl and
etcdctl check the result; a wrong certificate key fails like the real kubeadm; power off master01:
the API still answers through the LB, master01 goes NotReady, leadership moves.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import yaml

from hactl.render import pki

ETCD = ("etcd01", "etcd02", "etcd03")
MASTERS = ("master01", "master02", "master03")
EPKI = "/etc/etcd/pki"
APISERVER_PGREP = "pgrep -f '^/usr/bin/python3 -m hactl.lab.standins.kube_apiserver'"
LEADER = {"leader-elect-lease-duration": "4s", "leader-elect-renew-deadline": "3s",
          "leader-elect-retry-period": "1s"}
KNOBS = {
    "kubeadm": {"apiWaitSeconds": 120, "kubeletWaitSeconds": 120,
                "controllerManagerExtraArgs": {**LEADER, "node-monitor-grace-period": "8s"},
                "schedulerExtraArgs": LEADER},
    "kubelet": {"heartbeatSeconds": 2},
}
HAPROXY = """\
global
    chroot /var/lib/haproxy
    stats socket /run/haproxy/admin.sock mode 660 level admin
    user haproxy
    group haproxy

defaults
    timeout connect 5s
    timeout client 35s
    timeout server 35s

frontend k8s-api
    bind *:6443
    mode tcp
    option tcplog
    default_backend k8s-api-backend

backend k8s-api-backend
    mode tcp
    balance roundrobin
    option tcp-check
{servers}
"""


def wait(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last is True:
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}: {str(last)[-1500:]}")


def setup_etcd(lab: Any) -> pki.CertKey:
    ca = pki.make_ca("etcd-ca", key_type="ecdsa")
    client = pki.issue(ca, "kube-apiserver-etcd-client", usage="client", key_type="ecdsa")
    initial = ",".join(f"{m}=https://{lab.node(m).address}:2380" for m in ETCD)

    def one(member: str) -> None:
        address = str(lab.node(member).address)
        server = pki.issue(ca, member, usage="peer", dns_names=[member, "localhost"],
                           ip_addresses=[address, "127.0.0.1"], key_type="ecdsa")
        lab.put(member, f"{EPKI}/ca.crt", ca.cert_pem())
        lab.put(member, f"{EPKI}/server.crt", server.cert_pem())
        lab.put(member, f"{EPKI}/server.key", server.key_pem(), 0o600)
        lab.put(member, "/etc/default/etcd", "\n".join([
            f"ETCD_NAME={member}", f"ETCD_LISTEN_PEER_URLS=https://{address}:2380",
            f"ETCD_LISTEN_CLIENT_URLS=https://{address}:2379,https://127.0.0.1:2379",
            f"ETCD_ADVERTISE_CLIENT_URLS=https://{address}:2379",
            f"ETCD_INITIAL_ADVERTISE_PEER_URLS=https://{address}:2380",
            f"ETCD_INITIAL_CLUSTER={initial}", "ETCD_INITIAL_CLUSTER_STATE=new",
            "ETCD_INITIAL_CLUSTER_TOKEN=hactl-lab",
            f"ETCD_CERT_FILE={EPKI}/server.crt", f"ETCD_KEY_FILE={EPKI}/server.key",
            f"ETCD_TRUSTED_CA_FILE={EPKI}/ca.crt", "ETCD_CLIENT_CERT_AUTH=true",
            f"ETCD_PEER_CERT_FILE={EPKI}/server.crt", f"ETCD_PEER_KEY_FILE={EPKI}/server.key",
            f"ETCD_PEER_TRUSTED_CA_FILE={EPKI}/ca.crt", "ETCD_PEER_CLIENT_CERT_AUTH=true",
        ]) + "\n")
        lab.run(member, f"chown -R etcd:etcd {EPKI}", check=True)
        lab.run(member, "systemctl enable --now etcd", via="ssh", check=True)

    with ThreadPoolExecutor(max_workers=3) as pool:
        list(pool.map(one, ETCD))
    # the seed's external-etcd files, on the first master only (the others get them from kubeadm-certs)
    lab.put("master01", "/etc/kubernetes/pki/etcd/ca.crt", ca.cert_pem())
    lab.put("master01", "/etc/kubernetes/pki/apiserver-etcd-client.crt", client.cert_pem())
    lab.put("master01", "/etc/kubernetes/pki/apiserver-etcd-client.key", client.key_pem(), 0o600)
    return ca


def kubectl(lab: Any, node: str, args: str) -> Any:
    return lab.run(node, f"kubectl --kubeconfig /etc/kubernetes/admin.conf --request-timeout=5s {args}",
                   timeout=30)


def ready_masters(lab: Any, node: str) -> Any:
    res = kubectl(lab, node, "get nodes -l node-role.kubernetes.io/control-plane -o json")
    if res.returncode != 0:
        return res.stderr
    return {i["metadata"]["name"]: next((c["status"] for c in i["status"].get("conditions", [])
                                         if c["type"] == "Ready"), "?")
            for i in json.loads(res.stdout)["items"]}


def lease_holders(lab: Any, node: str) -> Any:
    res = kubectl(lab, node, "get lease -n kube-system -o json")
    if res.returncode != 0:
        return {}
    return {i["metadata"]["name"]: i["spec"].get("holderIdentity", "")
            for i in json.loads(res.stdout)["items"]
            if i["metadata"]["name"] in ("kube-scheduler", "kube-controller-manager")}


def init_by_hand(lab: Any) -> tuple[pki.CertKey, str, str]:
    """The seed's external-etcd bring-up by hand up to ``kubeadm init --upload-certs`` on
    master01 (TLS etcd under Debian's unit, the seed's haproxy.cfg, a kubeadm config file).
    Returns the etcd CA, the worker join command and the certificate key."""
    endpoint = lab.cluster.control_plane_endpoint
    ca = setup_etcd(lab)
    seed_haproxy(lab)
    endpoints = "\n".join(f"    - https://{lab.node(m).address}:2379" for m in ETCD)
    lab.put("master01", "/root/kubeadm-config.yaml", f"""\
apiVersion: kubeadm.k8s.io/v1beta3
kind: InitConfiguration
localAPIEndpoint:
  advertiseAddress: "{lab.node("master01").address}"
---
apiVersion: kubeadm.k8s.io/v1beta3
kind: ClusterConfiguration
kubernetesVersion: v1.30.4
controlPlaneEndpoint: "{endpoint}"
networking:
  podSubnet: 10.244.0.0/16
etcd:
  external:
    endpoints:
{endpoints}
    caFile: /etc/kubernetes/pki/etcd/ca.crt
    certFile: /etc/kubernetes/pki/apiserver-etcd-client.crt
    keyFile: /etc/kubernetes/pki/apiserver-etcd-client.key
""")
    init = lab.run("master01", "kubeadm init --config /root/kubeadm-config.yaml --upload-certs",
                   via="ssh", timeout=300)
    joined = join_command(init, endpoint)
    pod_network_by_hand(lab)
    return (ca, *joined)


def pod_network_by_hand(lab: Any) -> None:
    """What kubeadm init tells the operator to do next ("You should now deploy a pod network to
    the cluster"): kubectl apply of the CNI's manifest (flannel, as hactl renders it)."""
    from hactl.render.cni import manifest_text, network_objects

    res = lab.run("master01", "kubectl --kubeconfig /etc/kubernetes/admin.conf apply -f -",
                  input=manifest_text(network_objects(lab.cluster)), via="ssh", timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr


def seed_haproxy(lab: Any) -> None:
    """The seed's haproxy.cfg on lb01 (TCP check), started."""
    servers = "\n".join(f"    server {m} {lab.node(m).address}:6443 check" for m in MASTERS)
    lab.put("lb01", "/etc/haproxy/haproxy.cfg", HAPROXY.format(servers=servers))
    assert lab.run("lb01", "systemctl start haproxy", via="ssh").returncode == 0


def join_command(init: Any, endpoint: str) -> tuple[str, str]:
    """From a successful ``kubeadm init --upload-certs``: the worker join command and the key."""
    assert init.returncode == 0, init.stdout[-3000:] + init.stderr[-3000:]
    out = init.stdout
    assert "Your Kubernetes control-plane has initialized successfully!" in out
    token = out.split("--token ", 1)[1].split()[0]
    ca_hash = out.split("--discovery-token-ca-cert-hash ", 1)[1].split()[0]
    key = out.split("[upload-certs] Using certificate key:\n", 1)[1].split("\n", 1)[0]
    return f"kubeadm join {endpoint} --token {token} --discovery-token-ca-cert-hash {ca_hash}", key


def stacked_by_hand(lab_factory: Any) -> tuple[Any, str, str]:
    """A lab of specs/lab.yaml with stacked etcd and one worker, the seed's haproxy.cfg, and
    exactly the seed's ``kubeadm init``; returns the lab, the join command and the key."""
    from tests.lab.conftest import LAB_SPEC

    doc = yaml.safe_load(LAB_SPEC.read_text())
    doc["etcd"] = {"topology": "stacked", "version": doc["etcd"].get("version", "3.4.23")}
    doc["workers"] = doc["workers"][:1]
    lab = lab_factory(doc, knobs=KNOBS)
    endpoint = lab.cluster.control_plane_endpoint
    seed_haproxy(lab)
    init = lab.run("master01", f'kubeadm init --control-plane-endpoint "{endpoint}" --upload-certs '
                   f"--pod-network-cidr=10.244.0.0/16 --apiserver-advertise-address "
                   f"{lab.node('master01').address}", via="ssh", timeout=300)
    joined = join_command(init, endpoint)
    pod_network_by_hand(lab)
    return (lab, *joined)


def cp_flags(lab: Any, master: str, key: str) -> str:
    """The flags of a control-plane join by hand. The lab's nodes have a second interface that
    carries the default route, as multi-homed real hosts do, and kubeadm advertises that
    interface's address unless told otherwise (``--apiserver-advertise-address``), so a person
    joining masters there pins the address the cluster should use."""
    return (f"--control-plane --certificate-key {key} "
            f"--apiserver-advertise-address {lab.node(master).address}")


def join_masters_by_hand(lab: Any, join: str, key: str) -> None:
    for master in MASTERS[1:]:  # control-plane joins one at a time
        res = lab.run(master, f"{join} {cp_flags(lab, master, key)}", via="ssh", timeout=300)
        assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]


def test_seed_ha_control_plane_by_hand(lab_factory: Any) -> None:
    lab = lab_factory(knobs=KNOBS)
    _ca, join, key = init_by_hand(lab)

    # a wrong certificate key fails exactly like the real kubeadm (and writes no CA key)
    wrong = lab.run("worker01", f"{join} --control-plane --certificate-key {'0' * 64}", via="ssh",
                    timeout=120)
    assert wrong.returncode == 1
    assert "error downloading certs: error decoding secret data with provided key: " \
           "cipher: message authentication failed" in wrong.stderr
    assert lab.run("worker01", "test -e /etc/kubernetes/pki/ca.key").returncode == 1

    join_masters_by_hand(lab, join, key)

    wait(lambda: ready_masters(lab, "master01") == dict.fromkeys(MASTERS, "True") or
         ready_masters(lab, "master01"), 60, "3 Ready control-plane nodes")
    # master01 has no local etcd: ask through an etcd member's address instead
    etcd01 = lab.node("etcd01").address
    members = lab.run("master02", f"ETCDCTL_API=3 etcdctl --endpoints=https://{etcd01}:2379 "
                      "--cacert=/etc/kubernetes/pki/etcd/ca.crt --cert=/etc/kubernetes/pki/apiserver-etcd-client.crt "
                      "--key=/etc/kubernetes/pki/apiserver-etcd-client.key endpoint health --cluster")
    assert members.returncode == 0 and (members.stdout + members.stderr).count("is healthy") == 3, members.stderr
    wait(lambda: len(set(lease_holders(lab, "master01"))) == 2 or lease_holders(lab, "master01"), 30,
         "one scheduler and one controller-manager lease holder")
    pods = kubectl(lab, "master01", "get pods -A")
    assert pods.returncode == 0 and "kube-apiserver-master03" in pods.stdout, pods.stdout + pods.stderr

    # power off master01: the API still answers through the LB, master01 turns NotReady, leaders move
    lab.stop("master01")
    wait(lambda: ready_masters(lab, "master02").get("master01") in ("Unknown", "False")
         if isinstance(ready_masters(lab, "master02"), dict) else ready_masters(lab, "master02"),
         90, "master01 NotReady")
    wait(lambda: (all(h and not h.startswith("master01") for h in lease_holders(lab, "master02").values())
         and len(lease_holders(lab, "master02")) == 2) or lease_holders(lab, "master02"), 60,
         "leadership away from master01")

    # etcd quorum: 2 of 3 members down takes /readyz down, one back restores it
    def readyz() -> int:
        return int(kubectl(lab, "master02", "get --raw /readyz").returncode)
    lab.stop("etcd01")
    lab.stop("etcd02")
    wait(lambda: readyz() != 0, 60, "/readyz failing without etcd quorum")
    lab.start("etcd01")
    wait(lambda: readyz() == 0, 90, "/readyz back with quorum")


def etcdctl(lab: Any, node: str, args: str) -> Any:
    return lab.run(node, "ETCDCTL_API=3 etcdctl --endpoints=https://127.0.0.1:2379 "
                   "--cacert=/etc/kubernetes/pki/etcd/ca.crt --cert=/etc/kubernetes/pki/etcd/healthcheck-client.crt "
                   f"--key=/etc/kubernetes/pki/etcd/healthcheck-client.key --command-timeout=5s {args}", timeout=30)


def member_names(lab: Any, node: str) -> Any:
    res = etcdctl(lab, node, "member list -w json")
    if res.returncode != 0:
        return res.stderr
    return sorted(m.get("name", "") for m in json.loads(res.stdout).get("members", []))


def test_seed_commands_stacked_etcd_late_join_worker_and_reset(lab_factory: Any) -> None:
    lab, join, key = stacked_by_hand(lab_factory)  # exactly the seed's commands
    res = lab.run("master02", f"{join} {cp_flags(lab, 'master02', key)}", via="ssh", timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "A new etcd member was added to the local/stacked etcd cluster." in res.stdout
    assert member_names(lab, "master01") == ["master01", "master02"]

    # a worker: real TLS bootstrap (CSR approved and signed by the controller-manager)
    res = lab.run("worker01", join, via="ssh", timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert lab.run("worker01", "test -e /etc/kubernetes/pki/ca.key").returncode == 1

    # the seed's late join: regenerate the key; the old key no longer opens the new Secret
    again = lab.run("master01", "kubeadm init phase upload-certs --upload-certs", via="ssh", timeout=120)
    assert again.returncode == 0, again.stderr
    key2 = again.stdout.strip().splitlines()[-1]
    old = lab.run("master03", f"{join} {cp_flags(lab, 'master03', key)}", via="ssh", timeout=120)
    assert old.returncode == 1 and "cipher: message authentication failed" in old.stderr
    res = lab.run("master03", f"{join} {cp_flags(lab, 'master03', key2)}", via="ssh", timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]

    assert member_names(lab, "master01") == list(MASTERS)
    health = etcdctl(lab, "master02", "endpoint health --cluster")
    assert (health.stdout + health.stderr).count("is healthy") == 3, health.stdout + health.stderr
    wait(lambda: ready_masters(lab, "master01") == dict.fromkeys(MASTERS, "True") or
         ready_masters(lab, "master01"), 60, "3 Ready control-plane nodes")
    nodes = kubectl(lab, "master01", "get nodes worker01 -o json")
    assert nodes.returncode == 0, nodes.stderr
    assert "node-role.kubernetes.io/control-plane" not in json.loads(nodes.stdout)["metadata"]["labels"]

    # the seed's failover test: `systemctl stop kubelet` — static pods keep running (as containers
    # do), the node turns NotReady; the API keeps answering; a new kubelet adopts the pods
    before = lab.run("master02", APISERVER_PGREP).stdout.split()
    assert before
    assert lab.run("master02", "systemctl stop kubelet", via="ssh").returncode == 0
    wait(lambda: ready_masters(lab, "master01").get("master02") in ("Unknown", "False")
         if isinstance(ready_masters(lab, "master01"), dict) else ready_masters(lab, "master01"),
         60, "master02 NotReady")
    assert lab.run("master02", APISERVER_PGREP).stdout.split() == before
    assert kubectl(lab, "master02", "get pods -A").returncode == 0
    assert lab.run("master02", "systemctl start kubelet", via="ssh").returncode == 0
    wait(lambda: ready_masters(lab, "master01").get("master02") == "True"
         if isinstance(ready_masters(lab, "master01"), dict) else ready_masters(lab, "master01"),
         60, "master02 Ready again")
    assert lab.run("master02", APISERVER_PGREP).stdout.split() == before

    # reset on master03 removes its etcd member and its static pods
    reset = lab.run("master03", "kubeadm reset -f", via="ssh", timeout=120)
    assert reset.returncode == 0, reset.stdout + reset.stderr
    wait(lambda: member_names(lab, "master01") == ["master01", "master02"] or member_names(lab, "master01"),
         30, "master03's etcd member removed")
    assert lab.run("master03", "ls /etc/kubernetes/manifests").stdout == ""
    assert lab.run("master03", "pgrep -x etcd").returncode == 1
