"""A real 3-member etcd cluster with full TLS, started on loopback from the rendered env files and
the certificates of hactl.render.etcd_pki; checked with the real etcdctl.

Members run on 127.0.0.21-23 with one free client port and one free peer port. The only change
made to the rendered environment: paths under /etc/etcd/pki and the data dir are moved into the
test's temporary directory (three members share this machine)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from render_helpers import free_port_on_all, spec_dict

from hactl.render import etcd, pki
from hactl.render.etcd_pki import EtcdPKI, build_etcd_pki, issue_member
from hactl.render.files import RenderedFile
from hactl.spec.models import Cluster, Host

pytestmark = pytest.mark.skipif(
    shutil.which("etcd") is None or shutil.which("etcdctl") is None, reason="needs etcd"
)

ADDRESSES = ["127.0.0.21", "127.0.0.22", "127.0.0.23", "127.0.0.24"]


@dataclass
class LoopbackEtcd:
    cluster: Cluster
    pki: EtcdPKI
    root: Path
    procs: dict[str, subprocess.Popen[bytes]]

    def member_dir(self, name: str) -> Path:
        return self.root / name

    def endpoints(self) -> str:
        return ",".join(etcd.client_endpoints(self.cluster))

    def etcdctl(
        self,
        *args: str,
        cert: str = "healthcheck-client",
        member: str = "etcd01",
        endpoints: str | None = None,
        timeout: str = "5s",
    ) -> subprocess.CompletedProcess[str]:
        pki_dir = self.member_dir(member) / "pki"
        tls = [f"--cacert={pki_dir / 'ca.crt'}"]
        if cert:
            tls += [f"--cert={pki_dir / cert}.crt", f"--key={pki_dir / cert}.key"]
        return etcdctl(endpoints or self.endpoints(), *tls, *args, timeout=timeout)


def etcdctl(endpoints: str, *args: str, timeout: str = "5s") -> subprocess.CompletedProcess[str]:
    argv = [
        "etcdctl",
        f"--endpoints={endpoints}",
        "--dial-timeout=2s",
        f"--command-timeout={timeout}",
    ]
    return subprocess.run(
        [*argv, *args],
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "ETCDCTL_API": "3"},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def loopback_cluster(addresses: list[str]) -> Cluster:
    client, peer = free_port_on_all(addresses), free_port_on_all(addresses)
    while peer == client:
        peer = free_port_on_all(addresses)
    data: dict[str, Any] = spec_dict("lab")
    data["etcd"]["members"] = [
        {"name": f"etcd{i:02d}", "address": a} for i, a in enumerate(addresses, 1)
    ]
    data["etcd"]["clientPort"], data["etcd"]["peerPort"] = client, peer
    return Cluster.model_validate(data)


def relocate(value: str, member_dir: Path, data_dir: str) -> str:
    if value == data_dir:
        return str(member_dir / "data")
    return value.replace(etcd.PKI_DIR + "/", f"{member_dir / 'pki'}/")


def write_files(files: list[RenderedFile], member_dir: Path) -> None:
    for file in files:
        path = Path(relocate(file.path, member_dir, ""))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(file.reveal())
        path.chmod(file.mode)


def start_member(
    lc: LoopbackEtcd, name: str, state: etcd.ClusterState, members: list[Host] | None = None
) -> None:
    member_dir = lc.member_dir(name)
    write_files(lc.pki.member_files(name), member_dir)
    (member_dir / "data").mkdir(mode=0o700, exist_ok=True)
    rendered = etcd.render_etcd_env(lc.cluster, name, state=state, members=members)
    (member_dir / "etcd.env").write_text(rendered)
    env = {
        key: relocate(value, member_dir, lc.cluster.etcd.data_dir)
        for key, value in etcd.parse_env_file(rendered).items()
    }
    log = (member_dir / "etcd.log").open("wb")
    try:
        lc.procs[name] = subprocess.Popen(
            ["etcd"],
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **env},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    finally:
        log.close()


def wait_healthy(lc: LoopbackEtcd, endpoints: str | None = None, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    result = None
    while time.monotonic() < deadline:
        for name, proc in lc.procs.items():
            if proc.poll() is not None:
                log = (lc.member_dir(name) / "etcd.log").read_text()[-3000:]
                pytest.fail(f"etcd {name} exited with {proc.returncode}:\n{log}")
        result = lc.etcdctl("endpoint", "health", endpoints=endpoints)
        if result.returncode == 0:
            return
        time.sleep(0.3)
    pytest.fail(f"etcd cluster not healthy: {result.stderr if result else ''}")


@contextlib.contextmanager
def running_cluster(root: Path, size: int = 3) -> Iterator[LoopbackEtcd]:
    cluster = loopback_cluster(ADDRESSES[:size])
    lc = LoopbackEtcd(cluster, build_etcd_pki(cluster), root, {})
    try:
        for host in cluster.etcd_members:  # all at once: a new cluster needs its quorum
            start_member(lc, host.name, "new")
        wait_healthy(lc)
        yield lc
    finally:
        stop(list(lc.procs.values()))


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM every process we started (by PID), SIGKILL what is left after 2 s: followers of a
    cluster that is stopped all at once wait ~7 s for a leader that is gone."""
    for proc in procs:
        proc.terminate()
    deadline = time.monotonic() + 2
    for proc in procs:
        try:
            proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def three(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoopbackEtcd]:
    with running_cluster(tmp_path_factory.mktemp("etcd3")) as lc:
        yield lc


