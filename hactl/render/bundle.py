"""Every non-secret file hactl renders for a cluster, per host: for ``make demo`` and reviews.

Certificates and join configurations are left out on purpose: they need keys or tokens that only
exist on the hosts (see :mod:`hactl.render.etcd_pki` and :func:`hactl.render.kubeadm_config.join_config_file`).
"""

from __future__ import annotations

from hactl.render.etcd import etcd_member_files
from hactl.render.files import RenderedFile
from hactl.render.haproxy import haproxy_config_file
from hactl.render.kubeadm_config import init_config_file
from hactl.spec.models import Cluster


def render_bundle(cluster: Cluster) -> dict[str, RenderedFile]:
    """``{"<host>/<absolute path without the leading slash>": file}``, sorted by key.

    Load balancers get ``haproxy.cfg``; external etcd members their env file and unit (state
    ``new``); every master ``/etc/hactl/kubeadm-config.yaml`` rendered for itself (the first one
    runs ``kubeadm init`` with it). Stacked etcd is run by kubeadm, so it has no files here.
    """
    files: dict[str, RenderedFile] = {}

    def add(host: str, file: RenderedFile) -> None:
        if file.secret:  # a bundle is for showing
            raise ValueError(f"{file.path} is secret and cannot be in a bundle")
        files[f"{host}/{file.path.lstrip('/')}"] = file

    for lb in cluster.load_balancer.hosts:
        add(lb.name, haproxy_config_file(cluster))
    if cluster.etcd.topology == "external":
        for member in cluster.etcd.members:
            for file in etcd_member_files(cluster, member.name):
                add(member.name, file)
    for master in cluster.masters:
        add(master.name, init_config_file(cluster, master.name))
    return dict(sorted(files.items()))
