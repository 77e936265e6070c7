"""An event's status: events ack | appeal | resolve | dismiss, and events history."""

from __future__ import annotations

import click
from tabulate import tabulate

from watcher import lifecycle
from watcher.cli.base import config_of
from watcher.cli.events import events
from watcher.store import Store

TRANSITIONS = {
    "ack": ("acknowledged", "Acknowledge an event: you have seen it (stops its deadline reminders and daily re-announcements)."),
    "appeal": ("appealed", "Record that an appeal or plan of action was sent for an event."),
    "resolve": ("resolved", "Close an event: the account, listing or funds are back, or nothing more is needed."),
    "dismiss": ("dismissed", "Close an event that needs no action, such as a phishing mail or a false alarm."),
}


def _make(command: str, status: str, summary: str) -> None:
    @events.command(command, help=f"""{summary}

    \\b
    Example:
        watcher events {command} 12 --note "…"
    """)
    @click.argument("event_id", type=int)
    @click.option("--note", help="Why, what was sent, a case id … (kept in the event's history).")
    @click.pass_context
    def change(ctx: click.Context, event_id: int, note: str | None) -> None:
        config = config_of(ctx)
        with Store(config.database) as store:
            done = lifecycle.change_status(store.db, event_id, status, lifecycle.actor(), note)
        click.echo(f"event {done.event_id}: {done.from_status} → {done.to_status}")


for _command, (_status, _summary) in TRANSITIONS.items():
    _make(_command, _status, _summary)


@events.command("history")
@click.argument("event_id", type=int)
@click.pass_context
def events_history(ctx: click.Context, event_id: int) -> None:
    """Show every status change of an event: when, from, to, who and the note.

    \b
    Example:
        watcher events history 12
    """
    config = config_of(ctx)
    with Store(config.database) as store:
        event = store.event(event_id)
        changes = lifecycle.history(store.db, event_id)
    click.echo(f"event {event_id}: {event.status}" + (f" (follows event {event.linked_event_id})"
                                                       if event.linked_event_id else ""))
    if changes:
        click.echo(tabulate([[c["at"], c["from_status"], c["to_status"], c["actor"], c["note"] or ""] for c in changes],
                            headers=["at", "from", "to", "by", "note"]))
