"""Never lose, never double: `watcher run` killed with SIGKILL at random instants while mail keeps arriving.

A feeder appends platform notices (and ordinary mail) without pause; the watcher is started and killed with
SIGKILL again and again, at a seeded random moment between its start-up and the middle of its deliveries.
A last watcher then runs until everything is quiet, and the database and the HTTP sink must show: one event
per notice, every delivery sent and received, nothing processed twice. A notification may arrive twice (a kill
between the POST and its record — at-least-once delivery), never zero times.
"""

from __future__ import annotations

import random
import re
import sqlite3
import threading
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

from helpers import Watcher, write_config

from watcher.demo import sample_messages
from watcher.sandbox import HttpSink, Mailbox

SEED = 20261128
TRIALS = 50
KILL_AFTER_SECONDS = (0.05, 3.5)  # start-up takes about 1 s; the rest falls among checks and deliveries
FEED_INTERVAL_SECONDS = 0.2
QUIET_TIMEOUT_SECONDS = 90
CHANNELS = ("first", "second")
EVENT_REFERENCE = re.compile(r"events show (\d+)")


class Feeder(threading.Thread):
    """Appends the packaged samples round-robin, each with a Message-ID of its own, until stopped.

    The first three samples are platform notices (each must become one event); the last two are an order
    mail and a newsletter (none may)."""

    def __init__(self, mailbox: Mailbox) -> None:
        super().__init__(name="feeder", daemon=True)
        self.mailbox = mailbox
        self.stopping = threading.Event()
        self.notices: list[str] = []
        self.ordinary: list[str] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        samples = sample_messages(datetime.now(UTC))
        assert len(samples) == 5
        number = 0
        try:
            with self.mailbox.connect() as client:
                while not self.stopping.wait(FEED_INTERVAL_SECONDS):
                    index = number % len(samples)
                    content = samples[index]
                    original = re.search(rb"^Message-ID: <([^>]+)>", content, re.MULTILINE)
                    assert original is not None
                    message_id = f"<crash-{number}.{original.group(1).decode()}>"
                    client.append("INBOX", content.replace(b"<" + original.group(1) + b">", message_id.encode(), 1))
                    (self.notices if index < 3 else self.ordinary).append(message_id)
                    number += 1
        except BaseException as error:  # reported by the test, which would otherwise wait in vain
            self.error = error

    def stop(self) -> None:
        self.stopping.set()
        self.join(timeout=10)
        assert self.error is None, f"the feeder failed: {self.error!r}"


def rows(database: Path, query: str) -> list[sqlite3.Row]:
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=30) as connection:
        connection.row_factory = sqlite3.Row
        return connection.execute(query).fetchall()


def settled(database: Path, sink: HttpSink, notices: int) -> bool:
    """True once every notice has its event and every delivery was sent and received."""
    if not database.exists():
        return False
    events = rows(database, "SELECT COUNT(*) FROM events")[0][0]
    unsent = rows(database, "SELECT COUNT(*) FROM deliveries WHERE status != 'sent'")[0][0]
    sent = rows(database, "SELECT COUNT(*) FROM deliveries")[0][0]
    return events == notices and unsent == 0 and sent >= notices * len(CHANNELS) and len(sink.requests) >= sent


def purpose(row: sqlite3.Row) -> str:
    """Why a delivery row exists: the event itself, or a later reminder (lifecycle.py) where there are any."""
    return str(row["purpose"]) if "purpose" in row.keys() and row["purpose"] else "event"


def phase(log: str) -> str:
    """Where a killed watcher had got to, from its log."""
    if "→" in log:
        return "delivering"
    if "checked" in log or ": IDLE" in log:
        return "checking"
    if "logged in" in log:
        return "connecting"
    return "starting"


