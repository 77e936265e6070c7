"""Next steps for a notice: playbooks read from TOML data, looked up per platform × kind × reason.

The packaged files live in ``watcher/guidance/`` (one per platform plus ``generic.toml``); users may
add files that override single entries. A file looks like this::

    platform = "amazon"                     # or "generic"
    name.en = "Amazon"                      # how texts name the platform
    site.en = "Seller Central (…)"          # where to check the account, typed in by hand
    phishing_report.en = "Forward …"        # how to report a phishing copy

    [account_deactivated.en]                # platform × kind
    title = "…"
    steps = ["…", "…"]

    [account_deactivated.related_account.en]   # platform × kind × reason
    title = "…"
    steps = ["…"]

``generic.toml`` also holds ``default`` (the last fallback), ``phishing`` (the warning that replaces a
playbook when a notice looks forged) and ``unverified`` (steps put before a playbook whose notice
could not be authenticated). Texts may name ``{platform}``, ``{site}`` and ``{report}``; they are
filled from the platform's own data, never from email content. English (``en``) is required in
every entry; any other language is optional and falls back to English.
"""

from __future__ import annotations

import logging
import re
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

from watcher import model
from watcher.errors import RulesError

log = logging.getLogger(__name__)

GENERIC = "generic"
FALLBACK_LANGUAGE = "en"
PLACEHOLDERS = ("platform", "site", "report")
FACT_KEYS = ("name", "site", "phishing_report")
GENERIC_ONLY = ("default", "phishing", "unverified")

_LANGUAGE = re.compile(r"^[a-z]{2,3}$")
_PLATFORM = re.compile(r"^[a-z][a-z0-9_]*$")
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")


@dataclass(frozen=True, slots=True)
class Text:
    """One entry's words in one language; ``title`` is empty for the ``unverified`` entry."""

    title: str
    steps: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Entry:
    """One playbook entry: its texts keyed by language code (always including ``en``)."""

    texts: Mapping[str, Text]

    def text(self, language: str) -> Text:
        """Return the text in ``language``, or the English text when that language is missing."""
        return self.texts.get(language) or self.texts[FALLBACK_LANGUAGE]


@dataclass(frozen=True, slots=True)
class Playbooks:
    """Every loaded entry keyed by its source (``amazon/account_deactivated/related_account``),
    and per platform the facts texts refer to (``name``, ``site``, ``phishing_report``)."""

    entries: Mapping[str, Entry]
    facts: Mapping[str, Mapping[str, Mapping[str, str]]] = field(default_factory=dict)

    def lookup(
        self,
        platform: str | None,
        kind: str | None,
        reason: str | None,
        authenticity: str | None,
        language: str,
    ) -> model.Guidance:
        """Return the guidance for one notice, most specific entry first.

        Order: platform×kind×reason → platform×kind → generic kind×reason → generic kind →
        generic default. A ``suspected_phishing`` notice gets only the phishing warning; an
        ``unverified`` one gets a first step to confirm the notice on the platform's site.
        ``language`` may carry a region ("zh-CN"); a language without text falls back to English.
        """
        language = _base_language(language)
        values = self._values(platform, language)
        if authenticity == "suspected_phishing":
            text = self.entries[f"{GENERIC}/phishing"].text(language)
            return model.Guidance(
                title=_fill(text.title, values),
                steps=tuple(_fill(step, values) for step in text.steps),
                source=f"{GENERIC}/phishing",
            )
        source = next(key for key in _candidates(platform, kind, reason) if key in self.entries)
        text = self.entries[source].text(language)
        steps = text.steps
        if authenticity == "unverified":
            steps = self.entries[f"{GENERIC}/unverified"].text(language).steps + steps
        return model.Guidance(
            title=_fill(text.title, values),
            steps=tuple(_fill(step, values) for step in steps),
            source=source,
        )

    def _values(self, platform: str | None, language: str) -> dict[str, str]:
        """Return the placeholder values for ``platform``, each falling back to generic and English."""
        own = self.facts.get(platform or "", {})
        generic = self.facts.get(GENERIC, {})
        values: dict[str, str] = {}
        for placeholder, key in zip(PLACEHOLDERS, FACT_KEYS, strict=True):
            texts = own.get(key) or generic.get(key) or {}
            values[placeholder] = texts.get(language) or texts.get(FALLBACK_LANGUAGE, "")
        return values


