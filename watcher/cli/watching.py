"""Commands that watch mailboxes: check, run, status, demo."""

from __future__ import annotations

import json
import logging

import click
from tabulate import tabulate

from watcher import lifecycle
from watcher.cli.base import cli, config_of, engine_of
from watcher.cli.events import chosen_format
from watcher.cli.output import FORMATS, emit


@cli.command()
@click.pass_context
def check(ctx: click.Context) -> None:
    """Check every account once, send due notifications, and exit.

    Exit status 0 when every account was checked, 1 when any failed (the others are still processed).

    \b
    Example:
        watcher check
    """
    from watcher.delivery import deliver_due
    from watcher.pipeline import check_account
    from watcher.store import Store

    engine = engine_of(ctx)
    rows, failed = [], False
    for account in engine.config.accounts:
        summary = check_account(engine, account)
        failed |= not summary.ok
        errors = [summary.error] if summary.error else [f"{f.folder}: {f.error}" for f in summary.folders if f.error]
        rows.append([account.name, "ok" if summary.ok else "FAILED", sum(f.new for f in summary.folders),
                     sum(f.fetched for f in summary.folders), len(summary.events), f"{summary.seconds:.2f}s",
                     "; ".join(errors)])
    with Store(engine.config.database) as store:
        lifecycle.schedule_reminders(store.db, engine.config.channels, engine.config.reminder_hours,
                                     engine.config.reannounce_hours)
        delivered = deliver_due(engine, store)
    click.echo(tabulate(rows, headers=["account", "status", "new", "fetched", "events", "time", "error"]))
    click.echo(f"deliveries: {delivered.sent} sent, {delivered.retrying} to retry, {delivered.failed} failed")
    ctx.exit(1 if failed else 0)


@cli.command()
@click.pass_context
def run(ctx: click.Context) -> None:
    """Run as a daemon: IDLE push on every folder, a full check every poll_seconds, until SIGTERM/SIGINT.

    \b
    Example:
        watcher --config /etc/watcher/watcher.toml run
    """
    from watcher.daemon import Daemon

    engine = engine_of(ctx)
    if logging.getLogger().level > logging.INFO:
        logging.getLogger().setLevel(logging.INFO)
    Daemon(engine).run()


STATUS_COLUMNS = ("section", "account", "folder", "state", "since", "last_check_at", "last_error", "last_error_at",
                  "channel", "pending", "sent", "failed")


@cli.command()
@click.option("--format", "fmt", type=click.Choice(FORMATS), default=None,
              help="Output format: table, json (one object: folders and channels), jsonl or csv (one row per "
                   "folder and channel, told apart by `section`). Default: table.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object: folders and channels (= --format json).")
@click.pass_context
def status(ctx: click.Context, fmt: str | None, as_json: bool) -> None:
    """Show each account and folder's connection state, last check and last error, and each channel's
    pending and failed deliveries (as the running watcher last recorded them).

    \b
    Example:
        watcher status
    """
    from watcher.store import Store

    config = config_of(ctx)
    with Store(config.database) as store:
        recorded = {(row["account"], row["folder"]): row for row in store.folder_states()}
        deliveries = {row["channel"]: row for row in store.delivery_counts()}
    folders = []
    for account in config.accounts:
        for folder in account.folders:
            row = recorded.get((account.name, folder), {})
            folders.append({"account": account.name, "folder": folder, "state": row.get("state", "never checked"),
                            "since": row.get("since"), "last_check_at": row.get("last_check_at"),
                            "last_error": row.get("last_error"), "last_error_at": row.get("last_error_at")})
    channels = [{"channel": channel.name, "pending": (deliveries.get(channel.name) or {}).get("pending") or 0,
                 "sent": (deliveries.get(channel.name) or {}).get("sent") or 0,
                 "failed": (deliveries.get(channel.name) or {}).get("failed") or 0} for channel in config.channels]
    fmt = chosen_format(fmt, as_json, "json")
    if fmt == "json":
        click.echo(json.dumps({"folders": folders, "channels": channels}, indent=2))
        return
    if fmt != "table":
        emit([*({"section": "folder", **f} for f in folders), *({"section": "channel", **c} for c in channels)],
             fmt, STATUS_COLUMNS)
        return
    click.echo(tabulate([[f["account"], f["folder"], f["state"], f["since"] or "", f["last_check_at"] or "",
                          f["last_error"] or ""] for f in folders],
                        headers=["account", "folder", "state", "since", "last successful check", "last error"]))
    if channels:
        click.echo("")
        click.echo(tabulate([[c["channel"], c["pending"], c["sent"], c["failed"]] for c in channels],
                            headers=["channel", "pending", "sent", "failed"]))


@cli.command()
@click.option("--keep", is_flag=True, help="Leave the demo folder (config, database) in place and print its path.")
def demo(keep: bool) -> None:
    """Show watcher end to end: a throwaway local Dovecot with sample mail, one check, the notifications.

    Needs the Debian package dovecot-imapd (the demo starts its own private instance on 127.0.0.1).

    \b
    Example:
        watcher demo
    """
    from watcher.demo import run_demo

    run_demo(keep=keep, echo=click.echo)
