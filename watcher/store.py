"""The event log: one SQLite file (WAL) with versioned migrations.

Tables: events, processed (every fully fetched message, by message key), cursors (per account/folder),
deliveries (one row per event × channel: the outbox) and delivery_attempts (every try and its outcome).
digests (one row per channel and local day: a scheduled digest, sent like a delivery).
A message's event, its pending deliveries and the cursor advance commit in one transaction.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlite_utils

from watcher import lifecycle
from watcher.errors import NotFound, StoreError
from watcher.model import Classification, DeliveryOutcome, Event

RETRY_BASE_SECONDS = 30.0
RETRY_MAX_SECONDS = 3600.0


def now_utc() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def iso(moment: datetime | None) -> str | None:
    return moment.astimezone(UTC).isoformat(timespec="seconds") if moment else None


def _migration_1(db: sqlite_utils.Database) -> None:
    db.table("events").create({
        "id": int, "account": str, "store": str, "folder": str, "uid": int, "uidvalidity": int,
        "message_key": str, "message_id": str, "subject": str, "sender": str,
        "received_at": str, "detected_at": str,
        "platform": str, "kind": str, "reason": str, "severity": str, "authenticity": str,
        "language": str, "reason_text": str, "deadline": str, "marketplace": str,
        "ids": str, "facts": str, "status": str,
    }, pk="id", not_null={"account", "message_key", "detected_at", "status"}, defaults={"status": "open"})
    db.table("events").create_index(["message_key"], unique=True)
    db.table("events").create_index(["detected_at"])
    db.table("processed").create({
        "message_key": str, "message_id": str, "account": str, "folder": str, "uid": int,
        "uidvalidity": int, "processed_at": str, "outcome": str, "event_id": int, "defects": str,
    }, pk="message_key")
    db.table("cursors").create({
        "account": str, "folder": str, "uidvalidity": int, "last_uid": int, "checked_at": str,
    }, pk=("account", "folder"))
    db.table("deliveries").create({
        "id": int, "event_id": int, "channel": str, "status": str, "attempts": int,
        "created_at": str, "next_attempt_at": str, "last_attempt_at": str, "last_error": str,
    }, pk="id", foreign_keys=[("event_id", "events", "id")], defaults={"status": "pending", "attempts": 0})
    db.table("deliveries").create_index(["event_id", "channel"], unique=True)
    db.table("deliveries").create_index(["status", "next_attempt_at"])
    db.table("delivery_attempts").create({
        "id": int, "delivery_id": int, "event_id": int, "channel": str, "attempted_at": str,
        "outcome": str, "detail": str, "duration_ms": int,
    }, pk="id", foreign_keys=[("delivery_id", "deliveries", "id")])


def _migration_2(db: sqlite_utils.Database) -> None:
    db.table("folder_state").create({
        "account": str, "folder": str, "state": str, "since": str, "last_check_at": str,
        "last_error": str, "last_error_at": str,
    }, pk=("account", "folder"))
    db.table("alerts").create({"account": str, "kind": str, "sent_at": str}, pk=("account", "kind"))


def _migration_3(db: sqlite_utils.Database) -> None:
    """The seller's side: event lifecycle and history, reminders as deliveries, search, backfill progress."""
    events = db.table("events")
    events.add_column("linked_event_id", int)  # a later notice (appeal reply, reinstatement) points at its event
    events.add_column("status_changed_at", str)
    db.table("event_history").create({
        "id": int, "event_id": int, "at": str, "from_status": str, "to_status": str, "actor": str, "note": str,
    }, pk="id", foreign_keys=[("event_id", "events", "id")])
    db.table("event_history").create_index(["event_id"])
    # A delivery now has a purpose: the event itself, or a reminder, re-announcement or digest about it.
    deliveries = db.table("deliveries")
    deliveries.add_column("purpose", str, not_null_default="event")
    db.execute("DROP INDEX IF EXISTS idx_deliveries_event_id_channel")
    deliveries.create_index(["event_id", "channel", "purpose"], unique=True)
    # Full-text search over what a notice said (SQLite FTS5, kept in step by triggers).
    events.enable_fts(["subject", "reason_text"], create_triggers=True)
    db.table("backfill_progress").create({
        "account": str, "folder": str, "since": str, "last_uid": int, "scanned": int, "updated_at": str,
    }, pk=("account", "folder", "since"))


def _migration_4(db: sqlite_utils.Database) -> None:
    """Digests: one row per channel and local day (period), sent from the row like a delivery."""
    db.table("digests").create({
        "id": int, "channel": str, "period": str, "status": str, "attempts": int, "created_at": str,
        "next_attempt_at": str, "last_attempt_at": str, "last_error": str,
    }, pk="id", not_null={"channel", "period", "status", "created_at"}, defaults={"status": "pending", "attempts": 0})
    db.table("digests").create_index(["channel", "period"], unique=True)
    db.table("digests").create_index(["status", "next_attempt_at"])


