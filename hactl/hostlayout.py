"""Every path on the hosts that hactl reads, writes or names: one module, one spelling.

The facts (what the probe reads), the renderers (what files hactl writes), the command builders
and the steps (what apply runs), ``hactl check`` and the refusals' advice all take their paths
from here, so a path cannot differ between what hactl plans, writes and later reads back.

Pure: the standard library only and nothing of hactl, so every layer may import it
(``pyproject.toml``'s import-linter contracts place it at the bottom).
"""

from __future__ import annotations

# -- etcd (external topology: hactl's systemd unit on the etcd members) ----------------------

ETCD_DIR = "/etc/etcd"
ETCD_ENV = f"{ETCD_DIR}/etcd.env"
"""The member's configuration (a systemd ``EnvironmentFile``; ``hactl.render.etcd``)."""
ETCD_UNIT = "/etc/systemd/system/etcd.service"
"""hactl's unit for etcd (a distro's own unit under /lib/systemd is not this one)."""
ETCD_BINARY = "/usr/bin/etcd"
"""What the unit's ``ExecStart`` runs."""
ETCD_BOOTSTRAP_MARKER = f"{ETCD_DIR}/hactl-bootstrap-pending"
"""Written by hactl's bootstrap of a new cluster before the member starts, removed on every
member once the cluster is healthy: its presence proves the cluster never formed."""
ETCD_DEFAULT_DATA_DIR = "/var/lib/etcd"
"""The data dir when the env file names none (etcd's own default is ``NAME.etcd``; kubeadm's
and the spec's default is this)."""

ETCD_PKI_DIR = f"{ETCD_DIR}/pki"
ETCD_CA_CERT = f"{ETCD_PKI_DIR}/ca.crt"
ETCD_CA_KEY = f"{ETCD_PKI_DIR}/ca.key"
ETCD_SERVER_CERT = f"{ETCD_PKI_DIR}/server.crt"
ETCD_SERVER_KEY = f"{ETCD_PKI_DIR}/server.key"
ETCD_PEER_CERT = f"{ETCD_PKI_DIR}/peer.crt"
ETCD_PEER_KEY = f"{ETCD_PKI_DIR}/peer.key"
ETCD_CLIENT_CERT = f"{ETCD_PKI_DIR}/healthcheck-client.crt"
"""The client certificate hactl's etcdctl presents on an external member."""
ETCD_CLIENT_KEY = f"{ETCD_PKI_DIR}/healthcheck-client.key"
ETCD_MEMBER_FILES = ("server.crt", "server.key", "peer.crt", "peer.key",
                     "healthcheck-client.crt", "healthcheck-client.key")
"""A member's own certificate files under :data:`ETCD_PKI_DIR`, next to the CA (hactl issues
them together)."""

# -- HAProxy (the load balancers) ------------------------------------------------------------

HAPROXY_CFG = "/etc/haproxy/haproxy.cfg"
HAPROXY_CFG_NEW = f"{HAPROXY_CFG}.hactl-new"
"""Where ``ConfigureHAProxy`` writes the new file and checks it (``haproxy -c``) before it
moves it over :data:`HAPROXY_CFG`."""
HAPROXY_ADMIN_SOCKET = "/run/haproxy/admin.sock"
"""The stats socket the rendered configuration declares (backend states)."""
HAPROXY_CHROOT = "/var/lib/haproxy"
"""The ``chroot`` the rendered configuration names (Debian's haproxy package creates it)."""

# -- Kubernetes (kubeadm, the kubelet) -------------------------------------------------------

