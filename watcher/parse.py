"""Turn raw message bytes into a ParsedMessage: decoded headers, readable text and links.

The standard library parses the message once; the parts are then sorted into body text and
attachments by mail-parser's rules, with mail-parser's helpers for MIME metadata, display names
and Date checks, so charsets, defects and names come out as ``mailparser.parse_from_bytes`` gives
them, without the work it does for us in vain (Received-chain analysis, a full header dictionary
twice, attachment payloads re-encoded as base64). Its ReceivedHeaderDefect is therefore not
reported. As in mail-parser, 7bit ``iso-2022-jp`` text parts stay undecoded, so those parts are
decoded again with the standard library. HTML is read by html_text.py, plain text tidied by text.py.
"""

from __future__ import annotations

import email
import email.message
import email.utils
import logging
import re
from dataclasses import dataclass, field
from datetime import date, datetime
from email.header import decode_header, make_header
from email.parser import BytesParser
from email.policy import Compat32, compat32
from typing import Any

from mailparser import dates as mailparser_dates
from mailparser import utils as mailparser_utils

from watcher.html_text import MAX_HTML_CHARS, MAX_LINKS, html_links, html_to_text
from watcher.model import Link, ParsedMessage
from watcher.text import is_word, tidy, unwrap

log = logging.getLogger(__name__)

MAX_TEXT_CHARS = 200_000  # body text kept for classification
MAX_HEADER_CHARS = 8_000  # one decoded header value
MAX_RAW_HEADER_CHARS = 32_000  # one header as read; the standard library's parameter parsing is quadratic
MAX_BOUNDARY_LINES = 2_000  # lines starting "--": the parser spends ~15 µs on each part they open

_URL = re.compile(r"""\b(?:https?://|www\.)[^\s<>"')\]]+""", re.IGNORECASE)
_URL_TRAILING = ".,;:!?"
_URL_LOWERED = re.compile(r"""(?:https?://|www\.)[^\s<>"')\]]+""")  # _URL without \b, for lower-cased text
_ESCAPE_SEQUENCE = "\x1b"
_START_BOUNDARY_MISSING = "StartBoundaryNotFoundDefect"
_ADDRESS_HEADERS = ("bcc", "cc", "delivered-to", "from", "reply-to", "to")  # all checked for defects
_ATOM = r"[A-Za-z0-9_+-]+"
_PLAIN_ADDRESS = rf"{_ATOM}(?:\.{_ATOM})*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*"
_PLAIN_WORD = r"[A-Za-z0-9&'_+.-]+"
_PLAIN_MAILBOX = re.compile(
    rf'[ \t\r\n]*(?:(?P<bare>{_PLAIN_ADDRESS})|(?:"(?P<quoted>[^"\\\r\n]*)"|(?P<words>{_PLAIN_WORD}(?:[ \t\r\n]+{_PLAIN_WORD})*))?'
    rf"[ \t\r\n]*<(?P<angle>{_PLAIN_ADDRESS})>)[ \t\r\n]*\Z"
)
_WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_DATE = re.compile(
    rf"(?:({'|'.join(_WEEKDAYS)}), )?(\d{{1,2}}) ({'|'.join(_MONTHS)}) (\d{{4}}) (?:[01]\d|2[0-3]):[0-5]\d(?::[0-5]\d)?"
    r" [+-](?:[01]\d|2[0-3])[0-5]\d(?: \([A-Za-z0-9 +-]{1,40}\))?"
)
# Control characters other than tab and line breaks: NUL bytes, terminal escapes, DEL.
_CONTROLS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]+")
_CONTROL_CHARS = tuple(chr(code) for code in (*range(9), 11, 12, *range(14, 32), 127))  # what _CONTROLS removes

class _BoundedPolicy(Compat32):
    """The standard library's compat32 policy with each header cut at MAX_RAW_HEADER_CHARS; the
    names of cut headers are appended to ``oversized`` (give every parse its own list)."""

    oversized: list[str] | None = None

    def header_source_parse(self, sourcelines: list[str]) -> tuple[str, str]:
        name, value = super().header_source_parse(sourcelines)
        if len(value) > MAX_RAW_HEADER_CHARS:
            if self.oversized is not None:
                self.oversized.append(name)
            value = value[:MAX_RAW_HEADER_CHARS]
        return name, value


