"""`watcher run`: push (IDLE) and polling for every account, delivery per channel, until SIGTERM/SIGINT.

- Each watched folder of a server that offers IDLE has its own FolderWatch thread (idle.py): new mail is
  checked the moment the server announces it.
- APScheduler runs one interval job per account every poll_seconds — the polling for servers without
  IDLE and the safety net for those with it (never two runs of one account at once, missed runs
  coalesced) — and one delivery job per channel, so a slow or failing channel delays no other.
- A per-folder lock keeps a folder's IDLE check and the periodic check from reading it at the same time.
- systemd (Type=notify) hears READY=1 once running, STATUS= with a one-line summary, and WATCHDOG=1 only
  while every watch thread is alive and the scheduler runs, so a hung watcher is restarted.
Signals only set an event; everything is recorded before it is sent, so stopping at any instant loses nothing.
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

from watcher import lifecycle, systemd
from watcher.config import AccountConfig
from watcher.health import AccountHealth
from watcher.idle import FolderWatch
from watcher.pipeline import Engine, FolderSummary, check_account, deliver_due
from watcher.store import Store

log = logging.getLogger(__name__)

DELIVERY_INTERVAL_SECONDS = 5
STATUS_INTERVAL_SECONDS = 30
REMINDER_INTERVAL_SECONDS = 600
STOP_GRACE_SECONDS = 8.0


class Daemon:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        config = engine.config
        self.stopping = threading.Event()
        self.locks = {account.name: {folder: threading.Lock() for folder in account.folders}
                      for account in config.accounts}
        self.health = {account.name: AccountHealth(account.name, config.database, self.alert)
                       for account in config.accounts}
        self.watches: list[FolderWatch] = []
        workers = len(config.accounts) + len(config.channels) + 2
        self.scheduler = BackgroundScheduler(
            executors={"default": ThreadPoolExecutor(max_workers=workers)},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
            timezone=UTC,
        )

    # --- jobs -------------------------------------------------------------------------------------

    def check(self, account: AccountConfig) -> None:
        """The periodic check of one account (polling, and the safety net under IDLE)."""
        health = self.health[account.name]
        if not health.may_try():
            return
        summary = check_account(self.engine, account, self.stopping.is_set, self.locks[account.name])
        if summary.failure is not None:
            delay = health.failed(summary.failure)
            log.warning("%s: next try in %.1fs", account.name, delay)
            with Store(self.engine.config.database) as store:
                for folder in account.folders:
                    store.set_folder_state(account.name, folder, health.state, error=str(summary.failure))
        else:
            health.succeeded()
        if summary.events:
            self.deliver_now()

    def remind(self) -> None:
        """Add the reminders and re-announcements that are due (lifecycle.py), then send them."""
        config = self.engine.config
        with Store(config.database) as store:
            added = lifecycle.schedule_reminders(store.db, config.channels, config.reminder_hours,
                                                 config.reannounce_hours)
        if added:
            log.info("%d reminders due", added)
            self.deliver_now()

    def deliver(self, channel: str) -> None:
        with Store(self.engine.config.database) as store:
            deliver_due(self.engine, store, self.stopping.is_set, channel=channel)

    def deliver_now(self, _summary: FolderSummary | None = None) -> None:
        """Wake every channel's delivery job: new events are waiting."""
        now = datetime.now(UTC)
        for channel in self.engine.config.channels:
            try:
                self.scheduler.modify_job(f"deliver:{channel.name}", next_run_time=now)
            except LookupError:  # stopping: the jobs are gone
                return

    def alert(self, title: str, body: str) -> None:
        """Send an operational alert (not an event) to every channel, best effort."""
        from watcher.notify import send

        for channel in self.engine.config.channels:
            outcome, _ = send(channel, title, body, "warning")
            log.info("alert to %s: %s", channel.name, outcome.outcome)

    def report(self) -> None:
        """Tell systemd the status line, and that we are alive when every watch is."""
        # A watch not started yet is not dead: this job's first run comes before the watches start.
        dead = [watch.name for watch in self.watches
                if watch.supported and watch.ident is not None and not watch.is_alive()]
        with Store(self.engine.config.database) as store:
            states = [row["state"] for row in store.folder_states()]
            pending = sum(row["pending"] or 0 for row in store.delivery_counts())
        counts = ", ".join(f"{states.count(state)} {state}" for state in sorted(set(states)))
        summary = f"{len(states)} folders: {counts or 'starting'}; {pending} deliveries pending"
        fields = [f"STATUS={summary}" + (f"; STOPPED: {', '.join(dead)}" if dead else "")]
        if not dead:
            fields.append("WATCHDOG=1")
        else:
            log.error("watch threads stopped: %s", ", ".join(dead))
        systemd.notify(*fields)

    # --- life cycle -------------------------------------------------------------------------------

    def run(self) -> None:
        """Block until a stop signal; return after stopping cleanly (within ~10 s)."""
        config = self.engine.config
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            Store(config.database).close()  # create or migrate the database before any thread opens it
            now = datetime.now(UTC)
            for channel in config.channels:
                self.scheduler.add_job(self.deliver, "interval", args=[channel.name], id=f"deliver:{channel.name}",
                                       seconds=DELIVERY_INTERVAL_SECONDS, next_run_time=now)
            for account in config.accounts:
                self.scheduler.add_job(self.check, "interval", args=[account], id=f"check:{account.name}",
                                       seconds=config.poll_seconds,
                                       next_run_time=datetime.fromtimestamp(time.time() + config.poll_seconds, UTC))
                for folder in account.folders:
                    watch = FolderWatch(self.engine, account, folder, self.locks[account.name][folder],
                                        self.health[account.name], self.stopping, self.deliver_now)
                    self.watches.append(watch)
            self.scheduler.add_job(self.remind, "interval", id="remind", seconds=REMINDER_INTERVAL_SECONDS,
                                   next_run_time=now)
            interval = systemd.watchdog_interval() or STATUS_INTERVAL_SECONDS
            self.scheduler.add_job(self.report, "interval", id="report", seconds=interval, next_run_time=now)
            self.scheduler.start()
            for watch in self.watches:
                watch.start()
            # Servers without IDLE get their first check now rather than after poll_seconds.
            time.sleep(0.2)
            for account in config.accounts:
                self.scheduler.modify_job(f"check:{account.name}", next_run_time=datetime.now(UTC))
            systemd.notify("READY=1", f"STATUS=watching {len(config.accounts)} accounts")
            log.info("watching %d accounts every %ds; %d channels", len(config.accounts), config.poll_seconds,
                     len(config.channels))
            self.stopping.wait()
            log.info("stopping")
            systemd.notify("STOPPING=1")
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
            if thread is main:
                continue
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive() and not thread.daemon:
                # Worker threads cannot be interrupted, so leave without waiting for them. Everything they had
                # finished is committed; the rest is redone on the next start.
                log.warning("a job is still running after %.0fs; exiting anyway", grace)
                logging.shutdown()
                os._exit(0)
