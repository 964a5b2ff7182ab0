"""The lab's package repositories (hactl/lab/pkgrepo.py), built in a temp dir and judged by the
real tools: dpkg-deb, gpgv, gpg and apt-get (against a private apt state, never the machine's)."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import urllib.request
from pathlib import Path

import pytest

from hactl.lab import pkgrepo
from hactl.lab.image import REPO_ROOT
from hactl.lab.nodeinit import IN_NODE_SRC

pytestmark = pytest.mark.skipif(
    not all(shutil.which(t) for t in ("dpkg-deb", "gpg", "gpgv", "apt-get")),
    reason="needs Debian's dpkg-deb, gpg, gpgv and apt-get",
)


_DEBIAN_ERROR: list[str] = []


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> pkgrepo.Repo:
    """Both minors and, when the machine's apt cache has Debian's files, the Debian mirror (a
    test that needs the mirror fails with the reason when it could not be built)."""
    root = tmp_path_factory.mktemp("pkgrepo")
    os.chmod(root, 0o755)
    built = pkgrepo.Repo(root / "repo", debian=())
    built.build()
    built.debian = pkgrepo.DEBIAN_PACKAGES
    try:
        built._build_debian(built.signer)
    except RuntimeError as exc:
        _DEBIAN_ERROR.append(str(exc))
    return built


def _needs_mirror() -> None:
    if _DEBIAN_ERROR:
        pytest.fail(f"the Debian mirror could not be built: {_DEBIAN_ERROR[0]}")


def _info(deb: Path) -> dict[str, str]:
    out = subprocess.run(["dpkg-deb", "--field", str(deb)], capture_output=True, text=True, check=True).stdout
    return {m.group(1): m.group(2) for m in re.finditer(r"^([A-Za-z-]+): (.*)$", out, re.M)}


def _contents(deb: Path) -> dict[str, tuple[str, str]]:
    """path → (mode string, owner/group) of every entry."""
    out = subprocess.run(["dpkg-deb", "--contents", str(deb)], capture_output=True, text=True, check=True).stdout
    rows = {}
    for line in out.splitlines():
        parts = line.split()
        rows[parts[5].lstrip(".").rstrip("/") or "/"] = (parts[0], parts[1])
    return rows


def _extract(deb: Path, into: Path) -> Path:
    subprocess.run(["dpkg-deb", "-x", str(deb), str(into)], check=True)
    return into


# -- packages ---------------------------------------------------------------------------------


@pytest.mark.parametrize("minor", list(pkgrepo.RELEASES))
def test_every_package_has_the_real_control_fields_and_root_owned_files(repo: pkgrepo.Repo, minor: str) -> None:
    amd64 = repo.flat_dir(minor) / "amd64"
    for version in pkgrepo.RELEASES[minor]:
        pv = f"{version}-1.1"
        for name in ("kubeadm", "kubelet", "kubectl"):
            deb = amd64 / f"{name}_{pv}_amd64.deb"
            info = _info(deb)
            assert info["Package"] == name and info["Version"] == pv
            assert info["Architecture"] == "amd64"
            assert info["Maintainer"] == "Kubernetes Authors <dev@kubernetes.io>"
            assert info["Homepage"] == "https://kubernetes.io"
            for path, (_mode, owner) in _contents(deb).items():
                assert owner == "root/root", (deb.name, path, owner)
        kubeadm = _info(amd64 / f"kubeadm_{pv}_amd64.deb")
        kubelet = _info(amd64 / f"kubelet_{pv}_amd64.deb")
        if minor == "v1.29":  # krel metadata ">= 1.28.0 < 1.30.0"
            assert kubeadm["Depends"] == (
                "kubelet (>= 1.19.0),kubectl (>= 1.19.0),kubernetes-cni (>= 1.2.0),cri-tools (>= 1.28.0)"
            )
        else:  # ">= 1.30.0": only cri-tools
            assert kubeadm["Depends"] == "cri-tools (>= 1.30.0)"
        assert kubelet["Depends"] == (
            "iptables (>= 1.4.21),kubernetes-cni (>= 1.2.0),iproute2,mount,socat,util-linux,conntrack"
        )
        assert "Depends" not in _info(amd64 / f"kubectl_{pv}_amd64.deb")
    assert _info(amd64 / f"cri-tools_{pkgrepo.CRI_TOOLS[minor]}-1.1_amd64.deb")["Package"] == "cri-tools"
    cni = amd64 / f"kubernetes-cni_{pkgrepo.KUBERNETES_CNI[minor]}-1.1_amd64.deb"
    assert {"/opt/cni/bin/bridge", "/opt/cni/bin/loopback", "/etc/cni/net.d/.kubernetes-cni-keep"} <= set(_contents(cni))


def test_what_each_package_installs(repo: pkgrepo.Repo, tmp_path: Path) -> None:
    amd64 = repo.flat_dir("v1.30") / "amd64"
    kubelet = _contents(amd64 / "kubelet_1.30.4-1.1_amd64.deb")
    assert kubelet["/usr/bin/kubelet"][0] == "-rwxr-xr-x"
    assert kubelet["/usr/lib/systemd/system/kubelet.service"][0] == "-rw-r--r--"
    assert {"/etc/default/kubelet", "/var/lib/kubelet/.kubelet-keep", "/etc/kubernetes/manifests/.kubelet-keep"} <= set(kubelet)
    kubeadm = _contents(amd64 / "kubeadm_1.30.4-1.1_amd64.deb")
    assert kubeadm["/usr/bin/kubeadm"][0] == "-rwxr-xr-x"
    assert "/usr/lib/systemd/system/kubelet.service.d/10-kubeadm.conf" in kubeadm  # kubeadm ships the drop-in

    root = _extract(amd64 / "kubelet_1.30.4-1.1_amd64.deb", tmp_path / "kubelet")
    unit = (root / "usr/lib/systemd/system/kubelet.service").read_text()
    assert "ExecStart=/usr/bin/kubelet\n" in unit and "WantedBy=multi-user.target" in unit
    assert (root / "etc/default/kubelet").read_text() == "KUBELET_EXTRA_ARGS=\n"
    shim = (root / "usr/bin/kubelet").read_text()
    assert "HACTL_LAB_BINARY_VERSION=v1.30.4 " in shim
    assert f"PYTHONPATH={IN_NODE_SRC} exec /usr/bin/python3 -m hactl.lab.standins.kubelet" in shim
    conffiles = subprocess.run(
        ["dpkg-deb", "--info", str(amd64 / "kubelet_1.30.4-1.1_amd64.deb"), "conffiles"],
        capture_output=True, text=True, check=True,
    ).stdout
    assert conffiles == "/etc/default/kubelet\n"

    root = _extract(amd64 / "kubeadm_1.30.4-1.1_amd64.deb", tmp_path / "kubeadm")
    dropin = (root / "usr/lib/systemd/system/kubelet.service.d/10-kubeadm.conf").read_text()
    assert "EnvironmentFile=-/etc/default/kubelet" in dropin  # debbuild's sed of /etc/sysconfig
    assert "ExecStart=\nExecStart=/usr/bin/kubelet $KUBELET_KUBECONFIG_ARGS $KUBELET_CONFIG_ARGS" in dropin


def test_kubectl_answers_its_package_version_and_runs_the_real_kubectl(repo: pkgrepo.Repo, tmp_path: Path) -> None:
    if not shutil.which("kubectl"):
        pytest.fail("kubectl is missing (Makefile: kubernetes-client)")
    root = _extract(repo.flat_dir("v1.29") / "amd64" / "kubectl_1.29.7-1.1_amd64.deb", tmp_path / "kubectl")
    wrapper = str(root / "usr/bin/kubectl")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([wrapper, *args], capture_output=True, text=True, timeout=60, check=False)

    out = run("version", "--client")
    assert out.returncode == 0 and out.stdout.splitlines()[0] == "Client Version: v1.29.7"
    doc = json.loads(run("version", "--client", "-o", "json").stdout)
    assert doc["clientVersion"]["gitVersion"] == "v1.29.7" and doc["clientVersion"]["minor"] == "29"
    assert "gitVersion: v1.29.7" in run("version", "--client", "-o", "yaml").stdout
    real = run("config", "view", "--kubeconfig", "/dev/null", "-o", "json")  # the real tool answers
    assert real.returncode == 0 and json.loads(real.stdout)["kind"] == "Config"


def test_packaged_kubeadm_and_kubelet_report_the_package_version(repo: pkgrepo.Repo, tmp_path: Path) -> None:
    amd64 = repo.flat_dir("v1.29") / "amd64"
    for name, argv, want in (("kubeadm", ["version", "-o", "short"], "v1.29.7"),
                             ("kubelet", ["--version"], "Kubernetes v1.29.7")):
        root = _extract(amd64 / f"{name}_1.29.7-1.1_amd64.deb", tmp_path / name)
        shim = (root / f"usr/bin/{name}").read_text().replace(IN_NODE_SRC, REPO_ROOT)
        out = subprocess.run(["/bin/sh", "-c", shim, name, *argv], capture_output=True, text=True,
                             timeout=60, check=False, env={"PATH": "/usr/bin:/bin", "HACTL_LAB_ROOT": str(tmp_path)})
        assert out.stdout.strip() == want, (name, out.stdout, out.stderr)


def test_the_lab_systemctl_runs_the_packaged_unit_with_kubeadms_drop_in(
    repo: pkgrepo.Repo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hactl.lab import units

    amd64 = repo.flat_dir("v1.30") / "amd64"
    for name in ("kubelet", "kubeadm"):
        _extract(amd64 / f"{name}_1.30.4-1.1_amd64.deb", tmp_path)
    monkeypatch.setattr(units, "UNIT_DIRS", (str(tmp_path / "etc/systemd/system"), str(tmp_path / "usr/lib/systemd/system")))
    unit = units.load("kubelet.service")
    assert unit.path == str(tmp_path / "usr/lib/systemd/system/kubelet.service")
    assert unit.get("Service", "Restart") == "always" and unit.get("Service", "RestartSec") == "10"
    assert unit.getlist("Install", "WantedBy") == ["multi-user.target"]
    assert unit.getlist("Service", "EnvironmentFile") == ["-/var/lib/kubelet/kubeadm-flags.env", "-/etc/default/kubelet"]
    (start,) = unit.getlist("Service", "ExecStart")  # the drop-in's `ExecStart=` reset the unit's
    env: dict[str, str] = {}
    for value in unit.getlist("Service", "Environment"):
        env.update(units.parse_env_assignments(value))
    env.update(units.read_env_file(str(tmp_path / "etc/default/kubelet")))
    env["KUBELET_KUBEADM_ARGS"] = "--container-runtime-endpoint=unix:///var/run/containerd/containerd.sock"
    assert units.parse_command(start, env).argv == [
        "/usr/bin/kubelet", "--bootstrap-kubeconfig=/etc/kubernetes/bootstrap-kubelet.conf",
        "--kubeconfig=/etc/kubernetes/kubelet.conf", "--config=/var/lib/kubelet/config.yaml",
        "--container-runtime-endpoint=unix:///var/run/containerd/containerd.sock",
    ]


# -- indexes and signatures --------------------------------------------------------------------


def _release_entries(release: Path) -> dict[str, dict[str, tuple[str, int]]]:
    section = ""
    entries: dict[str, dict[str, tuple[str, int]]] = {}
    for line in release.read_text().splitlines():
        if not line.startswith(" "):
            section = line.split(":")[0]
            continue
        digest, size, name = line.split()
        entries.setdefault(section, {})[name] = (digest, int(size))
    return entries


@pytest.mark.parametrize("where", ["v1.29", "v1.30", "debian"])
def test_release_lists_every_index_with_matching_hashes(repo: pkgrepo.Repo, where: str) -> None:
    if where == "debian":
        _needs_mirror()
    base = repo.www / "debian/dists/bookworm" if where == "debian" else repo.flat_dir(where)
    entries = _release_entries(base / "Release")
    assert set(entries) == {"MD5Sum", "SHA1", "SHA256", "SHA512"}
    for section, algo in (("MD5Sum", "md5"), ("SHA1", "sha1"), ("SHA256", "sha256"), ("SHA512", "sha512")):
        assert len(entries[section]) == 2
        for name, (digest, size) in entries[section].items():
            data = (base / name).read_bytes()
            assert (hashlib.new(algo, data).hexdigest(), len(data)) == (digest, size), (section, name)
    packages = next(p for p in entries["SHA256"] if p.endswith("Packages"))
    plain = (base / packages).read_bytes()
    assert gzip.decompress((base / (packages + ".gz")).read_bytes()) == plain
    # every stanza's file exists with its size and SHA-256
    top = repo.www / "debian" if where == "debian" else base
    stanzas = [s for s in plain.decode().split("\n\n") if s.strip()]
    assert stanzas
    for text in stanzas:
        rec = dict(line.split(": ", 1) for line in text.splitlines() if not line.startswith(" "))
        data = (top / rec["Filename"]).read_bytes()
        assert int(rec["Size"]) == len(data) and rec["SHA256"] == hashlib.sha256(data).hexdigest()


def test_flat_repository_layout_and_order_of_fields(repo: pkgrepo.Repo) -> None:
    flat = repo.flat_dir("v1.30")
    assert str(flat).endswith("www/core:/stable:/v1.30/deb")
    assert {"Release", "InRelease", "Release.gpg", "Release.key", "Packages", "Packages.gz", "amd64"} <= set(os.listdir(flat))
    stanza = next(s for s in (flat / "Packages").read_text().split("\n\n") if "Package: kubeadm\nVersion: 1.30.4-1.1" in s)
    keys = [line.split(":")[0] for line in stanza.splitlines() if not line.startswith(" ")]
    assert keys == ["Package", "Version", "Architecture", "Maintainer", "Installed-Size", "Depends", "Filename",
                    "Size", "MD5sum", "SHA1", "SHA256", "Section", "Priority", "Homepage", "Description"]
    assert "Filename: amd64/kubeadm_1.30.4-1.1_amd64.deb" in stanza


def test_inrelease_and_release_gpg_verify_with_gpgv_against_the_exported_key(repo: pkgrepo.Repo, tmp_path: Path) -> None:
    _needs_mirror()
    for base in (repo.flat_dir("v1.29"), repo.flat_dir("v1.30"), repo.www / "debian/dists/bookworm"):
        good = subprocess.run(["gpgv", "--keyring", str(repo.keyring), str(base / "InRelease")],
                              capture_output=True, text=True, check=False)
        assert good.returncode == 0 and "Good signature" in good.stderr, good.stderr
        detached = subprocess.run(
            ["gpgv", "--keyring", str(repo.keyring), str(base / "Release.gpg"), str(base / "Release")],
            capture_output=True, text=True, check=False,
        )
        assert detached.returncode == 0, detached.stderr
    # Release.key is what users `gpg --dearmor` into the keyring file
    dearmored = subprocess.run(
        ["gpg", "--dearmor"], input=(repo.flat_dir("v1.30") / "Release.key").read_bytes(),
        capture_output=True, check=True, env={"GNUPGHOME": str(tmp_path), "PATH": "/usr/bin:/bin"},
    ).stdout
    assert dearmored == repo.keyring.read_bytes()
    # and the key lives only in the repository's own GNUPGHOME
    assert (repo.root / "gnupg" / "pubring.kbx").exists()
    assert os.stat(repo.root / "gnupg").st_mode & 0o077 == 0


def test_tampered_release_fails_gpgv(repo: pkgrepo.Repo, tmp_path: Path) -> None:
    text = (repo.flat_dir("v1.30") / "InRelease").read_text()
    digest = hashlib.sha256((repo.flat_dir("v1.30") / "Packages").read_bytes()).hexdigest()
    forged = tmp_path / "InRelease"
    forged.write_text(text.replace(digest, "0" * 64))
    bad = subprocess.run(["gpgv", "--keyring", str(repo.keyring), str(forged)], capture_output=True, text=True, check=False)
    assert bad.returncode != 0 and "BAD signature" in bad.stderr
    other = tmp_path / "other.gpg"
    other.write_bytes(b"")
    unknown = subprocess.run(["gpgv", "--keyring", str(other), str(repo.flat_dir("v1.30") / "InRelease")],
                             capture_output=True, text=True, check=False)
    assert unknown.returncode != 0 and "No public key" in unknown.stderr


# -- apt against the served repositories -------------------------------------------------------


class Apt:
    """apt-get/apt-cache with a private state (lists, cache, sources); dpkg status: a copy."""

    def __init__(self, root: Path, status: Path) -> None:
        """``status``: the dpkg status apt reads, as a bare lab node has it (the machine's,
        without the Kubernetes packages and the runtime: :func:`pkgrepo.bare_dpkg_status`)."""
        self.root = root
        for sub in ("etc/sources.list.d", "etc/preferences.d", "etc/apt.conf.d", "etc/trusted.gpg.d",
                    "lists/partial", "cache/archives/partial"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        (root / "status").write_text(pkgrepo.bare_dpkg_status(status.read_text()))
        self.opts = [
            "-o", f"Dir::Etc={root}/etc", "-o", f"Dir::State::Lists={root}/lists",
            "-o", f"Dir::Cache={root}/cache", "-o", f"Dir::State::status={root}/status",
            "-o", "APT::Sandbox::User=root", "-o", "Debug::NoLocking=1", "-o", "Acquire::Retries=0",
        ]

    def sources(self, text: str) -> None:
        (self.root / "etc/sources.list").write_text(text)

    def __call__(self, tool: str, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([tool, *self.opts, *args], capture_output=True, text=True, timeout=180,
                              check=False, env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C"})


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture()
def served(repo: pkgrepo.Repo):  # type: ignore[no-untyped-def]
    port = _free_port()
    pid = repo.serve("127.0.0.1", port)
    try:
        yield f"http://127.0.0.1:{port}", pid
    finally:
        repo.stop()


def test_server_listens_on_the_one_address_and_stops_by_pid(repo: pkgrepo.Repo, served: tuple[str, int]) -> None:
    url, pid = served
    port = int(url.rsplit(":", 1)[1])
    listeners = subprocess.run(["ss", "-Hltn", f"sport = :{port}"], capture_output=True, text=True, check=True).stdout
    assert [line.split()[3] for line in listeners.splitlines()] == [f"127.0.0.1:{port}"]
    with urllib.request.urlopen(f"{url}/core:/stable:/v1.30/deb/InRelease", timeout=5) as resp:
        assert resp.read() == (repo.flat_dir("v1.30") / "InRelease").read_bytes()
    assert repo.serve("127.0.0.1", port) == pid  # already running: kept
    repo.stop()
    assert not os.path.exists(f"/proc/{pid}") and repo.server_pid() is None


def test_apt_installs_the_documented_way_from_the_served_repositories(
    repo: pkgrepo.Repo, served: tuple[str, int], tmp_path: Path
) -> None:
    _needs_mirror()
    url, _pid = served
    keyring = tmp_path / "kubernetes-apt-keyring.gpg"
    shutil.copyfile(repo.keyring, keyring)
    apt = Apt(tmp_path / "apt", Path("/var/lib/dpkg/status"))
    apt.sources(repo.sources_line(url, "v1.30").replace(pkgrepo.KEYRING, str(keyring)))
    (apt.root / "etc/sources.list.d/debian.sources").write_text(
        repo.debian_sources(url).replace(pkgrepo.DEBIAN_KEYRING, str(keyring))
    )
    update = apt("apt-get", "update")
    assert update.returncode == 0, update.stdout + update.stderr
    assert "core:/stable:/v1.30/deb  InRelease" in update.stdout
    policy = apt("apt-cache", "policy", "kubeadm").stdout
    assert re.findall(r"^\s+(1\.30\.\d-1\.1) 500$", policy, re.M) == ["1.30.4-1.1", "1.30.3-1.1", "1.30.2-1.1"]
    got = apt("apt-get", "install", "--download-only", "-y", "kubeadm=1.30.4-1.1", "kubelet=1.30.4-1.1",
              "kubectl=1.30.4-1.1")
    assert got.returncode == 0, got.stdout + got.stderr
    fetched = set(os.listdir(tmp_path / "apt/cache/archives"))
    assert {"kubeadm_1.30.4-1.1_amd64.deb", "kubelet_1.30.4-1.1_amd64.deb", "kubectl_1.30.4-1.1_amd64.deb",
            "cri-tools_1.30.0-1.1_amd64.deb", "kubernetes-cni_1.4.0-1.1_amd64.deb"} <= fetched
    runtime = apt("apt-get", "install", "--download-only", "-y", "containerd")
    assert runtime.returncode == 0, runtime.stdout + runtime.stderr
    fetched = set(os.listdir(tmp_path / "apt/cache/archives"))
    assert {os.path.basename(d.path) for d in pkgrepo.debian_debs(("containerd", "runc"))} <= fetched


def test_the_documented_install_and_hold_run_against_the_repositories(repo: pkgrepo.Repo, tmp_path: Path) -> None:
    """``apt-get install -y kubeadm=… kubelet=… kubectl=… && apt-mark hold …`` for real, with
    dpkg working in a private root (``--root``): every package unpacked and configured there,
    the three held, the machine's /usr untouched."""
    _needs_mirror()
    target = tmp_path / "host"
    for sub in ("info", "updates", "triggers", "alternatives"):
        (target / "var/lib/dpkg" / sub).mkdir(parents=True)
    (target / "var/lib/dpkg/available").touch()
    apt = Apt(tmp_path / "apt", Path("/var/lib/dpkg/status"))
    (target / "var/lib/dpkg/status").write_text((apt.root / "status").read_text())
    apt.opts = [o if not o.startswith("Dir::State::status=") else f"Dir::State::status={target}/var/lib/dpkg/status"
                for o in apt.opts]
    apt.opts += ["-o", f"DPkg::Options::=--root={target}", "-o", "DPkg::Options::=--force-script-chrootless"]
    apt.sources(
        repo.sources_line(f"file:{repo.www}", "v1.30").replace(pkgrepo.KEYRING, str(repo.keyring))
        + f"deb [signed-by={repo.keyring}] file:{repo.www}/debian {pkgrepo.DEBIAN_SUITE} main\n"
    )
    assert apt("apt-get", "update").returncode == 0
    installed = apt("apt-get", "install", "-y", "kubeadm=1.30.4-1.1", "kubelet=1.30.4-1.1", "kubectl=1.30.4-1.1")
    assert installed.returncode == 0, installed.stdout + installed.stderr
    for name in ("kubeadm", "kubelet", "kubectl", "cri-tools", "kubernetes-cni", "socat"):
        assert f"Setting up {name} (" in installed.stdout
    held = apt("apt-mark", "hold", "kubeadm", "kubelet", "kubectl")
    assert held.returncode == 0 and "kubelet set on hold." in held.stdout, held.stdout + held.stderr
    listing = subprocess.run(["dpkg", f"--root={target}", "-l", "kubeadm", "kubelet", "kubectl", "cri-tools"],
                             capture_output=True, text=True, check=True).stdout
    rows = {line.split()[1]: (line.split()[0], line.split()[2]) for line in listing.splitlines() if line[:2] in ("hi", "ii")}
    assert rows == {"kubeadm": ("hi", "1.30.4-1.1"), "kubelet": ("hi", "1.30.4-1.1"),
                    "kubectl": ("hi", "1.30.4-1.1"), "cri-tools": ("ii", "1.30.0-1.1")}
    assert (target / "usr/lib/systemd/system/kubelet.service.d/10-kubeadm.conf").is_file()
    version = subprocess.run([str(target / "usr/bin/kubectl"), "version", "--client"], capture_output=True, text=True,
                             check=False)
    assert version.stdout.startswith("Client Version: v1.30.4\n")
    # changing a held package is refused, as on a real host
    refused = apt("apt-get", "install", "-y", "--allow-downgrades", "kubeadm=1.30.3-1.1")
    assert refused.returncode == 100
    assert "E: Held packages were changed and -y was used without --allow-change-held-packages." in refused.stderr


