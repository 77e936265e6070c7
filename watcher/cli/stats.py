"""`watcher stats`: how many events per store, platform, kind and month, and which deadlines are still open."""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import date
from typing import TYPE_CHECKING, Any

import click

from watcher.cli.base import cli, config_of
from watcher.cli.events import event_filter, filter_options, format_option
from watcher.cli.output import emit

if TYPE_CHECKING:
    from watcher.query import Count, OpenDeadline, Stats

SECTIONS = ("store", "platform", "kind", "month")
DEADLINE_COLUMNS = ("event_id", "deadline", "days_left", "store", "account", "platform", "kind", "severity",
                    "status", "subject")
# jsonl and csv: one flat row per count and per open deadline, told apart by `section`.
FLAT_COLUMNS = ("section", "key", "events", *DEADLINE_COLUMNS)


def _counts(found: Stats) -> dict[str, tuple[Count, ...]]:
    return {"store": found.by_store, "platform": found.by_platform, "kind": found.by_kind, "month": found.by_month}


def _deadline_row(item: OpenDeadline) -> dict[str, Any]:
    return {**asdict(item), "deadline": item.deadline.isoformat()}


def stats_json(found: Stats) -> dict[str, Any]:
    """The statistics as one object: total, by_store … by_month ([{KEY, events}]), open_deadlines."""
    return {"total": found.total,
            **{f"by_{name}": [{name: count.key, "events": count.events} for count in counts]
               for name, counts in _counts(found).items()},
            "open_deadlines": [_deadline_row(item) for item in found.open_deadlines]}


def stats_rows(found: Stats) -> list[dict[str, Any]]:
    """The statistics as flat rows: a `total` row, one row per count, one `open_deadline` row per deadline."""
    rows: list[dict[str, Any]] = [{"section": "total", "key": "", "events": found.total}]
    for name, counts in _counts(found).items():
        rows += [{"section": name, "key": count.key, "events": count.events} for count in counts]
    rows += [{"section": "open_deadline", **_deadline_row(item)} for item in found.open_deadlines]
    return rows


@cli.command("stats")
@filter_options
@format_option()
@click.pass_context
def stats_command(ctx: click.Context, since: str | None, platform: str | None, kind: str | None,
                  account: str | None, store_name: str | None, fmt: str | None) -> None:
    """Count events by store, platform, kind and month, and list the open deadlines, soonest first.

    Open deadlines are those today or later on events not resolved or dismissed; --since does not hide
    them (the other filters do).

    \b
    Example:
        watcher stats --since 30d
        watcher stats --store "Lotus Home" --format json
    """
    from watcher.query import stats
    from watcher.store import Store

    chosen = event_filter(since, platform, kind, account, store_name)
    with Store(config_of(ctx).database) as store:
        found = stats(store, chosen, date.today())
    fmt = fmt or "table"
    if fmt == "json":
        click.echo(json.dumps(stats_json(found), ensure_ascii=False, indent=2))
    elif fmt in ("jsonl", "csv"):
        emit(stats_rows(found), fmt, FLAT_COLUMNS)
    else:
        _print_tables(found)


def _print_tables(found: Stats) -> None:
    click.echo(f"events: {found.total}")
    for name, counts in _counts(found).items():
        if counts:
            click.echo("")
            emit(({name: count.key, "events": count.events} for count in counts), "table")
    click.echo("")
    click.echo("open deadlines:")
    emit((_deadline_row(item) for item in found.open_deadlines), "table",
         table_columns=("deadline", "days_left", "event_id", "store", "platform", "kind", "status", "subject"),
         empty="none")
