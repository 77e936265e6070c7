"""Compiled signal patterns and the literal prefilters that keep matching them cheap.

A rule's regular expression is split at its top-level ``|`` into branches; for each, the literals every
match must contain are worked out from the parsed pattern (``required_literals``), so a branch whose
literals are absent from a text is never run. Patterns that need digits are searched only near digits.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from watcher import literals
from watcher.literals import may_match
from watcher.text import is_word


@dataclass(frozen=True, slots=True)
class Branch:
    """One top-level alternative of a signal's pattern, prepared to run on lower-cased text.

    ``triggers`` are groups of lower-case literals: every match contains one literal of each group,
    so when a group has none in the text the regex is not run at all. ``pattern`` is the source
    lower-cased and compiled case-sensitively, without its leading ``\b`` (``word_start``), which
    is checked by hand: both a case-insensitive pattern and a leading ``\b`` defeat the regex
    engine's literal prefix search, which makes it many times slower.
    """

    pattern: re.Pattern[str]
    word_start: bool
    triggers: tuple[tuple[str, ...], ...]
    digit_span: int = 0  # > 0: every match holds a digit and is at most this long (see near_digits)
    digit_run: int = 1  # every match holds at least this many digits in a row (see near_digits)

    def search(self, lowered: str, position: int = 0, end: int | None = None) -> re.Match[str] | None:
        """Return the first match at or after ``position`` (ending by ``end``), as the source
        pattern would find it."""
        end = len(lowered) if end is None else end
        if not self.word_start:
            return self.pattern.search(lowered, position, end)
        while (found := self.pattern.search(lowered, position, end)) is not None:
            start = found.start()
            before = start > 0 and is_word(lowered[start - 1])
            if before != (start < len(lowered) and is_word(lowered[start])):
                return found
            position = start + 1
        return None

    def near_digits(self, lowered: str, runs: Sequence[tuple[int, int]]) -> Iterator[re.Match[str]]:
        """Yield the matches ``finditer`` would, searching only within ``digit_span`` of ``runs``
        (the spans of ``digit_runs(lowered)``): the pattern has no lookaround, so cutting the text
        where no match can reach changes nothing, and prose without digits is skipped."""
        position, span = 0, self.digit_span
        if self.digit_run > 1:  # a run too short to hold the pattern's digits cannot anchor a match
            runs = [(start, end) for start, end in runs if end - start >= self.digit_run]
        for start, end in _windows(runs, span, len(lowered)):
            position = max(position, start)
            while (found := self.search(lowered, position, end)) is not None:
                yield found
                position = found.end()


_DIGITS = re.compile(r"\d+")
_SENTENCE_MARKS = ("\n", ". ", "! ", "? ", "; ", ": ", "。", "！", "？", "；")
_SENTENCE_WINDOW = 300


def sentence_before(lowered: str, start: int) -> str:
    """Return the text from the start of the sentence holding ``start`` up to it (at most
    _SENTENCE_WINDOW characters)."""
    prefix = lowered[max(0, start - _SENTENCE_WINDOW) : start]
    cut = 0
    for mark in _SENTENCE_MARKS:
        at = prefix.rfind(mark)
        if at >= 0 and at + len(mark) > cut:
            cut = at + len(mark)
    return prefix[cut:]


def digit_runs(lowered: str) -> list[tuple[int, int]]:
    """Return the spans of the runs of digits in ``lowered``, for ``Branch.near_digits``."""
    return [found.span() for found in _DIGITS.finditer(lowered)]


def _windows(runs: Sequence[tuple[int, int]], span: int, length: int) -> Iterator[tuple[int, int]]:
    """Yield the text windows within ``span`` characters of ``runs``, overlapping ones merged."""
    window: tuple[int, int] | None = None
    for start, end in runs:
        start, end = max(0, start - span), min(length, end + span)
        if window is not None and start <= window[1]:
            window = (window[0], end)
            continue
        if window is not None:
            yield window
        window = (start, end)
    if window is not None:
        yield window


@dataclass(frozen=True, slots=True)
class Signal:
    """One compiled pattern: when it matches, ``value`` is suggested; ``rule`` names its origin.

    ``branches`` split the pattern at its top-level ``|``: each alternative is prefiltered by its
    own literals and searched on its own, and the leftmost match (the earliest alternative on a
    tie) is the one the whole pattern would have found. Most signals are skipped by a few
    substring tests; this is what keeps classification cheap.
    """

    rule: str
    value: str
    pattern: re.Pattern[str]  # as written, case-insensitive
    branches: tuple[Branch, ...] = ()
    unless_forwarded: bool = False  # a not-a-notice signal that a forward's own cover note may trip
    # A match does not count when the part of its sentence before it matches this (lower-case text):
    # "once your account has been reactivated…" is an instruction, not news. None: every match counts.
    unless_sentence: re.Pattern[str] | None = None
    # A match counts only when the text also matches this somewhere ("access limited" is a security
    # lock only where the notice tells of an intrusion). None: no such condition.
    requires: re.Pattern[str] | None = None
    # Every branch needs one literal of its first trigger group; if a text has none of them all, no branch
    # can match and the signal is skipped with one set test. None: some branch has no trigger.
    gate: frozenset[str] | None = None

    @staticmethod
    def gate_of(branches: Sequence[Branch]) -> frozenset[str] | None:
        if not branches or any(not branch.triggers for branch in branches):
            return None
        return frozenset(literal for branch in branches for literal in branch.triggers[0])

    def excluded_by(self, present: frozenset[str] | None) -> bool:
        """Return True when ``present`` (``literals.present_in`` of a text) shows that no branch can
        match that text; None (a short text) excludes nothing."""
        return self.gate is not None and present is not None and present.isdisjoint(self.gate)

    def search(self, lowered: str) -> re.Match[str] | None:
        """Return the first match in ``lowered`` (a lower-cased text), or None."""
        present = literals.present_in(lowered)
        return None if self.excluded_by(present) else self.search_branches(lowered, self._live(present, lowered))

    def search_branches(self, lowered: str, live: Iterable[Branch]) -> re.Match[str] | None:
        """Return the first match of the branches ``live`` (those of this signal whose literals
        ``lowered`` holds, in their order) as the whole pattern would find it, or None."""
        best: re.Match[str] | None = None
        for branch in live:
            found = branch.search(lowered)
            while found is not None and self.vetoed(lowered, found.start()):
                found = branch.search(lowered, found.start() + 1)
            if found is not None and (best is None or found.start() < best.start()):
                best = found
        if best is not None and self.requires is not None and self.requires.search(lowered) is None:
            return None
        return best

    def _live(self, present: frozenset[str] | None, lowered: str) -> list[Branch]:
        """Return the branches whose trigger literals all occur: tested against ``present`` (the
        index's answer for a long text) in one loop, without a call per branch; a signal may have
        dozens of branches."""
        if present is None:
            return [branch for branch in self.branches if may_match(branch.triggers, lowered)]
        live = []
        for branch in self.branches:
            for group in branch.triggers:
                if present.isdisjoint(group):
                    break
            else:
                live.append(branch)
        return live

    def vetoed(self, lowered: str, start: int) -> bool:
        """Return True when ``unless_sentence`` matches the sentence of ``lowered`` up to ``start``."""
        return self.unless_sentence is not None and self.unless_sentence.search(sentence_before(lowered, start)) is not None

    def finditer(self, lowered: str, runs: Sequence[tuple[int, int]] | None = None) -> Iterator[re.Match[str]]:
        """Yield the matches in ``lowered`` (lower-case text), as the pattern as written would;
        ``runs`` (``digit_runs(lowered)``) lets a pattern that needs digits skip the prose."""
        if self.requires is not None and self.requires.search(lowered) is None:
            return
        live = self._live(literals.present_in(lowered), lowered)
        if runs is not None and len(live) == 1 and live[0].digit_span:
            yield from (found for found in live[0].near_digits(lowered, runs) if not self.vetoed(lowered, found.start()))
            return
        upcoming = [branch.search(lowered) for branch in live]
        position = 0
        while True:
            best_index = -1
            for index, branch in enumerate(live):
                found = upcoming[index]
                if found is not None and found.start() < position:
                    found = upcoming[index] = branch.search(lowered, position)
                if found is not None and (best_index < 0 or found.start() < upcoming[best_index].start()):  # type: ignore[union-attr]
                    best_index = index
            if best_index < 0:
                return
            found = upcoming[best_index]
            assert found is not None
            if not self.vetoed(lowered, found.start()):
                yield found
            position = max(found.end(), found.start() + 1)


class Ranked:
    """Signals in the order they are tried (the first to match wins), indexed by the first trigger
    literal of each branch: the branches a text can match are found from the literals it holds,
    a few dozen set operations, rather than by testing every branch of every signal."""

    def __init__(self, signals: Iterable[Signal]) -> None:
        self.signals = tuple(signals)
        # Every branch once, numbered in the order it is tried: (its signal, the branch, the trigger
        # groups after the first).
        self._branches: list[tuple[Signal, Branch, tuple[tuple[str, ...], ...]]] = []
        index: dict[str, list[int]] = {}
        always: list[int] = []  # branches without a trigger: any text may match them
        for signal in self.signals:
            for branch in signal.branches:
                number = len(self._branches)
                self._branches.append((signal, branch, branch.triggers[1:]))
                if not branch.triggers:
                    always.append(number)
                for literal in branch.triggers[0] if branch.triggers else ():
                    index.setdefault(literal, []).append(number)
        self._index = {literal: tuple(numbers) for literal, numbers in index.items()}
        self._literals = frozenset(index)
        self._always = frozenset(always)

    def __iter__(self) -> Iterator[Signal]:
        return iter(self.signals)

    def first(self, lowered: str, present: frozenset[str]) -> tuple[Signal, re.Match[str]] | None:
        """Return the first signal that matches ``lowered`` (lower-case) with its match, or None;
        ``present`` is ``literals.INDEX.present`` of ``lowered`` or of a text that holds it (for a
        short text too: one index pass beats testing the literals of hundreds of branches)."""
        for signal, live in self._live(present):
            found = signal.search_branches(lowered, live)
            if found is not None:
                return signal, found
        return None

    def _live(self, present: frozenset[str]) -> Iterator[tuple[Signal, list[Branch]]]:
        """Yield, in order and only as far as asked, each signal with those of its branches whose
        trigger literals are all in ``present``."""
        opened = set(self._always)
        for literal in present & self._literals:
            opened.update(self._index[literal])
        holder: Signal | None = None
        live: list[Branch] = []
        for number in sorted(opened):  # numbered in the order tried, so a signal's branches are adjacent
            signal, branch, later = self._branches[number]
            if signal is not holder:
                if holder is not None and live:
                    yield holder, live
                holder, live = signal, []
            for group in later:
                if present.isdisjoint(group):
                    break
            else:
                live.append(branch)
        if holder is not None and live:
            yield holder, live


_MIN_TRIGGER_SCORE = 3
_MAX_TRIGGER_GROUPS = 3


def _score(literals: frozenset[str]) -> int:
    """Return how selective a literal set is: its shortest member (non-ASCII characters count 3)."""
    return min(sum(1 if ord(ch) < 128 else 3 for ch in literal) for literal in literals)


def _lower_source(source: str) -> str:
    """Return a regex source that matches lower-cased text: letters lowered, escapes kept."""
    result: list[str] = []
    index = 0
    while index < len(source):
        char = source[index]
        if char == "\\" and index + 1 < len(source):
            result.append(source[index : index + 2])
            index += 2
        elif source.startswith("(?P", index):
            result.append("(?P")
            index += 3
        else:
            result.append(char.lower())
            index += 1
    return "".join(result)


_GLOBAL_FLAGS = re.compile(r"\(\?[aiLmsux]+\)")
_NUMBERED_REFERENCE = re.compile(r"\\[1-9]|\(\?\(")


def _class_end(source: str, index: int) -> int:
    """Return the index just after the character class that opens at ``source[index]``."""
    index += 1
    if source.startswith("^", index):
        index += 1
    if source.startswith("]", index):  # a leading ] is a literal
        index += 1
    while index < len(source) and source[index] != "]":
        index += 2 if source[index] == "\\" else 1
    return index + 1


def _top_level_alternatives(source: str) -> list[str]:
    """Return ``source`` split at its top-level ``|`` (outside groups and character classes)."""
    pieces: list[str] = []
    depth, index, start = 0, 0, 0
    while index < len(source):
        char = source[index]
        if char == "\\":
            index += 2
            continue
        if char == "[":
            index = _class_end(source, index)
            continue
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == "|" and depth == 0:
            pieces.append(source[start:index])
            start = index + 1
        index += 1
    pieces.append(source[start:])
    return pieces


def for_lowered(pattern: re.Pattern[str]) -> re.Pattern[str]:
    """Return ``pattern`` to run on lower-cased text: its source lowered and compiled case-sensitively,
    which the regex engine runs faster than the case-insensitive pattern (``pattern`` itself when
    lowering would change its meaning)."""
    try:
        return re.compile(_lower_source(pattern.pattern), pattern.flags & ~re.IGNORECASE)
    except re.error:
        return pattern


def _branch(source: str, flags: int) -> Branch:
    triggers = required_literals(re.compile(source, flags))
    literals.INDEX.add(literal for group in triggers for literal in group)
    lowered = _lower_source(source)
    word_start = lowered.startswith("\\b")
    try:
        fast = re.compile(lowered[2:] if word_start else lowered, re.MULTILINE)
    except re.error:  # lowering changed its meaning (rare): run the case-insensitive pattern
        return Branch(re.compile(source, flags), False, triggers)
    span = _digit_span(fast)
    return Branch(fast, word_start, triggers, span, _digit_run(fast) if span else 1)


_MAX_DIGIT_SPAN = 200
_WINDOW_SAFE = frozenset(
    {"LITERAL", "NOT_LITERAL", "IN", "ANY", "AT", "SUBPATTERN", "BRANCH", "MAX_REPEAT", "MIN_REPEAT"}
)


def _digit_span(pattern: re.Pattern[str]) -> int:
    """Return the longest match of ``pattern`` when every match holds a digit and the pattern looks
    no further than its match (no lookaround, no back-reference); else 0."""
    from re import _parser as sre_parse  # type: ignore[attr-defined]  # private; stable since Python 3.11
    try:
        parsed = sre_parse.parse(pattern.pattern, pattern.flags)
    except Exception:
        return 0
    items = list(parsed)
    if not items or str(items[0][0]) == "LITERAL":  # a literal prefix is found fast anyway
        return 0
    if not _only_safe(items) or not _needs_digit(items):
        return 0
    longest = int(parsed.getwidth()[1])
    return longest if 0 < longest <= _MAX_DIGIT_SPAN else 0


def _digit_run(pattern: re.Pattern[str]) -> int:
    """Return how many decimal digits in a row every match of ``pattern`` holds (at least 1)."""
    from re import _parser as sre_parse  # type: ignore[attr-defined]  # private; stable since Python 3.11
    try:
        return max(1, _longest_required_run(list(sre_parse.parse(pattern.pattern, pattern.flags))))
    except Exception:
        return 1


def _longest_required_run(items: Any) -> int:
    """Return the longest run of digits that every match of the parsed sequence ``items`` holds:
    adjacent digit items add up, anything else ends a run; alternatives count their weakest."""
    best = current = 0
    for op, argument in items:
        name = str(op)
        if name == "LITERAL" and chr(argument).isdecimal() or name == "IN" and _is_digit_class(argument):
            current += 1
        elif name in ("MAX_REPEAT", "MIN_REPEAT") and argument[2] and len(argument[2]) == 1 \
                and str(argument[2][0][0]) == "IN" and _is_digit_class(argument[2][0][1]):
            current += argument[0]  # \d{4}: its minimum count of digits in a row
            if argument[1] != argument[0]:  # a variable count: what follows is not sure to be adjacent
                best, current = max(best, current), 0
        else:
            inner = 0
            if name == "SUBPATTERN":
                inner = _longest_required_run(argument[-1])
            elif name == "BRANCH":
                inner = min(_longest_required_run(branch) for branch in argument[1])
            best, current = max(best, current, inner), 0
    return max(best, current)


def _children(op: str, argument: Any) -> list[Any]:
    if op == "SUBPATTERN":
        return [argument[-1]]
    if op == "BRANCH":
        return list(argument[1])
    if op in ("MAX_REPEAT", "MIN_REPEAT"):
        return [argument[2]]
    return []


def _only_safe(items: Any) -> bool:
    return all(
        str(op) in _WINDOW_SAFE and all(_only_safe(child) for child in _children(str(op), argument))
        for op, argument in items
    )


def _is_digit_class(members: Any) -> bool:
    """Return True when an IN set matches only decimal digits."""
    for op, argument in members:
        name = str(op)
        if name == "CATEGORY" and str(argument) == "CATEGORY_DIGIT":
            continue
        if name == "LITERAL" and chr(argument).isdecimal():
            continue
        if name == "RANGE" and all(chr(code).isdecimal() for code in range(argument[0], argument[1] + 1)):
            continue
        return False
    return bool(members)


def _needs_digit(items: Any) -> bool:
    """Return True when every match of the parsed sequence ``items`` holds a decimal digit."""
    for op, argument in items:
        name = str(op)
        if name == "LITERAL" and chr(argument).isdecimal():
            return True
        if name == "IN" and _is_digit_class(argument):
            return True
        if name == "SUBPATTERN" and _needs_digit(argument[-1]):
            return True
        if name in ("MAX_REPEAT", "MIN_REPEAT") and argument[0] >= 1 and _needs_digit(argument[2]):
            return True
        if name == "BRANCH" and all(_needs_digit(branch) for branch in argument[1]):
            return True
    return False


def branches(pattern: re.Pattern[str]) -> tuple[Branch, ...]:
    """Return the branches ``pattern`` runs as; one branch when splitting could change its meaning
    (global inline flags, numbered back-references, an alternative that does not compile alone)."""
    source, flags = pattern.pattern, pattern.flags
    pieces = _top_level_alternatives(source)
    if len(pieces) > 1 and not _GLOBAL_FLAGS.match(source) and not _NUMBERED_REFERENCE.search(source):
        try:
            for piece in pieces:
                re.compile(piece, flags)
        except re.error:
            pieces = [source]
    else:
        pieces = [source]
    return tuple(_branch(piece, flags) for piece in pieces)




def _necessary_sets(items: Any) -> list[frozenset[str]]:
    """Return literal sets such that every match of the parsed sequence ``items`` contains one
    literal of each set."""
    candidates: list[frozenset[str]] = []
    run: list[str] = []

    def close_run() -> None:
        if run:
            candidates.append(frozenset(["".join(run)]))
            run.clear()

    for op, argument in items:
        name = str(op)
        if name == "LITERAL":
            run.append(chr(argument).lower())
            continue
        if name == "BRANCH" and run:
            # The parser moves the prefix alternatives share before them ("re(?:instated|stored)"):
            # the prefix with each alternative's own leading literals is a far rarer set.
            prefix = "".join(run)
            candidates.append(frozenset(prefix + _leading_literals(branch) for branch in argument[1]))
        close_run()
        if name == "SUBPATTERN":
            candidates.extend(_necessary_sets(argument[-1]))
        elif name == "BRANCH":
            best = [_best(_necessary_sets(branch)) for branch in argument[1]]
            if all(best):
                candidates.append(frozenset().union(*best))  # type: ignore[arg-type]
        elif name in ("MAX_REPEAT", "MIN_REPEAT") and argument[0] >= 1:
            candidates.extend(_necessary_sets(argument[2]))
        elif name == "IN" and 0 < len(argument) <= 8 and all(str(member) == "LITERAL" for member, _ in argument):
            candidates.append(frozenset(chr(code).lower() for _, code in argument))  # e.g. [内內]
    close_run()
    return [c for c in candidates if c and all(c)]


def _leading_literals(items: Any) -> str:
    """Return the literal characters the parsed sequence ``items`` starts with (lower-case)."""
    leading = []
    for op, argument in items:
        if str(op) != "LITERAL":
            break
        leading.append(chr(argument).lower())
    return "".join(leading)


def _best(sets: list[frozenset[str]]) -> frozenset[str] | None:
    return max(sets, key=_score) if sets else None


def required_literals(pattern: re.Pattern[str]) -> tuple[tuple[str, ...], ...]:
    """Return groups of lower-case literals; every match of ``pattern`` contains one of each."""
    from re import _parser as sre_parse  # type: ignore[attr-defined]  # private; stable since Python 3.11
    try:
        parsed = sre_parse.parse(pattern.pattern, pattern.flags)
    except Exception:  # the pattern compiled, so this cannot happen; no filter is always safe
        return ()
    useful = [found for found in _necessary_sets(list(parsed)) if _score(found) >= _MIN_TRIGGER_SCORE]
    useful.sort(key=_score, reverse=True)
    chosen: list[frozenset[str]] = []
    for found in useful:  # a set whose every literal holds one of a chosen set's adds nothing to it
        if not any(all(any(part in whole for part in found) for whole in kept) for kept in chosen):
            chosen.append(found)
    return tuple(tuple(sorted(found, key=len, reverse=True)) for found in chosen[:_MAX_TRIGGER_GROUPS])