MIGRATIONS = (_migration_1, _migration_2, _migration_3, _migration_4)
SCHEMA_VERSION = len(MIGRATIONS)


@dataclass(frozen=True, slots=True)
class Cursor:
    uidvalidity: int
    last_uid: int


@dataclass(frozen=True, slots=True)
class MessageRecord:
    """What became of one fully fetched message, ready to be stored."""

    message_key: str
    message_id: str
    uid: int
    subject: str
    sender: str
    received_at: datetime | None
    classification: Classification | None  # None: malformed, could not be classified
    defects: tuple[str, ...]
    channels: tuple[str, ...]  # the channels that want this event


@dataclass(frozen=True, slots=True)
class PendingDelivery:
    id: int
    event_id: int
    channel: str
    attempts: int
    created_at: datetime
    purpose: str = "event"  # or "reminder:24h", "reannounce:2026-11-28" (lifecycle.py)


class _Database(sqlite_utils.Database):
    """sqlite-utils' Database whose atomic() takes SQLite's write lock first (BEGIN IMMEDIATE).

    sqlite-utils begins a deferred transaction. One that reads before it writes fails at once with "database
    is locked" when another connection committed in between (busy_timeout cannot help: waiting would not
    make its snapshot current) — under `watcher run` that left sent notifications unrecorded, to be sent
    again. IMMEDIATE waits for the lock, up to busy_timeout, before the transaction reads anything.
    """

    @contextlib.contextmanager
    def atomic(self) -> Iterator[sqlite_utils.Database]:
        if self.conn.in_transaction:  # nested: sqlite-utils' savepoint
            with super().atomic():
                yield self
            return
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self
            self.conn.execute("COMMIT")
        except BaseException:
            self.conn.rollback()
            raise


