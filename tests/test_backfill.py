"""Past mail: `watcher backfill` over a real Dovecot and `watcher import` of real mbox files and Maildir folders."""

from __future__ import annotations

import json
import mailbox as mailboxes
import re
import sqlite3
from datetime import UTC, date, datetime, timedelta
from email import message_from_bytes, policy
from email.utils import format_datetime
from pathlib import Path
from typing import Any

from helpers import run, write_config

from watcher.backfill import backfill_account
from watcher.config import load_config
from watcher.demo import sample_messages
from watcher.pipeline import Engine
from watcher.sandbox import HttpSink, Mailbox

REPO = Path(__file__).resolve().parent.parent
CLASSIFY_MAIL = REPO / "tests" / "mail" / "classify"
DEMO_NOTICE_IDS = {"<demo-0001.notice@amazon.com>", "<demo-0002.notice@amazon.com>",
                   "<demo-0003.alert@amazon-seller-alerts.example>"}
NO_SERVER = Mailbox(username="u", password="p", host="127.0.0.1", port=1)  # imports need no server
_DATE_LINE = re.compile(rb"^Date: [^\r\n]*", re.MULTILINE)
_MESSAGE_ID_LINE = re.compile(rb"^Message-ID: [^\r\n]*\r\n", re.MULTILINE | re.IGNORECASE)


def redated(content: bytes, when: datetime) -> bytes:
    return _DATE_LINE.sub(b"Date: " + format_datetime(when).encode(), content, count=1)


def old_mail(count: int, days_ago: int = 200) -> tuple[list[bytes], dict[str, tuple[str, str] | None]]:
    """Return ``count`` labelled messages from tests/mail/classify, dated ``days_ago`` days back, and
    their Message-ID → (platform, kind) (None for mail that is no notice)."""
    labels = json.loads((CLASSIFY_MAIL / "expected.json").read_text())
    when = datetime.now(UTC) - timedelta(days=days_ago)
    messages: list[bytes] = []
    expected: dict[str, tuple[str, str] | None] = {}
    for label in sorted(labels, key=lambda item: item["file"]):
        content = (CLASSIFY_MAIL / label["file"]).read_bytes()
        message_id = str(message_from_bytes(content, policy=policy.default)["Message-ID"]).strip()
        if message_id in expected:  # a few variants share a Message-ID: they would be one message here
            continue
        if len(messages) == count:
            break
        messages.append(redated(content, when))
        expected[message_id] = (label["platform"], label["kind"]) if label["relevant"] else None
    return messages, expected


def notices(expected: dict[str, tuple[str, str] | None]) -> dict[str, tuple[str, str]]:
    return {key: value for key, value in expected.items() if value is not None}


def query(config: Path, sql: str, *values: Any) -> list[tuple[Any, ...]]:
    with sqlite3.connect(config.parent / "events.db") as connection:
        return connection.execute(sql, values).fetchall()


def event_kinds(config: Path, account: str | None = None) -> dict[str, tuple[str, str]]:
    rows = query(config, "SELECT message_id, platform, kind FROM events WHERE account = coalesce(?, account)", account)
    return {row[0]: (row[1], row[2]) for row in rows}


def short_lookback(config: Path, days: int = 7) -> Path:
    config.write_text(config.read_text().replace("lookback_days = 3650", f"lookback_days = {days}"))
    return config


# --- backfill over IMAP ------------------------------------------------------------------------------


def test_backfill_finds_old_mail_the_live_check_never_looked_at_and_leaves_the_cursor_alone(
        mailbox: Mailbox, http_sink: HttpSink, tmp_path: Path) -> None:
    old, expected = old_mail(8)
    mailbox.append_many(old)
    mailbox.append_many(sample_messages(datetime.now(UTC)))
    config = short_lookback(write_config(tmp_path, {"us-store": mailbox}, {"hook": http_sink.url()}))
    assert run(config, "check").exit_code == 0
    assert set(event_kinds(config)) == DEMO_NOTICE_IDS  # the old mail lies beyond lookback_days
    cursor = query(config, "SELECT * FROM cursors")
    since = (date.today() - timedelta(days=300)).isoformat()

    result = run(config, "backfill", "--since", since, "--no-notify")

    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[2].split() == ["us-store", "INBOX", "13", "8", str(len(notices(expected))), "done"]
    found = event_kinds(config)
    assert {key: found[key] for key in found if key not in DEMO_NOTICE_IDS} == notices(expected)
    assert query(config, "SELECT * FROM cursors") == cursor
    assert query(config, "SELECT count(*) FROM deliveries") == [(3,)]  # the live check's, none for the backfill
    assert "deliveries" not in result.output


