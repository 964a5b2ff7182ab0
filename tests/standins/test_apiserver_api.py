"""REST semantics of the stand-in kube-apiserver, through the shared kubeapi client."""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from hactl.lab.standins.kubeapi import ApiError, Client, ns_path

from .conftest import PKI, Apiserver, Etcd, Pair, wait_for

LEASES = "coordination.k8s.io/v1"


@pytest.fixture
def client_for(apiserver: Apiserver) -> Iterator[Callable[..., Client]]:
    made: list[Client] = []

    def make(pair: Pair | None = None, token: str | None = None) -> Client:
        ca = apiserver.pki.ca.pair.cert.read_bytes()
        c = Client(apiserver.url, ca=ca, token=token,
                   cert=pair.cert.read_bytes() if pair else None,
                   key=pair.key.read_bytes() if pair else None)
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()


def test_anonymous_is_forbidden(client_for: Callable[..., Client]) -> None:
    api = client_for(None)
    with pytest.raises(ApiError) as err:
        api.get("/api/v1/nodes")
    assert err.value.code == 403 and err.value.reason == "Forbidden"
    assert 'User "system:anonymous" cannot list resource "nodes"' in err.value.message


def test_rest_semantics(apiserver: Apiserver, client_for: Callable[..., Client]) -> None:
    api = client_for(apiserver.pki.admin)
    cms = ns_path("configmaps", "default")
    created = api.create(cms, {"metadata": {"name": "a", "labels": {"x": "1"}}, "data": {"k": "v"}})
    meta = created["metadata"]
    assert meta["uid"] and meta["creationTimestamp"] and int(meta["resourceVersion"]) > 0
    with pytest.raises(ApiError) as err:
        api.create(cms, {"metadata": {"name": "a"}})
    assert (err.value.code, err.value.reason) == (409, "AlreadyExists")
    # optimistic concurrency: a stale resourceVersion is a 409 Conflict
    first = api.get(ns_path("configmaps", "default", "a"))
    first["data"] = {"k": "v2"}
    second = api.update(ns_path("configmaps", "default", "a"), first)
    assert int(second["metadata"]["resourceVersion"]) > int(first["metadata"]["resourceVersion"])
    first["data"] = {"k": "stale"}
    with pytest.raises(ApiError) as err:
        api.update(ns_path("configmaps", "default", "a"), first)
    assert (err.value.code, err.value.reason) == (409, "Conflict")
    assert "the object has been modified" in err.value.message
    # 404 is a Status object like the real one
    status, doc = api.request("GET", ns_path("configmaps", "default", "nope"))
    assert status == 404
    assert doc == {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                   "message": 'configmaps "nope" not found', "reason": "NotFound",
                   "details": {"name": "nope", "group": "", "kind": "configmaps"}, "code": 404}
    # patches
    api.patch(ns_path("configmaps", "default", "a"), {"data": {"n": "1", "k": None}})
    api.patch(ns_path("configmaps", "default", "a"),
              [{"op": "add", "path": "/metadata/labels/y", "value": "2"}],
              "application/json-patch+json")
    got = api.get(ns_path("configmaps", "default", "a"))
    assert got["data"] == {"n": "1"} and got["metadata"]["labels"] == {"x": "1", "y": "2"}
    # selectors
    api.create(cms, {"metadata": {"name": "b", "labels": {"x": "2"}}})

    def names(**q: str) -> list[str]:
        return [o["metadata"]["name"] for o in api.get(cms, **q)["items"]]

    assert names(labelSelector="x=1") == ["a"]
    assert names(labelSelector="x in (1,2)") == ["a", "b"]
    assert names(labelSelector="x notin (1),!y") == ["b"]
    assert names(labelSelector="y") == ["a"]
    assert names(fieldSelector="metadata.name=b") == ["b"]
    # namespaces must exist; delete returns the object; uid preconditions are honoured
    with pytest.raises(ApiError) as err:
        api.create(ns_path("configmaps", "nowhere"), {"metadata": {"name": "x"}})
    assert err.value.code == 404 and 'namespaces "nowhere" not found' in err.value.message
    with pytest.raises(ApiError) as err:
        api.delete(ns_path("configmaps", "default", "b"), uid="not-the-uid")
    assert err.value.code == 409
    assert api.delete(ns_path("configmaps", "default", "b"))["metadata"]["name"] == "b"
    with pytest.raises(ApiError) as err:
        api.delete(ns_path("configmaps", "default", "b"))
    assert err.value.code == 404


