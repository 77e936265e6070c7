"""Backlog benchmark: the first ``watcher check`` of a large mailbox, against a naive reader and the floor.

A private Dovecot on 127.0.0.1 is seeded with ``--messages`` generated messages (seeded random, so the same
mail on every run; only the dates follow the clock), of which ``--notice-ratio`` are platform notices taken
from ../shared/corpus (or watcher/demo/0[1-3]*.eml when the corpus is absent), each with a unique Message-ID.
Three programs then read the whole backlog, each in its own process so that its wall time and peak RSS are
its own (``os.wait4``):

- naive: fetch every full message (``BODY.PEEK[]``) and parse each with mail-parser;
- floor: only the IMAP work the watcher cannot avoid — login, select, SEARCH SINCE, the screening header
  fetch for every message in batches, and the full body of the notices only; nothing is parsed or stored;
- watcher: ``python -m watcher --config … check`` with an empty database.

Before the timed runs the floor reads the mailbox once untimed, so that every timed run meets the same warm
Dovecot cache. Usage: ``python3 bench/backlog.py [--messages N] [--notice-ratio R] [--runs K]``.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import random
import re
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from imapclient import IMAPClient

REPO = Path(__file__).resolve().parent.parent
CORPUS = REPO.parent / "shared" / "corpus"
SELLER = "ops@northwind-trading.example"
ACCOUNT = "bench"
# The floor repeats watcher/imap.py's requests byte for byte; it must not import the watcher to stay bare.
HEADER_ITEM = b"BODY.PEEK[HEADER.FIELDS (FROM SENDER REPLY-TO SUBJECT TO MESSAGE-ID DATE)]"
HEADER_BATCH = 500
MAX_MESSAGE_BYTES = 5_000_000  # the watcher's default max_message_bytes
NAIVE_BATCH = 200
LOOKBACK_DAYS = 3650
RUN_TIMEOUT = 1800.0  # seconds any one measured process may take before it is killed
SPEEDUP_TARGET = 10.0  # naive / watcher at least
OVERHEAD_TARGET = 2.0  # watcher / floor at most
RSS_TARGET_MB = 150.0  # watcher peak RSS below

WORDS = (
    "the a of and to in for on with about your our this that next week meeting report quarter plan team "
    "schedule shipping lunch project budget update thanks please review attached draft notes call friday "
    "monday customer supplier warehouse pallet container invoice delivery sample price quote design photo "
    "garden recipe holiday weekend family trip school concert tickets offer sale new collection spring "
    "autumn winter summer article story interview podcast episode guide tips how why when where what"
).split()
FIRST_NAMES = ("Anna", "Ben", "Chloe", "David", "Elena", "Farid", "Grace", "Hiro", "Ines", "Jonas", "Kemal",
               "Lena", "Marco", "Nadia", "Oscar", "Priya", "Quentin", "Rosa", "Sven", "Tariq", "Uma", "Wen")
LAST_NAMES = ("Novak", "Schmidt", "Okafor", "Lindqvist", "Moreau", "Tanaka", "Rossi", "Kowalski", "Silva",
              "Haddad", "Jensen", "Murphy", "Chen", "Garcia", "Petrov", "Yilmaz")
PERSONAL_DOMAINS = ("mail.example", "post.test", "gmail.example", "fastmail.test", "northwind-trading.example")
NEWSLETTERS = (("Northwind Weekly", "news@northwind-weekly.example"), ("Garden Digest", "digest@gardenpost.test"),
               ("Maker Monthly", "hello@makermonthly.example"), ("Trade Show Today", "list@tradeshow.test"),
               ("Packaging Insider", "newsletter@pack-insider.example"), ("Cafe Lumen", "offers@cafelumen.test"))
VENDORS = (("Acme Hosting", "billing@acme-hosting.example"), ("Boxwell Packaging", "invoices@boxwell.test"),
           ("Ledgerly", "no-reply@ledgerly.example"), ("Printhaus", "accounts@printhaus.test"),
           ("CargoLine Freight", "ar@cargoline.example"))
SERVICES = (("ParcelGo", "tracking@parcelgo.example"), ("CityBank", "alerts@citybank.test"),
            ("Teamboard", "notify@teamboard.example"), ("CloudDrive", "no-reply@clouddrive.test"),
            ("Shipfast Labels", "support@shipfast.example"))
PERSONAL_SUBJECTS = ("Re: {w} on {day}?", "{w} {w2}", "Fwd: {w} photos", "Quick question about the {w}",
                     "Re: Re: {w} {w2} plan", "Notes from {day}")
NEWSLETTER_SUBJECTS = ("{name}: {w} {w2} this week", "Issue #{n}: {w} and {w2}", "New {w} collection inside",
                       "Your {day} digest")
INVOICE_SUBJECTS = ("Invoice INV-{n} from {name}", "Payment received, thank you (receipt {n})",
                    "Your {name} statement for {month}", "Reminder: invoice {n} is due")
SERVICE_SUBJECTS = ("Your order #{n} has shipped", "Verify your email address", "Your account password was changed",
                    "New sign-in to your {name} account", "Delivery scheduled for {day}", "{n} new comments")
DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


# --- the mail ------------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Notice:
    """One platform message from the corpus: its bytes and whether it should become an event."""

    name: str
    content: bytes
    relevant: bool


def load_notices() -> list[Notice]:
    """Return the corpus messages with their labels, or the demo notices (all relevant) without a corpus."""
    labels_file = CORPUS / "labels.json"
    if labels_file.exists():
        labels = json.loads(labels_file.read_text(encoding="utf-8"))
        return [Notice(item["file"], (CORPUS / item["file"]).read_bytes(), bool(item["relevant"]))
                for item in labels]
    demo = sorted((REPO / "watcher" / "demo").glob("0[1-3]*.eml"))
    return [Notice(path.name, path.read_bytes(), True) for path in demo]


def restamp(content: bytes, number: int, when: datetime) -> bytes:
    """Return ``content`` with its top-level Date set to ``when`` and ``bench-<number>.`` put in front of its
    Message-ID (the original domain stays); either header is added when missing."""
    split = re.search(rb"\r?\n\r?\n", content)
    end = split.start() if split else len(content)
    head, rest = content[:end], content[end:]
    tag = f"bench-{number:05d}.".encode()
    head, found = re.subn(rb"(?im)^(Message-ID:[ \t]*<)", lambda match: match.group(1) + tag, head, count=1)
    if not found:
        head = b"Message-ID: <" + tag + b"notice@notices.test>\r\n" + head
    date_line = b"Date: " + format_datetime(when).encode()
    head, found = re.subn(rb"(?im)^Date:[^\r\n]*(?:\r?\n[ \t][^\r\n]*)*", lambda _match: date_line, head, count=1)
    if not found:
        head = date_line + b"\r\n" + head
    return head + rest


def _words(rng: random.Random, size: int) -> list[str]:
    """Return lines of filler prose, about ``size`` bytes in all."""
    words = rng.choices(WORDS, k=max(8, size // 6))
    return [" ".join(words[start:start + 12]).capitalize() + "." for start in range(0, len(words), 12)]


def _html(rng: random.Random, size: int) -> list[str]:
    """Return the lines of a styled newsletter-like HTML page of about ``size`` bytes."""
    lines = ["<!DOCTYPE html>", "<html><body style=\"margin:0;padding:0;font-family:Arial,sans-serif\">",
             "<table width=\"100%\" cellpadding=\"0\" cellspacing=\"0\" role=\"presentation\">"]
    for line in _words(rng, size * 2 // 3):
        lines.append(f"<tr><td style=\"padding:8px 24px;color:#333333;font-size:15px\"><p>{line}</p></td></tr>")
    lines += ["</table>", "<p style=\"font-size:11px;color:#999\"><a href=\"https://lists.example/unsubscribe\">"
              "Unsubscribe</a></p>", "</body></html>"]
    return lines


def _attachment(rng: random.Random, size: int, magic: bytes) -> list[str]:
    """Return ``size`` random bytes (starting with ``magic``) as base64 lines of 76 characters."""
    encoded = base64.b64encode(magic + rng.randbytes(max(0, size - len(magic)))).decode("ascii")
    return [encoded[start:start + 76] for start in range(0, len(encoded), 76)]


def _part(content_type: str, lines: list[str], extra: str = "") -> list[str]:
    encoding = "base64" if extra else "7bit"
    return [f"Content-Type: {content_type}", f"Content-Transfer-Encoding: {encoding}", *([extra] if extra else []),
            "", *lines]


def _multipart(kind: str, boundary: str, parts: list[list[str]]) -> tuple[str, list[str]]:
    lines = ["This is a multi-part message in MIME format."]
    for part in parts:
        lines += [f"--{boundary}", *part]
    return f"multipart/{kind}; boundary=\"{boundary}\"", [*lines, f"--{boundary}--", ""]


def _with_attachment(text: list[str], number: int, content_type: str, filename: str,
                     data: list[str]) -> tuple[str, list[str]]:
    attachment = _part(f"{content_type}; name=\"{filename}\"", data,
                       f"Content-Disposition: attachment; filename=\"{filename}\"")
    return _multipart("mixed", f"=_m{number}", [_part("text/plain; charset=utf-8", text), attachment])


def _with_html(text: list[str], number: int, html: list[str]) -> tuple[str, list[str]]:
    return _multipart("alternative", f"=_a{number}",
                      [_part("text/plain; charset=utf-8", text), _part("text/html; charset=utf-8", html)])


def ordinary_message(rng: random.Random, number: int, when: datetime) -> bytes:
    """Return one deterministic piece of everyday mail from a non-platform sender."""
    kind = rng.choices(("personal", "newsletter", "invoice", "service"), weights=(35, 30, 15, 20))[0]
    fill = {"w": rng.choice(WORDS), "w2": rng.choice(WORDS), "day": rng.choice(DAYS), "n": rng.randint(1000, 99999),
            "month": when.strftime("%B %Y")}
    text = _words(rng, rng.randint(600, 3000))
    if kind == "personal":
        first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
        sender = (f"{first} {last}", f"{first.lower()}.{last.lower()}@{rng.choice(PERSONAL_DOMAINS)}")
        subject = rng.choice(PERSONAL_SUBJECTS)
        content_type, body = "text/plain; charset=utf-8", text
        if rng.random() < 0.06:  # a photo of a few hundred KB
            photo = _attachment(rng, rng.randint(60_000, 400_000), b"\xff\xd8")
            content_type, body = _with_attachment(text, number, "image/jpeg", "photo.jpg", photo)
    elif kind == "newsletter":
        sender, subject = rng.choice(NEWSLETTERS), rng.choice(NEWSLETTER_SUBJECTS)
        content_type, body = _with_html(text, number, _html(rng, rng.randint(8_000, 55_000)))
    elif kind == "invoice":
        sender, subject = rng.choice(VENDORS), rng.choice(INVOICE_SUBJECTS)
        pdf = _attachment(rng, rng.randint(12_000, 44_000), b"%PDF-1.4\n")
        content_type, body = _with_attachment(text, number, "application/pdf", f"INV-{fill['n']}.pdf", pdf)
    else:
        sender, subject = rng.choice(SERVICES), rng.choice(SERVICE_SUBJECTS)
        content_type, body = _with_html(text, number, _html(rng, rng.randint(3_000, 12_000)))
    head = [f"From: {sender[0]} <{sender[1]}>", f"To: {SELLER}",
            f"Subject: {subject.format(name=sender[0], **fill)}", f"Date: {format_datetime(when)}",
            f"Message-ID: <bench-{number:05d}.{rng.getrandbits(40):x}@{sender[1].split('@')[1]}>",
            "MIME-Version: 1.0", f"Content-Type: {content_type}"]
    return "\r\n".join([*head, "", *body]).encode("utf-8") + b"\r\n"


@dataclass(frozen=True, slots=True)
class Plan:
    """The mailbox to seed: its size, the seed of its mail and which positions hold which notice."""

    count: int
    seed: int
    notices: Mapping[int, Notice]

    @property
    def expected_events(self) -> int:
        return sum(notice.relevant for notice in self.notices.values())


def make_plan(count: int, notice_ratio: float, seed: int) -> Plan:
    """Place ``count * notice_ratio`` notices at random positions, cycling through a shuffled corpus."""
    rng = random.Random(seed)
    notices = load_notices()
    rng.shuffle(notices)  # so that a small mailbox still gets a mix of platforms and kinds
    positions = sorted(rng.sample(range(count), round(count * notice_ratio)))
    return Plan(count, seed, {position: notices[index % len(notices)] for index, position in enumerate(positions)})


def generate(plan: Plan, now: datetime) -> Iterator[bytes]:
    """Yield the plan's messages, oldest first, dated evenly over the 30 days before ``now``."""
    rng = random.Random(plan.seed + 1)
    step = timedelta(days=30) / plan.count
    start = now - timedelta(days=30)
    for number in range(plan.count):
        when = (start + step * number + timedelta(seconds=rng.randint(0, 59))).replace(microsecond=0)
        notice = plan.notices.get(number)
        yield ordinary_message(rng, number, when) if notice is None else restamp(notice.content, number, when)


