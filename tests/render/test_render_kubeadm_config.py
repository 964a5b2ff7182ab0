"""kubeadm documents checked against the kubeadm API's field names.

The field sets below are copied from the kubeadm configuration reference (kubernetes.io
"kubeadm Configuration (v1beta3)" / "(v1beta4)", i.e. the JSON tags of
cmd/kubeadm/app/apis/kubeadm/v1beta{3,4}/types.go as of Kubernetes 1.31), NOT from the renderer:
a renamed or misplaced field fails here."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from render_helpers import make_cluster

from hactl.render import kubeadm_config as kc
from hactl.render import pki
from hactl.sensitive import MASK, Sensitive

LEAF = None
ARGS_MAP = "map[string]string"
ARGS_LIST = "[]Arg"
LIST_OF_STR = "[]string"

API_ENDPOINT = {"advertiseAddress": LEAF, "bindPort": LEAF}
IMAGE_META = {"imageRepository": LEAF, "imageTag": LEAF}
HOST_PATH_MOUNT = {"name", "hostPath", "mountPath", "readOnly", "pathType"}


def _node_registration(args: str, *, v4: bool) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "name": LEAF,
        "criSocket": LEAF,
        "taints": LEAF,
        "kubeletExtraArgs": args,
        "ignorePreflightErrors": LIST_OF_STR,
        "imagePullPolicy": LEAF,
    }
    if v4:
        fields["imagePullSerial"] = LEAF
    return fields


def _schemas(v4: bool) -> dict[str, dict[str, Any]]:
    args = ARGS_LIST if v4 else ARGS_MAP
    component: dict[str, Any] = {"extraArgs": args, "extraVolumes": LEAF}
    if v4:
        component["extraEnvs"] = LEAF
    api_server = {**component, "certSANs": LIST_OF_STR}
    if not v4:
        api_server["timeoutForControlPlane"] = (
            LEAF  # moved to InitConfiguration.timeouts in v1beta4
        )
    local_etcd: dict[str, Any] = {
        **IMAGE_META,
        "dataDir": LEAF,
        "extraArgs": args,
        "serverCertSANs": LIST_OF_STR,
        "peerCertSANs": LIST_OF_STR,
    }
    if v4:
        local_etcd["extraEnvs"] = LEAF
    external_etcd = {"endpoints": LIST_OF_STR, "caFile": LEAF, "certFile": LEAF, "keyFile": LEAF}
    cluster: dict[str, Any] = {
        "apiVersion": LEAF,
        "kind": LEAF,
        "etcd": {"local": local_etcd, "external": external_etcd},
        "networking": {"serviceSubnet": LEAF, "podSubnet": LEAF, "dnsDomain": LEAF},
        "kubernetesVersion": LEAF,
        "controlPlaneEndpoint": LEAF,
        "apiServer": api_server,
        "controllerManager": component,
        "scheduler": component,
        "dns": {**IMAGE_META, **({"disabled": LEAF} if v4 else {})},
        "certificatesDir": LEAF,
        "imageRepository": LEAF,
        "featureGates": LEAF,
        "clusterName": LEAF,
    }
    if v4:
        cluster |= {
            "proxy": {"disabled": LEAF},
            "encryptionAlgorithm": LEAF,
            "certificateValidityPeriod": LEAF,
            "caCertificateValidityPeriod": LEAF,
        }
    init: dict[str, Any] = {
        "apiVersion": LEAF,
        "kind": LEAF,
        "bootstrapTokens": LEAF,
        "nodeRegistration": _node_registration(args, v4=v4),
        "localAPIEndpoint": API_ENDPOINT,
        "certificateKey": LEAF,
        "skipPhases": LIST_OF_STR,
        "patches": {"directory": LEAF},
    }
    discovery: dict[str, Any] = {
        "bootstrapToken": {
            "token": LEAF,
            "apiServerEndpoint": LEAF,
            "caCertHashes": LIST_OF_STR,
            "unsafeSkipCAVerification": LEAF,
        },
        "file": {"kubeConfigPath": LEAF},
        "tlsBootstrapToken": LEAF,
    }
    if not v4:
        discovery["timeout"] = LEAF  # moved to JoinConfiguration.timeouts.discovery in v1beta4
    join: dict[str, Any] = {
        "apiVersion": LEAF,
        "kind": LEAF,
        "nodeRegistration": _node_registration(args, v4=v4),
        "caCertPath": LEAF,
        "discovery": discovery,
        "controlPlane": {"localAPIEndpoint": API_ENDPOINT, "certificateKey": LEAF},
        "skipPhases": LIST_OF_STR,
        "patches": {"directory": LEAF},
    }
    if v4:
        timeouts = {
            "controlPlaneComponentHealthCheck": LEAF,
            "kubeletHealthCheck": LEAF,
            "kubernetesAPICall": LEAF,
            "etcdAPICall": LEAF,
            "tlsBootstrap": LEAF,
            "discovery": LEAF,
            "upgradeManifests": LEAF,
        }
        init |= {"dryRun": LEAF, "timeouts": timeouts}
        join |= {"dryRun": LEAF, "timeouts": timeouts}
    return {"ClusterConfiguration": cluster, "InitConfiguration": init, "JoinConfiguration": join}


def check_fields(value: Any, schema: Any, path: str) -> None:
    """Every key of ``value`` must exist in ``schema``; argument fields must have the version's shape."""
    if schema is LEAF:
        assert not isinstance(value, dict | list) or path.endswith(("taints", "bootstrapTokens")), (
            path
        )
    elif schema == ARGS_MAP:
        assert isinstance(value, dict) and all(isinstance(v, str) for v in value.values()), path
    elif schema == ARGS_LIST:
        assert isinstance(value, list), f"{path}: v1beta4 wants a list of {{name, value}}"
        for item in value:
            assert set(item) == {"name", "value"}, path
    elif schema == LIST_OF_STR:
        assert isinstance(value, list) and all(isinstance(v, str) for v in value), path
    else:
        assert isinstance(value, dict), path
        unknown = set(value) - set(schema)
        assert not unknown, f"{path}: not kubeadm fields: {sorted(unknown)}"
        for key, item in value.items():
            check_fields(item, schema[key], f"{path}.{key}")


