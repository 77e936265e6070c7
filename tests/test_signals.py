"""The matching shortcuts (literal prefilters, split branches, digit windows) find what the rules'
patterns as written find."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from watcher import literals
from watcher.parse import parse_message
from watcher.rules import RuleSet, load_rules
from watcher.signals import Signal, digit_runs, required_literals

ROOT = Path(__file__).resolve().parents[1]
MAIL = sorted((ROOT.parent / "shared" / "corpus").glob("*.eml")) + sorted((ROOT / "tests" / "mail" / "classify").glob("*.eml"))
RULES = load_rules()


def _every_signal(rules: RuleSet) -> list[Signal]:
    found = [*rules.kind_signals, *rules.reason_signals, *rules.not_notice, *rules.funds_signals, *rules.hold_days,
             *rules.explicit_dates, *rules.id_rules, *(rule.signal for rule in rules.relative_deadlines)]
    for platform in rules.platforms:
        found += [*platform.kind_signals, *platform.reason_signals, *platform.not_notice]
    return found


SIGNALS = _every_signal(RULES)
DIGIT_SIGNALS = [*RULES.explicit_dates, *RULES.id_rules]
TEXTS = [f"{m.subject}\n{m.text}" for m in (parse_message(path.read_bytes()) for path in MAIL[:400])]


def _as_written(signal: Signal, lowered: str) -> list[tuple[int, int]]:
    """The spans the signal's own pattern finds, less those its unless_sentence discards; none when
    the text lacks what the signal requires."""
    if signal.requires is not None and signal.requires.search(lowered) is None:
        return []
    return [m.span() for m in signal.pattern.finditer(lowered) if not signal.vetoed(lowered, m.start())]


@pytest.mark.skipif(not TEXTS, reason="no mail to read")
def test_every_signal_finds_on_real_mail_what_its_pattern_finds() -> None:
    for text in TEXTS:
        lowered = text.lower()
        if len(lowered) != len(text):
            continue
        runs = digit_runs(lowered)
        for signal in SIGNALS:
            expected = _as_written(signal, lowered)
            found = signal.search(lowered)
            assert (found.span() if found else None) == (expected[0] if expected else None), signal.rule
            assert [m.span() for m in signal.finditer(lowered, runs)] == expected, signal.rule


RANKED = [RULES.ranked_signals(platform, field) for platform in RULES.platforms for field in ("kind", "reason")] + [
    RULES.vetoes(platform, forwarded=forwarded) for platform in RULES.platforms for forwarded in (False, True)]


@pytest.mark.skipif(not TEXTS, reason="no mail to read")
def test_a_ranked_list_finds_the_first_signal_whose_pattern_matches() -> None:
    for text in TEXTS[::4]:
        lowered = text.lower()
        if len(lowered) != len(text):
            continue
        for ranked in RANKED:
            expected = next(((s, spans[0]) for s in ranked if (spans := _as_written(s, lowered))), None)
            hit = ranked.first(lowered, literals.INDEX.present(lowered))
            assert (hit and (hit[0], hit[1].span())) == expected


DIGITS_AND_WORDS = st.lists(
    st.one_of(
        st.integers(0, 99_999_999).map(str),
        st.sampled_from(["/", "-", ".", " ", "年", "月", "日", "on ", "by ", "march ", "mars ", "2026", "12", "05",
                         "b0", "asin ", "order ", "complaint id: ", "\n", "111-2222222-3333333"]),
    ),
    max_size=40,
).map("".join)


@settings(max_examples=300, deadline=None)
@given(DIGITS_AND_WORDS)
def test_patterns_that_need_digits_are_found_near_digits_exactly(text: str) -> None:
    lowered = text.lower()
    runs = digit_runs(lowered)
    for signal in DIGIT_SIGNALS:
        assert [m.span() for m in signal.finditer(lowered, runs)] == _as_written(signal, lowered), signal.rule


def test_a_sentence_veto_reads_only_the_sentence_before_the_match() -> None:
    pattern = re.compile(r"account has been reactivated", re.IGNORECASE)
    signal = RULES.kind_signals[0].__class__(
        rule="test", value="reinstated", pattern=pattern, branches=(), unless_sentence=re.compile(r"\bonce\b")
    )
    text = "once you pay, we review. your account has been reactivated."
    assert not signal.vetoed(text, text.index("account"))
    assert signal.vetoed("once your account has been reactivated", len("once your "))


def test_a_prefix_the_parser_moved_out_of_alternatives_is_read_with_each_of_them() -> None:
    # The parser turns (reinstated|restored|reactivated) into re(?:instated|stored|activated), whose
    # parts alone are common ("activated" is in every "deactivated"): the triggers keep them whole.
    triggers = required_literals(re.compile(r"\baccount (is|was) (reinstated|restored|reactivated)", re.IGNORECASE))
    assert ("reactivated", "reinstated", "restored") in triggers
    assert all("activated" not in group for group in triggers)
