"""Fact parsers on recorded outputs of the real tools (tests/facts_data, see its README).

Each case is data: the fact (its snippet is what produced the output), the recorded stdout,
and what the parser must make of it.
"""

from __future__ import annotations

import json
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from hactl.facts import binaries, etcd, haproxy, kubernetes, services, system
from hactl.facts.base import Fact, FactParseError, find_version, fingerprint_hex
from hactl.facts.model import (
    BackendServer,
    BinariesFacts,
    Binary,
    BootstrapToken,
    EtcdHealth,
    EtcdMember,
    NodeInfo,
)

DATA = Path(__file__).resolve().parents[1] / "facts_data"


def data(name: str) -> str:
    return (DATA / name).read_text()


E01 = EtcdMember(
    "9b3149e0bd021194", "etcd01", ("http://127.0.0.1:21195",), ("http://127.0.0.1:21194",)
)
E02 = EtcdMember(
    "73c8177e8d44944e", "etcd02", ("http://127.0.0.1:21197",), ("http://127.0.0.1:21196",)
)
E03 = EtcdMember(
    "d390771b24db6fbe", "etcd03", ("http://127.0.0.1:21199",), ("http://127.0.0.1:21198",)
)
LEARNER = EtcdMember(
    "fa6e2f0f48ff2fbf",
    "etcd04",
    ("http://127.0.0.1:21201",),
    ("http://127.0.0.1:21200",),
    is_learner=True,
)
UNSTARTED = EtcdMember("747fbf3bfcff713a", "", ("http://127.0.0.1:21203",), ())

