"""`watcher run`: check every account every poll_seconds and send stored deliveries, until SIGTERM/SIGINT.

APScheduler runs one interval job per account (never two runs of one account at once, missed runs
coalesced) and one delivery job. Signals only set an event; the main thread then stops the scheduler.
Everything is recorded before it is sent, so stopping at any instant loses nothing.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from datetime import UTC, datetime
from types import FrameType

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler

from watcher.config import AccountConfig
from watcher.pipeline import Engine, check_account, deliver_due
from watcher.store import Store

log = logging.getLogger(__name__)

DELIVERY_INTERVAL_SECONDS = 5
STOP_GRACE_SECONDS = 8.0


class Daemon:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.stopping = threading.Event()
        workers = len(engine.config.accounts) + 1
        self.scheduler = BackgroundScheduler(
            executors={"default": ThreadPoolExecutor(max_workers=workers)},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
            timezone=UTC,
        )

    def check(self, account: AccountConfig) -> None:
        summary = check_account(self.engine, account, self.stopping.is_set)
        if summary.events:
            # New events: send them now rather than at the next delivery tick.
            self.scheduler.modify_job("deliver", next_run_time=datetime.now(UTC))

    def deliver(self) -> None:
        with Store(self.engine.config.database) as store:
            deliver_due(self.engine, store, self.stopping.is_set)

    def run(self) -> None:
        """Block until a stop signal; return after stopping cleanly (within ~10 s)."""
        config = self.engine.config
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            now = datetime.now(UTC)
            self.scheduler.add_job(self.deliver, "interval", seconds=DELIVERY_INTERVAL_SECONDS, id="deliver",
                                   next_run_time=now)
            for account in config.accounts:
                self.scheduler.add_job(self.check, "interval", args=[account], seconds=config.poll_seconds,
                                       id=f"check:{account.name}", next_run_time=now)
            self.scheduler.start()
            log.info("watching %d accounts every %ds; %d channels", len(config.accounts), config.poll_seconds,
                     len(config.channels))
            self.stopping.wait()
            log.info("stopping")
            self.scheduler.shutdown(wait=False)
            self._wait_for_jobs(STOP_GRACE_SECONDS)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        log.info("received %s", signal.Signals(signum).name)
        self.stopping.set()

    def _wait_for_jobs(self, grace: float) -> None:
        deadline = time.monotonic() + grace
        main = threading.main_thread()
        for thread in threading.enumerate():
            if thread is main or thread.daemon:
                continue
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                # A blocking IMAP call (bounded by its socket timeout) is still running. Everything it had
                # finished is committed; the rest is redone on the next start.
                # Worker threads cannot be interrupted, so leave without waiting for them.
                log.warning("a job is still running after %.0fs; exiting anyway", grace)
                logging.shutdown()
                os._exit(0)
