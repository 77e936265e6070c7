"""The sandbox servers behave like the real thing the other tests rely on."""

from __future__ import annotations

import urllib.request
from datetime import date, datetime, timezone
from email.message import EmailMessage
from email.utils import format_datetime

import apprise
import pytest
from imapclient import IMAPClient

from watcher.sandbox import HttpSink, LocalDovecot, Mailbox, SandboxError

from conftest import SmtpSink


def make_message(subject: str, sent: datetime) -> bytes:
    message = EmailMessage()
    message["From"] = "seller-performance@amazon.com"
    message["To"] = "shop@example.test"
    message["Subject"] = subject
    message["Date"] = format_datetime(sent)
    message.set_content(f"Body of {subject}\n")
    return message.as_bytes()


def test_appended_message_reads_back_unchanged_over_imap(mailbox: Mailbox) -> None:
    content = make_message("Your account is under review", datetime(2024, 3, 5, 9, tzinfo=timezone.utc))

    uid = mailbox.append(content)

    with IMAPClient(mailbox.host, port=mailbox.port, ssl=False, timeout=10) as client:
        client.login(mailbox.username, mailbox.password)
        client.select_folder("INBOX", readonly=True)
        fetched = client.fetch([uid], ["BODY.PEEK[]", "INTERNALDATE"])
    assert fetched[uid][b"BODY[]"].replace(b"\r\n", b"\n") == content.replace(b"\r\n", b"\n")
    assert fetched[uid][b"INTERNALDATE"].date() == date(2024, 3, 5)


def test_internal_date_follows_the_date_header_so_since_searches_work(mailbox: Mailbox) -> None:
    old = mailbox.append(make_message("old", datetime(2023, 1, 2, tzinfo=timezone.utc)))
    new = mailbox.append(make_message("new", datetime(2024, 6, 1, tzinfo=timezone.utc)))

    with mailbox.connect() as client:
        client.select_folder("INBOX", readonly=True)
        assert client.search(["SINCE", date(2024, 1, 1)]) == [new]
        assert client.search(["BEFORE", date(2024, 1, 1)]) == [old]


def test_explicit_internal_date_overrides_the_date_header(mailbox: Mailbox) -> None:
    content = make_message("dated", datetime(2020, 1, 1, tzinfo=timezone.utc))

    uid = mailbox.append(content, internal_date=datetime(2024, 2, 29, 12, tzinfo=timezone.utc))

    with mailbox.connect() as client:
        client.select_folder("INBOX", readonly=True)
        assert client.fetch([uid], ["INTERNALDATE"])[uid][b"INTERNALDATE"].date() == date(2024, 2, 29)


def test_append_many_returns_consecutive_uids_in_a_new_folder(mailbox: Mailbox) -> None:
    mailbox.create_folder("Archive")
    messages = [
        make_message(f"notice {number}", datetime(2024, 1, 1 + number % 28, tzinfo=timezone.utc))
        for number in range(1200)
    ]

    uids = mailbox.append_many(messages, folder="Archive")

    assert uids == list(range(1, 1201))
    with mailbox.connect() as client:
        assert client.select_folder("Archive", readonly=True)[b"EXISTS"] == 1200


def test_deleted_folder_is_gone(mailbox: Mailbox) -> None:
    mailbox.create_folder("Scratch")
    mailbox.delete_folder("Scratch")

    with mailbox.connect() as client:
        assert not client.folder_exists("Scratch")


def test_flags_report_seen_only_after_a_client_sets_it(mailbox: Mailbox) -> None:
    uid = mailbox.append(make_message("flagged", datetime(2024, 1, 1, tzinfo=timezone.utc)))
    assert "\\Seen" not in mailbox.flags(uid)

    with mailbox.connect() as client:
        client.select_folder("INBOX")
        client.add_flags([uid], ["\\Seen"])

    assert "\\Seen" in mailbox.flags(uid)


def test_flags_of_a_missing_message_raise(mailbox: Mailbox) -> None:
    with pytest.raises(SandboxError, match="no message with UID 99"):
        mailbox.flags(99)


def test_each_added_user_is_a_separate_mailbox(dovecot: LocalDovecot) -> None:
    first, second = dovecot.add_user(), dovecot.add_user()
    first.append(make_message("only for first", datetime(2024, 1, 1, tzinfo=timezone.utc)))

    assert first.username != second.username
    with second.connect() as client:
        assert client.select_folder("INBOX", readonly=True)[b"EXISTS"] == 0


def test_wrong_password_is_refused(mailbox: Mailbox) -> None:
    with IMAPClient(mailbox.host, port=mailbox.port, ssl=False, timeout=10) as client:
        with pytest.raises(IMAPClient.Error):
            client.login(mailbox.username, "not-the-password")


def test_tls_instance_serves_imaps_with_its_self_signed_certificate() -> None:
    import ssl

    with LocalDovecot(tls=True) as server:
        mailbox = server.add_user()
        assert server.cert_file is not None
        context = ssl.create_default_context(cafile=str(server.cert_file))
        with IMAPClient(server.host, port=server.tls_port, ssl=True, ssl_context=context, timeout=10) as client:
            client.login(mailbox.username, mailbox.password)
            assert client.select_folder("INBOX")[b"EXISTS"] == 0


def test_stopped_dovecot_no_longer_accepts_connections() -> None:
    server = LocalDovecot()
    server.start()
    port = server.port
    server.stop()

    with pytest.raises(OSError):
        IMAPClient("127.0.0.1", port=port, ssl=False, timeout=2)


def test_apprise_json_notification_reaches_the_http_sink(http_sink: HttpSink) -> None:
    notifier = apprise.Apprise()
    assert notifier.add(http_sink.url("/hooks/watcher"))

    assert notifier.notify(title="Account deactivated", body="Appeal within 17 days")

    [request] = http_sink.wait_for(1, timeout=10)
    assert request.path == "/hooks/watcher"
    assert request.body["title"] == "Account deactivated"
    assert request.body["message"] == "Appeal within 17 days"


def test_http_sink_answers_with_the_status_code_it_is_given(http_sink: HttpSink) -> None:
    http_sink.status_code = 500
    notifier = apprise.Apprise()
    notifier.add(http_sink.url())

    assert not notifier.notify(title="t", body="b")
    assert len(http_sink.wait_for(1)) >= 1


def test_http_sink_records_non_json_bodies_as_raw_bytes(http_sink: HttpSink) -> None:
    request = urllib.request.Request(
        f"http://127.0.0.1:{http_sink.port}/plain", data=b"not json", method="POST"
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.status == 200

    [received] = http_sink.wait_for(1)
    assert (received.path, received.body, received.raw) == ("/plain", None, b"not json")


def test_http_sink_wait_for_raises_when_too_few_arrive(http_sink: HttpSink) -> None:
    with pytest.raises(SandboxError, match="0 of 1"):
        http_sink.wait_for(1, timeout=0.1)


def test_apprise_mailto_notification_reaches_the_smtp_sink(smtp_sink: SmtpSink) -> None:
    notifier = apprise.Apprise()
    assert notifier.add(smtp_sink.url(to="ops@example.test"))

    assert notifier.notify(title="Funds held", body="Disbursements paused")

    [message] = smtp_sink.wait_for(1, timeout=10)
    assert message["To"] == "ops@example.test"
    assert "watcher@example.test" in message["From"]
    assert message["Subject"] == "Funds held"
    assert "Disbursements paused" in message.get_body(("plain", "html")).get_content()
