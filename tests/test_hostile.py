"""Hostile input: whatever arrives, parse → classify records what it can, lists the defect and returns
within a bounded time; real-world oddities pass through Dovecot and `watcher check` without an event."""

from __future__ import annotations

import base64
import json
import sqlite3
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from helpers import run, write_config
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from watcher.classify import classify
from watcher.demo import sample_messages
from watcher.model import ParsedMessage
from watcher.parse import MAX_TEXT_CHARS, parse_message
from watcher.rules import RuleSet, load_rules
from watcher.sandbox import Mailbox

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT.parent / "shared" / "corpus"
REALMAIL = ROOT.parent / "shared" / "realmail"
SEEDS = [path.read_bytes() for path in sorted((ROOT / "watcher" / "demo").glob("*.eml"))] + (
    [path.read_bytes() for path in sorted(CORPUS.glob("*.eml"))[::8]] if CORPUS.exists() else []
)
SECONDS_PER_MESSAGE = 2.0  # generous: the slowest case below takes about a quarter of it
FUZZ = settings(max_examples=200, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
HEADERS = b"From: Someone <someone@example.test>\r\nTo: shop@example.test\r\nSubject: hello\r\nMIME-Version: 1.0\r\n"

_rules: list[RuleSet] = []


def rule_set() -> RuleSet:
    """The default rules, loaded once (hypothesis runs examples outside pytest's fixtures)."""
    if not _rules:
        _rules.append(load_rules())
    return _rules[0]


def timed_parse_and_classify(content: bytes) -> tuple[ParsedMessage, float]:
    """Parse and classify ``content``; return the parsed message and the seconds both took (loading
    the rules, once, is not part of it: the daemon does that at start-up)."""
    rules = rule_set()
    started = time.perf_counter()
    message = parse_message(content)
    classify(message, rules)
    return message, time.perf_counter() - started


# --- (a) fuzzing -------------------------------------------------------------------------------

header_names = st.sampled_from(["From", "To", "Subject", "Date", "Content-Type", "Content-Transfer-Encoding",
                                "Reply-To", "Message-ID", "Received", "Content-Disposition", "X-Anything"])
header_values = st.one_of(
    st.text(max_size=200),
    st.builds(lambda charset, payload: f"=?{charset}?b?{base64.b64encode(payload).decode()}?=",
              st.sampled_from(["utf-8", "iso-2022-jp", "x-unknown", "utf-7", "gbk"]), st.binary(max_size=60)),
    st.sampled_from(["multipart/mixed; boundary=b", "text/html; charset=shift_jis", "base64", "quoted-printable",
                     "<a@b>", '"Amazon" <seller-notification@amazon.com>', "Mon, 32 Foo 99999 25:61:61 +9999"]),
)
header_blocks = st.lists(st.tuples(header_names, header_values), max_size=25)


@FUZZ
@given(st.binary(max_size=5_000))
def test_arbitrary_bytes_never_raise_and_finish_quickly(content: bytes) -> None:
    message, seconds = timed_parse_and_classify(content)
    assert seconds < SECONDS_PER_MESSAGE
    assert len(message.text) <= MAX_TEXT_CHARS


@FUZZ
@given(header_blocks, st.binary(max_size=2_000))
def test_generated_header_blocks_never_raise_and_stay_on_one_line(headers: list[tuple[str, str]], body: bytes) -> None:
    block = "".join(f"{name}: {value}\r\n" for name, value in headers).encode("utf-8", "surrogateescape")
    message, seconds = timed_parse_and_classify(block + b"\r\n" + body)
    assert seconds < SECONDS_PER_MESSAGE
    for value in (message.subject, message.from_name, *(value for _, value in message.headers)):
        assert "\n" not in value and "\r" not in value and "\x00" not in value


@FUZZ
@given(st.sampled_from(SEEDS), st.lists(st.tuples(st.floats(0, 1), st.integers(0, 3), st.binary(max_size=40)), max_size=12))
def test_mutated_real_messages_never_raise(seed: bytes, edits: list[tuple[float, int, bytes]]) -> None:
    content = bytearray(seed)
    for where, operation, data in edits:
        position = int(where * len(content))
        if operation == 0:
            content[position:position] = data  # insert
        elif operation == 1:
            del content[position : position + len(data) + 1]  # delete
        elif operation == 2:
            content[position : position + len(data)] = data  # overwrite
        else:
            del content[position:]  # truncate
    message, seconds = timed_parse_and_classify(bytes(content))
    assert seconds < SECONDS_PER_MESSAGE
    assert isinstance(message.text, str)


# --- (b) explicit hostile messages -------------------------------------------------------------

def nested_multiparts(depth: int) -> bytes:
    body = b"Content-Type: text/plain\r\n\r\nthe innermost text\r\n"
    for level in range(depth):
        body = (f"Content-Type: multipart/mixed; boundary=level{level}\r\n\r\n--level{level}\r\n".encode()
                + body + f"\r\n--level{level}--\r\n".encode())
    return HEADERS + body


def html(document: bytes) -> bytes:
    return HEADERS + b"Content-Type: text/html; charset=utf-8\r\n\r\n" + document


def text_part(headers: bytes, body: bytes) -> bytes:
    return HEADERS + headers + b"\r\n" + body


HOSTILE: dict[str, tuple[Callable[[], bytes], str | None]] = {
    # name: (message builder, the defect it must record or None)
    "capped 5 MB of a 50 MB message": (lambda: (HEADERS + b"\r\n" + b"A line of a very large message.\r\n" * 1_600_000)[:5_000_000], None),
    "5 MB of base64": (lambda: text_part(b"Content-Transfer-Encoding: base64\r\n", base64.encodebytes(b"x" * 3_700_000)), None),
    "200-deep nested multiparts": (lambda: nested_multiparts(200), None),
    "2,000-deep nested multiparts": (lambda: nested_multiparts(2_000), "TooManyPartsDefect"),
    "100,000 tiny parts": (lambda: HEADERS + b"Content-Type: multipart/mixed; boundary=b\r\n\r\n"
                           + b"--b\r\n\r\nx\r\n" * 100_000, "TooManyPartsDefect"),
    "a megabyte of nested tags": (lambda: html(b"<div><span>" * 200_000 + b"deep" + b"</span></div>" * 1_000), None),
    "unclosed anchors": (lambda: html(b"<a href='https://x.test/'>" * 200_000), None),
    "a million lone angle brackets": (lambda: html(b"<" * 1_000_000 + b">"), None),
    "unclosed comments and scripts": (lambda: html(b"<!--<script>" * 200_000 + b">"), None),
    "a 3 MB attribute": (lambda: html(b'<a title="' + b"x" * 3_000_000 + b'" href="https://x.test/">y</a>'), None),
    "entity expansion": (lambda: html(b"&amp;amp;&#x10FFFF;&#99999999999;&nbsp;&lt;" * 200_000), None),
    "NUL bytes in headers and body": (lambda: b"From: Amazon\x00 <a\x00@amazon.com>\r\nSubject: de\x00activated\r\n\r\nbo\x00dy",
                                      "ControlCharacterDefect"),
    "a 1 MB Subject": (lambda: b"From: a@example.test\r\nSubject: " + b"word " * 200_000 + b"\r\n\r\nbody", "OversizedHeaderDefect"),
    "a 1 MB Subject of encoded words": (lambda: b"Subject: " + b"=?utf-8?b?d29yZA==?= " * 50_000 + b"\r\n\r\nbody",
                                        "OversizedHeaderDefect"),
    "a 1 MB From list": (lambda: b"From: " + b'"n" <a@example.test>, ' * 50_000 + b"\r\n\r\nbody", "OversizedHeaderDefect"),
    "10,000 Received lines": (lambda: b"".join(b"Received: from relay%d.example.test by mx.example.test; "
                                               b"Mon, 1 Jan 2024 00:00:00 +0000\r\n" % i for i in range(10_000))
                              + HEADERS + b"\r\nbody", None),
    "100,000 parameters": (lambda: text_part(b"Content-Type: text/plain; " + b"a=b; " * 100_000 + b"\r\n", b"body"),
                           "OversizedHeaderDefect"),
    "an unknown charset": (lambda: text_part(b"Content-Type: text/plain; charset=x-no-such\r\n", b"h\xe9llo"), "CharsetDecodeDefect"),
    "a wrong charset": (lambda: text_part(b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n",
                                          b"caf\xe9 \x82\xa0"), "CharsetDecodeDefect"),
    "broken base64": (lambda: text_part(b"Content-Transfer-Encoding: base64\r\n", b"!!!SGVsbG8=gar\xffbage=\r\n"),
                      "InvalidBase64CharactersDefect"),
    "broken quoted-printable": (lambda: text_part(b"Content-Transfer-Encoding: quoted-printable\r\n", b"=ZZ=4=\r\nab=C3=\r\n"), None),
    "a missing boundary": (lambda: HEADERS + b"Content-Type: multipart/mixed\r\n\r\n--x\r\n\r\ntext\r\n", "NoBoundaryInMultipartDefect"),
}


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_message_is_read_in_bounded_time_and_its_defect_recorded(name: str) -> None:
    build, defect = HOSTILE[name]
    message, seconds = timed_parse_and_classify(build())
    assert seconds < SECONDS_PER_MESSAGE, f"{name}: {seconds:.2f}s"
    assert len(message.text) <= MAX_TEXT_CHARS and len(message.subject) <= 8_000
    if defect:
        assert any(found.startswith(defect) for found in message.defects), message.defects


def test_deep_nesting_keeps_the_headers_even_when_the_body_cannot_be_parsed() -> None:
    message = parse_message(nested_multiparts(1_500))
    assert message.subject == "hello"
    assert message.from_address == "someone@example.test"


def test_encoded_line_breaks_cannot_inject_headers_or_markdown() -> None:
    name = base64.b64encode(b"Amazon\r\nBcc: victim@example.test\r\n\r\n# Account deactivated").decode()
    message = parse_message(
        f"From: =?utf-8?b?{name}?= <notice@phish.test>\r\n"
        "Subject: =?utf-8?q?Hello=0D=0AX-Injected:_yes=0A=0A##_Act_now?=\r\n\r\nbody\r\n".encode())
    assert message.subject == "Hello X-Injected: yes ## Act now"
    assert message.header("From") == ["Amazon Bcc: victim@example.test # Account deactivated <notice@phish.test>"]
    assert "\n" not in message.from_name and "\r" not in message.from_name  # mail-parser keeps such a name encoded
    assert message.header("X-Injected") == [] and message.header("Bcc") == []


def test_nul_bytes_and_terminal_escapes_are_removed_from_what_is_shown() -> None:
    message = parse_message(b"From: a@example.test\r\nSubject: de\x00activ\x1b[2Jated\r\n\r\nbo\x00dy \x1b]0;x\x07text")
    assert message.subject == "deactiv[2Jated"
    assert message.text == "body ]0;xtext"
    assert "ControlCharacterDefect" in message.defects


def test_a_50_mb_message_is_read_up_to_the_cap_through_dovecot(mailbox: Mailbox, tmp_path: Path) -> None:
    notice = sample_messages(datetime.now(UTC))[0]
    mailbox.append(notice + b"\r\n" + b"Filler line for a fifty megabyte notice.\r\n" * 1_250_000)
    config = write_config(tmp_path, {"us-store": mailbox}, {})
    started = time.perf_counter()
    result = run(config, "check")
    assert result.exit_code == 0, result.output
    assert time.perf_counter() - started < 30
    (event,) = [json.loads(line) for line in run(config, "events", "list", "--json").output.splitlines()]
    assert event["kind"] == "account_deactivated"
    defects = sqlite3.connect(tmp_path / "events.db").execute("SELECT defects FROM processed").fetchone()[0]
    assert "truncated at max_message_bytes" in defects


# --- (c) real-world mail through the whole pipeline --------------------------------------------

REALMAIL_FILES = sorted(p for p in REALMAIL.rglob("*") if p.is_file() and p.name != "README.md") if REALMAIL.exists() else []


@pytest.mark.skipif(not REALMAIL_FILES, reason="real-world mail not present at ../shared/realmail")
def test_real_world_mail_passes_check_without_a_crash_or_an_event(mailbox: Mailbox, tmp_path: Path) -> None:
    storable = [path for path in REALMAIL_FILES if path.stat().st_size]  # Dovecot refuses a zero-byte message
    for path in storable:
        mailbox.append(path.read_bytes(), internal_date=datetime.now(UTC))
    config = write_config(tmp_path, {"realmail": mailbox}, {})
    result = run(config, "check")
    assert result.exit_code == 0, result.output
    row = next(line for line in result.output.splitlines() if line.startswith("realmail"))
    status, new, fetched, events = row.split()[1:5]
    assert (status, int(new), int(events)) == ("ok", len(storable), 0)
    outcomes = sqlite3.connect(tmp_path / "events.db").execute(
        "SELECT outcome, count(*) FROM processed GROUP BY outcome").fetchall()
    assert set(dict(outcomes)) <= {"irrelevant", "malformed"}
    assert sum(count for _, count in outcomes) <= int(fetched)
