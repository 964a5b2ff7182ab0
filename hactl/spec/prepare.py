"""The host preparation section of the spec: ``prepare`` (opt-in).

When the spec has a ``prepare`` section, ``hactl apply`` makes every master and worker ready for
kubeadm before anything else, each part a diffed change (a prepared host plans nothing): the
kernel settings kubeadm's preflight and the container runtime need, swap off, the container
runtime (containerd with the systemd cgroup driver), and kubeadm, kubelet and kubectl at the
spec's exact version from the package repository named here, held at it. See docs/hosts.md.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator
from pydantic.alias_generators import to_camel

from hactl.spec import values

_REVISION = re.compile(r"[0-9A-Za-z.+~]{1,20}", re.ASCII)
_PACKAGE = re.compile(r"[a-z0-9][a-z0-9+.-]{0,62}", re.ASCII)
_URL = re.compile(r"https?://[A-Za-z0-9.:\[\]_~/%-]+(?:/[A-Za-z0-9._~:/%-]*)?", re.ASCII)
_SUITE = re.compile(r"/|[A-Za-z0-9][A-Za-z0-9._/-]{0,62}", re.ASCII)

LocalPath = Annotated[str, AfterValidator(values.local_path)]


class _Model(BaseModel):
    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        alias_generator=to_camel,
        populate_by_name=True,
        use_attribute_docstrings=True,
    )


class PackageRepository(_Model):
    """Where kubeadm, kubelet and kubectl come from: an APT repository, like Kubernetes' own
    (``https://pkgs.k8s.io/core:/stable:/v1.30/deb/``, suite ``/``, one minor per repository)."""

    url: str | None = None
    """The repository's URL (``http://`` or ``https://``). Default: Kubernetes' community
    repository of the spec's minor, ``https://pkgs.k8s.io/core:/stable:/v<MAJOR>.<MINOR>/deb/``."""
    suite: str = "/"
    """The APT suite: ``/`` for a flat repository (pkgs.k8s.io), else a distribution name."""
    components: list[str] = []
    """APT components after the suite (empty for a flat repository; e.g. ``[main]``)."""
    key_file: LocalPath
    """The repository's signing key (``Release.key``, ASCII-armoured or binary OpenPGP) on the
    operator's machine (a relative path is relative to the spec file's folder). hactl puts it on each host as the source's ``signed-by`` keyring; APT
    refuses the repository's index unless it verifies with it."""
    revision: str = "1.1"
    """The Debian revision of the packages: kubeadm ``1.30.4`` installs ``kubeadm=1.30.4-<revision>``
    (pkgs.k8s.io: ``1.1``)."""

    @field_validator("url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None and not _URL.fullmatch(value):
            raise ValueError(f"{values.show(value)} is not an http(s) URL without spaces or quotes")
        return value

    @field_validator("suite")
    @classmethod
    def _suite(cls, value: str) -> str:
        if not _SUITE.fullmatch(value) or ".." in value:
            raise ValueError(f"{values.show(value)} is not an APT suite (`/` or a name like bookworm)")
        return value

    @field_validator("components")
    @classmethod
    def _components(cls, value: list[str]) -> list[str]:
        for item in value:
            if not _PACKAGE.fullmatch(item):
                raise ValueError(f"{values.show(item)} is not an APT component name")
        return value

    @field_validator("revision")
    @classmethod
    def _revision(cls, value: str) -> str:
        if not _REVISION.fullmatch(value):
            raise ValueError(f"{values.show(value)} is not a Debian revision like 1.1")
        return value


class ContainerRuntime(_Model):
    """The container runtime kubeadm and the kubelet talk to."""

    kind: Literal["containerd"] = "containerd"
    """``containerd`` (CRI socket ``/run/containerd/containerd.sock``, systemd cgroup driver, as
    kubeadm's default kubelet configuration expects)."""
    package: str = "containerd"
    """The package that installs it from the hosts' own APT sources (Debian and Ubuntu:
    ``containerd``; Docker's repository: ``containerd.io``)."""

    @field_validator("package")
    @classmethod
    def _package(cls, value: str) -> str:
        if not _PACKAGE.fullmatch(value):
            raise ValueError(f"{values.show(value)} is not a Debian package name")
        return value


class PrepareSettings(_Model):
    """Host preparation (opt-in): what ``hactl apply`` does on masters and workers before
    anything else."""

    packages: PackageRepository
    """kubeadm, kubelet and kubectl: installed at ``kubernetes.version`` from this repository and
    held there (``apt-mark hold``)."""
    container_runtime: ContainerRuntime = ContainerRuntime()
    """Installed when missing, configured with the systemd cgroup driver, enabled and running."""
    kernel: Annotated[bool, Field(strict=True)] = True
    """Load ``overlay`` and ``br_netfilter`` now and at boot (/etc/modules-load.d/k8s.conf) and
    set ``net.ipv4.ip_forward``, ``net.bridge.bridge-nf-call-iptables`` and
    ``…-ip6tables`` to 1 now and at boot (/etc/sysctl.d/k8s.conf)."""
    swap_off: Annotated[bool, Field(strict=True)] = True
    """``swapoff -a`` and comment out the swap entries of /etc/fstab (the kubelet refuses to
    start with swap on unless told otherwise)."""

    def repository_url(self, version: tuple[int, int, int]) -> str:
        """The repository's URL, the default for ``version``'s minor when not set."""
        return self.packages.url or f"https://pkgs.k8s.io/core:/stable:/v{version[0]}.{version[1]}/deb/"
