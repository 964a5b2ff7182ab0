"""The stand-in kube-apiserver (under /usr/bin/python3) driven by the machine's real kubectl."""

from __future__ import annotations

import json

from .conftest import Apiserver


def test_health_and_version(apiserver: Apiserver) -> None:
    assert apiserver.get("/readyz") == (200, "ok")
    assert apiserver.get("/livez")[0] == 200
    code, text = apiserver.get("/readyz?verbose")
    assert code == 200 and "[+]etcd ok" in text and text.endswith("readyz check passed")
    code, text = apiserver.get("/version")
    assert code == 200 and json.loads(text)["gitVersion"] == "v1.30.4"
    assert apiserver.kubectl("get", "--raw", "/readyz").stdout == "ok"
    # anonymous: health yes, resources no, cluster-info yes (once it exists)
    assert apiserver.get("/api/v1/nodes")[0] == 403


def test_namespaces_and_nodes(apiserver: Apiserver) -> None:
    out = apiserver.kubectl("get", "ns").stdout
    for ns in ("default", "kube-system", "kube-public", "kube-node-lease"):
        assert ns in out