_POLICY = _BoundedPolicy()


def _bounded(content: bytes, defects: list[str]) -> bytes:
    """Return ``content`` cut before its MAX_BOUNDARY_LINES-th line starting with "--", so that a
    message of hundreds of thousands of tiny parts is read in bounded time (a defect when cut)."""
    if content.count(b"\n--") <= MAX_BOUNDARY_LINES:
        return content
    position = 0
    for _ in range(MAX_BOUNDARY_LINES):
        position = content.find(b"\n--", position) + 1
    defects.append("TooManyPartsDefect")
    return content[:position]


def _one_line(text: str, defects: set[str] | None = None) -> str:
    """Return ``text`` on one line: runs of whitespace (CR and LF too) as one space, control
    characters removed (ControlCharacterDefect in ``defects`` when there were some)."""
    cleaned = _CONTROLS.sub("", text)
    if defects is not None and len(cleaned) != len(text):
        defects.add("ControlCharacterDefect")
    return " ".join(cleaned.split())


def _decode_header_value(value: object, defects: set[str] | None = None) -> str:
    """Return a header value with RFC 2047 encoded words decoded, on one line; never raises."""
    if not isinstance(value, str):
        value = str(value)
    if value.isprintable() and "  " not in value and "=?" not in value:  # the common case: one plain line
        return value.strip()[:MAX_HEADER_CHARS]
    text = value
    if "=?" in value:
        try:
            text = str(make_header(decode_header(value)))
        except Exception:
            log.debug("undecodable header value %r", value[:80])
    return _one_line(text, defects)[:MAX_HEADER_CHARS]


def _addresses(values: list[str]) -> list[tuple[str, str]]:
    """Return (display name, lower-case address) pairs from decoded header values."""
    try:
        return [(name, address.lower()) for name, address in email.utils.getaddresses(values)]
    except Exception:
        return []


def _message_date(value: str | None) -> datetime | None:
    """Return the Date header as a timezone-aware datetime, or None."""
    if not value:
        return None
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return parsed if parsed.tzinfo is not None else None


def _stdlib_plain_parts(message: email.message.Message) -> list[str]:
    """Return every inline text/plain part decoded by the standard library (ISO-2022-JP fallback)."""
    texts: list[str] = []
    for part in message.walk():
        if part.get_content_type() != "text/plain" or part.get_filename():
            continue
        decoded = _decoded_payload(part)
        if decoded is not None:
            texts.append(decoded)
    return texts


def _decoded_payload(part: email.message.Message) -> str | None:
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        return None
    charset = part.get_content_charset() or "us-ascii"
    try:
        return payload.decode(charset, errors="replace")
    except LookupError:
        return payload.decode("utf-8", errors="replace")


def _html_without_plain(part: email.message.Message, has_plain_alternative: bool = False) -> list[str]:
    """Return the HTML parts that no text/plain alternative stands for, e.g. an HTML-only notice
    forwarded as an attachment of a plain-text mail: their text would otherwise be lost."""
    if part.is_multipart():
        children = [child for child in part.get_payload() if isinstance(child, email.message.Message)]
        alternative = part.get_content_subtype() == "alternative"
        plain_here = alternative and any(child.get_content_type() == "text/plain" for child in children)
        return [html for child in children for html in _html_without_plain(child, plain_here)]
    if part.get_content_type() != "text/html" or has_plain_alternative or part.get_filename():
        return []
    decoded = _decoded_payload(part)
    return [decoded] if decoded else []


