"""Decide from a raw header block alone whether a message's body must be fetched.

The screen must never drop a notice, so it errs towards fetching: any platform name (every language
in the rules data) or platform domain in From, Sender, Reply-To, Subject or To, any look-alike of a
platform brand in those addresses or names, and any forward (Fwd:/FW:/WG:/转发/Tr:…) pass. Ordinary
mail that names no platform is screened out, which saves fetching its body.
"""

from __future__ import annotations

import functools
import logging
import re
from email.header import decode_header, make_header
from email.parser import BytesHeaderParser
from email.policy import compat32

from watcher.authenticity import resembles
from watcher.rules import RuleSet, load_rules

log = logging.getLogger(__name__)

SCREENED_HEADERS = ("from", "sender", "reply-to", "subject", "to")
_PARSER = BytesHeaderParser(policy=compat32)
_TOKEN = re.compile(r"[^\W_]+(?:[.-][^\W_]+)*")


def _decoded(value: object) -> str:
    text = str(value)
    if "=?" not in text:
        return text
    try:
        return str(make_header(decode_header(text)))
    except Exception:  # a broken encoded word must not drop the message: keep the raw text
        return text


@functools.lru_cache(maxsize=1)
def _packaged_rules() -> RuleSet:
    return load_rules()


def might_be_notice(header_block: bytes, rules: RuleSet | None = None) -> bool:
    """Return True when the message named by ``header_block`` may be a platform notice; never raises.

    ``rules`` defaults to the packaged rule data (loaded once).
    """
    if rules is None:
        rules = _packaged_rules()
    try:
        headers = _PARSER.parsebytes(header_block)
        values = [_decoded(value) for key, value in headers.items() if key.lower() in SCREENED_HEADERS]
    except Exception:  # unreadable headers: fetch the body rather than risk missing a notice
        log.debug("unparsable header block; fetching the body")
        return True
    text = "\n".join(values)
    lowered = text.lower()
    subject = next((_decoded(v) for k, v in headers.items() if k.lower() == "subject"), "")
    if rules.forward_subject.search(subject):
        return True
    for platform in rules.platforms:
        if platform.names.search(text) or any(domain in lowered for domain in platform.domains):
            return True
    for token in _TOKEN.findall(lowered):
        for platform in rules.platforms:
            if any(resembles(token, brand, rules) for brand in platform.brands):
                return True
    return False
