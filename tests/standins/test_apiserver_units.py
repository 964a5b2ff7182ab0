"""Pure pieces of the control-plane stand-ins (no processes)."""

from __future__ import annotations

import base64
import datetime as dt
from pathlib import Path
from typing import Any

import pytest
import yaml

from hactl.lab.standins import apiserver_resources as res
from hactl.lab.standins.apiserver_auth import Identity, Unauthorized, authorize, token_identity
from hactl.lab.standins.apiserver_store import json_patch, merge_patch
from hactl.lab.standins.kube_apiserver import kubernetes_version
from hactl.lab.standins.kubeapi import load_kubeconfig, parse_flags


def test_parse_flags_like_pflag() -> None:
    flags = parse_flags(["--secure-port=6443", "--allow-privileged", "--etcd-servers",
                         "https://a:2379,https://b:2379", "--leader-elect", "--v=2"])
    assert flags == {"secure-port": "6443", "allow-privileged": "true",
                     "etcd-servers": "https://a:2379,https://b:2379", "leader-elect": "true",
                     "v": "2"}


def test_kubernetes_version_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HACTL_LAB_K8S_VERSION", raising=False)
    monkeypatch.setenv("HACTL_LAB_ROOT", str(tmp_path))
    assert kubernetes_version() == "v1.30.4"  # default
    (tmp_path / "etc/hactl-lab").mkdir(parents=True)
    (tmp_path / "etc/hactl-lab/versions").write_text("kubernetes: 1.30.2\netcd: 3.4.23\n")
    assert kubernetes_version() == "v1.30.2"
    monkeypatch.setenv("HACTL_LAB_K8S_VERSION", "v1.29.9")
    assert kubernetes_version() == "v1.29.9"


def test_kubeconfig_with_files_and_token(tmp_path: Path) -> None:
    (tmp_path / "ca.crt").write_bytes(b"CA")
    doc = {"current-context": "b", "contexts": [
        {"name": "a", "context": {"cluster": "x", "user": "x"}},
        {"name": "b", "context": {"cluster": "c", "user": "u"}}],
        "clusters": [{"name": "c", "cluster": {"server": "https://10.0.0.1:6443",
                                               "certificate-authority": "ca.crt"}}],
        "users": [{"name": "u", "user": {"token": "abcdef.0123456789abcdef",
                                         "client-key-data": base64.b64encode(b"K").decode()}}]}
    path = tmp_path / "kc.conf"
    path.write_text(yaml.safe_dump(doc))
    kc = load_kubeconfig(str(path))
    assert kc == {"server": "https://10.0.0.1:6443", "ca": b"CA", "cert": None, "key": b"K",
                  "token": "abcdef.0123456789abcdef"}


def test_selectors_tables_and_patches() -> None:
    labels = {"node-role.kubernetes.io/control-plane": "", "zone": "a"}
    assert res.match_labels("node-role.kubernetes.io/control-plane", labels)
    assert res.match_labels("zone in (a, b),!gpu", labels)
    assert not res.match_labels("zone notin (a)", labels)
    assert res.match_labels("zone!=b", labels) and not res.match_labels("zone==b", labels)
    with pytest.raises(ValueError):
        res.match_labels("zone in (a", labels)
    assert res.age("2020-01-01T00:00:00Z", dt.datetime(2020, 1, 1, 0, 1, 30, tzinfo=dt.UTC)) == "90s"
    assert res.age("2020-01-01T00:00:00Z", dt.datetime(2020, 1, 1, 5, 7, tzinfo=dt.UTC)) == "5h7m"
    assert res.age("2020-01-01T00:00:00Z", dt.datetime(2020, 1, 4, tzinfo=dt.UTC)) == "3d"
    nodes = res.by_path("", "v1", "nodes")
    assert nodes is not None and nodes.key(None, "m1") == "/registry/minions/m1"
    node = {"metadata": {"name": "m1", "creationTimestamp": "2020-01-01T00:00:00Z", "labels": labels},
            "status": {"conditions": [{"type": "Ready", "status": "Unknown"}],
                       "nodeInfo": {"kubeletVersion": "v1.30.4"}}}
    table = res.table(nodes, [node], "7")
    assert [c["name"] for c in table["columnDefinitions"]][:5] == [
        "Name", "Status", "Roles", "Age", "Version"]
    assert table["rows"][0]["cells"][:3] == ["m1", "NotReady", "control-plane"]
    assert merge_patch({"a": {"b": 1, "c": 2}}, {"a": {"b": None, "d": 3}}) == {"a": {"c": 2, "d": 3}}
    assert json_patch({"l": [1, 3]}, [{"op": "add", "path": "/l/1", "value": 2},
                                      {"op": "replace", "path": "/x~1y", "value": 0}]) == {
        "l": [1, 2, 3], "x/y": 0}


