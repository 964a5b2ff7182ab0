"""The lab's Debian package repositories: pkgs.k8s.io and a Debian mirror, on the lab network.

Issue 14 §2: hosts are prepared by ``apt-get install kubeadm=1.30.4-1.1 …`` from the repository
the spec names. In the lab that runs for real against repositories laid out and signed like the
real ones (docs/lab-packages.md):

- ``/core:/stable:/v1.29/deb/`` and ``/core:/stable:/v1.30/deb/``: one **flat** repository per
  Kubernetes minor, as pkgs.k8s.io serves them (``deb [signed-by=…] URL /``): ``Release``,
  ``InRelease`` (clearsigned), ``Release.gpg`` (detached), ``Release.key`` (the armored public key
  users ``gpg --dearmor`` into ``/etc/apt/keyrings/kubernetes-apt-keyring.gpg``), ``Packages``,
  ``Packages.gz`` and ``amd64/<name>_<version>_amd64.deb``. Packages ``kubeadm``, ``kubelet``,
  ``kubectl`` at three patch releases each (:data:`RELEASES`, package revision ``-1.1``), plus
  ``cri-tools`` and ``kubernetes-cni``, with the control fields and dependencies of the real
  packages (``kubernetes/release``, ``cmd/krel/templates/latest`` as of mid-2024), built with
  ``dpkg-deb``. What they install is the lab's stand-ins: ``/usr/bin/kubeadm`` and
  ``/usr/bin/kubelet`` are shims for ``python3 -m hactl.lab.standins.<x>`` with the package's
  version in ``HACTL_LAB_BINARY_VERSION``; ``/usr/bin/kubectl`` runs the machine's real kubectl
  (the same minor when the machine has it) and answers ``version --client`` with its package's
  version.
- ``/debian/``: a partial mirror of Debian bookworm (``dists/bookworm/main/binary-amd64``,
  ``pool/main/…``) holding Debian's own ``.deb`` files of the container runtime (``containerd``,
  ``runc``) and of ``socat`` (a kubelet dependency), copied from the machine's apt cache only when
  their SHA-256 is the one Debian's index (``apt-cache show``) names, signed with the same lab key.

The key is made with ``gpg`` in a private ``GNUPGHOME`` under the repository's own directory
(never the user's keyring); its agent is stopped after every signing. :func:`serve` runs
Python's ``http.server`` as a process bound to one address (the lab bridge's: only lab nodes reach
it), recorded by PID; :func:`stop` ends that PID only.

This module runs on the machine (the project's Python), not in nodes; it uses the standard
library and the Debian tools ``dpkg-deb``, ``gpg``, ``gpgconf``, ``apt-cache``.
"""

from __future__ import annotations

import contextlib
import email.utils
import gzip
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import repeat
from pathlib import Path

from hactl.lab.nodeinit import IN_NODE_SRC

DATA = Path(__file__).resolve().parent / "pkgrepo_data"

RELEASES: dict[str, tuple[str, ...]] = {
    "v1.29": ("1.29.6", "1.29.7", "1.29.8"),
    "v1.30": ("1.30.2", "1.30.3", "1.30.4"),
}
"""Kubernetes patch releases packaged, per minor repository. All were built (June–August 2024)
from the same templates: kubelet's dependencies changed only with 1.31.0/1.30.5 (socat and
ebtables dropped, August 2024), kubeadm's with 1.30.0 (kubelet, kubectl, kubernetes-cni dropped)."""
REVISION = "1.1"
"""The package revision pkgs.k8s.io gives a first build (``1.30.4-1.1``)."""
CRI_TOOLS = {"v1.29": "1.29.0", "v1.30": "1.30.0"}
KUBERNETES_CNI = {"v1.29": "1.3.0", "v1.30": "1.4.0"}
CNI_PLUGINS = ("bridge", "host-local", "loopback", "portmap")

