"""Read-only questions to the event log: filtered lists, full-text search, a streaming export, statistics.

Every function takes an open `watcher.store.Store` and returns typed values; none of them prints. The
filters are the same everywhere (`EventFilter`), so `events list`, `events search`, `events export` and
`stats` agree on what "--store Lotus --since 7d" means.
"""

from __future__ import annotations

import logging
import re
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from typing import Any

from watcher.errors import StoreError
from watcher.lifecycle import CLOSED
from watcher.model import Event
from watcher.store import Store, _event_from_row

log = logging.getLogger(__name__)

# FTS5's unicode61 tokenizer keeps a run of CJK characters as one token, so a word inside a Chinese or
# Japanese sentence cannot be matched by MATCH; such queries are answered by a substring search instead.
_UNSPACED_SCRIPT = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]")

_MARK_OPEN, _MARK_CLOSE, _ELLIPSIS, _SNIPPET_TOKENS = "[", "]", "…", 12


@dataclass(frozen=True, slots=True)
class EventFilter:
    """Which events a query covers; every field left None matches everything."""

    since: datetime | None = None  # detected at or after this moment
    platform: str | None = None
    kind: str | None = None
    account: str | None = None
    store: str | None = None

    def sql(self, table: str = "events") -> tuple[str, list[str]]:
        """Return a WHERE condition over ``table`` ("1" when nothing is filtered) and its parameters."""
        clauses: list[str] = []
        values: list[str] = []
        for column, value in (("platform", self.platform), ("kind", self.kind), ("account", self.account),
                              ("store", self.store)):
            if value:
                clauses.append(f"{table}.{column} = ?")
                values.append(value)
        if self.since:
            clauses.append(f"{table}.detected_at >= ?")
            values.append(self.since.astimezone(UTC).isoformat(timespec="seconds"))
        return (" AND ".join(clauses) or "1"), values


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """An event as stored, with the earlier event it follows up (an appeal reply, a reinstatement), if any."""

    event: Event
    linked_event_id: int | None


@dataclass(frozen=True, slots=True)
class SearchHit:
    """One event that matched a search, with the matching words in context marked ``[like this]``."""

    found: StoredEvent
    match: str
    rank: float  # FTS5 bm25: lower is a better match; 0.0 for a substring match


@dataclass(frozen=True, slots=True)
class Count:
    key: str
    events: int


@dataclass(frozen=True, slots=True)
class OpenDeadline:
    """An event whose deadline is today or later and that is not resolved or dismissed."""

    event_id: int
    deadline: date
    days_left: int
    store: str
    account: str
    platform: str
    kind: str
    severity: str
    status: str
    subject: str


@dataclass(frozen=True, slots=True)
class Stats:
    """Event counts per store, platform, kind and month (YYYY-MM of detection), and the open deadlines."""

    total: int
    by_store: tuple[Count, ...]
    by_platform: tuple[Count, ...]
    by_kind: tuple[Count, ...]
    by_month: tuple[Count, ...]
    open_deadlines: tuple[OpenDeadline, ...]


def _stored(row: dict[str, Any]) -> StoredEvent:
    return StoredEvent(_event_from_row(row), row.get("linked_event_id"))


def list_events(store: Store, filters: EventFilter, limit: int) -> list[StoredEvent]:
    """Return at most ``limit`` events matching ``filters``, newest first."""
    where, values = filters.sql()
    rows = store.db.query(f"SELECT * FROM events WHERE {where} ORDER BY id DESC LIMIT ?", [*values, limit])
    return [_stored(row) for row in rows]


def iter_events(store: Store, filters: EventFilter) -> Iterator[StoredEvent]:
    """Yield every event matching ``filters``, oldest first, reading the table as it goes (no limit)."""
    where, values = filters.sql()
    for row in store.db.query(f"SELECT * FROM events WHERE {where} ORDER BY id", values):
        yield _stored(row)


def search_events(store: Store, text: str, filters: EventFilter, limit: int,
                  newest_first: bool = False) -> list[SearchHit]:
    """Return at most ``limit`` events whose subject or reason text matches ``text``, best match first
    (ties and ``newest_first``: newest first).

    ``text`` is an FTS5 query — words (all must occur), "a phrase", prefix*, OR, NOT; text that is not
    valid FTS5 syntax is searched as plain words. Text in Chinese, Japanese or Korean is matched as a
    substring. Raise StoreError for empty text.
    """
    if not text.strip():
        raise StoreError("give some text to search for")
    if _UNSPACED_SCRIPT.search(text):
        return _substring_search(store, text.strip(), filters, limit)
    try:
        return _fts_search(store, text, filters, limit, newest_first)
    except sqlite3.OperationalError as error:
        log.debug("not an FTS5 query (%s); searching %r as plain words", error, text)
        return _fts_search(store, _as_plain_words(text), filters, limit, newest_first)


