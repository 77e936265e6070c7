"""Delivery: send what is due from the outbox (deliveries and digests), one channel at a time.

Per channel, in this order:
- quiet hours: a due notification below critical severity (and a digest) waits until the channel's quiet
  period ends — its next attempt moves there, no attempt is recorded; critical ones break through;
- bursts: event notifications for one store, platform and kind detected close together (summaries.py) go out
  as one notification, and its outcome is recorded on every row it covers;
- everything else one notification per row, as rendered by notify.py; then the channel's due digests.
Every attempt is recorded (store.record_attempt, digest.record_attempt) before the next one is made.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from watcher import digest
from watcher.config import ChannelConfig
from watcher.digest import PendingDigest
from watcher.model import DeliveryOutcome
from watcher.pipeline import Engine
from watcher.store import PendingDelivery, Store, iso, now_utc

log = logging.getLogger(__name__)

GONE = DeliveryOutcome("error", "the channel is no longer in the configuration", permanent=True)


@dataclass(frozen=True, slots=True)
class DeliverySummary:
    """What one ``deliver_due`` did. sent/retrying/failed count rows (deliveries and digests);
    ``notifications`` counts the messages sent (a burst is one), ``postponed`` the rows held by quiet hours."""

    sent: int = 0
    retrying: int = 0
    failed: int = 0
    postponed: int = 0
    notifications: int = 0
    outcomes: tuple[tuple[int, str, str], ...] = field(default=())  # (event id, channel, status)


@dataclass
class _Tally:
    statuses: list[str] = field(default_factory=list)
    postponed: int = 0
    notifications: int = 0
    outcomes: list[tuple[int, str, str]] = field(default_factory=list)

    def summary(self) -> DeliverySummary:
        return DeliverySummary(self.statuses.count("sent"), self.statuses.count("pending"),
                               self.statuses.count("failed"), self.postponed, self.notifications,
                               tuple(self.outcomes))


def deliver_due(engine: Engine, store: Store, should_stop: Callable[[], bool] = lambda: False,
                channel: str | None = None, now: datetime | None = None) -> DeliverySummary:
    """Send every delivery and digest that is due at ``now`` (default: the clock), only ``channel``'s if
    given, recording each attempt. Never raises for a failed send: failures are recorded on the rows."""
    moment = now or now_utc()
    tally = _Tally()
    pending = store.due_deliveries(moment, channel=channel)
    digests = digest.due(store.db, moment, channel)
    if not pending and not digests:
        return tally.summary()
    channels = {configured.name: configured for configured in engine.config.channels}
    names = list(dict.fromkeys([row.channel for row in pending] + [row.channel for row in digests]))
    for name in names:
        if should_stop():
            break
        rows = [row for row in pending if row.channel == name]
        digest_rows = [row for row in digests if row.channel == name]
        target = channels.get(name)
        if target is None:
            for row in rows:
                _record(store, engine, [row], GONE, 0, tally)
            for digest_row in digest_rows:
                tally.statuses.append(digest.record_attempt(store.db, digest_row, GONE, engine.config.delivery_retry_hours))
            continue
        _deliver_channel(engine, store, target, rows, digest_rows, moment, should_stop, tally)
    return tally.summary()


def _deliver_channel(engine: Engine, store: Store, target: ChannelConfig, rows: list[PendingDelivery],
                     digest_rows: list[PendingDigest], moment: datetime, should_stop: Callable[[], bool],
                     tally: _Tally) -> None:
    # Apprise takes a while to import: only when there is something to send.
    from watcher import notify, summaries

    events = {row.event_id: store.event(row.event_id) for row in rows}
    quiet_until = target.quiet_hours.end_of(moment, target.timezone) if target.quiet_hours else None
    if quiet_until is not None:
        held = [row for row in rows if events[row.event_id].classification.severity != "critical"]
        rows = [row for row in rows if row not in held]
        _postpone(store, target, held, digest_rows, quiet_until)
        tally.postponed += len(held) + len(digest_rows)
        digest_rows = []
    markup = notify.markup_for(target.url.reveal())
    window = timedelta(minutes=engine.config.burst_window_minutes)
    bursting = [row for row in rows if row.purpose == "event"]
    units = summaries.group(bursting, lambda row: events[row.event_id], engine.config.burst_threshold, window)
    units += [[row] for row in rows if row.purpose != "event"]
    units.sort(key=lambda unit: min(row.id for row in unit))
    for unit in units:
        if should_stop():
            return
        if len(unit) > 1:
            members = [events[row.event_id] for row in unit]
            playbook, language = engine.guidance_for(members[0])
            rendered = summaries.render_burst(members, playbook, language, markup)
        else:
            event = events[unit[0].event_id]
            linked = store.event(event.linked_event_id) if event.linked_event_id else None
            playbook, language = engine.guidance_for(event)
            rendered = notify.render(event, playbook, language, markup, purpose=unit[0].purpose, linked=linked)
        outcome, duration = notify.send(target, rendered.title, rendered.body, rendered.notify_type)
        tally.notifications += 1
        _record(store, engine, unit, outcome, duration, tally)
    for digest_row in digest_rows:
        if should_stop():
            return
        _send_digest(engine, store, target, digest_row, moment, markup, tally)


def _postpone(store: Store, target: ChannelConfig, held: Sequence[PendingDelivery],
              digest_rows: Sequence[PendingDigest], until: datetime) -> None:
    if held:
        with store.db.atomic():
            store.db.conn.executemany("UPDATE deliveries SET next_attempt_at = ? WHERE id = ?",
                                 [(iso(until), row.id) for row in held])
        log.info("%s: quiet hours until %s; %d notifications wait (events %s)", target.name,
                 until.isoformat(timespec="minutes"), len(held), ", ".join(str(row.event_id) for row in held))
    if digest_rows:
        digest.postpone(store.db, digest_rows, until)
        log.info("%s: quiet hours until %s; the digest waits", target.name, until.isoformat(timespec="minutes"))


def _record(store: Store, engine: Engine, unit: Sequence[PendingDelivery], outcome: DeliveryOutcome,
            duration: int, tally: _Tally) -> None:
    """Record ``outcome`` on every row of ``unit`` in one transaction: a burst is sent once, so all of its
    rows are recorded, or (on a crash) none is and the burst is sent again."""
    with store.db.atomic():
        statuses = [store.record_attempt(row, outcome, duration, engine.config.delivery_retry_hours) for row in unit]
    events = ", ".join(str(row.event_id) for row in unit)
    what = f"event {events}" if len(unit) == 1 else f"burst of {len(unit)} (events {events})"
    log.info("%s → %s: %s (%s) in %dms", what, unit[0].channel, outcome.outcome, statuses[0], duration)
    if statuses[0] != "sent":
        log.warning("%s → %s: %s", what, unit[0].channel, outcome.detail)
    tally.statuses += statuses
    tally.outcomes += [(row.event_id, row.channel, status) for row, status in zip(unit, statuses, strict=True)]


def _send_digest(engine: Engine, store: Store, target: ChannelConfig, pending: PendingDigest,
                 moment: datetime, markup: str, tally: _Tally) -> None:
    from watcher import notify, summaries

    wanted = engine.config.guidance_language
    language = "en" if wanted == "auto" else wanted
    events = digest.open_events(store, target)
    rendered = summaries.render_digest(events, pending.period, moment.astimezone(target.timezone), language, markup)
    outcome, duration = notify.send(target, rendered.title, rendered.body, rendered.notify_type)
    tally.notifications += 1
    status = digest.record_attempt(store.db, pending, outcome, engine.config.delivery_retry_hours)
    log.info("digest %s → %s: %s (%s) in %dms, %d open events", pending.period, target.name, outcome.outcome,
             status, duration, len(events))
    if status != "sent":
        log.warning("digest %s → %s: %s", pending.period, target.name, outcome.detail)
    tally.statuses.append(status)


def schedule_digest(engine: Engine, store: Store, channel: str, now: datetime | None = None) -> bool:
    """Add today's digest for ``channel`` (its local day); return False when it exists already or the channel
    has no digest configured."""
    target = next((configured for configured in engine.config.channels if configured.name == channel), None)
    if target is None or target.digest is None:
        return False
    added = digest.schedule(store.db, target, now or now_utc())
    log.info("digest for %s: %s", channel, "due now" if added else "already made today")
    return added