# --- the two reference readers (each runs as its own process) ------------------------------------------

@dataclass(frozen=True, slots=True)
class Job:
    """What a reference reader needs: where the mailbox is and which UIDs hold the notices."""

    host: str
    port: int
    username: str
    password: str
    notice_uids: tuple[int, ...]

    @classmethod
    def load(cls, path: Path) -> Job:
        data = json.loads(path.read_text(encoding="utf-8"))
        return cls(data["host"], int(data["port"]), data["username"], data["password"], tuple(data["notice_uids"]))


def _open(job: Job) -> tuple[IMAPClient, list[int]]:
    """Log in, select INBOX read-only and return the client and the UIDs the watcher's first search finds."""
    from imapclient import IMAPClient

    client = IMAPClient(job.host, port=job.port, ssl=False, use_uid=True, timeout=120)
    client.login(job.username, job.password)
    client.select_folder("INBOX", readonly=True)
    since = datetime.now(UTC).date() - timedelta(days=LOOKBACK_DAYS)
    return client, sorted(client.search(["SINCE", since]))


def run_floor(job: Job) -> dict[str, int]:
    """The server-side work the watcher needs and nothing else: search, screen headers, notice bodies."""
    client, uids = _open(job)
    notices = set(job.notice_uids)
    bodies = 0
    for start in range(0, len(uids), HEADER_BATCH):
        chunk = uids[start:start + HEADER_BATCH]
        client.fetch(chunk, [HEADER_ITEM, b"RFC822.SIZE", b"INTERNALDATE"])
        wanted = [uid for uid in chunk if uid in notices]
        if wanted:
            client.fetch(wanted, [f"BODY.PEEK[]<0.{MAX_MESSAGE_BYTES}>".encode()])
            bodies += len(wanted)
    client.logout()
    return {"messages": len(uids), "bodies": bodies}