def test_status_subresource(apiserver: Apiserver, client_for: Callable[..., Client]) -> None:
    api = client_for(apiserver.pki.admin)
    node = {"metadata": {"name": "n1"}, "status": {"conditions": [
        {"type": "Ready", "status": "True"}]}}
    api.create("/api/v1/nodes", node)
    got = api.get("/api/v1/nodes/n1")
    assert got["status"]["conditions"][0]["status"] == "True"  # kept on create
    got["status"]["conditions"][0]["status"] = "False"
    got["spec"] = {"unschedulable": True}
    after = api.update("/api/v1/nodes/n1", got)
    assert after["spec"] == {"unschedulable": True}
    assert after["status"]["conditions"][0]["status"] == "True"  # main endpoint ignores status
    api.patch("/api/v1/nodes/n1/status",
              {"status": {"conditions": [{"type": "Ready", "status": "False"}]},
               "spec": {"unschedulable": False}})
    final = api.get("/api/v1/nodes/n1")
    assert final["status"]["conditions"][0]["status"] == "False"
    assert final["spec"] == {"unschedulable": True}  # /status ignores spec


def _token_secret(token_id: str, secret: str, expires: dt.datetime,
                  groups: str = "system:bootstrappers:kubeadm:default-node-token",
                  ) -> dict[str, object]:
    def b64(s: str) -> str:
        return base64.b64encode(s.encode()).decode()

    return {"metadata": {"name": f"bootstrap-token-{token_id}"},
            "type": "bootstrap.kubernetes.io/token",
            "data": {"token-id": b64(token_id), "token-secret": b64(secret),
                     "expiration": b64(expires.strftime("%Y-%m-%dT%H:%M:%SZ")),
                     "usage-bootstrap-authentication": b64("true"),
                     "usage-bootstrap-signing": b64("true"), "auth-extra-groups": b64(groups)}}


def test_authentication_and_authorization(apiserver: Apiserver,
                                          client_for: Callable[..., Client]) -> None:
    pki = apiserver.pki
    admin = client_for(pki.admin)
    now = dt.datetime.now(dt.UTC)
    secrets = ns_path("secrets", "kube-system")
    admin.create(secrets, _token_secret("abcdef", "0123456789abcdef", now + dt.timedelta(hours=1)))
    admin.create(secrets, _token_secret("expire", "0123456789abcdef", now - dt.timedelta(seconds=1)))
    admin.create(ns_path("configmaps", "kube-system"), {"metadata": {"name": "kubeadm-config"}})
    admin.create(ns_path("configmaps", "kube-public"), {"metadata": {"name": "cluster-info"},
                                                        "data": {"kubeconfig": "x"}})
    admin.create(secrets, {"metadata": {"name": "kubeadm-certs"}, "data": {}})
    admin.create(secrets, {"metadata": {"name": "other"}, "data": {}})

    anon = client_for(None)
    assert anon.get(ns_path("configmaps", "kube-public", "cluster-info"))["data"]["kubeconfig"]
    assert anon.request("GET", "/readyz")[0] == 200
    assert anon.request("GET", "/api")[0] == 403

    boot = client_for(token="abcdef.0123456789abcdef")
    assert boot.get(ns_path("configmaps", "kube-system", "kubeadm-config"))
    assert boot.get(ns_path("secrets", "kube-system", "kubeadm-certs"))
    with pytest.raises(ApiError) as err:
        boot.get(ns_path("secrets", "kube-system", "other"))
    assert err.value.code == 403 and "system:bootstrap:abcdef" in err.value.message
    boot.create("/api/v1/nodes", {"metadata": {"name": "joining"}})
    assert boot.get("/api/v1/nodes/joining")

    for bad in ("expire.0123456789abcdef", "abcdef.0123456789abcdee", "garbage"):
        status, doc = client_for(token=bad).request("GET", "/api/v1/nodes")
        assert status == 401 and doc["reason"] == "Unauthorized"

    jane = client_for(pki.jane)
    assert jane.request("GET", "/api/v1")[0] == 200  # discovery for any authenticated user
    with pytest.raises(ApiError) as err:
        jane.get(ns_path("secrets", "kube-system"))
    assert err.value.message == ('secrets is forbidden: User "jane" cannot list resource '
                                 '"secrets" in API group "" in the namespace "kube-system"')

    node = client_for(pki.node)
    node.create(ns_path("leases", "kube-node-lease", None, LEASES),
                {"metadata": {"name": "worker01"}, "spec": {"holderIdentity": "worker01"}})
    assert node.request("GET", ns_path("secrets", "kube-system"))[0] == 403

    kcm = client_for(pki.kcm)
    assert kcm.get(ns_path("secrets", "kube-system"))["items"]


