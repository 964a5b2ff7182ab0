"""A file a renderer wants on a host: path, content and mode.

Secret contents (private keys) are :class:`~hactl.sensitive.Sensitive`, so a plan can show that a
key file changes without showing the key; only the transport reveals it when it writes the file.
"""

from __future__ import annotations

from dataclasses import dataclass

from hactl.sensitive import Sensitive


@dataclass(frozen=True)
class RenderedFile:
    path: str
    """Absolute path on the host."""
    content: str | Sensitive
    """File content; ``Sensitive`` for secrets (private keys)."""
    mode: int = 0o644
    """Permission bits; 0600 for secrets."""

    @property
    def secret(self) -> bool:
        return isinstance(self.content, Sensitive)

    def reveal(self) -> str:
        """The real content, for the wire only."""
        return self.content.reveal() if isinstance(self.content, Sensitive) else self.content


def public(path: str, content: str | bytes, mode: int = 0o644) -> RenderedFile:
    text = content.decode() if isinstance(content, bytes) else content
    return RenderedFile(path, text, mode)


def secret(path: str, content: str | bytes) -> RenderedFile:
    """A secret file: masked content, mode 0600."""
    text = content.decode() if isinstance(content, bytes) else content
    return RenderedFile(path, Sensitive(text), 0o600)
