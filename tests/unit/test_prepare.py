"""Host preparation (the spec's opt-in ``prepare``, issue 14 §2): the spec section, the files it
renders, the probe section that reads a host's state (in real sh, with the real dpkg-query),
the diff (a prepared host plans nothing; each missing part is one change naming what is
missing), the planner (preparation before anything else) and the step's commands."""

from __future__ import annotations

import hashlib
import subprocess
import tomllib
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from stepctx import Ctx

from hactl import hostlayout
from hactl.diff import Op, diff
from hactl.errors import CommandError, PlanError, SpecError
from hactl.facts.model import Package, PreflightFacts
from hactl.facts.prepare import PrepareState
from hactl.plan.planner import build_plan
from hactl.plan.steps.prepare_host import PrepareHost
from hactl.plan.synthetic import PROBED_AT, Synthetic
from hactl.render import prepare as render
from hactl.spec.load import load_file, load_text
from hactl.spec.models import Cluster

ROOT = Path(__file__).resolve().parents[2]
KEY = b"-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nmQINBGabc\n-----END PGP PUBLIC KEY BLOCK-----\n"


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "Release.key"
    path.write_bytes(KEY)
    return path


def prepared_spec(key_file: Path, **prepare: Any) -> Cluster:
    doc = load_file(str(ROOT / "specs" / "lab.yaml")).cluster.model_dump(
        mode="json", by_alias=True, exclude_none=True)
    doc["prepare"] = {"packages": {"keyFile": str(key_file)}, **prepare}
    return Cluster.model_validate(doc)


# -- spec and renders -----------------------------------------------------------------------


def test_the_section_is_opt_in_and_defaults_to_kubernetes_repository(key_file: Path) -> None:
    assert load_file(str(ROOT / "specs" / "lab.yaml")).cluster.prepare is None
    cluster = prepared_spec(key_file)
    assert cluster.prepare is not None
    assert cluster.prepare.repository_url((1, 30, 4)) == "https://pkgs.k8s.io/core:/stable:/v1.30/deb/"
    assert render.package_version(cluster, cluster.prepare) == "1.30.4-1.1"
    assert render.apt_source(cluster.prepare, (1, 30, 4), render.keyring_path(KEY)) == (
        "deb [signed-by=/etc/apt/keyrings/kubernetes-apt-keyring.asc] "
        "https://pkgs.k8s.io/core:/stable:/v1.30/deb/ /\n")
    assert render.keyring_path(b"\x99\x01\x0d") == hostlayout.APT_KEYRING_GPG


@pytest.mark.parametrize(("field", "value", "message"), [
    ("url", "ftp://x/", "is not an http(s) URL"),
    ("url", "http://x/ y", "is not an http(s) URL"),
    ("suite", "../x", "is not an APT suite"),
    ("revision", "1 1", "is not a Debian revision"),
])
def test_bad_repository_values_are_refused_naming_the_field(key_file: Path, field: str, value: str,
                                                           message: str) -> None:
    text = (ROOT / "specs" / "lab.yaml").read_text() + (
        f"prepare:\n  packages:\n    keyFile: {key_file}\n    {field}: {value!r}\n")
    with pytest.raises(SpecError) as caught:
        load_text(text, "spec.yaml")
    [issue] = [str(i) for i in caught.value.issues]
    assert f"prepare.packages.{field}" in issue and message in issue, issue
    assert issue.startswith(f"spec.yaml:{text.count(chr(10))}:"), issue  # file and line


def test_containerd_config_is_toml_with_the_systemd_cgroup_driver() -> None:
    config = tomllib.loads(render.containerd_config())
    runc = config["plugins"]["io.containerd.grpc.v1.cri"]["containerd"]["runtimes"]["runc"]
    assert config["version"] == 2 and runc["options"]["SystemdCgroup"] is True
    assert runc["runtime_type"] == "io.containerd.runc.v2"


# -- the probe section ----------------------------------------------------------------------


def _run_section(fact: PrepareState, root: Path, env_path: str = "") -> str:
    script = fact.script()
    for path in (*hostlayout_files(), hostlayout.FSTAB):
        script = script.replace(path, str(root) + path)
    out = subprocess.run(["sh", "-c", f"f() {{\n{script}\n}}\nf"], capture_output=True,
                         text=True, check=True, timeout=30).stdout
    return out.replace(str(root), "")  # the host's paths, as a host prints them


def hostlayout_files() -> tuple[str, ...]:
    from hactl.facts.prepare import FILES

    return FILES


