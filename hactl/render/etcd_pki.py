"""The etcd cluster's PKI, laid out like kubeadm's ``/etc/kubernetes/pki/etcd``.

On each etcd member, under ``/etc/etcd/pki/``:

=========================== ============================== ====================================
file                        subject                        usage / SANs
=========================== ============================== ====================================
ca.crt                      CN=etcd-ca                     the etcd CA (its key stays with hactl)
server.crt / .key           CN=<member>                    server+client; DNS <member>,
                                                           localhost; IP <address>, 127.0.0.1, ::1
peer.crt / .key             CN=<member>                    server+client (peers dial each other);
                                                           same SANs
healthcheck-client.crt/.key CN=kube-etcd-healthcheck-client client (etcdctl, health probes)
=========================== ============================== ====================================

The server certificate carries clientAuth as well (as kubeadm's does): etcd's gRPC gateway dials
the member itself with it, and the seed's ``etcdctl --cert server.crt`` uses it as a client.

On each master (kubeadm's external-etcd paths, exactly as the seed shows):
``/etc/kubernetes/pki/etcd/ca.crt`` and ``/etc/kubernetes/pki/apiserver-etcd-client.{crt,key}``
(CN=kube-apiserver-etcd-client, O=system:masters, client).

Building certificates is not deterministic (fresh keys, serials): hactl issues them once and then
compares what the hosts hold (issuer, SANs, expiry), never the bytes.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass

from hactl import hostlayout
from hactl.render import etcd, pki
from hactl.render.files import RenderedFile, public, secret
from hactl.spec.models import Cluster, Host

CA_COMMON_NAME = "etcd-ca"
HEALTHCHECK_CN = "kube-etcd-healthcheck-client"
APISERVER_CLIENT_CN = "kube-apiserver-etcd-client"
APISERVER_CLIENT_ORG = "system:masters"

K8S_ETCD_CA = hostlayout.K8S_ETCD_CA
APISERVER_ETCD_CLIENT_CERT = hostlayout.APISERVER_ETCD_CLIENT_CERT
APISERVER_ETCD_CLIENT_KEY = hostlayout.APISERVER_ETCD_CLIENT_KEY


@dataclass(frozen=True)
class MemberPKI:
    """One member's certificates."""

    name: str
    server: pki.CertKey
    peer: pki.CertKey
    healthcheck_client: pki.CertKey


@dataclass(frozen=True)
class EtcdPKI:
    """Every certificate the etcd cluster and its clients need, signed by one CA."""

    ca: pki.CertKey
    members: dict[str, MemberPKI]
    apiserver_etcd_client: pki.CertKey

    def member_files(self, name: str) -> list[RenderedFile]:
        """Files for etcd member ``name`` under ``/etc/etcd/pki`` (keys 0600, masked)."""
        member = self.members[name]
        files = [public(etcd.CA_CERT, self.ca.cert_pem())]
        for (crt, key), pair in [
            ((etcd.SERVER_CERT, etcd.SERVER_KEY), member.server),
            ((etcd.PEER_CERT, etcd.PEER_KEY), member.peer),
            ((etcd.HEALTHCHECK_CERT, etcd.HEALTHCHECK_KEY), member.healthcheck_client),
        ]:
            files += [public(crt, pair.cert_pem()), secret(key, pair.key_pem())]
        return files

    def master_files(self) -> list[RenderedFile]:
        """Files a master needs to reach external etcd (kubeadm's ``etcd.external`` paths)."""
        pair = self.apiserver_etcd_client
        return [
            public(K8S_ETCD_CA, self.ca.cert_pem()),
            public(APISERVER_ETCD_CLIENT_CERT, pair.cert_pem()),
            secret(APISERVER_ETCD_CLIENT_KEY, pair.key_pem()),
        ]


def member_sans(host: Host) -> tuple[list[str], list[str]]:
    """``(dns_names, ip_addresses)`` for a member's server and peer certificates."""
    ips = [str(host.address), "127.0.0.1", "::1"]
    return [host.name, "localhost"], list(
        dict.fromkeys(ipaddress.ip_address(ip).compressed for ip in ips)
    )


def make_etcd_ca(*, key_type: pki.KeyType = "rsa", now: dt.datetime | None = None) -> pki.CertKey:
    return pki.make_ca(CA_COMMON_NAME, key_type=key_type, now=now)


def issue_member(
    ca: pki.CertKey, host: Host, *, key_type: pki.KeyType = "rsa", now: dt.datetime | None = None
) -> MemberPKI:
    dns, ips = member_sans(host)
    server = pki.issue(
        ca, host.name, usage="peer", dns_names=dns, ip_addresses=ips, key_type=key_type, now=now
    )
    peer = pki.issue(
        ca, host.name, usage="peer", dns_names=dns, ip_addresses=ips, key_type=key_type, now=now
    )
    health = pki.issue(ca, HEALTHCHECK_CN, usage="client", key_type=key_type, now=now)
    return MemberPKI(host.name, server, peer, health)


def issue_apiserver_etcd_client(
    ca: pki.CertKey, *, key_type: pki.KeyType = "rsa", now: dt.datetime | None = None
) -> pki.CertKey:
    return pki.issue(
        ca,
        APISERVER_CLIENT_CN,
        usage="client",
        organizations=[APISERVER_CLIENT_ORG],
        key_type=key_type,
        now=now,
    )


def build_etcd_pki(
    cluster: Cluster,
    ca: pki.CertKey | None = None,
    *,
    key_type: pki.KeyType = "rsa",
    now: dt.datetime | None = None,
) -> EtcdPKI:
    """The whole set for ``cluster``'s etcd members (a fresh CA unless ``ca`` is given)."""
    ca = ca or make_etcd_ca(key_type=key_type, now=now)
    members = {
        host.name: issue_member(ca, host, key_type=key_type, now=now)
        for host in cluster.etcd_members
    }
    client = issue_apiserver_etcd_client(ca, key_type=key_type, now=now)
    return EtcdPKI(ca, members, client)