def _link_texts(text: str) -> list[Link]:
    """Return the bare URLs written in plain text, as links whose visible text is the URL.

    They are found in the lower-cased text by a case-sensitive pattern, several times faster than
    a case-insensitive one, when lowering keeps every position (it nearly always does)."""
    lowered = text.lower()
    if len(lowered) != len(text):
        urls = [match.group(0) for match in _URL.finditer(text)]
    else:
        urls = [text[match.start() : match.end()] for match in _URL_LOWERED.finditer(lowered)
                if not (match.start() and is_word(lowered[match.start() - 1]))]  # the \b of _URL
    # A sentence's punctuation after a URL is not part of it ("type www.paypal.it, then sign in").
    return [Link(href=url, text=url) for url in (url.rstrip(_URL_TRAILING) for url in urls)]


@dataclass(slots=True)
class _Body:
    """What the MIME walk found: decoded text parts, attachment names and defect categories."""

    plain: list[str] = field(default_factory=list)
    html: list[str] = field(default_factory=list)
    attachments: list[str] = field(default_factory=list)
    defects: set[str] = field(default_factory=set)


def _parts_in_order(message: email.message.Message, defects: set[str]) -> list[tuple[email.message.Message, bool]]:
    """Return every part with whether it sits inside an attachment (RFC 2183 §2.9: a disposition
    covers the whole container), plus the part recovered from the epilogue when the start boundary
    was missing, as mail-parser does."""
    parts: list[tuple[email.message.Message, bool]] = []
    attached: set[int] = set()
    for part in message.walk():
        defects.update(type(defect).__name__ for defect in part.defects)
        inside = id(part) in attached
        parts.append((part, inside))
        if part.is_multipart():
            disposition = part.get_content_disposition()
            blocks_inline = disposition not in (None, "inline") or (
                disposition != "inline" and _may_be_named(part) and bool(part.get_filename())
            )
            if inside or blocks_inline:
                attached.update(id(child) for child in part.get_payload())
    boundary = message.get_boundary() if _START_BOUNDARY_MISSING in defects else None
    if boundary and isinstance(message.epilogue, str):
        opening, closing = f"--{boundary}", f"--{boundary}--"
        start = message.epilogue.find(opening)
        end = message.epilogue.find(closing, start + len(opening)) if start >= 0 else -1
        if end >= 0:
            try:
                parts.append((email.message_from_string(message.epilogue[start + len(opening) : end].strip()), True))
            except Exception:
                log.info("the part after a missing start boundary cannot be read")
    return parts


def _may_be_named(part: email.message.Message) -> bool:
    """Return False when neither Content-Type nor Content-Disposition holds "name": get_filename
    then finds no file name, and asking it would parse both headers' parameters to say so."""
    return any("name" in str(part.get(header, "")).lower() for header in ("content-type", "content-disposition"))


def _body_text(part: email.message.Message, charset: str, defects: set[str]) -> str:
    """Return a text part decoded as mail-parser decodes it: 7bit/8bit ASCII as it stands (which
    leaves ISO-2022-JP escapes in place), anything else by its charset, else UTF-8 (a defect)."""
    encoding = str(part.get("content-transfer-encoding", "")).strip().lower()
    if encoding in ("", "7bit", "8bit"):
        stored = part.get_payload()
        if isinstance(stored, str) and stored.isascii():
            return stored
    payload = part.get_payload(decode=True)
    defects.update(type(defect).__name__ for defect in part.defects)  # decoding adds base64 defects
    if not isinstance(payload, bytes) or not payload:
        return ""
    try:
        text = payload.decode(charset)
        text.encode("utf-8")  # some codecs produce lone surrogates, which are not text
    except (LookupError, UnicodeError):
        defects.add("CharsetDecodeDefect")
        text = payload.decode("utf-8", errors="replace")
    return text


