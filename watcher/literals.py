"""Which of the rules' trigger literals occur in a text, found in one pass.

Every signal is prefiltered by literals its matches must contain (signals.required_literals). Testing
them one by one costs hundreds of substring searches per message; an Aho-Corasick automaton
(ahocorasick-rs) finds all of them in one pass over the text, after which each test is a set lookup.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

import ahocorasick_rs

SHORT_TEXT = 256  # below this, plain substring tests are cheaper than a pass of the automaton
_CACHE_SIZE = 16


class LiteralIndex:
    """All trigger literals of the loaded rules, and the ones present in recently seen texts."""

    def __init__(self) -> None:
        self._words: set[str] = set()
        self._automaton: ahocorasick_rs.AhoCorasick | None = None
        self._built = False
        self._cache: dict[str, frozenset[str]] = {}
        self._lock = threading.Lock()

    def add(self, words: Iterable[str]) -> None:
        """Register literals (rules call this as they compile)."""
        with self._lock:
            new = {word for word in words if word} - self._words
            if new:
                self._words |= new
                self._built = False
                self._cache = {}

    def present(self, lowered: str) -> frozenset[str]:
        """Return the registered literals that occur in ``lowered``. A text's answer is remembered
        (keyed by the text itself, whose hash Python keeps), since one message asks many times."""
        found = self._cache.get(lowered)
        if found is not None:
            return found
        automaton = self._automaton if self._built else self._build()
        found = frozenset()
        if automaton is not None and lowered:
            found = frozenset(automaton.find_matches_as_strings(lowered, overlapping=True))
        cache = self._cache
        if len(cache) >= _CACHE_SIZE:
            cache = self._cache = {}
        cache[lowered] = found
        return found

    def remembered(self, lowered: str) -> frozenset[str] | None:
        """Return ``present(lowered)`` if it was asked recently, else None (without reading the text)."""
        return self._cache.get(lowered)

    def _build(self) -> ahocorasick_rs.AhoCorasick | None:
        with self._lock:
            if not self._built:
                words = sorted(self._words)
                standard = ahocorasick_rs.MatchKind.Standard  # every match, overlapping ones too
                self._automaton = ahocorasick_rs.AhoCorasick(words, matchkind=standard) if words else None
                self._built = True
            return self._automaton


INDEX = LiteralIndex()


def present_in(lowered: str) -> frozenset[str] | None:
    """Return the registered literals in ``lowered``, or None for a short text not seen before (test
    those one by one); a short text the index already read (a short notice) is answered from it."""
    if len(lowered) >= SHORT_TEXT:
        return INDEX.present(lowered)
    return INDEX.remembered(lowered)


def may_match(triggers: tuple[tuple[str, ...], ...], lowered: str) -> bool:
    """Return True when ``lowered`` holds a literal of every trigger group."""
    if not triggers:
        return True
    if len(lowered) < SHORT_TEXT:
        return all(any(literal in lowered for literal in group) for group in triggers)
    present = INDEX.present(lowered)
    for group in triggers:  # a loop of C-level set tests: this runs hundreds of times a message
        if present.isdisjoint(group):
            return False
    return True