def test_sigkill_at_random_instants_loses_no_notice_and_records_none_twice(
        mailbox: Mailbox, http_sink: HttpSink, tmp_path: Path) -> None:
    started = time.monotonic()
    config = write_config(tmp_path, {"us-store": mailbox}, {name: http_sink.url(f"/{name}") for name in CHANNELS},
                          extra="[schedule]\npoll_seconds = 2\n[delivery]\nburst_threshold = 0\n")  # a request per notice
    database = tmp_path / "events.db"
    feeder = Feeder(mailbox)
    feeder.start()
    chance = random.Random(SEED)
    phases: Counter[str] = Counter()
    try:
        for trial in range(TRIALS):
            watcher = Watcher(config, tmp_path / f"trial-{trial:02d}.log")
            time.sleep(chance.uniform(*KILL_AFTER_SECONDS))
            assert watcher.process.poll() is None, f"trial {trial}: the watcher exited by itself:\n{watcher.text()}"
            watcher.process.kill()
            watcher.process.wait(timeout=10)
            watcher.output.close()
            phases[phase(watcher.text())] += 1
    finally:
        feeder.stop()
    killed_at = time.monotonic()

    last = Watcher(config, tmp_path / "last.log")
    try:
        deadline = time.monotonic() + QUIET_TIMEOUT_SECONDS
        while not settled(database, http_sink, len(feeder.notices)):
            assert last.process.poll() is None, last.text()
            assert time.monotonic() < deadline, f"not settled after {QUIET_TIMEOUT_SECONDS}s:\n{last.text()}"
            time.sleep(0.2)
        settled_after = time.monotonic() - killed_at
        time.sleep(2 * 2)  # two more poll periods: nothing further may be sent
    finally:
        assert last.stop() == 0, last.text()

    events = rows(database, "SELECT id, message_id FROM events")
    by_message = Counter(row["message_id"] for row in events)
    assert set(by_message) == set(feeder.notices), "every notice, and only notices, became an event"
    assert max(by_message.values()) == 1
    processed = rows(database, "SELECT message_id, outcome, event_id FROM processed")
    outcomes = {row["message_id"]: (row["outcome"], row["event_id"]) for row in processed}
    assert len(outcomes) == len(processed), "a message was processed twice"
    event_of = {row["message_id"]: row["id"] for row in events}
    assert all(outcomes[message_id] == ("event", event_of[message_id]) for message_id in feeder.notices)
    assert all(outcomes.get(message_id, ("skipped",))[0] in ("irrelevant", "skipped") for message_id in feeder.ordinary)

    deliveries = rows(database, "SELECT * FROM deliveries")
    per_event = Counter(row["event_id"] for row in deliveries if purpose(row) == "event")
    assert all(per_event[row["id"]] == len(CHANNELS) for row in events), "an event without its deliveries"
    assert {row["status"] for row in deliveries} == {"sent"}
    failures = rows(database, "SELECT COUNT(*) FROM delivery_attempts WHERE outcome != 'success'")[0][0]
    assert failures == 0

    # A POST the kill cut off half-way is not JSON: it never counted as sent, and it was not received.
    complete = [request for request in http_sink.requests if request.body is not None]
    received = Counter((int(match.group(1)), request.path.strip("/")) for request in complete
                       if (match := EVENT_REFERENCE.search(request.body["message"])))
    assert sum(received.values()) == len(complete), "a notification that names no event"
    expected = {(row["id"], channel) for row in events for channel in CHANNELS}
    assert set(received) == expected, "every event reached every channel, and nothing else was sent"
    rows_per_target = Counter((row["event_id"], row["channel"]) for row in deliveries)
    duplicates = sum(received[target] - rows_per_target[target] for target in expected)
    assert all(received[target] >= rows_per_target[target] for target in expected)
    assert duplicates <= TRIALS * len(CHANNELS)  # at most one POST in flight per channel when killed
    logs = {path.name: path.read_text(errors="replace") for path in sorted(tmp_path.glob("*.log"))}
    assert not [name for name, text in logs.items() if "Traceback" in text], "an unexpected error was logged"
    assert " ERROR " not in logs["last.log"], logs["last.log"]

    print(f"\n{TRIALS} SIGKILLs (seed {SEED}; killed while {dict(phases)}) in {killed_at - started:.0f}s; "
          f"{len(feeder.notices)} notices + {len(feeder.ordinary)} ordinary messages; {len(events)} events; "
          f"{len(complete)} notifications, {duplicates} duplicated "
          f"({len(http_sink.requests) - len(complete)} more cut off by a kill); "
          f"the last watcher settled {settled_after:.1f}s after the last kill")
