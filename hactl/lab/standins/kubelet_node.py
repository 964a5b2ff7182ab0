"""The kubelet stand-in's API side: TLS bootstrap, Node registration, heartbeats, mirror Pods,
and the ordinary Pods bound to the Node (Running/Ready at once, deletion finished at once)."""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import os
import platform
import time
from typing import Any

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID

from .kubeadm_api import Api, ApiError, load_kubeconfig, ns_path
from .kubeadm_common import P, kubernetes_version, write_file
from .kubelet_network import EffectError, HostEffects
from .kubelet_pods import PodProc
from .pkiutil import key_pem, new_key

PKI = "/var/lib/kubelet/pki"
FORCE = {"gracePeriodSeconds": 0}
MIRROR = "kubernetes.io/config.mirror"
CSR_PATH = "/apis/certificates.k8s.io/v1/certificatesigningrequests"


def now_rfc3339(micro: bool = False) -> str:
    stamp = dt.datetime.now(dt.UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.%fZ") if micro else stamp.strftime("%Y-%m-%dT%H:%M:%SZ")


def tls_bootstrap(bootstrap_conf: str, kubeconfig_path: str, node: str, timeout: float = 300) -> bool:
    """Real kubelet TLS bootstrap: a CSR for system:node:<node> with the bootstrap token, wait
    for the controller-manager to approve and sign it, then write kubelet.conf pointing at
    /var/lib/kubelet/pki/kubelet-client-current.pem."""
    cfg = load_kubeconfig(bootstrap_conf)
    api = Api(cfg["server"], ca_pem=cfg["ca"], token=cfg.get("token"))
    key = new_key("ecdsa")
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "system:nodes"),
                                    x509.NameAttribute(NameOID.COMMON_NAME, f"system:node:{node}")]))
           .sign(key, hashes.SHA256()))
    body = {"apiVersion": "certificates.k8s.io/v1", "kind": "CertificateSigningRequest",
            "metadata": {"generateName": "node-csr-", "name": f"node-csr-{os.urandom(6).hex()}"},
            "spec": {"request": base64.b64encode(csr.public_bytes(serialization.Encoding.PEM)).decode(),
                     "signerName": "kubernetes.io/kube-apiserver-client-kubelet",
                     "usages": ["digital signature", "client auth"]}}
    created = api.create(CSR_PATH, body)
    name = created["metadata"]["name"]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = api.get(f"{CSR_PATH}/{name}").get("status") or {}
        if status.get("certificate"):
            cert_pem = base64.b64decode(status["certificate"])
            stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d-%H-%M-%S")
            pem_path = f"{PKI}/kubelet-client-{stamp}.pem"
            write_file(pem_path, cert_pem + key_pem(key), 0o600)
            current = P(f"{PKI}/kubelet-client-current.pem")
            if os.path.lexists(current):
                os.unlink(current)
            os.symlink(P(pem_path), current)
            user = "default-auth"
            doc = {"apiVersion": "v1", "kind": "Config", "preferences": {},
                   "clusters": [{"name": "default-cluster", "cluster": {
                       "certificate-authority-data": base64.b64encode(cfg["ca"]).decode(),
                       "server": cfg["server"]}}],
                   "contexts": [{"name": "default-context", "context": {"cluster": "default-cluster",
                                                                        "namespace": "default", "user": user}}],
                   "current-context": "default-context",
                   "users": [{"name": user, "user": {"client-certificate": current, "client-key": current}}]}
            write_file(kubeconfig_path, yaml.safe_dump(doc, sort_keys=False), 0o600)
            return True
        time.sleep(1)
    return False