CASES: list[tuple[str, Fact[Any], str, Any]] = [
    ("members of 3", etcd.EtcdMemberList(), data("etcd/member_list_3.json"), (E01, E02, E03)),
    (
        "members with a learner and an unstarted one",
        etcd.EtcdMemberList(),
        data("etcd/member_list_learner_unstarted.json"),
        (E01, E02, E03, LEARNER, UNSTARTED),
    ),
    (
        "healthy endpoint",
        etcd.EtcdEndpointHealth(),
        data("etcd/endpoint_health.json"),
        EtcdHealth("http://127.0.0.1:21194", True),
    ),
    (
        "endpoint without quorum",
        etcd.EtcdEndpointHealth(),
        data("etcd/endpoint_health_no_quorum.json"),
        EtcdHealth("http://127.0.0.1:21194", False, "context deadline exceeded"),
    ),
    ("no /registry keys", etcd.EtcdRegistryCount(), data("etcd/registry_count_0.json"), 0),
    ("two /registry keys", etcd.EtcdRegistryCount(), data("etcd/registry_count_2.json"), 2),
    (
        "env file",
        etcd.EtcdEnv(),
        '# Rendered by hactl\nETCD_NAME="etcd01"\nETCD_INITIAL_CLUSTER="etcd01=https://10.0.0.21:2380,'
        'etcd02=https://10.0.0.22:2380"\nETCD_INITIAL_CLUSTER_STATE=existing\nOTHER=1\n\n',
        {
            "ETCD_NAME": "etcd01",
            "ETCD_INITIAL_CLUSTER": "etcd01=https://10.0.0.21:2380,etcd02=https://10.0.0.22:2380",
            "ETCD_INITIAL_CLUSTER_STATE": "existing",
        },
    ),
    (
        "etcd files",
        etcd.EtcdFiles(),
        "unit_sha256=ab12  -\nenv_sha256=cd34  -\ndata_dir=member\n"
        "ca_sha256=sha256 Fingerprint=" + ":".join(["0A"] * 32) + "\n",
        etcd.EtcdFileInfo("ab12", "cd34", "member", ":".join(["0A"] * 32)),
    ),
    (
        "etcd files on a bare host",
        etcd.EtcdFiles(),
        "data_dir=absent\n",
        etcd.EtcdFileInfo(None, None, "absent", None),
    ),
    (
        "show stat",
        haproxy.HAProxyStats(),
        data("haproxy/show_stat.csv"),
        (
            BackendServer("k8s-api-backend", "master01", "UP", "UP", "L4OK"),
            BackendServer("k8s-api-backend", "master02", "DOWN", "DOWN", "L4CON"),
            BackendServer("k8s-api-backend", "master03", "MAINT", "MAINT", None),
            BackendServer("k8s-api-backend", "master04", "no check", "no check", None),
            BackendServer("alive", "none", "no check", "no check", None),
        ),
    ),
    (
        "haproxy files",
        haproxy.HAProxyFiles(),
        "config_sha256=ff00  -\n",
        haproxy.HAProxyFileInfo("ff00"),
    ),
    (  # hactl's marker names the file: loaded, whatever the clocks say
        "haproxy files, reloaded by hactl",
        haproxy.HAProxyFiles(),
        f"config_sha256={'a' * 64}  -\nloaded_sha256={'a' * 64}\nconfig_mtime=1000.5\n"
        "started=100\nnow=2000.0\nuptime=1000.0\n",
        haproxy.HAProxyFileInfo("a" * 64, "a" * 64, True, "hactl reloaded haproxy with this file"),
    ),
    (  # the newest worker (started at 1000 + 12.00 s) is younger than the file (1010.5)
        "haproxy files, loaded at boot or by hand",
        haproxy.HAProxyFiles(),
        f"config_sha256={'a' * 64}  -\nconfig_mtime=1010.5\nstarted=500\nstarted=1200\n"
        "now=2000.0\nuptime=1000.0\n",
        haproxy.HAProxyFileInfo(
            "a" * 64, None, True, "haproxy (re)started after the file was written"
        ),
    ),
    (  # written (1012.5) after the last load (1012.00), the marker names the previous file
        "haproxy files, written but not loaded",
        haproxy.HAProxyFiles(),
        f"config_sha256={'a' * 64}  -\nloaded_sha256={'b' * 64}\nconfig_mtime=1012.5\n"
        "started=500\nstarted=1200\nnow=2000.0\nuptime=1000.0\n",
        haproxy.HAProxyFileInfo(
            "a" * 64, "b" * 64, False,
            "/etc/haproxy/haproxy.cfg was written after haproxy last (re)loaded, and hactl's "
            "reload marker names another file: the running haproxy has not loaded it (an apply "
            "interrupted before its reload, or a reload that failed)",
        ),
    ),
    ("haproxy config is kept verbatim", haproxy.HAProxyConfig(), "global\n\tx\n", "global\n\tx\n"),
    (
        "kubernetes files",
        kubernetes.K8sFiles(),
        "admin_conf=1\nkubelet_conf=1\nmanifest=kube-scheduler.yaml\n"
        "manifest=kube-apiserver.yaml\npki=ca.crt\npki=etcd/ca.crt\n",
        kubernetes.K8sFileInfo(
            True,
            True,
            ("kube-apiserver.yaml", "kube-scheduler.yaml"),
            ("ca.crt", "etcd/ca.crt"),
        ),
    ),
    (
        "unit states, any property order, unknown unit",
        services.UnitStates(("etcd", "haproxy", "kubelet")),
        "ActiveState=active\nId=etcd.service\nUnitFileState=enabled\n\n"
        "Id=haproxy.service\nActiveState=failed\nUnitFileState=disabled\n\n"
        "Id=kubelet.service\nActiveState=inactive\nUnitFileState=\n",
        {
            "etcd": services.UnitState(True, True, "active"),
            "haproxy": services.UnitState(False, False, "failed"),
            "kubelet": services.UnitState(False, False, "inactive"),
        },
    ),
    (
        "no systemctl at all",
        services.UnitStates(("etcd",)),
        "\n",
        {"etcd": services.UnitState(False, False, "unknown")},
    ),
    (
        "system",
        system.SystemInfo(),
        'hostname=etcd01\nkernel=6.1.0\nuser=root\ninit=systemd\nuptime=12.5\nos.PRETTY_NAME="Debian '
        'GNU/Linux 12 (bookworm)"\nos.VERSION_ID="12"\nos.ID=debian\n',
        system.SystemFacts(
            "etcd01", "debian", "12", "Debian GNU/Linux 12 (bookworm)", "systemd", "6.1.0", "root"
        ),
    ),
]


