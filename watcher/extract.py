"""Extract the fields of a notice from its text: deadline, ids, marketplace, reason text, language.

Every pattern comes from the RuleSet; this module only applies them. Deadlines follow
corpus/README.md: relative periods count from the Date header's UTC date (hours round up to whole
days); explicit dates are read in the marketplace's order and count only with a cue word ("on",
"by", "までに"…) and when not in the past. Review times, document windows and hold periods are not
deadlines.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone

from watcher import literals
from watcher.model import Evidence
from watcher.rules import Platform, RuleSet
from watcher.signals import digit_runs

log = logging.getLogger(__name__)

LANGUAGE_SAMPLE = 600  # characters of body read to decide the language: a bilingual notice is in the one it opens with
REASON_TEXT_CHARS = 600
_CUE_WINDOW = 36  # "entro e non oltre il mercoledì " fits
_VETO_WINDOW = 60
_SENTENCE_END = re.compile(r"(?<=[.!?。！？])\s+|\n")


@dataclass(frozen=True, slots=True)
class Found:
    """A value found in the text and the evidence for it."""

    value: str
    evidence: Evidence


def detect_language(text: str, rules: RuleSet) -> str:
    """Return the language id of ``text``: by script first (kana, Han), then by common words."""
    sample = text[:LANGUAGE_SAMPLE]
    scripts = () if sample.isascii() else rules.script_languages  # script patterns match no ASCII (rules.py)
    # A script decides when it is a fair share of the text, not a shop name in an English notice.
    needed = max(rules.script_minimum, rules.script_share * len("".join(sample.split()))) if scripts else 0
    for signal in scripts:
        if len(signal.pattern.findall(sample)) >= needed:
            return signal.value
    counts = [0] * len(rules.word_languages)
    index = rules.word_index
    for word in sample.lower().split():  # a word next to punctuation is not counted: enough for common words
        for position in index.get(word, ()):
            counts[position] += 1
    best = max(range(len(counts)), key=counts.__getitem__, default=-1)  # the first of the most used
    return rules.word_languages[best].language if best >= 0 and counts[best] else rules.default_language


def find_marketplace(subject: str, text: str, platform: Platform, rules: RuleSet) -> Found | None:
    """Return the regional site the notice names (subject first, then body, legal footers skipped)."""
    if platform.marketplace_pattern is None:
        return None
    for where, source in (("subject", subject), ("body", text)):
        for found in platform.marketplace_pattern.finditer(source):
            line_start = source.rfind("\n", 0, found.start()) + 1
            line_end = source.find("\n", found.end())
            line = source[line_start : line_end if line_end >= 0 else len(source)]
            if rules.boilerplate.search(line):
                continue
            value = found.group(1).lower()
            return Found(value, Evidence("marketplace", value, f"{platform.id} marketplaces", f"{where}: {found.group(0)}"))
    return None


def marketplace_of_sender(sender_domain: str, platform: Platform) -> Found | None:
    """Return the marketplace whose domain sent the mail, for platforms that write regionally."""
    if not platform.marketplace_from_sender:
        return None
    for candidate in sorted(platform.marketplaces, key=lambda m: -len(m.id)):
        if sender_domain == candidate.id or sender_domain.endswith("." + candidate.id):
            evidence = Evidence("marketplace", candidate.id, f"{platform.id} regional sender", sender_domain)
            return Found(candidate.id, evidence)
    return None


def date_order_for(platform: Platform, marketplace: str | None, language: str, rules: RuleSet) -> str:
    """Return the numeric date order of ``marketplace``; with none named, the order the notice's
    ``language`` writes (rules' language.date_order) unless the platform's order is fixed, else the
    platform's default."""
    for candidate in platform.marketplaces:
        if candidate.id == marketplace:
            return candidate.date_order
    if marketplace is None and not platform.date_order_fixed:
        return rules.language_date_order.get(language, platform.date_order)
    return platform.date_order


def _explicit_date(found: re.Match[str], order: str, rules: RuleSet) -> date | None:
    parts = found.groupdict()
    try:
        year = int(parts["y"])
        if parts.get("mon") is not None:
            month = rules.months.get(parts["mon"].lower().rstrip("."))
            if month is None:
                return None
            return date(year, month, int(parts["d"]))
        if parts.get("m") is not None:
            return date(year, int(parts["m"]), int(parts["d"]))
        first, second = int(parts["a"]), int(parts["b"])
        month, day = (second, first) if order == "dmy" else (first, second)
        if month > 12 and day <= 12:  # unambiguous the other way round
            month, day = day, month
        return date(year, month, day)
    except (ValueError, TypeError, KeyError):
        return None


_CLAUSE_BREAK = re.compile(r"[,;.!?\n，；。！？]")


def _clause(before: str, after: str) -> str:
    """Return the clause around a date or period: ``before`` from its last clause break, a space,
    ``after`` up to its first one."""
    starts = [found.end() for found in _CLAUSE_BREAK.finditer(before)]
    end = _CLAUSE_BREAK.search(after)
    return f"{before[starts[-1] if starts else 0 :]} {after[: end.start() if end else len(after)]}"


def find_deadline(
    text: str,
    sent: datetime | None,
    order: str,
    rules: RuleSet,
    *,
    relative_allowed: bool = True,
    lowered: str | None = None,
    runs: list[tuple[int, int]] | None = None,
) -> Found | None:
    """Return the earliest date by which the seller must act, or None. ``lowered`` and ``runs``
    (``text.lower()`` and its ``digit_runs``) may be passed when the caller has them already."""
    sent_day = sent.astimezone(timezone.utc).date() if sent is not None else None
    lowered = text.lower() if lowered is None else lowered
    candidates: list[tuple[date, Evidence]] = []
    present = literals.present_in(lowered)
    runs = digit_runs(lowered) if runs is None else runs
    if relative_allowed and sent_day is not None:
        for rule in rules.relative_deadlines:
            if rule.signal.excluded_by(present):
                continue
            for found in rule.signal.finditer(lowered, runs):
                before = lowered[max(0, found.start() - _VETO_WINDOW) : found.start()]
                after = lowered[found.end() : found.end() + _CUE_WINDOW]
                if rules.deadline_veto.search(before) or rules.deadline_platform_pays.search(_clause(before, after)):
                    continue
                amount = int(found.group("n"))
                days = amount if rule.unit == "days" else math.ceil(amount / 24)
                if not 0 < days <= 366:
                    continue
                value = sent_day + timedelta(days=days)
                candidates.append((value, Evidence("deadline", value.isoformat(), rule.signal.rule, found.group(0))))
    for signal in rules.explicit_dates:
        if signal.excluded_by(present):
            continue
        for found in signal.finditer(lowered, runs):
            before = lowered[max(0, found.start() - _CUE_WINDOW) : found.start()]
            after = lowered[found.end() : found.end() + _CUE_WINDOW]
            if not (rules.deadline_cue_before.search(before) or rules.deadline_cue_after.search(after)):
                continue
            if rules.deadline_platform_pays.search(_clause(before, after)):
                continue
            explicit = _explicit_date(found, order, rules)
            # A date on or before the day the mail was sent tells when something happened, not a deadline.
            if explicit is None or (sent_day is not None and explicit <= sent_day):
                continue
            candidates.append((explicit, Evidence("deadline", explicit.isoformat(), signal.rule, found.group(0))))
    if not candidates:
        return None
    value, evidence = min(candidates, key=lambda pair: pair[0])
    return Found(value.isoformat(), evidence)


def find_ids(
    text: str, rules: RuleSet, *, lowered: str | None = None, runs: list[tuple[int, int]] | None = None
) -> tuple[Found, ...]:
    """Return the identifiers in ``text`` (ASINs, complaint, case, ticket, violation, order ids);
    ``lowered`` and ``runs`` as for find_deadline."""
    seen: dict[str, Found] = {}
    lowered = text.lower() if lowered is None else lowered
    aligned = len(lowered) == len(text)  # lower() keeps positions for all but a few characters
    runs = digit_runs(lowered) if runs is None else runs
    present = literals.present_in(lowered)
    for signal in rules.id_rules:
        if signal.excluded_by(present):
            continue
        matches = signal.finditer(lowered, runs) if aligned else signal.pattern.finditer(text)
        for found in matches:
            start, end = found.span("id")
            value = text[start:end]
            if signal.value == "asin":
                value = value.upper()
            if value not in seen:
                seen[value] = Found(value, Evidence("ids", value, signal.rule, found.group(0)))
    return tuple(seen.values())


def find_hold_days(text: str, rules: RuleSet) -> Found | None:
    """Return the number of days funds are held, when the notice states one."""
    lowered = text.lower()
    for signal in rules.hold_days:
        found = signal.search(lowered)
        if found:
            return Found(found.group("n"), Evidence("hold_days", found.group("n"), signal.rule, found.group(0)))
    return None


def reason_text(text: str, rules: RuleSet) -> str | None:
    """Return the sentences that say why (after a "Why…?" heading, or a "because" sentence)."""
    heading = rules.reason_headings.search(text)
    if heading:
        lines: list[str] = []
        for line in text[heading.end() :].lstrip("\n").split("\n"):
            stripped = line.strip()
            if not stripped:
                if lines:
                    break
                continue
            if stripped.endswith(("?", "？")) or (lines and len(stripped) < 40 and not stripped[-1:] in ".。"):
                break
            lines.append(stripped)
        if lines:
            return _trim(" ".join(lines))
    span = _first_sentence_with_cue(text, rules)
    if span is None:
        return None
    # The sentence with the cue and the rest of its paragraph ("…because X. That is not allowed under
    # our drop-shipping policy.").
    paragraph_end = text.find("\n\n", span[1])
    return _trim(" ".join(text[span[0] : paragraph_end if paragraph_end >= 0 else len(text)].split()))


def _sentence_spans(text: str) -> Iterator[tuple[int, int]]:
    """Yield the (start, end) of each sentence, as ``_SENTENCE_END.split`` cuts ``text``."""
    start = 0
    for separator in _SENTENCE_END.finditer(text):
        yield start, separator.start()
        start = separator.end()
    yield start, len(text)


def _earliest(lowered: str, literals: tuple[str, ...], position: int) -> int | None:
    return min((at for at in (lowered.find(literal, position) for literal in literals) if at >= 0), default=None)


def _first_sentence_with_cue(text: str, rules: RuleSet) -> tuple[int, int] | None:
    """Return the (start, end) of the first sentence that ``reason_cues`` matches, or None.

    Every match holds one of ``rules.reason_cue_literals``, so the pattern runs only on sentences
    reaching past the next place where the lower-cased text has one (positions agree with ``text``
    when lower() kept its length), rather than on every sentence.
    """
    lowered = text.lower()
    literals = rules.reason_cue_literals
    if not literals or len(lowered) != len(text):
        return next(((start, end) for start, end in _sentence_spans(text) if rules.reason_cues.search(text[start:end])), None)
    earliest = _earliest(lowered, literals, 0)
    for start, end in _sentence_spans(text):
        if earliest is None:
            return None
        if end <= earliest:  # no cue literal starts in this sentence
            continue
        if rules.reason_cues.search(text[start:end]):
            return start, end
        earliest = _earliest(lowered, literals, end)
    return None


def _trim(text: str) -> str:
    if len(text) <= REASON_TEXT_CHARS:
        return text
    cut = text[:REASON_TEXT_CHARS].rsplit(" ", 1)[0]
    return cut + "…"

