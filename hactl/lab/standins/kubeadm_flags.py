"""Command-line parsing of the kubeadm stand-in, strict the way cobra/pflag are.

- No abbreviations: ``--pod-net`` is not ``--pod-network-cidr`` (pflag has no prefix matching;
  argparse's ``allow_abbrev`` is turned off for every parser and subparser).
- Errors read like kubeadm's: kubeadm's root command sets ``SilenceErrors``/``SilenceUsage``, so
  cobra prints nothing and ``kubeadmutil.CheckErr`` prints the bare error + the ``--v=5`` hint
  on stderr, exit 1: ``unknown flag: --pod-net``, ``unknown shorthand flag: 'x' in -x``,
  ``flag needs an argument: --config``.
- ``--config`` mixes: kubeadm's ``ValidateMixedArguments`` (cmd/kubeadm/app/apis/kubeadm/
  validation/validation.go) refuses any flag set next to ``--config`` outside ``isAllowedFlag``'s
  list (and ``--skip-*``): ``can not mix '--config' with arguments [a b]`` — the names sorted
  (pflag's ``Visit`` is lexicographical), exit 1. It runs for ``init``, ``join`` and every
  ``init phase …``.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Sequence
from typing import Any, NoReturn

from .kubeadm_common import KubeadmError

ALLOWED_WITH_CONFIG = frozenset({
    "config", "ignore-preflight-errors", "dry-run", "kubeconfig", "node-name", "kubeconfig-dir",
    "upload-certs", "print-join-command", "rootfs", "v", "log-file",
})
"""kubeadm's ``isAllowedFlag``; every ``skip-*`` flag is allowed too."""

SHORTHANDS = {"v": "v", "f": "force", "o": "output"}


class UsageError(KubeadmError):
    """A command-line error: printed without a phase, exit 1."""


def _pflag_text(message: str) -> str:
    needs = re.fullmatch(r"argument (?:-\w/)?(--[\w-]+)(?:/-\w)?: expected one argument", message)
    if needs:
        return f"flag needs an argument: {needs.group(1)}"
    choice = re.fullmatch(r"argument (\w+): invalid choice: '([^']*)'.*", message)
    if choice:
        return f'unknown command "{choice.group(2)}"'
    return message


class Parser(argparse.ArgumentParser):
    """argparse without abbreviations, failing with pflag's words (raises :class:`UsageError`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["allow_abbrev"] = False
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        raise UsageError(_pflag_text(message))


def parse(parser: argparse.ArgumentParser, argv: Sequence[str]) -> argparse.Namespace:
    """Parse like pflag: the first unknown flag (in argv order) is an error."""
    args, extras = parser.parse_known_args(list(argv))
    for token in extras:
        if token.startswith("--") and len(token) > 2:
            raise UsageError(f"unknown flag: {token.partition('=')[0]}")
        if token.startswith("-") and len(token) > 1:
            raise UsageError(f"unknown shorthand flag: {token[1]!r} in {token}")
    if extras:
        raise UsageError(f'unknown command "{extras[0]}" for "{parser.prog}"')
    return args


def given_flags(argv: Sequence[str]) -> set[str]:
    """The flag names set on the command line (pflag's ``Changed``), long names, no dashes."""
    names: set[str] = set()
    for token in argv:
        if token == "--":
            break
        if token.startswith("--") and len(token) > 2:
            names.add(token[2:].partition("=")[0])
        elif token.startswith("-") and len(token) > 1 and not token[1].isdigit():
            names.add(SHORTHANDS.get(token[1], token[1]))
    return names


def check_mixed(argv: Sequence[str]) -> None:
    """kubeadm's ``ValidateMixedArguments``."""
    given = given_flags(argv)
    if "config" not in given:
        return
    mixed = sorted(n for n in given if n not in ALLOWED_WITH_CONFIG and not n.startswith("skip-"))
    if mixed:
        raise UsageError(f"can not mix '--config' with arguments [{' '.join(mixed)}]")