@pytest.mark.parametrize(
    ("fact", "stdout", "parsed"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_parse_recorded_output(fact: Fact[Any], stdout: str, parsed: Any) -> None:
    assert fact.parse(stdout) == parsed


def test_endpoint_status_of_a_voter_and_a_learner() -> None:
    voter = etcd.EtcdEndpointStatus().parse(data("etcd/endpoint_status.json"))
    assert (voter.member_id, voter.cluster_id, voter.version, voter.is_learner) == (
        E01.id,
        "40dbb5e5e5521cad",
        "3.4.23",
        False,
    )
    assert voter.leader_id == E02.id and voter.raft_index == 8
    learner = etcd.EtcdEndpointStatus().parse(data("etcd/endpoint_status_learner.json"))
    assert learner.is_learner and learner.member_id == LEARNER.id


def test_health_parses_exit_status_one_but_not_a_refused_member() -> None:
    assert etcd.EtcdEndpointHealth.ok_statuses == {0, 1}
    assert data("etcd/endpoint_health_no_quorum.rc").strip() == "1"
    assert data("etcd/member_list_refused.rc").strip() == "1"
    with pytest.raises(FactParseError):
        etcd.EtcdMemberList().parse(data("etcd/member_list_refused.json"))  # empty stdout


def test_unstarted_member_and_learner_flags() -> None:
    members = etcd.EtcdMemberList().parse(data("etcd/member_list_learner_unstarted.json"))
    assert [m.started for m in members] == [True, True, True, True, False]
    assert [m.is_learner for m in members] == [False, False, False, True, False]


def test_the_steps_read_members_and_health_with_the_same_parsers() -> None:
    """etcd_ops reads its fresh member lists and health answers with these functions: the Fact
    classes' parsers are the same code (IDs lower-case hex, learners, unstarted members)."""
    text = data("etcd/member_list_learner_unstarted.json")
    assert etcd.parse_member_list(text) == etcd.EtcdMemberList().parse(text)
    unstarted = etcd.parse_member_list(text)[-1]
    assert unstarted.name == "" and unstarted.client_urls == () and unstarted.id == unstarted.id.lower()
    # a multi-endpoint answer (the steps ask every member at once), a single object, a refusal
    both = json.dumps([json.loads(data("etcd/endpoint_health.json"))[0],
                       json.loads(data("etcd/endpoint_health_no_quorum.json"))[0] | {"endpoint": "x"}])
    assert [(h.endpoint, h.healthy) for h in etcd.parse_endpoint_health(both)] == [
        ("http://127.0.0.1:21194", True), ("x", False)]
    one = json.dumps(json.loads(data("etcd/endpoint_health.json"))[0])
    assert etcd.parse_endpoint_health(one) == etcd.parse_endpoint_health(data("etcd/endpoint_health.json"))
    assert etcd.EtcdEndpointHealth().parse(both).endpoint == "http://127.0.0.1:21194"
    for bad_list in ("", '{"members": [{"name": "x"}]}', "[1]"):  # no JSON, no ID, no object
        with pytest.raises(FactParseError):
            etcd.parse_member_list(bad_list)
    for bad_health in ("", "[{}]", "3"):
        with pytest.raises(FactParseError):
            etcd.parse_endpoint_health(bad_health)
    assert etcd.parse_member_list('{"header": {}, "members": null}') == ()


CLUSTER_CONFIG = kubernetes.KubeadmClusterConfig(
    "k8s-api.lab:6443",
    ("https://198.18.0.21:2379", "https://198.18.0.22:2379", "https://198.18.0.23:2379"),
    "v1.30.4",
    pod_subnet="10.244.0.0/16",
)


def test_api_state_from_one_kubectl_call() -> None:
    """Recorded with the real kubectl (record_kubectl.py): nodes, secrets and kubeadm-config."""
    parsed = kubernetes.ApiState().parse(data("kubernetes/api.out"))
    plane = {"node-role.kubernetes.io/control-plane": ""}
    assert parsed.nodes == (
        NodeInfo("master01", True, {**host_labels("master01"), **plane}, "v1.30.4"),
        NodeInfo("master02", False, {**host_labels("master02"), **plane}, "v1.30.4"),
        NodeInfo("worker01", True, host_labels("worker01"), "v1.30.4"),
    )
    assert parsed.config == CLUSTER_CONFIG
    assert parsed.secrets.tokens == (
        BootstrapToken("abcdef", datetime(2030, 1, 2, tzinfo=UTC), ("authentication", "signing")),
    )
    created = parsed.secrets.kubeadm_certs_created
    assert created is not None and created.tzinfo is not None
    assert "token-secret" not in kubernetes.API_JSONPATH
    assert "dGVzdA" not in data("kubernetes/api.out")  # no data of kubeadm-certs


def test_api_state_of_an_empty_cluster() -> None:
    parsed = kubernetes.ApiState().parse(data("kubernetes/api_empty.out"))
    assert parsed.nodes == () and parsed.config is None
    assert parsed.secrets == kubernetes.KubeSystemSecrets(None, ())


@pytest.mark.parametrize(
    "line",
    [
        "node\tm1\tTrue\tv1.30.4\t{not json\n",
        "mystery\tline\n",
        "secret\tbootstrap-token-abcdef\tbootstrap.kubernetes.io/token\t\t!!\t\t\n",
        'config\tConfigMap\t{"ClusterConfiguration": "- a list"}\n',
    ],
)
def test_api_state_rejects_what_it_cannot_read(line: str) -> None:
    with pytest.raises(FactParseError):
        kubernetes.ApiState().parse(line)


def test_cluster_configuration_networking_is_read() -> None:
    """kubeadm's stored ClusterConfiguration (as real kubeadm 1.30 writes it in kubeadm-config)."""
    text = (
        "apiServer: {}\napiVersion: kubeadm.k8s.io/v1beta3\ncertificatesDir: /etc/kubernetes/pki\n"
        "clusterName: kubernetes\ncontrolPlaneEndpoint: k8s-api.lab:6443\ncontrollerManager: {}\n"
        "dns: {}\netcd:\n  external:\n    caFile: /etc/kubernetes/pki/etcd/ca.crt\n"
        "    endpoints:\n    - https://198.18.0.21:2379\nimageRepository: registry.k8s.io\n"
        "kind: ClusterConfiguration\nkubernetesVersion: v1.30.4\nnetworking:\n"
        "  dnsDomain: cluster.local\n  podSubnet: 10.244.0.0/16\n  serviceSubnet: 10.96.0.0/12\n"
        "scheduler: {}\n")
    config = kubernetes.cluster_config(text)
    assert (config.pod_subnet, config.service_subnet, config.dns_domain) == (
        "10.244.0.0/16", "10.96.0.0/12", "cluster.local")
    view = kubernetes.cluster_view(kubernetes.ApiAnswer((), kubernetes.KubeSystemSecrets(None, ()), config),
                                   None)
    assert (view.pod_subnet, view.service_subnet, view.dns_domain) == (
        "10.244.0.0/16", "10.96.0.0/12", "cluster.local")


@pytest.mark.parametrize("networking", [
    "", "networking: null\n", "networking: [a, b]\n", "networking: {podSubnet: [1, 2]}\n",
    "networking: {podSubnet: ''}\n", f"networking: {{dnsDomain: {'a' * 300}}}\n",
    "networking: {podSubnet: true}\n",
])
def test_cluster_configuration_networking_is_read_tolerantly(networking: str) -> None:
    config = kubernetes.cluster_config("kind: ClusterConfiguration\n" + networking)
    assert (config.pod_subnet, config.service_subnet, config.dns_domain) == (None, None, None)


def host_labels(name: str) -> dict[str, str]:
    return {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux"}


def test_binaries_recorded_from_this_machine() -> None:
    """Run the real snippet here: Debian's etcd, etcdctl, haproxy and kubectl are installed."""
    fact = binaries.BinaryVersions()
    out = subprocess.run(["sh", "-c", fact.script()], capture_output=True, text=True, check=True)
    parsed = fact.parse(out.stdout)
    assert parsed.get("etcd") == Binary("/usr/bin/etcd", "3.4.23")
    assert parsed.get("etcdctl") == Binary("/usr/bin/etcdctl", "3.4.23")
    assert parsed.get("haproxy") == Binary("/usr/sbin/haproxy", "2.6.12")
    kubectl = parsed.get("kubectl")
    assert kubectl is not None and kubectl.version is not None
    assert kubectl.version.startswith("1.")
    assert set(parsed.found) == {"etcd", "etcdctl", "haproxy", "kubeadm", "kubelet", "kubectl"}


def test_binaries_follow_the_roles() -> None:
    assert binaries.binaries_for(["lb"]) == ("haproxy",)
    assert binaries.binaries_for(["worker"]) == ("kubeadm", "kubelet")
    assert binaries.binaries_for(["master", "etcd"]) == (
        "etcd", "etcdctl", "kubeadm", "kubelet", "kubectl",
    )  # fmt: skip
    fact = binaries.BinaryVersions(names=("haproxy",))
    out = subprocess.run(["sh", "-c", fact.script()], capture_output=True, text=True, check=True)
    assert out.stdout.splitlines()[0].startswith("haproxy\t/usr/sbin/haproxy\tHAProxy version")
    assert set(fact.parse(out.stdout).found) == {"haproxy"}
    assert fact.parse(out.stdout).get("kubelet") is None


def test_kubeadm_and_kubelet_versions_are_not_asked_on_a_joined_node(tmp_path: Path) -> None:
    """A fake kubeadm that logs each call: run on a fresh node, not run once kubelet.conf is
    there (the Node object has the kubelet's running version)."""
    calls = tmp_path / "calls"
    for name, answer in (("kubeadm", "v1.30.4"), ("kubelet", "Kubernetes v1.30.4")):
        tool = tmp_path / "bin" / name
        tool.parent.mkdir(exist_ok=True)
        tool.write_text(f"#!/bin/sh\necho {name} >> {calls}\necho '{answer}'\n")
        tool.chmod(0o755)
    mark = tmp_path / "kubelet.conf"
    fact = binaries.BinaryVersions(names=("kubeadm", "kubelet"))
    script = fact.script().replace(binaries.JOINED_MARK, str(mark))
    env = {"PATH": f"{tmp_path / 'bin'}:/usr/bin:/bin"}

    def run() -> BinariesFacts:
        out = subprocess.run(["sh", "-c", script], capture_output=True, text=True, check=True,
                             env=env)  # fmt: skip
        return fact.parse(out.stdout)

    fresh = run()
    assert fresh.get("kubeadm") == Binary(str(tmp_path / "bin/kubeadm"), "1.30.4")
    assert fresh.version("kubelet") == "1.30.4"
    assert sorted(calls.read_text().split()) == ["kubeadm", "kubelet"]
    mark.write_text("joined\n")
    calls.unlink()
    joined = run()
    assert not calls.exists(), "a version was asked on a joined node"
    assert joined.get("kubeadm") == Binary(str(tmp_path / "bin/kubeadm"), None)
    assert joined.get("kubelet") == Binary(str(tmp_path / "bin/kubelet"), None)


def test_binaries_lines_parse() -> None:
    out = (
        "etcd\t/usr/bin/etcd\tetcd Version: 3.5.15\n"
        "kubeadm\t/usr/bin/kubeadm\tv1.30.4\n"
        "kubelet\t/usr/bin/kubelet\tKubernetes v1.30.4\n"
        "haproxy\t/usr/sbin/haproxy\tgarbage\n"
    )
    parsed = binaries.BinaryVersions().parse(out)
    assert parsed.version("etcd") == "3.5.15"
    assert parsed.version("kubeadm") == parsed.version("kubelet") == "1.30.4"
    assert parsed.get("haproxy") == Binary("/usr/sbin/haproxy", None)
    assert parsed.get("kubectl") is None


def test_cert_expiry_reads_the_pems_here(tmp_path: Path) -> None:
    """The real snippet against certificates made by openssl: what it sends back parses to the
    notAfter openssl itself reports; a file that is no certificate is left out."""
    pki = tmp_path / "pki"
    (pki / "etcd").mkdir(parents=True)
    for name, days in (("ca", "365"), ("etcd/ca", "30")):
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
             "-nodes", "-keyout", str(pki / f"{name}.key"), "-out", str(pki / f"{name}.crt"),
             "-days", days, "-subj", "/CN=test"],
            check=True, capture_output=True,
        )  # fmt: skip
    (pki / "broken.crt").write_text("not a certificate\n")
    fact = kubernetes.CertExpiry()
    script = fact.script().replace(kubernetes.PKI, str(pki))
    out = subprocess.run(["sh", "-c", script], capture_output=True, text=True, check=True)
    parsed = fact.parse(out.stdout)
    assert set(parsed) == {str(pki / "ca.crt"), str(pki / "etcd/ca.crt")}
    for path, when in parsed.items():
        enddate = subprocess.run(
            ["openssl", "x509", "-in", path, "-noout", "-enddate"],
            capture_output=True, text=True, check=True,
        ).stdout.strip().removeprefix("notAfter=")  # fmt: skip
        assert when == datetime.strptime(enddate, "%b %d %H:%M:%S %Y %Z").replace(tzinfo=UTC)
    assert 363 <= (parsed[str(pki / "ca.crt")] - datetime.now(UTC)).days <= 365
    empty = tmp_path / "empty"
    empty.mkdir()
    out = subprocess.run(["sh", "-c", fact.script().replace(kubernetes.PKI, str(empty))],
                         capture_output=True, text=True, check=True)  # fmt: skip
    assert fact.parse(out.stdout) == {}


def test_ca_fingerprint_openssl_and_fallback_agree(tmp_path: Path) -> None:
    cert = tmp_path / "ca.crt"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-keyout", str(tmp_path / "ca.key"), "-out", str(cert), "-days", "1",
         "-subj", "/CN=etcd-ca"],
        check=True, capture_output=True,
    )  # fmt: skip
    fact = etcd.EtcdFiles(data_dir=str(tmp_path / "data"))
    script = fact.script().replace(etcd.CA_CERT, str(cert))
    results = []
    for variant in (script, script.replace("command -v openssl", "command -v no-such-openssl")):
        out = subprocess.run(["sh", "-c", variant], capture_output=True, text=True, check=True)
        results.append(fact.parse(out.stdout))
    assert results[0].ca_fingerprint == results[1].ca_fingerprint
    assert results[0].ca_fingerprint is not None and len(results[0].ca_fingerprint) == 95
    assert results[0].data_dir_state == "absent"
    assert not results[0].ca_key_present  # the script looks at /etc/etcd/pki/ca.key
    keyed = script.replace(etcd.CA_KEY, str(tmp_path / "ca.key"))
    out = subprocess.run(["sh", "-c", keyed], capture_output=True, text=True, check=True)
    assert fact.parse(out.stdout).ca_key_present