def test_apt_refuses_a_tampered_packages_file_and_a_forged_release(
    repo: pkgrepo.Repo, tmp_path: Path
) -> None:
    copy = pkgrepo.Repo(tmp_path / "copy")
    shutil.copytree(repo.www, copy.www)
    flat = copy.flat_dir("v1.30")
    apt = Apt(tmp_path / "apt", Path("/var/lib/dpkg/status"))
    apt.sources(f"deb [signed-by={repo.keyring}] file:{flat}/ /\n")
    text = (flat / "Packages").read_text().replace("Version: 1.30.4-1.1", "Version: 1.30.9-1.1")
    (flat / "Packages").write_text(text)
    (flat / "Packages.gz").write_bytes(gzip.compress(text.encode(), mtime=0))
    tampered = apt("apt-get", "update")
    assert tampered.returncode == 100
    assert re.search(r"E: Failed to fetch file:\S+/Packages\.gz\s+(Hash Sum mismatch|File has unexpected size)",
                     tampered.stderr), tampered.stderr
    assert "1.30.9" not in apt("apt-cache", "policy", "kubeadm").stdout

    inrelease = (flat / "InRelease").read_text().replace("Label: isv:kubernetes", "Label: isv:evil")
    (flat / "InRelease").write_text(inrelease)
    (flat / "Release").unlink()
    forged = apt("apt-get", "update")
    assert forged.returncode == 100
    assert "The following signatures were invalid: BADSIG" in forged.stderr
    assert "is not signed." in forged.stderr


