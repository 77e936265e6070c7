"""The whole pipeline against a real Dovecot: check → events in SQLite → notifications to real channels."""

from __future__ import annotations

import base64
import json
import sqlite3
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path

from helpers import run, write_config

from watcher.demo import sample_messages
from watcher.sandbox import HttpSink, LocalDovecot, Mailbox

NOTICES = 3  # the demo mail holds three notices, an order mail and a newsletter


def seed(mailbox: Mailbox, folder: str = "INBOX") -> list[bytes]:
    messages = sample_messages(datetime.now(UTC))
    for message in messages:
        mailbox.append(message, folder)
    return messages


def events(config: Path) -> list[dict[str, object]]:
    result = run(config, "events", "list", "--json")
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.output.splitlines()]


def test_check_records_one_event_per_notice_and_notifies_every_channel(
        mailbox: Mailbox, http_sink: HttpSink, smtp_sink, tmp_path: Path) -> None:
    seed(mailbox)
    config = write_config(tmp_path, {"us-store": mailbox}, {"hook": http_sink.url(), "mail": smtp_sink.url()})
    result = run(config, "check")
    assert result.exit_code == 0, result.output
    assert "deliveries: 6 sent, 0 to retry, 0 failed" in result.output
    found = events(config)
    assert sorted((e["kind"], e["authenticity"]) for e in found) == [
        ("account_deactivated", "verified"), ("deactivation_pending", "verified"),
        ("security_lock", "suspected_phishing")]
    posts = http_sink.wait_for(NOTICES)
    titles = sorted(request.body["title"] for request in posts)
    assert "[CRITICAL] Amazon: account deactivated — us-store" in titles
    deactivated = next(r.body["message"] for r in posts if r.body["title"].startswith("[CRITICAL] Amazon: account deactivated"))
    assert "related to another selling account" in deactivated
    assert "Account Health" in deactivated  # the next steps from the playbook
    assert "watcher events show" in deactivated
    phishing = next(r.body["message"] for r in posts if r.body["title"].startswith("[PHISHING]"))
    assert "login-verify" not in phishing.replace("\\", "").replace("[.]", ".") or "hxxps" in phishing
    mails = smtp_sink.wait_for(NOTICES)
    assert sorted(str(mail["Subject"]) for mail in mails) == titles


def test_second_check_records_no_duplicate_events_or_notifications(mailbox: Mailbox, http_sink: HttpSink, tmp_path: Path) -> None:
    seed(mailbox)
    config = write_config(tmp_path, {"us-store": mailbox}, {"hook": http_sink.url()})
    assert run(config, "check").exit_code == 0
    second = run(config, "check")
    assert second.exit_code == 0
    assert "deliveries: 0 sent" in second.output
    assert len(events(config)) == NOTICES
    assert len(http_sink.requests) == NOTICES


def test_check_never_changes_the_mailbox(mailbox: Mailbox, tmp_path: Path) -> None:
    seed(mailbox)
    config = write_config(tmp_path, {"us-store": mailbox}, {})
    assert run(config, "check").exit_code == 0
    with mailbox.connect() as client:
        client.select_folder("INBOX")
        flags = client.get_flags(client.search("ALL"))
    assert len(flags) == 5
    assert all(b"\\Seen" not in value for value in flags.values())


def test_only_new_mail_is_read_on_the_next_check(mailbox: Mailbox, http_sink: HttpSink, tmp_path: Path) -> None:
    messages = seed(mailbox)
    config = write_config(tmp_path, {"us-store": mailbox}, {"hook": http_sink.url()})
    run(config, "check")
    mailbox.append(messages[0].replace(b"<demo-0001.notice@amazon.com>", b"<demo-0099.notice@amazon.com>"))
    result = run(config, "check")
    row = next(line for line in result.output.splitlines() if line.startswith("us-store"))
    assert row.split()[1:5] == ["ok", "1", "1", "1"]  # status, new, fetched, events
    assert len(events(config)) == NOTICES + 1


def test_the_same_notice_in_two_folders_is_one_event(mailbox: Mailbox, tmp_path: Path) -> None:
    mailbox.create_folder("Archive")
    seed(mailbox)
    seed(mailbox, "Archive")
    config = write_config(tmp_path, {"us-store": mailbox}, {}, account_extra='folders = ["INBOX", "Archive"]')
    assert run(config, "check").exit_code == 0
    assert len(events(config)) == NOTICES


def test_uidvalidity_change_rescans_without_duplicating_events(mailbox: Mailbox, tmp_path: Path) -> None:
    mailbox.create_folder("Notices")
    messages = seed(mailbox, "Notices")
    config = write_config(tmp_path, {"us-store": mailbox}, {}, account_extra='folders = ["Notices"]')
    run(config, "check")
    mailbox.delete_folder("Notices")
    mailbox.create_folder("Notices")  # a new folder of the same name gets a new UIDVALIDITY
    for message in messages:
        mailbox.append(message, "Notices")
    mailbox.append(messages[0].replace(b"<demo-0001.notice@amazon.com>", b"<demo-0100.notice@amazon.com>"), "Notices")
    assert run(config, "check").exit_code == 0
    assert len(events(config)) == NOTICES + 1