@pytest.mark.parametrize(
    ("setup", "state"),
    [(None, "absent"), ([], "empty"), (["member/"], "member"), (["stray"], "other"),
     (["default/member/"], "nested"), (["member/", "default/member/"], "member"),
     (["default/", "x"], "other")],
)  # fmt: skip
def test_data_dir_states(tmp_path: Path, setup: list[str] | None, state: str) -> None:
    d = tmp_path / "etcd"
    if setup is not None:
        d.mkdir()
        for entry in setup:
            if entry.endswith("/"):
                (d / entry).mkdir(parents=True)
            else:
                (d / entry).write_text("x")
    fact = etcd.EtcdFiles(data_dir=str(d))
    out = subprocess.run(["sh", "-c", fact.script()], capture_output=True, text=True, check=True)
    info = fact.parse(out.stdout)
    assert info.data_dir_state == state
    # Debian's etcd keeps its data one level down: the probe names where it found it
    assert info.nested_member == (f"{d}/default/member" if state == "nested" else None)


@pytest.mark.parametrize(
    ("raw", "status"),
    [("UP", "UP"), ("UP 1/3", "UP"), ("DOWN 1/2", "DOWN"), ("MAINT (via b/s)", "MAINT"),
     ("no check", "no check"), ("DRAIN", "DRAIN"), ("weird", "unknown")],
)  # fmt: skip
def test_haproxy_status_normalised(raw: str, status: str) -> None:
    assert haproxy.normalise_status(raw) == status


