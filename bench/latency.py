"""Latency benchmark: how long after an APPEND the notification reaches the channel, push and polling.

A private Dovecot on 127.0.0.1 and an HTTP sink (Apprise ``json://``) are started; ``python -m watcher run``
watches the mailbox with one channel pointing at the sink. ``--messages`` relevant notices (the demo notice
``watcher/demo/01-deactivated.eml``, each with its own Message-ID and a numbered subject) are appended one by
one at seeded random intervals of 0.7-1.5 s, so that each is its own IDLE wake-up, and every POST the sink
receives is matched to its message by the number in its subject. Three latencies are measured from the moment
the APPEND is sent:

- floor: a bare imapclient connection IDLEs on the same mailbox during the IDLE phase, and its time to the
  untagged EXISTS is what no IDLE client can beat (Dovecot batches IDLE wake-ups by about 0.5 s);
- watcher IDLE: ``poll_seconds = 3600``, so only push can find the mail in time;
- watcher polling: a second Dovecot that does not advertise IDLE (its ``imap_capability`` is the first one's
  without IDLE), so the watcher falls back to polling, with ``poll_seconds = 1``.

Usage: ``python3 bench/latency.py [--messages N] [--seed S]``.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path
from typing import TYPE_CHECKING, Self

if TYPE_CHECKING:
    import pwd

    from watcher.sandbox import HttpSink, LocalDovecot, Mailbox

REPO = Path(__file__).resolve().parent.parent
NOTICE = REPO / "watcher" / "demo" / "01-deactivated.eml"
ACCOUNT = "bench"
MIN_GAP, MAX_GAP = 0.7, 1.5  # seconds between appends: longer than Dovecot's ~0.5 s IDLE batching
IDLE_POLL_SECONDS = 3600  # the IDLE phase: the periodic check never runs, only push finds the mail
POLL_SECONDS = 1  # the polling phase
READY_TIMEOUT = 30.0  # seconds for the watcher to reach IDLE (or its first check)
DRAIN_TIMEOUT = 30.0  # seconds after the last append for the last notifications to arrive
P50_TARGET, P99_TARGET = 0.1, 0.5  # watcher IDLE minus floor, seconds
TOKEN = re.compile(rb"latency-probe-(\d+)")


# --- the mail ------------------------------------------------------------------------------------------

def probe(template: bytes, number: int, now: datetime) -> bytes:
    """Return the notice with a unique Message-ID, today's Date and ``latency-probe-<number>`` in its Subject."""
    split = re.search(rb"\r?\n\r?\n", template)
    end = split.start() if split else len(template)
    head, rest = template[:end], template[end:]
    tag = f"latency-probe-{number:05d}".encode()
    replacements = (
        (rb"(?im)^Message-ID:[^\r\n]*", b"Message-ID: <" + tag + b".notice@amazon.com>"),
        (rb"(?im)^Subject:[^\r\n]*", lambda match: match.group(0) + b" (" + tag + b")"),
        (rb"(?im)^Date:[^\r\n]*", b"Date: " + format_datetime(now).encode()),
    )
    for pattern, replacement in replacements:
        head, found = re.subn(pattern, replacement, head, count=1)
        if not found:
            raise RuntimeError(f"{NOTICE.name} has no header matching {pattern!r}")
    return head + rest


@dataclass(frozen=True, slots=True)
class Appended:
    """One probe message: its number and the monotonic time its APPEND was sent."""

    number: int
    sent: float


def append_probes(mailbox: Mailbox, first: int, count: int, rng: random.Random) -> list[Appended]:
    """Append ``count`` probes numbered from ``first`` over one connection, pausing a random gap before each."""
    template = NOTICE.read_bytes()
    appended: list[Appended] = []
    with mailbox.connect() as client:
        for number in range(first, first + count):
            time.sleep(rng.uniform(MIN_GAP, MAX_GAP))
            message = probe(template, number, datetime.now(UTC))
            sent = time.monotonic()
            client.append("INBOX", message)
            appended.append(Appended(number, sent))
    return appended


# --- the floor: a bare IDLE client ----------------------------------------------------------------------

