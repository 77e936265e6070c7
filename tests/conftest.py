"""Shared fixtures: a real Dovecot, HTTP and SMTP sinks on 127.0.0.1, and the shared mail corpora."""

from __future__ import annotations

import os
from contextlib import contextmanager
import threading
from collections.abc import Iterator
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from watcher.sandbox import HttpSink, LocalDovecot, Mailbox, SandboxError, free_port

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DIR = REPO_ROOT.parent / "shared"


def running_in_ci() -> bool:
    """Return True when the CI variable says so; there, missing tools fail instead of skipping."""
    return os.environ.get("CI", "").lower() == "true"


class SmtpSink:
    """An aiosmtpd server on 127.0.0.1 that keeps every message it receives."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self.host = "127.0.0.1"
        self.port = free_port()
        self._arrivals = threading.Condition()
        self._controller = Controller(self, hostname=self.host, port=self.port)

    def url(self, to: str = "ops@example.test") -> str:
        """Return the Apprise ``mailto://`` URL delivering to ``to`` through this sink, no auth."""
        query = urlencode({"from": "watcher@example.test", "to": to, "mode": "insecure"})
        return f"mailto://{self.host}:{self.port}?{query}"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:  # noqa: N802
        """aiosmtpd hook: parse and keep the message, then accept it."""
        content = envelope.original_content or b""
        message = message_from_bytes(content, policy=policy.default)
        assert isinstance(message, EmailMessage)
        with self._arrivals:
            self.messages.append(message)
            self._arrivals.notify_all()
        return "250 Message accepted for delivery"

    def wait_for(self, count: int, timeout: float = 10.0) -> list[EmailMessage]:
        """Return the messages once at least ``count`` arrived; raise SandboxError at ``timeout``."""
        with self._arrivals:
            if not self._arrivals.wait_for(lambda: len(self.messages) >= count, timeout):
                raise SandboxError(f"SMTP sink got {len(self.messages)} of {count} in {timeout}s")
            return list(self.messages)

    def start(self) -> None:
        self._controller.start()

    def stop(self) -> None:
        self._controller.stop()


@contextmanager
def running_dovecot(**options: Any) -> Iterator[LocalDovecot]:
    """Start a LocalDovecot with ``options``; skip the test when it cannot start (fail under CI=true)."""
    server = LocalDovecot(**options)
    try:
        server.start()
    except SandboxError as error:
        if running_in_ci():
            pytest.fail(f"CI=true but the Dovecot sandbox cannot start: {error}")
        pytest.skip(str(error))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def dovecot() -> Iterator[LocalDovecot]:
    """A Dovecot on 127.0.0.1 for the whole run; skipped when not installed (failed under CI)."""
    with running_dovecot() as server:
        yield server


@pytest.fixture
def mailbox(dovecot: LocalDovecot) -> Mailbox:
    """A fresh, empty mailbox user on the session's Dovecot."""
    return dovecot.add_user()


@pytest.fixture
def http_sink() -> Iterator[HttpSink]:
    """A running HttpSink recording the POSTs it receives."""
    with HttpSink() as sink:
        yield sink


@pytest.fixture
def smtp_sink() -> Iterator[SmtpSink]:
    """A running SMTP server on 127.0.0.1 collecting messages."""
    sink = SmtpSink()
    sink.start()
    try:
        yield sink
    finally:
        sink.stop()


def _shared_dir(name: str) -> Path:
    path = SHARED_DIR / name
    if not path.is_dir():
        pytest.skip(f"{path} is absent: clone the shared folder beside the repository")
    return path


@pytest.fixture(scope="session")
def corpus_dir() -> Path:
    """The labelled .eml corpus at ../shared/corpus; tests using it skip when it is absent."""
    return _shared_dir("corpus")


@pytest.fixture(scope="session")
def realmail_dir() -> Path:
    """The real-world mail samples at ../shared/realmail; tests using it skip when absent."""
    return _shared_dir("realmail")