def test_member_list_over_tls(three: LoopbackEtcd) -> None:
    result = three.etcdctl("member", "list", "-w", "json")
    assert result.returncode == 0, result.stderr
    members = json.loads(result.stdout)["members"]
    got = sorted((m["name"], m["peerURLs"], m["clientURLs"]) for m in members)
    want = [
        (h.name, [etcd.peer_url(h, three.cluster)], [etcd.client_url(h, three.cluster)])
        for h in three.cluster.etcd_members
    ]
    assert got == want
    assert not any(m.get("isLearner") for m in members)


def test_endpoint_health_cluster(three: LoopbackEtcd) -> None:
    result = three.etcdctl("endpoint", "health", "--cluster")
    assert result.returncode == 0, result.stderr
    healthy = [
        line for line in (result.stdout + result.stderr).splitlines() if "is healthy" in line
    ]
    assert len(healthy) == 3


def test_apiserver_etcd_client_can_read_and_write(three: LoopbackEtcd) -> None:
    member_dir = three.member_dir("etcd01")
    files = {f.path: f for f in three.pki.master_files()}
    for path, file in files.items():
        target = member_dir / "master" / Path(path).name
        target.parent.mkdir(exist_ok=True)
        target.write_text(file.reveal())
    master = member_dir / "master"
    tls = [
        f"--cacert={master / 'ca.crt'}",
        f"--cert={master / 'apiserver-etcd-client.crt'}",
        f"--key={master / 'apiserver-etcd-client.key'}",
    ]
    assert etcdctl(three.endpoints(), *tls, "put", "/registry/hactl-test", "ok").returncode == 0
    got = etcdctl(three.endpoints(), *tls, "get", "--print-value-only", "/registry/hactl-test")
    assert got.stdout.strip() == "ok"


def test_client_without_certificate_is_refused(three: LoopbackEtcd) -> None:
    result = three.etcdctl("endpoint", "health", cert="", timeout="2s")
    assert result.returncode != 0
    assert "is healthy" not in result.stdout + result.stderr


def test_client_with_foreign_ca_certificate_is_refused(three: LoopbackEtcd, tmp_path: Path) -> None:
    foreign = pki.issue(pki.make_ca("etcd-ca"), "kube-etcd-healthcheck-client", usage="client")
    crt, key = pki.write_cert_key(str(tmp_path), "foreign", foreign)
    ca = three.member_dir("etcd01") / "pki" / "ca.crt"
    result = etcdctl(
        three.endpoints(),
        f"--cacert={ca}",
        f"--cert={crt}",
        f"--key={key}",
        "endpoint",
        "health",
        timeout="2s",
    )
    assert result.returncode != 0


def peer_get(lc: LoopbackEtcd, crt: str, key: str) -> bytes:
    """GET /members on etcd01's peer port (the peer-to-peer HTTP API) with a client certificate."""
    host = lc.cluster.etcd_members[0]
    ctx = ssl.create_default_context(cafile=str(lc.member_dir("etcd01") / "pki" / "ca.crt"))
    ctx.load_cert_chain(crt, key)
    address = (str(host.address), lc.cluster.etcd.peer_port)
    with (
        socket.create_connection(address, timeout=5) as raw,
        ctx.wrap_socket(raw, server_hostname=str(host.address)) as tls,
    ):
        tls.sendall(
            f"GET /members HTTP/1.1\r\nHost: {host.address}\r\nConnection: close\r\n\r\n".encode()
        )
        data = b""
        while chunk := tls.recv(65536):
            data += chunk
            if data.startswith(b"HTTP/1.1 200") and data.rstrip().endswith(b"]"):
                break  # the JSON list of members is complete
        return data


