"""`watcher run`: push (IDLE) and polling for every account, delivery per channel, until SIGTERM/SIGINT.

- Each watched folder of a server that offers IDLE has its own FolderWatch thread (idle.py): new mail is
  checked the moment the server announces it.
- APScheduler runs one interval job per account every poll_seconds — the polling for servers without
  IDLE and the safety net for those with it (never two runs of one account at once, missed runs
  coalesced) — and one delivery job per channel, so a slow or failing channel delays no other.
- A channel with a ``digest`` has a cron job in its time zone that adds the day's digest row (delivery.py);
  its delivery job sends it.
- A per-folder lock keeps a folder's IDLE check and the periodic check from reading it at the same time.
- systemd (Type=notify) hears READY=1 once running, STATUS= with a one-line summary, and WATCHDOG=1 only
  while every watch thread is alive and the scheduler runs, so a hung watcher is restarted.
SIGHUP (`systemctl reload watcher`) re-reads the configuration: accounts that did not change keep their
connections; changed, added and removed ones are restarted, started and stopped; a bad file is refused.
Signals only set an event; everything is recorded before it is sent, so stopping at any instant loses nothing.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import FrameType

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger

from watcher import lifecycle, systemd
from watcher.config import AccountConfig, Config, load_config
from watcher.delivery import deliver_due, schedule_digest
from watcher.errors import WatcherError
from watcher.health import AccountHealth
from watcher.idle import FolderWatch
from watcher.pipeline import Engine, FolderSummary, check_account
from watcher.store import Store

log = logging.getLogger(__name__)

DELIVERY_INTERVAL_SECONDS = 5
STATUS_INTERVAL_SECONDS = 30
REMINDER_INTERVAL_SECONDS = 600
STOP_GRACE_SECONDS = 8.0


@dataclass
class AccountWatch:
    """What runs for one account: its health, folder locks, IDLE threads and their stop signal."""

    account: AccountConfig
    health: AccountHealth
    locks: dict[str, threading.Lock]
    stop: threading.Event = field(default_factory=threading.Event)
    watches: list[FolderWatch] = field(default_factory=list)


class Daemon:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        config = engine.config
        self.stopping = threading.Event()
        self.wakeup = threading.Event()  # set by a signal: stop or reload
        self.reload_requested = threading.Event()
        self.accounts: dict[str, AccountWatch] = {}
        workers = len(config.accounts) + len(config.channels) + 4
        self.scheduler = BackgroundScheduler(
            executors={"default": ThreadPoolExecutor(max_workers=max(workers, 10))},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
            timezone=UTC,
        )

    @property
    def watches(self) -> list[FolderWatch]:
        return [watch for running in self.accounts.values() for watch in running.watches]

    # --- jobs -------------------------------------------------------------------------------------

    def check(self, account: AccountConfig) -> None:
        """The periodic check of one account (polling, and the safety net under IDLE)."""
        running = self.accounts.get(account.name)
        if running is None or running.stop.is_set():
            return
        health = running.health
        if not health.may_try():
            return
        summary = check_account(self.engine, account, running.stop.is_set, running.locks)
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

    def digest(self, channel: str) -> None:
        """Add today's digest for ``channel`` (never twice a day) and wake its delivery job."""
        with Store(self.engine.config.database) as store:
            added = schedule_digest(self.engine, store, channel)
        if added:
            try:
                self.scheduler.modify_job(f"deliver:{channel}", next_run_time=datetime.now(UTC))
            except LookupError:  # stopping, or the channel was just removed
                pass

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
        """Block until a stop signal; return after stopping cleanly (within ~10 s). SIGHUP reloads."""
        config = self.engine.config
        handled = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
        previous = {sig: signal.signal(sig, self._on_signal) for sig in handled}
        try:
            Store(config.database).close()  # create or migrate the database before any thread opens it
            now = datetime.now(UTC)
            self.scheduler.add_job(self.remind, "interval", id="remind", seconds=REMINDER_INTERVAL_SECONDS,
                                   next_run_time=now)
            interval = systemd.watchdog_interval() or STATUS_INTERVAL_SECONDS
            self.scheduler.add_job(self.report, "interval", id="report", seconds=interval, next_run_time=now)
            self.scheduler.start()
            self._apply(config)
            systemd.notify("READY=1", f"STATUS=watching {len(config.accounts)} accounts")
            log.info("watching %d accounts every %ds; %d channels", len(config.accounts), config.poll_seconds,
                     len(config.channels))
            while not self.stopping.is_set():
                self.wakeup.wait()
                self.wakeup.clear()
                if self.reload_requested.is_set() and not self.stopping.is_set():
                    self.reload_requested.clear()
                    self.reload()
            log.info("stopping")
            systemd.notify("STOPPING=1")
            for running in self.accounts.values():
                running.stop.set()
            self.scheduler.shutdown(wait=False)
            self._wait_for_jobs(STOP_GRACE_SECONDS)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def reload(self) -> None:
        """Re-read the configuration file; apply it without touching what did not change. A bad file is
        refused with its problems logged, and the running configuration stays."""
        systemd.notify("RELOADING=1")
        try:
            engine = Engine(load_config(self.engine.config.path))
        except WatcherError as error:
            log.error("reload refused, keeping the running configuration: %s", error)
            systemd.notify("READY=1")
            return
        old = self.engine.config
        self.engine = engine
        for running in self.accounts.values():
            for watch in running.watches:
                watch.engine = engine  # new rules, channels and guidance for unchanged accounts too
        self._apply(engine.config, old)
        systemd.notify("READY=1", f"STATUS=reloaded; watching {len(engine.config.accounts)} accounts")

    def _apply(self, config: Config, old: Config | None = None) -> None:
        """Start what ``config`` adds or changes compared with ``old``; stop what it removes or changes."""
        now = datetime.now(UTC)
        old_channels = {channel.name for channel in old.channels} if old else set()
        for name in old_channels - {channel.name for channel in config.channels}:
            self.scheduler.remove_job(f"deliver:{name}")
        for channel in config.channels:
            if channel.name not in old_channels:
                self.scheduler.add_job(self.deliver, "interval", args=[channel.name], id=f"deliver:{channel.name}",
                                       seconds=DELIVERY_INTERVAL_SECONDS, next_run_time=now)
        self._schedule_digests(config, old)
        wanted = {account.name: account for account in config.accounts}
        kept = started = stopped = 0
        for name, running in list(self.accounts.items()):
            if wanted.get(name) == running.account and (old is None or old.poll_seconds == config.poll_seconds):
                kept += 1
                continue
            running.stop.set()  # its IDLE threads end within a second
            self.scheduler.remove_job(f"check:{name}")
            del self.accounts[name]
            stopped += 1
        for account in config.accounts:
            if account.name in self.accounts:
                continue
            running = AccountWatch(account, AccountHealth(account.name, config.database, self.alert),
                                   {folder: threading.Lock() for folder in account.folders})
            for folder in account.folders:
                running.watches.append(FolderWatch(self.engine, account, folder, running.locks[folder],
                                                   running.health, running.stop, self.deliver_now))
            self.accounts[account.name] = running
            # The first check comes at once: servers without IDLE are polled from the start.
            self.scheduler.add_job(self.check, "interval", args=[account], id=f"check:{account.name}",
                                   seconds=config.poll_seconds, next_run_time=now + timedelta(seconds=0.2))
            for watch in running.watches:
                watch.start()
            started += 1
        if old is not None:
            log.info("reloaded %s: %d accounts kept, %d started, %d stopped; %d channels", config.path, kept,
                     started, stopped, len(config.channels))

    def _schedule_digests(self, config: Config, old: Config | None) -> None:
        """One cron job per channel with a digest, in the channel's time zone; a reload replaces them all."""
        for channel in old.channels if old else ():
            if channel.digest is not None:
                self.scheduler.remove_job(f"digest:{channel.name}")
        for channel in config.channels:
            if channel.digest is not None:
                trigger = CronTrigger.from_crontab(channel.digest, timezone=channel.timezone)
                self.scheduler.add_job(self.digest, trigger, args=[channel.name], id=f"digest:{channel.name}")

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        log.info("received %s", signal.Signals(signum).name)
        if signum == signal.SIGHUP:
            self.reload_requested.set()
        else:
            self.stopping.set()
        self.wakeup.set()

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
