"""HAProxy on the load balancers: config file (hash and content), service, backend states.

Backend states come from the stats socket hactl renders (``/run/haproxy/admin.sock``,
:data:`hactl.hostlayout.HAPROXY_ADMIN_SOCKET`) with ``show stat`` (CSV). The socket is read with ``socat`` when the
host has it, else with a stdlib-only ``python3 -B`` one-liner; nothing is written.
"""

from __future__ import annotations

import csv
import io
import re
import shlex
from dataclasses import dataclass

from hactl import hostlayout
from hactl.facts.base import Fact, FactParseError, key_values, sha256_of
from hactl.facts.haproxy_loaded import _FILES, loaded_state
from hactl.facts.model import BackendServer, HAProxyFacts, ServerStatus
from hactl.facts.services import UnitState, active_var
from hactl.sensitive import MASK

CONFIG_PATH = hostlayout.HAPROXY_CFG
ADMIN_SOCKET = hostlayout.HAPROXY_ADMIN_SOCKET
LOADED_MARKER = hostlayout.HAPROXY_LOADED_MARKER
"""Written by ``ConfigureHAProxy`` after haproxy (re)loaded a file: that file's sha256 (the
paths are :mod:`hactl.hostlayout`'s)."""
ACTIVE_VAR = active_var("haproxy")

SOCKET_CLIENT = (
    "import socket,sys\n"
    "s=socket.socket(socket.AF_UNIX); s.settimeout(5); s.connect(sys.argv[1])\n"
    "s.sendall(sys.argv[2].encode()+b'\\n'); d=b''\n"
    "while True:\n"
    "    c=s.recv(65536)\n"
    "    if not c: break\n"
    "    d+=c\n"
    "sys.stdout.write(d.decode())\n"
)
"""A stdlib-only ``python3`` client of haproxy's admin socket: ``SOCKET COMMAND`` → the answer
(used where ``socat`` is not installed)."""


def socket_command(command: str, sock: str = ADMIN_SOCKET) -> str:
    """sh lines that send ``command`` to the admin socket with ``socat``, else ``python3``."""
    quoted = shlex.quote(sock)
    return (
        "if command -v socat >/dev/null 2>&1; then\n"
        f"  echo {shlex.quote(command)} | socat -t 5 stdio unix-connect:{quoted}\n"
        "elif command -v python3 >/dev/null 2>&1; then\n"
        f"  python3 -B -c {shlex.quote(SOCKET_CLIENT)} {quoted} {shlex.quote(command)}\n"
        "else\n"
        '  echo "neither socat nor python3 is installed to use the admin socket" >&2; false\n'
        "fi"
    )


def admin_script(command: str, sock: str = ADMIN_SOCKET) -> str:
    """An sh script that sends one command to haproxy's admin socket (:func:`socket_command`)
    and prints the answer (empty on success); exit 1 when there is no socket. Used by the steps
    and the drill that drain a master's server and put it back."""
    return (f'if [ ! -S {shlex.quote(sock)} ]; then echo "no admin socket {sock}" >&2; exit 1; fi\n'
            f"{socket_command(command, sock)}")


@dataclass(frozen=True)
class HAProxyFileInfo:
    config_sha256: str | None
    loaded_sha256: str | None = None
    """The marker hactl writes after a successful start/reload (:data:`LOADED_MARKER`)."""
    loaded: bool | None = None
    """Has the running haproxy loaded the file as it is now? None: not running / unknown."""
    loaded_why: str = ""


@dataclass(frozen=True)
class HAProxyFiles(Fact[HAProxyFileInfo]):
    """The config's hash and whether the running haproxy loaded it ("written" vs "active"):
    :func:`loaded_state` decides from hactl's marker and the haproxy processes' start times."""

    section = "haproxy.files"

    def script(self) -> str:
        return _FILES.format(
            cfg=shlex.quote(CONFIG_PATH), marker=shlex.quote(LOADED_MARKER), active=ACTIVE_VAR
        )

    def parse(self, stdout: str) -> HAProxyFileInfo:
        kv = key_values(stdout)
        config = sha256_of(kv.get("config_sha256"))
        marker = sha256_of(kv.get("loaded_sha256"))
        loaded, why = loaded_state(config, marker, stdout)
        return HAProxyFileInfo(config, marker, loaded, why)


@dataclass(frozen=True)
class HAProxyConfig(Fact[str]):
    """The config file's text (skipped when absent)."""

    section = "haproxy.config"

    def script(self) -> str:
        cfg = shlex.quote(CONFIG_PATH)
        return f'if [ -f {cfg} ]; then cat {cfg}; else echo "no {CONFIG_PATH}" >&2; return 100; fi'

    def parse(self, stdout: str) -> str:
        return mask_config_secrets(stdout)