K8S_DIR = "/etc/kubernetes"
ADMIN_CONF = f"{K8S_DIR}/admin.conf"
KUBELET_CONF = f"{K8S_DIR}/kubelet.conf"
"""Written when a node joined (or was initialised): the kubelet's kubeconfig."""
K8S_MANIFESTS = f"{K8S_DIR}/manifests"
APISERVER_MANIFEST = f"{K8S_MANIFESTS}/kube-apiserver.yaml"
ETCD_MANIFEST = f"{K8S_MANIFESTS}/etcd.yaml"
"""kubeadm's static Pod for stacked etcd."""
K8S_TMP = f"{K8S_DIR}/tmp"
"""kubeadm's backups of manifests it replaced (``kubeadm-backup-manifests-*``)."""
K8S_PKI = f"{K8S_DIR}/pki"
K8S_CA_CERT = f"{K8S_PKI}/ca.crt"
APISERVER_CERT = f"{K8S_PKI}/apiserver.crt"
"""The API server's serving certificate (its subjectAltNames are compared with the spec)."""
K8S_FRONT_PROXY_CA_CERT = f"{K8S_PKI}/front-proxy-ca.crt"
K8S_ETCD_PKI = f"{K8S_PKI}/etcd"
K8S_ETCD_CA = f"{K8S_ETCD_PKI}/ca.crt"
"""External etcd: the etcd CA the API server trusts; stacked: kubeadm's etcd CA."""
STACKED_ETCD_CLIENT_CERT = f"{K8S_ETCD_PKI}/healthcheck-client.crt"
"""Stacked etcd: the client certificate hactl's etcdctl presents (kubeadm issues it)."""
STACKED_ETCD_CLIENT_KEY = f"{K8S_ETCD_PKI}/healthcheck-client.key"
APISERVER_ETCD_CLIENT_CERT = f"{K8S_PKI}/apiserver-etcd-client.crt"
APISERVER_ETCD_CLIENT_KEY = f"{K8S_PKI}/apiserver-etcd-client.key"
KUBELET_DIR = "/var/lib/kubelet"
KUBELET_CONFIG = f"{KUBELET_DIR}/config.yaml"
"""Written by kubeadm's kubelet-start phase."""
KUBELET_CLIENT_CERT = f"{KUBELET_DIR}/pki/kubelet-client-current.pem"
"""The kubelet's rotated client certificate (and key) once it bootstrapped."""

# -- hactl's own files -----------------------------------------------------------------------

HACTL_ETC = "/etc/hactl"
KUBEADM_CONFIG = f"{HACTL_ETC}/kubeadm-config.yaml"
"""The InitConfiguration + ClusterConfiguration that ``upload-certs`` reuses (no secret in it)."""
HACTL_RUN = "/run/hactl"
"""tmpfs on systemd hosts: a secret file left by a killed run never reaches a disk and is gone
at the next boot (created 0700 by the transport's ``umask 077``)."""
KUBEADM_INIT_CONFIG = f"{HACTL_RUN}/kubeadm-init.yaml"
"""The same plus ``certificateKey``, for ``kubeadm init`` only: 0600, removed after init."""
KUBEADM_JOIN_CONFIG = f"{HACTL_RUN}/kubeadm-join.yaml"
"""The JoinConfiguration (token, CA pin, certificate key): 0600, removed after the join."""
HAPROXY_LOADED_MARKER = f"{HACTL_RUN}/haproxy.sha256"
"""Written by ``ConfigureHAProxy`` after haproxy (re)loaded a file: that file's sha256. /run is
emptied at boot, when the service loads the file anew (the start times then tell)."""
HACTL_LOCK_ROOT = "/var/lib/hactl"
"""The apply lock's folder (``lock.d/owner.json``, ``lock.mutex``) on the etcd members."""

# -- the operating system's (read only) ------------------------------------------------------

OS_RELEASE = "/etc/os-release"
"""The distribution's ID, VERSION_ID and PRETTY_NAME (the ``system`` fact)."""

# -- host preparation (the spec's opt-in ``prepare`` section) ---------------------------------

APT_SOURCE = "/etc/apt/sources.list.d/kubernetes.list"
"""The APT source of kubeadm, kubelet and kubectl (as Kubernetes' install guide names it)."""
APT_KEYRING_DIR = "/etc/apt/keyrings"
APT_KEYRING_ASC = f"{APT_KEYRING_DIR}/kubernetes-apt-keyring.asc"
"""The repository's signing key when ASCII-armoured (APT reads ``.asc`` keyrings as such)."""
APT_KEYRING_GPG = f"{APT_KEYRING_DIR}/kubernetes-apt-keyring.gpg"
"""The repository's signing key when binary."""
MODULES_LOAD = "/etc/modules-load.d/k8s.conf"
"""Kernel modules loaded at boot: overlay, br_netfilter."""
SYSCTL_CONF = "/etc/sysctl.d/k8s.conf"
"""Kernel settings applied at boot: ip_forward, bridge-nf-call-iptables/ip6tables."""
FSTAB = "/etc/fstab"
CONTAINERD_CONFIG = "/etc/containerd/config.toml"
"""containerd's configuration (the systemd cgroup driver)."""
CONTAINERD_SOCKET = "/run/containerd/containerd.sock"
"""containerd's CRI socket (kubeadm's default ``criSocket``)."""
