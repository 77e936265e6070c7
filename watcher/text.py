"""Plain text made readable: runs of spaces and blank lines collapsed, hard-wrapped paragraphs joined."""

from __future__ import annotations

import re

_SPACES = re.compile(r"[ \t\r\f\v\xa0]{2,}|[\t\r\f\v\xa0]")  # single spaces need no rewrite
_ODD_SPACES = ("  ", "\t", "\r", "\f", "\v", "\xa0")  # what _SPACES rewrites contains one of these
_LINE_EDGES = re.compile(r" \n ?|\n ")
_BLANK_LINES = re.compile(r"\n{3,}")

# Hard-wrapped plain text: a line ending a sentence, a list item and a short question stay lines.
_SENTENCE_END = tuple(".?!:。！？：")
_LIST_ITEM = re.compile(r"(?:[-*•·▪◦–—]{1,2}|\d{1,3}[.)]|\(\d{1,3}\))\s|[・①-⑳■□◆●]")
_HEADING_CHARS = 60
_WRAPPED_CHARS = (40, 20)  # a shorter line (Latin, CJK) ends where its writer ended it: a heading, a sign-off
_FIELD = re.compile(r"[^:：\s][^:：]{0,30}[:：]\s*\S")  # "ASIN: B0…", "Case ID：123"
_QUOTE = re.compile(r"(?:> ?)*")  # the quote markers a line starts with ("> > ", ">> ", "")
_CJK = re.compile(r"[\u2e80-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff00-\uffef]")


def is_word(char: str) -> bool:
    """Return True for a character that ``\\w`` matches in a str pattern."""
    return char.isalnum() or char == "_"


def tidy(text: str) -> str:
    """Collapse runs of spaces and blank lines, keeping paragraph breaks. Each rewrite runs only
    when a substring test finds something for it to do: most texts need none or one."""
    text = text.replace("\r\n", "\n")
    if any(odd in text for odd in _ODD_SPACES):
        text = _SPACES.sub(" ", text)
    if " \n" in text or "\n " in text:
        text = _LINE_EDGES.sub("\n", text)
    if "\n\n\n" in text:
        text = _BLANK_LINES.sub("\n\n", text)
    return text.strip()


def _joins(line: str, following: str) -> bool:
    """Return True when ``following`` continues the paragraph ``line`` was hard-wrapped in."""
    if not line or not following or line.endswith(_SENTENCE_END) or _LIST_ITEM.match(following):
        return False
    if len(line) < _WRAPPED_CHARS[1 if _CJK.match(line[-1]) else 0]:
        return False
    # "label: value" lines are a list of facts; a long one is prose that happens to hold a colon.
    if (_FIELD.match(line) and len(line) < _HEADING_CHARS) or _FIELD.match(following):
        return False
    return not (following.endswith(("?", "？")) and len(following) <= _HEADING_CHARS)


def _quote_of(line: str) -> str:
    found = _QUOTE.match(line)
    return found.group(0) if found else ""


def unwrap(text: str) -> str:
    """Return plain text with hard-wrapped paragraphs joined into one line each: CJK without a
    space (but an ASCII word after CJK with one), other scripts with one; quoted lines ("> …") with
    the quoted lines around them. Sentence ends, blank lines, short lines, list items, short
    questions (headings) and "label: value" lines keep their line breaks."""
    lines = text.split("\n")
    joined = [lines[0]]
    for following in lines[1:]:
        line = joined[-1]
        body, continued = line, following
        if line.startswith(">") or following.startswith(">"):
            # Quoted mail is joined like any other at the same depth, the absorbed line's markers dropped.
            quote, quote_next = _quote_of(line), _quote_of(following)
            if quote.replace(" ", "") != quote_next.replace(" ", ""):
                joined.append(following)
                continue
            body, continued = line[len(quote) :], following[len(quote_next) :]
        if not _joins(body, continued):
            joined.append(following)
            continue
        # CJK runs on without a space; an ASCII word after CJK gets one ("付き" + "B0CW9P1L7K …").
        glue = "" if _CJK.match(continued[0]) or (_CJK.match(body[-1]) and not continued[0].isascii()) else " "
        joined[-1] = line + glue + continued
    return "\n".join(joined)
