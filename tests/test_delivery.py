"""Digest and noise control: quiet hours, bursts grouped into one notification, daily digests — sent to a real
local HTTP channel from a real SQLite file, at a fixed "now" rather than the wall clock."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from watcher import lifecycle
from watcher.config import QuietHours, load_config
from watcher.delivery import deliver_due, schedule_digest
from watcher.errors import ConfigError
from watcher.model import Classification
from watcher.pipeline import Engine
from watcher.sandbox import HttpSink
from watcher.store import MessageRecord, Store

SHANGHAI = ZoneInfo("Asia/Shanghai")
# 2030-01-15 23:30 in Shanghai: inside 22:00-07:00; the quiet period ends at 07:00 there (23:00 UTC).
QUIET_NIGHT = datetime(2030, 1, 15, 23, 30, tzinfo=SHANGHAI)
MORNING = datetime(2030, 1, 16, 7, 0, tzinfo=SHANGHAI)
BASE = datetime(2030, 1, 15, 8, 0, tzinfo=UTC)  # a weekday morning, outside quiet hours


def engine_for(tmp_path: Path, sink: HttpSink, channel_extra: str = "", extra: str = "") -> Engine:
    path = tmp_path / "watcher.toml"
    path.write_text(f"""[storage]
database = "events.db"
{extra}
[[accounts]]
name = "us-store"
store = "Lotus Home"
host = "127.0.0.1"
port = 9
security = "none"
username = "seller"
password = "unused"

