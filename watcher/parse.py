"""Turn raw message bytes into a ParsedMessage: decoded headers, readable text and links.

The standard library parses the message once; the parts are then sorted into body text and
attachments by mail-parser's rules, with mail-parser's helpers for MIME metadata, display names
and Date checks, so charsets, defects and names come out as ``mailparser.parse_from_bytes`` gives
them, without the work it does for us in vain (Received-chain analysis, a full header dictionary
twice, attachment payloads re-encoded as base64). Its ReceivedHeaderDefect is therefore not
reported. As in mail-parser, 7bit ``iso-2022-jp`` text parts stay undecoded, so those parts are
decoded again with the standard library, and HTML-only mail is turned into readable text (with the
links and their visible text) by a few regular expressions.
"""

from __future__ import annotations

import email
import email.message
import email.utils
import html
import logging
import re
from dataclasses import dataclass, field
from datetime import datetime
from email.header import decode_header, make_header

from mailparser import dates as mailparser_dates
from mailparser import utils as mailparser_utils

from watcher.model import Link, ParsedMessage

log = logging.getLogger(__name__)

MAX_TEXT_CHARS = 200_000  # body text kept for classification
MAX_HTML_CHARS = 400_000  # HTML fed to the converter
MAX_HEADER_CHARS = 8_000  # one decoded header value

_URL = re.compile(r"""\b(?:https?://|www\.)[^\s<>"')\]]+""", re.IGNORECASE)
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
_HIDDEN = re.compile(r"<!--.*?-->|<(script|style|head|title)\b.*?</\1\s*>", re.IGNORECASE | re.DOTALL)
_ANCHOR = re.compile(r"<a\b([^>]*)>(.*?)</a\s*>", re.IGNORECASE | re.DOTALL)
_HREF = re.compile(r"""\bhref\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s>]+))""", re.IGNORECASE)
_BLOCK = re.compile(
    r"<(?:br|/?(?:p|div|tr|li|ul|ol|table|tbody|thead|h[1-6]|blockquote|pre|hr|section|article|"
    r"header|footer|center|dt|dd))\b[^>]*>",
    re.IGNORECASE,
)
_CELL = re.compile(r"<t[dh]\b[^>]*>", re.IGNORECASE)
_TAG = re.compile(r"<[^>]*>")
_SPACES = re.compile(r"[ \t\r\f\v\xa0]{2,}|[\t\r\f\v\xa0]")  # single spaces need no rewrite
_LINE_EDGES = re.compile(r" \n ?|\n ")
_BLANK_LINES = re.compile(r"\n{3,}")


def _inline_text(fragment: str) -> str:
    """Return the visible text of an HTML fragment on one line."""
    return " ".join(html.unescape(_TAG.sub(" ", fragment)).split())


def html_to_text(document: str) -> tuple[str, tuple[Link, ...]]:
    """Return the readable text of an HTML document (one block per line) and its links.

    A few regular expressions are enough for notices (tables, paragraphs, entities) and cost far
    less than a full HTML parser; never raises.
    """
    visible = _HIDDEN.sub(" ", document[:MAX_HTML_CHARS])
    links = []
    for anchor in _ANCHOR.finditer(visible):
        href = _HREF.search(anchor.group(1))
        if href:
            target = html.unescape(next(group for group in href.groups() if group is not None))
            links.append(Link(href=target.strip(), text=_inline_text(anchor.group(2))))
    text = _TAG.sub("", _CELL.sub(" ", _BLOCK.sub("\n", visible)))
    return _tidy(html.unescape(text)), tuple(links)


def _tidy(text: str) -> str:
    """Collapse runs of spaces and blank lines, keeping paragraph breaks."""
    text = _LINE_EDGES.sub("\n", _SPACES.sub(" ", text.replace("\r\n", "\n")))
    return _BLANK_LINES.sub("\n\n", text).strip()


def _decode_header_value(value: object) -> str:
    """Return a header value with RFC 2047 encoded words decoded; never raises."""
    if not isinstance(value, str):
        value = str(value)
    text = value
    if "=?" in value:
        try:
            text = str(make_header(decode_header(value)))
        except Exception:
            log.debug("undecodable header value %r", value[:80])
    return " ".join(text.split())[:MAX_HEADER_CHARS]


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
    """Return the bare URLs written in plain text, as links whose visible text is the URL."""
    return [Link(href=match.group(0), text=match.group(0)) for match in _URL.finditer(text)]


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
            blocks_inline = disposition not in (None, "inline") or (disposition != "inline" and bool(part.get_filename()))
            if inside or blocks_inline:
                attached.update(id(child) for child in part.get_payload())
    boundary = message.get_boundary()
    if _START_BOUNDARY_MISSING in defects and boundary and isinstance(message.epilogue, str):
        opening, closing = f"--{boundary}", f"--{boundary}--"
        start = message.epilogue.find(opening)
        end = message.epilogue.find(closing, start + len(opening)) if start >= 0 else -1
        if end >= 0:
            try:
                parts.append((email.message_from_string(message.epilogue[start + len(opening) : end].strip()), True))
            except Exception:
                log.info("the part after a missing start boundary cannot be read")
    return parts


