"""`watcher doctor`: every check against a real Dovecot, a real HTTP receiver, closed ports and SQLite files."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import apprise
import pytest
from helpers import run, write_config

from watcher.doctor import ClockReference, Endpoint, check_clock, check_database, greeting_time, service_endpoint
from watcher.sandbox import HttpSink, Mailbox, free_port
from watcher.store import SCHEMA_VERSION, Store

HELLO = b"From: friend@example.test\r\nTo: me@example.test\r\nSubject: hello\r\n\r\nJust saying hello.\r\n"


def seed_fresh_message(mailbox: Mailbox, folder: str = "INBOX", age: timedelta = timedelta(0)) -> None:
    """Append a message whose INTERNALDATE is ``age`` ago (negative: in the future)."""
    mailbox.append(HELLO, folder, internal_date=datetime.now(UTC) - age)


def use_credential(config: Path, account: str, credentials: Path, content: str | None) -> None:
    """Switch ``account`` from password_file to password_credential; write the credential when given."""
    config.write_text(config.read_text().replace(f'password_file = "{account}.pw"',
                                                 f'password_credential = "{account}"'))
    credentials.mkdir(exist_ok=True)
    if content is not None:
        (credentials / account).write_text(content)


def test_a_working_setup_passes_every_check_and_exits_0(tmp_path: Path, mailbox: Mailbox, http_sink: HttpSink,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    seed_fresh_message(mailbox)
    config = write_config(tmp_path, {"shop": mailbox}, {"ops": http_sink.url()})
    credentials = tmp_path / "credentials"
    use_credential(config, "shop", credentials, mailbox.password)
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials))
    assert run(config, "check").exit_code == 0

    result = run(config, "doctor")

    database = config.parent.resolve() / "events.db"
    assert result.output.splitlines() == [
        f"✓ config: {config} is valid: 1 account, 1 channel",
        f"✓ credentials: 1 credential readable in {credentials}",
        f"✓ database: {database} is writable, schema version {SCHEMA_VERSION} (current)",
        f"✓ account shop: logged in as {mailbox.username} on 127.0.0.1:{mailbox.port}; folder INBOX found",
        "✓ clock: agrees with the server within 5 min (shop/INBOX newest message)",
        f"✓ channel ops: 127.0.0.1:{http_sink.port} accepts connections",
    ]
    assert result.exit_code == 0
    assert http_sink.requests == []  # reachability is checked without sending anything


def test_send_test_delivers_one_notification_to_each_channel(tmp_path: Path, mailbox: Mailbox,
                                                            http_sink: HttpSink) -> None:
    seed_fresh_message(mailbox)
    config = write_config(tmp_path, {"shop": mailbox}, {"ops": http_sink.url("/hook")})

    result = run(config, "doctor", "--send-test")

    assert result.exit_code == 0, result.output
    assert "✓ channel ops: " in result.output and "test notification sent in" in result.output
    [request] = http_sink.wait_for(1)
    assert request.path == "/hook"
    assert request.body["title"] == "watcher doctor test notification"


def test_a_channel_on_a_closed_port_fails_with_the_fix(tmp_path: Path, mailbox: Mailbox) -> None:
    seed_fresh_message(mailbox)
    port = free_port()  # nothing listens there
    config = write_config(tmp_path, {"shop": mailbox}, {"dead": f"json://127.0.0.1:{port}/hook"})

    result = run(config, "doctor")

    assert result.exit_code == 1
    assert (f"✗ channel dead: cannot connect to 127.0.0.1:{port}: Connection refused — fix: check the host and "
            "port in the URL, and that this machine may reach it (firewall, proxy)") in result.output.splitlines()


def test_a_url_apprise_cannot_load_fails_and_is_not_printed(tmp_path: Path, mailbox: Mailbox) -> None:
    seed_fresh_message(mailbox)
    config = write_config(tmp_path, {"shop": mailbox}, {"odd": "nosuchservice://token-abcdef123/secretpath"})

    result = run(config, "doctor")

    assert result.exit_code == 1
    assert "✗ channel odd: Apprise cannot load its URL (unknown scheme or bad syntax) — fix: " in result.output
    assert "token-abcdef123" not in result.output and "secretpath" not in result.output


def test_a_failed_test_notification_fails_the_channel_without_showing_its_url(tmp_path: Path, mailbox: Mailbox,
                                                                             http_sink: HttpSink) -> None:
    seed_fresh_message(mailbox)
    http_sink.status_code = 500
    url = f"json://doctor:hunter2secret@127.0.0.1:{http_sink.port}/private-token-path"
    config = write_config(tmp_path, {"shop": mailbox}, {"ops": url})

    result = run(config, "doctor", "--send-test")

    assert result.exit_code == 1
    assert f"✗ channel ops: 127.0.0.1:{http_sink.port} accepts connections, but the test notification failed: " \
           "failure" in result.output
    for secret in ("hunter2secret", "private-token-path", mailbox.password):
        assert secret not in result.output


def test_a_missing_folder_is_named_with_the_folders_the_server_has(tmp_path: Path, mailbox: Mailbox) -> None:
    mailbox.create_folder("Archive")
    config = write_config(tmp_path, {"shop": mailbox}, {}, account_extra='folders = ["INBOX", "Notices"]')

    result = run(config, "doctor")

    assert result.exit_code == 1
    assert ("✗ account shop: folder 'Notices' does not exist; the server has Archive, INBOX — fix: set "
            "accounts.folders of shop to folders the server has") in result.output.splitlines()


def test_a_wrong_password_fails_the_account_without_printing_it(tmp_path: Path, mailbox: Mailbox) -> None:
    config = write_config(tmp_path, {"shop": mailbox}, {})
    (tmp_path / "shop.pw").write_text("not-the-password-42")

    result = run(config, "doctor")

    assert result.exit_code == 1
    line = next(line for line in result.output.splitlines() if line.startswith("✗ account shop: "))
    assert f"login refused for {mailbox.username}" in line
    assert line.endswith("— fix: check username and password for this account (and that IMAP access is enabled "
                         "for the mailbox)")
    assert "not-the-password-42" not in result.output


def test_an_unreadable_credential_fails_the_credentials_check(tmp_path: Path, mailbox: Mailbox,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    config = write_config(tmp_path, {"shop": mailbox}, {})
    credentials = tmp_path / "credentials"
    use_credential(config, "shop", credentials, None)
    (credentials / "shop").mkdir()  # a directory: unreadable as a file, even for root
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials))

    result = run(config, "doctor")

    assert result.exit_code == 1
    assert (f"✗ credentials: accounts[0].password_credential = 'shop': cannot read {credentials / 'shop'}: "
            "IsADirectoryError — fix: add LoadCredential=NAME:/etc/watcher/credentials/NAME to the unit for each, "
            f"with a non-empty file readable by root ($CREDENTIALS_DIRECTORY is {credentials})"
            ) in result.output.splitlines()


def test_a_credential_outside_systemd_says_to_use_load_credential_or_a_file(tmp_path: Path, mailbox: Mailbox,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    config = write_config(tmp_path, {"shop": mailbox}, {})
    use_credential(config, "shop", tmp_path / "credentials", mailbox.password)
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)

    result = run(config, "doctor")

    assert result.exit_code == 1
    assert ("✗ credentials: $CREDENTIALS_DIRECTORY is not set, but accounts[0].password_credential name systemd "
            "credentials — fix: run under systemd with LoadCredential= or use *_file") in result.output.splitlines()


def test_an_invalid_config_lists_every_problem_and_stops(tmp_path: Path) -> None:
    config = tmp_path / "watcher.toml"
    config.write_text('[[accounts]]\nname = "shop"\nhost = "127.0.0.1"\nport = "abc"\nsecurity = "none"\n'
                      'username = "u"\npassword_file = "missing.pw"\n')

    result = run(config, "doctor")

    fix = f"— fix: edit {config} (watcher config check lists the same problems)"
    assert result.output.splitlines() == [
        f"✗ config: {config}: accounts[0].password_file: file not found: {tmp_path.resolve() / 'missing.pw'} {fix}",
        f"✗ config: {config}: accounts[0].port: must be an integer, got 'abc' {fix}",
        "✓ credentials: the config names no *_credential",
    ]
    assert result.exit_code == 1


def test_a_message_from_the_future_shows_that_the_clock_is_behind(tmp_path: Path, mailbox: Mailbox) -> None:
    # Dovecot replaces an APPEND date more than about two hours ahead with its own time.
    seed_fresh_message(mailbox, age=-timedelta(minutes=90))
    config = write_config(tmp_path, {"shop": mailbox}, {})

    result = run(config, "doctor")

    assert result.exit_code == 1
    line = next(line for line in result.output.splitlines() if line.startswith("✗ clock: "))
    assert line.startswith("✗ clock: this machine's clock is at least 90 min behind the server's: the shop/INBOX "
                           "newest message was received at ")
    assert line.endswith("— fix: turn on time synchronisation (timedatectl set-ntp true) or set the clock")


def test_no_clock_reference_is_a_warning_not_a_failure(tmp_path: Path, mailbox: Mailbox) -> None:
    mailbox.append(HELLO, internal_date=datetime.now(UTC) - timedelta(days=10))
    config = write_config(tmp_path, {"shop": mailbox}, {})

    result = run(config, "doctor")

    assert result.exit_code == 0, result.output
    assert ("⚠ clock: not compared: no server states its time in its greeting and no message arrived in the last "
            "5 min (only shows that the clock is not behind)") in result.output.splitlines()


def test_a_greeting_that_states_the_time_is_read_as_utc() -> None:
    greeting = b"* OK [CAPABILITY IMAP4rev1] mail.example.test IMAP4rev1 2007f.404 at Thu, 4 Jan 2024 10:00:00 -0500 (EST)"
    assert greeting_time(greeting) == datetime(2024, 1, 4, 15, 0, tzinfo=UTC)
    assert greeting_time(b"* OK [CAPABILITY IMAP4rev1 ID IDLE] Dovecot ready.") is None


def test_a_greeting_ten_minutes_off_fails_the_clock_in_either_direction() -> None:
    server = datetime(2024, 1, 4, 15, 0, tzinfo=UTC)
    for offset, word in ((timedelta(minutes=10), "ahead of"), (-timedelta(minutes=10), "behind")):
        finding = check_clock([ClockReference("shop greeting", server, server + offset, exact=True)])
        assert (finding.status, finding.detail) == (
            "failed", f"this machine's clock is 10 min {word} the server's (shop greeting)")
    assert check_clock([ClockReference("shop greeting", server, server + timedelta(seconds=30), exact=True)]
                       ).status == "ok"


def test_an_old_schema_fails_with_how_to_migrate(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    with sqlite3.connect(path) as connection:
        connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION - 1}")

    finding = check_database(path)

    assert (finding.status, finding.detail, finding.fix) == (
        "failed", f"{path} is at schema version {SCHEMA_VERSION - 1}; this watcher uses {SCHEMA_VERSION}",
        "run `watcher check` once (it migrates the database when it opens it)")


def test_a_current_database_passes_and_keeps_nothing_of_the_probe_write(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    Store(path).close()

    finding = check_database(path)

    assert finding.status == "ok"
    with sqlite3.connect(path) as connection:
        tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master")}
    assert "watcher_doctor_probe" not in tables and "events" in tables


def test_a_database_path_that_is_a_folder_fails(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    path.mkdir()

    finding = check_database(path)

    assert (finding.status, finding.detail) == ("failed", f"cannot open {path}: unable to open database file")


def test_a_database_not_created_yet_passes_when_its_folder_is_writable(tmp_path: Path) -> None:
    finding = check_database(tmp_path / "state" / "events.db")

    assert (finding.status, finding.detail) == (
        "ok", f"{tmp_path / 'state' / 'events.db'} does not exist yet; {tmp_path} is writable, the first check creates it")


@pytest.mark.parametrize(("url", "endpoint"), [
    ("json://127.0.0.1:8080/path", Endpoint("127.0.0.1", 8080)),
    ("jsons://hooks.example.test/path", Endpoint("hooks.example.test", 443)),
    ("mailtos://user:pass@smtp.example.test?to=owner@example.test", Endpoint("smtp.example.test", 587)),
    ("slack://T1abcdef/B1abcdef/abcdefghijklmnopqrstuvwx/#ops", Endpoint("hooks.slack.com", 443)),
    ("tgram://123456789:abcdefghijklmnopqrstuvwxyzabcdefghi/12345", Endpoint("api.telegram.org", 443)),
    ("syslog://", None),
])
def test_a_channel_endpoint_is_the_url_host_or_the_services_own(url: str, endpoint: Endpoint | None) -> None:
    assert service_endpoint(apprise.Apprise.instantiate(url)) == endpoint
