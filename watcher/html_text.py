"""HTML mail made readable: its text (one block per line) and its links, by a linear tokenizer."""

from __future__ import annotations

import html
import re

from watcher.model import Link
from watcher.text import tidy

MAX_HTML_CHARS = 400_000  # HTML fed to the converter
MAX_LINKS = 2_000
MAX_LINK_TEXT_CHARS = 8_000

# HTML: one tokenizer searched forward, so every construct costs time linear in the document.
_MARKUP = re.compile(r"<(?:(!--)|(/?)([A-Za-z][A-Za-z0-9]*)([^>]*)>|[!?/][^>]*>)")
_HIDDEN = frozenset(("script", "style", "head", "title"))
# The markup that matters for links alone: comments, hidden sections, anchors (same groups as _MARKUP).
_LINK_MARKUP = re.compile(r"<(?:(!--)|(/?)(a|script|style|head|title)\b([^>]*)>)", re.IGNORECASE)
_HIDDEN_END = {name: re.compile(rf"</{name}\s*>", re.IGNORECASE) for name in _HIDDEN}
_BLOCKS = frozenset(
    "br p div tr li ul ol table tbody thead h1 h2 h3 h4 h5 h6 blockquote pre hr section article header footer "
    "center dt dd".split()
)
_CELLS = frozenset(("td", "th"))
_HREF = re.compile(r"""\bhref\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s>]+))""", re.IGNORECASE)

_BREAK = "\x00"  # stands for a line break until whitespace is collapsed; removed from the input first


def html_to_text(document: str) -> tuple[str, tuple[Link, ...]]:
    """Return the readable text of an HTML document (one block per line) and its links.

    Whitespace (source line breaks too) collapses to one space, as a browser shows it, except
    that <pre> keeps its line breaks. A tokenizer is enough for notices (tables, paragraphs,
    entities) and costs far less than a full HTML parser; time is linear in the (capped)
    document, whatever its nesting; never raises.
    """
    document = document[:MAX_HTML_CHARS].replace(_BREAK, "")
    end = document.rfind(">") + 1  # past the last ">", no tag can match: no search runs to the end in vain
    pieces: list[str] = []
    links: list[Link] = []
    anchor: tuple[str, int] | None = None  # (href, index of its first piece)
    unclosed: set[str] = set()  # constructs whose end is known to be missing
    preformatted = 0
    position = 0

    def close_anchor() -> None:
        if anchor is not None and len(links) < MAX_LINKS:
            text = " ".join(html.unescape("".join(pieces[anchor[1] :])).replace(_BREAK, " ").split())
            links.append(Link(href=anchor[0], text=text[:MAX_LINK_TEXT_CHARS]))

    def add_text(start: int, stop: int) -> None:
        run = document[start:stop]
        pieces.append(run.replace("\r\n", _BREAK).replace("\n", _BREAK) if preformatted else run)

    while (markup := _MARKUP.search(document, position, end)) is not None:
        add_text(position, markup.start())
        position = markup.end()
        closing, name = markup.group(2), (markup.group(3) or "").lower()
        if markup.group(1) or (name in _HIDDEN and not closing):
            position = _past_hidden(document, markup, unclosed)
        elif name == "a":
            close_anchor()
            anchor = None
            href = None if closing else _HREF.search(markup.group(4))
            if href:
                target = next(group for group in href.groups() if group is not None)
                anchor = (html.unescape(target).strip(), len(pieces))
        elif name in _BLOCKS:
            pieces.append(_BREAK)
            if name == "pre":
                preformatted = max(0, preformatted + (-1 if closing else 1))
        elif name in _CELLS and not closing:
            pieces.append(" ")
    add_text(position, len(document))
    close_anchor()
    text = " ".join(html.unescape("".join(pieces)).split()).replace(_BREAK, "\n")  # \x00 is no space to split()
    return tidy(text), tuple(links)


def _past_hidden(document: str, markup: re.Match[str], unclosed: set[str]) -> int:
    """Return where reading goes on after ``markup``, which opens a comment or a hidden section
    (script, style, head, title): just past its end, or, when that end is missing (noted in
    ``unclosed``, so that later ones are not searched for again and time stays linear), just past
    the opening tag. Groups as in _MARKUP: 1 comment, 3 tag name."""
    if markup.group(1):
        finish = -1 if "-->" in unclosed else document.find("-->", markup.end())
        if finish >= 0:
            return finish + 3
        unclosed.add("-->")
        return document.find(">", markup.start()) + 1  # read as a tag
    name = markup.group(3).lower()
    finish_tag = None if name in unclosed else _HIDDEN_END[name].search(document, markup.end())
    if finish_tag is not None:
        return finish_tag.end()
    unclosed.add(name)
    return markup.end()


def _hides(markup: re.Match[str]) -> bool:
    """Return True when ``markup`` (of _MARKUP or _LINK_MARKUP) opens a comment or a hidden section."""
    return bool(markup.group(1)) or (not markup.group(2) and (markup.group(3) or "").lower() in _HIDDEN)


def html_links(document: str) -> tuple[Link, ...]:
    """Return the links of an HTML document, as html_to_text finds them, without its text.

    Only comments, hidden sections and anchors are visited, which costs a fraction of the whole
    conversion: this is for mail whose readable text comes from its text/plain part. A link's
    text is the markup between its tags with every tag read as a space; time is linear.
    """
    document = document[:MAX_HTML_CHARS]
    end = document.rfind(">") + 1
    links: list[Link] = []
    anchor: tuple[str, int] | None = None  # (href, where its text starts)
    unclosed: set[str] = set()
    position = 0

    def close_anchor(stop: int) -> None:
        if anchor is not None and len(links) < MAX_LINKS:
            text = " ".join(html.unescape(_MARKUP.sub(" ", document[anchor[1] : stop])).split())
            links.append(Link(href=anchor[0], text=text[:MAX_LINK_TEXT_CHARS]))

    while (markup := _LINK_MARKUP.search(document, position, end)) is not None:
        position = markup.end()
        if _hides(markup):
            position = _past_hidden(document, markup, unclosed)
            continue
        close_anchor(markup.start())
        anchor = None
        href = None if markup.group(2) else _HREF.search(markup.group(4))
        if href:
            target = next(group for group in href.groups() if group is not None)
            anchor = (html.unescape(target).strip(), position)
    close_anchor(len(document))
    return tuple(links)
