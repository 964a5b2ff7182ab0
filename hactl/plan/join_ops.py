"""Join material for one apply: bootstrap token, certificate key and CA hash, in memory only.

Design rule 5: the certificate key lives 2 h and the token 24 h; both are checked before every
control-plane join and made afresh when missing or too old. A re-upload invalidates older keys,
so a join batch shares one key (joins run one at a time and re-check it).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from hactl import hostlayout
from hactl.diff import CERTIFICATE_KEY_MARGIN, CERTIFICATE_KEY_TTL, peer_url, url
from hactl.errors import CommandError, HactlError
from hactl.facts.model import EtcdMember
from hactl.hostlayout import ETCD_MANIFEST
from hactl.plan import commands as cmd
from hactl.plan import desired
from hactl.plan.etcd_ops import list_stacked_members
from hactl.plan.remote import put, run, wait_for
from hactl.plan.step import StepContext
from hactl.sensitive import Sensitive
from hactl.transport.base import Argv, Result, check_result

TOKEN_RE = re.compile(r"\b([a-z0-9]{6}\.[a-z0-9]{16})\b")
KEY_RE = re.compile(r"\b([0-9a-f]{64})\b")
HASH_RE = re.compile(r"\bsha256:[0-9a-f]{64}\b")
TOKEN_MAX_AGE = 60 * 60.0  # tokens are made with a 2 h TTL; renew after 1 h
READY_TIMEOUT = 180.0
"""Seconds a control-plane join waits for the first master's ``/readyz`` through the LB."""
KUBEADM_ETCD_PEER_PORT = 2380
"""kubeadm's stacked etcd always listens for peers on 2380."""


def clock() -> float:
    """The run's clock for token and key ages (monotonic; tests replace it)."""
    return time.monotonic()


def parse_token(text: str) -> Sensitive | None:
    match = TOKEN_RE.search(text)
    return Sensitive(match.group(1)) if match else None


def parse_certificate_key(text: str) -> Sensitive | None:
    """The key after ``Using certificate key:`` (or ``--certificate-key``); else the last
    64-hex line (``upload-certs`` prints it last)."""
    after = re.search(r"(?:Using certificate key:|--certificate-key)\s+([0-9a-f]{64})", text)
    if after:
        return Sensitive(after.group(1))
    keys = KEY_RE.findall(text)
    return Sensitive(keys[-1]) if keys else None


def parse_ca_hash(text: str) -> str | None:
    match = HASH_RE.search(text)
    return match.group(0) if match else None


def key_is_fresh(ctx: StepContext, now: float | None = None) -> bool:
    uploaded = ctx.secrets.certificate_key_uploaded_at
    if ctx.secrets.certificate_key is None or uploaded is None:
        return False
    age = (clock() if now is None else now) - uploaded
    return age < CERTIFICATE_KEY_TTL - CERTIFICATE_KEY_MARGIN


def token_is_fresh(ctx: StepContext, now: float | None = None) -> bool:
    made = ctx.secrets.bootstrap_token_created_at
    if ctx.secrets.bootstrap_token is None or made is None:
        return False
    age = (clock() if now is None else now) - made
    return age < TOKEN_MAX_AGE


def remember_token(ctx: StepContext, token: Sensitive) -> None:
    ctx.secrets.bootstrap_token = token
    ctx.secrets.bootstrap_token_created_at = clock()


def remember_key(ctx: StepContext, key: Sensitive) -> None:
    ctx.secrets.certificate_key = key
    ctx.secrets.certificate_key_uploaded_at = clock()


async def ensure_ca_hash(ctx: StepContext, master: str) -> str:
    if ctx.secrets.ca_cert_hash is None:
        from hactl.render import pki  # cryptography: imported by the steps that use it

        result = await run(ctx, master, cmd.read_files(hostlayout.K8S_CA_CERT))
        ctx.secrets.ca_cert_hash = pki.spki_sha256(pki.cert_from_pem(result.stdout.encode()))
    return ctx.secrets.ca_cert_hash


