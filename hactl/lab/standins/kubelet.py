"""kubelet stand-in: ``python3 -m hactl.lab.standins.kubelet --config=... --kubeconfig=...``.

A service run by the lab's systemctl (unit in IMAGE_FILES, installed but not enabled, like the
Debian package). It runs the static Pods of ``staticPodPath`` as processes (kubelet_pods), registers
its Node and heartbeats (Node status Ready + Lease in kube-node-lease), reports the ordinary
Pods bound to its Node Running/Ready and finishes their graceful deletion, and serves
``http://127.0.0.1:10248/healthz``. On SIGTERM it stops heartbeating and exits; the Pod processes
keep running, like containers under a real runtime, and the next kubelet adopts them.
"""

from __future__ import annotations

import sys

from .binversion import answer_fast

if __name__ == "__main__":  # `kubelet --version` answers before the heavy imports below
    answer_fast("kubelet", sys.argv[1:])

import contextlib
import ipaddress
import os
import re
import shlex
import signal
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import yaml

from .kubeadm_api import Api
from .kubeadm_common import P, default_address, hostname, knob_seconds, root
from .kubelet_network import network_error
from .kubelet_node import NodeAgent, tls_bootstrap
from .kubelet_pods import Runtime, read_manifests

UNIT = """[Unit]
Description=kubelet: The Kubernetes Node Agent
Documentation=https://kubernetes.io/docs/
Wants=network-online.target
After=network-online.target

[Service]
Environment="KUBELET_KUBECONFIG_ARGS=--bootstrap-kubeconfig=/etc/kubernetes/bootstrap-kubelet.conf --kubeconfig=/etc/kubernetes/kubelet.conf"
Environment="KUBELET_CONFIG_ARGS=--config=/var/lib/kubelet/config.yaml"
EnvironmentFile=-/var/lib/kubelet/kubeadm-flags.env
EnvironmentFile=-/etc/default/kubelet
ExecStart=/usr/local/sbin/kubelet --config=/var/lib/kubelet/config.yaml --kubeconfig=/etc/kubernetes/kubelet.conf --bootstrap-kubeconfig=/etc/kubernetes/bootstrap-kubelet.conf
Restart=always
StartLimitInterval=0
RestartSec=2

[Install]
WantedBy=multi-user.target
"""

IMAGE_FILES: dict[str, tuple[str, int]] = {
    "/etc/systemd/system/kubelet.service": (UNIT, 0o644),
}

FLAGS_FILE = "/var/lib/kubelet/kubeadm-flags.env"


def parse_flags(argv: list[str]) -> dict[str, str]:
    flags: dict[str, str] = {}
    i = 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        if not arg.startswith("--"):
            continue  # unexpanded $VARS and stray words are ignored
        name, eq, value = arg[2:].partition("=")
        if not eq and i < len(argv) and not argv[i].startswith("-"):
            value = argv[i]
            i += 1
        flags[name] = value
    return flags


def env_flags() -> dict[str, str]:
    """KUBELET_KUBEADM_ARGS / KUBELET_EXTRA_ARGS from the environment or the env files."""
    text = ""
    for var in ("KUBELET_KUBEADM_ARGS", "KUBELET_EXTRA_ARGS"):
        text += " " + os.environ.get(var, "")
    if not os.environ.get("KUBELET_KUBEADM_ARGS"):
        for path in (FLAGS_FILE, "/etc/default/kubelet"):
            try:
                with open(P(path)) as handle:
                    for line in handle:
                        _, _, value = line.strip().partition("=")
                        text += " " + " ".join(shlex.split(value))
            except OSError:
                pass
    return parse_flags(text.split())


def die(message: str) -> None:
    sys.stderr.write(f'E0000 run.go:74] "command failed" err="{message}"\n')
    sys.exit(1)


def swap_error(config: dict[str, Any], flags: dict[str, str]) -> str:
    """``cm.NewContainerManager``: with failSwapOn (default true; ``--fail-swap-on`` wins over
    the config file) and more than the header line in /proc/swaps, the kubelet does not run."""
    fail = config.get("failSwapOn", True)
    if "fail-swap-on" in flags:
        fail = flags["fail-swap-on"].lower() not in ("false", "0", "f")
    if not fail:
        return ""
    path = P("/proc/swaps")  # loopback tests may put one under HACTL_LAB_ROOT
    if not os.path.exists(path):
        path = "/proc/swaps"
    try:
        with open(path) as handle:
            lines = handle.read().strip().split("\n")
    except OSError as exc:
        return f"failed to run Kubelet: {exc}"
    if len(lines) > 1:
        return ("failed to run Kubelet: running with swap on is not supported, please disable swap! or "
                f"set --fail-swap-on flag to false. /proc/swaps contained: [{' '.join(lines)}]")
    return ""