def _body_text(part: email.message.Message, charset: str, defects: set[str]) -> str:
    """Return a text part decoded as mail-parser decodes it: 7bit/8bit ASCII as it stands (which
    leaves ISO-2022-JP escapes in place), anything else by its charset, else UTF-8 (a defect)."""
    encoding = str(part.get("content-transfer-encoding", "")).strip().lower()
    if encoding in ("", "7bit", "8bit"):
        stored = part.get_payload()
        if isinstance(stored, str) and stored.isascii():
            return stored
    payload = part.get_payload(decode=True)
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
        filename = mailparser_utils.decode_header_part(metadata.get_filename(), defects=header_defects)
        if header_defects:
            body.defects.add("MimeHeaderDefect")
        disposition = str(metadata.get_content_disposition() or "").lower()
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


def _address_pairs(message: email.message.Message, defects: set[str]) -> dict[str, list[tuple[str, str]]]:
    """Return the (name, lower-case address) pairs of the first of each address header, parsed by
    mail-parser (display names decoded in context); a malformed address header is a defect."""
    pairs: dict[str, list[tuple[str, str]]] = {}
    for name in _ADDRESS_HEADERS:
        for occurrence, value in enumerate(message.get_all(name) or ()):
            parsed = _plain_mailbox(value)
            if parsed is None:
                problems: list[object] = []
                parsed = mailparser_utils.get_addresses(value, defects=problems, decode_names=True)
                if problems:
                    defects.add("AddressHeaderDefect")
            if occurrence == 0:
                pairs[name] = [("" if n == a else str(n), str(a).lower()) for n, a in parsed if a]
    return pairs


def _check_dates(message: email.message.Message, defects: set[str]) -> None:
    """Add DateHeaderDefect when a Date or Resent-Date header is malformed (mail-parser's checks)."""
    for name, raw in message.raw_items():
        if name.lower() in ("date", "resent-date") and mailparser_dates.parse_mail_date(raw).reasons:
            defects.add("DateHeaderDefect")


def _read_mime(content: bytes, defects: list[str]) -> tuple[email.message.Message, _Body, dict[str, list[tuple[str, str]]]]:
    """Return the parsed message, its body parts and address pairs; problems go to ``defects``.

    The standard library parses once; mail-parser's helpers then decode names and check headers
    the way mail-parser itself would (its Received-chain analysis is skipped: nothing reads it).
    """
    try:
        message = email.message_from_bytes(content)
    except Exception as error:  # e.g. RecursionError on absurdly nested multiparts
        defects.append(f"email: {type(error).__name__}")
        return email.message.Message(), _Body(plain=[content[:MAX_TEXT_CHARS].decode("utf-8", errors="replace")]), {}
    try:
        body = _walk_body(message)
        addresses = _address_pairs(message, body.defects)
        _check_dates(message, body.defects)
    except Exception as error:  # a helper gave up on a broken message; keep what email can read
        log.info("MIME walk failed (%s); reading text/plain parts only", type(error).__name__)
        defects.append(f"mime: {type(error).__name__}")
        try:
            return message, _Body(plain=_stdlib_plain_parts(message)), {}
        except Exception as stdlib_error:
            defects.append(f"email: {type(stdlib_error).__name__}")
            return message, _Body(plain=[content[:MAX_TEXT_CHARS].decode("utf-8", errors="replace")]), {}
    defects.extend(sorted(body.defects))
    return message, body, addresses


def parse_message(content: bytes) -> ParsedMessage:
    """Return the readable parts of ``content``; never raises: problems are listed in ``defects``."""
    defects: list[str] = []
    message, body, addresses = _read_mime(content, defects)
    plain_parts, html_parts = body.plain, body.html
    from_pairs, to_pairs, reply_pairs = (addresses.get(name, []) for name in ("from", "to", "reply-to"))
    if any(_ESCAPE_SEQUENCE in part for part in plain_parts):
        plain_parts = _stdlib_plain_parts(message) or plain_parts

    headers = tuple((str(key), _decode_header_value(value)) for key, value in message.items())

    def first(name: str) -> str | None:
        wanted = name.lower()
        return next((value for key, value in headers if key.lower() == wanted), None)

    def all_of(name: str) -> list[str]:
        wanted = name.lower()
        return [value for key, value in headers if key.lower() == wanted]

    if not from_pairs and not to_pairs:
        from_pairs = _addresses(all_of("from"))
        to_pairs = _addresses(all_of("to"))
        reply_pairs = _addresses(all_of("reply-to"))
    from_name, from_address = from_pairs[0] if from_pairs else ("", "")
    return_path = first("return-path")
    if return_path is not None:
        return_path = return_path.strip().strip("<>").lower() or None

    document = "\n".join(html_parts)
    html_text, html_links = html_to_text(document) if document else ("", ())
    plain = _tidy("\n\n".join(plain_parts)) if plain_parts else ""
    if plain and html_parts:
        orphans = _html_without_plain(message)
        if orphans:
            plain += "\n\n" + html_to_text("\n".join(orphans))[0]
    text = (plain or html_text)[:MAX_TEXT_CHARS]
    links = html_links + tuple(_link_texts(plain[:MAX_TEXT_CHARS])) if plain else html_links

    return ParsedMessage(
        message_id=first("message-id"),
        subject=first("subject") or "",
        from_name=from_name,
        from_address=from_address,
        to=tuple(address for _, address in to_pairs if address),
        reply_to=tuple(address for _, address in reply_pairs if address),
        return_path=return_path,
        date=_message_date(first("date")),
        headers=headers,
        text=text,
        html=document[:MAX_HTML_CHARS],
        links=links,
        attachments=tuple(body.attachments),
        defects=tuple(defects),
    )