class Store:
    """A connection to the event database. One per thread."""

    def __init__(self, path: Path) -> None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            connection = sqlite3.connect(str(path), timeout=30)
            self.db = _Database(connection)
            self.db.execute("PRAGMA busy_timeout = 30000")
            if self.db.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                self.db.enable_wal()
            self.db.execute("PRAGMA foreign_keys = ON")
            self._migrate()
        except sqlite3.Error as error:
            raise StoreError(f"cannot open the database {path}: {error}") from None
        self.path = path

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _migrate(self) -> None:
        version = self.schema_version()
        if version > SCHEMA_VERSION:
            raise StoreError(f"the database is at schema version {version}, newer than this program "
                             f"({SCHEMA_VERSION}); upgrade watcher")
        if version == SCHEMA_VERSION:
            return
        # IMMEDIATE takes the write lock first, so two processes (or threads) starting on a new database
        # migrate one after the other; the second then finds nothing left to do.
        self.db.execute("BEGIN IMMEDIATE")
        try:
            for number in range(self.schema_version(), SCHEMA_VERSION):
                MIGRATIONS[number](self.db)
                self.db.execute(f"PRAGMA user_version = {number + 1}")
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise

    def schema_version(self) -> int:
        return int(self.db.execute("PRAGMA user_version").fetchone()[0])

    # --- fetch side -------------------------------------------------------------------------------

    def cursor(self, account: str, folder: str) -> Cursor | None:
        row = self.db.execute("SELECT uidvalidity, last_uid FROM cursors WHERE account = ? AND folder = ?",
                              [account, folder]).fetchone()
        return Cursor(row[0], row[1]) if row else None

    def processed_keys(self, keys: Iterable[str]) -> set[str]:
        """Return the subset of ``keys`` already recorded as processed."""
        wanted = list(set(keys))
        found: set[str] = set()
        for start in range(0, len(wanted), 500):
            chunk = wanted[start:start + 500]
            marks = ",".join("?" * len(chunk))
            found.update(row[0] for row in self.db.execute(
                f"SELECT message_key FROM processed WHERE message_key IN ({marks})", chunk))
        return found

    def record(self, account: str, store: str, folder: str, uidvalidity: int, last_uid: int,
               records: Sequence[MessageRecord]) -> list[int]:
        """Store the messages, their events and pending deliveries, and advance the cursor — atomically.

        A message key already processed is skipped (never two events for one message). Return the new event ids.
        """
        moment = iso(now_utc())
        event_ids: list[int] = []
        with self.db.atomic():
            for item in records:
                if self.db.execute("SELECT 1 FROM processed WHERE message_key = ?", [item.message_key]).fetchone():
                    continue
                result = item.classification
                event_id = None
                if result is not None and result.relevant:
                    event_id = self._insert_event(account, store, folder, uidvalidity, item, result, moment)
                    event_ids.append(event_id)
                    lifecycle.link_follow_up(self.db, event_id, store, result.platform, result.kind, moment or "")
                    for channel in item.channels:
                        self.db.table("deliveries").insert({
                            "event_id": event_id, "channel": channel, "status": "pending", "attempts": 0,
                            "created_at": moment, "next_attempt_at": moment,
                        })
                outcome = "malformed" if result is None else ("event" if result.relevant else "irrelevant")
                self.db.table("processed").insert({
                    "message_key": item.message_key, "message_id": item.message_id, "account": account,
                    "folder": folder, "uid": item.uid, "uidvalidity": uidvalidity, "processed_at": moment,
                    "outcome": outcome, "event_id": event_id, "defects": "; ".join(item.defects) or None,
                })
            self.db.table("cursors").upsert({
                "account": account, "folder": folder, "uidvalidity": uidvalidity,
                "last_uid": last_uid, "checked_at": moment,
            }, pk=("account", "folder"))
        return event_ids

    def _insert_event(self, account: str, store: str, folder: str, uidvalidity: int, item: MessageRecord,
                      result: Classification, moment: str | None) -> int:
        table = self.db.table("events")
        table.insert({
            "account": account, "store": store, "folder": folder, "uid": item.uid, "uidvalidity": uidvalidity,
            "message_key": item.message_key, "message_id": item.message_id, "subject": item.subject,
            "sender": item.sender, "received_at": iso(item.received_at), "detected_at": moment,
            "platform": result.platform, "kind": result.kind, "reason": result.reason,
            "severity": result.severity, "authenticity": result.authenticity, "language": result.language,
            "reason_text": result.reason_text,
            "deadline": result.deadline.isoformat() if result.deadline else None,
            "marketplace": result.marketplace, "ids": json.dumps(list(result.ids)),
            "facts": json.dumps(dict(result.facts), ensure_ascii=False), "status": "open",
        })
        assert table.last_pk is not None
        return int(table.last_pk)

    # --- delivery side ----------------------------------------------------------------------------

    def due_deliveries(self, moment: datetime | None = None, limit: int = 100,
                       channel: str | None = None) -> list[PendingDelivery]:
        """Return pending deliveries whose next attempt is due (only ``channel``'s, if given), oldest first."""
        only = "AND channel = ?" if channel else ""
        rows = self.db.execute(
            "SELECT id, event_id, channel, attempts, created_at, purpose FROM deliveries "
            f"WHERE status = 'pending' AND next_attempt_at <= ? {only} ORDER BY id LIMIT ?",
            [iso(moment or now_utc()), *([channel] if channel else []), limit]).fetchall()
        return [PendingDelivery(r[0], r[1], r[2], r[3], datetime.fromisoformat(r[4]), r[5]) for r in rows]

    def record_attempt(self, delivery: PendingDelivery, outcome: DeliveryOutcome, duration_ms: int,
                       retry_hours: float) -> str:
        """Record one attempt and move the delivery on: sent, retried later with backoff, or failed.

        Return the delivery's new status.
        """
        moment = now_utc()
        attempts = delivery.attempts + 1
        if outcome.outcome == "success":
            status, next_at = "sent", None
        elif outcome.permanent or moment - delivery.created_at >= timedelta(hours=retry_hours):
            status, next_at = "failed", None
        else:
            delay = min(RETRY_MAX_SECONDS, RETRY_BASE_SECONDS * 2 ** (attempts - 1))
            status, next_at = "pending", moment + timedelta(seconds=delay)
        with self.db.atomic():
            self.db.table("delivery_attempts").insert({
                "delivery_id": delivery.id, "event_id": delivery.event_id, "channel": delivery.channel,
                "attempted_at": iso(moment), "outcome": outcome.outcome, "detail": outcome.detail[:2000],
                "duration_ms": duration_ms,
            })
            self.db.execute(
                "UPDATE deliveries SET status = ?, attempts = ?, last_attempt_at = ?, next_attempt_at = ?, "
                "last_error = ? WHERE id = ?",
                [status, attempts, iso(moment), iso(next_at),
                 None if outcome.outcome == "success" else outcome.detail[:2000], delivery.id])
        return status

    def deliveries_for(self, event_id: int) -> list[dict[str, Any]]:
        return list(self.db.query(
            "SELECT channel, status, attempts, last_attempt_at, last_error FROM deliveries "
            "WHERE event_id = ? ORDER BY channel", [event_id]))

    def attempts_for(self, event_id: int) -> list[dict[str, Any]]:
        return list(self.db.query(
            "SELECT channel, attempted_at, outcome, detail, duration_ms FROM delivery_attempts "
            "WHERE event_id = ? ORDER BY id", [event_id]))

    # --- connection health ------------------------------------------------------------------------

    def set_folder_state(self, account: str, folder: str, state: str | None, *, checked: bool = False,
                         error: str | None = None) -> None:
        """Record the connection ``state`` of (account, folder) (None: keep it, "polling" if none yet);
        ``checked`` stamps a successful check, ``error`` records the last error."""
        moment = iso(now_utc())
        with self.db.atomic():
            row = self.db.execute("SELECT state, since FROM folder_state WHERE account = ? AND folder = ?",
                                  [account, folder]).fetchone()
            state = state or (row[0] if row else "polling")
            since = row[1] if row and row[0] == state else moment
            values: dict[str, Any] = {"account": account, "folder": folder, "state": state, "since": since}
            if checked:
                values["last_check_at"] = moment
            if error is not None:
                values["last_error"], values["last_error_at"] = error[:500], moment
            self.db.table("folder_state").upsert(values, pk=("account", "folder"))

    def folder_states(self) -> list[dict[str, Any]]:
        return list(self.db.query("SELECT * FROM folder_state ORDER BY account, folder"))

    def alert_sent(self, account: str, kind: str) -> bool:
        return self.db.execute("SELECT 1 FROM alerts WHERE account = ? AND kind = ?", [account, kind]).fetchone() is not None

    def mark_alert(self, account: str, kind: str, sent: bool) -> None:
        """Remember (or forget) that the ``kind`` alert for ``account`` went out, so it is sent once."""
        with self.db.atomic():
            if sent:
                self.db.table("alerts").upsert({"account": account, "kind": kind, "sent_at": iso(now_utc())},
                                                pk=("account", "kind"))
            else:
                self.db.execute("DELETE FROM alerts WHERE account = ? AND kind = ?", [account, kind])

    def delivery_counts(self) -> list[dict[str, Any]]:
        """Return, per channel, how many deliveries are pending, sent and failed."""
        return list(self.db.query(
            "SELECT channel, SUM(status = 'pending') AS pending, SUM(status = 'sent') AS sent, "
            "SUM(status = 'failed') AS failed FROM deliveries GROUP BY channel ORDER BY channel"))

    # --- queries ----------------------------------------------------------------------------------

    def event(self, event_id: int) -> Event:
        rows = list(self.db.query("SELECT * FROM events WHERE id = ?", [event_id]))
        if not rows:
            raise NotFound(f"no event with id {event_id}")
        return _event_from_row(rows[0])

    def events(self, *, since: datetime | None = None, platform: str | None = None, kind: str | None = None,
               account: str | None = None, limit: int = 50) -> list[Event]:
        """Return events, newest first, filtered by the given values."""
        clauses: list[str] = []
        values: list[str | int] = []
        for column, value in (("platform", platform), ("kind", kind), ("account", account)):
            if value:
                clauses.append(f"{column} = ?")
                values.append(value)
        if since:
            clauses.append("detected_at >= ?")
            values.append(since.astimezone(UTC).isoformat(timespec="seconds"))
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = self.db.query(f"SELECT * FROM events {where} ORDER BY id DESC LIMIT ?", [*values, limit])
        return [_event_from_row(row) for row in rows]

    def counts(self) -> dict[str, int]:
        return {name: self.db[name].count for name in ("events", "processed", "deliveries", "delivery_attempts")}


def _event_from_row(row: dict[str, Any]) -> Event:
    classification = Classification(
        relevant=True, platform=row["platform"], kind=row["kind"], reason=row["reason"],
        severity=row["severity"], authenticity=row["authenticity"], language=row["language"],
        reason_text=row["reason_text"],
        deadline=date.fromisoformat(row["deadline"]) if row["deadline"] else None,
        marketplace=row["marketplace"], ids=tuple(json.loads(row["ids"] or "[]")),
        facts=tuple((str(k), str(v)) for k, v in json.loads(row["facts"] or "{}").items()),
    )
    return Event(
        id=row["id"], account=row["account"], store=row["store"], folder=row["folder"], uid=row["uid"],
        uidvalidity=row["uidvalidity"], message_id=row["message_id"], subject=row["subject"] or "",
        sender=row["sender"] or "",
        received_at=datetime.fromisoformat(row["received_at"]) if row["received_at"] else None,
        detected_at=datetime.fromisoformat(row["detected_at"]), classification=classification,
        status=row["status"], linked_event_id=row.get("linked_event_id"),
    )
