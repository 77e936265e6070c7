"""The event database: migrations, atomic recording, no duplicates, delivery bookkeeping."""

from __future__ import annotations

import sqlite3
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from watcher.errors import NotFound, StoreError
from watcher.model import Classification, DeliveryOutcome
from watcher.store import SCHEMA_VERSION, MessageRecord, PendingDelivery, Store

NOTICE = Classification(relevant=True, platform="amazon", kind="account_deactivated", reason="related_account",
                        severity="critical", authenticity="verified", language="en", reason_text="Related account.",
                        deadline=date(2026, 12, 1), marketplace="amazon.com", ids=("B0C7KX2M4Q",),
                        facts=(("funds_held", "true"),))


def record(key: str, uid: int, result: Classification | None = NOTICE, channels: tuple[str, ...] = ("a", "b")) -> MessageRecord:
    return MessageRecord(key, key, uid, "Your Amazon.com Selling Account", "Amazon <seller-notification@amazon.com>",
                         datetime(2026, 11, 20, 10, 0, tzinfo=UTC), result, (), channels)


def test_a_new_database_is_migrated_to_the_current_schema(tmp_path: Path) -> None:
    with Store(tmp_path / "events.db") as store:
        assert store.schema_version() == SCHEMA_VERSION
        assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_a_database_from_a_newer_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    sqlite3.connect(path).execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(StoreError, match="newer than this program"):
        Store(path)


def test_event_deliveries_and_cursor_are_recorded_together(tmp_path: Path) -> None:
    with Store(tmp_path / "events.db") as store:
        ids = store.record("us", "Lotus", "INBOX", 7, 12, [record("<m1@x>", 11), record("<m2@x>", 12, Classification(False))])
        assert len(ids) == 1
        event = store.event(ids[0])
        assert event.classification == NOTICE
        assert (event.account, event.store, event.uid, event.status) == ("us", "Lotus", 11, "open")
        assert [d["channel"] for d in store.deliveries_for(ids[0])] == ["a", "b"]
        cursor = store.cursor("us", "INBOX")
        assert cursor is not None and (cursor.uidvalidity, cursor.last_uid) == (7, 12)
        assert store.processed_keys(["<m1@x>", "<m2@x>", "<m3@x>"]) == {"<m1@x>", "<m2@x>"}


def test_the_same_message_in_a_second_folder_makes_no_second_event(tmp_path: Path) -> None:
    with Store(tmp_path / "events.db") as store:
        store.record("us", "us", "INBOX", 1, 5, [record("<same@x>", 5)])
        assert store.record("us", "us", "Archive", 1, 9, [record("<same@x>", 9)]) == []
        assert store.counts()["events"] == 1
        assert store.counts()["deliveries"] == 2


def test_a_failure_inside_the_transaction_records_nothing(tmp_path: Path) -> None:
    with Store(tmp_path / "events.db") as store:
        broken = record("<m1@x>", 3, channels=("a", "a"))  # violates the unique (event, channel) index
        with pytest.raises(sqlite3.IntegrityError):
            store.record("us", "us", "INBOX", 1, 3, [broken])
        assert store.counts() == {"events": 0, "processed": 0, "deliveries": 0, "delivery_attempts": 0}
        assert store.cursor("us", "INBOX") is None


def test_a_successful_delivery_is_never_due_again(tmp_path: Path) -> None:
    with Store(tmp_path / "events.db") as store:
        store.record("us", "us", "INBOX", 1, 1, [record("<m1@x>", 1, channels=("a",))])
        (due,) = store.due_deliveries()
        assert store.record_attempt(due, DeliveryOutcome("success", "sent"), 12, 24) == "sent"
        assert store.due_deliveries() == []
        assert [a["outcome"] for a in store.attempts_for(due.event_id)] == ["success"]


def test_a_failed_delivery_is_retried_later_with_backoff(tmp_path: Path) -> None:
    with Store(tmp_path / "events.db") as store:
        store.record("us", "us", "INBOX", 1, 1, [record("<m1@x>", 1, channels=("a",))])
        (due,) = store.due_deliveries()
        assert store.record_attempt(due, DeliveryOutcome("failure", "HTTP 500"), 5, 24) == "pending"
        assert store.due_deliveries() == []
        later = store.due_deliveries(datetime.now(UTC) + timedelta(seconds=31))
        assert [d.attempts for d in later] == [1]
        assert store.deliveries_for(due.event_id)[0]["last_error"] == "HTTP 500"


def test_a_permanent_failure_or_an_expired_window_marks_the_delivery_failed(tmp_path: Path) -> None:
    with Store(tmp_path / "events.db") as store:
        store.record("us", "us", "INBOX", 1, 2, [record("<m1@x>", 1, channels=("a",)), record("<m2@x>", 2, channels=("b",))])
        first, second = store.due_deliveries()
        assert store.record_attempt(first, DeliveryOutcome("nomatch", "no service", permanent=True), 1, 24) == "failed"
        old = PendingDelivery(second.id, second.event_id, second.channel, 9, second.created_at - timedelta(hours=25))
        assert store.record_attempt(old, DeliveryOutcome("timeout", "slow"), 1, 24) == "failed"
        assert store.due_deliveries(datetime.now(UTC) + timedelta(days=2)) == []


def test_events_are_listed_newest_first_and_filtered(tmp_path: Path) -> None:
    other = Classification(relevant=True, platform="ebay", kind="funds_held", reason="unknown", severity="high",
                           authenticity="verified", language="en")
    with Store(tmp_path / "events.db") as store:
        store.record("us", "us", "INBOX", 1, 2, [record("<m1@x>", 1), record("<m2@x>", 2, other)])
        assert [e.classification.platform for e in store.events()] == ["ebay", "amazon"]
        assert [e.uid for e in store.events(platform="amazon")] == [1]
        assert [e.uid for e in store.events(kind="funds_held", account="us")] == [2]
        assert store.events(since=datetime.now(UTC) + timedelta(hours=1)) == []
        with pytest.raises(NotFound):
            store.event(99)
