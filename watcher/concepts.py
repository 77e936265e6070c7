"""The second tier of kind recognition: concepts that meet in one sentence.

The kind signals (rules TOML ``[[signals.kind]]``) are phrases: precise, but a notice worded in a
way none of them foresaw is missed. When none matches, the notice is read sentence by sentence (the
subject is one of them) and a kind is recognised when every concept of one of its ``[[concepts.kind]]``
entries occurs in one sentence (and those it needs "anywhere" somewhere in the message) and none
of the concepts that entry excludes does: "Ihre Auszahlungen
wurden pausiert" holds a payout word and a pause word, so funds are held, whatever the grammar
around them. The first sentence that satisfies an entry decides (a notice says what happened first,
why later); entries are tried in kind_order within a sentence. Concepts are lists of lower-case
words in every language (``[concepts.words]``); a word written with a leading space must start a
word ("@other" includes the words of concept "other").
"""

from __future__ import annotations

import bisect
import re
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import ahocorasick_rs

from watcher.model import Evidence

MAX_CHARS = 20_000  # text read sentence by sentence
_SENTENCE_END = re.compile(r"[.!?;](?=\s|$)|[。！？；\n]")
# Read as spaces when words are looked up, so that " word" also finds a word after punctuation.
_PUNCTUATION = str.maketrans({char: " " for char in "\t\r\n.,;:!?()[]{}<>\"'«»“”‘’/|*•·、。，；：！？（）「」『』【】"})


@dataclass(frozen=True, slots=True)
class ConceptRule:
    """One [[concepts.kind]] entry: ``value`` when ``required`` all meet in a sentence without ``excluded``."""

    rule: str
    value: str
    required: frozenset[str]
    excluded: frozenset[str]
    unless: re.Pattern[str] | None = None  # a sentence this matches does not count (named sentence vetoes)
    anywhere: frozenset[str] = frozenset()  # concepts the message must hold somewhere, in any sentence


@dataclass(slots=True)
class Concepts:
    """The concept words and the rules that combine them; matching builds one automaton, lazily."""

    words: dict[str, tuple[str, ...]]
    rules: tuple[ConceptRule, ...]  # in the order they are tried
    subject_has: frozenset[str] = frozenset()  # concepts every subject counts as holding
    # Built on first use: the automaton of every concept word (None without words), and each word's concepts.
    _automaton: tuple[ahocorasick_rs.AhoCorasick | None, list[tuple[str, ...]]] | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def first(self, subject: str, text: str) -> Evidence | None:
        """Return the evidence for the first rule that a sentence of ``subject`` or ``text`` satisfies."""
        if not self.rules:
            return None
        sentences = _sentences(subject, text[:MAX_CHARS])
        held = self._concepts_by_sentence(sentences)
        subject_count = sum(1 for start, _, _ in sentences if start < len(subject) + 1)
        for index in range(subject_count):
            held.setdefault(index, set()).update(self.subject_has)
        everywhere = set().union(*held.values())
        for index in sorted(held):
            concepts = held[index]
            for rule in self.rules:
                if not (rule.required <= concepts and rule.excluded.isdisjoint(concepts) and rule.anywhere <= everywhere):
                    continue
                sentence = " ".join(sentences[index][2].split())
                if rule.unless is None or rule.unless.search(sentence.lower()) is None:
                    met = " + ".join(sorted(rule.required))
                    return Evidence("kind", rule.value, f"{rule.rule} ({met})", sentence[:160])
        return None

    def _concepts_by_sentence(self, sentences: list[tuple[int, int, str]]) -> dict[int, set[str]]:
        joined = "\n".join(sentence for _, _, sentence in sentences)
        lowered = " " + joined.lower().translate(_PUNCTUATION)
        if len(lowered) != len(joined) + 1:  # lower() changed a length: positions would drift
            lowered = " " + "".join(char.lower()[:1] for char in joined).translate(_PUNCTUATION)
        starts = []
        position = 0
        for _, _, sentence in sentences:
            starts.append(position)
            position += len(sentence) + 1
        held: dict[int, set[str]] = {}
        automaton, concepts_of = self._build()
        if automaton is None:
            return held
        for word, _, end in automaton.find_matches_as_indexes(lowered, overlapping=True):
            index = bisect.bisect_right(starts, end - 2) - 1  # the word's last character, less the leading space
            held.setdefault(index, set()).update(concepts_of[word])
        return held

    def _build(self) -> tuple[ahocorasick_rs.AhoCorasick | None, list[tuple[str, ...]]]:
        """Return the automaton of every concept word (None when there are none) and, for each
        word by its index, the concepts it belongs to."""
        with self._lock:
            if self._automaton is None:
                owners: dict[str, set[str]] = {}
                for concept, words in self.words.items():
                    for word in words:
                        owners.setdefault(word, set()).add(concept)
                standard = ahocorasick_rs.MatchKind.Standard  # every match, overlapping ones too
                automaton = ahocorasick_rs.AhoCorasick(owners, matchkind=standard) if owners else None
                self._automaton = (automaton, [tuple(sorted(concepts)) for concepts in owners.values()])
            return self._automaton


