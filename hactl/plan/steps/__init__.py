"""One module per step kind (file name ↔ class name ↔ kind, e.g. ``join_worker`` ↔ ``JoinWorker``).

A kind's module is imported when its class is first used (``steps.JoinWorker`` or
``from hactl.plan.steps import JoinWorker``), so a plan without changes imports none of them;
:func:`load_kind` imports one by its kind (a saved plan names its kinds). A class registers its
kind (``hactl.plan.step.STEP_KINDS``) when its module is imported.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hactl.plan.steps.add_etcd_member import AddEtcdMember
    from hactl.plan.steps.bootstrap_etcd_member import BootstrapEtcdMember
    from hactl.plan.steps.complete_init import CompleteInit
    from hactl.plan.steps.configure_haproxy import ConfigureHAProxy
    from hactl.plan.steps.create_join_token import CreateJoinToken
    from hactl.plan.steps.delete_node import DeleteNode
    from hactl.plan.steps.drain_node import DrainNode
    from hactl.plan.steps.enable_kubelet import EnableKubelet
    from hactl.plan.steps.generate_etcd_ca import GenerateEtcdCA
    from hactl.plan.steps.init_control_plane import InitControlPlane
    from hactl.plan.steps.install_etcd_certs import InstallEtcdCerts
    from hactl.plan.steps.install_etcd_client_certs import InstallEtcdClientCerts
    from hactl.plan.steps.install_pod_network import InstallPodNetwork
    from hactl.plan.steps.join_control_plane import JoinControlPlane
    from hactl.plan.steps.join_worker import JoinWorker
    from hactl.plan.steps.prepare_host import PrepareHost
    from hactl.plan.steps.promote_etcd_member import PromoteEtcdMember
    from hactl.plan.steps.reconfigure_etcd_member import ReconfigureEtcdMember
    from hactl.plan.steps.refresh_certificate_key import RefreshCertificateKey
    from hactl.plan.steps.remove_etcd_member import RemoveEtcdMember
    from hactl.plan.steps.remove_stacked_member import RemoveStackedMember
    from hactl.plan.steps.reset_node import ResetNode
    from hactl.plan.steps.rewrite_etcd_servers import RewriteEtcdServers
    from hactl.plan.steps.start_etcd_member import StartEtcdMember
    from hactl.plan.steps.update_etcd_member import UpdateEtcdMember
    from hactl.plan.steps.update_kubeadm_config import UpdateKubeadmConfig
    from hactl.plan.steps.verify import Verify
    from hactl.plan.steps.wait_etcd_healthy import WaitEtcdHealthy
    from hactl.plan.steps.wait_pod_network import WaitPodNetwork

MODULES = {
    "AddEtcdMember": "add_etcd_member",
    "BootstrapEtcdMember": "bootstrap_etcd_member",
    "CompleteInit": "complete_init",
    "ConfigureHAProxy": "configure_haproxy",
    "CreateJoinToken": "create_join_token",
    "DeleteNode": "delete_node",
    "DrainNode": "drain_node",
    "EnableKubelet": "enable_kubelet",
    "GenerateEtcdCA": "generate_etcd_ca",
    "InitControlPlane": "init_control_plane",
    "InstallEtcdCerts": "install_etcd_certs",
    "InstallEtcdClientCerts": "install_etcd_client_certs",
    "InstallPodNetwork": "install_pod_network",
    "JoinControlPlane": "join_control_plane",
    "JoinWorker": "join_worker",
    "PrepareHost": "prepare_host",
    "PromoteEtcdMember": "promote_etcd_member",
    "ReconfigureEtcdMember": "reconfigure_etcd_member",
    "RefreshCertificateKey": "refresh_certificate_key",
    "RemoveEtcdMember": "remove_etcd_member",
    "RemoveStackedMember": "remove_stacked_member",
    "ResetNode": "reset_node",
    "RewriteEtcdServers": "rewrite_etcd_servers",
    "StartEtcdMember": "start_etcd_member",
    "UpdateEtcdMember": "update_etcd_member",
    "UpdateKubeadmConfig": "update_kubeadm_config",
    "Verify": "verify",
    "WaitEtcdHealthy": "wait_etcd_healthy",
    "WaitPodNetwork": "wait_pod_network",
}
"""Class name → module under hactl/plan/steps/ (the module's name is the step's kind)."""


def __getattr__(name: str) -> Any:
    module = MODULES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    cls = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = cls
    return cls


def load_kind(kind: str) -> None:
    """Import the module of one of hactl's step kinds (an unknown kind is left alone)."""
    if kind in MODULES.values():
        importlib.import_module(f"{__name__}.{kind}")


__all__ = [
    "MODULES",
    "AddEtcdMember",
    "BootstrapEtcdMember",
    "CompleteInit",
    "ConfigureHAProxy",
    "CreateJoinToken",
    "DeleteNode",
    "DrainNode",
    "EnableKubelet",
    "GenerateEtcdCA",
    "InitControlPlane",
    "InstallEtcdCerts",
    "InstallEtcdClientCerts",
    "InstallPodNetwork",
    "JoinControlPlane",
    "JoinWorker",
    "PrepareHost",
    "PromoteEtcdMember",
    "ReconfigureEtcdMember",
    "RefreshCertificateKey",
    "RemoveEtcdMember",
    "RemoveStackedMember",
    "ResetNode",
    "RewriteEtcdServers",
    "StartEtcdMember",
    "UpdateEtcdMember",
    "UpdateKubeadmConfig",
    "Verify",
    "WaitEtcdHealthy",
    "WaitPodNetwork",
    "load_kind",
]
