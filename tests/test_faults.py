"""Server faults against real processes: an outage under `watcher check`, a watched folder that is deleted and
recreated under `watcher run`, and a server that hangs mid-response (through a local TCP proxy)."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from helpers import Watcher, run, write_config

from watcher.demo import sample_messages
from watcher.sandbox import HttpSink, LocalDovecot, Mailbox

TIMEOUT_SECONDS = 3


def set_timeout(config: Path, seconds: int) -> Path:
    """Replace the helper's timeout_seconds with ``seconds`` in the written config."""
    text = config.read_text()
    assert "timeout_seconds = 10" in text
    config.write_text(text.replace("timeout_seconds = 10", f"timeout_seconds = {seconds}"))
    return config


def notice(number: int) -> bytes:
    """The packaged deactivation notice, re-dated, with a Message-ID of its own."""
    message = sample_messages(datetime.now(UTC))[0]
    return message.replace(b"Message-ID: <", f"Message-ID: <fault-{number}.".encode(), 1)


def titles(sink: HttpSink) -> list[str]:
    return [request.body["title"] for request in sink.requests]


def status(config: Path) -> dict[str, dict[str, object]]:
    """`watcher status --json` folders, by folder name."""
    result = run(config, "status", "--json")
    assert result.exit_code == 0, result.output
    return {row["folder"]: row for row in json.loads(result.output)["folders"]}


def check_process(config: Path) -> tuple[subprocess.CompletedProcess[str], float]:
    """Run `watcher check` as its own process; return it and how long it took."""
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "watcher", "--config", str(config), "check"],
                          capture_output=True, text=True, timeout=60)
    return done, time.monotonic() - started


class HangingProxy:
    """A TCP proxy on 127.0.0.1 in front of an IMAP server that can stop passing the server's bytes on.

    ``hang()`` stops forwarding server→client at once, on every connection, new ones included (a server that
    accepts but never answers); ``hang_when_client_sends(token)`` does so the moment a client sends ``token``
    (mid-response: the command went out, its answer never comes). ``release()`` forwards again.
    """

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.2)
        self.port: int = self.listener.getsockname()[1]
        self.hung_at: float | None = None
        self.trigger: bytes | None = None
        self._flowing = threading.Event()
        self._flowing.set()
        self._closed = threading.Event()
        self._sockets: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, name="hanging-proxy", daemon=True)

    def __enter__(self) -> HangingProxy:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._closed.set()
        self._flowing.set()
        self._thread.join(timeout=5)
        self.listener.close()
        for sock in self._sockets:
            sock.close()

    def hang(self) -> None:
        if self._flowing.is_set():
            self.hung_at = time.monotonic()
            self._flowing.clear()

    def hang_when_client_sends(self, token: bytes) -> None:
        self.trigger = token

    def release(self) -> None:
        self.trigger = None
        self._flowing.set()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self.listener.accept()
            except TimeoutError:
                continue
            server = socket.create_connection(("127.0.0.1", self.upstream_port))
            self._sockets += [client, server]
            threading.Thread(target=self._pump, args=(client, server, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, True), daemon=True).start()

    def _pump(self, source: socket.socket, target: socket.socket, from_server: bool) -> None:
        try:
            while chunk := source.recv(65536):
                if not from_server and self.trigger is not None and self.trigger in chunk:
                    self.hang()
                while from_server and not self._flowing.wait(0.1):
                    if self._closed.is_set():
                        return
                target.sendall(chunk)
        except OSError:
            pass
        finally:
            for sock in (source, target):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


@pytest.fixture
def server() -> Iterator[LocalDovecot]:
    """A private Dovecot, so pausing or breaking it touches no other test."""
    with LocalDovecot() as dovecot:
        yield dovecot


@pytest.fixture
def watchers(tmp_path: Path) -> Iterator[list[Watcher]]:
    started: list[Watcher] = []
    yield started
    for watcher in started:
        watcher.stop()


def start(watchers: list[Watcher], config: Path) -> Watcher:
    watcher = Watcher(config, config.parent / f"watcher-{len(watchers)}.log")
    watchers.append(watcher)
    return watcher


# --- (a) the polling path through an outage ----------------------------------------------------------

