"""Load and validate the rule data files (watcher/rules/*.toml plus user files) into a RuleSet.

``common.toml`` holds what is shared by every platform (kinds, severities, languages, deadline and
id patterns, phishing tells); each other file describes one platform (names, domains, marketplaces
and its own signals). A user file with an ``id`` extends or adds a platform; one without extends the
common data. Adding a platform or a language is a data change only. Every problem in a file is
collected and reported at once, located as ``file: key.path[index]: problem``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from watcher import concepts as concept_rules
from watcher.concepts import Concepts
from watcher.errors import RulesError
from watcher.model import KINDS, REASONS, SEVERITIES
from watcher.rulefile import (
    Problems,
    compile_pattern,
    flag,
    named_vetoes,
    read_toml,
    sentence_veto,
    signals_of,
    single,
    strings,
    union,
)
from watcher.signals import Ranked, Signal, for_lowered, required_literals

log = logging.getLogger(__name__)

RULES_DIR = Path(__file__).with_name("rules")
COMMON_FILE = "common.toml"
DATE_ORDERS = ("mdy", "dmy", "ymd")
UNITS = ("days", "hours")


@dataclass(frozen=True, slots=True)
class Marketplace:
    id: str
    date_order: str


@dataclass(frozen=True, slots=True)
class LinkException:
    """A non-platform link host that is legitimate when the text matches ``requires``."""

    host: str
    requires: re.Pattern[str]


@dataclass(frozen=True, slots=True)
class Platform:
    id: str
    names: re.Pattern[str]  # any of the platform's names, in every language
    name_list: tuple[str, ...]  # the same names, lower-case
    brands: tuple[str, ...]  # lower-case tokens used to recognise look-alike domains
    domains: tuple[str, ...]  # the platform's own mail and web domains (subdomains count)
    domain_set: frozenset[str]  # the same, for lookups
    link_exceptions: tuple[LinkException, ...]
    marketplaces: tuple[Marketplace, ...]
    marketplace_pattern: re.Pattern[str] | None
    marketplace_from_sender: bool  # the regional sender domain names the marketplace
    date_order: str
    date_order_fixed: bool  # one marketplace's order whatever the language (Walmart writes US dates in Spanish)
    reasons_first: tuple[str, ...]  # reasons tried before the common reason_order (Stripe: acceptable use)
    kind_signals: tuple[Signal, ...]
    reason_signals: tuple[Signal, ...]
    not_notice: tuple[Signal, ...]
    sources: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class RelativeRule:
    signal: Signal  # group "n" holds the number
    unit: str


@dataclass(frozen=True, slots=True)
class LanguageWords:
    """A language recognised by how many of its common words the text uses."""

    language: str
    words: frozenset[str]


@dataclass(frozen=True, slots=True)
class RuleSet:
    """Everything the classifier knows, compiled once."""

    platforms: tuple[Platform, ...]
    severity: dict[str, str]
    kind_order: tuple[str, ...]  # most to least decisive
    reason_order: tuple[str, ...]
    kinds_without_reason: tuple[str, ...]
    kinds_without_deadline: tuple[str, ...]
    kind_signals: tuple[Signal, ...]
    reason_signals: tuple[Signal, ...]
    not_notice: tuple[Signal, ...]
    funds_signals: tuple[Signal, ...]
    hold_days: tuple[Signal, ...]  # group "n"
    script_languages: tuple[Signal, ...]  # value = language, pattern = character class
    word_languages: tuple[LanguageWords, ...]
    word_index: dict[str, tuple[int, ...]]  # common word → positions in word_languages of the languages using it
    default_language: str
    script_minimum: int
    script_share: float  # and at least this share of the sample's visible characters
    language_date_order: dict[str, str]  # language -> numeric date order, for notices naming no marketplace
    free_mail: tuple[str, ...]
    forward_subject: re.Pattern[str]
    forwarded_from: re.Pattern[str]
    reply_subject: re.Pattern[str]
    scam_phrases: tuple[Signal, ...]
    lookalike_distance: int
    relative_deadlines: tuple[RelativeRule, ...]
    explicit_dates: tuple[Signal, ...]
    deadline_cue_before: re.Pattern[str]
    deadline_cue_after: re.Pattern[str]
    deadline_veto: re.Pattern[str]
    deadline_platform_pays: re.Pattern[str]
    months: dict[str, int]
    id_rules: tuple[Signal, ...]  # group "id"
    reason_headings: re.Pattern[str]
    reason_cues: re.Pattern[str]
    boilerplate: re.Pattern[str]
    sources: tuple[str, ...] = field(default=())
    reason_cue_literals: tuple[str, ...] = ()  # every reason_cues match holds one (lower-case); () = unknown
    ranked: dict[tuple[str, str], Ranked] = field(default_factory=dict)  # see ranked_signals and vetoes
    concepts: Concepts = field(default_factory=lambda: Concepts(words={}, rules=()))  # the second tier of kinds

    def platform(self, platform_id: str) -> Platform | None:
        """Return the platform with ``platform_id``, or None."""
        return next((p for p in self.platforms if p.id == platform_id), None)

    def ranked_signals(self, platform: Platform, field: str) -> Ranked:
        """Return the ``field`` ("kind" or "reason") signals that count for ``platform``: its own and
        the common ones, ordered by kind_order / reason_order (file order within one value), so
        that the first to match names the most decisive value."""
        return self.ranked[(platform.id, field)]

    def vetoes(self, platform: Platform, *, forwarded: bool = False) -> Ranked:
        """Return the not-a-notice signals for mail from ``platform`` (the common ones, then its own);
        ``forwarded``: without those a forward's own cover note may trip (unless_forwarded)."""
        return self.ranked[(platform.id, "forwarded vetoes" if forwarded else "vetoes")]

    def held_funds(self, platform: Platform) -> Ranked:
        """Return the signals that tell of held funds in mail from ``platform``: its funds_held kind
        signals, then the common funds signals (a notice of another kind may hold funds too)."""
        return self.ranked[(platform.id, "held funds")]