def run_naive(job: Job) -> dict[str, int]:
    """What a simple watcher does: fetch every full message and parse it with mail-parser."""
    import logging

    import mailparser

    logging.disable(logging.WARNING)  # mail-parser logs every defect it meets
    client, uids = _open(job)
    parsed = 0
    for start in range(0, len(uids), NAIVE_BATCH):
        chunk = uids[start:start + NAIVE_BATCH]
        for data in client.fetch(chunk, [b"BODY.PEEK[]"]).values():
            mailparser.parse_from_bytes(data[b"BODY[]"])
            parsed += 1
    client.logout()
    return {"messages": len(uids), "bodies": parsed}


# --- measuring -------------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Measurement:
    seconds: float
    peak_rss_mb: float
    stdout: str


# Linux reports a child's peak RSS as at least its parent's RSS at fork/vfork time, so every measured
# process is started by this tiny interpreter instead of by the benchmark (which holds much more memory).
LAUNCHER = """\
import os, sys, time
started = time.perf_counter()
pid = os.posix_spawn(sys.argv[2], sys.argv[2:], os.environ)
_pid, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as report:
    report.write(f"{time.perf_counter() - started} {usage.ru_maxrss} {os.waitstatus_to_exitcode(status)}")
"""


def measure(command: list[str]) -> Measurement:
    """Run ``command`` (an absolute executable first) from the repository root; return its wall time, peak
    RSS and output. Raise RuntimeError (with its stderr) when it fails or outlives RUN_TIMEOUT."""
    environment = {**os.environ, "PYTHONPATH": str(REPO)}
    with tempfile.TemporaryDirectory() as scratch:
        report = Path(scratch) / "usage"
        with open(Path(scratch) / "out", "w+b") as output, open(Path(scratch) / "err", "w+b") as errors:
            process = subprocess.Popen([sys.executable, "-I", "-S", "-c", LAUNCHER, str(report), *command],
                                       cwd=REPO, env=environment, stdout=output, stderr=errors,
                                       stdin=subprocess.DEVNULL, start_new_session=True)
            try:
                process.wait(timeout=RUN_TIMEOUT)
            except BaseException as error:  # a timeout or Ctrl-C: end the launcher and the measured process
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
                if isinstance(error, subprocess.TimeoutExpired):
                    raise RuntimeError(f"{' '.join(command)} ran longer than {RUN_TIMEOUT:.0f}s") from None
                raise
            output.seek(0)
            errors.seek(0)
            stdout, stderr = output.read().decode(errors="replace"), errors.read().decode(errors="replace")
        seconds, peak_kib, returncode = report.read_text().split() if report.exists() else ("0", "0", "-1")
    if process.returncode != 0 or returncode != "0":
        raise RuntimeError(f"{' '.join(command)} exited with {returncode}:\n{stderr[-3000:]}{stdout[-2000:]}")
    return Measurement(float(seconds), int(peak_kib) / 1024, stdout)  # ru_maxrss is in KiB on Linux


