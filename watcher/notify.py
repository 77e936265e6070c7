"""Notify stage: render an event into a title and a Markdown body, and send it to one channel via Apprise.

Email text reaches the notification only through ``escape`` (no mentions, markup or live links can be
injected); our own words come from labels.toml. Each send returns a DeliveryOutcome that keeps Apprise's
own status (success, failure, timeout, nothing matched) and its log lines, with the channel URL scrubbed.
"""

from __future__ import annotations

import functools
import re
import time
import tomllib
from dataclasses import dataclass
from datetime import UTC, date, datetime
from importlib import resources

import apprise

from watcher.config import ChannelConfig
from watcher.model import DeliveryOutcome, Event, Guidance
from watcher.secrets import RedactingFilter, Secret

REASON_TEXT_LIMIT = 700
SUBJECT_LIMIT = 160

# Inline Markdown/mrkdwn markup; line-start markup cannot occur because email text is folded onto one line.
_MARKDOWN_SPECIALS = re.compile(r"([\\`*_\[\]~|])")
_SLACK_SPECIALS = re.compile(r"([`*_~\[\]])")
_URL = re.compile(r"\b(https?|ftp)://([^\s/?#<>]+)", re.IGNORECASE)
_MENTION = re.compile(r"([@＠])(?=\w)")


@dataclass(frozen=True, slots=True)
class Rendered:
    title: str
    body: str
    notify_type: str  # apprise NotifyType value


@functools.cache
def _labels() -> dict[str, dict[str, dict[str, str]]]:
    return tomllib.loads(resources.files("watcher").joinpath("labels.toml").read_text(encoding="utf-8"))


def label(group: str, key: str | None, language: str = "en") -> str:
    """Return the word for taxonomy id ``key`` in ``group`` (platform, kind, reason, authenticity, text)."""
    if key is None:
        return "?"
    labels = _labels()
    for code in (language, "en"):
        value = labels.get(code, {}).get(group, {}).get(key)
        if value:
            return value
    return key.replace("_", " ")


# How a service renders our Markdown body, by Apprise protocol; every other service gets "html", the
# safest choice: Markdown that may be turned into HTML (email) or shown raw (json://).
MARKUP_BY_PROTOCOL = {"slack": "slack", "tgram": "markdown", "discord": "markdown"}


def markup_for(url: str) -> str:
    """Return how the channel at ``url`` renders text: "slack", "markdown" (Telegram, Discord) or "html"."""
    plugin = apprise.Apprise.instantiate(url)
    protocols = {str(p) for p in (getattr(plugin, "protocol", None), getattr(plugin, "secure_protocol", None))
                 for p in (p if isinstance(p, (list, tuple)) else (p,))}
    return next((MARKUP_BY_PROTOCOL[p] for p in sorted(protocols) if p in MARKUP_BY_PROTOCOL), "html")


def escape(text: str, markup: str = "html") -> str:
    """Make email text inert for the channel's ``markup`` (see markup_for): no mentions, markup or links.

    Always: URLs are defanged (hxxps://host[.]example) so none becomes a link, and @mentions
    (@channel, @everyone, @here, @user) get a word joiner so they notify nobody.
    html: &, < and > become entities (Markdown passes raw HTML through to HTML email) and markup
    characters are backslash-escaped.
    markdown (Telegram, Discord): a backslash escapes markup; entities would show literally.
    slack: < and > become ‹ and › (no <!here>, <@U…> or <url|text>); mrkdwn has no escape character,
    so markup characters get a word joiner.
    """
    text = _URL.sub(lambda m: ("hxxp" + m.group(1)[4:] if m.group(1).lower().startswith("http") else "fxp")
                    + "://" + m.group(2).replace(".", "[.]"), text)
    if markup == "html":
        text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    if markup == "slack":
        text = text.replace("<", "\u2039").replace(">", "\u203a")
        text = _SLACK_SPECIALS.sub("\\1\u2060", text)
    else:
        text = _MARKDOWN_SPECIALS.sub(r"\\\1", text)
    return _MENTION.sub("\\1\u2060", text)