def test_bootstrap_token_rules_and_policy() -> None:
    def b64(s: str) -> str:
        return base64.b64encode(s.encode()).decode()

    now = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    secret = {"type": "bootstrap.kubernetes.io/token", "metadata": {},
              "data": {"token-secret": b64("0123456789abcdef"),
                       "expiration": b64("2030-01-01T01:00:00Z"),
                       "usage-bootstrap-authentication": b64("true"),
                       "auth-extra-groups": b64("system:bootstrappers:kubeadm:default-node-token,"
                                                "system:masters")}}
    ident = token_identity("abcdef.0123456789abcdef", lambda ns, name: secret, now)
    assert ident.user == "system:bootstrap:abcdef"
    assert "system:masters" not in ident.groups  # extra groups must be system:bootstrappers:*
    with pytest.raises(Unauthorized):
        token_identity("abcdef.0123456789abcdef", lambda ns, name: secret,
                       now + dt.timedelta(hours=2))
    assert authorize(ident, "get", "secrets", "kube-system", "kubeadm-certs", "")
    assert not authorize(ident, "list", "secrets", "kube-system", None, "")
    anon = Identity("system:anonymous", ("system:unauthenticated",))
    assert authorize(anon, "get", None, None, None, "/readyz")
    assert not authorize(anon, "get", None, None, None, "/api")


def test_bearer_tokens_need_bootstrap_auth_enabled() -> None:
    from hactl.lab.standins.apiserver_auth import authenticate

    with pytest.raises(Unauthorized):
        authenticate(None, "Bearer abcdef.0123456789abcdef", None)
    cert = {"subject": ((("organizationName", "system:masters"),),
                        (("commonName", "kubernetes-admin"),))}
    ident = authenticate(cert, None, None)
    assert ident.user == "kubernetes-admin" and "system:masters" in ident.groups
    assert authenticate(None, None, None).anonymous


def test_sigterm_drains_the_requests_in_flight() -> None:
    """The real kube-apiserver finishes the requests it is serving after SIGTERM (not watches):
    the stand-in's server waits for them (at most its drain timeout) before it exits."""
    import threading
    import time

    from hactl.lab.standins.apiserver_http import TLSServer

    server = TLSServer.__new__(TLSServer)
    server.inflight = 0
    server._inflight_lock = threading.Condition()
    server.begin()
    ended = threading.Timer(0.3, server.end)
    ended.start()
    started = time.monotonic()
    assert server.drain(5.0) == 0
    assert 0.25 <= time.monotonic() - started < 2.0
    server.begin()
    assert server.drain(0.1) == 1  # a request that does not finish in time is counted


def test_after_sigterm_new_connections_are_refused_at_once(apiserver: Any) -> None:
    """Go's Shutdown closes the listener first: a connection after SIGTERM is refused (a load
    balancer retries it elsewhere), never accepted by the kernel and then reset (a TLS EOF the
    client would see)."""
    import signal
    import socket
    import time

    proc = apiserver.proc
    assert proc is not None
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.05)
    outcomes = []
    for _ in range(5):
        try:
            with socket.create_connection(("127.0.0.1", apiserver.port), timeout=1):
                outcomes.append("accepted")
        except ConnectionRefusedError:
            outcomes.append("refused")
        time.sleep(0.02)
    assert outcomes == ["refused"] * 5, outcomes