async def ensure_token(ctx: StepContext, master: str) -> Sensitive:
    if not token_is_fresh(ctx):
        result = await run(ctx, master, cmd.token_create())
        token = parse_token(result.stdout)
        if token is None:
            raise CommandError("kubeadm token create printed no token", host=master)
        remember_token(ctx, token)
    assert ctx.secrets.bootstrap_token is not None
    return ctx.secrets.bootstrap_token


async def upload_certificate_key(ctx: StepContext, master: str) -> Sensitive:
    """``kubeadm init phase upload-certs --upload-certs --config …`` → a fresh key."""
    cluster = ctx.cluster
    await put(ctx, master, hostlayout.KUBEADM_CONFIG,
              desired.kubeadm_init_config(cluster, cluster.host(master)), 0o600)
    result = await run(ctx, master, cmd.upload_certs(), timeout=120.0)
    key = parse_certificate_key(result.stdout)
    if key is None:
        raise CommandError("kubeadm init phase upload-certs printed no certificate key", host=master)
    remember_key(ctx, key)
    return key


async def ensure_certificate_key(ctx: StepContext, master: str) -> Sensitive:
    if not key_is_fresh(ctx):
        return await upload_certificate_key(ctx, master)
    assert ctx.secrets.certificate_key is not None
    return ctx.secrets.certificate_key


async def wait_api_ready(ctx: StepContext, master: str, *, timeout: float | None = None) -> None:
    """Design rule 6: ``/readyz`` answers 200 through the load balancer (``kubectl get --raw``
    with admin.conf, whose server is the LB, exits 0 only on a 2xx answer)."""

    async def ready() -> str | None:
        res = await run(ctx, master, cmd.readyz(), check=False)
        return None if res.ok else (res.stderr.strip() or res.stdout.strip() or f"exit {res.exit_status}")

    await wait_for("/readyz of the first master through the load balancer", ready,
                   timeout=READY_TIMEOUT if timeout is None else timeout, interval=2.0, host=master)


@asynccontextmanager
async def secret_file(ctx: StepContext, host: str, path: str, content: Sensitive) -> AsyncIterator[str]:
    """``content`` at ``path`` on ``host`` (0600, written through stdin) for the body's command,
    then ``rm -f path`` — also when the body fails or is cancelled (the removal is shielded, so a
    cancelled apply still takes the secret off the host). A removal that fails is logged, never
    hides the body's own error."""
    try:
        await put(ctx, host, path, content.reveal(), 0o600)
        yield path
    finally:
        removal = asyncio.ensure_future(_remove(ctx, host, path))
        try:
            await asyncio.shield(removal)
        except asyncio.CancelledError:
            await asyncio.wait([removal], timeout=60.0)  # let it finish, then go on cancelling
            raise


async def _remove(ctx: StepContext, host: str, path: str) -> None:
    try:
        res = await run(ctx, host, cmd.remove(path), check=False, timeout=60.0)
        problem = None if res.ok else (res.stderr.strip() or f"exit {res.exit_status}")
    except HactlError as exc:
        problem = str(exc)
    if problem is not None:
        ctx.log("secret file not removed; remove it by hand", path=path, problem=problem)


async def run_with_secrets(ctx: StepContext, host: str, argv: Argv, secrets: Sequence[Sensitive | None],
                           *, timeout: float) -> Result:
    """Run ``argv`` (no secret in it) whose config file holds ``secrets``; a failure's message
    has them masked, in case kubeadm echoes one on stderr."""
    result = await run(ctx, host, argv, timeout=timeout, check=False)
    return check_result(host, argv, result, [s for s in secrets if s is not None])


# -- how the plan shows these (the same builders; see hactl.plan.commands.shown) --------------


def shown_ensure_token(master: str) -> list[str]:
    return [cmd.shown(cmd.token_create(), f"on {master} when this run holds no fresh token; the "
                      "token kept in memory only")]