def watcher_config(folder: Path, port: int, username: str) -> Path:
    """Write the benchmark's watcher.toml (and its password file is expected beside it); return its path."""
    path = folder / "watcher.toml"
    path.write_text(f"""\
[storage]
database = "events.db"

[[accounts]]
name = "{ACCOUNT}"
host = "127.0.0.1"
port = {port}
security = "none"
username = "{username}"
password_file = "imap-password"
folders = ["INBOX"]
lookback_days = {LOOKBACK_DAYS}
""", encoding="utf-8")
    path.chmod(0o600)
    return path


def fetched_bodies(check_output: str) -> int:
    """Return the "fetched" column of the account's row in ``watcher check``'s table."""
    for line in check_output.splitlines():
        cells = line.split()
        if cells[:1] == [ACCOUNT]:
            return int(cells[3])
    raise RuntimeError(f"no row for {ACCOUNT!r} in the check output:\n{check_output}")


def _expect(run: Measurement, messages: int, bodies: int) -> None:
    """Raise RuntimeError unless a reference reader saw ``messages`` messages and read ``bodies`` bodies."""
    seen = json.loads(run.stdout)
    if seen != {"messages": messages, "bodies": bodies}:
        raise RuntimeError(f"reader saw {seen}, expected {messages} messages and {bodies} bodies")


