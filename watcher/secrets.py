"""Secrets (passwords, channel URLs): read from the config, a file, a variable or a systemd credential.

A Secret never shows its value in repr/str, so it cannot leak into logs or error messages by accident.
"""

from __future__ import annotations

import enum
import os
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