def _as_plain_words(text: str) -> str:
    """Quote every word of ``text`` so FTS5 reads no operators in it: all words must occur."""
    return " ".join('"' + word.replace('"', '""') + '"' for word in text.split())


def _fts_search(store: Store, query: str, filters: EventFilter, limit: int, newest_first: bool) -> list[SearchHit]:
    where, values = filters.sql()
    order = "events.id DESC" if newest_first else "events_fts.rank, events.id DESC"
    snippet = f"snippet(events_fts, -1, '{_MARK_OPEN}', '{_MARK_CLOSE}', '{_ELLIPSIS}', {_SNIPPET_TOKENS})"
    rows = store.db.execute(
        f"SELECT events.id, {snippet}, events_fts.rank FROM events_fts JOIN events ON events.id = events_fts.rowid "
        f"WHERE events_fts MATCH ? AND {where} ORDER BY {order} LIMIT ?", [query, *values, limit]).fetchall()
    return _hits(store, [(row[0], row[1], float(row[2])) for row in rows])


def _substring_search(store: Store, text: str, filters: EventFilter, limit: int) -> list[SearchHit]:
    where, values = filters.sql()
    pattern = "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    rows = store.db.execute(
        "SELECT id, subject, reason_text FROM events WHERE (subject LIKE ? ESCAPE '\\' OR reason_text LIKE ? "
        f"ESCAPE '\\') AND {where} ORDER BY id DESC LIMIT ?", [pattern, pattern, *values, limit]).fetchall()
    return _hits(store, [(row[0], _mark(text, row[1] or "", row[2] or ""), 0.0) for row in rows])


def _mark(text: str, *fields: str) -> str:
    """Return the first field that contains ``text``, with ``text`` marked, cut to about 60 characters around it."""
    for value in fields:
        at = value.find(text)
        if at >= 0:
            start, end = max(0, at - 30), min(len(value), at + len(text) + 30)
            return ((_ELLIPSIS if start else "") + value[start:at] + _MARK_OPEN + text + _MARK_CLOSE
                    + value[at + len(text):end] + (_ELLIPSIS if end < len(value) else ""))
    return ""


def _hits(store: Store, matches: list[tuple[int, str, float]]) -> list[SearchHit]:
    if not matches:
        return []
    marks = ",".join("?" * len(matches))
    rows = {row["id"]: row for row in store.db.query(f"SELECT * FROM events WHERE id IN ({marks})",
                                                     [event_id for event_id, _, _ in matches])}
    return [SearchHit(_stored(rows[event_id]), match, rank) for event_id, match, rank in matches]


def stats(store: Store, filters: EventFilter, today: date) -> Stats:
    """Count the events matching ``filters`` by store, platform, kind and month, and list the open deadlines.

    Open deadlines (``today`` or later, status not in CLOSED, soonest first) ignore ``filters.since``:
    a deadline still ahead matters however long ago its notice came.
    """
    where, values = filters.sql()

    def counted(expression: str, order: str) -> tuple[Count, ...]:
        rows = store.db.execute(f"SELECT COALESCE({expression}, '') AS key, COUNT(*) AS n FROM events "
                                f"WHERE {where} GROUP BY key ORDER BY {order}", values).fetchall()
        return tuple(Count(str(row[0]), int(row[1])) for row in rows)

    total = int(store.db.execute(f"SELECT COUNT(*) FROM events WHERE {where}", values).fetchone()[0])
    return Stats(
        total=total,
        by_store=counted("store", "n DESC, key"),
        by_platform=counted("platform", "n DESC, key"),
        by_kind=counted("kind", "n DESC, key"),
        by_month=counted("substr(detected_at, 1, 7)", "key"),
        open_deadlines=tuple(open_deadlines(store, replace(filters, since=None), today)),
    )


def open_deadlines(store: Store, filters: EventFilter, today: date) -> list[OpenDeadline]:
    """Return the events matching ``filters`` with a deadline on or after ``today`` that are not closed,
    soonest deadline first."""
    where, values = filters.sql()
    closed = ",".join("?" * len(CLOSED))
    rows = store.db.query(
        f"SELECT * FROM events WHERE deadline >= ? AND status NOT IN ({closed}) AND {where} "
        "ORDER BY deadline, id", [today.isoformat(), *CLOSED, *values])
    found = []
    for row in rows:
        deadline = date.fromisoformat(row["deadline"])
        found.append(OpenDeadline(
            event_id=row["id"], deadline=deadline, days_left=(deadline - today).days, store=row["store"] or "",
            account=row["account"], platform=row["platform"] or "", kind=row["kind"] or "",
            severity=row["severity"] or "", status=row["status"], subject=row["subject"] or ""))
    return found