[[channels]]
name = "hook"
url = "{sink.url()}"
{channel_extra}
""")
    path.chmod(0o600)
    return Engine(load_config(path))


def notice(kind: str = "listing_removed", severity: str = "medium", ids: tuple[str, ...] = (),
           deadline: date | None = None, authenticity: str = "verified") -> Classification:
    return Classification(relevant=True, platform="amazon", kind=kind, reason="listing_policy", severity=severity,
                          authenticity=authenticity, language="en", ids=ids, deadline=deadline)


def add_events(store: Store, results: list[Classification], detected: list[datetime] | None = None) -> list[int]:
    """Record one event per result, each wanted by the "hook" channel, detected at ``detected`` (UTC)."""
    start = store.db.execute("SELECT COUNT(*) FROM events").fetchone()[0]
    records = [MessageRecord(f"<{start + n}@x>", f"<{start + n}@x>", start + n + 1, f"Notice {start + n}",
                             "seller-notification@amazon.com", None, result, (), ("hook",))
               for n, result in enumerate(results)]
    ids = store.record("us-store", "Lotus Home", "INBOX", 1, start + len(results), records)
    for event_id, moment in zip(ids, detected or [], strict=False):
        store.db.execute("UPDATE events SET detected_at = ? WHERE id = ?", [moment.isoformat(), event_id])
    return ids


def delivery_rows(store: Store) -> list[tuple[int, str, int, str | None]]:
    return [tuple(row) for row in store.db.execute(
        "SELECT event_id, status, attempts, next_attempt_at FROM deliveries ORDER BY event_id")]


@pytest.fixture
def sink() -> Iterator[HttpSink]:
    with HttpSink() as running:
        yield running


# --- quiet hours ----------------------------------------------------------------------------------------


def test_quiet_hours_postpone_a_notification_to_their_end_without_an_attempt(tmp_path: Path, sink: HttpSink) -> None:
    engine = engine_for(tmp_path, sink, 'quiet_hours = "22:00-07:00"\ntimezone = "Asia/Shanghai"')
    with Store(engine.config.database) as store:
        (event_id,) = add_events(store, [notice()])
        summary = deliver_due(engine, store, now=QUIET_NIGHT)
        assert (summary.sent, summary.postponed, summary.notifications) == (0, 1, 0)
        assert delivery_rows(store) == [(event_id, "pending", 0, "2030-01-15T23:00:00+00:00")]
        assert store.attempts_for(event_id) == []
        assert deliver_due(engine, store, now=MORNING - timedelta(minutes=1)).sent == 0
        assert deliver_due(engine, store, now=MORNING).sent == 1
    (request,) = sink.wait_for(1)
    assert request.body["title"] == "[MEDIUM] Amazon: listings removed — Lotus Home"


def test_a_critical_notification_breaks_through_quiet_hours(tmp_path: Path, sink: HttpSink) -> None:
    engine = engine_for(tmp_path, sink, 'quiet_hours = "22:00-07:00"\ntimezone = "Asia/Shanghai"')
    with Store(engine.config.database) as store:
        critical, medium = add_events(store, [notice("account_deactivated", "critical"), notice()])
        summary = deliver_due(engine, store, now=QUIET_NIGHT)
        assert (summary.sent, summary.postponed) == (1, 1)
        assert [row[:3] for row in delivery_rows(store)] == [(critical, "sent", 1), (medium, "pending", 0)]
    (request,) = sink.wait_for(1)
    assert request.body["title"].startswith("[CRITICAL] Amazon: account deactivated")


def test_a_phishing_notice_of_a_critical_kind_breaks_through_quiet_hours(tmp_path: Path, sink: HttpSink) -> None:
    engine = engine_for(tmp_path, sink, 'quiet_hours = "22:00-07:00"\ntimezone = "Asia/Shanghai"')
    with Store(engine.config.database) as store:
        add_events(store, [notice("account_deactivated", "critical", authenticity="suspected_phishing")])
        assert deliver_due(engine, store, now=QUIET_NIGHT).sent == 1
    assert sink.wait_for(1)[0].body["title"].startswith("[PHISHING] Amazon: account deactivated?")


@pytest.mark.parametrize(("moment", "end"), [
    (datetime(2030, 1, 15, 23, 30, tzinfo=SHANGHAI), datetime(2030, 1, 16, 7, 0, tzinfo=SHANGHAI)),
    (datetime(2030, 1, 16, 3, 0, tzinfo=SHANGHAI), datetime(2030, 1, 16, 7, 0, tzinfo=SHANGHAI)),
    (datetime(2030, 1, 16, 7, 0, tzinfo=SHANGHAI), None),
    (datetime(2030, 1, 16, 21, 59, tzinfo=SHANGHAI), None),
    (datetime(2030, 1, 15, 15, 0, tzinfo=UTC), datetime(2030, 1, 16, 7, 0, tzinfo=SHANGHAI)),  # 23:00 there
])
def test_quiet_hours_that_span_midnight_end_the_next_local_morning(moment: datetime, end: datetime | None) -> None:
    quiet = QuietHours(datetime(2030, 1, 1, 22, 0).time(), datetime(2030, 1, 1, 7, 0).time())
    assert quiet.end_of(moment, SHANGHAI) == end


def test_daytime_quiet_hours_end_the_same_day() -> None:
    quiet = QuietHours(datetime(2030, 1, 1, 12, 0).time(), datetime(2030, 1, 1, 13, 30).time())
    assert quiet.end_of(datetime(2030, 1, 15, 12, 15, tzinfo=UTC), ZoneInfo("UTC")) == datetime(2030, 1, 15, 13, 30, tzinfo=UTC)
    assert quiet.end_of(datetime(2030, 1, 15, 13, 30, tzinfo=UTC), ZoneInfo("UTC")) is None


# --- bursts ---------------------------------------------------------------------------------------------


def test_a_burst_of_thirty_listing_removals_is_one_notification_and_every_row_is_sent(tmp_path: Path,
                                                                                     sink: HttpSink) -> None:
    engine = engine_for(tmp_path, sink)
    with Store(engine.config.database) as store:
        ids = add_events(store, [notice(ids=(f"B0ASIN{n:04d}",)) for n in range(30)],
                         [BASE + timedelta(seconds=20 * n) for n in range(30)])
        summary = deliver_due(engine, store, now=BASE + timedelta(minutes=11))
        assert (summary.sent, summary.notifications) == (30, 1)
        assert {row[1:3] for row in delivery_rows(store)} == {("sent", 1)}
        assert all(len(store.attempts_for(event_id)) == 1 for event_id in ids)
    (request,) = sink.wait_for(1)
    body = request.body["message"]
    assert request.body["title"] == "[MEDIUM] Amazon: 30 listings removed — Lotus Home"
    assert f"1. 2030-01-15 08:00 UTC · B0ASIN0000 · #{ids[0]}" in body
    assert f"30. 2030-01-15 08:09 UTC · B0ASIN0029 · #{ids[29]}" in body
    assert body.count("**Next steps") == 1
    assert f"#{ids[0]}–#{ids[-1]}" in body


def test_a_burst_lists_fifty_notices_then_counts_the_rest(tmp_path: Path, sink: HttpSink) -> None:
    engine = engine_for(tmp_path, sink)
    with Store(engine.config.database) as store:
        add_events(store, [notice() for _ in range(60)], [BASE] * 60)
        assert deliver_due(engine, store, now=BASE + timedelta(minutes=1)).sent == 60
    body = sink.wait_for(1)[0].body["message"]
    assert "\n50. " in body and "\n51. " not in body
    assert "…and 10 more" in body


def test_email_text_in_a_burst_is_escaped(tmp_path: Path, sink: HttpSink) -> None:
    engine = engine_for(tmp_path, sink)
    with Store(engine.config.database) as store:
        add_events(store, [notice(ids=("<b>@everyone</b>",))] * 3, [BASE] * 3)
        deliver_due(engine, store, now=BASE)
    body = sink.wait_for(1)[0].body["message"]
    assert "&lt;b&gt;@\u2060everyone&lt;/b&gt;" in body and "<b>" not in body


def test_below_the_threshold_or_outside_the_window_notices_stay_individual(tmp_path: Path, sink: HttpSink) -> None:
    engine = engine_for(tmp_path, sink)
    with Store(engine.config.database) as store:
        add_events(store, [notice(), notice()], [BASE, BASE])
        add_events(store, [notice("policy_warning")] * 3, [BASE + timedelta(minutes=11 * n) for n in range(3)])
        add_events(store, [notice("funds_held", "high")], [BASE])
        summary = deliver_due(engine, store, now=BASE + timedelta(hours=1))
        assert (summary.sent, summary.notifications) == (6, 6)
    titles = [request.body["title"] for request in sink.wait_for(6)]
    assert all(" listings removed — " in title or " policy warning — " in title or " funds on hold — " in title
               for title in titles)


def test_a_failed_burst_is_recorded_on_every_row_and_retried_as_one(tmp_path: Path, sink: HttpSink) -> None:
    engine = engine_for(tmp_path, sink, extra="[delivery]\nburst_threshold = 4\nburst_window_minutes = 5\n")
    sink.status_code = 500
    with Store(engine.config.database) as store:
        add_events(store, [notice()] * 4, [BASE + timedelta(minutes=n) for n in range(4)])
        summary = deliver_due(engine, store, now=BASE)
        assert (summary.retrying, summary.notifications) == (4, 1)
        assert {row[1:3] for row in delivery_rows(store)} == {("pending", 1)}
        sink.status_code = 200
        summary = deliver_due(engine, store, now=BASE + timedelta(hours=2))
        assert (summary.sent, summary.notifications) == (4, 1)
    assert [request.body["title"] for request in sink.wait_for(2)] == [
        "[MEDIUM] Amazon: 4 listings removed — Lotus Home"] * 2


def test_burst_threshold_zero_turns_grouping_off(tmp_path: Path, sink: HttpSink) -> None:
    engine = engine_for(tmp_path, sink, extra="[delivery]\nburst_threshold = 0\n")
    with Store(engine.config.database) as store:
        add_events(store, [notice()] * 5, [BASE] * 5)
        assert deliver_due(engine, store, now=BASE).notifications == 5


# --- digests --------------------------------------------------------------------------------------------


def test_a_digest_is_made_once_per_local_day_and_lists_open_events_and_deadlines(tmp_path: Path,
                                                                                sink: HttpSink) -> None:
    engine = engine_for(tmp_path, sink, 'digest = "0 8 * * *"\ntimezone = "Asia/Shanghai"')
    morning = datetime(2030, 1, 15, 8, 0, tzinfo=SHANGHAI)
    with Store(engine.config.database) as store:
        verify, removed, resolved = add_events(
            store, [notice("verification_required", "high", deadline=date(2030, 1, 18)), notice(), notice()],
            [morning - timedelta(days=3), morning - timedelta(hours=5), morning - timedelta(days=1)])
        lifecycle.change_status(store.db, removed, "acknowledged", "anna")
        lifecycle.change_status(store.db, resolved, "resolved", "anna")
        store.db.execute("UPDATE deliveries SET status = 'sent'")
        assert schedule_digest(engine, store, "hook", now=morning) is True
        assert schedule_digest(engine, store, "hook", now=morning + timedelta(hours=15)) is False  # 23:00 there
        assert deliver_due(engine, store, now=morning).sent == 1
        assert deliver_due(engine, store, now=morning + timedelta(minutes=1)).notifications == 0
        assert list(store.db.execute("SELECT channel, period, status, attempts FROM digests")) == [
            ("hook", "2030-01-15", "sent", 1)]
        assert schedule_digest(engine, store, "hook", now=morning + timedelta(days=1)) is True
    (request,) = sink.wait_for(1)
    assert request.body["title"] == "[DIGEST 2030-01-15] 2 open, 1 with a deadline"
    assert request.body["message"] == "\n".join([
        "**Open events**",
        "*Lotus Home*",
        f"- Amazon verification required · open · 3 d old · #{verify}",
        f"- Amazon listings removed · acknowledged · 5 h old · #{removed}",
        "",
        "**Upcoming deadlines**",
        f"- 2030-01-18 (3 days left) · Lotus Home: Amazon verification required · #{verify}",
    ])


def test_an_empty_digest_still_says_nothing_is_open(tmp_path: Path, sink: HttpSink) -> None:
    engine = engine_for(tmp_path, sink, 'digest = "30 7 * * mon-fri"')
    with Store(engine.config.database) as store:
        schedule_digest(engine, store, "hook", now=BASE)
        assert deliver_due(engine, store, now=BASE).sent == 1
    (request,) = sink.wait_for(1)
    assert (request.body["title"], request.body["message"]) == ("[DIGEST 2030-01-15] nothing open", "nothing open")


def test_a_failed_digest_is_retried_then_sent_once(tmp_path: Path, sink: HttpSink) -> None:
    engine = engine_for(tmp_path, sink, 'digest = "0 8 * * *"')
    sink.status_code = 503
    with Store(engine.config.database) as store:
        schedule_digest(engine, store, "hook", now=BASE)
        assert deliver_due(engine, store, now=BASE).retrying == 1
        status, attempts, error = store.db.execute("SELECT status, attempts, last_error FROM digests").fetchone()
        assert (status, attempts) == ("pending", 1) and "503" in error
        sink.status_code = 200
        assert deliver_due(engine, store, now=BASE + timedelta(hours=1)).sent == 1
        assert deliver_due(engine, store, now=BASE + timedelta(hours=2)).notifications == 0
        assert store.db.execute("SELECT status, attempts, last_error FROM digests").fetchone() == ("sent", 2, None)
    assert len(sink.wait_for(2)) == 2


def test_a_digest_waits_for_the_end_of_quiet_hours(tmp_path: Path, sink: HttpSink) -> None:
    engine = engine_for(tmp_path, sink, 'digest = "0 23 * * *"\nquiet_hours = "22:00-07:00"\n'
                                        'timezone = "Asia/Shanghai"')
    with Store(engine.config.database) as store:
        schedule_digest(engine, store, "hook", now=QUIET_NIGHT)
        assert deliver_due(engine, store, now=QUIET_NIGHT).postponed == 1
        assert deliver_due(engine, store, now=MORNING).sent == 1
    assert sink.wait_for(1)[0].body["title"] == "[DIGEST 2030-01-15] nothing open"


def test_a_channel_without_a_digest_gets_none(tmp_path: Path, sink: HttpSink) -> None:
    engine = engine_for(tmp_path, sink)
    with Store(engine.config.database) as store:
        assert schedule_digest(engine, store, "hook", now=BASE) is False
        assert store.db.execute("SELECT COUNT(*) FROM digests").fetchone() == (0,)


# --- configuration --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("setting", "problem"), [
    ('quiet_hours = "22:00-7:00"', 'channels[0].quiet_hours: must be "HH:MM-HH:MM" in 24-hour time'),
    ('quiet_hours = "08:00-08:00"', "channels[0].quiet_hours: start and end are the same"),
    ('timezone = "Mars/Olympus"', "channels[0].timezone: unknown time zone 'Mars/Olympus'"),
    ('digest = "0 8 * *"', "channels[0].digest: not a cron expression"),
    ('digest = "0 25 * * *"', "channels[0].digest: not a cron expression"),
    ("digest = 8", "channels[0].digest: must be a string, got 8"),
])
def test_channel_noise_settings_are_checked_with_their_key(tmp_path: Path, sink: HttpSink, setting: str,
                                                            problem: str) -> None:
    with pytest.raises(ConfigError, match=problem.replace("[", r"\[").replace("]", r"\]")):
        engine_for(tmp_path, sink, setting)


@pytest.mark.parametrize(("setting", "problem"), [
    ("burst_threshold = 1", "delivery.burst_threshold: must be 0 (off) or at least 2, got 1"),
    ("burst_window_minutes = -5", "delivery.burst_window_minutes: must be at least 0, got -5"),
])
def test_burst_settings_are_checked_with_their_key(tmp_path: Path, sink: HttpSink, setting: str, problem: str) -> None:
    with pytest.raises(ConfigError) as raised:
        engine_for(tmp_path, sink, extra=f"[delivery]\n{setting}\n")
    assert problem in str(raised.value)
