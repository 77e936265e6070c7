"""Secrets (passwords, channel URLs): read from the config, a file, a variable or a systemd credential.

A Secret never shows its value in repr/str, so it cannot leak into logs or error messages by accident.
"""

from __future__ import annotations

import enum
import logging
import os
import re
from pathlib import Path

from watcher.errors import SecretError


class SecretSource(enum.Enum):
    VALUE = "value"
    FILE = "file"
    ENV = "env"
    CREDENTIAL = "credential"


class Secret:
    """A value that must never be printed; ``reveal()`` is the only way to read it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


def read_secret(source: SecretSource, reference: str) -> Secret:
    """Return the secret ``reference`` points at; raise SecretError saying where it looked (never the value).

    FILE: a path; ENV: a variable name; CREDENTIAL: a name under $CREDENTIALS_DIRECTORY (systemd LoadCredential=).
    Surrounding whitespace and a trailing newline are stripped from file contents.
    """
    if source is SecretSource.VALUE:
        return Secret(reference)
    if source is SecretSource.ENV:
        value = os.environ.get(reference)
        if not value:
            raise SecretError(f"environment variable {reference} is not set")
        return Secret(value)
    if source is SecretSource.CREDENTIAL:
        directory = os.environ.get("CREDENTIALS_DIRECTORY")
        if not directory:
            raise SecretError(f"credential {reference!r} asked for, but $CREDENTIALS_DIRECTORY is not set "
                              "(systemd sets it for units with LoadCredential=)")
        return _read_file(Path(directory) / reference)
    return _read_file(Path(reference))


def _read_file(path: Path) -> Secret:
    try:
        value = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise SecretError(f"file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as error:
        raise SecretError(f"cannot read {path}: {error.__class__.__name__}") from None
    if not value:
        raise SecretError(f"file is empty: {path}")
    return Secret(value)


class RedactingFilter(logging.Filter):
    """Replaces every known secret (and every token-like piece of a secret URL) in log records with ***.

    Libraries log what they send at debug level — Apprise the webhook URL, an IMAP trace the LOGIN
    line — so the filter sits on the handlers, where every record passes.
    """

    def __init__(self, secrets: list[Secret]) -> None:
        super().__init__()
        pieces: set[str] = set()
        for secret in secrets:
            value = secret.reveal()
            if value:
                pieces.add(value)
                pieces.update(part for part in re.split(r"[/:?&=@#,\s]+", value)
                              if len(part) >= 6 and part.lower() not in _HARMLESS)
        self.pieces = sorted(pieces, key=len, reverse=True)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = self.redact(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True

    def redact(self, text: str) -> str:
        for piece in self.pieces:
            text = text.replace(piece, "***")
        return text


_HARMLESS = {"https", "http", "mailto", "mailtos", "localhost", "127.0.0.1", "insecure", "example.com"}


def redact_logs(secrets: list[Secret]) -> None:
    """Install a RedactingFilter for ``secrets`` on every handler of the root logger."""
    redactor = RedactingFilter(secrets)
    for handler in logging.getLogger().handlers:
        handler.addFilter(redactor)