def test_small_helpers() -> None:
    assert find_version("HAProxy version 2.6.12-1+deb12u4 2026/10/17") == "2.6.12"
    assert find_version("Client Version: v1.32.4-dispatcher") == "1.32.4"
    assert find_version("nothing") is None
    assert fingerprint_hex("sha256 Fingerprint=" + "ab:" * 31 + "ab") == ":".join(["AB"] * 32)
    assert fingerprint_hex("ab" * 32) == ":".join(["AB"] * 32)
    assert fingerprint_hex("short") is None
    with pytest.raises(FactParseError):
        haproxy.HAProxyStats().parse("Unknown command\n")
    with pytest.raises(FactParseError):
        system.SystemInfo().parse("kernel=1\n")


def test_passwords_in_a_hand_edited_haproxy_cfg_are_masked() -> None:
    text = (
        "listen stats\n    stats auth admin:s3cr3t\nuserlist ops\n"
        "    user bob password $6$hash\n    user eve insecure-password plain\n"
    )
    masked = haproxy.HAProxyConfig().parse(text)
    for secret in ("s3cr3t", "$6$hash", "plain"):
        assert secret not in masked
    assert "stats auth admin:(sensitive value)" in masked
    assert "user bob password (sensitive value)" in masked


HAND_EDITED_CREDENTIALS = [
    # (line in haproxy.cfg, the secret in it, what stays visible)
    ("    user al secure-password $5$s4lt$h4sh groups g1", "$5$s4lt$h4sh", "secure-password"),
    ('    http-request set-header Authorization "Basic dXNlcjpwYXNz" if { path_beg /x }',
     "dXNlcjpwYXNz", "set-header Authorization"),
    ("    http-request add-header Proxy-Authorization Bearer\\ tok123", "tok123",
     "add-header Proxy-Authorization"),
    ("    http-request set-header Cookie session=abc123", "abc123", "set-header Cookie"),
    ("    http-response set-header Set-Cookie sid=zzz999", "zzz999", "set-header Set-Cookie"),
    ("    http-request replace-header Cookie (.*) sid=k3y", "k3y", "replace-header Cookie"),
    ('    acl ok req.hdr(authorization) -m str "Bearer t0ken"', "t0ken", "req.hdr(authorization)"),
    ("    acl ok hdr(Cookie) -m sub sess=c00kie", "c00kie", "hdr(Cookie)"),
    ("    option httpchk GET /healthz HTTP/1.1\\r\\nAuthorization:\\ Token\\ Zm9vOmJh",
     "Zm9vOmJh", "option httpchk GET /healthz"),
    ('    http-check send meth GET uri /readyz hdr Authorization "Token abc.def"', "abc.def",
     "hdr Authorization"),
    ("    http-request set-var(txn.t) str(Bearer\\ s3cr3t-t0k)", "s3cr3t-t0k", "set-var"),
    ("    server api 10.0.0.1:443 check password hunter2", "hunter2", "server api"),
]  # fmt: skip