def _walk_body(message: email.message.Message) -> _Body:
    """Sort the parts into body text and attachments, following mail-parser's rules: a part with a
    file name (or a content id, unless it is text) is an attachment; named inline text is both."""
    body = _Body()
    for part, inside_attachment in _parts_in_order(message, body.defects):
        metadata, header_defects = mailparser_utils.mime_header_view(part)
        filename = (
            mailparser_utils.decode_header_part(metadata.get_filename(), defects=header_defects)
            if _may_be_named(metadata) else ""
        )
        if header_defects:
            body.defects.add("MimeHeaderDefect")
        disposition = str(metadata.get_content_disposition() or "").lower()
        if part.get_content_type() == "message/rfc822" and not inside_attachment:
            body.plain.append(_attached_header(part))
        if part.is_multipart() and disposition != "attachment":
            continue
        content_type = metadata.get_content_type()
        subtype = content_type.split("/")[1]
        # The view holds the same headers unless some were not UTF-8; its lookups are cheaper.
        own_type = content_type if not header_defects else part.get_content_type()
        content_id = str(metadata.get("content-id") or "")
        inline_text = (
            not inside_attachment
            and not part.is_multipart()
            and disposition == "inline"
            and own_type in ("text/plain", "text/html")
        )
        unnamed_attachment = subtype == "rtf" or disposition == "attachment"
        is_attachment = bool(filename) or (bool(content_id) and subtype not in ("html", "plain")) or unnamed_attachment
        if is_attachment:
            named = filename or (content_id if subtype not in ("html", "plain") else "")
            body.attachments.append(named or content_type)
        if is_attachment and not inline_text:
            continue
        text = _body_text(part, metadata.get_content_charset("utf-8"), body.defects)
        if text and own_type.endswith("/html"):
            body.html.append(text)
        elif text and own_type.endswith("/plain"):
            body.plain.append(text)
    return body


_ATTACHED_HEADERS = ("From", "Date", "Subject", "To")


def _attached_header(part: email.message.Message) -> str:
    """Return the header block of a message attached whole (a forward "as attachment"), as a mail
    client shows it above its text: who sent it and when is what the forward is about."""
    inner = part.get_payload(0) if part.is_multipart() else None
    if not isinstance(inner, email.message.Message):
        return ""
    lines = [f"{name}: {_decode_header_value(inner[name])}" for name in _ATTACHED_HEADERS if inner[name]]
    return "\n".join(["---------- Forwarded message ----------", *lines]) if lines else ""


def _plain_mailbox(value: object) -> list[tuple[str, str]] | None:
    """Return the single mailbox of a plain ASCII value (``a@b.c``, ``Name <a@b.c>``,
    ``"Name" <a@b.c>``) exactly as mail-parser reads it, without its forensic parser, which costs
    a third of a millisecond a header; None for anything else (encoded words, groups, comments…)."""
    found = _PLAIN_MAILBOX.match(value) if isinstance(value, str) else None
    if found is None:
        return None
    if found["bare"]:
        return [("", found["bare"])]
    name = found["quoted"] if found["quoted"] is not None else " ".join((found["words"] or "").split())
    return [(name, found["angle"])]


def _raw_fields(message: email.message.Message) -> dict[str, list[Any]]:
    """Return the message's header values as stored, by lower-case name: one pass over the
    headers, where every ``get_all`` would make one of its own."""
    fields: dict[str, list[Any]] = {}
    for name, value in message.raw_items():
        fields.setdefault(name.lower(), []).append(value)
    return fields


def _address_pairs(message: email.message.Message, fields: dict[str, list[Any]],
                   defects: set[str]) -> dict[str, list[tuple[str, str]]]:
    """Return the (name, lower-case address) pairs of the first of each address header, parsed by
    mail-parser (display names decoded in context); a malformed address header is a defect.
    ``fields`` is ``_raw_fields(message)``; values go through the policy as ``get_all`` would."""
    pairs: dict[str, list[tuple[str, str]]] = {}
    fetch = message.policy.header_fetch_parse
    for name in _ADDRESS_HEADERS:
        values = [v if isinstance(v, str) and v.isascii() else fetch(name, v) for v in fields.get(name, ())]
        for occurrence, value in enumerate(values):
            parsed = _plain_mailbox(value)
            if parsed is None:
                problems: list[object] = []
                parsed = mailparser_utils.get_addresses(value, defects=problems, decode_names=True)
                if problems:
                    defects.add("AddressHeaderDefect")
            if occurrence == 0:
                pairs[name] = [("" if n == a else str(n), str(a).lower()) for n, a in parsed if a]
    return pairs