def _date_orders(language: dict[str, Any], problems: Problems) -> dict[str, str]:
    orders = language.get("date_order", {})
    if not isinstance(orders, dict) or any(value not in DATE_ORDERS for value in orders.values()):
        problems.add("language.date_order", f"must map languages to one of {', '.join(DATE_ORDERS)}")
        return {}
    return dict(orders)


def _language_words(language: dict[str, Any], problems: Problems) -> tuple[LanguageWords, ...]:
    entries = language.get("words", [])
    result = []
    for index, entry in enumerate(entries if isinstance(entries, list) else []):
        located = f"language.words[{index}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("value"), str):
            problems.add(f"{located}.value", "must be a language id")
            continue
        words = strings(entry, "words", f"{located}.", problems)
        result.append(LanguageWords(language=entry["value"], words=frozenset(w.lower() for w in words)))
    return tuple(result)


def _word_index(languages: tuple[LanguageWords, ...]) -> dict[str, tuple[int, ...]]:
    index: dict[str, list[int]] = {}
    for position, language in enumerate(languages):
        for word in language.words:
            index.setdefault(word, []).append(position)
    return {word: tuple(positions) for word, positions in index.items()}


def _platform(data: dict[str, Any], problems: Problems) -> dict[str, Any]:
    """Validate one platform file into plain parts; merged later with other files of the same id."""
    names = strings(data, "names", "", problems)
    domains = tuple(d.lower() for d in strings(data, "domains", "", problems))
    exceptions = []
    for index, entry in enumerate(data.get("link_exceptions", [])):
        located = f"link_exceptions[{index}]"
        host = entry.get("host") if isinstance(entry, dict) else None
        if not isinstance(host, str) or not host:
            problems.add(f"{located}.host", "must be a non-empty string")
            continue
        requires = compile_pattern(entry.get("requires"), f"{located}.requires", problems)
        if requires is not None:
            exceptions.append(LinkException(host=host.lower(), requires=requires))
    marketplaces = []
    for index, entry in enumerate(data.get("marketplaces", [])):
        located = f"marketplaces[{index}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("id"), str):
            problems.add(f"{located}.id", "must be a string")
            continue
        order = entry.get("date_order", data.get("date_order", "mdy"))
        if order not in DATE_ORDERS:
            problems.add(f"{located}.date_order", f"must be one of {', '.join(DATE_ORDERS)}")
            continue
        marketplaces.append(Marketplace(id=entry["id"].lower(), date_order=order))
    date_order = data.get("date_order", "mdy")
    if date_order not in DATE_ORDERS:
        problems.add("date_order", f"must be one of {', '.join(DATE_ORDERS)}")
    signals = data.get("signals", {})
    if not isinstance(signals, dict):
        problems.add("signals", "must be a table")
        signals = {}
    return {
        "names": names,
        "brands": tuple(b.lower() for b in strings(data, "brands", "", problems)),
        "domains": domains,
        "link_exceptions": tuple(exceptions),
        "marketplaces": tuple(marketplaces),
        "date_order": date_order,
        "marketplace_from_sender": flag(data, "marketplace_from_sender", problems),
        "date_order_fixed": flag(data, "date_order_fixed", problems),
        "reasons_first": _reasons_first(data, problems),
        "kind_signals": signals_of(signals, "kind", "signals.", problems, KINDS),
        "reason_signals": signals_of(signals, "reason", "signals.", problems, None),
        "not_notice": signals_of(signals, "not_notice", "signals.", problems, needs_value=False),
    }