MAINTAINER = "Kubernetes Authors <dev@kubernetes.io>"
HOMEPAGE = "https://kubernetes.io"
KEYRING = "/etc/apt/keyrings/kubernetes-apt-keyring.gpg"
"""Where the Kubernetes documentation has a host keep the repository's key (``signed-by``)."""
DEBIAN_KEYRING = "/etc/apt/keyrings/hactl-lab-debian.gpg"
"""Where a lab node keeps the key of the lab's Debian mirror (the same lab key)."""
DEBIAN_SUITE = "bookworm"
DEBIAN_PACKAGES = ("containerd", "runc", "socat")
"""Debian's own packages served by the mirror: the runtime and its Depends a bare host lacks,
and socat (kubelet Depends). Anything else a bare node needs is the machine's, see the doc."""
APT_ARCHIVES = "/var/cache/apt/archives"

KEY_UID = "hactl lab package signing <lab@hactl.invalid>"

_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}
"""Servers started by this process, kept so that their exit is reaped (by :meth:`Repo.stop`)."""


def repo_path(minor: str) -> str:
    """``core:/stable:/v1.30/deb`` (the URL path below the server, as on pkgs.k8s.io)."""
    return f"core:/stable:/{minor}/deb"


def minor_of(version: str) -> str:
    """``1.30.4`` → ``v1.30``."""
    major, minor = version.lstrip("v").split(".")[:2]
    return f"v{major}.{minor}"


# -- the packages ------------------------------------------------------------------------------


@dataclass(frozen=True)
class DebSpec:
    """One binary package: its control fields and the files it installs (path → (bytes, mode))."""

    name: str
    version: str
    section: str
    summary: str
    depends: tuple[str, ...] = ()
    files: dict[str, tuple[bytes, int]] = field(default_factory=dict)
    conffiles: tuple[str, ...] = ()

    @property
    def filename(self) -> str:
        return f"{self.name}_{self.version}_amd64.deb"


def _shim(module: str, version: str, name: str, package_version: str) -> bytes:
    return (
        "#!/bin/sh\n"
        f"# {name} {package_version} (hactl lab package): the lab's stand-in at the package's version\n"
        f'HACTL_LAB_BINARY_VERSION=v{version} PYTHONPATH={IN_NODE_SRC} '
        f'exec /usr/bin/python3 -m hactl.lab.standins.{module} "$@"\n'
    ).encode()


def real_kubectl(minor: str) -> str:
    """The machine's kubectl for ``minor``: Google Cloud SDK's ``kubectl.1.30`` next to its
    dispatcher when there is one (the real tool of that minor), else the ``kubectl`` on PATH,
    resolved (a package in a node may replace ``/usr/bin/kubectl`` itself)."""
    found = shutil.which("kubectl") or "/usr/bin/kubectl"
    real = os.path.realpath(found)
    versioned = f"{real}.{minor.lstrip('v')}"
    return versioned if os.access(versioned, os.X_OK) else real


KUSTOMIZE_VERSION = "v5.0.4-0.20230601165947-6ce0bf390ce3"
"""What kubectl 1.29/1.30 print as ``Kustomize Version``."""


def _kubectl_wrapper(version: str, package_version: str, real: str) -> bytes:
    # `kubectl version --client` is what hactl's probe asks; the answer is the package's version,
    # in kubectl's own formats. Everything else is the machine's real kubectl.
    info = {
        "major": "1", "minor": version.split(".")[1], "gitVersion": f"v{version}",
        "gitCommit": "0" * 40, "gitTreeState": "clean", "buildDate": "2024-08-14T00:00:00Z",
        "goVersion": "go1.22.5", "compiler": "gc", "platform": "linux/amd64",
    }
    as_json = json.dumps({"clientVersion": info, "kustomizeVersion": KUSTOMIZE_VERSION}, indent=2)
    as_yaml = "clientVersion:\n" + "".join(
        f"  {k}: " + (f'"{v}"' if k in ("major", "minor", "buildDate") else v) + "\n" for k, v in sorted(info.items())
    ) + f"kustomizeVersion: {KUSTOMIZE_VERSION}"
    plain = f"Client Version: v{version}\nKustomize Version: {KUSTOMIZE_VERSION}"
    answers = (
        ('"version --client"|"version --client=true"', plain),
        ('"version --client -o json"|"version --client --output=json"|"version --client --output json"|'
         '"version -o json --client"', as_json),
        ('"version --client -o yaml"|"version --client --output=yaml"|"version --client --output yaml"|'
         '"version -o yaml --client"', as_yaml),
    )
    cases = "".join(f"  {pattern})\n    cat <<'EOF'\n{text}\nEOF\n    exit 0;;\n" for pattern, text in answers)
    return (
        "#!/bin/sh\n"
        f"# kubectl {package_version} (hactl lab package): the machine's kubectl, {real}\n"
        f'case "$*" in\n{cases}esac\n'
        f'exec {real} "$@"\n'
    ).encode()


