"""The probe: one batched script per host, sections split back, facts assembled; unreachable
hosts reported, not fatal. Uses FakeTransport (answers composed from recorded outputs) and
the generated script run by the real /bin/sh."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from hactl.errors import UnreachableError
from hactl.facts.binaries import BinaryVersions
from hactl.facts.kubernetes import CERT_FILE_MARK
from hactl.facts.model import Observed
from hactl.facts.services import UnitStates
from hactl.probe import (
    SectionOutput,
    build_script,
    compose_output,
    facts_for,
    probe,
    probe_host,
    read_host_facts,
    split_sections,
)
from hactl.render.pki import make_ca
from hactl.spec.models import Cluster
from hactl.transport.base import Result
from hactl.transport.fake import Call, FakeTransport

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "tests" / "facts_data"


@pytest.fixture(scope="module")
def cluster() -> Cluster:
    return Cluster.model_validate(yaml.safe_load((REPO / "specs" / "lab.yaml").read_text()))


def sections_of(call: Call) -> list[str]:
    return re.findall(r"^__hactl_run (\S+) ", call.wire, re.M)


PREFLIGHT_OK = SectionOutput("now=1800000000.5\n", "", 0)
"""The preflight section of a host with nothing to report (hactl.facts.preflight)."""


def answer(sections: dict[str, SectionOutput]) -> Any:
    """A FakeTransport responder that prints ``sections`` with the script's own marker (and
    a preflight section with nothing to report, when the script asks for one and ``sections``
    has none)."""

    def respond(call: Call) -> Result:
        marker = re.search(r"__hactl_m='([^']+)'", call.wire)
        assert marker is not None
        shown = dict(sections)
        if "preflight" in sections_of(call) and "preflight" not in shown:
            shown["preflight"] = PREFLIGHT_OK
        out, err = compose_output(shown, marker.group(1))
        return Result(0, out, err)

    return respond


def ok(stdout: str) -> SectionOutput:
    return SectionOutput(stdout, "", 0)


def test_sections_follow_the_roles(cluster: Cluster) -> None:
    names = {h.name: [f.section for f in facts_for(cluster, h)] for h in cluster.all_hosts()}
    common = ["system", "binaries", "services"]
    etcd = ["etcd.files", "etcd.env", "etcd.members", "etcd.status", "etcd.health", "etcd.registry"]
    assert names["etcd01"] == [*common, *etcd, "preflight"]
    assert names["lb01"] == [*common, "haproxy.files", "haproxy.config", "haproxy.stats",
                             "preflight"]
    k8s = ["k8s.files", "k8s.certs"]
    assert names["master01"] == [*common, *k8s, "k8s.api", "preflight"]  # the API is asked once, here
    assert names["master02"] == names["master03"] == [*common, *k8s, "preflight"]
    assert names["worker01"] == [*common, *k8s, "preflight"]
    bins = {h.name: facts_for(cluster, h)[1] for h in cluster.all_hosts()}
    assert isinstance(bins["lb01"], BinaryVersions) and bins["lb01"].names == ("haproxy",)
    assert isinstance(bins["etcd01"], BinaryVersions) and bins["etcd01"].names == (
        "etcd",
        "etcdctl",
    )
    assert isinstance(bins["worker01"], BinaryVersions)
    assert bins["worker01"].names == ("kubeadm", "kubelet")
    units = {h.name: facts_for(cluster, h)[2] for h in cluster.all_hosts()}
    assert isinstance(units["etcd01"], UnitStates) and units["etcd01"].units == ("etcd",)
    assert isinstance(units["lb01"], UnitStates) and units["lb01"].units == ("haproxy",)
    assert isinstance(units["worker02"], UnitStates) and units["worker02"].units == ("kubelet",)


def test_etcdctl_uses_the_member_itself_over_tls(cluster: Cluster) -> None:
    script = build_script(facts_for(cluster, cluster.host("etcd02")), "M")
    assert "--endpoints=https://127.0.0.1:2379" in script
    assert "--cacert=/etc/etcd/pki/ca.crt" in script
    assert "--cert=/etc/etcd/pki/healthcheck-client.crt" in script
    assert "--cluster" not in script


def test_split_is_the_inverse_of_compose() -> None:
    sections = {
        "a": SectionOutput("line1\nline2", "warn\n", 0),
        "b": SectionOutput("", "", 100),
        "c": SectionOutput("no newline at end", "boom", 3),
        "d": SectionOutput("trailing\n\n", "", 0),
    }
    out, err = compose_output(sections, "HACTL-abc")
    assert split_sections(out, err, "HACTL-abc") == sections


def test_the_generated_script_runs_in_real_sh_and_keeps_sections_apart(cluster: Cluster) -> None:
    """Every role at once on this machine (nothing is running here): each section ends with
    its own status, nothing leaks between sections, and the host's facts come out."""
    host = cluster.host("master01")
    everything = Cluster.model_validate(
        {
            **cluster.model_dump(by_alias=True, mode="json"),
            "etcd": {"topology": "stacked"},
            "loadBalancer": {"hosts": [{"name": "master01", "address": "198.18.0.11"}]},
        }
    )
    facts = facts_for(everything, host)
    assert len(facts) == 3 + 6 + 3 + 3 + 1  # + preflight
    script = build_script(facts, "HACTL-t1")
    proc = subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    sections = split_sections(proc.stdout, proc.stderr, "HACTL-t1")
    assert list(sections) == [f.section for f in facts]
    hf = read_host_facts(everything, host, sections)
    assert hf.system is not None and hf.system.hostname
    assert hf.binaries is not None and hf.binaries.version("etcdctl") == "3.4.23"
    assert hf.etcd is not None and hf.etcd.members is None and hf.etcd.query_error
    assert hf.kubernetes is not None and hf.kubernetes.cluster is None  # no admin.conf here
    assert hf.section_errors == {}