def shown_ensure_ca_hash(master: str) -> list[str]:
    return [cmd.shown(cmd.read_files(hostlayout.K8S_CA_CERT), f"on {master} unless this run knows it: "
                      "the sha256 of its public key pins discovery")]


def shown_upload_certificate_key(master: str) -> list[str]:
    return [cmd.shown_put(hostlayout.KUBEADM_CONFIG, 0o600, f"on {master}, before the upload: "
                          "InitConfiguration + ClusterConfiguration, no secret"),
            cmd.shown(cmd.upload_certs(), f"on {master} unless this run's key is still fresh: the "
                      "key kept in memory only")]


def shown_wait_api_ready(master: str) -> list[str]:
    return [cmd.shown(cmd.readyz(), f"on {master}, repeated until /readyz answers through the "
                      "load balancer")]


def shown_secret_file(path: str, what: str, command: Argv, failing: str) -> list[str]:
    """:func:`secret_file` around ``command``, as the plan shows it (secrets masked)."""
    return [cmd.shown_put(path, 0o600, what), cmd.shown(command),
            cmd.shown(cmd.remove(path), f"also when {failing} fails")]


# -- stacked etcd: the member a half-done control-plane join may have added ------------------


async def stacked_member_of(ctx: StepContext, via: str, host: str) -> EtcdMember | None:
    """The stacked etcd's member that is ``host`` (by name or peer URL), listed through the
    local member on ``via``; None when there is none. A list that fails raises (transient): a
    member that cannot be seen cannot be ruled out."""
    members = await list_stacked_members(ctx, via)
    if isinstance(members, str):
        raise CommandError(f"could not list the stacked etcd members on {via} to see whether {host} is one: "
                           + members, host=via, transient=True)
    spec = ctx.cluster.host(host)
    urls = {peer_url(ctx.cluster, spec), url(spec.address, KUBEADM_ETCD_PEER_PORT)}
    for member in members:
        if member.name == host or urls & set(member.peer_urls):
            return member
    return None


def member_remove_hint(via: str, member: EtcdMember) -> str:
    remove = cmd.stacked_etcdctl([cmd.STACKED_LOCAL], "member", "remove", member.id)
    return (f"remove the member by hand through a healthy member, e.g. on {via}: "
            f"`{cmd.shown(remove)}` (once `member list` shows it is not a "
            "started voter the cluster needs for quorum), then `hactl plan` again")


async def guard_stacked_member(ctx: StepContext, via: str, host: str, step: str) -> EtcdMember | None:
    """Before ``kubeadm reset -f`` of a control-plane node in a stacked etcd: a member this node's
    interrupted join added must be one kubeadm reset removes (it does so only when the node
    holds the etcd manifest); otherwise refuse before touching anything — a member left behind
    with its node reset (or a second one added next to it by the join) costs the quorum."""
    member = await stacked_member_of(ctx, via, host)
    if member is None:
        return None
    if not (await run(ctx, host, cmd.file_exists(ETCD_MANIFEST), check=False)).ok:
        state = "started" if member.started else "added but never started"
        raise CommandError(
            f"{host} is to be reset and joined again, but its interrupted join left etcd member {member.id} "
            f"({state}, {', '.join(member.peer_urls)}) in the stacked etcd "
            f"and {host} has no {ETCD_MANIFEST}, so `kubeadm reset -f` would not remove it; "
            "refusing to reset and join next to it (that could break the etcd quorum)",
            host=host, step=step, hint=member_remove_hint(via, member))
    return member


async def check_member_removed(ctx: StepContext, via: str, host: str, step: str,
                               member: EtcdMember) -> None:
    """After ``kubeadm reset -f``: the node's member is gone from the stacked etcd."""
    if await stacked_member_of(ctx, via, host) is not None:
        raise CommandError(
            f"`kubeadm reset -f` on {host} did not remove its etcd member {member.id} from the "
            "stacked etcd; refusing to join again next to it (that could break the etcd quorum)",
            host=host, step=step, hint=member_remove_hint(via, member))
