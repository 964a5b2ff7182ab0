"""etcd on its members: files, service, data dir, CA, and what the member says over TLS.

Paths are :mod:`hactl.hostlayout`'s (the renderers write the same files): the env file
``/etc/etcd/etcd.env``, the unit ``/etc/systemd/system/etcd.service``, certificates under
``/etc/etcd/pki``; etcdctl authenticates with ``healthcheck-client.{crt,key}`` against the
member's own client URL (the argv of :func:`hactl.transport.tools.etcdctl`) (``https://127.0.0.1:<clientPort>``, or its address when that is a
loopback address). The etcdctl sections run only when the ``services`` section saw the ``etcd`` unit active (otherwise
etcdctl would wait for its dial timeout) and each member answers for itself only: the diff
combines the members' views (``endpoint health --cluster`` alone is not enough).
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

from hactl import hostlayout
from hactl.facts.base import (
    Fact,
    FactParseError,
    fingerprint_hex,
    guarded_parser,
    key_values,
    sh,
    sha256_of,
)
from hactl.facts.model import DataDirState, EtcdFacts, EtcdHealth, EtcdMember, EtcdStatus
from hactl.facts.services import UnitState, active_var
from hactl.transport import tools

ENV_PATH = hostlayout.ETCD_ENV
UNIT_PATH = hostlayout.ETCD_UNIT
PKI_DIR = hostlayout.ETCD_PKI_DIR
CA_CERT = hostlayout.ETCD_CA_CERT
CA_KEY = hostlayout.ETCD_CA_KEY
BOOTSTRAP_MARKER = hostlayout.ETCD_BOOTSTRAP_MARKER
MEMBER_FILES = hostlayout.ETCD_MEMBER_FILES
"""(The paths are :mod:`hactl.hostlayout`'s, named as the probe and its tests read them.)"""
ACTIVE_VAR = active_var("etcd")
"""Shell variable set by the ``services`` section and read by the etcdctl sections."""

_FILES = r"""if [ -f {unit} ]; then echo "unit_sha256=$(sha256sum < {unit})"; fi
if [ -f {env} ]; then echo "env_sha256=$(sha256sum < {env})"; fi
__hactl_nested=
for __hactl_d in {data}/*/member; do if [ -d "$__hactl_d" ]; then __hactl_nested=$__hactl_d; break; fi; done
if [ ! -e {data} ]; then echo data_dir=absent
elif [ -d {data}/member ]; then echo data_dir=member
elif [ -n "$__hactl_nested" ]; then echo data_dir=nested; echo "nested_member=$__hactl_nested"
elif [ -z "$(ls -A {data} 2>/dev/null)" ]; then echo data_dir=empty
else echo data_dir=other; fi
if [ -d {data} ]; then
  echo "data_dir_entries=$(ls -A {data} 2>/dev/null | wc -l)"
  ls -A {data} 2>/dev/null | head -n {names} | sed 's/^/data_dir_entry=/'
fi
__hactl_etcd_listen=
if [ "${active}" = active ]; then
  __hactl_pid=$({main_pid} 2>/dev/null)
  if [ -n "$__hactl_pid" ] && [ "$__hactl_pid" != 0 ] && [ -r "/proc/$__hactl_pid/environ" ]; then
    echo running_pid=$__hactl_pid
    tr '\0' '\n' < "/proc/$__hactl_pid/environ" | grep '^ETCD_' | sed 's/^/running./'
    __hactl_etcd_listen=$(tr '\0' '\n' < "/proc/$__hactl_pid/environ" | sed -n 's/^ETCD_LISTEN_CLIENT_URLS=//p')
  fi
fi
if [ -f {ca_key} ]; then echo ca_key=1; fi
if [ -f {marker} ]; then echo bootstrap_pending=1; fi
for __hactl_f in {member_files}; do [ -f "{pki}/$__hactl_f" ] || echo "pki_missing=$__hactl_f"; done
if command -v openssl >/dev/null 2>&1; then
  for __hactl_f in {pki}/*.crt; do
    if [ -f "$__hactl_f" ]; then echo "cert_end=$__hactl_f $(openssl x509 -in "$__hactl_f" -noout -enddate 2>/dev/null)"; fi
  done | head -n {certs}
fi
if [ -f {ca} ]; then
  if command -v openssl >/dev/null 2>&1; then
    echo "ca_sha256=$(openssl x509 -in {ca} -noout -fingerprint -sha256 2>/dev/null)"
  else
    echo "ca_sha256=$(python3 -B -c 'import hashlib,ssl,sys; print(hashlib.sha256(ssl.PEM_cert_to_DER_cert(open(sys.argv[1]).read())).hexdigest())' {ca} 2>/dev/null)"
  fi
fi
:"""


@dataclass(frozen=True)
class EtcdFileInfo:
    unit_sha256: str | None
    env_sha256: str | None
    data_dir_state: DataDirState
    ca_fingerprint: str | None
    nested_member: str | None = None
    ca_key_present: bool = False
    data_dir_entries: int = 0
    """How many entries the data dir holds (0 when absent)."""
    data_dir_names: tuple[str, ...] = ()
    """The first :data:`ENTRY_NAMES` of them, as ``ls -A`` lists them."""
    running_env: dict[str, str] | None = None
    """The ``ETCD_*`` environment of the running etcd process (``/proc/MAINPID/environ``);
    None when etcd is not active or its environment could not be read."""
    pki_missing: tuple[str, ...] = ()
    """Which of :data:`MEMBER_FILES` are absent (an install stopped half-way leaves some)."""
    bootstrap_pending: bool = False
    """:data:`BOOTSTRAP_MARKER` exists: hactl's bootstrap started this member and has not yet
    seen the new cluster healthy."""
    cert_expiry: dict[str, datetime] = field(default_factory=dict)
    """``/etc/etcd/pki/*.crt`` → notAfter (``openssl x509 -enddate``)."""


ENTRY_NAMES = 10
"""How many data dir entries the probe names (the count is always complete)."""


@dataclass(frozen=True)
class EtcdFiles(Fact[EtcdFileInfo]):
    data_dir: str = hostlayout.ETCD_DEFAULT_DATA_DIR
    section = "etcd.files"

    def script(self) -> str:
        return _FILES.format(
            unit=shlex.quote(UNIT_PATH),
            env=shlex.quote(ENV_PATH),
            data=shlex.quote(self.data_dir.rstrip("/") or "/"),
            ca=shlex.quote(CA_CERT),
            ca_key=shlex.quote(CA_KEY),
            marker=shlex.quote(BOOTSTRAP_MARKER),
            pki=PKI_DIR,
            member_files=" ".join(MEMBER_FILES),
            names=ENTRY_NAMES,
            certs=MAX_CERTS,
            active=ACTIVE_VAR,
            main_pid=sh(tools.systemctl("show", "-p", "MainPID", "--value", "etcd.service")),
        )

    def parse(self, stdout: str) -> EtcdFileInfo:
        kv = key_values(stdout)
        state = kv.get("data_dir")
        if state not in {"absent", "empty", "member", "nested", "other"}:
            raise FactParseError(f"unexpected data dir state {state!r}")
        return EtcdFileInfo(
            unit_sha256=sha256_of(kv.get("unit_sha256")),
            env_sha256=sha256_of(kv.get("env_sha256")),
            data_dir_state=cast(DataDirState, state),
            ca_fingerprint=fingerprint_hex(kv["ca_sha256"]) if kv.get("ca_sha256") else None,
            nested_member=kv.get("nested_member") if state == "nested" else None,
            ca_key_present=kv.get("ca_key") == "1",
            data_dir_entries=_count(kv.get("data_dir_entries")),
            data_dir_names=tuple(_lines_with(stdout, "data_dir_entry=")[:ENTRY_NAMES]),
            running_env=_running_env(stdout),
            pki_missing=tuple(f for f in _lines_with(stdout, "pki_missing=") if f in MEMBER_FILES),
            bootstrap_pending=kv.get("bootstrap_pending") == "1",
            cert_expiry=cert_ends(_lines_with(stdout, "cert_end=")),
        )


MAX_CERTS = 32
"""How many certificates under /etc/etcd/pki the probe dates (hactl puts four there)."""


def cert_ends(lines: list[str]) -> dict[str, datetime]:
    """``/etc/etcd/pki/ca.crt notAfter=Jan  1 12:00:00 2036 GMT`` (openssl x509 -enddate) →
    path → notAfter (UTC). A line openssl could not date (not a certificate) is left out."""
    out: dict[str, datetime] = {}
    for line in lines[:MAX_CERTS]:
        path, found, end = line.partition(" notAfter=")
        if not found or not path.startswith("/") or len(path) > 4096:
            continue
        try:
            out[path] = datetime.strptime(" ".join(end.split()), "%b %d %H:%M:%S %Y GMT").replace(tzinfo=UTC)
        except ValueError:
            continue
    return out


def _count(text: str | None) -> int:
    try:
        return max(0, int(text or 0))
    except ValueError as exc:
        raise FactParseError(f"data dir entry count {text!r} is not a number") from exc


def _lines_with(stdout: str, prefix: str) -> list[str]:
    return [line[len(prefix):] for line in stdout.splitlines() if line.startswith(prefix)]


def _running_env(stdout: str) -> dict[str, str] | None:
    """``running.ETCD_X=value`` lines → ``{"ETCD_X": value}``; None without ``running_pid=``."""
    if not any(line.startswith("running_pid=") for line in stdout.splitlines()):
        return None
    env: dict[str, str] = {}
    for line in _lines_with(stdout, "running."):
        key, found, value = line.partition("=")
        if found and key.startswith("ETCD_"):
            env[key] = value
    return env


@dataclass(frozen=True)
class EtcdEnv(Fact[dict[str, str]]):
    """The ``ETCD_*`` variables of the env file (skipped when there is none)."""

    section = "etcd.env"

    def script(self) -> str:
        path = shlex.quote(ENV_PATH)
        return f'if [ -f {path} ]; then cat {path}; else echo "no {ENV_PATH}" >&2; return 100; fi'

    def parse(self, stdout: str) -> dict[str, str]:
        env: dict[str, str] = {}
        for raw in stdout.splitlines():
            line = raw.strip()
            if not line or line.startswith(("#", ";")):
                continue
            key, found, value = line.partition("=")
            if not found or not key.startswith("ETCD_"):
                continue
            try:
                env[key] = " ".join(shlex.split(value)) if value else ""
            except ValueError as exc:
                raise FactParseError(f"{ENV_PATH}: {raw!r}: {exc}") from exc
        return env


def member_id(value: int | str) -> str:
    """etcd IDs as etcdctl's tables print them: lower-case hex without leading zeros."""
    return format(int(value), "x")


@dataclass(frozen=True)
class _Etcdctl:
    endpoint: str = "https://127.0.0.1:2379"

    def etcdctl(self, *args: str) -> str:
        argv = tools.etcdctl([self.endpoint], *args, timeout=tools.ETCDCTL_READ_TIMEOUT)
        guard = (
            f'if [ "${ACTIVE_VAR}" != active ]; then '
            f'echo "the etcd service is ${{{ACTIVE_VAR}:-not running}}" >&2; return 100; fi'
        )
        # Ask etcd where it listens now (its running ETCD_LISTEN_CLIENT_URLS, read by the
        # etcd.files section): while a client-port change is under way the member not yet
        # restarted still serves on the old port of the same host.
        scheme, _, rest = self.endpoint.partition("://")
        prefix = f"{scheme}://{rest.rsplit(':', 1)[0]}:"
        pick = (f"__hactl_ep={sh(argv[1:2])}\n"
                'for __hactl_u in $(printf %s "${__hactl_etcd_listen:-}" | tr , " "); do\n'
                f'  case $__hactl_u in {shlex.quote(prefix)}*) __hactl_ep="--endpoints=$__hactl_u";; esac\n'
                "done")
        # argv[1] is --endpoints= (hactl.transport.tools.etcdctl), replaced by the pick above
        return f'{guard}\n{pick}\nETCDCTL_API=3 {sh(argv[:1])} "$__hactl_ep" {sh(argv[2:])}'


def _load(stdout: str) -> Any:
    try:
        return json.loads(stdout)
    except ValueError as exc:
        raise FactParseError(f"not JSON: {stdout[:200]!r}") from exc


@guarded_parser("etcd.members")
def parse_member_list(stdout: str) -> tuple[EtcdMember, ...]:
    """``etcdctl member list -w json`` → the members, IDs as lower-case hex (as etcdctl's tables
    print them), sorted by name (unstarted ones, which have none, last). The one reader of a
    member list: the probe, ``hactl check`` and the steps' fresh reads all use it."""
    data = _load(stdout)
    members = [
        EtcdMember(
            id=member_id(m["ID"]),
            name=m.get("name") or "",
            peer_urls=tuple(m.get("peerURLs") or ()),
            client_urls=tuple(m.get("clientURLs") or ()),
            is_learner=bool(m.get("isLearner", False)),
        )
        for m in data.get("members") or ()
    ]
    return tuple(sorted(members, key=lambda m: (m.name or "~", m.id)))


@guarded_parser("etcd.health")
def parse_endpoint_health(stdout: str) -> tuple[EtcdHealth, ...]:
    """``etcdctl endpoint health -w json`` → one answer per endpoint asked (a single object is
    read as a list of one). The one reader of health answers (probe, check, steps)."""
    data = _load(stdout)
    entries = [data] if isinstance(data, dict) else list(data)
    return tuple(
        EtcdHealth(
            endpoint=entry["endpoint"],
            healthy=bool(entry.get("health")),
            error=entry.get("error") or None,
            took=entry.get("took"),
        )
        for entry in entries
    )


@dataclass(frozen=True)
class EtcdMemberList(_Etcdctl, Fact[tuple[EtcdMember, ...]]):
    section = "etcd.members"

    def script(self) -> str:
        return self.etcdctl("member", "list")

    def parse(self, stdout: str) -> tuple[EtcdMember, ...]:
        return parse_member_list(stdout)


@dataclass(frozen=True)
class EtcdEndpointStatus(_Etcdctl, Fact[EtcdStatus]):
    section = "etcd.status"

    def script(self) -> str:
        return self.etcdctl("endpoint", "status")

    def parse(self, stdout: str) -> EtcdStatus:
        data = _load(stdout)
        if not data:
            raise FactParseError("endpoint status returned no endpoint")
        entry = data[0]
        status = entry["Status"]
        header = status["header"]
        return EtcdStatus(
            endpoint=entry["Endpoint"],
            member_id=member_id(header["member_id"]),
            cluster_id=member_id(header["cluster_id"]),
            version=status["version"],
            is_learner=bool(status.get("isLearner", False)),
            leader_id=member_id(status["leader"]) if status.get("leader") else None,
            raft_term=status.get("raftTerm"),
            raft_index=status.get("raftIndex"),
            db_size=status.get("dbSize"),
            errors=tuple(status.get("errors", ())),
        )


@dataclass(frozen=True)
class EtcdEndpointHealth(_Etcdctl, Fact[EtcdHealth]):
    section = "etcd.health"
    ok_statuses = frozenset({0, 1})  # 1 = unhealthy, with the JSON still printed

    def script(self) -> str:
        return self.etcdctl("endpoint", "health")

    def parse(self, stdout: str) -> EtcdHealth:
        answers = parse_endpoint_health(stdout)
        if not answers:
            raise FactParseError("endpoint health returned no endpoint")
        return answers[0]


@dataclass(frozen=True)
class EtcdRegistryCount(_Etcdctl, Fact[int]):
    """How many keys Kubernetes stored under ``/registry`` (reads one key, counts all)."""

    section = "etcd.registry"

    def script(self) -> str:
        return self.etcdctl("get", "/registry", "--prefix", "--keys-only", "--limit", "1")

    def parse(self, stdout: str) -> int:
        data = _load(stdout)
        return int(data.get("count", 0))


def assemble(
    *,
    data_dir: str,
    files: EtcdFileInfo,
    unit: UnitState | None,
    env: dict[str, str] | None,
    members: tuple[EtcdMember, ...] | None,
    status: EtcdStatus | None,
    health: EtcdHealth | None,
    registry_keys: int | None,
    query_error: str | None,
) -> EtcdFacts:
    return EtcdFacts(
        unit_present=files.unit_sha256 is not None,
        active=unit.active if unit else False,
        enabled=unit.enabled if unit else False,
        env_present=files.env_sha256 is not None,
        env_sha256=files.env_sha256,
        env=env or {},
        data_dir=data_dir,
        data_dir_state=files.data_dir_state,
        ca_fingerprint=files.ca_fingerprint,
        members=members,
        status=status,
        health=health,
        registry_keys=registry_keys,
        query_error=query_error,
        unit_sha256=files.unit_sha256,
        nested_member=files.nested_member,
        ca_key_present=files.ca_key_present,
        data_dir_entries=files.data_dir_entries,
        data_dir_names=files.data_dir_names,
        running_env=files.running_env,
        pki_missing=files.pki_missing,
        bootstrap_pending=files.bootstrap_pending,
        cert_expiry=dict(files.cert_expiry),
    )
