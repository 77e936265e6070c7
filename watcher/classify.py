"""Classify a parsed message: is it a notice about the seller's own account, and what does it say?

The steps, each driven by the RuleSet's data:
1. platform — the sender's own domain, else the platform it claims (look-alike domain, display
   name, subject, body);
2. relevance — no platform, a newsletter/advert tell, or no kind signal means "not relevant";
3. kind and reason — every matching signal is collected; the first in ``kind_order`` /
   ``reason_order`` wins (the most decisive account-level action);
4. authenticity (authenticity.py) and the fields (extract.py).
Every field carries Evidence naming the rule and the text that set it.
"""

from __future__ import annotations

import logging
import re
from datetime import date

from watcher import authenticity, extract, literals
from watcher.model import Classification, Evidence, ParsedMessage
from watcher.rules import Platform, RuleSet
from watcher.signals import Ranked, digit_runs

log = logging.getLogger(__name__)

MAX_CLASSIFIED_CHARS = 200_000
BODY_CLAIM = "platform named in the body"


def _first_hit(signals: Ranked, lowered: str, *, within: str | None = None) -> Evidence | None:
    """Return the evidence of the first of ``signals`` that matches ``lowered`` (a lower-cased text),
    or None. ``within``: the lower-cased text ``lowered`` was cut from (spacing aside), whose literals
    (already known) stand in for its own, sparing a pass of the literal index."""
    hit = signals.first(lowered, literals.INDEX.present(lowered if within is None else within))
    return Evidence("", hit[0].value, hit[0].rule, hit[1].group(0)) if hit else None


def _named(evidence: Evidence, field: str) -> Evidence:
    return Evidence(field=field, value=evidence.value, rule=evidence.rule, signal=evidence.signal)


def _earliest_claim(value: str, rules: RuleSet) -> Platform | None:
    """Return the platform named first in ``value``, or None."""
    best: tuple[int, Platform] | None = None
    for platform in rules.platforms:
        found = platform.names.search(value)
        if found and (best is None or found.start() < best[0]):
            best = (found.start(), platform)
    return best[1] if best else None


def find_platform(
    message: ParsedMessage, text: str, rules: RuleSet, forwarded: re.Match[str] | None
) -> tuple[Platform, Evidence] | None:
    """Return the platform the message comes from or claims to come from, with the evidence;
    ``forwarded`` is the quoted "From:" line of a forward (``_forwarded_header``)."""
    sender = authenticity.domain_of(message.from_address)
    owner = authenticity.owner_of(sender, rules)
    if owner is not None:
        return owner, Evidence("platform", owner.id, "sender domain", sender)
    imitated = authenticity.lookalike_of(sender, rules)
    if imitated is not None:
        return imitated, Evidence("platform", imitated.id, "look-alike sender domain", sender)
    sources = (("display name", message.from_name), ("subject", message.subject),
               ("forwarded From line", forwarded.group("from") if forwarded else ""))
    for where, value in sources:
        claimed = _earliest_claim(value, rules)
        if claimed is not None:
            return claimed, Evidence("platform", claimed.id, f"platform named in the {where}", value)
    lowered = text.lower()
    counts = [(sum(lowered.count(name) for name in p.name_list), p) for p in rules.platforms]
    count, platform = max(counts, key=lambda pair: pair[0], default=(0, None))
    if platform is None or count == 0:
        return None
    return platform, Evidence("platform", platform.id, BODY_CLAIM, f"{count} mentions")


def _forwarded_header(message: ParsedMessage, text: str, rules: RuleSet) -> re.Match[str] | None:
    """Return the "From:" line of the message a forward quotes, or None."""
    return rules.forwarded_from.search(text) if rules.forward_subject.search(message.subject) else None


def _notice_text(text: str, header: re.Match[str] | None) -> str:
    """Return the text a forward quotes (after the header block its "From:" line ``header`` starts),
    or all of ``text``: a notice forwarded with a cover note in another language is in the notice's
    language."""
    if header is None:
        return text
    body = text.find("\n\n", header.end())
    return text[body if body >= 0 else header.end() :]