def test_the_section_reads_packages_files_and_fstab_in_real_sh(tmp_path: Path) -> None:
    (tmp_path / "etc/sysctl.d").mkdir(parents=True)
    (tmp_path / hostlayout.SYSCTL_CONF.lstrip("/")).write_text(render.sysctl_conf())
    (tmp_path / "etc/fstab").write_text(
        "# /swapfile none swap sw 0 0\nUUID=1 / ext4 defaults 0 1\n/dev/vdb none swap sw 0 0\n")
    fact = PrepareState(packages=("dpkg", "no-such-package-here"))
    facts = fact.parse(_run_section(fact, tmp_path))
    assert set(facts.packages) == {"dpkg"} and facts.packages["dpkg"].version
    assert facts.files == {hostlayout.SYSCTL_CONF: hashlib.sha256(render.sysctl_conf().encode()).hexdigest()}
    assert facts.fstab_swap == ("/dev/vdb",)


def test_a_held_package_is_read_as_held() -> None:
    facts = PrepareState().parse("package\tkubelet\t1.30.4-1.1\thold ok installed\n"
                                 "package\tkubeadm\t1.30.4-1.1\tinstall ok installed\n"
                                 "package\tkubectl\t\tunknown ok not-installed\n")
    assert facts.packages == {"kubelet": Package("1.30.4-1.1", True),
                              "kubeadm": Package("1.30.4-1.1", False)}


# -- diff and planner -----------------------------------------------------------------------


def test_a_prepared_converged_cluster_plans_nothing(key_file: Path) -> None:
    cluster = prepared_spec(key_file)
    obs = Synthetic(cluster).converged().prepared(KEY).observed()
    assert diff(cluster, obs, now=PROBED_AT).effective() == ()


def test_each_missing_part_is_one_change_naming_what_is_missing(key_file: Path) -> None:
    cluster = prepared_spec(key_file)
    s = Synthetic(cluster).prepared(KEY)
    w = s.hosts["worker01"]
    assert w.prepare is not None and w.preflight is not None
    files = {k: v for k, v in w.prepare.files.items() if k != hostlayout.SYSCTL_CONF}
    s._set("worker01",
           prepare=replace(w.prepare, files=files, fstab_swap=("/swapfile",),
                           packages={"containerd": w.prepare.packages["containerd"]}),
           preflight=replace(w.preflight, ip_forward="0", swap=("/swapfile",)))
    changes = {c.address: c for c in diff(cluster, s.observed(), now=PROBED_AT).effective()
               if c.host == "worker01" and c.addr.aspect is not None}
    assert set(changes) == {"worker[worker01].kernel", "worker[worker01].swap",
                            "worker[worker01].packages"}
    assert changes["worker[worker01].kernel"].reason == (
        f"{hostlayout.SYSCTL_CONF} is missing; ip-forward is 0")
    assert "swap on (/swapfile): swapoff -a" in changes["worker[worker01].swap"].reason
    assert changes["worker[worker01].packages"].reason == (
        "install kubeadm (none) → 1.30.4-1.1, kubelet (none) → 1.30.4-1.1, kubectl (none) → 1.30.4-1.1")
    assert all(c.op is Op.UPDATE for c in changes.values())


def test_a_joined_node_at_another_version_is_not_an_install(key_file: Path) -> None:
    cluster = prepared_spec(key_file)
    s = Synthetic(cluster).converged().prepared(KEY)
    w = s.hosts["worker01"]
    assert w.prepare is not None
    other = {**w.prepare.packages, "kubelet": Package("1.30.2-1.1", True)}
    s._set("worker01", prepare=replace(w.prepare, packages=other))
    assert [c for c in diff(cluster, s.observed(), now=PROBED_AT).effective()
            if c.addr.aspect is not None and str(c.addr.aspect) == "packages"] == []


def test_preparation_runs_before_anything_else(key_file: Path) -> None:
    cluster = prepared_spec(key_file)
    s = Synthetic(cluster)
    s._set("worker01", preflight=PreflightFacts(ip_forward="0"))  # the rest: unprepared
    for name in s.hosts:
        if name.startswith(("master", "worker")):
            s._set(name, prepare=PrepareState().parse(""), preflight=PreflightFacts(ip_forward="0"))
    plan = build_plan(cluster, s.observed(), now=PROBED_AT)
    order = plan.graph.order()
    prepares = [st for st in order if isinstance(st, PrepareHost)]
    assert {st.host for st in prepares} == {h.name for h in (*cluster.masters, *cluster.workers)}
    assert set(prepares[0].parts) == {"kernel", "runtime", "packages"}
    graph = plan.graph.g
    for st in order:
        if isinstance(st, PrepareHost):
            continue
        import networkx as nx

        ancestors = nx.ancestors(graph, st.id)
        assert all(p.id in ancestors for p in prepares), f"{st.id} does not wait for preparation"