def count_events(database: Path) -> int:
    with sqlite3.connect(database) as connection:
        return int(connection.execute("SELECT count(*) FROM events").fetchone()[0])


def benchmark(arguments: argparse.Namespace) -> list[tuple[str, str, str]]:
    """Seed a private Dovecot, run the three readers and return the result rows (name, value, target)."""
    sys.path.insert(0, str(REPO))
    from watcher.sandbox import LocalDovecot

    folder = Path(tempfile.mkdtemp(prefix="watcher-bench-"))
    plan = make_plan(arguments.messages, arguments.notice_ratio, arguments.seed)
    try:
        with LocalDovecot() as dovecot:
            mailbox = dovecot.add_user("bench")
            started = time.perf_counter()
            uids = mailbox.append_many(generate(plan, datetime.now(UTC)))
            seed_seconds = time.perf_counter() - started
            notice_uids = sorted(uids[position] for position in plan.notices)
            job = folder / "job.json"
            job.write_text(json.dumps({"host": mailbox.host, "port": mailbox.port, "username": mailbox.username,
                                       "password": mailbox.password, "notice_uids": notice_uids}), encoding="utf-8")
            (folder / "imap-password").write_text(mailbox.password, encoding="utf-8")
            (folder / "imap-password").chmod(0o600)
            config = watcher_config(folder, mailbox.port, mailbox.username)
            reader = [sys.executable, str(Path(__file__).resolve()), "--job", str(job), "--role"]
            _expect(measure([*reader, "floor"]), len(uids), len(notice_uids))  # warms Dovecot's cache for all
            floors, checks = [], []
            for _ in range(arguments.runs):
                floors.append(measure([*reader, "floor"]))
                for stale in folder.glob("events.db*"):
                    stale.unlink()
                checks.append(measure([sys.executable, "-m", "watcher", "--config", str(config), "check"]))
            naive = measure([*reader, "naive"])
            _expect(naive, len(uids), len(uids))
            events = count_events(folder / "events.db")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    floor_seconds = statistics.median(run.seconds for run in floors)
    watcher_seconds = statistics.median(run.seconds for run in checks)
    rss = max(run.peak_rss_mb for run in checks)
    speedup, overhead = naive.seconds / watcher_seconds, watcher_seconds / floor_seconds
    def verdict(met: bool) -> str:
        return "ok" if met else "MISSED"

    return [
        ("messages (notices, relevant)", f"{arguments.messages} ({len(notice_uids)}, {plan.expected_events})", ""),
        ("seed time s", f"{seed_seconds:.1f}", ""),
        ("naive s", f"{naive.seconds:.2f}", ""),
        ("floor s (median)", f"{floor_seconds:.2f}", ""),
        ("watcher s (median)", f"{watcher_seconds:.2f}", ""),
        ("naive / watcher", f"{speedup:.1f}x", f">= {SPEEDUP_TARGET:.0f}x {verdict(speedup >= SPEEDUP_TARGET)}"),
        ("watcher / floor", f"{overhead:.2f}x", f"<= {OVERHEAD_TARGET:.0f}x {verdict(overhead <= OVERHEAD_TARGET)}"),
        ("watcher peak RSS MB", f"{rss:.0f}", f"< {RSS_TARGET_MB:.0f} {verdict(rss < RSS_TARGET_MB)}"),
        ("floor / naive peak RSS MB", f"{max(r.peak_rss_mb for r in floors):.0f} / {naive.peak_rss_mb:.0f}", ""),
        ("events recorded", str(events), f"= {plan.expected_events} {verdict(events == plan.expected_events)}"),
        ("bodies fetched", str(fetched_bodies(checks[-1].stdout)), f"notices: {len(notice_uids)}"),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--messages", type=int, default=20_000, help="mailbox size (default 20000)")
    parser.add_argument("--notice-ratio", type=float, default=0.01, help="share of platform notices (default 0.01)")
    parser.add_argument("--runs", type=int, default=3, help="timed floor and watcher runs; medians are shown")
    parser.add_argument("--seed", type=int, default=20_000, help="random seed of the generated mail")
    parser.add_argument("--role", choices=("floor", "naive"), help=argparse.SUPPRESS)
    parser.add_argument("--job", type=Path, help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.role:
        job = Job.load(arguments.job)
        result = run_floor(job) if arguments.role == "floor" else run_naive(job)
        print(json.dumps(result))
        return
    rows = benchmark(arguments)
    width = max(len(name) for name, _, _ in rows)
    value_width = max(len(value) for _, value, _ in rows)
    print(f"{'metric':<{width}}  {'value':>{value_width}}  target")
    for name, value, target in rows:
        print(f"{name:<{width}}  {value:>{value_width}}  {target}".rstrip())


if __name__ == "__main__":
    main()
