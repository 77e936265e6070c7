"""Turn raw message bytes into a ParsedMessage: decoded headers, readable text and links.

mail-parser does the MIME work (multipart walking, transfer encodings, charsets). Two gaps are
filled here: mail-parser 4.8 leaves 7bit ``iso-2022-jp`` text parts undecoded, so those parts are
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
from datetime import datetime
from email.header import decode_header, make_header

import mailparser

from watcher.model import Link, ParsedMessage

log = logging.getLogger(__name__)

MAX_TEXT_CHARS = 200_000  # body text kept for classification
MAX_HTML_CHARS = 400_000  # HTML fed to the converter
MAX_HEADER_CHARS = 8_000  # one decoded header value

_URL = re.compile(r"""\b(?:https?://|www\.)[^\s<>"')\]]+""", re.IGNORECASE)
_ESCAPE_SEQUENCE = "\x1b"
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
_SPACES = re.compile(r"[ \t\r\f\v\xa0]+")
_LINE_EDGES = re.compile(r" ?\n ?")
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


def _attachment_names(attachments: list[dict[str, object]]) -> tuple[str, ...]:
    names = []
    for attachment in attachments:
        name = attachment.get("filename") or attachment.get("mail_content_type") or "attachment"
        names.append(str(name))
    return tuple(names)


def parse_message(content: bytes) -> ParsedMessage:
    """Return the readable parts of ``content``; never raises: problems are listed in ``defects``."""
    defects: list[str] = []
    try:
        mail = mailparser.parse_from_bytes(content)
        message: email.message.Message = mail.message
        plain_parts = list(mail.text_plain)
        html_parts = list(mail.text_html)
        attachments = _attachment_names(mail.attachments)
        from_pairs = [(str(n), str(a).lower()) for n, a in mail.from_]
        to_pairs = [(str(n), str(a).lower()) for n, a in mail.to]
        reply_pairs = [(str(n), str(a).lower()) for n, a in mail.reply_to]
        defects.extend(sorted(str(category) for category in mail.defects_categories))
    except Exception as error:  # mail-parser gives up on some broken messages; keep what email can read
        log.info("mail-parser failed (%s); using the standard library", type(error).__name__)
        defects.append(f"mail-parser: {type(error).__name__}")
        try:
            message = email.message_from_bytes(content)
            plain_parts = _stdlib_plain_parts(message)
        except Exception as stdlib_error:
            defects.append(f"email: {type(stdlib_error).__name__}")
            message = email.message.Message()
            plain_parts = [content[:MAX_TEXT_CHARS].decode("utf-8", errors="replace")]
        html_parts = []
        attachments = ()
        from_pairs, to_pairs, reply_pairs = [], [], []
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
        attachments=attachments,
        defects=tuple(defects),
    )