async def test_one_round_trip_per_host_and_facts_assembled(cluster: Cluster) -> None:
    members = (DATA / "etcd/member_list_3.json").read_text()
    fake = FakeTransport("etcd01", strict=True).on(
        lambda wire: "__hactl_run" in wire,
        respond=answer(
            {
                "system": ok("hostname=etcd01\nuser=root\ninit=systemd\nos.ID=debian\n"),
                "binaries": ok("etcd\t/usr/bin/etcd\tetcd Version: 3.4.23\n"),
                "services": ok("Id=etcd.service\nActiveState=active\nUnitFileState=enabled\n"),
                "etcd.files": ok("env_sha256=aa  -\ndata_dir=member\n"),
                "etcd.env": ok('ETCD_NAME="etcd01"\nETCD_INITIAL_CLUSTER_STATE="new"\n'),
                "etcd.members": ok(members),
                "etcd.status": ok((DATA / "etcd/endpoint_status.json").read_text()),
                "etcd.health": SectionOutput(
                    (DATA / "etcd/endpoint_health_no_quorum.json").read_text(), "Error: x\n", 1
                ),
                "etcd.registry": ok((DATA / "etcd/registry_count_2.json").read_text()),
            }
        ),
    )
    hf = await probe_host(fake, cluster, cluster.host("etcd01"))
    assert len(fake.calls) == 1 and fake.calls[0].is_script
    assert sections_of(fake.calls[0]) == [
        f.section for f in facts_for(cluster, cluster.host("etcd01"))
    ]
    assert hf.reachable and hf.section_errors == {}
    assert hf.etcd is not None
    assert hf.etcd.members is not None and len(hf.etcd.members) == 3
    assert hf.etcd.initial_cluster_state == "new"
    assert hf.etcd.server_version == "3.4.23"
    assert hf.etcd.health is not None and not hf.etcd.health.healthy
    assert hf.etcd.has_registry_data is True
    assert hf.etcd.query_error is None
    assert hf.kubernetes is None and hf.haproxy is None


CA_PEM = make_ca("kubernetes", key_type="ecdsa").cert_pem().decode()