def test_ordinary_mail_is_screened_out_without_fetching_its_body(mailbox: Mailbox, tmp_path: Path) -> None:
    seed(mailbox)
    config = write_config(tmp_path, {"us-store": mailbox}, {})
    row = next(line for line in run(config, "check").output.splitlines() if line.startswith("us-store"))
    new, fetched = (int(value) for value in row.split()[2:4])
    assert (new, fetched) == (5, 4)  # the newsletter's headers name no platform; the order mail is Amazon's


def test_a_failing_account_makes_check_exit_1_while_the_others_are_processed(
        dovecot: LocalDovecot, mailbox: Mailbox, tmp_path: Path) -> None:
    seed(mailbox)
    broken = Mailbox(username=mailbox.username, password="wrong-password-123", host=mailbox.host, port=mailbox.port)
    config = write_config(tmp_path, {"broken": broken, "good": mailbox}, {})
    result = run(config, "check")
    assert result.exit_code == 1
    assert "login refused" in result.output
    assert "wrong-password-123" not in result.output
    assert len(events(config)) == NOTICES
    database = sqlite3.connect(tmp_path / "events.db")
    dump = "\n".join(database.iterdump())
    assert "wrong-password-123" not in dump and mailbox.password not in dump


def test_an_unreachable_server_is_one_clear_line(tmp_path: Path) -> None:
    nobody = Mailbox(username="u", password="p", host="127.0.0.1", port=1)
    config = write_config(tmp_path, {"gone": nobody}, {})
    result = run(config, "check")
    assert result.exit_code == 1
    assert "gone: connect to 127.0.0.1:1 failed" in result.output
    assert "Traceback" not in result.output


def test_a_malformed_notice_is_recorded_and_the_check_carries_on(mailbox: Mailbox, tmp_path: Path) -> None:
    mailbox.append(b"From: Amazon <seller-notification@amazon.com>\r\nSubject: Your Amazon.com Selling Account\r\n"
                   b"Content-Type: multipart/mixed; boundary=\"x\"\r\nMessage-ID: <broken-1@amazon.com>\r\n\r\n"
                   b"--x\r\nContent-Type: text/plain; charset=no-such-charset\r\nContent-Transfer-Encoding: base64\r\n\r\n"
                   b"!!!not base64\x00\xff\r\n--x")
    seed(mailbox)
    config = write_config(tmp_path, {"us-store": mailbox}, {})
    assert run(config, "check").exit_code == 0
    assert len(events(config)) == NOTICES
    processed = sqlite3.connect(tmp_path / "events.db").execute(
        "SELECT outcome FROM processed WHERE message_id = '<broken-1@amazon.com>'").fetchall()
    assert len(processed) == 1


def test_events_show_prints_the_notification_and_its_deliveries(mailbox: Mailbox, http_sink: HttpSink, tmp_path: Path) -> None:
    seed(mailbox)
    config = write_config(tmp_path, {"us-store": mailbox}, {"hook": http_sink.url()})
    run(config, "check")
    first = min(event["id"] for event in events(config))
    shown = run(config, "events", "show", str(first))
    assert shown.exit_code == 0
    assert shown.output.startswith("[CRITICAL] Amazon: account deactivated — us-store\n")
    assert "hook" in shown.output and "sent" in shown.output
    as_json = json.loads(run(config, "events", "show", str(first), "--json").output)
    assert as_json["guidance"]["steps"]
    assert as_json["deliveries"][0]["status"] == "sent"
    missing = run(config, "events", "show", "999")
    assert (missing.exit_code, missing.output) == (1, "Error: no event with id 999\n")


def test_a_self_signed_server_is_refused_unless_its_ca_file_is_given(tmp_path: Path) -> None:
    with LocalDovecot(tls=True) as server:
        mailbox = server.add_user()
        seed(mailbox)
        secure = Mailbox(username=mailbox.username, password=mailbox.password, host="127.0.0.1", port=server.tls_port)
        config = write_config(tmp_path, {"tls": secure}, {})
        config.write_text(config.read_text().replace('security = "none"', 'security = "ssl"'))
        refused = run(config, "check")
        assert refused.exit_code == 1
        assert "TLS certificate of 127.0.0.1 not trusted" in refused.output
        config.write_text(config.read_text().replace('security = "ssl"', f'security = "ssl"\nca_file = "{server.cert_file}"'))
        trusted = run(config, "check")
        assert trusted.exit_code == 0, trusted.output
        assert len(events(config)) == NOTICES


def test_a_message_over_the_size_cap_is_read_up_to_the_cap_not_skipped(mailbox: Mailbox, tmp_path: Path) -> None:
    notice = sample_messages(datetime.now(UTC))[0]
    padding = b"\r\n" + b"Filler line for a very large notice.\r\n" * 60_000  # about 2.3 MB after the text
    mailbox.append(notice + padding)
    config = write_config(tmp_path, {"us-store": mailbox}, {}, account_extra="max_message_bytes = 100000")
    assert run(config, "check").exit_code == 0
    (event,) = events(config)
    assert event["kind"] == "account_deactivated"
    defects = sqlite3.connect(tmp_path / "events.db").execute("SELECT defects FROM processed").fetchone()[0]
    assert "truncated at max_message_bytes" in defects