class NodeAgent:
    def __init__(self, api: Api, name: str, address: str, labels: dict[str, str],
                 network_error: Any = None, address_error: str = "",
                 log: Any = None) -> None:
        self.api = api
        self.name = name
        self.address = address
        self.labels = labels
        self.registered = False
        self.mirrors: dict[str, str] = {}  # key -> "<pid>:<ready>" last posted
        self.node_uid = ""
        #: () -> the runtime's network error ("" = ready), see kubelet_network.network_error
        self.network_error = network_error or (lambda: "")
        #: a --node-ip that fails validateNodeIP: the addresses are never set (real kubelet)
        self.address_error = address_error
        self.log = log or (lambda message: None)
        self.waiting: dict[str, str] = {}  # pod uid -> why it does not run (last logged)
        self.posted: dict[str, str] = {}  # pod uid -> the not-running status last posted

    def node_object(self) -> dict[str, Any]:
        labels = {"beta.kubernetes.io/arch": "amd64", "beta.kubernetes.io/os": "linux",
                  "kubernetes.io/arch": "amd64", "kubernetes.io/hostname": self.name,
                  "kubernetes.io/os": "linux", **self.labels}
        return {"apiVersion": "v1", "kind": "Node",
                "metadata": {"name": self.name, "labels": labels,
                             "annotations": {"node.alpha.kubernetes.io/ttl": "0",
                                             "volumes.kubernetes.io/controller-managed-attach-detach": "true"}},
                "spec": {},
                "status": self.status({})}

    def status(self, old: dict[str, Any]) -> dict[str, Any]:
        stamp = now_rfc3339()
        previous = {c.get("type"): c for c in old.get("conditions") or []}

        def cond(kind: str, status: str, reason: str, message: str) -> dict[str, str]:
            before = previous.get(kind) or {}
            since = before.get("lastTransitionTime") if before.get("status") == status else stamp
            return {"type": kind, "status": status, "reason": reason, "message": message,
                    "lastHeartbeatTime": stamp, "lastTransitionTime": since or stamp}

        uname = platform.uname()
        status = dict(old)
        network = self.network_error()
        ready = cond("Ready", "False", "KubeletNotReady", network) if network else \
            cond("Ready", "True", "KubeletReady", "kubelet is posting ready status")
        if self.address_error:
            # setNodeStatus: the NodeAddress setter fails, the others still run
            self.log(f'"Failed to set some node status fields" err="failed to validate nodeIP: '
                     f'{self.address_error}" node="{self.name}"')
        else:
            status["addresses"] = [{"type": "InternalIP", "address": self.address},
                                   {"type": "Hostname", "address": self.name}]
        status.update({
            "capacity": {"cpu": str(os.cpu_count() or 1), "memory": "4Gi", "pods": "110"},
            "allocatable": {"cpu": str(os.cpu_count() or 1), "memory": "4Gi", "pods": "110"},
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "nodeInfo": {"architecture": "amd64", "bootID": "", "containerRuntimeVersion": "hactl-lab://1.0",
                         "kernelVersion": uname.release, "kubeProxyVersion": kubernetes_version(),
                         "kubeletVersion": kubernetes_version(), "machineID": "", "operatingSystem": "linux",
                         "osImage": "hactl lab node", "systemUUID": ""},
            "conditions": [
                cond("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
                cond("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
                cond("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
                ready,
            ],
        })
        return status

    def register(self) -> None:
        try:
            self.api.create("/api/v1/nodes", self.node_object())
        except ApiError as exc:
            if exc.status != 409:
                raise
        self.registered = True

    def heartbeat(self) -> None:
        if not self.registered:
            self.register()
        try:
            node = self.api.get(f"/api/v1/nodes/{self.name}")
        except ApiError as exc:
            if exc.status == 404:  # deleted behind our back: register again, as the kubelet does
                self.registered = False
            raise
        self.node_uid = str(node.get("metadata", {}).get("uid", ""))
        node["status"] = self.status(node.get("status") or {})
        self.api.replace(f"/api/v1/nodes/{self.name}/status", node)
        self.renew_lease(node)

    def renew_lease(self, node: dict[str, Any]) -> None:
        path = f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{self.name}"
        spec = {"holderIdentity": self.name, "leaseDurationSeconds": 40, "renewTime": now_rfc3339(True)}
        try:
            lease = self.api.get(path)
            lease["spec"] = {**(lease.get("spec") or {}), **spec}
            self.api.replace(path, lease)
        except ApiError as exc:
            if exc.status != 404:
                raise
            owner = {"apiVersion": "v1", "kind": "Node", "name": self.name,
                     "uid": node.get("metadata", {}).get("uid", "")}
            self.api.create("/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases",
                            {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                             "metadata": {"name": self.name, "namespace": "kube-node-lease",
                                          "ownerReferences": [owner]}, "spec": spec})

    def mirror(self, procs: dict[str, PodProc]) -> None:
        """Mirror Pods so that ``kubectl get pods -A`` lists the static Pods, as with a real kubelet."""
        if not self.node_uid:
            return
        for key in [k for k in self.mirrors if k not in procs]:  # static Pod removed: mirror goes too
            namespace, _, name = key.partition("_")
            try:  # the real mirror client deletes with grace period 0
                self.api.delete(ns_path(namespace, "pods", f"{name}-{self.name}"), FORCE)
            except ApiError as exc:
                if exc.status != 404:
                    raise
            del self.mirrors[key]
        for key, proc in procs.items():
            ready = proc.alive()
            state = f"{proc.pid}:{ready}:{proc.restarts}"
            if self.mirrors.get(key) == state:
                continue
            name = f"{proc.name}-{self.name}"
            pod = dict(proc.pod)
            meta = dict(pod.get("metadata") or {})
            meta["name"] = name
            meta["namespace"] = proc.namespace
            meta["annotations"] = {**(meta.get("annotations") or {}),
                                   "kubernetes.io/config.hash": proc.manifest_hash,
                                   "kubernetes.io/config.mirror": proc.manifest_hash,
                                   "kubernetes.io/config.source": "file"}
            meta["ownerReferences"] = [{"apiVersion": "v1", "kind": "Node", "name": self.name,
                                        "uid": self.node_uid, "controller": True}]
            pod["metadata"] = meta
            pod["spec"] = {**(pod.get("spec") or {}), "nodeName": self.name}
            container = ((pod["spec"].get("containers") or [{}])[0]).get("name", "main")
            started = dt.datetime.fromtimestamp(proc.started_at or time.time(), dt.UTC)
            pod["status"] = {
                "phase": "Running" if ready else "Pending",
                "hostIP": self.address, "podIP": self.address,
                "startTime": started.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
                "containerStatuses": [{"name": container, "ready": ready, "restartCount": proc.restarts,
                                       "started": ready, "image": pod["spec"].get("containers", [{}])[0].get("image", ""),
                                       "state": {"running": {"startedAt": started.strftime("%Y-%m-%dT%H:%M:%SZ")}}
                                       if ready else {"waiting": {"reason": "CrashLoopBackOff"}}}],
            }
            path = ns_path(proc.namespace, "pods", name)
            try:
                current: dict[str, Any] | None = self.api.get(path)
            except ApiError as exc:
                if exc.status != 404:
                    raise
                current = None
            seen = (((current or {}).get("metadata") or {}).get("annotations") or {}).get(
                "kubernetes.io/config.mirror")
            if current is not None and seen != proc.manifest_hash:
                # the static Pod changed (a new manifest): like the real kubelet, the old mirror
                # Pod is deleted and one for the running manifest is created
                self.api.delete(path, FORCE)
                current = None
            if current is None:
                self.api.create(ns_path(proc.namespace, "pods"), pod)
            else:
                current["status"] = pod["status"]
                self.api.replace(f"{path}/status", current)
            self.mirrors[key] = state

    # -- ordinary pods ---------------------------------------------------------------------------

    def sync_pods(self) -> None:
        """The pods the API binds to this node (``spec.nodeName``), other than mirror pods, run
        as pause containers do: reported Running and Ready at once. A pod being deleted
        (``deletionTimestamp``) has nothing left to stop, so the kubelet finishes its deletion
        at once (grace period 0, the pod's uid as precondition), as the real status manager does
        once the containers are gone. A mirror pod being deleted is deleted for good and made
        again from the static Pod, as the real kubelet's pod manager does."""
        if not self.node_uid:
            return
        pods = self.api.get("/api/v1/pods", fieldSelector=f"spec.nodeName={self.name}")
        for pod in pods.get("items") or []:
            meta = pod.get("metadata") or {}
            namespace, name = str(meta.get("namespace") or "default"), str(meta.get("name"))
            path = ns_path(namespace, "pods", name)
            if MIRROR in (meta.get("annotations") or {}):
                if meta.get("deletionTimestamp"):
                    self._finish(path, meta)
                    for key in [k for k in self.mirrors
                                if k == f"{namespace}_{name[:-len(self.name) - 1]}"]:
                        del self.mirrors[key]  # recreated by the next mirror()
                continue
            if meta.get("deletionTimestamp"):
                self._finish(path, meta)
                continue
            status = pod.get("status") or {}
            if status.get("phase") == "Running" and any(
                    c.get("type") == "Ready" and c.get("status") == "True"
                    for c in status.get("conditions") or []):
                self.waiting.pop(str(meta.get("uid")), None)
                continue
            new = self.start_pod(pod, namespace)
            uid = str(meta.get("uid"))
            if new["phase"] != "Running":
                sig = repr([(c.get("name"), c.get("state")) for c in
                            new.get("initContainerStatuses", []) + new["containerStatuses"]])
                if self.posted.get(uid) == sig:
                    continue  # nothing new to report
                self.posted[uid] = sig
            else:
                self.posted.pop(uid, None)
            pod["status"] = new
            try:
                self.api.replace(f"{path}/status", pod)
            except ApiError as exc:
                if exc.status not in (404, 409):  # gone or changed: seen again next round
                    raise

    def start_pod(self, pod: dict[str, Any], namespace: str) -> dict[str, Any]:
        """What starting ``pod`` gives: the running status, or why it is not running yet.
        Like the real ``syncPod``: a pod not on the host network waits while the runtime's
        network is not ready (Event ``NetworkNotReady``); then the init containers run in order
        and the containers start, each with its host effects (kubelet_network.HostEffects)."""
        spec = pod.get("spec") or {}
        uid = str((pod.get("metadata") or {}).get("uid", ""))
        network = self.network_error()
        if network and not spec.get("hostNetwork"):
            message = f"network is not ready: {network}"
            if self.waiting.get(uid) != message:
                self.event(pod, "Warning", "NetworkNotReady", message)
                self.waiting[uid] = message
            return self.waiting_status(pod, "ContainerCreating", "")

        def fetch(resource: str, name: str) -> dict[str, Any] | None:
            try:
                found: dict[str, Any] = self.api.get(ns_path(namespace, resource, name))
                return found
            except ApiError as exc:
                if exc.status == 404:
                    return None
                # e.g. forbidden: the volume cannot be set up (MountVolume.SetUp failed)
                raise EffectError(f'MountVolume.SetUp failed for {resource} "{name}": {exc}') from exc

        effects = HostEffects(fetch, self.log)
        for index, container in enumerate(spec.get("initContainers") or []):
            try:
                effects.run_container(pod, container)
            except EffectError as exc:
                message = str(exc)
                if self.waiting.get(uid) != message:
                    self.log(f"kubelet: pod {namespace}/{pod['metadata'].get('name')} init container "
                             f"{container.get('name')} failed: {message}")
                    self.event(pod, "Warning", "BackOff", "Back-off restarting failed container "
                               f"{container.get('name')} in pod {pod['metadata'].get('name')}")
                    self.waiting[uid] = message
                return self.waiting_status(pod, "PodInitializing", message, failed_init=index)
        for container in spec.get("containers") or []:
            try:
                effects.run_container(pod, container)
            except EffectError as exc:
                message = str(exc)
                if self.waiting.get(uid) != message:
                    self.log(f"kubelet: pod {namespace}/{pod['metadata'].get('name')} container "
                             f"{container.get('name')} failed: {message}")
                    self.waiting[uid] = message
                return self.waiting_status(pod, "CrashLoopBackOff", message)
        self.waiting.pop(uid, None)
        return self.running_status(pod)

    def event(self, pod: dict[str, Any], kind: str, reason: str, message: str) -> None:
        meta = pod.get("metadata") or {}
        namespace = str(meta.get("namespace") or "default")
        stamp = now_rfc3339()
        with contextlib.suppress(ApiError):  # events are best effort, as for the real kubelet
            self.api.create(ns_path(namespace, "events"), {
                "apiVersion": "v1", "kind": "Event",
                "metadata": {"name": f"{meta.get('name')}.{time.time_ns():x}", "namespace": namespace},
                "involvedObject": {"kind": "Pod", "apiVersion": "v1", "namespace": namespace,
                                   "name": meta.get("name"), "uid": meta.get("uid")},
                "reason": reason, "message": message, "type": kind, "count": 1,
                "source": {"component": "kubelet", "host": self.name},
                "firstTimestamp": stamp, "lastTimestamp": stamp})

    def waiting_status(self, pod: dict[str, Any], reason: str, message: str,
                       failed_init: int | None = None) -> dict[str, Any]:
        stamp = now_rfc3339()
        spec = pod.get("spec") or {}
        inits = spec.get("initContainers") or []
        initialized = not inits or (failed_init is None and reason != "ContainerCreating")

        def cond(kind: str, ok: bool, why: str = "") -> dict[str, Any]:
            entry: dict[str, Any] = {"type": kind, "status": "True" if ok else "False",
                                     "lastProbeTime": None, "lastTransitionTime": stamp}
            if why:
                entry["reason"] = why
            return entry

        waiting = {"reason": reason, **({"message": message} if message else {})}
        init_statuses = []
        for index, c in enumerate(inits):
            state: dict[str, Any]
            if failed_init is not None and index < failed_init:
                state = {"terminated": {"exitCode": 0, "reason": "Completed"}}
            elif failed_init == index:
                state = {"waiting": {"reason": "CrashLoopBackOff", "message": message}}
            else:
                state = {"waiting": {"reason": "PodInitializing" if failed_init is None and
                                     reason != "ContainerCreating" else reason}}
            init_statuses.append({"name": c.get("name", ""), "image": c.get("image", ""), "imageID": "",
                                  "ready": False, "restartCount": 0, "started": False, "state": state})
        containers = [{"name": c.get("name", ""), "image": c.get("image", ""), "imageID": "",
                       "ready": False, "restartCount": 0, "started": False,
                       "state": {"waiting": waiting if failed_init is None else {"reason": "PodInitializing"}}}
                      for c in spec.get("containers") or []]
        status: dict[str, Any] = {
            "phase": "Pending",
            "conditions": [cond("PodReadyToStartContainers", reason != "ContainerCreating"),
                           cond("Initialized", initialized, "" if initialized else "ContainersNotInitialized"),
                           cond("Ready", False, "ContainersNotReady"),
                           cond("ContainersReady", False, "ContainersNotReady"),
                           cond("PodScheduled", True)],
            "hostIP": self.address, "hostIPs": [{"ip": self.address}], "startTime": stamp,
            "qosClass": "BestEffort", "containerStatuses": containers}
        if spec.get("hostNetwork") and reason != "ContainerCreating":
            status["podIP"], status["podIPs"] = self.address, [{"ip": self.address}]
        if init_statuses:
            status["initContainerStatuses"] = init_statuses
        return status

    def _finish(self, path: str, meta: dict[str, Any]) -> None:
        try:
            self.api.delete(path, {**FORCE, "preconditions": {"uid": meta.get("uid")}})
        except ApiError as exc:
            if exc.status not in (404, 409):
                raise

    def running_status(self, pod: dict[str, Any]) -> dict[str, Any]:
        stamp = now_rfc3339()
        spec = pod.get("spec") or {}
        conditions = [{"type": kind, "status": "True", "lastProbeTime": None,
                       "lastTransitionTime": stamp}
                      for kind in ("PodReadyToStartContainers", "Initialized", "Ready",
                                   "ContainersReady", "PodScheduled")]
        uid = str((pod.get("metadata") or {}).get("uid", ""))
        containers = [{"name": c.get("name", ""), "image": c.get("image", ""), "imageID": "",
                       "containerID": f"hactl-lab://{uid}-{c.get('name', '')}", "ready": True,
                       "started": True, "restartCount": 0,
                       "state": {"running": {"startedAt": stamp}}}
                      for c in spec.get("containers") or []]
        status: dict[str, Any] = {
            "phase": "Running", "conditions": conditions, "hostIP": self.address,
            "hostIPs": [{"ip": self.address}], "podIP": self.address,
            "podIPs": [{"ip": self.address}], "startTime": stamp, "qosClass": "BestEffort",
            "containerStatuses": containers}
        if spec.get("initContainers"):
            status["initContainerStatuses"] = [
                {"name": c.get("name", ""), "image": c.get("image", ""), "imageID": "", "ready": True,
                 "restartCount": 0, "started": False,
                 "state": {"terminated": {"exitCode": 0, "reason": "Completed", "startedAt": stamp,
                                          "finishedAt": stamp}}}
                for c in spec["initContainers"]]
        return status