async def test_a_failing_section_loses_only_its_own_fact(cluster: Cluster) -> None:
    fake = FakeTransport("master01").on(
        lambda wire: "__hactl_run" in wire,
        respond=answer(
            {
                "system": ok("hostname=master01\n"),
                "binaries": ok(""),
                "services": ok("Id=kubelet.service\nActiveState=active\nUnitFileState=enabled\n"),
                "k8s.files": ok("admin_conf=1\nmanifest=kube-apiserver.yaml\n"),
                "k8s.certs": ok(f"{CERT_FILE_MARK}/etc/kubernetes/pki/ca.crt\n{CA_PEM}"),
                "k8s.api": SectionOutput("", "Unable to connect to the server: timeout\n", 1),
            }
        ),
    )
    hf = await probe_host(fake, cluster, cluster.host("master01"))
    k8s = hf.kubernetes
    assert k8s is not None and k8s.initialised and k8s.kubelet_active
    assert k8s.cluster is not None
    assert k8s.cluster.errors == {
        "api": "exit status 1: Unable to connect to the server: timeout",
    }
    assert set(hf.section_errors) == {"k8s.api"}
    assert list(k8s.cert_expiry) == ["/etc/kubernetes/pki/ca.crt"]
    observed = Observed({"master01": hf}, probed_at=fake_now())
    assert observed.cluster_view(["master01"]) is None  # the node query failed
    assert observed.first_initialised_master(["master01"]) == "master01"


def master_answer(name: str, api: SectionOutput | None) -> Any:
    sections = {
        "system": ok(f"hostname={name}\n"),
        "binaries": ok(""),
        "services": ok("Id=kubelet.service\nActiveState=active\nUnitFileState=enabled\n"),
        "k8s.files": ok("admin_conf=1\nkubelet_conf=1\nmanifest=kube-apiserver.yaml\n"),
        "k8s.certs": ok(""),
    }
    if api is not None:
        sections["k8s.api"] = api
    return answer(sections)


API_OK = ok((REPO / "tests/facts_data/kubernetes/api.out").read_text())


async def test_the_api_is_asked_once_and_from_the_next_master_only_when_needed(
    cluster: Cluster,
) -> None:
    masters = ["master01", "master02", "master03"]

    def transports(first: Any) -> dict[str, Any]:
        out: dict[str, Any] = {"master01": first}
        for name in masters[1:]:
            out[name] = FakeTransport(name).on(
                lambda wire: "__hactl_run" in wire, respond=master_answer(name, API_OK)
            )
        return out

    healthy = FakeTransport("master01").on(
        lambda wire: "__hactl_run" in wire, respond=master_answer("master01", API_OK)
    )
    ts = transports(healthy)
    observed = await probe(cluster, ts, hosts=[cluster.host(m) for m in masters])
    assert [sections_of(c) for c in healthy.calls] == [
        ["system", "binaries", "services", "k8s.files", "k8s.certs", "k8s.api", "preflight"]
    ]
    assert all(len(ts[m].calls) == 1 and "k8s.api" not in ts[m].calls[0].wire for m in masters[1:])
    view = observed.cluster_view(masters)
    assert view is not None and [n.name for n in view.nodes] == ["master01", "master02", "worker01"]

    # master01 is down: one more round trip, to the other masters with an admin.conf
    down = UnreachableError("connection refused by root@198.18.0.11", host="master01")
    ts = transports(down)
    observed = await probe(cluster, ts, hosts=[cluster.host(m) for m in masters])
    assert observed.unreachable() == ["master01"]
    for name in masters[1:]:
        assert [sections_of(c) for c in ts[name].calls][1] == ["k8s.api"], name
    view = observed.cluster_view(masters)
    assert view is not None and view.control_plane_endpoint == "k8s-api.lab:6443"
    assert observed["master02"].section_errors == {}

    # master01's API query fails: the others are asked too, and their errors are kept
    failing = FakeTransport("master01").on(
        lambda wire: "__hactl_run" in wire,
        respond=master_answer("master01", SectionOutput("", "Unable to connect\n", 1)),
    )
    ts = transports(failing)
    for name in masters[1:]:
        ts[name] = FakeTransport(name).on(
            lambda wire: "__hactl_run" in wire,
            respond=master_answer(name, SectionOutput("", "Unable to connect\n", 1)),
        )
    observed = await probe(cluster, ts, hosts=[cluster.host(m) for m in masters])
    assert observed.cluster_view(masters) is None
    assert observed["master03"].section_errors == {"k8s.api": "exit status 1: Unable to connect"}


def fake_now() -> Any:
    from datetime import UTC, datetime

    return datetime(2030, 1, 1, tzinfo=UTC)