def _reasons_first(data: dict[str, Any], problems: Problems) -> tuple[str, ...]:
    reasons = strings(data, "reasons_first", "", problems)
    unknown = [reason for reason in reasons if reason not in REASONS]
    if unknown:
        problems.add("reasons_first", f"unknown reasons {unknown!r} (one of {', '.join(REASONS)})")
    return tuple(reason for reason in reasons if reason in REASONS)


def _build_platform(platform_id: str, parts: list[dict[str, Any]], sources: list[str]) -> Platform:
    names = [n for part in parts for n in part["names"]] or [platform_id]
    marketplaces = tuple(m for part in parts for m in part["marketplaces"])
    ordered = sorted(marketplaces, key=lambda m: -len(m.id))
    market_pattern = (
        re.compile(
            # Not inside a longer host ("amazon.de-verify.example"); a German compound is fine ("eBay.de-Konto").
            r"(?<![a-z0-9.@/-])(" + "|".join(re.escape(m.id) for m in ordered) + r")(?!\.?[a-z0-9]|-[a-z0-9-]*\.)",
            re.IGNORECASE,
        )
        if ordered
        else None
    )
    name_pattern = union([re.escape(n) for n in names])
    assert name_pattern is not None
    return Platform(
        id=platform_id,
        names=name_pattern,
        name_list=tuple(dict.fromkeys(n.lower() for n in names)),
        brands=tuple(dict.fromkeys(b for part in parts for b in part["brands"])),
        domains=tuple(dict.fromkeys(d for part in parts for d in part["domains"])),
        domain_set=frozenset(d for part in parts for d in part["domains"]),
        link_exceptions=tuple(e for part in parts for e in part["link_exceptions"]),
        marketplaces=marketplaces,
        marketplace_pattern=market_pattern,
        marketplace_from_sender=any(part["marketplace_from_sender"] for part in parts),
        date_order_fixed=any(part["date_order_fixed"] for part in parts),
        reasons_first=tuple(dict.fromkeys(r for part in parts for r in part["reasons_first"])),
        date_order=parts[0]["date_order"],
        kind_signals=tuple(s for part in parts for s in part["kind_signals"]),
        reason_signals=tuple(s for part in parts for s in part["reason_signals"]),
        not_notice=tuple(s for part in parts for s in part["not_notice"]),
        sources=tuple(sources),
    )


