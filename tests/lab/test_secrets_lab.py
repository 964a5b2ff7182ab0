"""No secret in anything hactl produces (issue 11, "A standing defence").

A full bring-up of a small lab (1 etcd member, 1 load balancer, 2 masters, 1 worker: a
``kubeadm init``, a control-plane join and a worker join) at debug level with JSON logs, through a
saved plan (``plan -o`` then ``apply FILE``), then ``plan -o`` / ``show`` / ``check`` on the
converged cluster. Every byte they produce — stdout, stderr, the journal and everything else
under the state dir (``.hactl/`` next to the spec), both saved plans — is searched for:

- the live bootstrap tokens: every ``bootstrap-token-*`` Secret in the cluster after the run
  (each checked to exist in ``kubeadm token list`` and to authenticate against the API);
- the live certificate key(s): every 64-hex string seen on the hosts during the run (process
  argv, small files under /etc/hactl, /etc/kubernetes, /tmp, /root, /run …) that decrypts the
  ``kube-system/kubeadm-certs`` Secret (AES-256-GCM, as kubeadm seals it);
- the private keys on the hosts (``*.key`` under /etc/kubernetes/pki and /etc/etcd/pki): each
  base64 body line, and a slice of the base64 of the whole PEM (the form a kubeconfig or a Secret
  carries).

The search is proven able to fail: each needle is found when planted in a sample. Assertion
messages name where a secret was found, never the secret.
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any

import yaml

from hactl.lab.standins.kubeadm_certs import unseal
from tests.lab.conftest import LAB_SPEC
from tests.lab.faultlib import SecretSampler, hactl, pem_bodies, scan_files, show

SMALL = ("etcd01", "lb01", "master01", "master02", "worker01")


def small_spec() -> dict[str, Any]:
    doc = yaml.safe_load(LAB_SPEC.read_text())
    doc["etcd"]["members"] = [h for h in doc["etcd"]["members"] if h["name"] in SMALL]
    doc["masters"] = [h for h in doc["masters"] if h["name"] in SMALL]
    doc["workers"] = [h for h in doc["workers"] if h["name"] in SMALL]
    return doc


def find_leaks(haystacks: dict[str, bytes], needles: dict[str, bytes]) -> list[str]:
    """``"<needle label> in <haystack name> at byte N"`` for every needle found (no values)."""
    hits = []
    for label, needle in needles.items():
        for name, data in haystacks.items():
            at = data.find(needle)
            if at >= 0:
                hits.append(f"{label} in {name} at byte {at}")
    return hits


def kubectl_json(lab: Any, node: str, *args: str) -> Any:
    res = lab.run(node, ["kubectl", "--kubeconfig", "/etc/kubernetes/admin.conf", *args, "-o", "json"])
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def live_tokens(lab: Any) -> tuple[dict[str, bytes], set[str]]:
    """Every bootstrap token in the cluster (name → token), and the names of those usable for
    authentication (kubeadm-certs' owner token has no usages: it only bounds the Secret's life)."""
    secrets = kubectl_json(lab, "master01", "-n", "kube-system", "get", "secrets")["items"]
    tokens, auth = {}, set()
    for secret in secrets:
        if secret.get("type") == "bootstrap.kubernetes.io/token":
            data = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
            name = secret["metadata"]["name"]
            tokens[name] = f"{data['token-id']}.{data['token-secret']}".encode()
            if data.get("usage-bootstrap-authentication") == "true":
                auth.add(name)
    return tokens, auth


def token_works(lab: Any, token: bytes) -> tuple[bool, str]:
    """Does the token authenticate (it may read kubeadm-config, anonymous may not)? And
    kubectl's stderr, the token masked."""
    server = f"https://{lab.cluster.masters[0].address}:6443"
    res = lab.run("master01", [
        "kubectl", "--kubeconfig", "/dev/null", "--server", server, "--insecure-skip-tls-verify",
        "--token", token.decode(), "get", "--raw", "/api/v1/namespaces/kube-system/configmaps/kubeadm-config",
    ])
    ok = res.returncode == 0 and '"kubeadm-config"' in res.stdout
    return ok, res.stderr.replace(token.decode(), "(token)")[-500:]


def live_certificate_keys(lab: Any, candidates: set[bytes]) -> dict[str, bytes]:
    secret = kubectl_json(lab, "master01", "-n", "kube-system", "get", "secret", "kubeadm-certs")
    sealed = base64.b64decode(secret["data"]["ca.crt"])
    keys = {}
    for candidate in sorted(candidates):
        if len(candidate) != 64:
            continue
        try:
            plain = unseal(sealed, candidate.decode())
        except Exception:  # not the key (wrong tag) or not a key at all
            continue
        if b"BEGIN CERTIFICATE" in plain:
            keys[f"certificate key #{len(keys) + 1}"] = candidate
    return keys


