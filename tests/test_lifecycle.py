"""An event's life: status changes with history, follow-up notices, deadline reminders, daily re-announcements."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from helpers import run, write_config

from watcher import lifecycle
from watcher.config import ChannelConfig
from watcher.demo import sample_messages
from watcher.errors import WatcherError
from watcher.model import Classification
from watcher.sandbox import HttpSink, Mailbox
from watcher.secrets import Secret
from watcher.store import MessageRecord, Store

REINSTATED = Path(__file__).resolve().parent / "mail" / "classify" / "amazon-reinstated-en-v11.eml"
HOOK = ChannelConfig("hook", Secret("json://127.0.0.1:1/x"), (), (), (), "info")
EBAY_ONLY = ChannelConfig("ebay", Secret("json://127.0.0.1:1/y"), ("ebay",), (), (), "info")


def notice(severity: str = "high", deadline: date | None = None, kind: str = "verification_required") -> Classification:
    return Classification(relevant=True, platform="amazon", kind=kind, reason="identity_verification",
                          severity=severity, authenticity="verified", language="en", deadline=deadline)


def add_event(store: Store, key: str, result: Classification) -> int:
    record = MessageRecord(key, key, 1, "subject", "sender", None, result, (), ("hook",))
    (event_id,) = store.record("us", "Lotus", "INBOX", 1, 1, [record])
    return event_id


def test_status_moves_forward_with_history_and_never_back(tmp_path: Path) -> None:
    with Store(tmp_path / "events.db") as store:
        event_id = add_event(store, "<a@x>", notice())
        lifecycle.change_status(store.db, event_id, "acknowledged", "anna", "seen")
        lifecycle.change_status(store.db, event_id, "appealed", "anna", "POA sent, case 123")
        with pytest.raises(WatcherError, match="is appealed; it cannot become acknowledged"):
            lifecycle.change_status(store.db, event_id, "acknowledged", "anna")
        lifecycle.change_status(store.db, event_id, "resolved", "ben")
        with pytest.raises(WatcherError, match="is resolved; it cannot become dismissed"):
            lifecycle.change_status(store.db, event_id, "dismissed", "ben")
        assert store.event(event_id).status == "resolved"
        assert [(h["from_status"], h["to_status"], h["actor"], h["note"]) for h in lifecycle.history(store.db, event_id)] == [
            ("open", "acknowledged", "anna", "seen"), ("acknowledged", "appealed", "anna", "POA sent, case 123"),
            ("appealed", "resolved", "ben", None)]


def test_deadline_reminders_come_once_each_until_acknowledged(tmp_path: Path) -> None:
    deadline = date(2026, 12, 10)
    end = datetime(2026, 12, 10, 23, 59, 59, tzinfo=UTC)
    with Store(tmp_path / "events.db") as store:
        event_id = add_event(store, "<a@x>", notice(deadline=deadline))
        store.db.execute("UPDATE events SET detected_at = '2026-12-01T00:00:00+00:00'")
        remind = lambda moment: lifecycle.schedule_reminders(store.db, [HOOK, EBAY_ONLY], (72, 24), 0, moment)  # noqa: E731
        assert remind(end - timedelta(hours=73)) == 0
        assert remind(end - timedelta(hours=71)) == 1
        assert remind(end - timedelta(hours=70)) == 0  # never doubled
        assert remind(end - timedelta(hours=23)) == 1
        purposes = [row[0] for row in store.db.execute("SELECT purpose FROM deliveries ORDER BY id")]
        assert purposes == ["event", "reminder:72h", "reminder:24h"]
        lifecycle.change_status(store.db, event_id, "acknowledged", "anna")
        store.db.execute("DELETE FROM deliveries WHERE purpose != 'event'")
        assert remind(end - timedelta(hours=23)) == 0


def test_open_critical_events_are_reannounced_daily(tmp_path: Path) -> None:
    with Store(tmp_path / "events.db") as store:
        add_event(store, "<a@x>", notice(severity="critical", kind="account_deactivated"))
        add_event(store, "<b@x>", notice(severity="high"))
        store.db.execute("UPDATE events SET detected_at = '2026-12-01T08:00:00+00:00'")
        remind = lambda moment: lifecycle.schedule_reminders(store.db, [HOOK], (72, 24), 24, moment)  # noqa: E731
        assert remind(datetime(2026, 12, 1, 20, 0, tzinfo=UTC)) == 0
        assert remind(datetime(2026, 12, 2, 9, 0, tzinfo=UTC)) == 1
        assert remind(datetime(2026, 12, 2, 18, 0, tzinfo=UTC)) == 0
        assert remind(datetime(2026, 12, 3, 9, 0, tzinfo=UTC)) == 1


def test_a_reinstatement_resolves_the_open_event_and_says_so(mailbox: Mailbox, http_sink: HttpSink, tmp_path: Path) -> None:
    deactivated = sample_messages(datetime.now(UTC))[0]
    mailbox.append(deactivated)
    config = write_config(tmp_path, {"us-store": mailbox}, {"hook": http_sink.url()})
    assert run(config, "check").exit_code == 0
    mailbox.append(REINSTATED.read_bytes())
    assert run(config, "check").exit_code == 0
    first, second = sorted((json.loads(line) for line in run(config, "events", "list", "--json").output.splitlines()),
                           key=lambda event: event["id"])
    assert (first["kind"], first["status"]) == ("account_deactivated", "resolved")
    assert second["kind"] == "reinstated"
    history = run(config, "events", "history", str(first["id"])).output
    assert f"reinstated notice: event #{second['id']}" in history and "watcher" in history
    reinstated = http_sink.wait_for(2)[1].body["message"]
    assert f"**Follows:** event #{first['id']} (account deactivated, " in reinstated
    assert "That event is now marked resolved." in reinstated


def test_cli_status_commands_and_reminder_delivery(mailbox: Mailbox, http_sink: HttpSink, tmp_path: Path) -> None:
    mailbox.append(sample_messages(datetime.now(UTC))[1])  # identity check with a deadline in 10 days
    config = write_config(tmp_path, {"us-store": mailbox}, {"hook": http_sink.url()},
                          extra="[reminders]\ndeadline_hours = [168]\nreannounce_critical_hours = 0\n")
    assert run(config, "check").exit_code == 0
    (event,) = [json.loads(line) for line in run(config, "events", "list", "--json").output.splitlines()]
    with Store(tmp_path / "events.db") as store:  # detected two days ago, due in five: inside the 168 h window
        now = datetime.now(UTC)
        store.db.execute("UPDATE events SET detected_at = ?, deadline = ?",
                         [(now - timedelta(days=2)).isoformat(timespec="seconds"), (now.date() + timedelta(days=5)).isoformat()])
    assert "deliveries: 1 sent" in run(config, "check").output
    titles = [request.body["title"] for request in http_sink.wait_for(2)]
    assert titles[1] == "[REMINDER: deadline in 168 h] " + titles[0]
    result = run(config, "events", "ack", str(event["id"]), "--note", "on it")
    assert (result.exit_code, result.output) == (0, f"event {event['id']}: open → acknowledged\n")
    wrong = run(config, "events", "ack", str(event["id"]))
    assert (wrong.exit_code, wrong.output) == (1, f"Error: event {event['id']} is acknowledged; it cannot become acknowledged\n")
    assert run(config, "events", "dismiss", "999").output == "Error: no event with id 999\n"