def _check_dates(fields: dict[str, list[Any]], defects: set[str]) -> None:
    """Add DateHeaderDefect when a Date or Resent-Date header (of ``_raw_fields``) is malformed
    (mail-parser's checks)."""
    for raw in (*fields.get("date", ()), *fields.get("resent-date", ())):
        if not _canonical_date(raw) and mailparser_dates.parse_mail_date(raw).reasons:
            defects.add("DateHeaderDefect")


def _canonical_date(raw: object) -> bool:
    """Return True for a date in the usual RFC 5322 form ("Tue, 3 Mar 2026 09:15:00 +0100",
    optionally a zone comment) that is a real date with its true weekday: mail-parser finds nothing
    wrong with those, and checking them here costs a tenth of its parse. Anything else is left to it."""
    found = _DATE.fullmatch(raw.strip()) if isinstance(raw, str) else None
    if found is None:
        return False
    weekday, day, month, year = found.group(1, 2, 3, 4)
    try:
        written = date(int(year), _MONTHS.index(month) + 1, int(day))
    except ValueError:
        return False
    return written.year >= 1900 and (weekday is None or _WEEKDAYS.index(weekday) == written.weekday())


def _headers_only(content: bytes, defects: list[str]) -> email.message.Message:
    """Return the top-level headers of a message the full parse gave up on, its body unparsed."""
    try:
        return BytesParser(policy=_POLICY).parsebytes(content, headersonly=True)
    except Exception as error:
        defects.append(f"headers: {type(error).__name__}")
        return email.message.Message()


def _raw_body(message: email.message.Message) -> _Body:
    """Return the undecoded body of ``message`` as its only text (the last resort)."""
    payload = message.get_payload()
    text = payload if isinstance(payload, str) else ""
    return _Body(plain=[text[:MAX_TEXT_CHARS]])


def _read_mime(content: bytes, defects: list[str]) -> tuple[email.message.Message, _Body, dict[str, list[tuple[str, str]]]]:
    """Return the parsed message, its body parts and address pairs; problems go to ``defects``.

    The standard library parses once; mail-parser's helpers then decode names and check headers
    the way mail-parser itself would (its Received-chain analysis is skipped: nothing reads it).
    """
    oversized: list[str] = []
    content = _bounded(content, defects)
    try:
        # A message shorter than the cap cannot hold a header longer than it: the plain policy will do.
        policy = compat32 if len(content) <= MAX_RAW_HEADER_CHARS else _POLICY.clone(oversized=oversized)  # type: ignore[call-arg]
        message = email.message_from_bytes(content, policy=policy)
    except Exception as error:  # e.g. RecursionError on multiparts nested hundreds deep
        defects.append(f"email: {type(error).__name__}")
        message = _headers_only(content, defects)
        return message, _raw_body(message), {}
    if oversized:
        defects.append("OversizedHeaderDefect")
    try:
        body = _walk_body(message)
        fields = _raw_fields(message)
        addresses = _address_pairs(message, fields, body.defects)
        _check_dates(fields, body.defects)
    except Exception as error:  # a helper gave up on a broken message; keep what email can read
        log.info("MIME walk failed (%s); reading text/plain parts only", type(error).__name__)
        defects.append(f"mime: {type(error).__name__}")
        try:
            return message, _Body(plain=_stdlib_plain_parts(message)), {}
        except Exception as stdlib_error:
            defects.append(f"email: {type(stdlib_error).__name__}")
            return message, _raw_body(message), {}
    defects.extend(sorted(body.defects))
    return message, body, addresses


def parse_message(content: bytes) -> ParsedMessage:
    """Return the readable parts of ``content``; never raises: problems are listed in ``defects``.

    Time and memory are bounded for any input: headers, parts, HTML, text and links are capped
    (MAX_* above) and each cut is a defect.
    """
    defects: list[str] = []
    try:
        return _parse(content, defects)
    except Exception as error:  # a bug or a limit no cap foresaw: keep the headers, never stop the watch
        log.exception("message parsed only in part")
        defects.append(f"parse: {type(error).__name__}")
        message = _headers_only(_bounded(content, []), defects)
        return _assemble(message, _raw_body(message), {}, defects)


