"""Daily digests: per channel, at the time its ``digest`` cron expression names, a summary of open events
and their deadlines.

A digest is a row in the ``digests`` table, one per channel and local day (its period): making it twice
adds nothing. It is sent from the row like a delivery — retried with the same backoff, its outcome stored.
Its text is written by summaries.render_digest.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import sqlite_utils

from watcher.config import ChannelConfig
from watcher.model import DeliveryOutcome, Event
from watcher.store import RETRY_BASE_SECONDS, RETRY_MAX_SECONDS, Store, iso

OPEN_STATUSES = ("open", "acknowledged", "appealed")


@dataclass(frozen=True, slots=True)
class PendingDigest:
    id: int
    channel: str
    period: str  # the channel's local date, YYYY-MM-DD
    attempts: int
    created_at: datetime


def schedule(db: sqlite_utils.Database, channel: ChannelConfig, moment: datetime) -> bool:
    """Add ``channel``'s digest for the local day of ``moment``, due at once. Return False when that day's
    digest already exists (it is never doubled)."""
    period = moment.astimezone(channel.timezone).date().isoformat()
    stamp = iso(moment)
    with db.atomic():
        cursor = db.execute(
            "INSERT OR IGNORE INTO digests (channel, period, status, attempts, created_at, next_attempt_at) "
            "VALUES (?, ?, 'pending', 0, ?, ?)", [channel.name, period, stamp, stamp])
    return bool(cursor.rowcount)


def due(db: sqlite_utils.Database, moment: datetime, channel: str | None = None) -> list[PendingDigest]:
    """Return the pending digests whose next attempt is due at ``moment`` (only ``channel``'s, if given)."""
    only = "AND channel = ?" if channel else ""
    rows = db.execute(
        "SELECT id, channel, period, attempts, created_at FROM digests "
        f"WHERE status = 'pending' AND next_attempt_at <= ? {only} ORDER BY id",
        [iso(moment), *([channel] if channel else [])]).fetchall()
    return [PendingDigest(row[0], row[1], row[2], row[3], datetime.fromisoformat(row[4])) for row in rows]


def postpone(db: sqlite_utils.Database, digests: Sequence[PendingDigest], until: datetime) -> None:
    """Move the next attempt of ``digests`` to ``until`` (quiet hours), recording no attempt."""
    with db.atomic():
        db.conn.executemany("UPDATE digests SET next_attempt_at = ? WHERE id = ?",
                       [(iso(until), pending.id) for pending in digests])


def record_attempt(db: sqlite_utils.Database, pending: PendingDigest, outcome: DeliveryOutcome,
                   retry_hours: float, moment: datetime | None = None) -> str:
    """Record one attempt: sent, retried later with the deliveries' backoff, or failed (permanent, or retried
    for ``retry_hours``). Return the digest's new status."""
    moment = (moment or datetime.now(UTC)).replace(microsecond=0)
    attempts = pending.attempts + 1
    next_at: datetime | None = None
    if outcome.outcome == "success":
        status = "sent"
    elif outcome.permanent or moment - pending.created_at >= timedelta(hours=retry_hours):
        status = "failed"
    else:
        status = "pending"
        next_at = moment + timedelta(seconds=min(RETRY_MAX_SECONDS, RETRY_BASE_SECONDS * 2 ** (attempts - 1)))
    with db.atomic():
        db.execute("UPDATE digests SET status = ?, attempts = ?, last_attempt_at = ?, next_attempt_at = ?, "
                   "last_error = ? WHERE id = ?",
                   [status, attempts, iso(moment), iso(next_at),
                    None if outcome.outcome == "success" else outcome.detail[:2000], pending.id])
    return status


def open_events(store: Store, channel: ChannelConfig) -> list[Event]:
    """Return the open (not resolved or dismissed) events that pass ``channel``'s filters, oldest first."""
    marks = ",".join("?" * len(OPEN_STATUSES))
    ids = [row[0] for row in store.db.execute(
        f"SELECT id FROM events WHERE status IN ({marks}) ORDER BY detected_at, id", OPEN_STATUSES)]
    events = [store.event(event_id) for event_id in ids]
    return [event for event in events
            if channel.wants(event.classification.platform, event.classification.kind,
                             event.classification.severity, event.account, event.store)]