def test_second_backfill_adds_nothing(mailbox: Mailbox, tmp_path: Path) -> None:
    old, expected = old_mail(6)
    mailbox.append_many(old)
    config = short_lookback(write_config(tmp_path, {"us-store": mailbox}, {}))
    since = (date.today() - timedelta(days=300)).isoformat()
    assert run(config, "backfill", "--since", since).exit_code == 0
    events = query(config, "SELECT id, message_key FROM events ORDER BY id")
    assert len(events) == len(notices(expected))

    again = run(config, "backfill", "--since", since)

    assert again.exit_code == 0, again.output
    assert again.stdout.splitlines()[2].split() == ["us-store", "INBOX", "6", "0", "0", "done"]
    assert query(config, "SELECT id, message_key FROM events ORDER BY id") == events
    assert query(config, "SELECT count(*) FROM cursors") == [(0,)]  # a backfill never creates the live cursor


def test_backfill_over_mail_the_live_watcher_already_recorded_adds_nothing(mailbox: Mailbox, tmp_path: Path) -> None:
    mailbox.append_many(sample_messages(datetime.now(UTC)))
    config = write_config(tmp_path, {"us-store": mailbox}, {})
    assert run(config, "check").exit_code == 0

    result = run(config, "backfill")  # default: each account's lookback_days

    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[2].split() == ["us-store", "INBOX", "5", "0", "0", "done"]
    assert set(event_kinds(config)) == DEMO_NOTICE_IDS


def test_interrupted_backfill_continues_where_it_stopped_without_duplicates(mailbox: Mailbox, tmp_path: Path) -> None:
    old, expected = old_mail(12)
    uids = mailbox.append_many(old)
    config = short_lookback(write_config(tmp_path, {"us-store": mailbox}, {}))
    engine = Engine(load_config(config))
    since = date.today() - timedelta(days=300)
    batches = iter(range(3))

    stopped = backfill_account(engine, engine.config.accounts[0], since, notify=False, batch_size=3,
                               should_stop=lambda: next(batches, 2) >= 2)

    assert [(r.folder, r.scanned, r.finished) for r in stopped] == [("INBOX", 6, False)]
    assert query(config, "SELECT account, folder, since, last_uid, scanned FROM backfill_progress") == [
        ("us-store", "INBOX", since.isoformat(), uids[5], 6)]
    first_half = event_kinds(config)
    assert first_half == {key: value for key, value in notices(expected).items()
                          if key in list(expected)[:6]}

    resumed = run(config, "backfill", "--since", since.isoformat())

    assert resumed.exit_code == 0, resumed.output
    row = resumed.stdout.splitlines()[2].split()
    assert (row[2], row[4], row[5]) == ("12", str(len(notices(expected)) - len(first_half)), "done")
    assert event_kinds(config) == notices(expected)
    assert query(config, "SELECT count(*), count(DISTINCT message_key) FROM events") == [(len(notices(expected)),) * 2]
    assert query(config, "SELECT last_uid, scanned FROM backfill_progress") == [(uids[-1], 12)]
    assert query(config, "SELECT count(*) FROM cursors") == [(0,)]


def test_backfill_notifies_matching_channels_by_default(mailbox: Mailbox, http_sink: HttpSink, tmp_path: Path) -> None:
    old, expected = old_mail(6)
    mailbox.append_many(old)
    config = short_lookback(write_config(tmp_path, {"us-store": mailbox}, {"hook": http_sink.url()},
                                         extra="[delivery]\nburst_threshold = 0\n"))  # a request per notice

    result = run(config, "backfill", "--since", "300d")

    assert result.exit_code == 0, result.output
    count = len(notices(expected))
    assert f"deliveries: {count} sent, 0 to retry, 0 failed" in result.output
    assert len(http_sink.wait_for(count)) == count


def test_backfill_of_an_unknown_account_is_one_error_line(mailbox: Mailbox, tmp_path: Path) -> None:
    config = write_config(tmp_path, {"us-store": mailbox}, {})
    result = run(config, "backfill", "--account", "nope")
    assert (result.exit_code, result.output.strip()) == (1, f"Error: no account named 'nope' in {config}")


# --- import of mbox files and Maildir folders -----------------------------------------------------


def demo_mail() -> list[bytes]:
    return [path.read_bytes() for path in sorted((REPO / "watcher" / "demo").glob("*.eml"))]


def without_message_id(content: bytes) -> bytes:
    return _MESSAGE_ID_LINE.sub(b"", content, count=1)


def write_mbox(path: Path, messages: list[bytes]) -> Path:
    box = mailboxes.mbox(path)
    for content in messages:
        box.add(content)
    box.close()
    return path


