"""Transport seam: argv joining and masking, FakeTransport, and the concurrency helper."""

from __future__ import annotations

import asyncio
import re
import subprocess
from pathlib import Path

import pytest

from hactl import log
from hactl.concurrency import ManyErrors, gather_each, parallel_each
from hactl.errors import CommandError, UnreachableError
from hactl.sensitive import Sensitive
from hactl.transport.base import (
    Result,
    display_command,
    put_script,
    wire_command,
    with_sudo,
)
from hactl.transport.fake import FakeTransport

TOKEN = Sensitive("abcdef.0123456789abcdef")


def test_argv_is_joined_only_for_the_wire_and_masked_for_display() -> None:
    argv = ("kubeadm", "join", "lb:6443", "--token", TOKEN, "--x", "a b")
    assert wire_command(argv) == "kubeadm join lb:6443 --token abcdef.0123456789abcdef --x 'a b'"
    assert display_command(argv) == "kubeadm join lb:6443 --token '(sensitive value)' --x 'a b'"
    assert "0123456789abcdef" not in display_command(argv)
    script = "echo one\necho two\n"
    assert wire_command(script) == script
    assert display_command(script) == f"sh script ({len(script)} bytes): echo one"


def test_sudo_only_for_non_root() -> None:
    assert with_sudo(("id",), "root") == ("id",)
    assert with_sudo(("id",), "admin") == ("sudo", "-n", "--", "id")
    assert with_sudo("echo x", "admin") == ("sudo", "-n", "sh", "-c", "echo x")


def test_put_script_is_atomic_and_quoted() -> None:
    text = put_script("/etc/my dir/f.conf", 0o600)
    assert "t='/etc/my dir/f.conf.hactl-tmp'.$$;" in text  # this shell's own temporary file
    assert 'cat > "$t"' in text and "trap 'rm -f \"$t\"' EXIT" in text
    assert 'chmod 600 "$t"' in text and "mv -f \"$t\" '/etc/my dir/f.conf'" in text


@pytest.mark.parametrize("sent", [b"hello\n", b"hel", b""], ids=["whole", "cut", "nothing"])
def test_put_script_installs_only_a_file_that_arrived_whole(tmp_path: Path, sent: bytes) -> None:
    # hactl killed (or its connection lost) mid-transfer: cat sees an early end of input. A cut
    # file must never replace the installed one, nor be left behind.
    target = tmp_path / "my dir" / "f.conf"
    target.parent.mkdir()
    target.write_bytes(b"old\n")
    done = subprocess.run(["/bin/sh", "-c", put_script(str(target), 0o640, len(b"hello\n"))],
                          input=sent, capture_output=True, check=False)
    assert sorted(p.name for p in target.parent.iterdir()) == ["f.conf"]
    if sent == b"hello\n":
        assert done.returncode == 0 and target.read_bytes() == sent
        assert target.stat().st_mode & 0o777 == 0o640
    else:
        assert done.returncode == 1 and target.read_bytes() == b"old\n"
        assert f"{len(sent)} of 6 bytes arrived; not installed" in done.stderr.decode()


async def test_fake_matches_prefix_regex_and_predicate_newest_first() -> None:
    fake = FakeTransport("h1")
    fake.on(("etcdctl", "member"), stdout="old")
    fake.on(("etcdctl", "member", "list"), stdout="members")
    fake.on(re.compile(r"^systemctl is-active"), stdout="active\n")
    fake.on(lambda wire: wire.startswith("echo"), respond=lambda call: Result(0, call.wire, ""))
    assert (await fake.run(("etcdctl", "member", "list", "-w", "json"))).stdout == "members"
    assert (await fake.run(("etcdctl", "member", "remove", "1"))).stdout == "old"
    assert (await fake.run(("systemctl", "is-active", "etcd"))).stdout == "active\n"
    assert (await fake.run("echo hi")).stdout == "echo hi"
    unknown = await fake.run(("nope",), check=False)
    assert unknown.exit_status == 127
    assert [c.argv[0] for c in fake.calls] == ["etcdctl", "etcdctl", "systemctl", "sh", "nope"]


async def test_fake_records_masked_argv_and_raises_masked_command_errors() -> None:
    fake = FakeTransport("m1").on(
        ("kubeadm",), stderr="bad token abcdef.0123456789abcdef\n", exit_status=1
    )
    with pytest.raises(CommandError) as info:
        await fake.run(("kubeadm", "join", "--token", TOKEN), stdin="data")
    err = info.value
    assert err.host == "m1" and err.exit_status == 1
    for text in (str(err), err.stderr, " ".join(err.argv), repr(fake.calls[0].argv)):
        assert "0123456789abcdef" not in text
    assert fake.calls[0].stdin == b"data"
    assert "0123456789abcdef" in fake.calls[0].wire  # what the wire would carry


