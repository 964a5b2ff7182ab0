"""Leader election and controllers of the stand-in kube-controller-manager / kube-scheduler,
as real processes under /usr/bin/python3 against the stand-in apiserver on a real etcd."""

from __future__ import annotations

import base64
import datetime as dt
import signal
import time
from collections.abc import Callable

import pytest

from hactl.lab.standins.controller_manager import enabled_controllers, jws_detached
from hactl.lab.standins.kubeapi import ApiError, Client, ns_path
from hactl.lab.standins.leader import parse_duration

from .conftest import Apiserver, Component, wait_for

FAST = ("--leader-elect-lease-duration=6s", "--leader-elect-renew-deadline=4s",
        "--leader-elect-retry-period=1s")
NO_ELECTION = ("--leader-elect=false",)  # controller tests: no lost lease on a loaded machine
LEASES = "coordination.k8s.io/v1"


def _holder(admin: Client, name: str) -> str:
    lease = admin.find(ns_path("leases", "kube-system", name, LEASES))
    return str((lease or {}).get("spec", {}).get("holderIdentity") or "")


def test_parse_duration_and_controllers_flag() -> None:
    assert parse_duration("15s") == 15 and parse_duration("1m0s") == 60
    assert parse_duration("500ms") == 0.5 and parse_duration("2") == 2
    with pytest.raises(ValueError):
        parse_duration("soon")
    default = {"nodelifecycle", "garbagecollector", "csrapproving", "csrsigning",
               "serviceaccount", "root-ca-cert-publisher", "disruption", "podgc",
               "deployment", "replicaset", "daemonset"}
    assert enabled_controllers("*") == default
    assert enabled_controllers("*,bootstrapsigner,tokencleaner,-garbagecollector,-csrsigning"
                               ) == default - {"garbagecollector", "csrsigning"} | {
                                   "bootstrapsigner", "tokencleaner"}


@pytest.mark.parametrize("module,lease", [("kube_controller_manager", "kube-controller-manager"),
                                          ("kube_scheduler", "kube-scheduler")])
def test_one_holder_and_failover(apiserver: Apiserver, admin: Client,
                                 components: Callable[..., Component], module: str,
                                 lease: str) -> None:
    conf = apiserver.pki.kubeconfig(
        module, apiserver.url, apiserver.pki.kcm if "controller" in module else
        apiserver.pki.scheduler)
    a = components(module, conf, *FAST)
    b = components(module, conf, *FAST)
    wait_for(lambda: bool(a.identity and b.identity and _holder(admin, lease)), 90, "a holder")
    time.sleep(2)  # several retry periods: the holder keeps it, the other stays standby
    holder = _holder(admin, lease)
    assert holder in (a.identity, b.identity)
    leader, standby = (a, b) if holder == a.identity else (b, a)
    spec = admin.get(ns_path("leases", "kube-system", lease, LEASES))["spec"]
    assert spec["leaseDurationSeconds"] == 6 and spec["renewTime"].endswith("Z")
    leader.stop(signal.SIGKILL)  # power off: no release, the lease must expire
    killed = time.monotonic()
    wait_for(lambda: _holder(admin, lease) == standby.identity, 60, "the standby to take over")
    assert time.monotonic() - killed >= 4  # not before the old lease ran out
    after = admin.get(ns_path("leases", "kube-system", lease, LEASES))["spec"]
    assert after["leaseTransitions"] == spec["leaseTransitions"] + 1
    assert "successfully acquired lease kube-system/" + lease in standby.log.read_text()


def test_leader_exits_when_it_cannot_renew(apiserver: Apiserver, admin: Client,
                                           components: Callable[..., Component]) -> None:
    conf = apiserver.pki.kubeconfig("kcm", apiserver.url, apiserver.pki.kcm)
    kcm = components("kube_controller_manager", conf, *FAST)
    wait_for(lambda: _holder(admin, "kube-controller-manager") == kcm.identity != "", 60,
             "the lease")
    apiserver.stop()  # the API goes away: renewals fail, the leader must give up and exit 1
    assert kcm.proc is not None
    assert kcm.proc.wait(30) == 1
    assert "leaderelection lost" in kcm.log.read_text()


def _b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