def test_check_during_an_outage_exits_1_with_a_clear_line_and_a_later_check_takes_the_backlog(
        server: LocalDovecot, http_sink: HttpSink, tmp_path: Path) -> None:
    mailbox = server.add_user()
    config = write_config(tmp_path, {"us-store": mailbox}, {"hook": http_sink.url()}, extra="[delivery]\nburst_threshold = 0\n")  # a request per notice
    first, _ = check_process(config)
    assert first.returncode == 0, first.stderr
    for number in range(3):
        mailbox.append(notice(number))
    server.pause()
    try:
        failed, seconds = check_process(config)
    finally:
        server.resume()
    assert failed.returncode == 1
    assert seconds < 10
    row = next(line for line in failed.stdout.splitlines() if line.startswith("us-store"))
    assert row.split()[1] == "FAILED"
    assert row.endswith(f"us-store: connect to 127.0.0.1:{mailbox.port} failed: "
                        "ConnectionRefusedError: [Errno 111] Connection refused")
    assert "Traceback" not in failed.stderr
    recovered, _ = check_process(config)
    assert recovered.returncode == 0, recovered.stdout + recovered.stderr
    row = next(line for line in recovered.stdout.splitlines() if line.startswith("us-store"))
    assert row.split()[1:5] == ["ok", "3", "3", "3"]
    assert "deliveries: 3 sent, 0 to retry, 0 failed" in recovered.stdout
    assert len(http_sink.requests) == 3
    again, _ = check_process(config)
    assert again.returncode == 0 and len(http_sink.requests) == 3


# --- (b) a watched folder that disappears and comes back ----------------------------------------------

def test_a_deleted_folder_is_reported_while_others_keep_working_and_its_recreation_is_rescanned(
        server: LocalDovecot, http_sink: HttpSink, tmp_path: Path, watchers: list[Watcher]) -> None:
    mailbox = server.add_user()
    mailbox.create_folder("Notices")
    mailbox.append(notice(1), folder="Notices")
    config = write_config(tmp_path, {"us-store": mailbox}, {"hook": http_sink.url()},
                          extra="[schedule]\npoll_seconds = 2\n", account_extra='folders = ["INBOX", "Notices"]')
    watcher = start(watchers, config)
    watcher.wait_for_log("us-store/Notices: IDLE")
    watcher.wait_for_log("us-store/INBOX: IDLE")
    http_sink.wait_for(1)

    mailbox.delete_folder("Notices")
    missing = ("us-store: cannot open folder 'Notices': error: select failed: Mailbox doesn't exist: Notices "
               "(0.001 + 0.000 secs).")
    watcher.wait_for_log("WARNING watcher.idle: us-store: cannot open folder 'Notices'")
    line = next(line for line in watcher.text().splitlines() if "watcher.idle: us-store: cannot open" in line)
    assert re.fullmatch(r".* WARNING watcher\.idle: us-store: cannot open folder 'Notices': error: select failed: "
                        r"Mailbox doesn't exist: Notices \([0-9.+ ]+ secs\)\.; reconnecting in \d+\.\ds", line), line
    folders = status(config)
    assert folders["Notices"]["state"] == "backing_off"
    assert re.sub(r"\([0-9.+ ]+ secs\)", "(0.001 + 0.000 secs)", str(folders["Notices"]["last_error"])) == missing
    assert folders["INBOX"]["state"] == "idle" and folders["INBOX"]["last_error"] is None

    mailbox.append(notice(2))  # the other folder keeps working
    assert http_sink.wait_for(2, timeout=10)[1].body["title"] == "[CRITICAL] Amazon: account deactivated — us-store"

    mailbox.create_folder("Notices")  # a new folder: a new UIDVALIDITY, UIDs from 1 again
    mailbox.append(notice(1), folder="Notices")  # the same message as before: no second event
    mailbox.append(notice(3), folder="Notices")
    http_sink.wait_for(3, timeout=20)
    watcher.wait_for_log("us-store/Notices: IDLE", count=2, timeout=20)
    assert re.search(r"WARNING watcher\.pipeline: us-store/Notices: UIDVALIDITY changed \(\d+ → \d+\); "
                     r"re-scanning the last 3650 days without duplicating events\n", watcher.text())
    time.sleep(4)  # two more periodic checks
    assert len(http_sink.requests) == 3
    listed = run(config, "events", "list", "--json").output
    assert sorted(json.loads(line)["message_id"] for line in listed.splitlines() if line.strip()) == [
        "<fault-1.demo-0001.notice@amazon.com>", "<fault-2.demo-0001.notice@amazon.com>",
        "<fault-3.demo-0001.notice@amazon.com>"]
    assert status(config)["Notices"]["state"] == "idle"
    assert watcher.stop() == 0