def test_peer_port_rejects_foreign_ca(three: LoopbackEtcd, tmp_path: Path) -> None:
    pki_dir = three.member_dir("etcd02") / "pki"
    ok = peer_get(three, str(pki_dir / "peer.crt"), str(pki_dir / "peer.key"))
    assert ok.startswith(b"HTTP/1.1 200") and b"etcd03" in ok
    host = three.cluster.etcd_members[1]
    foreign = issue_member(pki.make_ca("etcd-ca"), host).peer  # same names, foreign CA
    crt, key = pki.write_cert_key(str(tmp_path), "foreign-peer", foreign)
    with pytest.raises((ssl.SSLError, ConnectionResetError, BrokenPipeError)) as refused:
        peer_get(three, crt, key)  # etcd answers with a TLS "bad certificate" alert
    if isinstance(refused.value, ssl.SSLError):
        assert "BAD_CERTIFICATE" in str(refused.value)


def test_add_member_with_existing_state(tmp_path: Path) -> None:
    """Grow 3 → 4 like the reconciler does: `member add`, then start the new member from the
    rendered env with ETCD_INITIAL_CLUSTER_STATE=existing and the current members + itself."""
    with running_cluster(tmp_path, size=3) as lc:
        data = lc.cluster.model_dump(by_alias=True, mode="json")
        data["etcd"]["members"].append({"name": "etcd04", "address": ADDRESSES[3]})
        grown = Cluster.model_validate(data)
        new = grown.etcd_members[3]
        lc.pki.members["etcd04"] = issue_member(lc.pki.ca, new)
        # As a learner first (design rule 1: a learner cannot break quorum). etcd refuses any
        # `member add` with "unhealthy cluster" until every voter has been connected for 5 s
        # (strict reconfig check), so right after a start the reconciler must retry.
        peer_urls = f"--peer-urls={etcd.peer_url(new, grown)}"
        deadline = time.monotonic() + 20
        while (added := lc.etcdctl("member", "add", "etcd04", "--learner", peer_urls)).returncode:
            assert "unhealthy cluster" in added.stderr and time.monotonic() < deadline, added.stderr
            time.sleep(0.5)
        told = etcd.parse_env_file(
            "\n".join(x for x in added.stdout.splitlines() if x.startswith("ETCD_"))
        )
        assert told["ETCD_INITIAL_CLUSTER_STATE"] == "existing"
        lc.cluster = grown
        start_member(lc, "etcd04", "existing", members=grown.etcd_members)
        env = etcd.parse_env_file((lc.member_dir("etcd04") / "etcd.env").read_text())
        # The rendered env says what `member add` told us to use.
        for key in ("ETCD_NAME", "ETCD_INITIAL_ADVERTISE_PEER_URLS", "ETCD_INITIAL_CLUSTER_STATE"):
            assert env[key] == told[key]
        split = lambda v: sorted(v.split(","))  # noqa: E731
        assert split(env["ETCD_INITIAL_CLUSTER"]) == split(told["ETCD_INITIAL_CLUSTER"])
        old_endpoints = ",".join(etcd.client_endpoints(lc.cluster)[:3])
        listed = lc.etcdctl("member", "list", "-w", "json", endpoints=old_endpoints)
        learner = next(
            m
            for m in json.loads(listed.stdout)["members"]
            if m["peerURLs"] == [etcd.peer_url(new, grown)]
        )
        assert learner.get("isLearner") is True
        member_id = format(learner["ID"], "x")
        deadline = time.monotonic() + 20  # promotion waits until the learner has caught up
        while True:
            promoted = lc.etcdctl("member", "promote", member_id, endpoints=old_endpoints)
            if promoted.returncode == 0:
                break
            assert lc.procs["etcd04"].poll() is None, "etcd04 exited"
            assert time.monotonic() < deadline, promoted.stderr
            time.sleep(0.5)
        wait_healthy(lc)
        members = json.loads(lc.etcdctl("member", "list", "-w", "json").stdout)["members"]
        assert sorted(m["name"] for m in members) == ["etcd01", "etcd02", "etcd03", "etcd04"]
        assert not any(m.get("isLearner") for m in members)
        health = lc.etcdctl("endpoint", "health", "--cluster")
        assert health.returncode == 0, health.stderr


# -- H1: hactl's planned sequence for a peerPort change, run against real etcd ------------------


