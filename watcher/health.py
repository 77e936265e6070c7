"""When to try an account again: exponential backoff with jitter, and the authentication-failure state.

A failing server is retried after 1 s, 2 s, 4 s … up to 5 minutes (each pause randomised to half to full
length, so many watchers do not reconnect in step). A refused login is different: retrying soon cannot
help and looks like an attack to the provider, so it waits AUTH_RETRY_SECONDS, alerts the channels once,
and once more when the login works again. The "alert sent" mark lives in the database, so a restart
neither repeats the alert nor forgets to announce the recovery.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from pathlib import Path

from watcher.errors import AuthenticationFailed, FetchError
from watcher.store import Store

log = logging.getLogger(__name__)

FIRST_DELAY_SECONDS = 1.0
MAX_DELAY_SECONDS = 300.0
AUTH_RETRY_SECONDS = 1800.0
AUTH_ALERT = "auth_failed"


class Backoff:
    """Exponential backoff with jitter: each failure doubles the pause, up to ``cap`` seconds."""

    def __init__(self, first: float = FIRST_DELAY_SECONDS, cap: float = MAX_DELAY_SECONDS,
                 jitter: Callable[[], float] = random.random) -> None:
        self.first, self.cap, self.jitter = first, cap, jitter
        self.failures = 0

    def next_delay(self) -> float:
        """Count a failure and return how long to wait before the next try."""
        delay = min(self.cap, self.first * 2.0 ** self.failures)
        self.failures += 1
        return delay * (0.5 + 0.5 * self.jitter())

    def reset(self) -> None:
        self.failures = 0


class AccountHealth:
    """One account's retry state, shared by its IDLE threads and its periodic check (thread-safe)."""

    def __init__(self, account: str, database: Path, alert: Callable[[str, str], None],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.account = account
        self.database = database
        self.alert = alert  # (title, body) → sent to every channel, best effort
        self.clock = clock
        self.backoff = Backoff()
        self.auth_failed = False
        self.next_attempt = 0.0
        self._no_alert_pending = False  # True once the database is known to hold no unanswered alert
        self._lock = threading.Lock()

    def may_try(self) -> bool:
        with self._lock:
            return self.clock() >= self.next_attempt

    def seconds_until_retry(self) -> float:
        with self._lock:
            return max(0.0, self.next_attempt - self.clock())

    @property
    def state(self) -> str:
        if self.auth_failed:
            return "auth_failed"
        return "backing_off" if self.backoff.failures else "ok"

    def succeeded(self) -> None:
        """The account connected and was read: reset the backoff; announce a recovered login once."""
        with self._lock:
            self.backoff.reset()
            self.next_attempt = 0.0
            self.auth_failed = False
            if self._no_alert_pending:
                return
            self._no_alert_pending = True
        with Store(self.database) as store:
            if not store.alert_sent(self.account, AUTH_ALERT):
                return
            store.mark_alert(self.account, AUTH_ALERT, sent=False)
        # The mark may come from before a restart, so announce even if this process never saw the failure.
        log.info("%s: login works again", self.account)
        self.alert(f"[RECOVERED] watcher can log in to {self.account} again",
                   f"The mailbox **{self.account}** is being watched again; mail that arrived meanwhile is "
                   "being checked now.")

    def failed(self, error: FetchError) -> float:
        """Record a failure; return how many seconds to wait. A refused login alerts the channels once."""
        with self._lock:
            if isinstance(error, AuthenticationFailed):
                self.auth_failed = True
                self._no_alert_pending = False
                delay = AUTH_RETRY_SECONDS
            else:
                delay = self.backoff.next_delay()
            self.next_attempt = self.clock() + delay
        if isinstance(error, AuthenticationFailed):
            with Store(self.database) as store:
                if store.alert_sent(self.account, AUTH_ALERT):
                    return delay
                store.mark_alert(self.account, AUTH_ALERT, sent=True)
            log.error("%s; next try in %.0f minutes", error, delay / 60)
            self.alert(f"[ACTION NEEDED] watcher cannot log in to {self.account}",
                       f"{error}\n\nNo mail from this mailbox is being checked. Fix the password (or app password) "
                       f"in the configuration; watcher retries every {AUTH_RETRY_SECONDS / 60:.0f} minutes and "
                       "says so here when it works again.")
        return delay
