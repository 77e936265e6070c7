"""Push: one IMAP IDLE connection per watched folder (RFC 2177), kept alive and renewed by us.

imapclient gives idle() / idle_check() / idle_done(); keeping the connection honest is this module's job:
- IDLE is ended and restarted every ``renew_seconds`` (default 9 minutes; servers may drop an IDLE after
  30), with a NOOP in between, so a silently dead connection is found within that time;
- an idle_check() that returns at once with nothing means the server closed the socket;
- TCP keepalive is switched on, so the kernel also notices a peer that vanished;
- any failure reconnects with exponential backoff and jitter (health.AccountHealth), and a refused
  login waits long and alerts the channels once.
When the server announces new mail (EXISTS), the folder is checked at once on the same connection.
Servers without IDLE are left to the periodic check (polling).
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable

from watcher.config import AccountConfig
from watcher.errors import AuthenticationFailed, FetchError
from watcher.health import AccountHealth, Backoff
from watcher.imap import NETWORK_ERRORS, Mailbox
from watcher.pipeline import Engine, FolderSummary, check_folder
from watcher.store import Store

log = logging.getLogger(__name__)

IDLE_RENEW_SECONDS = 9 * 60
MAX_IDLE_RENEW_SECONDS = 29 * 60
STOP_POLL_SECONDS = 1.0  # how often a waiting IDLE looks at the stop flag


class FolderWatch(threading.Thread):
    """Watches one (account, folder) with IDLE until ``stopping`` is set."""

    def __init__(self, engine: Engine, account: AccountConfig, folder: str, lock: threading.Lock,
                 health: AccountHealth, stopping: threading.Event, on_events: Callable[[FolderSummary], None],
                 renew_seconds: float = IDLE_RENEW_SECONDS) -> None:
        super().__init__(name=f"idle:{account.name}/{folder}", daemon=True)
        self.engine, self.account, self.folder = engine, account, folder
        self.lock, self.health, self.stopping, self.on_events = lock, health, stopping, on_events
        self.renew_seconds = min(renew_seconds, MAX_IDLE_RENEW_SECONDS)
        self.supported = True  # False once the server turns out not to offer IDLE
        self.heartbeat = time.monotonic()  # last sign of life, for the watchdog
        # This folder's own trouble (it vanished, its connection dropped) backs off this watch only;
        # a refused login is the account's (health), and pauses its periodic check too.
        self.backoff = Backoff()
        self.retry_at = 0.0

    def run(self) -> None:
        while not self.stopping.is_set():
            wait = max(self.health.seconds_until_retry(), self.retry_at - time.monotonic())
            if wait > 0 and self.stopping.wait(wait):
                return
            try:
                with Mailbox(self.account) as mailbox:
                    if not mailbox.supports_idle():
                        log.info("%s: the server does not offer IDLE; polling every %ds", self.account.name,
                                 self.engine.config.poll_seconds)
                        self.supported = False
                        return
                    _enable_keepalive(mailbox)
                    self._check(mailbox)
                    self.health.succeeded()
                    self.backoff.reset()
                    self._set_state("idle")
                    log.info("%s/%s: IDLE", self.account.name, self.folder)
                    self._idle(mailbox)
            except AuthenticationFailed as error:
                delay = self.health.failed(error)
                self._set_state(self.health.state, str(error))
                log.warning("%s; reconnecting in %.1fs", error, delay)
            except FetchError as error:
                self._back_off(str(error))
            except Exception as error:  # a bug must not end the watch silently: log it and back off
                log.exception("%s/%s: unexpected error", self.account.name, self.folder)
                self._back_off(f"{self.account.name}/{self.folder}: {error.__class__.__name__}: {error}")

    def _back_off(self, error: str) -> None:
        delay = self.backoff.next_delay()
        self.retry_at = time.monotonic() + delay
        self._set_state("backing_off", error)
        log.warning("%s; reconnecting in %.1fs", error, delay)

    def _check(self, mailbox: Mailbox) -> None:
        with self.lock:
            summary = check_folder(self.engine, mailbox, self.account, self.folder, self.stopping.is_set)
        self.heartbeat = time.monotonic()
        if summary.events:
            self.on_events(summary)

    def _idle(self, mailbox: Mailbox) -> None:
        """IDLE until stopped; check on news; renew; raise FetchError when the connection fails."""
        client = mailbox.client
        assert client is not None
        try:
            client.idle()
            started = time.monotonic()
            while not self.stopping.is_set():
                asked = time.monotonic()
                responses = client.idle_check(timeout=STOP_POLL_SECONDS)
                self.heartbeat = time.monotonic()
                if any(isinstance(item, tuple) and len(item) > 1 and item[1] == b"EXISTS" for item in responses):
                    client.idle_done()
                    self._check(mailbox)
                    client.idle()
                    continue
                if not responses and self.heartbeat - asked < STOP_POLL_SECONDS / 2:
                    # poll() said readable but there was nothing to read: the server may have closed the
                    # connection. Ending IDLE raises if so; otherwise IDLE simply starts again.
                    client.idle_done()
                    client.idle()
                if self.heartbeat - started >= self.renew_seconds:
                    client.idle_done()
                    client.noop()
                    client.idle()
                    started = time.monotonic()
            client.idle_done()
        except NETWORK_ERRORS as error:
            raise FetchError(f"{self.account.name}/{self.folder}: IDLE connection lost: "
                             f"{error.__class__.__name__}: {error}") from None

    def _set_state(self, state: str, error: str | None = None) -> None:
        try:
            with Store(self.engine.config.database) as store:
                store.set_folder_state(self.account.name, self.folder, state, error=error)
        except Exception:  # the state is for `watcher status`; never let it stop the watch
            log.exception("could not record the state of %s/%s", self.account.name, self.folder)


def _enable_keepalive(mailbox: Mailbox) -> None:
    """Let the kernel probe an idle connection, so a vanished server is noticed within minutes."""
    if mailbox.client is None:
        return
    sock = mailbox.client.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for option, value in (("TCP_KEEPIDLE", 60), ("TCP_KEEPINTVL", 20), ("TCP_KEEPCNT", 3)):
        if hasattr(socket, option):
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, option), value)