class LoopbackHost:
    """A Transport for one loopback member: etcdctl runs for real with the member's relocated
    certificates; ``put`` writes into the member's directory; ``systemctl`` acts on the
    member's etcd process (``restart`` starts it again from the etcd.env the step wrote)."""

    def __init__(self, lc: LoopbackEtcd, name: str) -> None:
        self.lc, self.host = lc, name

    async def run(self, command: Any, *, stdin: Any = None, timeout: float | None = None,
                  check: bool = True, **_: Any) -> Any:
        from hactl.transport.base import Result, check_result

        argv = [str(a) for a in command]
        proc = self.lc.procs.get(self.host)
        if argv[0] == "systemctl":
            code = 0
            if argv[1] == "is-active":
                code = 0 if proc is not None and proc.poll() is None else 3
            elif argv[1] == "restart" or (argv[1] == "start" and (proc is None or proc.poll() is not None)):
                if proc is not None:
                    stop([proc])
                start_written(self.lc, self.host)
            result = Result(code, "", "")
        elif argv[:2] == ["sh", "-c"]:  # the data-dir scripts: run for real on the member's dir
            local = [*argv[:4], *(local_path(a, self.lc.member_dir(self.host)) for a in argv[4:])]
            done = subprocess.run(local, capture_output=True, text=True, timeout=30, check=False)
            result = Result(done.returncode, done.stdout, done.stderr)
        elif argv[:2] == ["rm", "-f"]:  # e.g. the bootstrap-pending marker, in the member's dir
            (self.lc.member_dir(self.host) / Path(argv[2]).name).unlink(missing_ok=True)
            result = Result(0, "", "")
        elif argv[0] == "etcdctl":
            pki_dir = f"{self.lc.member_dir(self.host) / 'pki'}/"
            done = subprocess.run([a.replace(etcd.PKI_DIR + "/", pki_dir) for a in argv],
                                  capture_output=True, text=True, timeout=30, check=False,
                                  env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "ETCDCTL_API": "3"})
            result = Result(done.returncode, done.stdout, done.stderr)
        else:
            raise AssertionError(f"unexpected command on {self.host}: {argv}")
        return check_result(self.host, tuple(argv), result) if check else result

    async def put(self, path: str, data: bytes, mode: int = 0o644) -> None:
        (self.lc.member_dir(self.host) / Path(path).name).write_bytes(data)

    async def aclose(self) -> None:
        return None


MOVED_DATA_DIR = "/srv/etcd-moved"
"""The data dir a test moves to; on this machine it is ``<member dir>/data-moved``."""


def local_path(value: str, member_dir: Path) -> str:
    if value.startswith(MOVED_DATA_DIR):
        return str(member_dir / "data-moved") + value[len(MOVED_DATA_DIR):]
    return relocate(value, member_dir, "/var/lib/etcd")


def start_written(lc: LoopbackEtcd, name: str) -> None:
    """Start member ``name`` from the etcd.env a step wrote (paths relocated, as start_member)."""
    member_dir = lc.member_dir(name)
    env = {key: local_path(value, member_dir)
           for key, value in etcd.parse_env_file((member_dir / "etcd.env").read_text()).items()}
    log = (member_dir / "etcd.log").open("ab")
    try:
        lc.procs[name] = subprocess.Popen(["etcd"], env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **env},
                                          stdout=log, stderr=subprocess.STDOUT)
    finally:
        log.close()


@dataclass
class LoopbackCtx:
    cluster: Cluster
    lc: LoopbackEtcd
    events: list[str]

    @property
    def secrets(self) -> Any:
        from hactl.plan.step import RunSecrets

        return RunSecrets()

    def transport(self, host: str) -> LoopbackHost:
        return LoopbackHost(self.lc, host)

    def log(self, event: str, **fields: object) -> None:
        self.events.append(event)


def leaders(lc: LoopbackEtcd, *clusters: Cluster) -> dict[str, str]:
    """Member name → the leader id it reports, asked on its client URL in each of ``clusters``
    (old and new spec: the first that answers); members that do not answer are left out."""
    out = {}
    for host in lc.cluster.etcd_members:
        for cluster in clusters or (lc.cluster,):
            got = lc.etcdctl("endpoint", "status", "-w", "json", timeout="2s",
                             endpoints=etcd.client_url(cluster.host(host.name), cluster))
            if got.returncode == 0:
                status = json.loads(got.stdout)[0]["Status"]
                if status.get("leader"):
                    out[host.name] = format(status["leader"], "x")
                break
    return out