def test_ensure_builds_once_per_inputs(tmp_path: Path) -> None:
    repo = pkgrepo.Repo(tmp_path / "r", minors=("v1.30",), debian=())
    assert repo.ensure() is True
    key = repo.signer.fingerprint()
    signed = (repo.flat_dir("v1.30") / "InRelease").read_bytes()
    assert repo.ensure() is False
    assert (repo.flat_dir("v1.30") / "InRelease").read_bytes() == signed
    repo.stamp.write_text("something else\n")
    assert repo.ensure() is True
    assert repo.signer.fingerprint() == key  # the key was kept, not regenerated


def test_bare_dpkg_status_drops_only_the_named_packages() -> None:
    status = (
        "Package: kubectl\nStatus: install ok installed\nVersion: 1:528.0.0-0\n\n"
        "Package: iptables\nStatus: install ok installed\nVersion: 1.8.9-2\n\n"
        "Package: runc\nStatus: install ok installed\nVersion: 1.1.5\n"
    )
    assert pkgrepo.bare_dpkg_status(status) == "Package: iptables\nStatus: install ok installed\nVersion: 1.8.9-2\n"


def test_debian_mirror_holds_debians_own_files(repo: pkgrepo.Repo) -> None:
    _needs_mirror()
    stanzas = (repo.www / "debian/dists/bookworm/main/binary-amd64/Packages").read_text().split("\n\n")
    names = {re.search(r"^Package: (\S+)", s, re.M).group(1) for s in stanzas if s.strip()}  # type: ignore[union-attr]
    assert names == set(pkgrepo.DEBIAN_PACKAGES)
    for deb in pkgrepo.debian_debs():
        shown = subprocess.run(["apt-cache", "show", f"{deb.name}={deb.version}"], capture_output=True, text=True,
                               check=True).stdout
        assert f"SHA256: {deb.sha256}" in shown
        served = next((repo.www / "debian/pool").rglob(os.path.basename(deb.path)))
        assert hashlib.sha256(served.read_bytes()).hexdigest() == deb.sha256