def test_the_watcher_identifies_itself_with_imap_id(dovecot: LocalDovecot, mailbox: Mailbox, tmp_path: Path) -> None:
    config = write_config(tmp_path, {"us-store": mailbox}, {})
    assert run(config, "check").exit_code == 0
    assert 'ID sent: name=watcher, version=' in dovecot.log_text()


def test_secrets_never_reach_the_logs_even_at_debug_level(mailbox: Mailbox, http_sink: HttpSink, tmp_path: Path) -> None:
    import subprocess
    import sys

    seed(mailbox)
    token = "hookTokenSecret9876543"
    config = write_config(tmp_path, {"us-store": mailbox}, {"hook": http_sink.url(f"/hooks/{token}")})
    result = subprocess.run([sys.executable, "-m", "watcher", "-vv", "--config", str(config), "check"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert len(http_sink.wait_for(NOTICES)) == NOTICES
    assert "DEBUG" in result.stderr  # the debug log really ran
    for secret in (mailbox.password, token):
        assert secret not in result.stderr and secret not in result.stdout
    dump = "\n".join(sqlite3.connect(tmp_path / "events.db").iterdump())
    assert token not in dump and mailbox.password not in dump


def forward(inner: bytes, number: int, image_first: bool = True) -> bytes:
    """A forward inside the seller's organisation, with a photo attached before the forwarded message."""
    image = (b"--outer\r\nContent-Type: image/jpeg; name=photo.jpg\r\nContent-Transfer-Encoding: base64\r\n\r\n"
             + base64.encodebytes(bytes(range(256)) * 2000) + b"\r\n")
    forwarded = b"--outer\r\nContent-Type: message/rfc822\r\n\r\n" + inner + b"\r\n"
    parts = (image + forwarded) if image_first else (forwarded + image)
    return (b"From: Wei Zhang <wei@lotus-home.example>\r\nTo: ops@lotus-home.example\r\n"
            b"Subject: Fwd: please look at this today\r\nDate: " + format_datetime(datetime.now(UTC)).encode() + b"\r\n"
            b"Message-ID: <fwd-" + str(number).encode() + b"@lotus-home.example>\r\nMIME-Version: 1.0\r\n"
            b"Content-Type: multipart/mixed; boundary=outer\r\n\r\n"
            b"--outer\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nSee the attached mail.\r\n"
            + parts + b"--outer--\r\n")


def test_a_forward_is_classified_when_its_text_names_a_platform_and_skipped_otherwise(
        mailbox: Mailbox, tmp_path: Path) -> None:
    notice = sample_messages(datetime.now(UTC))[0]
    html_inner = (b"From: Amazon <seller-notification@amazon.com>\r\nSubject: =?utf-8?b?" +
                  base64.b64encode("账户通知".encode()) + b"?=\r\nMIME-Version: 1.0\r\n"
                  b"Content-Type: multipart/alternative; boundary=inner\r\n\r\n--inner\r\n"
                  b"Content-Type: text/html; charset=gbk\r\nContent-Transfer-Encoding: base64\r\n\r\n"
                  + base64.encodebytes("<p>您的亚马逊卖家账户已被停用。</p>".encode("gbk")) + b"\r\n--inner--\r\n")
    holiday = (b"From: Anna <anna@lotus-home.example>\r\nSubject: our trip\r\nContent-Type: text/plain\r\n\r\n"
               b"Photos from the trip, see you Monday.\r\n")
    mailbox.append(forward(notice, 1))
    mailbox.append(forward(html_inner, 2, image_first=False))
    mailbox.append(forward(holiday, 3))
    with mailbox.connect() as client:
        client.select_folder("INBOX", readonly=True)
        uids = client.search("ALL")
    config = write_config(tmp_path, {"us-store": mailbox}, {})
    from watcher.config import load_config
    from watcher.imap import Mailbox as ImapMailbox

    with ImapMailbox(load_config(config).accounts[0]) as imap:
        imap.select("INBOX")
        texts = imap.texts(uids)
    assert any("related to another selling account" in text for text in texts[uids[0]])
    assert any("亚马逊卖家账户已被停用" in text for text in texts[uids[1]])
    assert [text.strip() for text in texts[uids[2]]][::2] == ["See the attached mail.", "Photos from the trip, see you Monday."]
    assert "Subject: our trip" in texts[uids[2]][1]  # the forwarded header, not the photo
    row = next(line for line in run(config, "check").output.splitlines() if line.startswith("us-store"))
    assert row.split()[1:5] == ["ok", "3", "2", "2"]  # new, fetched in full, events: the holiday forward never fetched
    assert sorted(event["kind"] for event in events(config)) == ["account_deactivated", "account_deactivated"]