def test_no_descriptor_leak(apiserver: Apiserver) -> None:
    """Many short connections (one request each) must not pile up etcd connections."""
    assert apiserver.proc is not None
    fds = Path(f"/proc/{apiserver.proc.pid}/fd")
    for _ in range(20):
        assert apiserver.get("/api/v1/namespaces/default")[0] == 403
    before = len(list(fds.iterdir()))
    for _ in range(150):
        assert apiserver.get("/readyz")[0] == 200
    assert len(list(fds.iterdir())) <= before + 20


def test_routing(apiserver: Apiserver, client_for: Callable[..., Client]) -> None:
    api = client_for(apiserver.pki.admin)
    assert api.get("/api/v1/namespaces/kube-system/status")["metadata"]["name"] == "kube-system"
    assert api.get("/api/v1/namespaces")["kind"] == "NamespaceList"
    assert api.get("/apis/coordination.k8s.io/v1/leases")["kind"] == "LeaseList"
    for path in ("/api/v1/namespaces/default/nodes", "/api/v1/nodes/x/log", "/api/v1/widgets",
                 "/apis/apps/v2/deployments", "/apis/nope.io/v1", "/metrics"):
        status, doc = api.request("GET", path)
        assert status == 404, path
        assert doc["reason"] == "NotFound"
    assert api.request("GET", "/apis/apps/v1")[1]["groupVersion"] == "apps/v1"
    groups = {g["name"] for g in api.get("/apis")["groups"]}
    assert groups == {"apps", "authorization.k8s.io", "certificates.k8s.io", "coordination.k8s.io",
                      "policy", "rbac.authorization.k8s.io"}


def test_anonymous_auth_off_and_always_allow(pki: PKI, etcd1: Etcd, tmp_path: Path) -> None:
    api = Apiserver(pki, etcd1, tmp_path, ("--anonymous-auth=false",
                                           "--authorization-mode=AlwaysAllow"))
    try:
        api.start()
        assert api.get("/readyz")[0] == 401  # no credentials at all
        jane = Client(api.url, ca=pki.ca.pair.cert.read_bytes(), cert=pki.jane.cert.read_bytes(),
                      key=pki.jane.key.read_bytes())
        try:
            wait_for(lambda: jane.request("GET", "/readyz")[0] == 200, 30, "readyz")
            assert jane.get(ns_path("secrets", "kube-system"))["kind"] == "SecretList"
        finally:
            jane.close()
    finally:
        api.stop()


def test_compaction_makes_old_watches_expire(pki: PKI, etcd1: Etcd, tmp_path: Path) -> None:
    import http.client
    import json
    import ssl

    api = Apiserver(pki, etcd1, tmp_path, ("--etcd-compaction-interval=1s",))
    admin = Client(api.url, ca=pki.ca.pair.cert.read_bytes(), cert=pki.admin.cert.read_bytes(),
                   key=pki.admin.key.read_bytes())
    try:
        api.start()
        wait_for(lambda: api.get("/readyz")[0] == 200, 60, "readyz")
        first = admin.create(ns_path("configmaps", "default"), {"metadata": {"name": "c"}})
        rv = first["metadata"]["resourceVersion"]
        for i in range(3):
            admin.patch(ns_path("configmaps", "default", "c"), {"data": {"i": str(i)}})
        _wait_compacted_past(api.log, int(rv) + 1)
        ctx = ssl.create_default_context(cafile=str(pki.ca.pair.cert))
        ctx.load_cert_chain(str(pki.admin.cert), str(pki.admin.key))
        conn = http.client.HTTPSConnection("127.0.0.1", api.port, context=ctx, timeout=20)
        try:
            conn.request("GET", f"/api/v1/namespaces/default/configmaps?watch=true"
                         f"&resourceVersion={rv}&timeoutSeconds=3")
            events = [json.loads(line) for line in conn.getresponse().read().splitlines()]
        finally:
            conn.close()
        assert events[-1]["type"] == "ERROR"
        assert (events[-1]["object"]["code"], events[-1]["object"]["reason"]) == (410, "Expired")
    finally:
        admin.close()
        api.stop()


def _wait_compacted_past(log: Path, revision: int) -> None:
    def compacted() -> bool:
        revs = [int(line.rsplit(" ", 1)[1]) for line in log.read_text().splitlines()
                if "compacted etcd at revision" in line]
        return bool(revs) and max(revs) > revision

    wait_for(compacted, 30, f"a compaction past revision {revision}")
