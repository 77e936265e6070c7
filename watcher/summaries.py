"""Notifications that cover several events: a burst and a daily digest.

A burst: many notices of one kind for one store at once (e.g. 30 listing removals in ten minutes) go out as
one notification listing them, instead of thirty; ``group`` decides which due deliveries form one and
``render_burst`` writes it. ``render_digest`` writes a channel's digest of open events and deadlines.
Email text reaches them only through notify.escape, as in a single notification.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import TypeVar

import apprise

from watcher.model import Event, Guidance
from watcher.notify import Rendered, escape, label

# A notification lists at most this many lines per section; the rest are counted ("…and 12 more").
LIST_LIMIT = 50
IDS_PER_LINE = 5
SUBJECT_LIMIT = 90

Item = TypeVar("Item")


def group(items: Sequence[Item], event_of: Callable[[Item], Event], threshold: int,
          window: timedelta) -> list[list[Item]]:
    """Split ``items`` into what to send: a list of ``threshold`` or more items is one burst, a list of one
    item is a notification of its own. Return them in the order of their first item.

    Items form a burst when their events share store, platform and kind (and genuine or suspected phishing:
    a fake notice is never mixed with real ones) and were detected within ``window`` of the first of them.
    ``threshold`` 0 (or 1) turns grouping off.
    """
    if threshold < 2:
        return [[item] for item in items]
    events = [event_of(item) for item in items]
    by_key: dict[tuple[str, str | None, str | None, bool], list[int]] = {}
    for position, event in enumerate(events):
        result = event.classification
        key = (event.store, result.platform, result.kind, result.authenticity == "suspected_phishing")
        by_key.setdefault(key, []).append(position)
    units: list[list[int]] = []
    for positions in by_key.values():
        positions.sort(key=lambda position: (events[position].detected_at, events[position].id))
        chunk: list[int] = []
        for position in positions:
            if chunk and events[position].detected_at - events[chunk[0]].detected_at > window:
                units += _settle(chunk, threshold)
                chunk = []
            chunk.append(position)
        units += _settle(chunk, threshold)
    return [[items[position] for position in unit] for unit in sorted(units, key=min)]


def _settle(chunk: list[int], threshold: int) -> list[list[int]]:
    return [chunk] if len(chunk) >= threshold else [[item] for item in chunk]


def render_burst(events: Sequence[Event], guidance: Guidance, language: str = "en", markup: str = "html") -> Rendered:
    """Return one notification for the burst ``events`` (same store, platform and kind): a line per notice
    with its ids and event id (at most LIST_LIMIT, then a count of the rest), then the next steps once."""
    first = events[0]
    result = first.classification
    inert = functools.partial(escape, markup=markup)
    text = functools.partial(label, "text", language=language)
    platform = label("platform", result.platform, "en")
    many = _kind_many(result.kind, len(events), language)
    phishing = result.authenticity == "suspected_phishing"
    if phishing:
        title = f"[{text('phishing_title')}] {platform}: {many}? — {first.store}"
    else:
        title = f"[{(result.severity or 'info').upper()}] {platform}: {many} — {first.store}"
    accounts = sorted({f"{event.account} / {event.folder}" for event in events})
    lines = [f"**{text('inbox')}:** " + ", ".join(inert(account) for account in accounts),
             f"**{text('genuine')}:** {label('authenticity', result.authenticity, language)}",
             "", f"**{text('burst_notices')}:**"]
    for number, event in enumerate(events[:LIST_LIMIT], start=1):
        lines.append(f"{number}. {_notice_line(event, inert)}")
    if len(events) > LIST_LIMIT:
        lines.append(text("burst_more").replace("{count}", str(len(events) - LIST_LIMIT)))
    lines.append("")
    lines.append(f"**{text('next_steps')} — {guidance.title}**")
    lines.extend(f"{number}. {step}" for number, step in enumerate(guidance.steps, start=1))
    lines.append("")
    ids = sorted(event.id for event in events)
    lines.append(f"{text('event')} #{ids[0]}–#{ids[-1]} · `watcher events list --kind {result.kind}`")
    severe = phishing or result.severity == "critical"
    notify_type = apprise.NotifyType.FAILURE if severe else (
        apprise.NotifyType.WARNING if result.severity in ("high", "medium") else apprise.NotifyType.INFO)
    return Rendered(title=title, body="\n".join(lines), notify_type=str(notify_type.value))


def _notice_line(event: Event, inert: Callable[[str], str]) -> str:
    received = (event.received_at or event.detected_at).astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
    identifiers = event.classification.ids
    if identifiers:
        what = ", ".join(inert(identifier) for identifier in identifiers[:IDS_PER_LINE])
        what += " …" if len(identifiers) > IDS_PER_LINE else ""
    else:
        subject = " ".join(event.subject.split())
        what = inert(subject if len(subject) <= SUBJECT_LIMIT else subject[:SUBJECT_LIMIT - 1].rstrip() + "…")
    return f"{received} · {what} · #{event.id}"


def _kind_many(kind: str | None, count: int, language: str) -> str:
    """Return e.g. "30 listings removed"; a kind without a plural in labels.toml reads "30 × <kind>"."""
    phrase = label("kind_many", kind, language)
    if "{count}" not in phrase:
        phrase = "{count} × " + label("kind", kind, language)
    return phrase.replace("{count}", str(count))


def render_digest(events: Sequence[Event], period: str, now: datetime, language: str = "en",
           markup: str = "html") -> Rendered:
    """Return the digest for ``period``: the open ``events`` by store (kind, age, status), then their
    deadlines, soonest first. With no events it still says "nothing open"."""
    inert = functools.partial(escape, markup=markup)
    text = functools.partial(label, "text", language=language)
    deadlines = sorted((event for event in events if event.classification.deadline),
                       key=lambda event: (event.classification.deadline, event.id))
    if events:
        counts = text("digest_open").replace("{count}", str(len(events)))
        counts += ", " + text("digest_deadlines").replace("{count}", str(len(deadlines)))
    else:
        counts = text("digest_nothing")
    title = f"[{text('digest')} {period}] {counts}"
    if not events:
        return Rendered(title=title, body=counts, notify_type=str(apprise.NotifyType.INFO.value))
    lines = [f"**{text('digest_open_heading')}**"]
    by_store: dict[str, list[Event]] = {}
    for event in events:
        by_store.setdefault(event.store, []).append(event)
    listed = 0
    for store_name in sorted(by_store):
        if listed >= LIST_LIMIT:
            break
        lines.append(f"*{inert(store_name)}*")
        for event in by_store[store_name][:LIST_LIMIT - listed]:
            lines.append(f"- {_what(event, language)} · {label('status', event.status, language)} · "
                         f"{_age(now - event.detected_at, language)} · #{event.id}")
            listed += 1
    if len(events) > listed:
        lines.append(text("burst_more").replace("{count}", str(len(events) - listed)))
    if deadlines:
        today = now.date()
        lines += ["", f"**{text('digest_deadline_heading')}**"]
        for event in deadlines[:LIST_LIMIT]:
            deadline = event.classification.deadline
            assert deadline is not None
            lines.append(f"- {deadline.isoformat()} ({_left(deadline, today, language)}) · {inert(event.store)}: "
                         f"{_what(event, language)} · #{event.id}")
        if len(deadlines) > LIST_LIMIT:
            lines.append(text("burst_more").replace("{count}", str(len(deadlines) - LIST_LIMIT)))
    severe = any(event.classification.severity == "critical" for event in events)
    notify_type = apprise.NotifyType.WARNING if severe else apprise.NotifyType.INFO
    return Rendered(title=title, body="\n".join(lines), notify_type=str(notify_type.value))


def _what(event: Event, language: str) -> str:
    result = event.classification
    what = f"{label('platform', result.platform, 'en')} {label('kind', result.kind, language)}"
    if result.authenticity == "suspected_phishing":
        what += f" ({label('text', 'phishing_title', language)}?)"
    return what


def _age(age: timedelta, language: str) -> str:
    hours = max(0, int(age.total_seconds() // 3600))
    if hours < 48:
        return label("text", "age_hours", language).replace("{hours}", str(hours))
    return label("text", "age_days", language).replace("{days}", str(hours // 24))


def _left(deadline: date, today: date, language: str) -> str:
    days = (deadline - today).days
    if days == 0:
        return label("text", "due_today", language)
    key = "days_left" if days > 0 else "overdue"
    return label("text", f"{key}_one" if abs(days) == 1 else key, language).replace("{days}", str(abs(days)))
