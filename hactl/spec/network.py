"""The pod network (CNI plugin) the cluster runs: ``network`` in the spec (see docs/network.md).

A frozen pydantic model like the others of :mod:`hactl.spec.models` (camelCase keys, unknown
keys refused, one docstring per field). Pure: no I/O (manifest files are read at plan time by
:mod:`hactl.render.cni`).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, field_validator, model_validator
from pydantic.alias_generators import to_camel

from hactl.spec import values

FLANNEL_VERSIONS: dict[str, str] = {
    "v0.25.6": "v1.5.1-flannel2",
    "v0.25.7": "v1.5.1-flannel2",
}
"""flannel release → the flannel-cni-plugin image tag its kube-flannel.yml names (the
``install-cni-plugin`` init container). hactl renders only releases whose manifest it knows."""
FLANNEL_DEFAULT = "v0.25.7"
"""The flannel release hactl installs by default (docs/network.md)."""


class NetworkSettings(BaseModel):
    """The pod network: the CNI plugin hactl installs right after ``kubeadm init``."""

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        alias_generator=to_camel,
        populate_by_name=True,
        use_attribute_docstrings=True,
    )

    plugin: Literal["flannel", "none", "manifests"] = "flannel"
    """``flannel``: hactl renders flannel's release manifest (``Network`` = ``kubernetes.podSubnet``)
    and applies it with ``kubectl apply --server-side``; ``manifests``: the files of
    ``manifests`` instead; ``none``: hactl installs no CNI (the Nodes stay NotReady until one is
    installed by other means; the plan says so). ``calico`` is not supported yet. hactl never
    uninstalls a CNI: a change to ``none`` on a cluster that runs one is refused."""
    version: str = FLANNEL_DEFAULT
    """flannel release for ``plugin: flannel``: ``v0.25.7`` (default) or ``v0.25.6``."""
    manifests: list[str] = []
    """For ``plugin: manifests``: YAML files (a relative path is relative to the spec file's folder) of the
    objects to apply, read when the plan is made. Kinds: Namespace, ServiceAccount, ClusterRole,
    ClusterRoleBinding, Role, RoleBinding, ConfigMap, DaemonSet, Deployment, Service."""

    @field_validator("version")
    @classmethod
    def _version(cls, value: str) -> str:
        version = value if value.startswith("v") else f"v{value}"
        if version not in FLANNEL_VERSIONS:
            raise ValueError(f"{values.show(value)} is not a flannel release hactl knows; use one "
                             f"of {', '.join(sorted(FLANNEL_VERSIONS))}")
        return version

    @field_validator("manifests")
    @classmethod
    def _paths(cls, paths: list[str]) -> list[str]:
        return [values.local_path(p) for p in paths]

    @model_validator(mode="after")
    def _manifests_only_with_plugin(self) -> NetworkSettings:
        if self.plugin == "manifests" and not self.manifests:
            raise ValueError("plugin: manifests needs at least one file in manifests")
        if self.plugin != "manifests" and self.manifests:
            raise ValueError(f"manifests are applied only with plugin: manifests (not {self.plugin})")
        return self