def classify(
    message: ParsedMessage,
    rules: RuleSet,
    *,
    trusted_authserv_ids: tuple[str, ...] = (),
) -> Classification:
    """Return what ``message`` means for the seller.

    It is not expected to raise; if a bug makes it, the caller records the message as unclassifiable
    (pipeline.Engine.classify) rather than silently treating it as ordinary mail.
    """
    trusted_ids = trusted_authserv_ids
    text = message.text[:MAX_CLASSIFIED_CHARS]
    forwarded = _forwarded_header(message, text, rules)
    language = extract.detect_language(_notice_text(text, forwarded) or message.subject, rules)
    claim = find_platform(message, text, rules, forwarded)
    if claim is None:
        return Classification(relevant=False, language=language)
    platform, platform_evidence = claim
    haystack = f"{message.subject}\n{text}"
    lowered = haystack.lower()
    internal_forward = authenticity.is_internal_forward(message, rules)
    # "my account was suspended, see below" in a colleague's cover note is not personal mail
    veto = _first_hit(rules.vetoes(platform, forwarded=internal_forward), lowered)
    if veto:
        log.debug("not a notice: %s", veto.signal)
        return Classification(relevant=False, language=language)
    kind_signals = rules.ranked_signals(platform, "kind")
    kind_hit = _first_hit(kind_signals, lowered)
    if kind_hit is None and platform_evidence.rule != BODY_CLAIM:
        # No phrase matched: the concepts of one sentence may still name the kind (concepts.py);
        # not for mail that only names the platform in its body (articles, adverts).
        kind_hit = rules.concepts.first(message.subject, text)
    if kind_hit is None:
        return Classification(relevant=False, language=language)
    kind = kind_hit.value
    evidence = [platform_evidence, _named(kind_hit, "kind")]

    reason = "unknown"
    why = extract.reason_text(text, rules)
    if kind not in rules.kinds_without_reason:
        # The "why" paragraph names the reason; elsewhere a notice may mention others in passing
        # ("funds, minus any A-to-z claims, will be transferred").
        reason_signals = rules.ranked_signals(platform, "reason")
        in_why = _first_hit(reason_signals, why.lower(), within=lowered) if why else None
        reason_hit = in_why or _first_hit(reason_signals, lowered)
        if reason_hit is not None:
            reason = reason_hit.value
            evidence.append(_named(reason_hit, "reason"))

    verdict = authenticity.judge(message, platform, text, rules, trusted_ids)
    evidence.extend(verdict.evidence)
    marketplace = extract.find_marketplace(message.subject, text, platform, rules)
    sender = authenticity.domain_of(message.from_address)
    if marketplace is None and authenticity.is_own(sender, platform):
        marketplace = extract.marketplace_of_sender(sender, platform)
    deadline = None
    runs = digit_runs(lowered)
    if kind not in rules.kinds_without_deadline:
        order = extract.date_order_for(platform, marketplace.value if marketplace else None, language, rules)
        own = _reply_end(message, lowered, rules) if authenticity.is_own(sender, platform) else len(lowered)
        deadline = extract.find_deadline(
            haystack[:own], message.date, order, rules, relative_allowed=not internal_forward,
            lowered=lowered[:own], runs=[run for run in runs if run[1] <= own],
        )
    ids = extract.find_ids(haystack, rules, lowered=lowered, runs=runs)
    facts = _facts(kind, haystack, lowered, message, platform, verdict.authenticity, rules)
    for found in (marketplace, deadline, *ids):
        if found is not None:
            evidence.append(found.evidence)
    evidence.extend(Evidence("facts", value, name, "") for name, value in facts)
    return Classification(
        relevant=True,
        platform=platform.id,
        kind=kind,
        reason=reason,
        severity=rules.severity.get(kind),
        authenticity=verdict.authenticity,
        language=language,
        reason_text=why,
        deadline=_as_date(deadline.value) if deadline else None,
        marketplace=marketplace.value if marketplace else None,
        ids=tuple(found.value for found in ids),
        facts=facts,
        evidence=tuple(evidence),
    )


def _reply_end(message: ParsedMessage, lowered: str, rules: RuleSet) -> int:
    """Return where a reply's own words end in ``lowered``: at the mail it quotes (a quoted header
    or quoted lines), whose dates are that earlier mail's; the whole length for any other mail.
    (For the platform's own replies: anyone else's reply quotes the notice, which is the point.)"""
    if not rules.reply_subject.search(message.subject) or rules.forward_subject.search(message.subject):
        return len(lowered)
    header = rules.forwarded_from.search(lowered)
    quoted = lowered.find("\n>")
    ends = [position for position in (header.start() if header else -1, quoted) if position > 0]
    return min(ends, default=len(lowered))


def _as_date(value: str) -> date:
    return date.fromisoformat(value)


def _facts(
    kind: str,
    text: str,
    lowered: str,
    message: ParsedMessage,
    platform: Platform,
    verdict: str,
    rules: RuleSet,
) -> tuple[tuple[str, str], ...]:
    """Return the secondary facts: funds held, hold duration, appeal channel (verified mail only)."""
    facts: list[tuple[str, str]] = []
    if kind != "funds_held" and _first_hit(rules.held_funds(platform), lowered):
        facts.append(("funds_held", "true"))
    hold = extract.find_hold_days(text, rules)
    if hold is not None:
        facts.append(("hold_days", hold.value))
    if verdict == authenticity.VERIFIED:
        channel = next(
            (link.href for link in message.links if authenticity.is_own(authenticity.host_of(link.href), platform)),
            None,
        )
        if channel is None and message.reply_to:
            channel = f"mailto:{message.reply_to[0]}"
        if channel is not None:
            facts.append(("appeal_channel", channel))
    return tuple(facts)
