"""Past mail: backfill (IMAP folders since a date, resumable) and import (mbox files, Maildir folders)."""

from __future__ import annotations

import contextlib
import sys
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import click
from tabulate import tabulate

from watcher.cli.base import cli, engine_of
from watcher.cli.events import parse_since

if TYPE_CHECKING:
    from click._termui_impl import ProgressBar

    from watcher.backfill import ScanResult


class BarProgress:
    """A click progress bar on stderr per folder or file: position, messages per second and ETA."""

    def __init__(self) -> None:
        self._stack = contextlib.ExitStack()
        self._bar: ProgressBar[str | None] | None = None
        self._started = 0.0
        self._done = 0

    def start(self, label: str, total: int) -> None:
        self._bar = self._stack.enter_context(click.progressbar(
            length=total, label=label, file=sys.stderr, show_pos=True, show_eta=True,
            item_show_func=lambda speed: speed))
        self._started, self._done = time.monotonic(), 0

    def advance(self, count: int) -> None:
        if self._bar is None:
            return
        self._done += count
        elapsed = time.monotonic() - self._started
        self._bar.update(count, f"{self._done / elapsed:.0f} msg/s" if elapsed > 0 else "")

    def finish(self) -> None:
        self._stack.close()


def _summary_table(results: list[ScanResult]) -> str:
    rows = [[result.account, result.folder, result.previously_scanned + result.scanned, result.recorded,
             len(result.events), "done" if result.finished else "interrupted"] for result in results]
    return str(tabulate(rows, headers=["account", "folder", "scanned", "recorded", "events", "status"]))


@cli.command()
@click.option("--account", "account_name", metavar="NAME", help="Only this account (config name). Default: all.")
@click.option("--since", metavar="DATE",
              help="Mail received since YYYY-MM-DD (or 90d: that many days ago). Default: each account's "
                   "lookback_days.")
@click.option("--notify/--no-notify", default=True, show_default=True,
              help="Send notifications for the events found, like live ones; --no-notify only records them.")
@click.pass_context
def backfill(ctx: click.Context, account_name: str | None, since: str | None, notify: bool) -> None:
    """Scan past mail in every folder of the accounts for notices, without moving the live cursor.

    A message already recorded (same Message-ID) is not recorded again, so a backfill over mail the
    watcher already saw adds nothing. Interrupted (Ctrl-C), it continues where it stopped when run
    again with the same --since. Exit 1 if any account could not be read.

    \b
    Example:
        watcher backfill --account us-store --since 2024-01-01 --no-notify
    """
    from watcher.backfill import backfill_account
    from watcher.errors import FetchError, NotFound
    from watcher.delivery import deliver_due
    from watcher.store import Store

    engine = engine_of(ctx)
    accounts = [account for account in engine.config.accounts if account_name in (None, account.name)]
    if account_name and not accounts:
        raise NotFound(f"no account named {account_name!r} in {engine.config.path}")
    chosen = parse_since(since)
    results: list[ScanResult] = []
    failed = False
    for account in accounts:
        day: date = chosen.date() if chosen else datetime.now(UTC).date() - timedelta(days=account.lookback_days)
        try:
            results += backfill_account(engine, account, day, notify=notify, progress=BarProgress())
        except FetchError as error:
            failed = True
            click.echo(f"Error: {error}", err=True)
    click.echo(_summary_table(results))
    if notify:
        with Store(engine.config.database) as store:
            delivered = deliver_due(engine, store)
        click.echo(f"deliveries: {delivered.sent} sent, {delivered.retrying} to retry, {delivered.failed} failed")
    ctx.exit(1 if failed else 0)


@cli.command("import")
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@click.option("--account", "account_name", default="import", show_default=True, metavar="NAME",
              help="The account name the events are recorded under.")
@click.option("--notify/--no-notify", default=False, show_default=True,
              help="Send notifications for the events found; by default they are only recorded.")
@click.pass_context
def import_(ctx: click.Context, path: Path, account_name: str, notify: bool) -> None:
    """Record the notices in an mbox file (e.g. from Google Takeout) or a Maildir folder as events.

    Folder = the file or folder name. Messages are keyed as the live watcher keys them (Message-ID,
    else a hash of the message), so importing twice, or mail the watcher already saw, adds nothing.
    A message that cannot be read or parsed is recorded as malformed and the import goes on.

    \b
    Example:
        watcher import takeout/Mail/all-mail.mbox --account us-store
    """
    from watcher.backfill import import_messages
    from watcher.delivery import deliver_due
    from watcher.store import Store

    engine = engine_of(ctx)
    configured = next((account for account in engine.config.accounts if account.name == account_name), None)
    result = import_messages(engine, path, account_name, store_name=configured.store if configured else None,
                             notify=notify, progress=BarProgress())
    click.echo(_summary_table([result]))
    if notify:
        with Store(engine.config.database) as store:
            delivered = deliver_due(engine, store)
        click.echo(f"deliveries: {delivered.sent} sent, {delivered.retrying} to retry, {delivered.failed} failed")
