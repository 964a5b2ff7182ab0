"""Standing defence: every fact parser in hactl/facts/ gets random and truncated output and
raises nothing but :class:`FactParseError`, in bounded time.

Inputs: random text (NUL, control characters, any unicode), random JSON values (``null``,
lists, scalars, objects of any shape), JSON nested far past the recursion limit, ``key=value``
lines with bad values, ``ETCD_*`` lines with broken quoting, ``show stat`` CSV with missing or
extra columns, certificate blocks with bad PEM, and the recorded real outputs of
tests/facts_data cut at random points or with random lines spliced in.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hactl.facts import binaries, etcd, haproxy, kubernetes, preflight, prepare, services, system
from hactl.facts.base import Fact, FactParseError

DATA = Path(__file__).resolve().parents[1] / "facts_data"

FACTS: list[Fact[Any]] = [
    system.SystemInfo(),
    binaries.BinaryVersions(),
    services.UnitStates(),
    etcd.EtcdFiles(),
    etcd.EtcdEnv(),
    etcd.EtcdMemberList(),
    etcd.EtcdEndpointStatus(),
    etcd.EtcdEndpointHealth(),
    etcd.EtcdRegistryCount(),
    haproxy.HAProxyFiles(),
    haproxy.HAProxyConfig(),
    haproxy.HAProxyStats(),
    kubernetes.K8sFiles(),
    kubernetes.CertExpiry(),
    kubernetes.ApiState(),
    preflight.Preflight(node=True, etcd=True, lb=True, ports=(6443, 2379, 2380, 10250)),
    prepare.PrepareState(),
]
PER_CALL_SECONDS = 2.0


def _all_fact_classes() -> set[type]:
    out: set[type] = set()
    todo: list[type] = [Fact]
    while todo:
        for sub in todo.pop().__subclasses__():
            todo.append(sub)
            if not getattr(sub, "__abstractmethods__", None):
                out.add(sub)
    return out


def test_every_fact_class_is_fuzzed() -> None:
    assert _all_fact_classes() <= {type(f) for f in FACTS}


RUNNER_NAMES = re.compile(r"\b__hactl_(?:m|n|rc|run|s\d+)\b")
"""The probe runner's own shell names (``hactl.probe._PREAMBLE``): a snippet that assigns
one (``read -r __hactl_m …``) breaks the section markers of everything after it."""


@pytest.mark.parametrize("fact", FACTS, ids=lambda f: type(f).__name__)
def test_no_snippet_touches_the_runners_names(fact: Fact[Any]) -> None:
    assert RUNNER_NAMES.findall(fact.script()) == []


def _check(fact: Fact[Any], text: str) -> None:
    started = time.monotonic()
    try:
        fact.parse(text)
    except FactParseError:
        pass
    except Exception as exc:  # the finding: anything else escapes the probe's reader
        raise AssertionError(
            f"{type(fact).__name__}.parse raised {type(exc).__name__}: {exc!s:.200} "
            f"on {text[:200]!r}"
        ) from exc
    took = time.monotonic() - started
    assert took < PER_CALL_SECONDS, f"{type(fact).__name__}.parse took {took:.1f}s"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(
        st.sampled_from(
            ["members", "ID", "name", "peerURLs", "clientURLs", "isLearner", "Status",
             "header", "member_id", "cluster_id", "version", "leader", "errors", "Endpoint",
             "endpoint", "health", "error", "took", "count", "kvs", "x"]
        ) | st.text(max_size=8),
        inner,
        max_size=6,
    ),
    max_leaves=20,
)  # fmt: skip

KEYS = ["hostname", "kernel", "user", "init", "uptime", "os.ID", "os.VERSION_ID",
        "os.PRETTY_NAME", "config_sha256", "unit_sha256", "env_sha256", "data_dir",
        "nested_member", "ca_key", "ca_sha256", "data_dir_entries", "data_dir_entry",
        "running_pid", "running.ETCD_NAME", "admin_conf", "kubelet_conf", "manifest", "pki",
        "Id", "ActiveState", "UnitFileState", "ETCD_NAME", "ETCD_INITIAL_CLUSTER",
        "now", "swap", "mac", "listen", "listeners", "module", "cri_socket", "cri_present",
        "cri_rc", "cri_out", "containerd", "containerd_version", "containerd_cgroup",
        "kubelet_cgroup", "product_uuid", "ip_forward"]  # fmt: skip
kv_lines = st.lists(
    st.tuples(st.sampled_from(KEYS) | st.text(max_size=6), st.sampled_from(["=", "\t", ""]),
              st.text(max_size=30) | st.sampled_from(['"unterminated', "'x", "nan", "inf",
                                                      "-1", "1e999", "\0", "member", "\\"])),
    max_size=12,
).map(lambda rows: "\n".join(k + s + v for k, s, v in rows))  # fmt: skip

CSV_HEAD = "# pxname,svname,qcur,status,check_status\n"
csv_text = st.lists(
    st.lists(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=10),
             max_size=8).map(",".join),
    max_size=6,
).map(lambda rows: CSV_HEAD + "\n".join(rows))  # fmt: skip

PEM_BODY = st.sampled_from(["", "ZZZZ", "MIIB" + "A" * 40, "-----", "\0\0"]) | st.text(max_size=60)
cert_text = st.lists(
    st.tuples(st.text(max_size=10), PEM_BODY),
    max_size=4,
).map(lambda files: "".join(
    f"{kubernetes.CERT_FILE_MARK}{path}\n-----BEGIN CERTIFICATE-----\n{body}\n"
    "-----END CERTIFICATE-----\n" for path, body in files))  # fmt: skip

api_lines = st.lists(
    st.tuples(st.sampled_from(["node", "secret", "config", "x", ""]),
              st.lists(st.text(max_size=12) | st.sampled_from(
                  ["ConfigMap", "kubeadm-certs", "bootstrap.kubernetes.io/token",
                   "bootstrap-token-abc", "dHJ1ZQ==", "2026-13-45T00:00:00Z", "{", "[1]",
                   '{"ClusterConfiguration": "etcd: [1]"}', '{"ClusterConfiguration": 5}',
                   '{"ClusterConfiguration": "etcd: {external: 3}"}', "null"]), max_size=7)),
    max_size=6,
).map(lambda rows: "\n".join("\t".join([k, *f]) for k, f in rows))  # fmt: skip


def _recorded() -> list[str]:
    files = [p for p in DATA.rglob("*") if p.is_file() and p.suffix in {".json", ".csv", ".out"}]
    return [p.read_text() for p in sorted(files)]


RECORDED = _recorded()

garbage = st.one_of(
    st.text(),
    st.binary(max_size=200).map(lambda b: b.decode("utf-8", "replace")),
    json_values.map(json.dumps),
    kv_lines,
    csv_text,
    cert_text,
    api_lines,
    st.sampled_from(RECORDED).flatmap(
        lambda text: st.integers(0, len(text)).map(lambda cut: text[:cut])
    ),
    st.tuples(st.sampled_from(RECORDED), st.text(max_size=40), st.integers(0, 2000)).map(
        lambda t: t[0][: t[2]] + t[1] + t[0][t[2] :]
    ),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=garbage)
def test_parsers_raise_only_fact_parse_errors(text: str) -> None:
    for fact in FACTS:
        _check(fact, text)


@pytest.mark.parametrize(
    "text",
    [
        "null", "[]", "[1]", "1", '"x"', "true", "{}", '{"members": null}',
        '{"members": [null]}', '{"members": [{"ID": "x"}]}', '{"members": {"a": 1}}',
        '[{"Status": null}]', '[{"Endpoint": 1, "Status": {"header": []}}]', '[null]',
        '{"count": "many"}', '{"count": null}', '{"count": []}', '{"count": 1e999}',
        "[" * 50_000 + "]" * 50_000, '{"a":' * 50_000 + "1" + "}" * 50_000,
        "\0" * 100, "ETCD_NAME=\"unterminated\nETCD_X='", "# pxname,svname\n\0,\0\n",
        "config\tConfigMap\t" + json.dumps({"ClusterConfiguration": "etcd: [1]"}),
        "config\tConfigMap\t" + json.dumps({"ClusterConfiguration": "- a\n- b"}),
        "config\tConfigMap\t" + json.dumps({"ClusterConfiguration": "etcd: {external: [1]}"}),
        "config\tConfigMap\t" + "[" * 50_000,
        "node\tn1\tTrue\tv1\t" + "[" * 50_000, "node\tn1\tTrue\tv1\t[1, 2]",
        "config\tConfigMap\t" + json.dumps({"ClusterConfiguration": "a: &a [*a]"}),
        "config\tConfigMap\t" + json.dumps({"ClusterConfiguration": "[" * 5000}),
    ],
    ids=lambda t: t[:30],
)  # fmt: skip
def test_known_garbage(text: str) -> None:
    for fact in FACTS:
        _check(fact, text)
