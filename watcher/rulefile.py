"""Reading one rule file's values: each checked for its type, each problem located.

Problems are collected, not raised, so that a rule file with several mistakes reports them all at
once as ``file: key.path[index]: problem`` (rules.load_rules raises them together).
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from watcher.errors import RulesError
from watcher.signals import Signal, branches, for_lowered


class Problems:
    """Collect located problems for one file; carries the named sentence vetoes (common.toml's
    [sentence_vetoes]) that its signals' ``unless_sentence`` may name."""

    def __init__(self, source: str, sentence_vetoes: dict[str, re.Pattern[str]] | None = None,
                 kind_veto: re.Pattern[str] | None = None) -> None:
        self.source = source
        self.items: list[str] = []
        self.sentence_vetoes = sentence_vetoes or {}
        self.kind_veto = kind_veto  # common.toml's kind_unless_sentence: added to every kind signal's own

    def add(self, where: str, problem: str) -> None:
        self.items.append(f"{self.source}: {where}: {problem}")


def compile_pattern(value: Any, where: str, problems: Problems) -> re.Pattern[str] | None:
    if not isinstance(value, str) or not value:
        problems.add(where, f"must be a non-empty string, got {value!r}")
        return None
    try:
        return re.compile(value, re.IGNORECASE | re.MULTILINE)
    except re.error as error:
        problems.add(where, f"invalid regex {value!r}: {error}")
        return None


def strings(table: dict[str, Any], key: str, where: str, problems: Problems) -> tuple[str, ...]:
    value = table.get(key, [])
    if not isinstance(value, list) or not all(isinstance(item, str) and item for item in value):
        problems.add(f"{where}{key}", "must be a list of non-empty strings")
        return ()
    return tuple(value)


def signals_of(
    table: dict[str, Any],
    key: str,
    where: str,
    problems: Problems,
    allowed: Sequence[str] | None = None,
    needs_value: bool = True,
    group: str | None = None,
) -> tuple[Signal, ...]:
    """Compile ``table[key]``, a list of {value, pattern} tables; ``allowed`` limits the values."""
    entries = table.get(key, [])
    if not isinstance(entries, list):
        problems.add(f"{where}{key}", "must be an array of tables")
        return ()
    signals = []
    for index, entry in enumerate(entries):
        located = f"{where}{key}[{index}]"
        if not isinstance(entry, dict):
            problems.add(located, "must be a table with 'pattern'")
            continue
        unknown = set(entry) - {"value", "pattern", "note", "unit", "unless_forwarded", "unless_sentence", "requires"}
        for name in sorted(unknown):
            problems.add(f"{located}.{name}", "unknown key")
        value = entry.get("value", "")
        if needs_value and (not isinstance(value, str) or not value):
            problems.add(f"{located}.value", "must be a non-empty string")
            continue
        if allowed is not None and value not in allowed:
            problems.add(f"{located}.value", f"unknown value {value!r} (one of {', '.join(allowed)})")
            continue
        pattern = compile_pattern(entry.get("pattern"), f"{located}.pattern", problems)
        if pattern is None:
            continue
        if group is not None and group not in pattern.groupindex:
            problems.add(f"{located}.pattern", f"needs a named group (?P<{group}>…)")
            continue
        unless_forwarded = entry.get("unless_forwarded", False)
        if not isinstance(unless_forwarded, bool):
            problems.add(f"{located}.unless_forwarded", "must be true or false")
            continue
        unless_sentence = None
        if "unless_sentence" in entry:
            unless_sentence = sentence_veto(entry["unless_sentence"], f"{located}.unless_sentence", problems)
            if unless_sentence is None:
                continue
        requires = None
        if "requires" in entry:
            requires = compile_pattern(entry["requires"], f"{located}.requires", problems)
            if requires is None:
                continue
        if key == "kind" and problems.kind_veto is not None:
            unless_sentence = _either(unless_sentence, problems.kind_veto)
        parts = branches(pattern)
        if group is not None and any(group not in part.pattern.groupindex for part in parts):
            problems.add(f"{located}.pattern", f"every alternative (|) needs the named group (?P<{group}>…)")
            continue
        # Both are searched in lower-cased text only.
        signals.append(Signal(rule=f"{problems.source}: {located}", value=str(value), pattern=pattern,
                              branches=parts, unless_forwarded=unless_forwarded, gate=Signal.gate_of(parts),
                              unless_sentence=for_lowered(unless_sentence) if unless_sentence else None,
                              requires=for_lowered(requires) if requires else None))
    return tuple(signals)


def sentence_veto(value: Any, where: str, problems: Problems) -> re.Pattern[str] | None:
    """Return the pattern of an ``unless_sentence``: a regular expression, or a list of names of
    [sentence_vetoes] in common.toml (any of them vetoes)."""
    if not isinstance(value, list):
        return compile_pattern(value, where, problems)
    unknown = [name for name in value if name not in problems.sentence_vetoes]
    if not value or unknown:
        known = ", ".join(sorted(problems.sentence_vetoes)) or "none"
        problems.add(where, f"names unknown sentence vetoes {unknown or value!r} (known: {known})")
        return None
    return re.compile("|".join(f"(?:{problems.sentence_vetoes[name].pattern})" for name in value), re.IGNORECASE)


def _either(first: re.Pattern[str] | None, second: re.Pattern[str]) -> re.Pattern[str]:
    return second if first is None else re.compile(f"(?:{first.pattern})|(?:{second.pattern})", first.flags)


def named_vetoes(common: dict[str, Any], problems: Problems) -> dict[str, re.Pattern[str]]:
    table = common.get("sentence_vetoes", {})
    if not isinstance(table, dict):
        problems.add("sentence_vetoes", "must be a table of name = pattern")
        return {}
    compiled = {name: compile_pattern(value, f"sentence_vetoes.{name}", problems) for name, value in table.items()}
    return {name: pattern for name, pattern in compiled.items() if pattern is not None}


def read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except OSError as error:
        raise RulesError(f"{path}: cannot be read: {error.strerror}") from error
    except tomllib.TOMLDecodeError as error:
        raise RulesError(f"{path.name}: invalid TOML: {error}") from error


def union(patterns: Sequence[str]) -> re.Pattern[str] | None:
    if not patterns:
        return None
    return re.compile("|".join(f"(?:{p})" for p in patterns), re.IGNORECASE)


def flag(table: dict[str, Any], key: str, problems: Problems) -> bool:
    value = table.get(key, False)
    if not isinstance(value, bool):
        problems.add(key, f"must be true or false, got {value!r}")
        return False
    return value


def single(common: dict[str, Any], key: str, problems: Problems) -> re.Pattern[str]:
    pattern = compile_pattern(common.get(key), key, problems)
    return pattern if pattern is not None else re.compile(r"(?!)")
