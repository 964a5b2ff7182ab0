"""What a host should hold, from the renderers (one place that knows their function names)."""

from __future__ import annotations

from collections.abc import Sequence

from hactl.sensitive import Sensitive
from hactl.spec.models import Cluster, Host


def haproxy_cfg(cluster: Cluster) -> str:
    from hactl.render.haproxy import render_haproxy_cfg

    return render_haproxy_cfg(cluster)


def etcd_env(
    cluster: Cluster, name: str, *, state: str, members: Sequence[Host] | None = None
) -> str:
    from hactl.render.etcd import render_etcd_env

    return render_etcd_env(cluster, name, state="new" if state == "new" else "existing", members=members)


def etcd_unit(cluster: Cluster) -> str:
    from hactl.render.etcd import render_etcd_unit

    return render_etcd_unit(cluster)


def kubeadm_init_config(cluster: Cluster, host: Host) -> str:
    """InitConfiguration + ClusterConfiguration for the first master (external or stacked)."""
    from hactl.render.kubeadm_config import render_init_config

    return render_init_config(cluster, host.name)


def kubeadm_init_secret_config(cluster: Cluster, host: Host, certificate_key: Sensitive) -> Sensitive:
    """The same with ``certificateKey``: for ``kubeadm init`` only (0600, removed after init)."""
    from hactl.render.kubeadm_config import init_secret_config_file

    content = init_secret_config_file(cluster, certificate_key, host.name).content
    assert isinstance(content, Sensitive)
    return content


def kubeadm_join_config(
    cluster: Cluster,
    host: Host,
    token: Sensitive,
    ca_cert_hash: str,
    certificate_key: Sensitive | None = None,
) -> Sensitive:
    """JoinConfiguration for ``host`` (control-plane join when it is a master): 0600, removed
    after the join."""
    from hactl.render.kubeadm_config import JoinCredentials, join_config_file

    creds = JoinCredentials(token, (ca_cert_hash,), certificate_key)
    content = join_config_file(cluster, host.name, creds).content
    assert isinstance(content, Sensitive)
    return content
