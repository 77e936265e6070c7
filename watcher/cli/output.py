"""How results are printed: aligned tables and JSON objects."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from tabulate import tabulate

from watcher.model import Classification, Event, Guidance


def events_table(found: list[Event]) -> str:
    """Return ``found`` as an aligned table (or "no events")."""
    if not found:
        return "no events"
    rows = [[e.id, e.detected_at.strftime("%Y-%m-%d %H:%M"), e.store, e.classification.platform,
             e.classification.kind, e.classification.reason, e.classification.severity,
             e.classification.authenticity, e.classification.deadline or "", e.status] for e in found]
    return str(tabulate(rows, headers=["id", "detected (UTC)", "store", "platform", "kind", "reason", "severity",
                                       "authenticity", "deadline", "status"]))


def classification_json(result: Classification) -> dict[str, Any]:
    data = asdict(result)
    data.pop("evidence")
    data["facts"] = dict(result.facts)
    data["ids"] = list(result.ids)
    data["deadline"] = result.deadline.isoformat() if result.deadline else None
    return data


def guidance_json(playbook: Guidance | None) -> dict[str, Any] | None:
    return {"title": playbook.title, "steps": list(playbook.steps), "source": playbook.source} if playbook else None


def event_json(event: Event, playbook: Guidance | None = None) -> dict[str, Any]:
    return {
        "id": event.id, "account": event.account, "store": event.store, "folder": event.folder,
        "uid": event.uid, "uidvalidity": event.uidvalidity, "status": event.status,
        "received_at": event.received_at.isoformat() if event.received_at else None,
        "detected_at": event.detected_at.isoformat(),
        **classification_json(event.classification),
        "subject": event.subject, "sender": event.sender, "message_id": event.message_id,
        **({"guidance": guidance_json(playbook)} if playbook else {}),
    }
