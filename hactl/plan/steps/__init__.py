"""One module per step kind (file name ↔ class name). Importing this package registers them."""

from hactl.plan.steps.add_etcd_member import AddEtcdMember
from hactl.plan.steps.bootstrap_etcd_member import BootstrapEtcdMember
from hactl.plan.steps.configure_haproxy import ConfigureHAProxy
from hactl.plan.steps.create_join_token import CreateJoinToken
from hactl.plan.steps.enable_kubelet import EnableKubelet
from hactl.plan.steps.generate_etcd_ca import GenerateEtcdCA
from hactl.plan.steps.init_control_plane import InitControlPlane
from hactl.plan.steps.install_etcd_certs import InstallEtcdCerts
from hactl.plan.steps.install_etcd_client_certs import InstallEtcdClientCerts
from hactl.plan.steps.join_control_plane import JoinControlPlane
from hactl.plan.steps.join_worker import JoinWorker
from hactl.plan.steps.promote_etcd_member import PromoteEtcdMember
from hactl.plan.steps.reconfigure_etcd_member import ReconfigureEtcdMember
from hactl.plan.steps.refresh_certificate_key import RefreshCertificateKey
from hactl.plan.steps.remove_etcd_member import RemoveEtcdMember
from hactl.plan.steps.start_etcd_member import StartEtcdMember
from hactl.plan.steps.verify import Verify
from hactl.plan.steps.wait_etcd_healthy import WaitEtcdHealthy

__all__ = [
    "AddEtcdMember",
    "BootstrapEtcdMember",
    "ConfigureHAProxy",
    "CreateJoinToken",
    "EnableKubelet",
    "GenerateEtcdCA",
    "InitControlPlane",
    "InstallEtcdCerts",
    "InstallEtcdClientCerts",
    "JoinControlPlane",
    "JoinWorker",
    "PromoteEtcdMember",
    "ReconfigureEtcdMember",
    "RefreshCertificateKey",
    "RemoveEtcdMember",
    "StartEtcdMember",
    "Verify",
    "WaitEtcdHealthy",
]
