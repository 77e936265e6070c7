"""The command line: help for every command, `classify --json`, `channels test`, filters and error lines."""

from __future__ import annotations

import json
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from helpers import run, write_config

from watcher.cli import cli
from watcher.sandbox import HttpSink, Mailbox

REPO = Path(__file__).resolve().parent.parent
CLASSIFY_KEYS = {"file", "relevant", "platform", "kind", "reason", "severity", "authenticity", "language", "deadline",
                 "marketplace", "ids", "reason_text", "guidance", "subject", "sender", "message_id", "facts"}


def commands(group: click.Group = cli, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = []
    for name, command in group.commands.items():
        found.append((*prefix, name))
        if isinstance(command, click.Group):
            found += commands(command, (*prefix, name))
    return found


@pytest.mark.parametrize("path", commands(), ids=" ".join)
def test_every_command_has_help_and_is_in_the_readme(path: tuple[str, ...]) -> None:
    result = CliRunner().invoke(cli, [*path, "--help"])
    assert result.exit_code == 0
    assert result.output.startswith("Usage: ")
    command = cli
    for name in path:
        command = command.commands[name]  # type: ignore[attr-defined]
    if not isinstance(command, click.Group):
        assert "Example:" in result.output
    assert f"watcher {' '.join(path)}" in (REPO / "README.md").read_text()


def test_classify_json_has_every_documented_key(tmp_path: Path) -> None:
    notice = REPO / "watcher" / "demo" / "01-deactivated.eml"
    result = CliRunner().invoke(cli, ["classify", "--json", str(notice)])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert set(data) == CLASSIFY_KEYS
    assert (data["platform"], data["kind"], data["reason"], data["authenticity"]) == (
        "amazon", "account_deactivated", "related_account", "verified")
    assert data["guidance"]["source"].startswith("amazon/account_deactivated")
    assert data["message_id"] == "<demo-0001.notice@amazon.com>"


def test_classify_json_matches_the_corpus_labels(corpus_dir: Path) -> None:
    labels = json.loads((corpus_dir / "labels.json").read_text())
    result = CliRunner().invoke(cli, ["classify", "--json", *(str(corpus_dir / label["file"]) for label in labels)])
    assert result.exit_code == 0
    lines = [json.loads(line) for line in result.output.splitlines()]
    fields = ("relevant", "platform", "kind", "reason", "authenticity", "deadline", "marketplace")
    mismatches = [(label["file"], field, line[field], label[field]) for label, line in zip(labels, lines, strict=True)
                  for field in fields if line[field] != label[field]]
    assert mismatches == []


def test_classify_a_missing_file_is_one_line() -> None:
    notice = REPO / "watcher" / "demo" / "01-deactivated.eml"
    result = CliRunner().invoke(cli, ["classify", "/nonexistent/x.eml", str(notice)])
    assert result.exit_code == 1
    assert result.output.splitlines()[0] == "Error: /nonexistent/x.eml: No such file or directory"
    assert "01-deactivated.eml" in result.output  # the other file is still classified


def test_classify_handles_every_real_world_message_without_an_event(realmail_dir: Path) -> None:
    files = sorted(str(path) for path in realmail_dir.rglob("*") if path.is_file() and path.name != "README.md")
    result = CliRunner().invoke(cli, ["classify", "--json", *files])
    assert result.exit_code == 0, result.output[-2000:]
    relevant = [line["file"] for line in map(json.loads, result.output.splitlines()) if line["relevant"]]
    assert len(result.output.splitlines()) == len(files)
    assert relevant == []


def test_channels_test_reports_each_channel(http_sink: HttpSink, tmp_path: Path) -> None:
    mailbox = Mailbox(username="u", password="p", host="127.0.0.1", port=1)
    config = write_config(tmp_path, {"us": mailbox}, {"good": http_sink.url(), "bad": "json://127.0.0.1:1/nothing"})
    result = run(config, "channels", "test")
    assert result.exit_code == 1
    rows = {line.split()[0]: line.split()[1] for line in result.output.splitlines()[2:]}
    assert rows == {"good": "success", "bad": "failure"}
    assert http_sink.wait_for(1)[0].body["title"] == "watcher test notification"
    assert run(config, "channels", "test", "good").exit_code == 0
    missing = run(config, "channels", "test", "nope")
    assert (missing.exit_code, missing.output.strip()) == (1, f"Error: no channel named 'nope' in {config}")


def test_channel_filters_decide_who_gets_which_event(mailbox: Mailbox, tmp_path: Path) -> None:
    from datetime import UTC, datetime

    from watcher.demo import sample_messages

    for message in sample_messages(datetime.now(UTC)):
        mailbox.append(message)
    with HttpSink() as everything, HttpSink() as deactivations, HttpSink() as other_store, HttpSink() as by_store:
        config = write_config(tmp_path, {"us-store": mailbox}, {})
        config.write_text(config.read_text() + f'''
[[channels]]
name = "all"
url = "{everything.url()}"

[[channels]]
name = "deactivations"
url = "{deactivations.url()}"
kinds = ["account_deactivated"]
platforms = ["amazon"]
min_severity = "critical"

[[channels]]
name = "other-store"
url = "{other_store.url()}"
accounts = ["us-store"]
platforms = ["ebay"]

[[channels]]
name = "by-store"
url = "{by_store.url()}"
stores = ["us-store"]
min_severity = "high"
''')
        assert run(config, "check").exit_code == 0
        assert len(everything.wait_for(3)) == 3
        assert [r.body["title"] for r in deactivations.wait_for(1)] == ["[CRITICAL] Amazon: account deactivated — us-store"]
        assert other_store.requests == []
        assert len(by_store.wait_for(3)) == 3  # the account's store defaults to its name


@pytest.mark.parametrize("since", ["7d", "12h", "30m", "2026-01-01"])
def test_events_list_accepts_durations_and_dates(tmp_path: Path, since: str) -> None:
    config = write_config(tmp_path, {"us": Mailbox(username="u", password="p", host="127.0.0.1", port=1)}, {})
    result = run(config, "events", "list", "--since", since)
    assert (result.exit_code, result.output) == (0, "no events\n")


def test_events_list_rejects_a_bad_since(tmp_path: Path) -> None:
    config = write_config(tmp_path, {"us": Mailbox(username="u", password="p", host="127.0.0.1", port=1)}, {})
    result = run(config, "events", "list", "--since", "last week")
    assert result.exit_code == 2
    assert "use a duration like 7d, 12h, 30m or a date YYYY-MM-DD" in result.output