@pytest.mark.parametrize(("line", "secret", "kept"), HAND_EDITED_CREDENTIALS)
def test_other_credentials_in_a_hand_edited_haproxy_cfg_are_masked(
    line: str, secret: str, kept: str
) -> None:
    masked = haproxy.HAProxyConfig().parse(f"frontend f\n{line}\n    bind :80\n")
    assert secret not in masked
    assert "(sensitive value)" in masked and kept in masked
    assert masked.endswith("    bind :80\n")  # the next line is untouched


def test_masking_leaves_ordinary_directives_alone_and_is_linear() -> None:
    text = (
        "frontend f\n    http-request set-header X-Forwarded-Proto https\n"
        "    cookie SERVERID insert indirect nocache\n"
        "    server master01 198.18.0.11:6443 check cookie m1\n"
        "    http-request auth realm hactl\n"
    )
    assert haproxy.mask_config_secrets(text) == text
    big = ("    http-request set-header Authorization " + "x" * 60 + "\n") * 30_000  # ~3 MB
    started = time.monotonic()
    masked = haproxy.mask_config_secrets(big)
    assert time.monotonic() - started < 5
    assert "x" * 60 not in masked


def test_unit_states_set_the_guard_variables_in_real_sh() -> None:
    """The snippet pairs Id and ActiveState (either order) into HACTL_<UNIT>_ACTIVE."""
    fact = services.UnitStates(("etcd", "haproxy"))
    fake_systemctl = (
        "systemctl() { printf 'ActiveState=active\\nId=etcd.service\\nUnitFileState=enabled\\n\\n"
        "Id=haproxy.service\\nActiveState=inactive\\nUnitFileState=\\n'; }\n"
    )
    script = f"{fake_systemctl}f() {{\n{fact.script()}\n}}\nf >/dev/null\n"
    script += 'echo "$HACTL_ETCD_ACTIVE/$HACTL_HAPROXY_ACTIVE"; echo *'
    out = subprocess.run(["sh", "-c", script], capture_output=True, text=True, check=True, cwd="/")
    first, second = out.stdout.splitlines()
    assert first == "active/inactive"
    assert second != "*"  # globbing is back on after the section