class FloorClient(threading.Thread):
    """IDLEs on INBOX with plain imapclient and records when each untagged EXISTS arrives."""

    def __init__(self, mailbox: Mailbox) -> None:
        super().__init__(name="floor-idle", daemon=True)
        from imapclient import IMAPClient

        self.client = IMAPClient(mailbox.host, port=mailbox.port, ssl=False, timeout=30)
        self.client.login(mailbox.username, mailbox.password)
        self.base = int(self.client.select_folder("INBOX", readonly=True)[b"EXISTS"])
        self.client.idle()
        self.exists: list[tuple[int, float]] = []  # (message count announced, monotonic arrival)
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            for item in self.client.idle_check(timeout=0.2):
                if isinstance(item, tuple) and len(item) > 1 and item[1] == b"EXISTS":
                    self.exists.append((int(item[0]), time.monotonic()))

    def stop(self) -> None:
        self.stopping.set()
        self.join(timeout=5)
        self.client.idle_done()
        self.client.logout()

    def latencies(self, appended: list[Appended]) -> list[float]:
        """APPEND → EXISTS per probe: the first EXISTS whose count includes it (the k-th probe is message
        ``base + k``, the floor having connected before the first)."""
        result = []
        for position, item in enumerate(appended, start=1):
            arrival = next((when for count, when in self.exists if count >= self.base + position), None)
            if arrival is not None:
                result.append(arrival - item.sent)
        return result


# --- the watcher ------------------------------------------------------------------------------------------

def write_config(folder: Path, mailbox: Mailbox, channel_url: str, poll_seconds: int) -> Path:
    """Write a watcher.toml for one account and one json:// channel; return its path."""
    (folder / "imap-password").write_text(mailbox.password, encoding="utf-8")
    (folder / "imap-password").chmod(0o600)
    path = folder / "watcher.toml"
    path.write_text(f"""\
[storage]
database = "events.db"

[schedule]
poll_seconds = {poll_seconds}

[[accounts]]
name = "{ACCOUNT}"
host = "127.0.0.1"
port = {mailbox.port}
security = "none"
username = "{mailbox.username}"
password_file = "imap-password"
folders = ["INBOX"]

[[channels]]
name = "sink"
url = "{channel_url}"
""", encoding="utf-8")
    path.chmod(0o600)
    return path


class WatcherProcess:
    """``python -m watcher -v --config … run`` (``-vv`` to debug) with its log in a file; a context manager
    that stops it."""

    def __init__(self, config: Path, log: Path, verbosity: str) -> None:
        self.log = log
        self._output = log.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "watcher", verbosity, "--config", str(config), "run"],
            cwd=REPO, stdout=self._output, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env={**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}, start_new_session=True)

    def wait_for_log(self, needle: str, timeout: float = READY_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while needle not in self.log.read_text(errors="replace"):
            if self.process.poll() is not None or time.monotonic() > deadline:
                tail = "\n".join(self.log.read_text(errors="replace").splitlines()[-30:])
                raise RuntimeError(f"the watcher never logged {needle!r}:\n{tail}")
            time.sleep(0.05)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_exc: object) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self._output.close()


def received_latencies(sink: HttpSink, appended: list[Appended]) -> list[float]:
    """APPEND → POST per probe, matched by the probe number in the notification; each probe counts once."""
    sent = {item.number: item.sent for item in appended}
    arrivals: dict[int, float] = {}
    for request in list(sink.requests):
        found = TOKEN.search(request.raw)
        if found and int(found.group(1)) in sent:
            arrivals.setdefault(int(found.group(1)), request.arrived)
    return [arrivals[number] - sent[number] for number in sorted(arrivals)]


def wait_for_notifications(sink: HttpSink, appended: list[Appended]) -> list[float]:
    """Wait until every probe's notification arrived, or DRAIN_TIMEOUT; return the latencies that came."""
    deadline = time.monotonic() + DRAIN_TIMEOUT
    while len(latencies := received_latencies(sink, appended)) < len(appended) and time.monotonic() < deadline:
        time.sleep(0.1)
    return latencies


# --- the phases ------------------------------------------------------------------------------------------

def make_no_idle_dovecot(capabilities: list[str]) -> LocalDovecot:
    """Return a LocalDovecot whose post-login CAPABILITY is ``capabilities`` (IDLE left out)."""
    from watcher.sandbox import LocalDovecot

    class NoIdleDovecot(LocalDovecot):
        def _render_config(self, root: Path, account: pwd.struct_passwd) -> str:
            return super()._render_config(root, account) + f"imap_capability = {' '.join(capabilities)}\n"

    return NoIdleDovecot()


@dataclass(frozen=True, slots=True)
class Phase:
    """What one phase measured: the latencies that arrived and how many probes were sent."""

    latencies: list[float]
    sent: int
    log: Path