def _crictl(version: str) -> bytes:
    return (
        "#!/bin/sh\n"
        f"# crictl {version} (hactl lab package): the lab has no CRI client stand-in; only the\n"
        "# version answers (kubeadm 1.29/1.30 preflight looks for crictl on PATH)\n"
        'case "$*" in\n'
        f'  "--version"|"-v") echo "crictl version v{version}"; exit 0;;\n'
        "esac\n"
        'echo "crictl (hactl lab): only --version is available in the lab" >&2\n'
        "exit 1\n"
    ).encode()


def _cni_plugin(name: str, version: str) -> bytes:
    # CNI's VERSION command answers as the real plugin; ADD/DEL/CHECK fail with CNI error 4
    # ("invalid environment variables"): the lab runs no pod sandboxes.
    return (
        "#!/bin/sh\n"
        f"# CNI plugin {name} {version} (hactl lab package)\n"
        'if [ "$CNI_COMMAND" = VERSION ]; then\n'
        "  echo '{\"cniVersion\":\"1.0.0\",\"supportedVersions\":"
        "[\"0.1.0\",\"0.2.0\",\"0.3.0\",\"0.3.1\",\"0.4.0\",\"1.0.0\"]}'\n"
        "  exit 0\nfi\n"
        "echo '{\"cniVersion\":\"1.0.0\",\"code\":4,\"msg\":\"hactl lab: no pod sandboxes\"}'\n"
        "exit 1\n"
    ).encode()


def kube_packages(minor: str) -> list[DebSpec]:
    """Every package of the ``minor`` repository (:data:`RELEASES`, cri-tools, kubernetes-cni)."""
    unit = (DATA / "kubelet.service").read_bytes()
    dropin = (DATA / "10-kubeadm.conf").read_bytes()
    env = (DATA / "kubelet.env").read_bytes()
    kubectl = real_kubectl(minor)
    specs: list[DebSpec] = []
    for version in RELEASES[minor]:
        pv = f"{version}-{REVISION}"
        # kubeadm: metadata.yaml ">= 1.28.0 < 1.30.0" kubelet, kubectl, kubernetes-cni, cri-tools;
        # ">= 1.30.0" cri-tools only (krel writes them comma-separated, without spaces).
        if tuple(int(n) for n in version.split(".")[:2]) < (1, 30):
            kubeadm_deps: tuple[str, ...] = (
                "kubelet (>= 1.19.0)", "kubectl (>= 1.19.0)", "kubernetes-cni (>= 1.2.0)",
                "cri-tools (>= 1.28.0)",
            )
        else:
            kubeadm_deps = ("cri-tools (>= 1.30.0)",)
        specs.append(DebSpec(
            "kubeadm", pv, "admin", "Command-line utility for administering a Kubernetes cluster",
            kubeadm_deps,
            {"/usr/bin/kubeadm": (_shim("kubeadm", version, "kubeadm", pv), 0o755),
             "/usr/lib/systemd/system/kubelet.service.d/10-kubeadm.conf": (dropin, 0o644)},
        ))
        # kubelet.spec (2024-05-28 .. 2024-08-19), debbuild branch. ethtool and ebtables are
        # left out: Debian has them but neither the machine nor its apt cache (docs/lab-packages.md).
        specs.append(DebSpec(
            "kubelet", pv, "net", "Node agent for Kubernetes clusters",
            ("iptables (>= 1.4.21)", "kubernetes-cni (>= 1.2.0)", "iproute2", "mount", "socat",
             "util-linux", "conntrack"),
            {"/usr/bin/kubelet": (_shim("kubelet", version, "kubelet", pv), 0o755),
             "/usr/lib/systemd/system/kubelet.service": (unit, 0o644),
             "/var/lib/kubelet/.kubelet-keep": (b"", 0o644),
             "/etc/kubernetes/manifests/.kubelet-keep": (b"", 0o644),
             "/etc/default/kubelet": (env, 0o644)},
            conffiles=("/etc/default/kubelet",),
        ))
        specs.append(DebSpec(
            "kubectl", pv, "admin", "Command-line utility for interacting with a Kubernetes cluster",
            (), {"/usr/bin/kubectl": (_kubectl_wrapper(version, pv, kubectl), 0o755)},
        ))
    cri = CRI_TOOLS[minor]
    specs.append(DebSpec(
        "cri-tools", f"{cri}-{REVISION}", "admin",
        "Command-line utility for interacting with a container runtime",
        (), {"/usr/bin/crictl": (_crictl(cri), 0o755)},
    ))
    cni = KUBERNETES_CNI[minor]
    cni_files = {f"/opt/cni/bin/{p}": (_cni_plugin(p, cni), 0o755) for p in CNI_PLUGINS}
    cni_files["/etc/cni/net.d/.kubernetes-cni-keep"] = (b"", 0o644)
    specs.append(DebSpec(
        "kubernetes-cni", f"{cni}-{REVISION}", "net",
        "Binaries required to provision kubernetes container networking", (), cni_files,
    ))
    return specs