def _sentences(subject: str, text: str) -> list[tuple[int, int, str]]:
    """Return (start, end, sentence) for the subject's sentences, then the text's (positions in
    ``subject + "\\n" + text``); a sentence ends at a line break, at . ! ? ; before a space (a full
    stop inside "amazon.com" ends none) and at their CJK forms."""
    whole = f"{subject}\n{text}"
    found: list[tuple[int, int, str]] = []
    start = 0
    for end in _SENTENCE_END.finditer(whole):
        if whole[start : end.start()].strip():
            found.append((start, end.start(), whole[start : end.start()]))
        start = end.end()
    if whole[start:].strip():
        found.append((start, len(whole), whole[start:]))
    return found


def load(table: Any, kind_order: tuple[str, ...], kinds: Iterable[str], problem: Callable[[str, str], None],
         source: str, vetoes: dict[str, re.Pattern[str]]) -> Concepts:
    """Return the Concepts of a rules file's ``[concepts]`` table; each fault goes to ``problem(key, text)``."""
    if not isinstance(table, dict):
        if table is not None:
            problem("concepts", "must be a table")
        return Concepts(words={}, rules=())
    words: dict[str, tuple[str, ...]] = {}
    raw_words = table.get("words", {})
    raw_words = raw_words if isinstance(raw_words, dict) else {}
    for name, values in raw_words.items():
        if not isinstance(values, list) or not values or not all(isinstance(v, str) and v.strip() for v in values):
            problem(f"concepts.words.{name}", "must be a non-empty list of words")
            continue
        expanded: list[str] = []
        for value in values:  # "@name" stands for the words of another concept
            included = raw_words.get(value[1:]) if value.startswith("@") else [value]
            if not isinstance(included, list) or any(str(word).startswith("@") for word in included):
                problem(f"concepts.words.{name}", f"{value!r} names no concept of plain words")
                continue
            expanded.extend(str(word).lower() for word in included)
        words[name] = tuple(dict.fromkeys(expanded))
    known_kinds = set(kinds)
    rules: list[ConceptRule] = []
    entries = table.get("kind", [])
    for index, entry in enumerate(entries if isinstance(entries, list) else []):
        where = f"concepts.kind[{index}]"
        if not isinstance(entry, dict) or entry.get("value") not in known_kinds:
            problem(f"{where}.value", "must be a kind")
            continue
        parts: dict[str, frozenset[str]] = {}
        for key, known in (("all", words), ("none", words), ("anywhere", words), ("unless", vetoes)):
            names = entry.get(key, [])
            if not isinstance(names, list) or any(name not in known for name in names) or (key == "all" and not names):
                table_name = "concepts.words" if known is words else "sentence_vetoes"
                problem(f"{where}.{key}", f"must list names of {table_name}")
            parts[key] = frozenset(name for name in names if name in known) if isinstance(names, list) else frozenset()
        unless = re.compile("|".join(f"(?:{vetoes[name].pattern})" for name in sorted(parts["unless"]))) if parts["unless"] else None
        if parts["all"]:
            rules.append(
                ConceptRule(f"{source}: {where}", entry["value"], parts["all"], parts["none"], unless, parts["anywhere"])
            )
    rank = {kind: position for position, kind in enumerate(kind_order)}
    rules.sort(key=lambda rule: rank.get(rule.value, len(rank)))
    subject_has = table.get("subject_has", [])
    if not isinstance(subject_has, list) or any(name not in words for name in subject_has):
        problem("concepts.subject_has", "must list concepts of concepts.words")
        subject_has = []
    return Concepts(words=words, rules=tuple(rules), subject_has=frozenset(subject_has))
