"""`watcher run` with IMAP IDLE: push latency, outages, refused logins, and `watcher status`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from helpers import Watcher, run, write_config

from watcher.demo import sample_messages
from watcher.sandbox import HttpSink, LocalDovecot, Mailbox

SLOW_POLL = "[schedule]\npoll_seconds = 3600\n"  # only IDLE can notice new mail within these tests


@pytest.fixture
def start_watcher(tmp_path: Path) -> Iterator[object]:
    started: list[Watcher] = []

    def start(config: Path) -> Watcher:
        watcher = Watcher(config, tmp_path / f"watcher-{len(started)}.log")
        started.append(watcher)
        return watcher

    yield start
    for watcher in started:
        watcher.stop()


def test_new_mail_is_pushed_within_seconds_without_polling(mailbox: Mailbox, http_sink: HttpSink, tmp_path: Path,
                                                          start_watcher) -> None:  # type: ignore[no-untyped-def]
    config = write_config(tmp_path, {"us-store": mailbox}, {"hook": http_sink.url()}, extra=SLOW_POLL)
    watcher = start_watcher(config)
    watcher.wait_for_log("us-store/INBOX: IDLE")
    appended = time.monotonic()
    mailbox.append(sample_messages(datetime.now(UTC))[0])
    (post,) = http_sink.wait_for(1, timeout=10)
    assert post.body["title"] == "[CRITICAL] Amazon: account deactivated — us-store"
    assert post.arrived - appended < 3.0  # Dovecot itself batches IDLE wake-ups by ~0.5 s
    deadline = time.monotonic() + 5
    while True:  # the delivery is marked sent a moment after the POST arrives
        status = json.loads(run(config, "status", "--json").output)
        if status["channels"][0]["sent"] or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert status["folders"][0]["state"] == "idle"
    assert status["channels"] == [{"channel": "hook", "pending": 0, "sent": 1, "failed": 0}]
    assert watcher.stop() == 0


def test_mail_that_arrives_during_a_server_outage_is_processed_after_recovery(
        http_sink: HttpSink, tmp_path: Path, start_watcher) -> None:  # type: ignore[no-untyped-def]
    with LocalDovecot() as server:
        mailbox = server.add_user()
        config = write_config(tmp_path, {"us-store": mailbox}, {"hook": http_sink.url()}, extra=SLOW_POLL)
        watcher = start_watcher(config)
        watcher.wait_for_log("us-store/INBOX: IDLE")
        server.pause()
        watcher.wait_for_log("reconnecting in")
        status = json.loads(run(config, "status", "--json").output)
        assert status["folders"][0]["state"] == "backing_off"
        assert "IDLE connection lost" in status["folders"][0]["last_error"]
        server.resume()
        mailbox.append(sample_messages(datetime.now(UTC))[0])  # while the watcher is still waiting to reconnect
        (post,) = http_sink.wait_for(1, timeout=30)
        assert post.body["title"].startswith("[CRITICAL] Amazon: account deactivated")
        watcher.wait_for_log("us-store/INBOX: IDLE", count=2)
        assert watcher.stop() == 0


def test_a_refused_login_alerts_once_and_once_more_on_recovery(
        mailbox: Mailbox, http_sink: HttpSink, tmp_path: Path, start_watcher) -> None:  # type: ignore[no-untyped-def]
    wrong = Mailbox(username=mailbox.username, password="not-the-password-42", host=mailbox.host, port=mailbox.port)
    config = write_config(tmp_path, {"us-store": wrong}, {"hook": http_sink.url()}, extra=SLOW_POLL)
    first = start_watcher(config)
    (alert,) = http_sink.wait_for(1, timeout=15)
    assert alert.body["title"] == "[ACTION NEEDED] watcher cannot log in to us-store"
    assert "login refused" in alert.body["message"] and "not-the-password-42" not in alert.body["message"]
    first.wait_for_log("reconnecting in")
    status = json.loads(run(config, "status", "--json").output)
    assert status["folders"][0]["state"] == "auth_failed"
    assert first.stop() == 0
    second = start_watcher(config)  # a restart must not alert again
    second.wait_for_log("login refused")
    time.sleep(1)
    assert second.stop() == 0
    assert len(http_sink.requests) == 1
    config = write_config(tmp_path, {"us-store": mailbox}, {"hook": http_sink.url()}, extra=SLOW_POLL)
    third = start_watcher(config)
    recovered = http_sink.wait_for(2, timeout=15)[1]
    assert recovered.body["title"] == "[RECOVERED] watcher can log in to us-store again"
    third.wait_for_log("us-store/INBOX: IDLE")
    assert third.stop() == 0
    assert len(http_sink.requests) == 2


def test_status_lists_every_folder_before_the_first_check(tmp_path: Path) -> None:
    nobody = Mailbox(username="u", password="p", host="127.0.0.1", port=1)
    config = write_config(tmp_path, {"us-store": nobody}, {"hook": "json://127.0.0.1:1/x"})
    result = run(config, "status")
    assert result.exit_code == 0
    lines = result.output.splitlines()
    assert lines[2].split()[:4] == ["us-store", "INBOX", "never", "checked"]
    assert lines[-1].split() == ["hook", "0", "0", "0"]


def test_systemd_hears_ready_status_and_watchdog(mailbox: Mailbox, tmp_path: Path) -> None:
    import socket

    config = write_config(tmp_path, {"us-store": mailbox}, {}, extra=SLOW_POLL)
    address = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind(address)
        listener.settimeout(15)
        process = subprocess.Popen([sys.executable, "-m", "watcher", "--config", str(config), "run"],
                                   stderr=subprocess.DEVNULL,
                                   env={**os.environ, "NOTIFY_SOCKET": address, "WATCHDOG_USEC": "2000000"})
        try:
            messages: list[str] = []
            while not (any("READY=1" in m for m in messages) and sum("WATCHDOG=1" in m for m in messages) >= 2
                       and any("1 idle" in m for m in messages)):
                messages.append(listener.recv(4096).decode())
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=12)
        status = next(m for m in messages if "1 idle" in m)
        assert "STATUS=1 folders: 1 idle; 0 deliveries pending" in status
        assert process.returncode == 0


def test_sighup_reloads_the_config_keeping_unchanged_connections(dovecot: LocalDovecot, http_sink: HttpSink,
                                                                 tmp_path: Path, start_watcher) -> None:  # type: ignore[no-untyped-def]
    first, second = dovecot.add_user(), dovecot.add_user()
    config = write_config(tmp_path, {"us-store": first}, {"hook": http_sink.url()}, extra=SLOW_POLL)
    watcher = start_watcher(config)
    watcher.wait_for_log("us-store/INBOX: IDLE")
    with HttpSink() as second_sink:
        write_config(tmp_path, {"us-store": first, "eu-store": second},
                     {"hook": http_sink.url(), "eu-hook": second_sink.url()}, extra=SLOW_POLL)
        watcher.process.send_signal(signal.SIGHUP)
        watcher.wait_for_log("1 accounts kept, 1 started, 0 stopped; 2 channels")
        watcher.wait_for_log("eu-store/INBOX: IDLE")
        second.append(sample_messages(datetime.now(UTC))[0])
        assert len(second_sink.wait_for(1, timeout=10)) == 1
        first.append(sample_messages(datetime.now(UTC))[0].replace(b"demo-0001", b"demo-0101"))
        assert len(second_sink.wait_for(2, timeout=10)) == 2  # the new channel gets the old account's events too
        assert watcher.text().count("us-store/INBOX: IDLE") == 1  # its connection was kept
        config.write_text("[[accounts]]\nname = 3\n")
        watcher.process.send_signal(signal.SIGHUP)
        watcher.wait_for_log("reload refused, keeping the running configuration")
        assert "accounts[0].name: must be a string, got 3" in watcher.text()
        second.append(sample_messages(datetime.now(UTC))[0].replace(b"demo-0001", b"demo-0102"))
        assert len(second_sink.wait_for(3, timeout=10)) == 3
    assert watcher.stop() == 0
