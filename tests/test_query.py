"""Querying the event log: filters (store included), full-text search, export, statistics and output formats."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers import run, write_config

from watcher.cli import cli
from watcher.demo import sample_messages
from watcher.errors import StoreError
from watcher.model import Classification
from watcher.query import EventFilter, iter_events, list_events, search_events, stats
from watcher.sandbox import Mailbox
from watcher.store import MessageRecord, Store

OFFLINE = Mailbox(username="u", password="p", host="127.0.0.1", port=1)
TODAY = date.today()


def notice(platform: str, kind: str, reason_text: str, deadline: date | None = None) -> Classification:
    return Classification(relevant=True, platform=platform, kind=kind, reason="unknown", severity="high",
                          authenticity="verified", language="en", reason_text=reason_text, deadline=deadline)


def record(key: str, uid: int, subject: str, result: Classification) -> MessageRecord:
    return MessageRecord(key, key, uid, subject, "notices@example.com", datetime(2026, 11, 1, tzinfo=UTC),
                         result, (), ())


def seed(path: Path) -> None:
    """Three events in two stores: ids 1 and 2 in "Lotus Home" (account us), id 3 in "Maple" (account uk)."""
    with Store(path) as store:
        store.record("us", "Lotus Home", "INBOX", 1, 2, [
            record("<a@x>", 1, "Your Amazon selling account has been deactivated",
                   notice("amazon", "account_deactivated", "We found your account is related to another account.",
                          TODAY + timedelta(days=10))),
            record("<b@x>", 2, "Funds on hold", notice("ebay", "funds_held", "Payouts are held for 30 days.",
                                                        TODAY - timedelta(days=1))),
        ])
        store.record("uk", "Maple", "INBOX", 1, 1, [
            record("<c@x>", 1, "Verify your identity",
                   notice("amazon", "verification_required", "Upload a document to verify your identity.",
                          TODAY + timedelta(days=3))),
        ])


@pytest.fixture
def database(tmp_path: Path) -> Path:
    path = tmp_path / "events.db"
    seed(path)
    return path


@pytest.fixture
def config(tmp_path: Path, database: Path) -> Path:
    return write_config(tmp_path, {"us": OFFLINE}, {})  # its database = "events.db" is the seeded one


def test_events_are_filtered_by_store(database: Path) -> None:
    with Store(database) as store:
        assert [f.event.id for f in list_events(store, EventFilter(store="Lotus Home"), 50)] == [2, 1]
        assert [f.event.id for f in list_events(store, EventFilter(store="Maple", platform="amazon"), 50)] == [3]
        assert list_events(store, EventFilter(store="Nobody"), 50) == []


def test_search_finds_words_in_the_subject_or_the_reason_text(database: Path) -> None:
    with Store(database) as store:
        assert [h.found.event.id for h in search_events(store, "deactivated", EventFilter(), 10)] == [1]
        (hit,) = search_events(store, "related account", EventFilter(), 10)
        assert hit.found.event.id == 1
        assert "[related]" in hit.match and "[account]" in hit.match
        assert [h.found.event.id for h in search_events(store, "verif*", EventFilter(), 10)] == [3]


def test_search_applies_the_same_filters_as_the_list(database: Path) -> None:
    with Store(database) as store:
        everywhere = search_events(store, "account OR identity", EventFilter(), 10)
        assert sorted(h.found.event.id for h in everywhere) == [1, 3]
        only_maple = search_events(store, "account OR identity", EventFilter(store="Maple"), 10)
        assert [h.found.event.id for h in only_maple] == [3]
        newest = search_events(store, "account OR identity", EventFilter(), 10, newest_first=True)
        assert [h.found.event.id for h in newest] == [3, 1]


def test_search_puts_the_better_match_first(database: Path) -> None:
    with Store(database) as store:
        # Event 3 names "identity" in both subject and reason; event 1 not at all, but "your" in the subject.
        hits = search_events(store, "verify OR identity OR your", EventFilter(), 10)
        assert hits[0].found.event.id == 3
        assert [h.rank for h in hits] == sorted(h.rank for h in hits)


def test_text_that_is_not_fts_syntax_is_searched_as_plain_words(database: Path) -> None:
    with Store(database) as store:
        assert [h.found.event.id for h in search_events(store, 'on hold"', EventFilter(), 10)] == [2]
        assert [h.found.event.id for h in search_events(store, "30-days", EventFilter(), 10)] == [2]


def test_chinese_text_is_found_inside_a_sentence(tmp_path: Path) -> None:
    with Store(tmp_path / "events.db") as store:
        store.record("cn", "Lotus", "INBOX", 1, 1, [
            record("<z@x>", 1, "您的卖家账户已被停用", notice("amazon", "account_deactivated", "关联账户。"))])
        (hit,) = search_events(store, "停用", EventFilter(), 10)
        assert hit.match == "您的卖家账户已被[停用]"
        assert search_events(store, "冻结", EventFilter(), 10) == []


def test_empty_search_text_is_refused(database: Path) -> None:
    with Store(database) as store, pytest.raises(StoreError, match="give some text"):
        search_events(store, "  ", EventFilter(), 10)


def test_export_yields_every_event_oldest_first(database: Path) -> None:
    with Store(database) as store:
        assert [f.event.id for f in iter_events(store, EventFilter())] == [1, 2, 3]
        assert [f.event.id for f in iter_events(store, EventFilter(account="uk"))] == [3]


def test_stats_count_by_store_platform_kind_and_month(database: Path) -> None:
    this_month = datetime.now(UTC).strftime("%Y-%m")
    with Store(database) as store:
        found = stats(store, EventFilter(), TODAY)
    assert found.total == 3
    assert [(c.key, c.events) for c in found.by_store] == [("Lotus Home", 2), ("Maple", 1)]
    assert [(c.key, c.events) for c in found.by_platform] == [("amazon", 2), ("ebay", 1)]
    assert {c.key for c in found.by_kind} == {"account_deactivated", "funds_held", "verification_required"}
    assert [(c.key, c.events) for c in found.by_month] == [(this_month, 3)]


def test_open_deadlines_are_soonest_first_without_past_or_closed_ones(database: Path) -> None:
    with Store(database) as store:
        found = stats(store, EventFilter(), TODAY)
        assert [(d.event_id, d.days_left) for d in found.open_deadlines] == [(3, 3), (1, 10)]
        store.db.execute("UPDATE events SET status = 'resolved' WHERE id = 3")
        assert [d.event_id for d in stats(store, EventFilter(), TODAY).open_deadlines] == [1]
        assert stats(store, EventFilter(store="Maple"), TODAY).open_deadlines == ()


def test_since_narrows_the_counts_but_not_the_open_deadlines(database: Path) -> None:
    with Store(database) as store:
        found = stats(store, EventFilter(since=datetime.now(UTC) + timedelta(hours=1)), TODAY)
    assert (found.total, found.by_store) == (0, ())
    assert [d.event_id for d in found.open_deadlines] == [3, 1]


def test_events_list_formats_agree_with_each_other(config: Path) -> None:
    as_jsonl = [json.loads(line) for line in run(config, "events", "list", "--format", "jsonl").output.splitlines()]
    assert run(config, "events", "list", "--json").output == run(config, "events", "list", "--format", "jsonl").output
    as_json = json.loads(run(config, "events", "list", "--format", "json").output)
    as_csv = list(csv.DictReader(io.StringIO(run(config, "events", "list", "--format", "csv").output)))
    assert [row["id"] for row in as_jsonl] == [row["id"] for row in as_json] == [3, 2, 1]
    assert [row["id"] for row in as_csv] == ["3", "2", "1"]
    assert as_csv[0]["store"] == "Maple" and json.loads(as_csv[0]["ids"]) == []
    assert as_jsonl[0]["linked_event_id"] is None
    table = run(config, "events", "list", "--store", "Maple").output
    assert "Maple" in table and "Lotus Home" not in table


def test_json_and_a_different_format_together_are_refused(config: Path) -> None:
    result = CliRunner().invoke(cli, ["--config", str(config), "events", "list", "--json", "--format", "csv"])
    assert result.exit_code == 2
    assert "--json means --format jsonl" in result.output


def test_events_search_prints_a_table_with_the_match(config: Path) -> None:
    result = run(config, "events", "search", "identity")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == ["id", "detected", "(UTC)", "store", "platform", "kind", "status", "match"]
    assert len(lines) == 3 and "[identity]" in lines[2]
    assert run(config, "events", "search", "nothing-like-this").output == "no events\n"


def test_events_export_writes_every_field_as_csv(config: Path) -> None:
    result = run(config, "events", "export", "--format", "csv", "--store", "Lotus Home")
    rows = list(csv.DictReader(io.StringIO(result.output)))
    assert [row["id"] for row in rows] == ["1", "2"]
    assert {"status", "linked_event_id", "reason_text", "deadline", "subject", "message_id"} <= set(rows[0])
    assert rows[0]["deadline"] == (TODAY + timedelta(days=10)).isoformat()
    assert rows[0]["status"] == "open"


def test_events_export_defaults_to_json_lines_and_json_is_one_array(config: Path) -> None:
    lines = run(config, "events", "export").output.splitlines()
    assert [json.loads(line)["id"] for line in lines] == [1, 2, 3]
    assert [row["id"] for row in json.loads(run(config, "events", "export", "--format", "json").output)] == [1, 2, 3]
    assert json.loads(run(config, "events", "export", "--format", "json", "--store", "Nobody").output) == []


def test_stats_json_has_counts_and_open_deadlines(config: Path) -> None:
    result = run(config, "stats", "--format", "json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["total"] == 3
    assert data["by_store"] == [{"store": "Lotus Home", "events": 2}, {"store": "Maple", "events": 1}]
    assert set(data) == {"total", "by_store", "by_platform", "by_kind", "by_month", "open_deadlines"}
    assert [(d["event_id"], d["days_left"], d["deadline"]) for d in data["open_deadlines"]] == [
        (3, 3, (TODAY + timedelta(days=3)).isoformat()), (1, 10, (TODAY + timedelta(days=10)).isoformat())]


def test_stats_csv_is_one_flat_table(config: Path) -> None:
    rows = list(csv.DictReader(io.StringIO(run(config, "stats", "--format", "csv", "--store", "Maple").output)))
    assert rows[0] == {**{key: "" for key in rows[0]}, "section": "total", "events": "1"}
    assert ("store", "Maple", "1") in [(row["section"], row["key"], row["events"]) for row in rows]


def test_stats_table_lists_each_count(config: Path) -> None:
    output = run(config, "stats").output
    assert output.startswith("events: 3\n")
    assert "Lotus Home" in output and "verification_required" in output and "open deadlines:" in output


def test_a_notice_fetched_over_imap_can_be_searched(mailbox: Mailbox, tmp_path: Path) -> None:
    for message in sample_messages(datetime.now(UTC)):
        mailbox.append(message)
    config = write_config(tmp_path, {"us-store": mailbox}, {}, account_extra='store = "Lotus Home"')
    assert run(config, "check").exit_code == 0
    found = [json.loads(line) for line in run(config, "events", "search", "related account", "--format", "jsonl",
                                               "--store", "Lotus Home").output.splitlines()]
    assert [(row["kind"], row["store"], row["account"]) for row in found] == [
        ("account_deactivated", "Lotus Home", "us-store")]
    assert "[related]" in found[0]["match"]
    assert run(config, "events", "search", "locked", "--format", "json").output.count('"kind": "security_lock"') == 1
    assert run(config, "events", "search", "related account", "--store", "Other").output == "no events\n"
