"""``/etc/haproxy/haproxy.cfg`` for the API load balancer (HAProxy 2.6 syntax).

TCP passthrough: TLS goes end to end from the client to an API server (the LB never holds a
Kubernetes key). Servers are the masters' ``:6443`` in spec order. The output is a pure function
of the spec: the same cluster always renders byte-identical text, so hactl can compare it with
the file on the host. Choices (and why) are in ``docs/renderers.md``:

- health check ``https-readyz``: ``GET /readyz`` over TLS expecting 200 (an API server that lost
  etcd stops answering 200 and leaves the pool); ``tcp`` only checks the port is open.
- ``inter 2s fastinter 1s downinter 5s fall 2 rise 2``: a dead master leaves the pool within
  about 3-5 s, a recovering one returns after two good answers (no flapping while it starts).
- ``on-marked-down shutdown-sessions``: connections to a master marked down are cut at once, so
  watchers reconnect through a healthy one instead of hanging until a timeout.
- ``timeout client/server 35s`` (kubeadm's HA guide) and ``timeout tunnel 1h``: in TCP mode the
  tunnel timeout governs established connections, so idle ``kubectl`` watch/exec/logs streams
  survive up to an hour (the API server itself ends watches after 30-60 min).
- a stats socket (``/run/haproxy/admin.sock``, mode 600, level admin) for probing backend state
  with ``show servers state``; ``expose-fd listeners`` for seamless reloads.
"""

from __future__ import annotations

from hactl import hostlayout
from hactl.render.files import RenderedFile, public
from hactl.render.net import host_port, port_number, safe_token
from hactl.spec.models import Cluster, Host

CONFIG_PATH = hostlayout.HAPROXY_CFG
ADMIN_SOCKET = hostlayout.HAPROXY_ADMIN_SOCKET
FRONTEND = "k8s-api"
BACKEND = "k8s-api-backend"
API_PORT = 6443

TIMEOUT_CONNECT = "5s"
TIMEOUT_CLIENT = "35s"
TIMEOUT_SERVER = "35s"
TIMEOUT_TUNNEL = "1h"
TIMEOUT_CHECK = "2s"
CHECK_TIMING = "inter 2s fastinter 1s downinter 5s fall 2 rise 2"


def bind_address(cluster: Cluster) -> str:
    """``:<frontendPort>`` on every address, or ``<vip>:<frontendPort>`` when the spec has a VIP
    (the standby LB then needs ``net.ipv4.ip_nonlocal_bind=1`` to start without the VIP)."""
    lb = cluster.load_balancer
    if lb.vip is not None:
        return host_port(lb.vip, lb.frontend_port)
    return f":{port_number(lb.frontend_port)}"


def _server_line(host: Host, port: int, https: bool) -> str:
    check = "check check-ssl verify none" if https else "check"
    return f"    server {safe_token(host.name, 'the server name')} {host_port(host.address, port)} {check}"


def render_haproxy_cfg(
    cluster: Cluster, *, api_port: int = API_PORT, admin_socket: str = ADMIN_SOCKET
) -> str:
    """The whole ``haproxy.cfg`` for ``cluster``'s load balancer hosts (all get the same file).

    ``api_port`` is the masters' API server port (kubeadm's ``bindPort``, 6443);
    ``admin_socket`` the stats socket. Both are parameters only so tests can run on loopback.
    Every value from the spec is written as one token; a value that could end the token or the
    line (a newline, a space, a quote, an IPv6 zone) raises :class:`UnsafeValueError`.
    """
    lb = cluster.load_balancer
    https = lb.health_check == "https-readyz"
    if https:
        check = [
            "    option httpchk",
            "    http-check send meth GET uri /readyz",
            "    http-check expect status 200",
        ]
    else:
        check = ["    option tcp-check"]
    lines = [
        f"# Rendered by hactl for cluster {safe_token(cluster.metadata.name, 'the cluster name')}. "
        "hactl apply overwrites it.",
        "global",
        "    log /dev/log local0",
        f"    chroot {hostlayout.HAPROXY_CHROOT}",
        "    user haproxy",
        "    group haproxy",
        f"    stats socket {safe_token(admin_socket, 'the admin socket')} mode 600 level admin "
        "expose-fd listeners",
        "    stats timeout 30s",
        "",
        "defaults",
        "    log global",
        "    mode tcp",
        "    option tcplog",
        "    option dontlognull",
        "    option redispatch",
        "    retries 3",
        f"    timeout connect {TIMEOUT_CONNECT}",
        f"    timeout client {TIMEOUT_CLIENT}",
        f"    timeout server {TIMEOUT_SERVER}",
        f"    timeout tunnel {TIMEOUT_TUNNEL}",
        f"    timeout check {TIMEOUT_CHECK}",
        "",
        f"frontend {FRONTEND}",
        f"    bind {bind_address(cluster)}",
        "    mode tcp",
        "    option tcplog",
        f"    default_backend {BACKEND}",
        "",
        f"backend {BACKEND}",
        "    mode tcp",
        f"    balance {safe_token(lb.balance, 'the balance algorithm')}",
        *check,
        f"    default-server {CHECK_TIMING} on-marked-down shutdown-sessions",
        *(_server_line(host, api_port, https) for host in cluster.masters),
    ]
    return "\n".join(lines) + "\n"


def haproxy_config_file(cluster: Cluster) -> RenderedFile:
    """``/etc/haproxy/haproxy.cfg`` as a file to install (check it with ``haproxy -c -f`` first,
    then reload gracefully)."""
    return public(CONFIG_PATH, render_haproxy_cfg(cluster))