def _common(data: dict[str, Any], problems: Problems) -> dict[str, Any]:
    """Validate the common data (one file or the merge of several)."""
    severity = data.get("severity", {})
    for kind, value in severity.items():
        if kind not in KINDS:
            problems.add(f"severity.{kind}", "unknown kind")
        elif value not in SEVERITIES:
            problems.add(f"severity.{kind}", f"must be one of {', '.join(SEVERITIES)}")
    for kind in KINDS:
        if kind not in severity:
            problems.add("severity", f"missing kind {kind!r}")
    kind_order = strings(data, "kind_order", "", problems)
    if sorted(kind_order) != sorted(KINDS):
        problems.add("kind_order", "must list every kind exactly once")
    signals = data.get("signals", {})
    language = data.get("language", {})
    deadline = data.get("deadline", {})
    authenticity = data.get("authenticity", {})
    extract = data.get("extract", {})
    relative = []
    for signal in signals_of(deadline, "relative", "deadline.", problems, needs_value=False, group="n"):
        relative.append(signal)
    units = [entry.get("unit") for entry in deadline.get("relative", []) if isinstance(entry, dict)]
    relative_rules = []
    for index, (signal, unit) in enumerate(zip(relative, units, strict=False)):
        if unit not in UNITS:
            problems.add(f"deadline.relative[{index}].unit", f"must be one of {', '.join(UNITS)}")
            continue
        relative_rules.append(RelativeRule(signal=signal, unit=unit))
    months = {str(k).lower(): v for k, v in deadline.get("months", {}).items()}
    if any(not isinstance(v, int) or not 1 <= v <= 12 for v in months.values()):
        problems.add("deadline.months", "every month must be an integer 1-12")
    reason_cues = single(extract, "reason_cues", problems)
    distance = authenticity.get("lookalike_distance", 2)
    if not isinstance(distance, int) or distance < 0:
        problems.add("authenticity.lookalike_distance", "must be a non-negative integer")
        distance = 2
    minimum = language.get("script_minimum", 5)
    if not isinstance(minimum, int):
        problems.add("language.script_minimum", "must be an integer")
        minimum = 5
    share = language.get("script_share", 0.0)
    if not isinstance(share, (int, float)) or not 0 <= share <= 1:
        problems.add("language.script_share", "must be a number from 0 to 1")
        share = 0.0
    scripts = signals_of(language, "script", "language.", problems)
    for index, script in enumerate(scripts):
        if any(script.pattern.search(chr(code)) for code in range(128)):  # detect_language skips ASCII text
            problems.add(f"language.script[{index}].pattern", "must match no ASCII character (scripts are non-Latin)")
    return {
        "concepts": concept_rules.load(
            data.get("concepts"), kind_order, KINDS, problems.add, problems.source, problems.sentence_vetoes
        ),
        "severity": dict(severity),
        "kind_order": kind_order,
        "reason_order": strings(data, "reason_order", "", problems),
        "kinds_without_reason": strings(data, "kinds_without_reason", "", problems),
        "kinds_without_deadline": strings(data, "kinds_without_deadline", "", problems),
        "kind_signals": signals_of(signals, "kind", "signals.", problems, KINDS),
        "reason_signals": signals_of(signals, "reason", "signals.", problems, None),
        "not_notice": signals_of(signals, "not_notice", "signals.", problems, needs_value=False),
        "funds_signals": signals_of(signals, "funds", "signals.", problems, needs_value=False),
        "hold_days": signals_of(signals, "hold_days", "signals.", problems, needs_value=False, group="n"),
        "script_languages": scripts,
        "word_languages": (word_languages := _language_words(language, problems)),
        "word_index": _word_index(word_languages),
        "default_language": language.get("default", "en"),
        "script_minimum": minimum,
        "script_share": float(share),
        "language_date_order": _date_orders(language, problems),
        "free_mail": tuple(d.lower() for d in strings(authenticity, "free_mail", "authenticity.", problems)),
        "forward_subject": single(authenticity, "forward_subject", problems),
        "forwarded_from": single(authenticity, "forwarded_from", problems),
        "reply_subject": single(authenticity, "reply_subject", problems),
        "scam_phrases": signals_of(authenticity, "scam_phrases", "authenticity.", problems, needs_value=False),
        "lookalike_distance": distance,
        "relative_deadlines": tuple(relative_rules),
        "explicit_dates": signals_of(deadline, "explicit", "deadline.", problems, needs_value=False),
        "deadline_cue_before": for_lowered(single(deadline, "cue_before", problems)),
        "deadline_cue_after": for_lowered(single(deadline, "cue_after", problems)),
        "deadline_veto": for_lowered(single(deadline, "veto", problems)),
        "deadline_platform_pays": for_lowered(single(deadline, "platform_pays", problems)),
        "months": months,
        "id_rules": signals_of(extract, "ids", "extract.", problems, group="id"),
        "reason_headings": single(extract, "reason_headings", problems),
        "reason_cues": reason_cues,
        "reason_cue_literals": (required_literals(reason_cues) or ((),))[0],
        "boilerplate": single(extract, "boilerplate", problems),
    }


