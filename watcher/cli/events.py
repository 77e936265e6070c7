"""The event log: list, search, export, show."""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

import click
from tabulate import tabulate

from watcher.cli.base import WatcherGroup, cli, config_of, engine_of
from watcher.cli.output import (
    FORMATS,
    emit,
    event_json,
    events_table,
    stored_event_json,
)
from watcher.model import KINDS

if TYPE_CHECKING:
    from watcher.query import EventFilter

Command = TypeVar("Command", bound=Callable[..., Any])


@cli.group(cls=WatcherGroup)
def events() -> None:
    """Query the event log."""


def parse_since(value: str | None) -> datetime | None:
    """'7d', '12h', '30m' → that long ago; 'YYYY-MM-DD' → that day (UTC)."""
    if not value:
        return None
    match = re.fullmatch(r"(\d+)\s*([dhm])", value.strip())
    if match:
        unit = {"d": "days", "h": "hours", "m": "minutes"}[match.group(2)]
        return datetime.now(UTC) - timedelta(**{unit: int(match.group(1))})
    try:
        return datetime.combine(date.fromisoformat(value), datetime.min.time(), UTC)
    except ValueError:
        raise click.BadParameter("use a duration like 7d, 12h, 30m or a date YYYY-MM-DD", param_hint="--since")


def filter_options(command: Command) -> Command:
    """Add the event filters shared by `events list/search/export` and `stats`: --since, --platform, --kind,
    --account, --store (read back with `event_filter`)."""
    for option in reversed((
        click.option("--since", help="Only events detected since: 7d, 12h, 30m or YYYY-MM-DD."),
        click.option("--platform", help="Only this platform, e.g. amazon."),
        click.option("--kind", type=click.Choice(KINDS), metavar="KIND",
                     help="Only this kind: account_deactivated, deactivation_pending, security_lock, funds_held, …"),
        click.option("--account", help="Only this account (config name)."),
        click.option("--store", "store_name", metavar="NAME",
                     help="Only accounts of this store (the account's `store` key, e.g. \"Lotus Home\")."),
    )):
        command = option(command)
    return command


def event_filter(since: str | None, platform: str | None, kind: str | None, account: str | None,
                 store_name: str | None) -> EventFilter:
    from watcher.query import EventFilter

    return EventFilter(since=parse_since(since), platform=platform, kind=kind, account=account, store=store_name)


def format_option(choices: tuple[str, ...] = FORMATS, default: str = "table") -> Callable[[Command], Command]:
    return click.option("--format", "fmt", type=click.Choice(choices), default=None,
                        help=f"Output format: {', '.join(choices)}. Default: {default}.")


def chosen_format(fmt: str | None, as_json: bool, json_means: str, default: str = "table") -> str:
    """The output format from --format and the older --json flag (which means ``json_means``)."""
    if as_json and fmt not in (None, json_means):
        raise click.UsageError(f"--json means --format {json_means}; give one or the other")
    return json_means if as_json else (fmt or default)


@events.command("list")
@filter_options
@click.option("--limit", type=click.IntRange(1), default=50, show_default=True, help="At most this many events.")
@format_option()
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line (same as --format jsonl).")
@click.pass_context
def events_list(ctx: click.Context, since: str | None, platform: str | None, kind: str | None,
                account: str | None, store_name: str | None, limit: int, fmt: str | None, as_json: bool) -> None:
    """List events, newest first.

    \b
    Example:
        watcher events list --since 7d --platform amazon
        watcher events list --store "Lotus Home" --format csv > events.csv
    """
    from watcher.query import list_events
    from watcher.store import Store

    fmt = chosen_format(fmt, as_json, "jsonl")
    chosen = event_filter(since, platform, kind, account, store_name)
    with Store(config_of(ctx).database) as store:
        found = list_events(store, chosen, limit)
    if fmt == "table":
        click.echo(events_table([item.event for item in found]))
        return
    emit((stored_event_json(item) for item in found), fmt)


@events.command("search")
@click.argument("text")
@filter_options
@click.option("--limit", type=click.IntRange(1), default=50, show_default=True, help="At most this many events.")
@click.option("--newest", is_flag=True, help="Newest first instead of best match first.")
@format_option()
@click.pass_context
def events_search(ctx: click.Context, text: str, since: str | None, platform: str | None, kind: str | None,
                  account: str | None, store_name: str | None, limit: int, newest: bool, fmt: str | None) -> None:
    """Search the subject and reason text of every event; best match first.

    TEXT is words that must all occur, "a phrase", a prefix* or A OR B (SQLite full-text syntax);
    Chinese, Japanese and Korean text is matched as written. The match column marks the hit [like this].

    \b
    Example:
        watcher events search "related account" --store "Lotus Home"
        watcher events search 'verif* OR identity' --since 30d --format json
    """
    from watcher.query import search_events
    from watcher.store import Store

    fmt = fmt or "table"
    chosen = event_filter(since, platform, kind, account, store_name)
    with Store(config_of(ctx).database) as store:
        hits = search_events(store, text, chosen, limit, newest_first=newest)
    if fmt == "table":
        emit(({"id": hit.found.event.id, "detected (UTC)": hit.found.event.detected_at.strftime("%Y-%m-%d %H:%M"),
               "store": hit.found.event.store, "platform": hit.found.event.classification.platform,
               "kind": hit.found.event.classification.kind, "status": hit.found.event.status, "match": hit.match}
              for hit in hits), fmt, empty="no events")
        return
    emit(({**stored_event_json(hit.found), "match": hit.match} for hit in hits), fmt)


@events.command("export")
@filter_options
@format_option(("jsonl", "json", "csv"), default="jsonl")
@click.pass_context
def events_export(ctx: click.Context, since: str | None, platform: str | None, kind: str | None,
                  account: str | None, store_name: str | None, fmt: str | None) -> None:
    """Write every event (all its fields, status and linked event) to stdout, oldest first, with no limit.

    \b
    Example:
        watcher events export --since 2026-01-01 --format csv > events.csv
    """
    from watcher.query import iter_events
    from watcher.store import Store

    chosen = event_filter(since, platform, kind, account, store_name)
    with Store(config_of(ctx).database) as store:
        rows: Iterator[dict[str, Any]] = (stored_event_json(item) for item in iter_events(store, chosen))
        try:
            emit(rows, fmt or "jsonl")
            sys.stdout.flush()
        except BrokenPipeError:
            # The reader stopped early (`| head`): that is not an error. Point stdout at /dev/null so the
            # interpreter's final flush does not complain either.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


@events.command("show")
@click.argument("event_id", type=int)
@click.option("--json", "as_json", is_flag=True, help="The event as one JSON object.")
@click.pass_context
def events_show(ctx: click.Context, event_id: int, as_json: bool) -> None:
    """Show one event: what happened, why, deadline, next steps and deliveries.

    \b
    Example:
        watcher events show 12
    """
    from watcher.notify import render
    from watcher.store import Store

    engine = engine_of(ctx)
    with Store(engine.config.database) as store:
        event = store.event(event_id)
        deliveries = store.deliveries_for(event_id)
    playbook, language = engine.guidance_for(event)
    if as_json:
        click.echo(json.dumps({**event_json(event, playbook), "deliveries": deliveries}, ensure_ascii=False, indent=2))
        return
    rendered = render(event, playbook, language)
    click.echo(rendered.title)
    click.echo(rendered.body)
    click.echo("")
    click.echo(tabulate([[d["channel"], d["status"], d["attempts"], d["last_attempt_at"] or "", d["last_error"] or ""]
                         for d in deliveries], headers=["channel", "delivery", "attempts", "last attempt", "error"]))
