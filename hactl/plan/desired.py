"""What a host should hold, from the renderers (one place that knows their function names)."""

from __future__ import annotations

from collections.abc import Sequence

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
