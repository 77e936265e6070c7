"""Classification benchmark: parse + classify one message, against mail-parser parsing it alone.

The budget (README) is that ``parse.parse_message`` followed by ``classify.classify`` costs at most
1.3 times what ``mailparser.parse_from_bytes`` alone costs on the same bytes. This script reads the
labelled corpus (../shared/corpus/*.eml; with ``--realmail`` also ../shared/realmail/**/*.eml),
loads the rules once, warms both paths up, then runs ``--rounds`` rounds. Each round times one pass
over every message with mail-parser alone and one pass with the watcher, in alternating order
(odd rounds start with the watcher), so that slow drift of the machine affects both alike.

Timing uses ``time.process_time`` — CPU time of this process — not wall time: both paths are pure
CPU work on bytes already in memory, so CPU time measures the same work while ignoring the time the
scheduler hands to other processes when the other core is busy (wall time would charge their work
to whichever path happened to be running). What remains is noise from cache and frequency effects;
the median over rounds of each path and of the per-round ratio is reported, which a single unlucky
round cannot move. Garbage collection stays enabled, as in the daemon.

Usage: ``python3 bench/classify.py [--rounds N] [--realmail] [--profile]``.
``--profile`` runs the watcher path under cProfile instead and prints the top functions.
"""

from __future__ import annotations

import argparse
import cProfile
import logging
import pstats
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
sys.path.insert(0, str(REPO))

import mailparser  # noqa: E402

from watcher.classify import classify  # noqa: E402
from watcher.parse import parse_message  # noqa: E402
from watcher.rules import RuleSet, load_rules  # noqa: E402

BUDGET = 1.3  # watcher / mail-parser at most
WARM_UP_PASSES = 3


def _messages(include_realmail: bool) -> list[bytes]:
    paths = sorted((SHARED / "corpus").glob("*.eml"))
    if include_realmail:
        paths += sorted((SHARED / "realmail").rglob("*.eml"))
    return [path.read_bytes() for path in paths]


def _mailparser_pass(messages: list[bytes], rules: RuleSet) -> None:
    for content in messages:
        mailparser.parse_from_bytes(content)


def _watcher_pass(messages: list[bytes], rules: RuleSet) -> None:
    for content in messages:
        classify(parse_message(content), rules)


def _timed(run: Callable[[list[bytes], RuleSet], None], messages: list[bytes], rules: RuleSet) -> float:
    start = time.process_time()
    run(messages, rules)
    return time.process_time() - start


def _profile(messages: list[bytes], rules: RuleSet, rounds: int) -> None:
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(rounds):
        _watcher_pass(messages, rules)
    profiler.disable()
    pstats.Stats(profiler).sort_stats("cumulative").print_stats(40)
    pstats.Stats(profiler).sort_stats("tottime").print_stats(30)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=20, help="timed rounds (default 20)")
    parser.add_argument("--realmail", action="store_true", help="add ../shared/realmail to the corpus")
    parser.add_argument("--profile", action="store_true", help="profile the watcher path instead")
    options = parser.parse_args()

    logging.getLogger("mailparser").setLevel(logging.ERROR)  # its per-part warnings would flood stderr
    messages = _messages(options.realmail)
    if not messages:
        print(f"no messages under {SHARED}", file=sys.stderr)
        return 1
    rules = load_rules()
    for _ in range(WARM_UP_PASSES):
        _mailparser_pass(messages, rules)
        _watcher_pass(messages, rules)
    if options.profile:
        _profile(messages, rules, options.rounds)
        return 0

    baseline: list[float] = []
    watcher: list[float] = []
    for round_number in range(options.rounds):
        order = [(_mailparser_pass, baseline), (_watcher_pass, watcher)]
        if round_number % 2:
            order.reverse()
        for run, times in order:
            times.append(_timed(run, messages, rules))

    count = len(messages)
    base_median = statistics.median(baseline)
    watcher_median = statistics.median(watcher)
    ratio = statistics.median(w / b for w, b in zip(watcher, baseline))
    verdict = "ok" if ratio <= BUDGET else "MISSED"
    print(f"messages: {count}, rounds: {options.rounds} (CPU time, median per round)")
    print(f"mail-parser alone:  {count / base_median:8.1f} msgs/s  ({base_median * 1000:.1f} ms a round)")
    print(f"parse + classify:   {count / watcher_median:8.1f} msgs/s  ({watcher_median * 1000:.1f} ms a round)")
    print(f"ratio (median of rounds): {ratio:.2f}  (budget <= {BUDGET}: {verdict})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
