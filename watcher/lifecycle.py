"""An event's life after the notice: status changes with history, follow-up notices, reminders.

Status: open → acknowledged → appealed → resolved, or dismissed (e.g. phishing) from any open state.
A later reinstatement or appeal reply for the same store and platform links to the open event, and a
reinstatement resolves it. Reminders are delivery rows like any notification (retried, recorded, and never
doubled: a row's purpose — "reminder:24h", "reannounce:2026-11-28" — is unique per event and channel).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from typing import Any

import sqlite_utils

from watcher.config import ChannelConfig
from watcher.errors import NotFound, WatcherError

STATUSES = ("open", "acknowledged", "appealed", "resolved", "dismissed")
CLOSED = ("resolved", "dismissed")
_STAGE = {"open": 0, "acknowledged": 1, "appealed": 2, "resolved": 3, "dismissed": 3}
# A follow-up notice of this kind links to the store's open event of the same platform, and sets its status.
FOLLOW_UPS: dict[str, str | None] = {"reinstated": "resolved", "appeal_update": None}


@dataclass(frozen=True, slots=True)
class Change:
    event_id: int
    from_status: str
    to_status: str


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds")


def actor() -> str:
    """Who is changing a status from the command line (the login name)."""
    return os.environ.get("SUDO_USER") or os.environ.get("USER") or "cli"


def change_status(db: sqlite_utils.Database, event_id: int, to_status: str, who: str, note: str | None = None,
                  moment: datetime | None = None) -> Change:
    """Move an event to ``to_status`` and record it in its history. Raise NotFound for an unknown event and
    WatcherError for a move that goes backwards or leaves a closed event."""
    if to_status not in STATUSES:
        raise WatcherError(f"unknown status {to_status!r}; one of {', '.join(STATUSES)}")
    row = db.execute("SELECT status FROM events WHERE id = ?", [event_id]).fetchone()
    if row is None:
        raise NotFound(f"no event with id {event_id}")
    current = row[0]
    if current in CLOSED or (_STAGE[to_status] <= _STAGE[current] and to_status != "dismissed") or current == to_status:
        raise WatcherError(f"event {event_id} is {current}; it cannot become {to_status}")
    stamp = _iso(moment or datetime.now(UTC))
    with db.atomic():
        db.execute("UPDATE events SET status = ?, status_changed_at = ? WHERE id = ?", [to_status, stamp, event_id])
        db.table("event_history").insert({"event_id": event_id, "at": stamp, "from_status": current,
                                          "to_status": to_status, "actor": who, "note": note})
    return Change(event_id, current, to_status)


def history(db: sqlite_utils.Database, event_id: int) -> list[dict[str, Any]]:
    return list(db.query("SELECT at, from_status, to_status, actor, note FROM event_history "
                         "WHERE event_id = ? ORDER BY id", [event_id]))


def link_follow_up(db: sqlite_utils.Database, event_id: int, store: str, platform: str | None, kind: str | None,
                   moment: str) -> int | None:
    """Inside the recording transaction: link a follow-up notice (reinstatement, appeal reply) to the store's
    latest open event of the same platform, and resolve that event on reinstatement. Return the linked id."""
    if kind not in FOLLOW_UPS:
        return None
    follow_up_kinds = list(FOLLOW_UPS)
    row = db.execute(
        "SELECT id, status FROM events WHERE store = ? AND platform = ? AND id != ? AND status NOT IN (?, ?) "
        f"AND kind NOT IN ({','.join('?' * len(follow_up_kinds))}) AND authenticity != 'suspected_phishing' "
        "ORDER BY id DESC LIMIT 1",
        [store, platform, event_id, *CLOSED, *follow_up_kinds]).fetchone()
    if row is None:
        return None
    linked, current = row
    db.execute("UPDATE events SET linked_event_id = ? WHERE id = ?", [linked, event_id])
    new_status = FOLLOW_UPS[kind]
    if new_status is not None:
        db.execute("UPDATE events SET status = ?, status_changed_at = ? WHERE id = ?", [new_status, moment, linked])
        db.table("event_history").insert({"event_id": linked, "at": moment, "from_status": current,
                                          "to_status": new_status, "actor": "watcher",
                                          "note": f"{kind.replace('_', ' ')} notice: event #{event_id}"})
    return int(linked)


def schedule_reminders(db: sqlite_utils.Database, channels: Sequence[ChannelConfig], deadline_hours: Sequence[int],
                       reannounce_hours: float, now: datetime | None = None) -> int:
    """Add the reminder deliveries that are due now; return how many were added.

    Before a deadline (the end of its day, UTC): one reminder per ``deadline_hours`` entry while the event is
    still open (not acknowledged), unless the event arrived after that reminder's time. Open critical events
    are re-announced once a day after ``reannounce_hours`` (0 = never).
    """
    moment = now or datetime.now(UTC)
    stamp = _iso(moment)
    wanted: list[tuple[int, str, str]] = []  # (event id, channel, purpose)
    rows = db.query("SELECT id, account, store, platform, kind, severity, deadline, detected_at FROM events "
                    "WHERE status = 'open' AND (deadline IS NOT NULL OR severity = 'critical')")
    for row in rows:
        purposes = []
        detected = datetime.fromisoformat(row["detected_at"])
        if row["deadline"]:
            end = datetime.combine(datetime.fromisoformat(row["deadline"]).date(), time.max, UTC)
            for hours in deadline_hours:
                due = end - timedelta(hours=hours)
                if due <= moment < end and detected < due:
                    purposes.append(f"reminder:{hours}h")
        if reannounce_hours and row["severity"] == "critical" and moment - detected >= timedelta(hours=reannounce_hours):
            purposes.append(f"reannounce:{moment.date().isoformat()}")
        targets = [c.name for c in channels if c.wants(row["platform"], row["kind"], row["severity"], row["account"],
                                                                  row["store"])]
        wanted += [(row["id"], channel, purpose) for purpose in purposes for channel in targets]
    added = 0
    with db.atomic():
        for event_id, channel, purpose in wanted:
            cursor = db.execute(
                "INSERT OR IGNORE INTO deliveries (event_id, channel, status, attempts, created_at, next_attempt_at, "
                "purpose) VALUES (?, ?, 'pending', 0, ?, ?, ?)", [event_id, channel, stamp, stamp, purpose])
            added += cursor.rowcount
    return added