# -- the step -------------------------------------------------------------------------------


async def test_the_step_installs_holds_and_configures(key_file: Path) -> None:
    cluster = prepared_spec(key_file)
    ctx = Ctx(cluster)
    fake = ctx.transport("worker01")
    fake.on(lambda wire: True)  # every command succeeds, with no output
    fake.on(("dpkg-query",), stdout="install ok installed")
    fake.on(("ctr",), stdout="Client:\n  Version: 1.6.20\nServer:\n  Version: 1.6.20\n")
    fake.on(("cat", "/proc/swaps"), stdout="Filename\tType\tSize\tUsed\tPriority\n/swapfile file 1 0 -2\n")
    fake.on(("cat", hostlayout.FSTAB), stdout="UUID=1 / ext4 defaults 0 1\n/swapfile none swap sw 0 0\n")
    fake.on(("test",), exit_status=1)  # no module loaded yet
    step = PrepareHost(id="s", host="worker01", title="t", reason="r",
                       parts=("kernel", "swap", "runtime", "packages"), version="1.30.4-1.1",
                       keyring=hostlayout.APT_KEYRING_ASC)
    await step.run(ctx)
    argvs = [c.argv for c in fake.calls]
    assert ("sysctl", "-p", hostlayout.SYSCTL_CONF) in argvs
    assert any(a[-4:] == ("--allow-change-held-packages", "kubeadm=1.30.4-1.1", "kubelet=1.30.4-1.1",
                          "kubectl=1.30.4-1.1") for a in argvs), argvs
    assert ("apt-mark", "hold", "kubeadm", "kubelet", "kubectl") in argvs
    assert fake.files[hostlayout.APT_KEYRING_ASC] == (KEY, 0o644)
    assert fake.files[hostlayout.CONTAINERD_CONFIG][0].decode() == render.containerd_config()
    assert ("systemctl", "restart", "containerd") in argvs  # the configuration changed
    assert ("modprobe", "br_netfilter") in argvs and ("swapoff", "-a") in argvs
    assert fake.files[hostlayout.FSTAB][0].decode() == (
        "UUID=1 / ext4 defaults 0 1\n# /swapfile none swap sw 0 0  # swap off: hactl (prepare.swapOff)\n")
    # the order: kernel, swap, runtime, packages
    first = {what: next(i for i, a in enumerate(argvs) if what(a)) for what in (
        lambda a: a[:1] == ("sysctl",), lambda a: "apt-mark" in a)}
    assert list(first.values()) == sorted(first.values())


async def test_a_failing_install_names_the_command_and_apts_last_line(key_file: Path) -> None:
    cluster = prepared_spec(key_file)
    ctx = Ctx(cluster)
    fake = ctx.transport("worker01")
    fake.on(lambda wire: True)
    fake.on(lambda wire: "apt-get" in wire and "install" in wire, exit_status=100,
            stderr="E: Version '1.30.4-1.1' for 'kubeadm' was not found\n")
    with pytest.raises(CommandError, match=r"Version '1\.30\.4-1\.1' for 'kubeadm' was not found"):
        await PrepareHost(id="s", host="worker01", title="t", reason="r", parts=("packages",),
                          version="1.30.4-1.1", keyring=hostlayout.APT_KEYRING_ASC).run(ctx)


def test_the_plan_text_of_the_step_lists_its_commands() -> None:
    step = PrepareHost(id="s", host="worker01", title="t", reason="r", parts=("kernel", "packages"),
                       version="1.30.4-1.1", keyring=hostlayout.APT_KEYRING_ASC)
    text = "\n".join(step.commands())
    assert "sysctl -p /etc/sysctl.d/k8s.conf" in text and "apt-mark hold kubeadm kubelet kubectl" in text
    assert "kubeadm=1.30.4-1.1" in text and f"put {hostlayout.APT_KEYRING_ASC} 0644" in text
    assert "containerd" not in text  # not a part of this step


def test_an_unreadable_key_file_is_a_clear_error_naming_the_field(tmp_path: Path) -> None:
    cluster = prepared_spec(tmp_path / "missing.key")
    with pytest.raises(PlanError) as caught:
        build_plan(cluster, Synthetic(cluster).prepared(KEY).observed(), now=PROBED_AT)
    assert str(caught.value).startswith(f"prepare.packages.keyFile: cannot read {tmp_path / 'missing.key'}: ")
    assert "Release.key" in (caught.value.hint or "")