CREDENTIAL_HEADERS = ("authorization", "proxy-authorization", "cookie", "set-cookie")
"""Headers whose value is a credential: whatever follows their name on a line is masked."""
PASSWORD_WORDS = ("password", "insecure-password", "secure-password")
"""Keywords whose next word is a password (``userlist`` users, and any other directive)."""

_HEADERS = "|".join(CREDENTIAL_HEADERS)
_SECRET_PATTERNS = (
    # stats auth <user>:<password>
    re.compile(r"(?im)^(\s*stats\s+auth\s+[^:\s]+:)(\S+)"),
    # password | insecure-password | secure-password <value>, anywhere on a line
    re.compile(r"(?im)((?:^|\s)(?:" + "|".join(PASSWORD_WORDS) + r")\s+)(\S+)"),
    # a credential header by name, after what names a header (set-header/add-header/
    # replace-header/replace-value, http-check send hdr, hdr(…) in an ACL) or as a raw
    # "Name: value" (option httpchk): the rest of the line
    re.compile(
        r"(?im)((?:(?:-header|-value|(?<![\w.-])hdr)\s+|hdr\()(?:" + _HEADERS + r")(?![\w-])\)?\s*"
        r"|(?:(?<=\\n)|(?<![\w-]))(?:" + _HEADERS + r"):(?:\\?\s)*)"
        r"(\S.*)$"
    ),
    # Basic / Bearer tokens wherever they appear
    re.compile(r"(?im)((?<![\w-])(?:basic|bearer)(?:\\?\s)+)([^\s\"']+)"),
)


def mask_config_secrets(text: str) -> str:
    """A hand-edited config may hold credentials: they are masked before the text reaches a
    plan or a log (``config_sha256`` is of the real file). Masked: the password of ``stats
    auth user:pw``; the word after ``password``/``insecure-password``/``secure-password``;
    everything after a header named Authorization, Proxy-Authorization, Cookie or Set-Cookie
    (``http-request set-header Authorization …``, ``http-check send hdr Cookie …``,
    ``hdr(authorization) -m str …``); the token after ``Basic``/``Bearer`` anywhere."""
    for pattern in _SECRET_PATTERNS:
        text = pattern.sub(lambda m: m.group(1) + MASK, text)
    return text


_STATUS: dict[str, ServerStatus] = {
    "UP": "UP",
    "DOWN": "DOWN",
    "MAINT": "MAINT",
    "NOLB": "NOLB",
    "DRAIN": "DRAIN",
    "no check": "no check",
}


def normalise_status(raw: str) -> ServerStatus:
    """``UP 1/3`` → UP, ``DOWN 1/2`` → DOWN, ``MAINT (via b/s)`` → MAINT, ``no check`` kept."""
    text = raw.strip()
    if text in _STATUS:
        return _STATUS[text]
    head = text.split(" ", 1)[0]
    return _STATUS.get(head, "unknown")


@dataclass(frozen=True)
class HAProxyStats(Fact[tuple[BackendServer, ...]]):
    """``show stat`` from the stats socket: one row per server (FRONTEND/BACKEND rows dropped)."""

    socket: str = ADMIN_SOCKET
    section = "haproxy.stats"

    def script(self) -> str:
        sock = shlex.quote(self.socket)
        return (
            f'if [ ! -S {sock} ]; then echo "no stats socket {self.socket}" >&2; return 100; fi\n'
            + socket_command("show stat", self.socket)
        )

    def parse(self, stdout: str) -> tuple[BackendServer, ...]:
        text = stdout.lstrip()
        if not text.startswith("# "):
            raise FactParseError(f"not a `show stat` CSV: {stdout[:120]!r}")
        try:
            rows = list(csv.DictReader(io.StringIO(text[2:])))
        except csv.Error as exc:
            raise FactParseError(f"`show stat` CSV: {exc}") from exc
        servers = []
        for row in rows:
            name = row.get("svname") or ""
            if not row.get("pxname") or name in {"FRONTEND", "BACKEND"}:
                continue
            raw = row.get("status") or ""
            servers.append(
                BackendServer(
                    backend=row["pxname"],
                    server=name,
                    status=normalise_status(raw),
                    raw_status=raw,
                    check_status=row.get("check_status") or None,
                )
            )
        return tuple(servers)


def assemble(
    *,
    files: HAProxyFileInfo,
    unit: UnitState | None,
    config: str | None,
    servers: tuple[BackendServer, ...] | None,
    stats_error: str | None,
) -> HAProxyFacts:
    return HAProxyFacts(
        config_present=files.config_sha256 is not None,
        config_sha256=files.config_sha256,
        config_loaded=files.loaded is not False,
        loaded_sha256=files.loaded_sha256,
        loaded_why=files.loaded_why,
        config=config,
        active=unit.active if unit else False,
        enabled=unit.enabled if unit else False,
        servers=servers or (),
        stats_error=stats_error,
    )
