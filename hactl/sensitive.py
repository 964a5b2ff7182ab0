"""A value that must never be printed: bootstrap tokens, certificate keys, private keys.

``Sensitive`` renders as ``(sensitive value)`` in ``str``, ``repr``, f-strings, JSON and logs;
only the transport calls :meth:`reveal` when it puts the value on the wire.
"""

from __future__ import annotations

from typing import Any

MASK = "(sensitive value)"


class Sensitive:
    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __str__(self) -> str:
        return MASK

    def __repr__(self) -> str:
        return f"Sensitive({MASK})"

    def __format__(self, spec: str) -> str:
        return MASK

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sensitive) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("Sensitive", self._value))

    def __reduce__(self) -> Any:  # refuse pickling the secret into files
        raise TypeError("Sensitive values cannot be serialised")


def mask_text(text: str, secrets: list[Sensitive] | tuple[Sensitive, ...]) -> str:
    """Replace every revealed secret inside ``text`` (e.g. a command's stderr) by the mask."""
    for secret in secrets:
        value = secret.reveal()
        if value:
            text = text.replace(value, MASK)
    return text