def check_documents(text: str, version: str) -> list[dict[str, Any]]:
    docs = list(yaml.safe_load_all(text))
    schemas = _schemas(version == kc.V1BETA4)
    for doc in docs:
        assert doc["apiVersion"] == version
        check_fields(doc, schemas[doc["kind"]], doc["kind"])
    return docs


def creds(control_plane: bool = True) -> kc.JoinCredentials:
    ca = pki.make_ca("kubernetes", key_type="ecdsa")
    return kc.JoinCredentials(
        token=Sensitive("abcdef.0123456789abcdef"),
        ca_cert_hashes=(pki.spki_sha256(ca.cert),),
        certificate_key=Sensitive("f" * 64) if control_plane else None,
    )


@pytest.mark.parametrize(
    ("version", "api"),
    [
        ("1.30.4", kc.V1BETA3),
        ("1.29.0", kc.V1BETA3),
        ("1.31.0", kc.V1BETA4),
        ("1.32.2", kc.V1BETA4),
    ],
)
def test_api_version_by_kubernetes_version(version: str, api: str) -> None:
    cluster = make_cluster(version=version)
    assert kc.api_version(cluster) == api
    init, clus = check_documents(kc.render_init_config(cluster), api)
    assert [init["kind"], clus["kind"]] == ["InitConfiguration", "ClusterConfiguration"]
    args = init["nodeRegistration"]["kubeletExtraArgs"]
    if api == kc.V1BETA4:
        assert args == [{"name": "node-ip", "value": "198.18.0.11"}]
    else:
        assert args == {"node-ip": "198.18.0.11"}
    for node in ("master02", "worker01"):
        cp = node.startswith("master")
        text = kc.render_join_config(cluster, node, creds(cp))
        (join,) = check_documents(text, api)
        assert ("controlPlane" in join) == cp


def test_seed_external_etcd_exactly_as_the_seed() -> None:
    seed_block = yaml.safe_load(
        """
etcd:
  external:
    endpoints:
    - https://10.0.0.21:2379
    - https://10.0.0.22:2379
    - https://10.0.0.23:2379
    caFile: /etc/kubernetes/pki/etcd/ca.crt
    certFile: /etc/kubernetes/pki/apiserver-etcd-client.crt
    keyFile: /etc/kubernetes/pki/apiserver-etcd-client.key
"""
    )
    cluster = make_cluster("seed")
    init, clus = yaml.safe_load_all(kc.render_init_config(cluster))
    assert {"etcd": clus["etcd"]} == seed_block
    assert clus["controlPlaneEndpoint"] == "loadbalancer.example.com:6443"
    assert clus["networking"] == {
        "podSubnet": "10.244.0.0/16",
        "serviceSubnet": "10.96.0.0/12",
        "dnsDomain": "cluster.local",
    }
    assert clus["kubernetesVersion"] == "v1.30.4"
    assert "loadbalancer.example.com" in clus["apiServer"]["certSANs"]
    assert init["nodeRegistration"]["name"] == "master01"
    assert init["localAPIEndpoint"] == {"advertiseAddress": "10.0.0.11", "bindPort": 6443}
    assert kc.render_init_config(cluster) == kc.render_init_config(cluster)  # deterministic


@pytest.mark.parametrize("version", ["1.30.4", "1.31.1"])
def test_stacked_etcd_is_local(version: str) -> None:
    cluster = make_cluster(topology="stacked", version=version)
    _, clus = check_documents(kc.render_init_config(cluster), kc.api_version(cluster))
    assert clus["etcd"] == {"local": {"dataDir": "/var/lib/etcd"}}