# --- (c) a server that hangs mid-response ---------------------------------------------------------------

def test_a_server_that_hangs_mid_response_is_given_up_within_the_timeout_and_recovered_from(
        server: LocalDovecot, http_sink: HttpSink, tmp_path: Path, watchers: list[Watcher]) -> None:
    mailbox = server.add_user()
    with HangingProxy(mailbox.port) as proxy:
        through = Mailbox(mailbox.username, mailbox.password, mailbox.host, proxy.port)
        config = set_timeout(write_config(tmp_path, {"us-store": through}, {"hook": http_sink.url()},
                                          extra="[schedule]\npoll_seconds = 60\n"), TIMEOUT_SECONDS)
        watcher = start(watchers, config)
        watcher.wait_for_log("us-store/INBOX: IDLE")
        watcher.wait_for_log("checked 1 folders")
        proxy.hang_when_client_sends(b"BODY.PEEK[]")  # the notice's body is asked for, and never comes
        mailbox.append(notice(1))
        watcher.wait_for_log("WARNING watcher.idle: us-store: fetch failed: timed out; reconnecting in", timeout=15)
        assert proxy.hung_at is not None
        assert time.monotonic() - proxy.hung_at < TIMEOUT_SECONDS + 1.5
        watcher.wait_for_log(f"WARNING watcher.idle: us-store: connect to 127.0.0.1:{proxy.port} failed: timed out; "
                             "reconnecting in", timeout=15)
        folder = status(config)["INBOX"]
        assert folder["state"] == "backing_off"
        assert folder["last_error"] in ("us-store: fetch failed: timed out",
                                        f"us-store: connect to 127.0.0.1:{proxy.port} failed: timed out")
        assert http_sink.requests == []
        proxy.release()
        (post,) = http_sink.wait_for(1, timeout=30)
        assert post.body["title"] == "[CRITICAL] Amazon: account deactivated — us-store"
        watcher.wait_for_log("us-store/INBOX: IDLE", count=2)
        assert status(config)["INBOX"]["state"] == "idle"
        assert watcher.stop() == 0
    assert len(http_sink.requests) == 1


def test_check_through_a_server_that_never_answers_exits_1_soon_after_the_timeout(
        mailbox: Mailbox, http_sink: HttpSink, tmp_path: Path) -> None:
    with HangingProxy(mailbox.port) as proxy:
        through = Mailbox(mailbox.username, mailbox.password, mailbox.host, proxy.port)
        config = set_timeout(write_config(tmp_path, {"us-store": through}, {"hook": http_sink.url()}),
                             TIMEOUT_SECONDS)
        proxy.hang()  # connections are accepted; not even the greeting comes back
        done, seconds = check_process(config)
    assert done.returncode == 1
    assert seconds < TIMEOUT_SECONDS + 4, seconds
    row = next(line for line in done.stdout.splitlines() if line.startswith("us-store"))
    assert row.split()[1] == "FAILED"
    assert row.endswith(f"us-store: connect to 127.0.0.1:{proxy.port} failed: timed out")
    assert "Traceback" not in done.stderr


def test_check_that_hangs_mid_response_exits_1_soon_after_the_timeout_and_the_next_check_catches_up(
        mailbox: Mailbox, http_sink: HttpSink, tmp_path: Path) -> None:
    mailbox.append(notice(1))
    with HangingProxy(mailbox.port) as proxy:
        through = Mailbox(mailbox.username, mailbox.password, mailbox.host, proxy.port)
        config = set_timeout(write_config(tmp_path, {"us-store": through}, {"hook": http_sink.url()}),
                             TIMEOUT_SECONDS)
        proxy.hang_when_client_sends(b"BODY.PEEK[]")
        done, seconds = check_process(config)
        assert done.returncode == 1
        assert seconds < TIMEOUT_SECONDS + 4, seconds
        row = next(line for line in done.stdout.splitlines() if line.startswith("us-store"))
        assert row.split()[1] == "FAILED"
        assert row.endswith("INBOX: us-store: fetch failed: timed out")
        proxy.release()
        again, _ = check_process(config)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "deliveries: 1 sent, 0 to retry, 0 failed" in again.stdout
    assert [request.body["title"] for request in http_sink.requests] == [
        "[CRITICAL] Amazon: account deactivated — us-store"]