def local_addresses() -> set[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    try:
        text = subprocess.run(["ip", "-o", "addr", "show"], capture_output=True, text=True,
                              timeout=5, check=False).stdout
    except OSError:
        text = ""
    found: set[ipaddress.IPv4Address | ipaddress.IPv6Address] = set()
    for match in re.finditer(r"\binet6? ([0-9a-fA-F:.]+)/", text):
        with contextlib.suppress(ValueError):
            found.add(ipaddress.ip_address(match.group(1)))
    return found


def node_ip_error(node_ip: str) -> str:
    """``validateNodeIP`` (pkg/kubelet/kubelet_node_status.go); "" when valid. Loopback tests
    (HACTL_LAB_ROOT set) may use a loopback node IP."""
    try:
        ip = ipaddress.ip_address(node_ip)
    except ValueError:
        return f'node IP: "{node_ip}" not found in the host\'s network interfaces'
    if ip.is_loopback and not root():
        return "nodeIP can't be loopback address"
    if ip.is_multicast:
        return "nodeIP can't be a multicast address"
    if ip.is_link_local:
        return "nodeIP can't be a link-local unicast address"
    if ip.is_unspecified:
        return "nodeIP can't be an all zeros address"
    if ip not in local_addresses():
        return f'node IP: "{ip}" not found in the host\'s network interfaces'
    return ""


class Healthz(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"ok" if self.path.startswith("/healthz") else b"404 page not found"
        self.send_response(200 if body == b"ok" else 404)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class Kubelet:
    def __init__(self, flags: dict[str, str], config: dict[str, Any]) -> None:
        self.flags = flags
        self.config = config
        self.stop = threading.Event()
        self.node_name = (flags.get("hostname-override") or hostname()).lower()
        self.address = flags.get("node-ip") or default_address()
        self.address_error = node_ip_error(flags["node-ip"]) if flags.get("node-ip") else ""
        self.static_dir = str(config.get("staticPodPath") or P("/etc/kubernetes/manifests"))
        self.runtime = Runtime(knob_seconds("kubelet", "restartBackoffSeconds", 1.0),
                               knob_seconds("kubelet", "restartBackoffMaxSeconds", 20.0))
        self.heartbeat = knob_seconds("kubelet", "heartbeatSeconds", 10.0)
        self.sync_every = knob_seconds("kubelet", "syncSeconds", 1.0)
        self.agent: NodeAgent | None = None
        self._last_error = ("", 0.0)

    def log_error(self, message: str) -> None:
        """Log ``message`` unless the same one was logged in the last minute."""
        text, when = self._last_error
        if message != text or time.monotonic() - when > 60:
            sys.stderr.write(time.strftime("E%m%d %H:%M:%S ") + message + "\n")
            sys.stderr.flush()
            self._last_error = (message, time.monotonic())

    def serve_healthz(self) -> None:
        host = str(self.config.get("healthzBindAddress") or "127.0.0.1")
        port = int(self.config.get("healthzPort") or 10248)
        server = ThreadingHTTPServer((host, port), Healthz)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()

    def api_loop(self) -> None:
        kubeconfig = self.flags.get("kubeconfig") or "/etc/kubernetes/kubelet.conf"
        bootstrap = self.flags.get("bootstrap-kubeconfig", "")
        while not self.stop.is_set():
            try:
                if not os.path.exists(P(kubeconfig)):
                    if bootstrap and os.path.exists(P(bootstrap)):
                        tls_bootstrap(bootstrap, kubeconfig, self.node_name)
                    else:
                        self.stop.wait(1)
                        continue
                if self.agent is None:
                    labels = dict(kv.split("=", 1) for kv in self.flags.get("node-labels", "").split(",") if "=" in kv)
                    self.agent = NodeAgent(Api.from_kubeconfig(kubeconfig), self.node_name, self.address,
                                           labels, network_error, self.address_error, self.log_error)
                self.agent.heartbeat()
                self.agent.mirror(dict(self.runtime.pods))
                self.agent.sync_pods()
            except Exception as exc:  # keep trying, like the real kubelet
                self.log_error(f"kubelet: node status update failed: {exc}")
                self.stop.wait(min(2.0, self.heartbeat))
                continue
            # mirror-pod changes (restarts) are posted between heartbeats
            deadline = time.monotonic() + self.heartbeat
            while not self.stop.is_set() and time.monotonic() < deadline:
                self.stop.wait(min(1.0, self.heartbeat))
                try:
                    if self.agent is not None:
                        self.agent.mirror(dict(self.runtime.pods))
                        self.agent.sync_pods()
                except Exception as exc:  # retried on the next tick
                    self.log_error(f"kubelet: pod sync failed: {exc}")

    def run(self) -> int:
        self.serve_healthz()
        self.runtime.adopt(read_manifests(self.static_dir))
        threading.Thread(target=self.api_loop, daemon=True).start()
        while not self.stop.is_set():
            self.runtime.sync(read_manifests(self.static_dir))
            self.stop.wait(self.sync_every)
        return 0


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if "--version" in args:
        from .kubeadm_common import kubernetes_version
        print(f"Kubernetes {kubernetes_version()}")
        return 0
    flags = {**env_flags(), **parse_flags(args)}
    config_path = flags.get("config", "/var/lib/kubelet/config.yaml")
    try:
        with open(P(config_path)) as handle:
            config = yaml.safe_load(handle) or {}
    except OSError as exc:
        die(f"failed to load kubelet config file, path: {config_path}, error: failed to load Kubelet config "
            f'file {config_path}, error failed to read kubelet config file "{config_path}", error: open '
            f"{config_path}: {exc.strerror.lower() if exc.strerror else exc}")
        return 1
    swap = swap_error(config, flags)
    if swap:
        die(swap)
        return 1
    kubelet = Kubelet(flags, config)

    def on_term(signum: int, frame: Any) -> None:
        kubelet.stop.set()

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    return kubelet.run()


if __name__ == "__main__":
    sys.exit(main())
