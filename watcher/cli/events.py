"""The event log: list, show."""

from __future__ import annotations

import json
import re
from datetime import UTC, date, datetime, timedelta

import click
from tabulate import tabulate

from watcher.cli.base import WatcherGroup, cli, config_of, engine_of
from watcher.cli.output import event_json, events_table
from watcher.model import KINDS


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


@events.command("list")
@click.option("--since", help="Only events detected since: 7d, 12h, 30m or YYYY-MM-DD.")
@click.option("--platform", help="Only this platform, e.g. amazon.")
@click.option("--kind", type=click.Choice(KINDS), metavar="KIND",
              help="Only this kind: account_deactivated, deactivation_pending, security_lock, funds_held, …")
@click.option("--account", help="Only this account (config name).")
@click.option("--limit", type=click.IntRange(1), default=50, show_default=True, help="At most this many events.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@click.pass_context
def events_list(ctx: click.Context, since: str | None, platform: str | None, kind: str | None,
                account: str | None, limit: int, as_json: bool) -> None:
    """List events, newest first.

    \b
    Example:
        watcher events list --since 7d --platform amazon
    """
    from watcher.store import Store

    config = config_of(ctx)
    with Store(config.database) as store:
        found = store.events(since=parse_since(since), platform=platform, kind=kind, account=account, limit=limit)
    if as_json:
        for event in found:
            click.echo(json.dumps(event_json(event), ensure_ascii=False))
        return
    click.echo(events_table(found))


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