def test_import_of_an_mbox_records_each_notice_once_without_notifying(http_sink: HttpSink, tmp_path: Path) -> None:
    mail = demo_mail()
    anonymous = without_message_id(mail[0])  # keyed by the hash of its bytes
    path = write_mbox(tmp_path / "takeout.mbox", [*mail, anonymous])
    config = write_config(tmp_path, {"us-store": NO_SERVER}, {"hook": http_sink.url()})

    result = run(config, "import", str(path))

    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[2].split() == ["import", "takeout.mbox", "6", "5", "4", "done"]
    rows = query(config, "SELECT account, store, folder, message_key, kind FROM events ORDER BY uid")
    assert [(account, store, folder) for account, store, folder, _, _ in rows] == [("import", "import", "takeout.mbox")] * 4
    assert [key for _, _, _, key, _ in rows][:3] == sorted(DEMO_NOTICE_IDS)
    assert rows[3][3].startswith("sha256:") and rows[3][4] == "account_deactivated"
    assert query(config, "SELECT count(*) FROM deliveries") == [(0,)]
    assert query(config, "SELECT count(*) FROM cursors") == [(0,)]

    again = run(config, "import", str(path))

    assert again.stdout.splitlines()[2].split() == ["import", "takeout.mbox", "6", "0", "0", "done"]
    assert query(config, "SELECT count(*) FROM events") == [(4,)]


def test_import_of_a_maildir_records_an_unreadable_message_as_malformed_and_carries_on(tmp_path: Path) -> None:
    folder = tmp_path / "Archive"
    box = mailboxes.Maildir(folder)
    for content in demo_mail():
        box.add(content)
    (folder / "cur" / "1700000000.M1P1.gone:2,S").symlink_to(tmp_path / "missing.eml")
    config = write_config(tmp_path, {"us-store": NO_SERVER}, {})

    result = run(config, "import", str(folder), "--account", "eu-store")

    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[2].split() == ["eu-store", "Archive", "6", "5", "3", "done"]
    assert set(event_kinds(config, "eu-store")) == DEMO_NOTICE_IDS
    assert query(config, "SELECT outcome, defects FROM processed WHERE outcome = 'malformed'") == [
        ("malformed", "read error: FileNotFoundError")]
    assert run(config, "import", str(folder), "--account", "eu-store").stdout.splitlines()[2].split()[3:5] == ["0", "0"]
    assert query(config, "SELECT count(*) FROM events") == [(3,)]


def test_import_after_the_live_watcher_saw_the_same_mail_adds_nothing(mailbox: Mailbox, tmp_path: Path) -> None:
    mail = [*sample_messages(datetime.now(UTC)), without_message_id(redated(demo_mail()[1], datetime.now(UTC)))]
    mailbox.append_many(mail)
    config = write_config(tmp_path, {"us-store": mailbox}, {})
    assert run(config, "check").exit_code == 0
    assert query(config, "SELECT count(*) FROM events") == [(4,)]
    # An mbox stores LF line ends; the message without a Message-ID must still get the server's key.
    path = write_mbox(tmp_path / "all-mail.mbox", [content.replace(b"\r\n", b"\n") for content in mail])

    result = run(config, "import", str(path), "--account", "us-store")

    assert result.stdout.splitlines()[2].split() == ["us-store", "all-mail.mbox", "6", "0", "0", "done"]
    assert query(config, "SELECT count(*) FROM events") == [(4,)]


def test_import_with_notify_delivers_to_matching_channels(http_sink: HttpSink, tmp_path: Path) -> None:
    path = write_mbox(tmp_path / "inbox.mbox", demo_mail())
    config = write_config(tmp_path, {"us-store": NO_SERVER}, {"hook": http_sink.url()})

    result = run(config, "import", str(path), "--notify")

    assert result.exit_code == 0, result.output
    assert "deliveries: 3 sent, 0 to retry, 0 failed" in result.output
    assert len(http_sink.wait_for(3)) == 3


def test_import_of_a_file_that_is_not_an_mbox_is_one_error_line(tmp_path: Path) -> None:
    config = write_config(tmp_path, {"us-store": NO_SERVER}, {})
    notice = REPO / "watcher" / "demo" / "01-deactivated.eml"
    result = run(config, "import", str(notice))
    assert (result.exit_code, result.output.strip()) == (
        1, f"Error: {notice}: not an mbox file (it does not start with a 'From ' line)")


def test_import_of_the_corpus_records_every_labelled_notice(corpus_dir: Path, tmp_path: Path) -> None:
    labels = json.loads((corpus_dir / "labels.json").read_text())
    contents = [(corpus_dir / label["file"]).read_bytes() for label in labels]
    expected = {str(message_from_bytes(content, policy=policy.default)["Message-ID"]).strip():
                (label["platform"], label["kind"]) for content, label in zip(contents, labels, strict=True)
                if label["relevant"]}
    path = write_mbox(tmp_path / "corpus.mbox", contents)
    config = write_config(tmp_path, {"us-store": NO_SERVER}, {})

    result = run(config, "import", str(path))

    assert result.exit_code == 0, result.output
    assert event_kinds(config) == expected
    assert run(config, "import", str(path)).stdout.splitlines()[2].split()[3:5] == ["0", "0"]