def load_rules(extra_files: Sequence[Path] = ()) -> RuleSet:
    """Return the packaged rules extended by ``extra_files``; raise RulesError naming file and key."""
    files = sorted(RULES_DIR.glob("*.toml"))
    common_path = RULES_DIR / COMMON_FILE
    if common_path not in files:
        raise RulesError(f"{common_path}: missing")
    problems: list[str] = []
    common_data = read_toml(common_path)
    located_vetoes = Problems(COMMON_FILE)
    vetoes = named_vetoes(common_data, located_vetoes)
    located_vetoes.sentence_vetoes = vetoes
    kind_veto = (
        sentence_veto(common_data["kind_unless_sentence"], "kind_unless_sentence", located_vetoes)
        if "kind_unless_sentence" in common_data else None
    )
    problems.extend(located_vetoes.items)
    platform_parts: dict[str, list[dict[str, Any]]] = {}
    platform_sources: dict[str, list[str]] = {}
    extra_common: list[dict[str, Any]] = []
    for path in [f for f in files if f != common_path] + [Path(p) for p in extra_files]:
        data = read_toml(path)
        located = Problems(path.name, vetoes, kind_veto)
        platform_id = data.get("id")
        if platform_id is None:
            _check_extra_common(data, located)
            problems.extend(located.items)
            extra_common.append(data)
            continue
        if not isinstance(platform_id, str) or not re.fullmatch(r"[a-z][a-z0-9_]*", platform_id):
            located.add("id", "must be a lower-case identifier")
        else:
            platform_parts.setdefault(platform_id, []).append(_platform(data, located))
            platform_sources.setdefault(platform_id, []).append(path.name)
        problems.extend(located.items)
    if problems:
        raise RulesError("; ".join(problems))
    merged = _merge_common(common_data, extra_common)
    located_common = Problems(COMMON_FILE if not extra_common else f"{COMMON_FILE} (+ user files)", vetoes, kind_veto)
    common = _common(merged, located_common)
    problems.extend(located_common.items)
    if problems:
        raise RulesError("; ".join(problems))
    platforms = tuple(
        _build_platform(pid, parts, platform_sources[pid]) for pid, parts in platform_parts.items()
    )
    log.debug("loaded rules for %s platforms", len(platforms))
    return RuleSet(
        platforms=platforms,
        sources=tuple(str(f) for f in files) + tuple(str(p) for p in extra_files),
        ranked=_ranked(platforms, common),
        **common,
    )


def _ranked(platforms: tuple[Platform, ...], common: dict[str, Any]) -> dict[tuple[str, str], Ranked]:
    """Return RuleSet.ranked: per platform and field, the signals in the order classify tries them;
    signals whose value the order does not list never count and are left out. Also each platform's
    not-a-notice signals, all of them and those that still count in a forward."""
    ranked: dict[tuple[str, str], Ranked] = {}
    for field_name in ("kind", "reason"):
        order = common[f"{field_name}_order"]
        for platform in platforms:
            first = platform.reasons_first if field_name == "reason" else ()
            rank = {value: position for position, value in enumerate((*first, *(v for v in order if v not in first)))}
            own: tuple[Signal, ...] = getattr(platform, f"{field_name}_signals")
            candidates = [s for s in (*own, *common[f"{field_name}_signals"]) if s.value in rank]
            ranked[(platform.id, field_name)] = Ranked(sorted(candidates, key=lambda s: rank[s.value]))
    for platform in platforms:
        vetoes = (*common["not_notice"], *platform.not_notice)
        ranked[(platform.id, "vetoes")] = Ranked(vetoes)
        ranked[(platform.id, "forwarded vetoes")] = Ranked(s for s in vetoes if not s.unless_forwarded)
        held = [s for s in ranked[(platform.id, "kind")] if s.value == "funds_held"]
        ranked[(platform.id, "held funds")] = Ranked((*held, *common["funds_signals"]))
    return ranked


def _check_extra_common(data: dict[str, Any], problems: Problems) -> None:
    """Check a user file that extends the common data, so problems name that file's own keys."""
    signals = data.get("signals", {})
    if not isinstance(signals, dict):
        problems.add("signals", "must be a table")
        return
    signals_of(signals, "kind", "signals.", problems, KINDS)
    signals_of(signals, "reason", "signals.", problems, None)
    for key in ("not_notice", "funds"):
        signals_of(signals, key, "signals.", problems, needs_value=False)
    for kind, value in data.get("severity", {}).items():
        if kind not in KINDS or value not in SEVERITIES:
            problems.add(f"severity.{kind}", f"unknown kind or severity {value!r}")


def _merge_common(base: dict[str, Any], extras: list[dict[str, Any]]) -> dict[str, Any]:
    """Return ``base`` with each extra's tables merged in: lists are appended, values replaced."""
    merged: dict[str, Any] = {key: value for key, value in base.items()}
    for extra in extras:
        for key, value in extra.items():
            merged[key] = _merge_value(merged.get(key), value)
    return merged


def _merge_value(old: Any, new: Any) -> Any:
    if isinstance(old, dict) and isinstance(new, dict):
        combined = dict(old)
        for key, value in new.items():
            combined[key] = _merge_value(old.get(key), value)
        return combined
    if isinstance(old, list) and isinstance(new, list):
        return old + new
    return new