def build_deb(spec: DebSpec, out_dir: Path, work: Path) -> Path:
    """``dpkg-deb --build`` of ``spec`` (files owned root:root, ``DEBIAN/md5sums``,
    ``DEBIAN/conffiles``) into ``out_dir``."""
    root = work / f"{spec.name}_{spec.version}"
    if root.exists():
        shutil.rmtree(root)
    size = 0
    md5 = []
    for path, (data, mode) in sorted(spec.files.items()):
        target = root / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(target.parent, 0o755)
        target.write_bytes(data)
        os.chmod(target, mode)
        size += max(1, (len(data) + 1023) // 1024)
        md5.append(f"{hashlib.md5(data).hexdigest()}  {path.lstrip('/')}\n")
    for dirpath, _dirs, _files in os.walk(root):
        os.chmod(dirpath, 0o755)
    control = root / "DEBIAN"
    control.mkdir(mode=0o755)
    fields = [
        ("Package", spec.name), ("Version", spec.version), ("Architecture", "amd64"),
        ("Maintainer", MAINTAINER), ("Installed-Size", str(size)),
    ]
    if spec.depends:
        fields.append(("Depends", ",".join(spec.depends)))
    fields += [("Section", spec.section), ("Priority", "optional"), ("Homepage", HOMEPAGE),
               ("Description", f"{spec.summary}\n {spec.summary}.")]
    (control / "control").write_text("".join(f"{k}: {v}\n" for k, v in fields))
    (control / "md5sums").write_text("".join(md5))
    if spec.conffiles:
        (control / "conffiles").write_text("".join(f"{c}\n" for c in spec.conffiles))
    for name in os.listdir(control):
        os.chmod(control / name, 0o644)
    out_dir.mkdir(parents=True, exist_ok=True)
    deb = out_dir / spec.filename
    subprocess.run(
        ["dpkg-deb", "--root-owner-group", "-Zxz", "--build", str(root), str(deb)],
        check=True, capture_output=True, text=True, timeout=120,
    )
    shutil.rmtree(root)
    return deb


# -- indexes and signatures --------------------------------------------------------------------


def control_of(deb: Path) -> str:
    """The control paragraph of ``deb`` (``dpkg-deb --field``), without a trailing newline."""
    out = subprocess.run(
        ["dpkg-deb", "--field", str(deb)], check=True, capture_output=True, text=True, timeout=60
    ).stdout
    return out.rstrip("\n")


def stanza(deb: Path, filename: str) -> str:
    """The ``Packages`` paragraph of ``deb``: its control fields with ``Filename``, ``Size``,
    ``MD5sum``, ``SHA1``, ``SHA256`` inserted before ``Section`` (pkgs.k8s.io's order)."""
    data = deb.read_bytes()
    file_fields = [
        f"Filename: {filename}", f"Size: {len(data)}",
        f"MD5sum: {hashlib.md5(data).hexdigest()}",
        f"SHA1: {hashlib.sha1(data).hexdigest()}",
        f"SHA256: {hashlib.sha256(data).hexdigest()}",
    ]
    lines = control_of(deb).split("\n")
    at = next((i for i, line in enumerate(lines) if line.startswith(("Section:", "Description:"))), len(lines))
    return "\n".join(lines[:at] + file_fields + lines[at:]) + "\n"


def write_packages(index_dir: Path, stanzas: list[str]) -> list[Path]:
    """``Packages`` and ``Packages.gz`` in ``index_dir`` (gzip with a fixed mtime)."""
    index_dir.mkdir(parents=True, exist_ok=True)
    text = "\n".join(stanzas).encode()
    plain = index_dir / "Packages"
    plain.write_bytes(text)
    packed = index_dir / "Packages.gz"
    with open(packed, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz:
        gz.write(text)
    return [plain, packed]


def release_text(fields: list[tuple[str, str]], base: Path, files: list[Path]) -> str:
    """A ``Release`` file: ``fields``, then the MD5Sum/SHA1/SHA256/SHA512 lists of ``files``
    (paths relative to ``base``, the directory the Release is in)."""
    lines = [f"{k}: {v}" for k, v in fields]
    lines.append(f"Date: {email.utils.formatdate(time.time(), usegmt=True).replace('GMT', 'UTC')}")
    for label, algo in (("MD5Sum", "md5"), ("SHA1", "sha1"), ("SHA256", "sha256"), ("SHA512", "sha512")):
        lines.append(f"{label}:")
        for path in files:
            data = path.read_bytes()
            digest = hashlib.new(algo, data).hexdigest()
            lines.append(f" {digest} {len(data):>16} {path.relative_to(base)}")
    return "\n".join(lines) + "\n"


class Signer:
    """The lab's signing key, in a private GNUPGHOME (created on first use)."""

    def __init__(self, home: Path) -> None:
        self.home = home

    def _gpg(self, *args: str, input: bytes | None = None) -> bytes:
        env = {"PATH": "/usr/bin:/bin", "GNUPGHOME": str(self.home), "LANG": "C"}
        proc = subprocess.run(
            ["gpg", "--batch", "--no-tty", "--quiet", "--pinentry-mode", "loopback", *args],
            input=input, capture_output=True, env=env, timeout=120, check=False,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"gpg {' '.join(args)}: {proc.stderr.decode(errors='replace').strip()}")
        return proc.stdout

    def stop_agent(self) -> None:
        subprocess.run(
            ["gpgconf", "--homedir", str(self.home), "--kill", "all"],
            capture_output=True, timeout=30, check=False,
        )

    def fingerprint(self) -> str:
        try:  # listing secret keys starts the agent too
            out = self._gpg("--with-colons", "--list-secret-keys").decode()
        finally:
            self.stop_agent()
        for line in out.splitlines():
            if line.startswith("fpr:"):
                return line.split(":")[9]
        raise RuntimeError(f"no secret key in {self.home}")

    def ensure_key(self) -> str:
        """The key's fingerprint, generating an ed25519 signing key the first time (an RSA key,
        as pkgs.k8s.io's, takes seconds to tens of seconds to generate on a small machine)."""
        self.home.mkdir(parents=True, exist_ok=True)
        os.chmod(self.home, 0o700)
        try:
            return self.fingerprint()
        except RuntimeError:
            pass
        try:
            self._gpg("--passphrase", "", "--quick-generate-key", KEY_UID, "ed25519", "sign", "never")
        finally:
            self.stop_agent()
        return self.fingerprint()

    def export(self, armor: bool) -> bytes:
        return self._gpg(*(["--armor"] if armor else []), "--export", self.fingerprint())

    def sign(self, release: Path) -> None:
        """``InRelease`` (clearsigned) and ``Release.gpg`` (detached, armored) next to ``release``."""
        fpr = self.fingerprint()
        base = ["--passphrase", "", "--local-user", fpr, "--digest-algo", "SHA512", "--yes"]
        try:
            self._gpg(*base, "--clearsign", "--output", str(release.parent / "InRelease"), str(release))
            self._gpg(*base, "--armor", "--detach-sign", "--output", str(release.parent / "Release.gpg"),
                      str(release))
        finally:
            self.stop_agent()


BARE_ABSENT = ("kubeadm", "kubelet", "kubectl", "cri-tools", "kubernetes-cni", "containerd", "runc")
"""Packages a bare host has not installed: :func:`bare_dpkg_status` drops them from the dpkg
database a bare node starts with (the machine's may have them, e.g. Google Cloud SDK's package
named ``kubectl``; apt would then see a newer ``kubectl`` installed and refuse to downgrade)."""


def bare_dpkg_status(text: str, absent: tuple[str, ...] = BARE_ABSENT) -> str:
    """The dpkg ``status`` file ``text`` without the paragraphs of the ``absent`` packages."""
    kept = []
    for para in text.split("\n\n"):
        match = re.search(r"^Package: (\S+)$", para, re.M)
        if para.strip() and not (match and match.group(1) in absent):
            kept.append(para.strip("\n"))
    return "\n\n".join(kept) + "\n"


# -- the repositories --------------------------------------------------------------------------


@dataclass(frozen=True)
class DebianDeb:
    name: str
    version: str
    path: str
    sha256: str


def debian_debs(names: tuple[str, ...] = DEBIAN_PACKAGES, archives: str = APT_ARCHIVES) -> list[DebianDeb]:
    """Debian's own ``.deb`` of each package, from the machine's apt cache, checked against the
    SHA-256 that Debian's signed index (``apt-cache show``) names for that version. A package
    with no such file is an error naming it (and the command that fetches it)."""
    found: list[DebianDeb] = []
    for name in names:
        out = subprocess.run(
            ["apt-cache", "show", name], capture_output=True, text=True, timeout=60, check=False
        ).stdout
        candidates: list[tuple[str, str, str]] = []
        for para in out.split("\n\n"):
            rec = dict(
                [*line.split(": ", 1), ""][:2] for line in para.splitlines() if ": " in line and not line.startswith(" ")
            )
            if rec.get("Package") == name and rec.get("Architecture") in ("amd64", "all"):
                candidates.append((rec.get("Version", ""), rec.get("SHA256", ""), rec.get("Filename", "")))
        hit = None
        for version, sha, filename in candidates:
            local = os.path.join(archives, os.path.basename(filename))
            if sha and os.path.isfile(local):
                with open(local, "rb") as handle:
                    if hashlib.sha256(handle.read()).hexdigest() == sha:
                        hit = DebianDeb(name, version, local, sha)
                        break
        if hit is None:
            raise RuntimeError(
                f"{name}: no .deb in {archives} with the SHA-256 of Debian's index; "
                f"fetch it with `apt-get install --download-only --reinstall -y {name}`"
            )
        found.append(hit)
    return found


@dataclass
class Repo:
    """The lab's repositories under ``root`` (e.g. ``<lab state dir>/pkgrepo``)."""

    root: Path
    minors: tuple[str, ...] = tuple(RELEASES)
    debian: tuple[str, ...] = DEBIAN_PACKAGES

    @property
    def www(self) -> Path:
        return self.root / "www"

    @property
    def signer(self) -> Signer:
        return Signer(self.root / "gnupg")

    @property
    def keyring(self) -> Path:
        """The exported public key (binary), the file nodes put at :data:`KEYRING`."""
        return self.root / "kubernetes-apt-keyring.gpg"

    @property
    def pid_file(self) -> Path:
        return self.root / "http.pid"

    def flat_dir(self, minor: str) -> Path:
        return self.www / repo_path(minor)

    @property
    def stamp(self) -> Path:
        return self.root / "built"

    def inputs(self) -> str:
        """A digest of what the repository is built from (this module, its data files, the
        minors, the Debian packages and the machine's kubectl): :meth:`ensure` rebuilds when it
        changes."""
        digest = hashlib.sha256(Path(__file__).read_bytes())
        for path in sorted(DATA.iterdir()):
            digest.update(path.name.encode() + b"\0" + path.read_bytes())
        digest.update(repr((self.minors, self.debian, [real_kubectl(m) for m in self.minors])).encode())
        return digest.hexdigest()

    def ensure(self) -> bool:
        """Build unless the last build was of the same inputs; True when it built."""
        want = self.inputs()
        with contextlib.suppress(OSError):
            if self.stamp.read_text().strip() == want:
                return False
        self.build()
        self.stamp.write_text(want + "\n")
        return True

    def build(self) -> None:
        """Build (again) every package, index and signature. Idempotent; keeps the key."""
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o755)
        signer = self.signer
        signer.ensure_key()
        self.keyring.write_bytes(signer.export(armor=False))
        work = self.root / "build"
        work.mkdir(exist_ok=True)
        for minor in self.minors:
            flat = self.flat_dir(minor)
            if flat.exists():
                shutil.rmtree(flat)
            amd64 = flat / "amd64"
            with ThreadPoolExecutor(max_workers=4) as pool:
                debs = list(pool.map(build_deb, kube_packages(minor), repeat(amd64), repeat(work)))
                stanzas = list(pool.map(stanza, debs, [f"amd64/{d.name}" for d in debs]))
            files = write_packages(flat, stanzas)
            label = f"isv:kubernetes:core:stable:{minor}"
            release = flat / "Release"
            release.write_text(release_text(
                [("Origin", f"obs://build.opensuse.org/{label}/deb"), ("Label", label),
                 ("Architectures", "amd64")],
                flat, files,
            ))
            signer.sign(release)
            (flat / "Release.key").write_bytes(signer.export(armor=True))
        if self.debian:
            self._build_debian(signer)
        shutil.rmtree(work, ignore_errors=True)
        for dirpath, dirs, names in os.walk(self.www):
            for entry in dirs:
                os.chmod(os.path.join(dirpath, entry), 0o755)
            for entry in names:
                os.chmod(os.path.join(dirpath, entry), 0o644)
        os.chmod(self.www, 0o755)

    def _build_debian(self, signer: Signer) -> None:
        top = self.www / "debian"
        if top.exists():
            shutil.rmtree(top)
        stanzas = []
        for deb in debian_debs(self.debian):
            pool = f"pool/main/{deb.name[:4] if deb.name.startswith('lib') else deb.name[0]}/{deb.name}"
            target = top / pool / os.path.basename(deb.path)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(deb.path, target)
            stanzas.append(stanza(target, f"{pool}/{target.name}"))
        dist = top / "dists" / DEBIAN_SUITE
        files = write_packages(dist / "main" / "binary-amd64", stanzas)
        release = dist / "Release"
        release.write_text(release_text(
            [("Origin", "Debian"), ("Label", "Debian"), ("Suite", "stable"), ("Version", "12"),
             ("Codename", DEBIAN_SUITE), ("Architectures", "amd64"), ("Components", "main"),
             ("Description", "hactl lab: a partial mirror of Debian 12 (the container runtime)")],
            dist, files,
        ))
        signer.sign(release)

    # -- what a node's apt configuration says --------------------------------------------------

    def sources_line(self, base_url: str, minor: str) -> str:
        """The line of the Kubernetes documentation for this repository, e.g. ``deb
        [signed-by=/etc/apt/keyrings/kubernetes-apt-keyring.gpg] http://198.18.0.1/core:/stable:/v1.30/deb/ /``."""
        return f"deb [signed-by={KEYRING}] {base_url.rstrip('/')}/{repo_path(minor)}/ /\n"

    def debian_sources(self, base_url: str) -> str:
        """A deb822 ``debian.sources`` for the lab's Debian mirror."""
        return (
            "Types: deb\n"
            f"URIs: {base_url.rstrip('/')}/debian\n"
            f"Suites: {DEBIAN_SUITE}\n"
            "Components: main\n"
            f"Signed-By: {DEBIAN_KEYRING}\n"
        )

    # -- serving -------------------------------------------------------------------------------

    def serve(self, address: str, port: int = 80, timeout: float = 10.0) -> int:
        """Serve :attr:`www` over HTTP on ``address:port`` only (a process; its PID is recorded
        in :attr:`pid_file`). Returns the PID; an already running server of this repo is kept."""
        running = self.server_pid()
        if running is not None:
            return running
        log = open(self.root / "http.log", "ab")  # noqa: SIM115 - handed to the child
        try:
            proc = subprocess.Popen(
                ["/usr/bin/python3", "-m", "http.server", "--bind", address, "--directory",
                 str(self.www), str(port)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
                cwd="/", env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
            )
        finally:
            log.close()
        _CHILDREN[proc.pid] = proc
        self.pid_file.write_text(f"{proc.pid}\n")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                _CHILDREN.pop(proc.pid, None)
                self.pid_file.unlink(missing_ok=True)
                text = (self.root / "http.log").read_text(errors="replace").strip().splitlines()
                raise RuntimeError(
                    f"package repository server on {address}:{port} exited {proc.returncode}: "
                    f"{text[-1] if text else ''}"
                )
            with contextlib.suppress(OSError), socket.create_connection((address, port), timeout=0.5):
                return proc.pid
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"package repository server on {address}:{port} did not answer in {timeout:.0f} s")

    def server_pid(self) -> int | None:
        """The recorded server's PID if that process is still this repository's server."""
        try:
            pid = int(self.pid_file.read_text().strip())
            with open(f"/proc/{pid}/cmdline", "rb") as handle:
                argv = handle.read().split(b"\0")
        except (OSError, ValueError):
            return None
        if b"http.server" in argv and str(self.www).encode() in argv:
            return pid
        return None

    def stop(self, timeout: float = 5.0) -> None:
        """End the recorded server (by its PID, checked against its command line)."""
        pid = self.server_pid()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            child = _CHILDREN.pop(pid, None)
            if child is not None:  # ours: wait (reaps it)
                try:
                    child.wait(timeout)
                except subprocess.TimeoutExpired:
                    child.kill()
                    child.wait()
            else:  # started by another process (e.g. `hactl lab up`): wait for it to go
                deadline = time.monotonic() + timeout
                while time.monotonic() < deadline and os.path.exists(f"/proc/{pid}"):
                    time.sleep(0.02)
                if os.path.exists(f"/proc/{pid}"):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
        self.pid_file.unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    """``python -m hactl.lab.pkgrepo build DIR | serve DIR ADDRESS [PORT] | stop DIR``."""
    import sys

    args = sys.argv[1:] if argv is None else argv
    usage = "usage: python -m hactl.lab.pkgrepo build DIR | serve DIR ADDRESS [PORT] | stop DIR"
    if len(args) < 2 or args[0] not in ("build", "serve", "stop") or (args[0] == "serve" and len(args) < 3):
        print(usage, file=sys.stderr)
        return 2
    repo = Repo(Path(args[1]))
    try:
        if args[0] == "build":
            print("built" if repo.ensure() else "up to date", repo.www)
        elif args[0] == "serve":
            port = int(args[3]) if len(args) > 3 else 80
            print(f"serving {repo.www} on http://{args[2]}:{port}/ (pid {repo.serve(args[2], port)})")
        else:
            repo.stop()
    except (RuntimeError, OSError, subprocess.CalledProcessError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