def idle_phase(dovecot: LocalDovecot, sink: HttpSink, folder: Path, count: int, rng: random.Random,
               verbosity: str) -> tuple[Phase, Phase, list[str]]:
    """The watcher in IDLE with the floor client IDLEing beside it; return both and the server's capabilities."""
    mailbox = dovecot.add_user("idle")
    with mailbox.connect() as client:
        capabilities = [item.decode() for item in client.capabilities()]
    config = write_config(folder, mailbox, sink.url(), IDLE_POLL_SECONDS)
    with WatcherProcess(config, folder / "watcher-idle.log", verbosity) as watcher:
        watcher.wait_for_log(f"{ACCOUNT}/INBOX: IDLE")
        floor = FloorClient(mailbox)
        floor.start()
        try:
            appended = append_probes(mailbox, 1, count, rng)
            latencies = wait_for_notifications(sink, appended)
        finally:
            floor.stop()
    return (Phase(floor.latencies(appended), count, watcher.log), Phase(latencies, count, watcher.log),
            capabilities)


def polling_phase(capabilities: list[str], sink: HttpSink, folder: Path, count: int, rng: random.Random,
                  verbosity: str) -> Phase:
    """The watcher against a Dovecot without IDLE, checking every POLL_SECONDS."""
    without_idle = [item for item in capabilities if item.upper() != "IDLE"]
    with make_no_idle_dovecot(without_idle) as dovecot:
        mailbox = dovecot.add_user("polling")
        config = write_config(folder, mailbox, sink.url(), POLL_SECONDS)
        with WatcherProcess(config, folder / "watcher-polling.log", verbosity) as watcher:
            watcher.wait_for_log("does not offer IDLE")
            watcher.wait_for_log(f"{ACCOUNT}: checked")
            appended = append_probes(mailbox, count + 1, count, rng)  # numbers after the IDLE phase's
            return Phase(wait_for_notifications(sink, appended), count, watcher.log)


# --- the report ------------------------------------------------------------------------------------------

def percentiles(values: list[float]) -> tuple[float, float, float, float]:
    """Return p50, p95, p99 and max (inclusive method, so they stay within the samples)."""
    if len(values) < 2:
        only = values[0] if values else float("nan")
        return only, only, only, only
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return cuts[49], cuts[94], cuts[98], max(values)


def report(rows: list[tuple[str, Phase]]) -> list[str]:
    """Return the table lines and the two target checks."""
    lines = [f"{'mode':<28} {'n':>8} {'p50 s':>7} {'p95 s':>7} {'p99 s':>7} {'max s':>7}"]
    stats = {}
    for name, phase in rows:
        stats[name] = percentiles(phase.latencies)
        p50, p95, p99, top = stats[name]
        count = f"{len(phase.latencies)}/{phase.sent}"
        lines.append(f"{name:<28} {count:>8} {p50:7.3f} {p95:7.3f} {p99:7.3f} {top:7.3f}")
    floor, watcher = stats[rows[0][0]], stats[rows[1][0]]
    lines.append("")
    for label, index, target in (("p50", 0, P50_TARGET), ("p99", 2, P99_TARGET)):
        over = watcher[index] - floor[index]
        verdict = "ok" if over <= target else "MISSED"
        lines.append(f"watcher IDLE {label} - floor {label} = {over:.3f} s  (target <= {target:.1f} s)  {verdict}")
    return lines


def benchmark(arguments: argparse.Namespace) -> list[str]:
    sys.path.insert(0, str(REPO))
    from watcher.sandbox import HttpSink, LocalDovecot

    rng = random.Random(arguments.seed)
    verbosity = "-vv" if arguments.debug_logs else "-v"
    folder = Path(tempfile.mkdtemp(prefix="watcher-latency-"))
    try:
        with HttpSink() as sink:
            idle_folder, polling_folder = folder / "idle", folder / "polling"
            idle_folder.mkdir()
            polling_folder.mkdir()
            with LocalDovecot() as dovecot:
                floor, idle, capabilities = idle_phase(dovecot, sink, idle_folder, arguments.messages, rng,
                                                        verbosity)
            polling = polling_phase(capabilities, sink, polling_folder, arguments.messages, rng, verbosity)
        if arguments.debug_logs:
            arguments.debug_logs.mkdir(parents=True, exist_ok=True)
            for phase in (idle, polling):
                shutil.copy(phase.log, arguments.debug_logs / phase.log.name)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return report([("floor (bare imapclient IDLE)", floor), ("watcher IDLE", idle),
                   (f"watcher polling ({POLL_SECONDS} s)", polling)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--messages", type=int, default=100, help="probes appended per phase (default 100)")
    parser.add_argument("--seed", type=int, default=100, help="random seed of the gaps between appends")
    parser.add_argument("--debug-logs", type=Path, metavar="DIR",
                        help="run the watcher with -vv (slower) and copy its logs of both phases into DIR")
    arguments = parser.parse_args()
    if arguments.messages < 1:
        parser.error("--messages must be at least 1")
    for line in benchmark(arguments):
        print(line)


if __name__ == "__main__":
    main()
