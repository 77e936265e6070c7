"""Decide from a raw header block alone whether a message's body must be fetched.

The screen must never drop a notice, so it errs towards fetching: any platform name (every language
in the rules data) or platform domain in From, Sender, Reply-To, Subject or To, any look-alike of a
platform brand in the sender names and addresses (From, Sender, Reply-To), and any forward (Fwd:/FW:/WG:/转发/Tr:…) pass. Ordinary
mail that names no platform is screened out, which saves fetching its body.
"""

from __future__ import annotations

import enum
import functools
import html
import logging
import re
from email.header import decode_header, make_header

from watcher.authenticity import resembles
from watcher.rules import RuleSet, load_rules

log = logging.getLogger(__name__)

SCREENED_HEADERS = ("from", "sender", "reply-to", "subject", "to")
_TOKEN = re.compile(r"[^\W_]+(?:[.-][^\W_]+)*")


def header_fields(block: bytes) -> list[tuple[str, str]]:
    """Return (lower-case name, unfolded value) for each header line in ``block``.

    The block holds only the few fields the fetch asked for; splitting it directly costs a tenth of
    the email package's feed parser, which matters across a backlog of tens of thousands of messages.
    Raw 8-bit values are read as UTF-8, else GB18030 (which covers GBK/GB2312).
    """
    try:
        text = block.decode("utf-8")
    except UnicodeDecodeError:
        text = block.decode("gb18030", errors="replace")
    fields: list[tuple[str, str]] = []
    for line in text.splitlines():
        if line[:1] in (" ", "\t"):
            if fields:
                name, value = fields[-1]
                fields[-1] = (name, f"{value} {line.strip()}")
        elif ":" in line:
            name, _, value = line.partition(":")
            fields.append((name.strip().lower(), value.strip()))
    return fields


def _decoded(value: object) -> str:
    text = str(value)
    if "=?" not in text:
        return text
    try:
        return str(make_header(decode_header(text)))
    except Exception:  # a broken encoded word must not drop the message: keep the raw text
        return text


SENDER_HEADERS = ("from", "sender", "reply-to")


class Verdict(enum.Enum):
    SKIP = "skip"  # names no platform: not fetched
    FETCH = "fetch"  # names a platform (or a look-alike): fetched and classified
    FORWARD = "forward"  # a forward naming no platform in its headers: decided by its text parts


class Screen:
    """The header screen for one RuleSet. Remembers its look-alike verdict per word, because a
    mailbox's senders repeat: a backlog of 20,000 messages has only a few hundred distinct words."""

    def __init__(self, rules: RuleSet) -> None:
        self.rules = rules
        self._lookalike: dict[str, bool] = {}
        # Every platform's names (all languages) and domains as plain lower-case words: substring tests
        # are several times faster than the per-platform regular expressions, with the same meaning.
        words = {word for platform in rules.platforms for word in (*platform.name_list, *platform.domains)}
        # A word that contains another ("amazon.de" contains "amazon") adds nothing.
        self._platform_words = tuple(sorted(word for word in words
                                            if not any(other != word and other in word for other in words)))

    def might_be_notice(self, header_block: bytes) -> bool:
        """Return True when the message named by ``header_block`` may be a platform notice; never raises."""
        return self.verdict(header_block) is not Verdict.SKIP

    def verdict(self, header_block: bytes) -> Verdict:
        """Decide from the headers: SKIP, FETCH, or FORWARD (only the body can tell); never raises."""
        try:
            values = [(key, _decoded(value)) for key, value in header_fields(header_block) if key in SCREENED_HEADERS]
        except Exception:  # unreadable headers: fetch the body rather than risk missing a notice
            log.debug("unparsable header block; fetching the body")
            return Verdict.FETCH
        if self._names_a_platform("\n".join(value for _, value in values)):
            return Verdict.FETCH
        # Look-alikes (amaz0n, paypa1-secure) hide in who the mail claims to be from: sender names and
        # addresses. A subject or recipient that names a platform was already caught above.
        senders = " ".join(value for key, value in values if key in SENDER_HEADERS).lower()
        if any(self._resembles_a_brand(token) for token in set(_TOKEN.findall(senders))):
            return Verdict.FETCH
        subject = next((value for key, value in values if key == "subject"), "")
        return Verdict.FORWARD if self.rules.forward_subject.search(subject) else Verdict.SKIP

    def texts_name_a_platform(self, texts: list[str]) -> bool:
        """Return True when any decoded text part of a forward (see imap.Mailbox.texts) names a platform.

        A forward whose text names none cannot be a notice: the classifier would find no platform
        either, so neither its attachments nor its full body need fetching.
        """
        return any(self._names_a_platform(html.unescape(text)) for text in texts)

    def _names_a_platform(self, text: str) -> bool:
        lowered = text.lower()
        return any(word in lowered for word in self._platform_words)

    def _resembles_a_brand(self, token: str) -> bool:
        verdict = self._lookalike.get(token)
        if verdict is None:
            verdict = any(resembles(token, brand, self.rules) for platform in self.rules.platforms
                          for brand in platform.brands)
            self._lookalike[token] = verdict
        return verdict


@functools.lru_cache(maxsize=1)
def _packaged_screen() -> Screen:
    return Screen(load_rules())


def might_be_notice(header_block: bytes, rules: RuleSet | None = None) -> bool:
    """Return True when the message named by ``header_block`` may be a platform notice; never raises.

    ``rules`` defaults to the packaged rule data (loaded once).
    """
    screen = _packaged_screen() if rules is None else Screen(rules)
    return screen.might_be_notice(header_block)