def load_playbooks(extra_files: Sequence[Path] = ()) -> Playbooks:
    """Return the packaged playbooks with ``extra_files`` applied in order (later entries win).

    Raise RulesError naming the file and key path when a file cannot be read or is invalid, or
    when the generic ``default``, ``phishing`` or ``unverified`` entry is missing after loading.
    """
    entries: dict[str, Entry] = {}
    facts: dict[str, dict[str, Mapping[str, str]]] = {}
    sources: list[tuple[str, Traversable | Path]] = [
        (str(item), item) for item in _packaged_files()
    ]
    sources += [(str(path), path) for path in extra_files]
    for name, item in sources:
        try:
            data = tomllib.loads(item.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as error:
            raise RulesError(f"{name}: cannot read: {error}") from error
        except tomllib.TOMLDecodeError as error:
            raise RulesError(f"{name}: invalid TOML: {error}") from error
        platform, file_facts, file_entries = _parse_file(name, data)
        facts.setdefault(platform, {}).update(file_facts)
        entries.update(file_entries)
        log.debug("loaded %s guidance entries for %s from %s", len(file_entries), platform, name)
    missing = [key for key in GENERIC_ONLY if f"{GENERIC}/{key}" not in entries]
    if missing:
        raise RulesError(
            "guidance: no generic entry for " + ", ".join(missing) + " (expected in generic.toml)"
        )
    return Playbooks(entries=entries, facts=facts)


def _packaged_files() -> list[Traversable]:
    folder = resources.files("watcher").joinpath("guidance")
    return sorted(
        (item for item in folder.iterdir() if item.name.endswith(".toml")),
        key=lambda item: item.name,
    )


def _candidates(platform: str | None, kind: str | None, reason: str | None) -> Iterable[str]:
    """Yield the entry keys to try, most specific first, ending with the generic default."""
    for owner in ((platform,) if platform and platform != GENERIC else ()) + (GENERIC,):
        if kind and reason:
            yield f"{owner}/{kind}/{reason}"
        if kind:
            yield f"{owner}/{kind}"
    yield f"{GENERIC}/default"


def _base_language(language: str) -> str:
    """Return "zh" for "zh-CN", "zh_Hans", "ZH"; English when nothing usable is given."""
    base = re.split(r"[-_]", (language or "").strip().lower(), maxsplit=1)[0]
    return base or FALLBACK_LANGUAGE


def _fill(text: str, values: Mapping[str, str]) -> str:
    return _PLACEHOLDER.sub(lambda match: values[match.group(1)], text)


def _parse_file(
    name: str, data: dict[str, Any]
) -> tuple[str, dict[str, Mapping[str, str]], dict[str, Entry]]:
    """Return (platform, facts, entries) from one file's TOML; raise RulesError listing every problem."""
    problems: list[str] = []
    platform = data.get("platform")
    if not isinstance(platform, str) or not _PLATFORM.match(platform):
        problems.append(f"at 'platform': must be a platform id such as \"amazon\" or \"generic\", "
                        f"got {platform!r}")
        platform = "?"
    facts: dict[str, Mapping[str, str]] = {}
    entries: dict[str, Entry] = {}
    for key, value in data.items():
        if key == "platform":
            continue
        if key in FACT_KEYS:
            facts[key] = _parse_language_strings(key, value, problems)
        elif key in GENERIC_ONLY:
            if platform != GENERIC:
                problems.append(f"at '{key}': allowed only in a file with platform = \"generic\"")
            entry = _parse_entry(key, value, problems, needs_title=key != "unverified")
            if entry is not None:
                entries[f"{platform}/{key}"] = entry
        elif key in model.KINDS:
            entries.update(_parse_kind(platform, key, value, problems))
        else:
            problems.append(f"at '{key}': unknown key; expected platform, {', '.join(FACT_KEYS)}, "
                            f"{', '.join(GENERIC_ONLY)} or a kind id")
    if problems:
        raise RulesError(f"{name}: " + "; ".join(problems))
    return platform, facts, entries


def _parse_kind(platform: str, kind: str, value: Any, problems: list[str]) -> dict[str, Entry]:
    """Return the kind's own entry and its per-reason entries, keyed by source."""
    if not isinstance(value, dict):
        problems.append(f"at '{kind}': must be a table")
        return {}
    entries: dict[str, Entry] = {}
    for key in value:
        if key not in model.REASONS and not _LANGUAGE.match(key):
            problems.append(f"at '{kind}.{key}': unknown key; expected a language code such as "
                            f"\"en\" or a reason id ({', '.join(model.REASONS)})")
    # A kind table may hold only reason entries (a user file overriding one reason).
    own = {key: text for key, text in value.items() if _LANGUAGE.match(key)}
    if own:
        entry = _parse_entry(kind, own, problems, needs_title=True)
        if entry is not None:
            entries[f"{platform}/{kind}"] = entry
    for reason in (key for key in value if key in model.REASONS):
        entry = _parse_entry(f"{kind}.{reason}", value[reason], problems, needs_title=True)
        if entry is not None:
            entries[f"{platform}/{kind}/{reason}"] = entry
    return entries


def _parse_entry(path: str, value: Any, problems: list[str], *, needs_title: bool) -> Entry | None:
    """Return the entry at ``path`` (a table of language → text), or None after noting problems."""
    if not isinstance(value, dict):
        problems.append(f"at '{path}': must be a table of languages")
        return None
    count = len(problems)
    texts: dict[str, Text] = {}
    for language, text in value.items():
        where = f"{path}.{language}"
        if not _LANGUAGE.match(language):
            problems.append(f"at '{where}': unknown key; expected a language code such as \"en\"")
        elif not isinstance(text, dict):
            problems.append(f"at '{where}': must be a table with title and steps")
        else:
            parsed = _parse_text(where, text, problems, needs_title=needs_title)
            if parsed is not None:
                texts[language] = parsed
    if FALLBACK_LANGUAGE not in value:
        problems.append(f"at '{path}': missing '{FALLBACK_LANGUAGE}'; every entry needs English")
    return Entry(texts=texts) if len(problems) == count else None


def _parse_text(path: str, table: dict[str, Any], problems: list[str], *,
                needs_title: bool) -> Text | None:
    count = len(problems)
    allowed = ("title", "steps") if needs_title else ("steps",)
    for key in table:
        if key not in allowed:
            problems.append(f"at '{path}.{key}': unknown key; expected {' or '.join(allowed)}")
    title = table.get("title", "")
    if needs_title and not _is_text(title):
        problems.append(f"at '{path}.title': must be a non-empty string")
    else:
        _check_placeholders(f"{path}.title", title, problems)
    steps = table.get("steps")
    if not isinstance(steps, list) or not steps:
        problems.append(f"at '{path}.steps': must be a non-empty list of strings")
        return None
    for index, step in enumerate(steps):
        if not _is_text(step):
            problems.append(f"at '{path}.steps[{index}]': must be a non-empty string, got {step!r}")
        else:
            _check_placeholders(f"{path}.steps[{index}]", step, problems)
    return Text(title=title, steps=tuple(steps)) if len(problems) == count else None


def _parse_language_strings(path: str, value: Any, problems: list[str]) -> Mapping[str, str]:
    if not isinstance(value, dict):
        problems.append(f"at '{path}': must be a table of language = text")
        return {}
    for language, text in value.items():
        if not _LANGUAGE.match(language) or not _is_text(text):
            problems.append(f"at '{path}.{language}': must be a language code with a non-empty string")
    if FALLBACK_LANGUAGE not in value:
        problems.append(f"at '{path}': missing '{FALLBACK_LANGUAGE}'")
    return {language: text for language, text in value.items() if _is_text(text)}


def _check_placeholders(path: str, text: Any, problems: list[str]) -> None:
    if not isinstance(text, str):
        return
    for match in _PLACEHOLDER.finditer(text):
        if match.group(1) not in PLACEHOLDERS:
            problems.append(f"at '{path}': unknown placeholder {{{match.group(1)}}}; "
                            f"expected one of {', '.join('{' + name + '}' for name in PLACEHOLDERS)}")


def _is_text(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip())
