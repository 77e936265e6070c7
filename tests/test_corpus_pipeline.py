"""The labelled corpus through the real pipeline: APPEND to Dovecot → `watcher check` → events and notifications."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from helpers import run, write_config

from watcher.sandbox import HttpSink, LocalDovecot

LABELS_FILE = Path(__file__).resolve().parent.parent.parent / "shared" / "corpus" / "labels.json"
LABELS = json.loads(LABELS_FILE.read_text()) if LABELS_FILE.exists() else []
FIELDS = ("platform", "kind", "reason", "authenticity", "language", "deadline", "marketplace")


@dataclass
class CheckedCorpus:
    events: dict[str, dict[str, Any]]  # message id → event JSON
    notifications: dict[str, str]  # event id → notification body
    second_check: str
    message_ids: dict[str, str]  # file → message id


@pytest.fixture(scope="module")
def checked(dovecot: LocalDovecot, corpus_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[CheckedCorpus]:
    mailbox = dovecot.add_user()
    message_ids = {}
    for label in LABELS:
        content = (corpus_dir / label["file"]).read_bytes()
        mailbox.append(content)
        message_ids[label["file"]] = next(line.split(b":", 1)[1].strip().decode() for line in content.splitlines()
                                          if line.lower().startswith(b"message-id:"))
    folder = tmp_path_factory.mktemp("corpus")
    with HttpSink() as sink:
        # One notification per notice (it is compared field by field), so no burst grouping.
        config = write_config(folder, {"corpus": mailbox}, {"hook": sink.url()}, extra="[delivery]\nburst_threshold = 0\n")
        first = run(config, "check")
        assert first.exit_code == 0, first.output
        listed = run(config, "events", "list", "--json", "--limit", "1000").output.splitlines()
        events = {json.loads(line)["message_id"]: json.loads(line) for line in listed}
        posts = sink.wait_for(len(events), timeout=30)
        notifications = {}
        for post in posts:
            body = post.body["message"]
            notifications[body.rsplit("watcher events show ", 1)[1].strip("`")] = body
        second = run(config, "check").output
    yield CheckedCorpus(events, notifications, second, message_ids)


@pytest.mark.parametrize("label", LABELS, ids=[label["file"] for label in LABELS])
def test_corpus_message_becomes_the_labelled_event(checked: CheckedCorpus, label: dict[str, Any]) -> None:
    event = checked.events.get(checked.message_ids[label["file"]])
    if not label["relevant"]:
        assert event is None, f"ordinary mail recorded as {event and event['kind']}"
        return
    assert event is not None, "notice produced no event"
    assert {field: event[field] for field in FIELDS} == {field: label[field] for field in FIELDS}
    assert set(label["ids"]) <= set(event["ids"])
    body = checked.notifications[str(event["id"])]
    assert "Next steps" in body or "下一步" in body


def test_a_second_check_of_the_corpus_adds_nothing(checked: CheckedCorpus) -> None:
    assert "deliveries: 0 sent, 0 to retry, 0 failed" in checked.second_check
    row = next(line for line in checked.second_check.splitlines() if line.startswith("corpus"))
    assert row.split()[2:5] == ["0", "0", "0"]