@pytest.mark.parametrize("field", ["peerPort", "clientPort"])
async def test_port_change_runs_one_member_at_a_time_and_keeps_a_leader(tmp_path: Path, field: str) -> None:
    """peerPort: `member update` through another member, then rewrite etcd.env and restart;
    clientPort: rewrite and restart (each member then publishes its new client URL). Either
    way one member at a time, each restart gated and followed by a whole-cluster health wait."""
    from hactl.plan.planner import build_plan
    from hactl.plan.synthetic import PROBED_AT, Synthetic

    with running_cluster(tmp_path, size=3) as lc:
        old = lc.cluster
        data = old.model_dump(by_alias=True, mode="json")
        new_port = free_port_on_all(ADDRESSES[:3])
        while new_port in (old.etcd.client_port, old.etcd.peer_port):
            new_port = free_port_on_all(ADDRESSES[:3])
        data["etcd"][field] = new_port
        moved = Cluster.model_validate(data)
        # the plan hactl makes for this edit of a healthy cluster (facts as the probe reports them)
        plan = build_plan(moved, Synthetic(old).etcd().observed(), now=PROBED_AT)
        steps = [s for s in plan.steps() if s.id.startswith("etcd")]
        kinds = ("update-peer", "reconfigure") if field == "peerPort" else ("reconfigure",)
        assert [s.id for s in steps] == [
            f"etcd.member[{n}].{k}" for n in ("etcd01", "etcd02", "etcd03") for k in kinds
        ] + ["etcd.health"]
        lc.cluster = moved
        ctx = LoopbackCtx(moved, lc, [])
        for step in steps:
            await step.run(ctx)
            seen = leaders(lc, moved, old)
            # a quorum of members (2 of 3) agrees on one leader after every step
            votes = [list(seen.values()).count(leader) for leader in set(seen.values())]
            assert max(votes, default=0) >= 2, (step.id, seen)
        members = json.loads(lc.etcdctl("member", "list", "-w", "json").stdout)["members"]
        assert sorted((m["name"], m["peerURLs"], m["clientURLs"]) for m in members) == [
            (h.name, [etcd.peer_url(h, moved)], [etcd.client_url(h, moved)]) for h in moved.etcd_members]
        assert len(leaders(lc)) == 3
        health = lc.etcdctl("endpoint", "health")
        assert health.returncode == 0, health.stderr


async def test_data_dir_change_runs_as_remove_then_add_one_member_at_a_time(tmp_path: Path) -> None:
    """etcd.dataDir edited: each member is removed through another one, added back as a learner,
    started on the new (empty) directory and promoted, one at a time; the old data stays."""
    from hactl.plan.planner import build_plan
    from hactl.plan.synthetic import PROBED_AT, Synthetic

    with running_cluster(tmp_path, size=3) as lc:
        old = lc.cluster
        assert old.etcd.data_dir == "/var/lib/etcd"
        data = old.model_dump(by_alias=True, mode="json")
        data["etcd"]["dataDir"] = MOVED_DATA_DIR
        moved = Cluster.model_validate(data)
        before = {m["name"]: m["ID"] for m in json.loads(
            lc.etcdctl("member", "list", "-w", "json").stdout)["members"]}
        s = Synthetic(old).etcd()
        for host in old.etcd_members:  # what the probe sees at the new path: nothing yet
            s.etcd_facts(host.name, data_dir=MOVED_DATA_DIR, data_dir_state="absent",
                         data_dir_entries=0, data_dir_names=())
        plan = build_plan(moved, s.observed(), now=PROBED_AT)
        steps = [st for st in plan.steps() if st.id.startswith("etcd")]
        assert [st.id for st in steps] == [
            f"etcd.member[{n}].{k}" for n in ("etcd01", "etcd02", "etcd03")
            for k in ("remove", "add", "start", "promote")] + ["etcd.health"]
        lc.cluster = moved
        ctx = LoopbackCtx(moved, lc, [])
        for step in steps:
            await step.run(ctx)
            # removing the member that leads makes the others elect a new leader (etcd steps
            # the removed leader down): within a few seconds a quorum agrees on one again
            deadline = time.monotonic() + 10
            while True:
                seen = leaders(lc)
                votes = [list(seen.values()).count(leader) for leader in set(seen.values())]
                if max(votes, default=0) >= 2:
                    break
                assert time.monotonic() < deadline, (step.id, seen)
                time.sleep(0.3)
        members = json.loads(lc.etcdctl("member", "list", "-w", "json").stdout)["members"]
        assert sorted(m["name"] for m in members) == ["etcd01", "etcd02", "etcd03"]
        assert not any(m.get("isLearner") for m in members)
        assert not {m["ID"] for m in members} & set(before.values())  # three new members
        for host in moved.etcd_members:
            assert (lc.member_dir(host.name) / "data-moved" / "member").is_dir()
            assert (lc.member_dir(host.name) / "data" / "member").is_dir()  # the old data stays
        health = lc.etcdctl("endpoint", "health")
        assert health.returncode == 0, health.stderr