async def test_skipped_sections_are_not_errors(cluster: Cluster) -> None:
    fake = FakeTransport("etcd02").on(
        lambda wire: "__hactl_run" in wire,
        respond=answer(
            {
                "system": ok("hostname=etcd02\n"),
                "binaries": ok(""),
                "services": ok("Id=etcd.service\nActiveState=inactive\nUnitFileState=disabled\n"),
                "etcd.files": ok("data_dir=absent\n"),
                "etcd.env": SectionOutput("", "no /etc/etcd/etcd.env\n", 100),
                **{
                    name: SectionOutput("", "the etcd service is inactive\n", 100)
                    for name in ("etcd.members", "etcd.status", "etcd.health", "etcd.registry")
                },
            }
        ),
    )
    hf = await probe_host(fake, cluster, cluster.host("etcd02"))
    assert hf.section_errors == {}
    assert hf.etcd is not None and hf.etcd.members is None and not hf.etcd.env_present
    assert hf.etcd.query_error == "the etcd service is inactive"


async def test_unreachable_hosts_do_not_abort_the_probe(cluster: Cluster) -> None:
    transports: dict[str, Any] = {}
    for host in cluster.all_hosts():
        fake = FakeTransport(host.name).on(
            lambda wire: "__hactl_run" in wire,
            respond=answer({"system": ok("hostname=x\n"), "binaries": ok("")}),
        )
        transports[host.name] = fake
    transports["etcd03"] = UnreachableError("connection refused by root@198.18.0.23", host="etcd03")
    transports["lb01"] = FakeTransport(
        "lb01", fail_with=UnreachableError("the SSH connection was lost", host="lb01")
    )
    del transports["worker02"]
    observed = await probe(cluster, transports)
    assert observed.unreachable() == ["etcd03", "lb01", "worker02"]
    assert "connection refused" in (observed["etcd03"].error or "")
    assert "connection was lost" in (observed["lb01"].error or "")
    assert observed["etcd01"].reachable
    assert list(observed.hosts) == [h.name for h in cluster.all_hosts()]


async def test_garbage_answer_is_reported_as_a_script_error(cluster: Cluster) -> None:
    fake = FakeTransport("worker01").on(
        lambda wire: "__hactl_run" in wire, stdout="", stderr="sh: 1: syntax error\n", exit_status=2
    )
    hf = await probe_host(fake, cluster, cluster.host("worker01"))
    assert hf.reachable and hf.system is None
    assert hf.section_errors == {"script": "exit status 2: sh: 1: syntax error"}


@pytest.mark.parametrize("garbage", ["null", "[1]", "[" * 50_000 + "]" * 50_000])
async def test_unreadable_section_output_is_bad_output_not_an_unreachable_host(
    cluster: Cluster, garbage: str
) -> None:
    fake = FakeTransport("etcd01").on(
        lambda wire: "__hactl_run" in wire,
        respond=answer(
            {
                "system": ok("hostname=etcd01\n"),
                "binaries": ok(""),
                "services": ok("Id=etcd.service\nActiveState=active\nUnitFileState=enabled\n"),
                "etcd.files": ok("data_dir=member\n"),
                "etcd.env": ok('ETCD_NAME="etcd01"\n'),
                "etcd.members": ok(garbage),
                "etcd.status": ok((DATA / "etcd/endpoint_status.json").read_text()),
                "etcd.health": ok((DATA / "etcd/endpoint_health.json").read_text()),
                "etcd.registry": ok(garbage),
            }
        ),
    )
    hf = await probe_host(fake, cluster, cluster.host("etcd01"))
    assert hf.reachable and hf.error is None
    assert set(hf.section_errors) == {"etcd.members", "etcd.registry"}
    for section, text in hf.section_errors.items():
        assert text.startswith(f"bad output from host etcd01: {section}: "), text
    assert hf.etcd is not None and hf.etcd.members is None
    assert hf.etcd.status is not None  # the other sections are still read


async def test_output_past_the_cap_is_bad_output_naming_the_files(cluster: Cluster) -> None:
    from hactl.transport.ssh_session import OutputLimitError

    fake = FakeTransport(
        "lb01",
        fail_with=OutputLimitError(
            "`sh script (9 bytes): x` printed more than 8 MiB on stdout; hactl stopped reading "
            "and killed it",
            host="lb01",
        ),
    )
    hf = await probe_host(fake, cluster, cluster.host("lb01"))
    assert not hf.reachable and hf.haproxy is None
    assert (hf.error or "").startswith("bad output from host lb01: ")
    assert "more than 8 MiB" in (hf.error or "") and "/etc/haproxy/haproxy.cfg" in (hf.error or "")