def _shorten(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def render(event: Event, guidance: Guidance, language: str = "en", markup: str = "html",
           today: date | None = None, purpose: str = "event", linked: Event | None = None) -> Rendered:
    """Return the notification for ``event`` in ``language`` (our words; email text stays as written,
    escaped for ``markup``). ``purpose`` marks a reminder or re-announcement (lifecycle.py); ``linked`` is
    the earlier event a follow-up notice belongs to."""
    result = event.classification
    inert = functools.partial(escape, markup=markup)
    text = functools.partial(label, "text", language=language)
    platform = label("platform", result.platform, "en")
    what = label("kind", result.kind, language)
    phishing = result.authenticity == "suspected_phishing"
    if phishing:
        title = f"[{text('phishing_title')}] {platform}: {what}? — {event.store}"
    else:
        title = f"[{(result.severity or 'info').upper()}] {platform}: {what} — {event.store}"
    if purpose.startswith("reminder:"):
        title = f"[{text('reminder').replace('{hours}', purpose.split(':')[1].rstrip('h'))}] {title}"
    elif purpose.startswith("reannounce:"):
        title = f"[{text('still_open')}] {title}"

    received = (event.received_at or event.detected_at).astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
    happened = f"{platform} {what}"
    if result.marketplace:
        happened += f" ({inert(result.marketplace)})"
    happened += f" — {label('reason', result.reason, language)}"
    lines = [
        f"**{text('inbox')}:** {inert(event.account)} / {inert(event.folder)}",
        f"**{text('received')}:** {received}",
        f"**{text('subject')}:** {inert(_shorten(event.subject, SUBJECT_LIMIT))}",
        f"**{text('sender')}:** {inert(event.sender)}",
        f"**{text('what')}:** {happened}",
    ]
    if linked is not None:
        follows = (text("follows").replace("{id}", str(linked.id))
                   .replace("{what}", label("kind", linked.classification.kind, language))
                   .replace("{date}", linked.detected_at.date().isoformat()))
        if result.kind == "reinstated":
            follows += " " + text("now_resolved")
        lines.append(f"**{text('history')}:** {follows}")
    if result.reason_text:
        lines.append(f"**{text('why')}:** {inert(_shorten(result.reason_text, REASON_TEXT_LIMIT))}")
    lines.append(f"**{text('deadline')}:** {_deadline(result.deadline, today or datetime.now(UTC).date(), language)}")
    lines.append(f"**{text('genuine')}:** {label('authenticity', result.authenticity, language)}")
    if result.ids:
        lines.append(f"**{text('ids')}:** " + ", ".join(inert(identifier) for identifier in result.ids[:20]))
    lines.append("")
    lines.append(f"**{text('next_steps')} — {guidance.title}**")
    lines.extend(f"{number}. {step}" for number, step in enumerate(guidance.steps, start=1))
    lines.append("")
    lines.append(f"{text('event')} #{event.id} · `watcher events show {event.id}`")
    notify_type = apprise.NotifyType.FAILURE if phishing or result.severity == "critical" else (
        apprise.NotifyType.WARNING if result.severity in ("high", "medium") else apprise.NotifyType.INFO)
    return Rendered(title=title, body="\n".join(lines), notify_type=str(notify_type.value))


def _deadline(deadline: date | None, today: date, language: str) -> str:
    if deadline is None:
        return label("text", "no_deadline", language)
    days = (deadline - today).days
    if days == 0:
        left = label("text", "due_today", language)
    else:
        key = "days_left" if days > 0 else "overdue"
        left = label("text", f"{key}_one" if abs(days) == 1 else key, language).replace("{days}", str(abs(days)))
    return f"{deadline.isoformat()} ({left})"


def send(channel: ChannelConfig, title: str, body: str, notify_type: str = "info",
         timeout_seconds: float = 30.0) -> tuple[DeliveryOutcome, int]:
    """Send one notification to ``channel``. Return the recorded outcome and the duration in ms.

    Never raises: an unusable URL is a permanent 'error', nothing matched is a permanent 'nomatch'.
    """
    started = time.monotonic()
    secret_url = channel.url.reveal()
    service = apprise.Apprise()
    if not service.add(secret_url):
        return DeliveryOutcome("error", "Apprise cannot load this channel's URL (unknown scheme or bad syntax)",
                               permanent=True), _elapsed_ms(started)
    try:
        result = service.notify(body=body, title=title, notify_type=notify_type,
                                body_format=apprise.NotifyFormat.MARKDOWN, timeout=timeout_seconds)
    except Exception as error:  # a plugin bug must not take the delivery loop down
        return DeliveryOutcome("error", _scrub(f"{error.__class__.__name__}: {error}", secret_url)), _elapsed_ms(started)
    status = result.status.name.lower()
    outcome = {"success": "success", "timeout": "timeout", "nomatch": "nomatch"}.get(status, "failure")
    detail = "; ".join(f"{entry.level}: {entry.message}" for entry in result.logs()) or status
    return DeliveryOutcome(outcome, _scrub(detail, secret_url), permanent=outcome == "nomatch"), _elapsed_ms(started)


def _elapsed_ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)


def _scrub(text: str, secret_url: str) -> str:
    """Remove the channel URL and every token-like piece of it from ``text``."""
    return RedactingFilter([Secret(secret_url)]).redact(text)