async def test_fake_strict_fail_with_put_and_close() -> None:
    strict = FakeTransport("s", strict=True)
    with pytest.raises(AssertionError):
        await strict.run(("ls",))
    down = FakeTransport("d", fail_with=UnreachableError("gone", host="d"))
    with pytest.raises(UnreachableError):
        await down.run(("ls",))
    fake = FakeTransport("p")
    await fake.put("/etc/x", b"1", 0o600)
    assert fake.files == {"/etc/x": (b"1", 0o600)}
    await fake.aclose()
    with pytest.raises(RuntimeError):
        await fake.run(("ls",))


async def test_parallel_each_bounds_concurrency_and_keeps_order() -> None:
    running = peak = 0

    async def work(n: int) -> int:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.01 * (5 - n % 5))
        running -= 1
        return n * n

    out = await parallel_each(range(12), work, limit=3, name=lambda n: f"h{n:02d}")
    assert peak == 3
    assert list(out) == [f"h{n:02d}" for n in range(12)]
    assert out["h04"] == 16


async def test_failures_do_not_cancel_the_others_and_are_reported_together() -> None:
    done: list[str] = []

    async def work(name: str) -> str:
        await asyncio.sleep(0.01)
        if name in {"b", "c"}:
            raise UnreachableError(f"{name} is down", host=name)
        done.append(name)
        return name

    with pytest.raises(ManyErrors) as info:
        await parallel_each(["a", "b", "c", "d"], work, limit=4)
    assert sorted(done) == ["a", "d"]
    assert set(info.value.errors) == {"b", "c"} and info.value.transient
    assert "b: b is down" in str(info.value) and "c: c is down" in str(info.value)
    with pytest.raises(UnreachableError):  # a single failure is raised as itself
        await parallel_each(["a", "b"], work, limit=2)
    mixed = await gather_each(["a", "b"], work, limit=2)
    assert mixed["a"] == "a" and isinstance(mixed["b"], UnreachableError)


async def test_each_task_logs_with_its_host_bound() -> None:
    seen: dict[str, object] = {}

    async def work(name: str) -> None:
        await asyncio.sleep(0)
        seen[name] = log.bound().get("host")

    await parallel_each(["etcd01", "lb01"], work, limit=2)
    assert seen == {"etcd01": "etcd01", "lb01": "lb01"}
    assert "host" not in log.bound()


def test_ssh_targets_resolve_defaults_overrides_and_paths() -> None:
    from hactl.spec.models import Cluster
    from hactl.transport.ssh import parse_bastion, resolve_target

    cluster = Cluster.model_validate(
        {
            "apiVersion": "hactl.dev/v1alpha1",
            "kind": "Cluster",
            "metadata": {"name": "t"},
            "controlPlaneEndpoint": "lb.example.com:6443",
            "kubernetes": {"version": "1.30.4"},
            "loadBalancer": {"hosts": [{"name": "lb01", "address": "10.0.0.10"}]},
            "masters": [
                {"name": "master01", "address": "10.0.0.11"},
                {
                    "name": "master02",
                    "address": "10.0.0.12",
                    "ssh": {"user": "admin", "port": 2222, "bastion": "", "identityFile": "/k"},
                },
            ],
            "ssh": {
                "identityFile": "keys/id",
                "knownHostsFile": "kh",
                "bastion": "jump@bastion.example.com:2200",
                "connectTimeout": 3,
            },
        }
    )
    one = resolve_target(cluster, cluster.masters[0], "/specs")
    assert (one.user, one.port, one.identity_file, one.known_hosts_file) == (
        "root",
        22,
        "/specs/keys/id",
        "/specs/kh",
    )
    assert one.bastion == "jump@bastion.example.com:2200" and one.connect_timeout == 3.0
    two = resolve_target(cluster, cluster.masters[1], "/specs")
    assert (two.user, two.port, two.identity_file, two.bastion) == ("admin", 2222, "/k", None)
    assert two.where == "admin@[10.0.0.12]:2222"
    assert parse_bastion("jump@bastion:2200", "root") == ("jump", "bastion", 2200)
    assert parse_bastion("bastion", "root") == ("root", "bastion", 22)
    assert parse_bastion("[fd00::1]:22", "me") == ("me", "fd00::1", 22)
