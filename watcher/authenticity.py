"""Decide whether a notice is genuine, unverified or phishing, from headers and links (domain.md §4).

Wording never decides: phishing copies real sentences. Only the trusted Authentication-Results
(the topmost one, or those whose authserv-id the user configured), the sender, Reply-To and
Return-Path domains and the hosts that links point to are read.
"""

from __future__ import annotations

import functools
import logging
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from rapidfuzz.distance import Levenshtein

from watcher.model import Evidence, ParsedMessage
from watcher.rules import Platform, RuleSet

log = logging.getLogger(__name__)

VERIFIED = "verified"
UNVERIFIED = "unverified"
PHISHING = "suspected_phishing"

_LEET = str.maketrans({"0": "o", "1": "l", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s"})
_ADDRESS = re.compile(r"[\w.+-]+@([\w-]+(?:\.[\w-]+)+)")
_RESULT = re.compile(r"^\s*([a-z0-9-]+)\s*=\s*([a-z]+)", re.IGNORECASE)
_PROPERTY = re.compile(r"\b(header\.d|header\.i|header\.from)\s*=\s*@?([\w.-]+)", re.IGNORECASE)
_SHORT_BRAND = 4  # brands this short are matched only as substrings, never by edit distance


@dataclass(frozen=True, slots=True)
class Verdict:
    authenticity: str
    evidence: tuple[Evidence, ...]


def domain_of(address: str | None) -> str:
    """Return the lower-case domain of an address ("" when there is none)."""
    if not address or "@" not in address:
        return ""
    return address.rsplit("@", 1)[1].strip().strip(">").lower().rstrip(".")


def host_of(url: str) -> str:
    """Return the lower-case host of a URL ("" for mailto:, tel:, anchors and garbage)."""
    candidate = url.strip()
    if candidate.lower().startswith("www."):
        candidate = "http://" + candidate
    plain = _PLAIN_WEB_URL.match(candidate)
    if plain is not None:  # no user, port, brackets or stray whitespace: what urlsplit would say
        return plain.group(1).lower().rstrip(".")
    try:
        parts = urlsplit(candidate)
    except ValueError:
        return ""
    if parts.scheme.lower() not in ("http", "https"):
        return ""
    return (parts.hostname or "").lower().rstrip(".")


_PLAIN_WEB_URL = re.compile(r"(?i:https?)://([A-Za-z0-9.-]+)(?=[/?#]|\Z)")


def within(domain: str, parent: str) -> bool:
    """Return True when ``domain`` is ``parent`` or one of its subdomains."""
    return bool(domain) and (domain == parent or domain.endswith("." + parent))


def is_own(domain: str, platform: Platform) -> bool:
    """Return True when ``domain`` belongs to ``platform``."""
    return bool(domain) and not platform.domain_set.isdisjoint(_suffixes(domain))


@functools.lru_cache(maxsize=4096)
def _suffixes(domain: str) -> tuple[str, ...]:
    """Return ``domain`` and each parent domain of it ("a.b.c" → a.b.c, b.c, c); a mailbox asks
    about the same few hosts again and again."""
    labels = domain.split(".")
    return tuple(".".join(labels[index:]) for index in range(len(labels)))


def owner_of(domain: str, rules: RuleSet) -> Platform | None:
    """Return the platform whose own domain ``domain`` is, or None."""
    if not domain:
        return None
    suffixes = _suffixes(domain)
    return next((p for p in rules.platforms if not p.domain_set.isdisjoint(suffixes)), None)


def resembles(text: str, brand: str, rules: RuleSet) -> bool:
    """Return True when a token of ``text`` is ``brand`` or a near miss of it (amaz0n, amozzon)."""
    normalised = text.lower().translate(_LEET)
    if brand in normalised:
        return True
    if len(brand) <= _SHORT_BRAND:
        return False
    limit = 1 if len(brand) <= 5 else rules.lookalike_distance
    for token in re.split(r"[^a-z]+", normalised):
        if abs(len(token) - len(brand)) > limit:
            continue
        distance = Levenshtein.distance(token, brand, score_cutoff=limit + 1)
        # Two edits turn many ordinary words into a brand ("shoten" → "shopee"); a typosquat keeps
        # the brand's outline, so at that distance the first and last letters must be the brand's.
        if distance <= 1 or (distance <= limit and token[0] == brand[0] and token[-1] == brand[-1]):
            return True
    return False


def lookalike_of(domain: str, rules: RuleSet) -> Platform | None:
    """Return the platform a non-platform ``domain`` imitates (brand + extra words, typos), or None."""
    if not domain or owner_of(domain, rules) is not None:
        return None
    labels = domain.split(".")
    name_part = ".".join(labels[:-1]) if len(labels) > 1 else domain
    for platform in rules.platforms:
        if any(resembles(name_part, brand, rules) for brand in platform.brands):
            return platform
    return None


def trusted_results(message: ParsedMessage, trusted_authserv_ids: tuple[str, ...]) -> list[str]:
    """Return the Authentication-Results values to trust: the topmost, or the configured servers'."""
    values = message.header("authentication-results")
    if not values:
        return []
    if not trusted_authserv_ids:
        return values[:1]
    wanted = {server.lower() for server in trusted_authserv_ids}
    return [value for value in values if value.split(";", 1)[0].strip().lower() in wanted]


def _results(values: list[str]) -> list[tuple[str, str, str]]:
    """Return (method, result, header.d or header.from) triples from Authentication-Results values."""
    triples = []
    for value in values:
        for segment in value.split(";")[1:]:
            found = _RESULT.match(segment)
            if not found:
                continue
            properties = dict((k.lower(), v.lower()) for k, v in _PROPERTY.findall(segment))
            identity = properties.get("header.d") or properties.get("header.from") or ""
            triples.append((found.group(1).lower(), found.group(2).lower(), identity))
    return triples


def is_internal_forward(message: ParsedMessage, rules: RuleSet) -> bool:
    """Return True for a forward inside the seller's own organisation (same domain, Fwd: subject)."""
    sender = domain_of(message.from_address)
    if not sender or not rules.forward_subject.search(message.subject):
        return False
    return any(domain_of(address) == sender for address in message.to)


def is_quoted_copy(message: ParsedMessage, platform: Platform, text: str, rules: RuleSet) -> bool:
    """Return True for a copy of the platform's notice sent on by someone who does not pose as the
    platform: a reply or forward from another domain, under a name that is not the platform's,
    quoting the notice's own header block ("From: Amazon Services …")."""
    if is_own(domain_of(message.from_address), platform) or platform.names.search(message.from_name):
        return False
    for found in rules.forwarded_from.finditer(text):
        quoted = found.group("from")
        if platform.names.search(quoted) or any(is_own(d.lower(), platform) for d in _ADDRESS.findall(quoted)):
            return True
    return False


def judge(
    message: ParsedMessage,
    platform: Platform,
    text: str,
    rules: RuleSet,
    trusted_authserv_ids: tuple[str, ...] = (),
) -> Verdict:
    """Return the authenticity verdict for a notice about ``platform`` and the evidence for it."""
    tells: list[Evidence] = []
    sender = domain_of(message.from_address)
    forward = is_internal_forward(message, rules) or is_quoted_copy(message, platform, text, rules)

    def tell(rule: str, signal: str) -> None:
        tells.append(Evidence(field="authenticity", value=PHISHING, rule=rule, signal=signal))

    if not forward:
        if not is_own(sender, platform):
            kind = "free-mail" if any(within(sender, d) for d in rules.free_mail) else "foreign"
            tell(f"sender domain is {kind}", message.from_address or "(no From)")
        for address in message.reply_to:
            if not is_own(domain_of(address), platform):
                tell("Reply-To outside the platform", address)
        if message.return_path and "@" in message.return_path:
            if not is_own(domain_of(message.return_path), platform):
                tell("Return-Path outside the platform", message.return_path)
    else:
        for found in rules.forwarded_from.finditer(text):
            for domain in _ADDRESS.findall(found.group("from")):
                lowered = domain.lower()
                if lookalike_of(lowered, rules) or any(within(lowered, d) for d in rules.free_mail):
                    tell("forwarded original came from a look-alike or free-mail sender", lowered)
    for link in message.links:
        host = host_of(link.href)
        if not host or is_own(host, platform):
            continue
        if any(within(host, e.host) and e.requires.search(text) for e in platform.link_exceptions):
            continue
        tell("link to a host that is not the platform's", f"{host} ({link.text[:60]})")

    results = _results(trusted_results(message, trusted_authserv_ids))
    for method, result, identity in results:
        if method in ("dmarc", "dkim") and result == "fail" and is_own(sender, platform):
            tell(f"trusted {method}=fail", identity or sender)
    if tells:
        return Verdict(PHISHING, tuple(tells))
    if forward:
        copy = Evidence("authenticity", UNVERIFIED, "a copy sent on by someone else", message.subject)
        return Verdict(UNVERIFIED, (copy,))
    for method, result, identity in results:
        aligned = method == "dmarc" or (method == "dkim" and within(sender, identity))
        if result == "pass" and aligned:
            evidence = Evidence("authenticity", VERIFIED, f"trusted {method}=pass", identity or sender)
            return Verdict(VERIFIED, (evidence,))
    reason = "no trusted pass" if results else "no trusted Authentication-Results"
    return Verdict(UNVERIFIED, (Evidence("authenticity", UNVERIFIED, reason, sender),))