def test_join_documents_keep_secrets_out_of_sight() -> None:
    cluster = make_cluster(version="1.31.0")
    credentials = creds()
    shown = kc.render_join_config(cluster, "master02", credentials)
    assert "abcdef.0123456789abcdef" not in shown and "f" * 64 not in shown
    (join,) = yaml.safe_load_all(shown)
    assert join["discovery"]["bootstrapToken"]["token"] == MASK
    assert join["controlPlane"]["certificateKey"] == MASK
    assert join["discovery"]["bootstrapToken"]["caCertHashes"][0].startswith("sha256:")
    assert join["discovery"]["bootstrapToken"]["apiServerEndpoint"] == "k8s-api.lab:6443"
    assert join["controlPlane"]["localAPIEndpoint"]["advertiseAddress"] == "198.18.0.12"

    wire = kc.join_config_file(cluster, "master02", credentials)
    assert wire.mode == 0o600 and wire.secret
    assert "abcdef" not in repr(wire) + str(wire.content)
    (real,) = yaml.safe_load_all(wire.reveal())
    assert real["discovery"]["bootstrapToken"]["token"] == "abcdef.0123456789abcdef"
    assert real["controlPlane"]["certificateKey"] == "f" * 64
    check_fields(real, _schemas(True)["JoinConfiguration"], "JoinConfiguration")

    init_text = kc.render_init_config(cluster)
    assert "token" not in init_text.lower() and "certificateKey" not in init_text


def test_join_refusals() -> None:
    cluster = make_cluster()
    with pytest.raises(ValueError, match="certificate key"):
        kc.join_configuration(cluster, "master02", creds(control_plane=False))
    with pytest.raises(ValueError, match="neither a master nor a worker"):
        kc.join_configuration(cluster, "etcd01", creds())
    with pytest.raises(ValueError, match="pin"):
        kc.join_configuration(
            cluster, "worker01", kc.JoinCredentials(Sensitive("t"), ca_cert_hashes=())
        )
    with pytest.raises(KeyError):
        kc.init_configuration(cluster, "worker01")


def test_vip_and_lb_addresses_in_cert_sans() -> None:
    cluster = make_cluster(vip="198.18.0.100")
    assert kc.api_server_cert_sans(cluster) == ["k8s-api.lab", "198.18.0.100", "198.18.0.10"]


def test_the_field_check_catches_version_mistakes() -> None:
    """The checker itself: v1beta3-only shapes are refused in v1beta4 and vice versa."""
    v4 = _schemas(True)["ClusterConfiguration"]
    with pytest.raises(AssertionError, match="not kubeadm fields"):
        check_fields({"apiServer": {"timeoutForControlPlane": "4m"}}, v4, "ClusterConfiguration")
    with pytest.raises(AssertionError, match="list of"):
        check_fields({"apiServer": {"extraArgs": {"v": "2"}}}, v4, "ClusterConfiguration")
    v3 = _schemas(False)["InitConfiguration"]
    with pytest.raises(AssertionError, match="not kubeadm fields"):
        check_fields({"timeouts": {}}, v3, "InitConfiguration")
    with pytest.raises(AssertionError, match="not kubeadm fields"):
        check_fields({"etcd": {"external": {"caCert": "x"}}}, v4, "ClusterConfiguration")


def test_init_config_file() -> None:
    cluster = make_cluster()
    file = kc.init_config_file(cluster)
    assert (file.path, file.mode, file.secret) == ("/etc/hactl/kubeadm-config.yaml", 0o644, False)
    assert file.reveal() == kc.render_init_config(cluster)


@pytest.mark.parametrize("version", ["1.30.4", "1.31.1"])
def test_init_secret_config_file_carries_the_key_the_long_lived_one_never(version: str) -> None:
    """F1: with --config, the key must be InitConfiguration.certificateKey (real kubeadm refuses
    --certificate-key next to --config). Only the short-lived 0600 file holds it: `kubeadm init
    phase upload-certs --config` reuses the long-lived one and would re-upload under a key found
    there instead of making a fresh one (uploadcerts.go: a new key only when CertificateKey is empty)."""
    cluster = make_cluster(version=version)
    key = Sensitive("0123456789abcdef" * 4)
    file = kc.init_secret_config_file(cluster, key)
    assert (file.path, file.mode, file.secret) == (kc.INIT_SECRET_CONFIG_PATH, 0o600, True)
    assert key.reveal() not in repr(file) + str(file.content)
    init, clus = check_documents(file.reveal(), kc.api_version(cluster))
    assert init["certificateKey"] == key.reveal()
    assert clus == list(yaml.safe_load_all(kc.render_init_config(cluster)))[1]
    assert "certificateKey" not in kc.render_init_config(cluster)
    assert kc.INIT_SECRET_CONFIG_PATH.startswith("/run/") and kc.JOIN_CONFIG_PATH.startswith("/run/")
    with pytest.raises(ValueError, match="32 random bytes"):
        kc.init_secret_config_file(cluster, Sensitive("F" * 64))  # hactl makes and reads lower-case hex only