def _iso(t: dt.datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def test_controllers(apiserver: Apiserver, admin: Client,
                     components: Callable[..., Component]) -> None:
    now = dt.datetime.now(dt.UTC)
    secrets = ns_path("secrets", "kube-system")
    owner = admin.create(secrets, {
        "metadata": {"name": "bootstrap-token-abcdef"}, "type": "bootstrap.kubernetes.io/token",
        "data": {"token-id": _b64("abcdef"), "token-secret": _b64("0123456789abcdef"),
                 "expiration": _b64(_iso(now + dt.timedelta(seconds=4))),
                 "description": _b64("Proxy for managing TTL for the kubeadm-certs secret")}})
    admin.create(secrets, {
        "metadata": {"name": "kubeadm-certs", "ownerReferences": [{
            "apiVersion": "v1", "kind": "Secret", "name": "bootstrap-token-abcdef",
            "uid": owner["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True}]},
        "type": "Opaque", "data": {"ca.crt": _b64("sealed")}})
    admin.create(secrets, {
        "metadata": {"name": "bootstrap-token-zzzzzz"}, "type": "bootstrap.kubernetes.io/token",
        "data": {"token-id": _b64("zzzzzz"), "token-secret": _b64("0123456789abcdef"),
                 "expiration": _b64(_iso(now + dt.timedelta(hours=24))),
                 "usage-bootstrap-signing": _b64("true"),
                 "usage-bootstrap-authentication": _b64("true")}})
    admin.create(ns_path("configmaps", "kube-public"), {
        "metadata": {"name": "cluster-info"}, "data": {"kubeconfig": "apiVersion: v1\n"}})
    beat = _iso(now)
    admin.create("/api/v1/nodes", {"metadata": {"name": "m1"}, "status": {"conditions": [
        {"type": "Ready", "status": "True", "lastHeartbeatTime": beat,
         "lastTransitionTime": beat}]}})
    admin.create(ns_path("leases", "kube-node-lease", None, LEASES), {
        "metadata": {"name": "m1"}, "spec": {"holderIdentity": "m1", "renewTime":
                                             now.strftime("%Y-%m-%dT%H:%M:%S.%fZ")}})
    conf = apiserver.pki.kubeconfig("kcm", apiserver.url, apiserver.pki.kcm)
    components("kube_controller_manager", conf, *NO_ELECTION,
               "--controllers=*,bootstrapsigner,tokencleaner",
               "--node-monitor-grace-period=8s", "--node-monitor-period=500ms")

    def jws() -> dict[str, str]:
        data = admin.get(ns_path("configmaps", "kube-public", "cluster-info"))["data"]
        return {k: v for k, v in data.items() if k.startswith("jws-")}

    want = {"jws-kubeconfig-zzzzzz": jws_detached("apiVersion: v1\n", "zzzzzz",
                                                  "0123456789abcdef")}
    wait_for(lambda: jws() == want, 30, "bootstrapsigner")
    # kubelet renews its lease for a while: the node stays Ready
    renew_until = time.monotonic() + 10  # longer than the grace period
    while time.monotonic() < renew_until:
        admin.patch(ns_path("leases", "kube-node-lease", "m1", LEASES), {"spec": {
            "renewTime": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")}})
        time.sleep(0.5)
    assert apiserver.kubectl("get", "node", "m1", "--no-headers").stdout.split()[1] == "Ready"
    # kubelet stops: NotReady after the grace period, with the unreachable taints
    wait_for(lambda: apiserver.kubectl("get", "node", "m1", "--no-headers"
                                       ).stdout.split()[1] == "NotReady", 40, "NotReady")
    node = admin.get("/api/v1/nodes/m1")
    ready = next(c for c in node["status"]["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("Unknown", "NodeStatusUnknown")
    # the taints come in an update of their own after the status (as the real node lifecycle
    # controller's do): wait for them, never read them in the same instant as NotReady
    wait_for(lambda: {t["effect"] for t in admin.get("/api/v1/nodes/m1").get("spec", {})
                      .get("taints", [])} == {"NoSchedule", "NoExecute"}, 10, "unreachable taints")
    # token cleaner deletes the expired token, the garbage collector its kubeadm-certs
    wait_for(lambda: admin.find(ns_path("secrets", "kube-system", "kubeadm-certs")) is None, 40,
             "kubeadm-certs garbage collected")
    assert admin.find(ns_path("secrets", "kube-system", "bootstrap-token-abcdef")) is None
    assert admin.find(ns_path("secrets", "kube-system", "bootstrap-token-zzzzzz")) is not None
    # kubelet is back: Ready, taints removed
    back = _iso(dt.datetime.now(dt.UTC))
    admin.patch("/api/v1/nodes/m1/status", {"status": {"conditions": [
        {"type": "Ready", "status": "True", "lastHeartbeatTime": back,
         "lastTransitionTime": back}]}})
    wait_for(lambda: not admin.get("/api/v1/nodes/m1").get("spec", {}).get("taints"), 10,
             "taints removed")


def test_kubelet_tls_bootstrap_csr(apiserver: Apiserver, admin: Client,
                                   components: Callable[..., Component]) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    pki = apiserver.pki
    now = dt.datetime.now(dt.UTC)
    admin.create(ns_path("secrets", "kube-system"), {
        "metadata": {"name": "bootstrap-token-abcdef"}, "type": "bootstrap.kubernetes.io/token",
        "data": {"token-id": _b64("abcdef"), "token-secret": _b64("0123456789abcdef"),
                 "expiration": _b64(_iso(now + dt.timedelta(hours=1))),
                 "usage-bootstrap-authentication": _b64("true"),
                 "auth-extra-groups": _b64("system:bootstrappers:kubeadm:default-node-token")}})
    conf = pki.kubeconfig("kcm", apiserver.url, pki.kcm)
    components("kube_controller_manager", conf, *NO_ELECTION,
               f"--cluster-signing-cert-file={pki.ca.pair.cert}",
               f"--cluster-signing-key-file={pki.ca.pair.key}",
               f"--root-ca-file={pki.ca.pair.cert}")
    key = ec.generate_private_key(ec.SECP256R1())
    req = (x509.CertificateSigningRequestBuilder().subject_name(x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "system:nodes"),
        x509.NameAttribute(NameOID.COMMON_NAME, "system:node:worker07")]))
        .sign(key, hashes.SHA256()))
    ca = pki.ca.pair.cert.read_bytes()
    boot = Client(apiserver.url, ca=ca, token="abcdef.0123456789abcdef")
    csrs = "/apis/certificates.k8s.io/v1/certificatesigningrequests"
    try:
        created = boot.create(csrs, {
            "metadata": {"name": "node-csr-x"},
            "spec": {"request": base64.b64encode(req.public_bytes(
                serialization.Encoding.PEM)).decode(),
                "signerName": "kubernetes.io/kube-apiserver-client-kubelet",
                "usages": ["digital signature", "client auth"],
                "username": "forged", "groups": ["system:masters"]}})
        assert created["spec"]["username"] == "system:bootstrap:abcdef"  # set by the server
        assert "system:masters" not in created["spec"]["groups"]

        def issued() -> bool:
            return bool((boot.get(f"{csrs}/node-csr-x").get("status") or {}).get("certificate"))

        wait_for(issued, 15, "the CSR to be approved and signed")
        status = boot.get(f"{csrs}/node-csr-x")["status"]
    finally:
        boot.close()
    assert [c["type"] for c in status["conditions"]] == ["Approved"]
    # root-ca-cert-publisher and serviceaccount ran in every namespace meanwhile
    def published(ns: str) -> bool:
        return (admin.find(ns_path("configmaps", ns, "kube-root-ca.crt")) is not None
                and admin.find(ns_path("serviceaccounts", ns, "default")) is not None)

    for ns in ("default", "kube-system", "kube-public", "kube-node-lease"):
        wait_for(lambda ns=ns: published(ns), 15,  # type: ignore[misc]
                 f"kube-root-ca.crt and default SA in {ns}")
    root = admin.get(ns_path("configmaps", "kube-system", "kube-root-ca.crt"))
    assert root["data"]["ca.crt"] == pki.ca.pair.cert.read_text()
    cert_pem = base64.b64decode(status["certificate"])
    cert = x509.load_pem_x509_certificate(cert_pem)
    assert cert.issuer == pki.ca.cert.subject
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    node = Client(apiserver.url, ca=ca, cert=cert_pem, key=key_pem)
    try:  # the new certificate authenticates as the node
        node.create("/api/v1/nodes", {"metadata": {"name": "worker07"}})
        with pytest.raises(ApiError) as err:
            node.get(ns_path("secrets", "kube-system"))
        assert 'User "system:node:worker07"' in err.value.message
    finally:
        node.close()