def private_keys(lab: Any) -> dict[str, bytes]:
    needles: dict[str, bytes] = {}
    for node in ("etcd01", "master01", "master02"):
        listing = lab.run(node, "find /etc/kubernetes/pki /etc/etcd/pki -name '*.key' -type f 2>/dev/null")
        for path in listing.stdout.split():
            pem = lab.read(node, path)
            for i, line in enumerate(pem_bodies(pem)):
                if len(line) >= 40:
                    needles[f"{node}:{path} line {i + 1}"] = line.encode()
            wrapped = base64.b64encode(pem.encode())
            needles[f"{node}:{path} (base64 of the PEM)"] = wrapped[64:128]
    return needles


def test_no_secret_in_anything_hactl_writes(lab_factory: Any, tmp_path: Path) -> None:
    lab = lab_factory(small_spec())
    spec = lab.spec_file
    env = {k: v for k, v in os.environ.items() if k != "HACTL_STATE_DIR"}  # .hactl/ next to the spec
    debug = ("--log-format", "json", "-vv")
    plan_file, after_file = tmp_path / "plan.json", tmp_path / "after.json"
    outputs: dict[str, bytes] = {}

    def run(name: str, *args: str, expect: tuple[int, ...] = (0,)) -> None:
        res = hactl(*debug, *args, env=env)
        outputs[f"{name} stdout"] = res.stdout.encode()
        outputs[f"{name} stderr"] = res.stderr.encode()
        assert res.returncode in expect, show(res)

    run("plan -o", "plan", "-f", spec, "-o", str(plan_file))
    hosts = [h.name for h in lab.cluster.all_hosts()]
    with SecretSampler(lambda: [lab.pid(h) for h in hosts]) as sampler:
        run("apply FILE", "apply", str(plan_file))
    assert b"Apply complete: " in outputs["apply FILE stdout"], outputs["apply FILE stdout"][-3000:]
    assert b'"level": "debug"' in outputs["apply FILE stderr"]  # really at debug level
    assert sampler.samples > 5, sampler.samples
    run("plan -o after", "plan", "-f", spec, "-o", str(after_file), "--detailed-exitcode")
    run("show", "show", str(after_file))
    run("check", "check", "-f", spec, "--json")

    # what hactl wrote on this machine: the state dir (journal …) and both saved plans
    state = Path(spec).parent / ".hactl"
    files = [p for p in state.rglob("*") if p.is_file()]
    assert any(p.suffix == ".jsonl" for p in files), files  # the journal is there
    for path in [*files, plan_file, after_file]:
        outputs[str(path.relative_to(tmp_path))] = path.read_bytes()

    # the live secrets
    tokens, auth = live_tokens(lab)
    assert auth, f"no bootstrap token for authentication in the cluster after the apply: {sorted(tokens)}"
    listed = lab.run("master01", "kubeadm token list").stdout
    for name, token in tokens.items():
        in_list = token.decode() in listed  # (no secret in an assertion's rewrite)
        assert in_list, f"{name} not in `kubeadm token list`"
        if name in auth:
            works, why = token_works(lab, token)
            assert works, f"{name} does not authenticate: {why}"
    forged = tokens[min(auth)][:7] + b"0000000000000000"
    works, why = token_works(lab, forged)
    assert not works, "a forged token authenticates"  # the check can fail
    cert_keys = live_certificate_keys(lab, sampler.found)
    assert cert_keys, (
        f"no string seen on the hosts during the run ({len(sampler.found)} candidates, "
        f"{sampler.samples} samples) decrypts kubeadm-certs"
    )
    keys = private_keys(lab)
    assert any("/etc/etcd/pki/ca.key" in k for k in keys) and any(
        "/etc/kubernetes/pki/ca.key" in k for k in keys
    ), sorted(keys)
    needles = {**{f"bootstrap token {n}": t for n, t in tokens.items()}, **cert_keys, **keys}

    # the search finds every needle when it is there (raw and inside a JSON string)
    for label, needle in needles.items():
        sample = {"sample": b'{"event": "x", "text": ' + json.dumps("a " + needle.decode() + " b").encode() + b"}"}
        seen = bool(find_leaks(sample, {label: needle}))
        assert seen, f"the search misses {label}"

    leaks = find_leaks(outputs, needles)
    assert not leaks, "secrets found in hactl's output:\n" + "\n".join(leaks)

    # the certificate key is not left behind on the hosts (config files written for kubeadm are
    # removed after use)
    residue = {}
    for host in hosts:
        residue[host] = b"\0".join(scan_files(f"/proc/{lab.pid(host)}/root"))
    leftovers = find_leaks(residue, cert_keys)
    assert not leftovers, "certificate key left in files on the hosts:\n" + "\n".join(leftovers)