def _parse(content: bytes, defects: list[str]) -> ParsedMessage:
    message, body, addresses = _read_mime(content, defects)
    if any(_ESCAPE_SEQUENCE in part for part in body.plain):
        body.plain = _stdlib_plain_parts(message) or body.plain
    return _assemble(message, body, addresses, defects)


def _header_items(message: email.message.Message) -> list[tuple[str, object]]:
    """Return ``message.items()``: the policy rewrites only values holding undecodable bytes, so
    ASCII values are taken as stored, without a policy call each."""
    fetch = message.policy.header_fetch_parse
    return [
        (name, value if isinstance(value, str) and value.isascii() else fetch(name, value))
        for name, value in message.raw_items()
    ]


def _assemble(message: email.message.Message, body: _Body, addresses: dict[str, list[tuple[str, str]]],
              defects: list[str]) -> ParsedMessage:
    """Return the ParsedMessage of a read message: decoded headers, text, links; adds defects."""
    found: set[str] = set()
    headers = tuple((str(key), _decode_header_value(value, found)) for key, value in _header_items(message))
    degraded = not addresses  # the MIME walk gave up: read the address headers on their own
    if degraded:
        try:
            addresses = _address_pairs(message, _raw_fields(message), found)
        except Exception as error:
            log.info("address headers unreadable by mail-parser (%s)", type(error).__name__)
    from_pairs, to_pairs, reply_pairs = (addresses.get(name, []) for name in ("from", "to", "reply-to"))

    firsts: dict[str, str] = {}
    for key, value in headers:
        firsts.setdefault(key.lower(), value)

    def first(name: str) -> str | None:
        return firsts.get(name)

    def all_of(name: str) -> list[str]:
        wanted = name.lower()
        return [value for key, value in headers if key.lower() == wanted]

    if degraded and not from_pairs and not to_pairs:
        from_pairs = _addresses(all_of("from"))
        to_pairs = _addresses(all_of("to"))
        reply_pairs = _addresses(all_of("reply-to"))
    from_name, from_address = from_pairs[0] if from_pairs else ("", "")
    return_path = first("return-path")
    if return_path is not None:
        return_path = return_path.strip().strip("<>").lower() or None

    document = "\n".join(body.html)[:MAX_HTML_CHARS]
    plain = unwrap(tidy("\n\n".join(body.plain)[: 2 * MAX_TEXT_CHARS])) if body.plain else ""
    if plain:  # the text comes from the plain part; the HTML is read for its links alone
        html_text, links_in_html = "", html_links(document) if document else ()
    else:
        html_text, links_in_html = html_to_text(document) if document else ("", ())
    if plain and body.html:
        orphans = _html_without_plain(message)
        if orphans:
            plain += "\n\n" + html_to_text("\n".join(orphans))[0]
    text = (plain or html_text)[:MAX_TEXT_CHARS]
    clean_text = _CONTROLS.sub("", text) if any(char in text for char in _CONTROL_CHARS) else text
    if len(clean_text) != len(text):
        found.add("ControlCharacterDefect")
    links = links_in_html + tuple(_link_texts(plain[:MAX_TEXT_CHARS])) if plain else links_in_html
    if len(links) > MAX_LINKS:
        found.add("TooManyLinksDefect")

    return ParsedMessage(
        message_id=first("message-id"),
        subject=first("subject") or "",
        from_name=_one_line(from_name, found)[:MAX_HEADER_CHARS],
        from_address=_one_line(from_address, found),
        to=tuple(address for _, address in to_pairs if address),
        reply_to=tuple(address for _, address in reply_pairs if address),
        return_path=return_path,
        date=_message_date(first("date")),
        headers=headers,
        text=clean_text,
        html=document,
        links=links[:MAX_LINKS],
        attachments=tuple(body.attachments),
        defects=(*defects, *sorted(found - set(defects))),
    )
